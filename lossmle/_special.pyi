# Type stub for lossmle/_special.py (the public logsumexp, softmax, log_softmax).
# Keep in step with the .py: tests/test_packaging_typing.py runs mypy's stubtest on it.
from collections.abc import Sequence
from typing import Any, Literal, SupportsIndex, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import TypeAlias

_SCT = TypeVar("_SCT", np.float32, np.float64)
# A reduction gives an array, or a numpy scalar when every axis is reduced.
_Result: TypeAlias = NDArray[np.floating[Any]] | np.floating[Any]
_Axis: TypeAlias = SupportsIndex | Sequence[SupportsIndex] | None

__all__ = ["logsumexp", "softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]

@overload
def logsumexp(
    a: ArrayLike, axis: _Axis = None, b: ArrayLike | None = None,
    keepdims: bool = False, return_sign: Literal[False] = False, *,
    where: ArrayLike | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
@overload
def logsumexp(
    a: ArrayLike, axis: _Axis, b: ArrayLike | None, keepdims: bool,
    return_sign: Literal[True], *, where: ArrayLike | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> tuple[_Result, _Result]: ...
@overload
def logsumexp(
    a: ArrayLike, axis: _Axis = None, b: ArrayLike | None = None,
    keepdims: bool = False, *, return_sign: Literal[True],
    where: ArrayLike | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> tuple[_Result, _Result]: ...
@overload
def logsumexp(
    a: ArrayLike, axis: _Axis = None, b: ArrayLike | None = None,
    keepdims: bool = False, return_sign: bool = False, *,
    where: ArrayLike | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result | tuple[_Result, _Result]: ...

# float32/float64 arrays keep their dtype (a 0-d array gives a numpy scalar of
# that dtype, which supports the same operations); anything else: float64, or
# float32 for float16.
@overload
def softmax(
    x: NDArray[_SCT], axis: _Axis = None, *, where: ArrayLike | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> NDArray[_SCT]: ...
@overload
def softmax(
    x: ArrayLike, axis: _Axis = None, *, where: ArrayLike | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
@overload
def log_softmax(
    x: NDArray[_SCT], axis: _Axis = None, *, where: ArrayLike | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> NDArray[_SCT]: ...
@overload
def log_softmax(
    x: ArrayLike, axis: _Axis = None, *, where: ArrayLike | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
def softmax_backward(
    grad_output: ArrayLike, softmax_output: ArrayLike, axis: SupportsIndex = -1, *,
    out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
def log_softmax_backward(
    grad_output: ArrayLike, log_softmax_output: ArrayLike, axis: SupportsIndex = -1, *,
    out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
