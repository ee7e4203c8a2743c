# Type stub for lossmle/_validation.py (shared input helpers; the public
# set_num_threads / get_num_threads).  Keep in step with the .py:
# tests/test_typing.py runs mypy's stubtest on it.
from collections.abc import Sequence
from typing import Any, SupportsIndex, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

_SCT = TypeVar("_SCT", bound=np.generic)

__all__ = [
    "as_float_array", "common_float_dtype", "normalize_axes", "rows_view",
    "alloc_transform_out", "reduced_shape", "resolve_threads",
    "set_num_threads", "get_num_threads", "check_out", "deliver",
]

PARALLEL_MIN_ELEMENTS: int

def as_float_array(
    x: ArrayLike, name: str, dtype: DTypeLike | None = None,
) -> NDArray[np.floating[Any]]: ...
def common_float_dtype(*arrays_and_names: tuple[ArrayLike, str]) -> np.dtype[Any]: ...
def normalize_axes(
    axis: SupportsIndex | Sequence[SupportsIndex] | None, ndim: int,
    name: str = "axis", allow_tuple: bool = True,
) -> tuple[int, ...]: ...
def reduced_shape(
    shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool,
) -> tuple[int, ...]: ...
def rows_view(
    x: NDArray[_SCT], axes: tuple[int, ...],
) -> tuple[NDArray[_SCT], list[int] | None]: ...
def alloc_transform_out(
    shape: tuple[int, ...], x3_shape: tuple[int, ...], perm: list[int] | None,
    dtype: DTypeLike,
) -> tuple[NDArray[Any], NDArray[Any]]: ...
def set_num_threads(n_threads: SupportsIndex | None) -> None: ...
def get_num_threads() -> int: ...
def resolve_threads(n_threads: SupportsIndex | None, n_elements: int) -> int: ...
def check_out(
    out: NDArray[Any] | None, shape: tuple[int, ...], dtype: np.dtype[Any],
    inputs: Sequence[tuple[object, str]], inplace_ok: bool = False,
) -> NDArray[Any] | None: ...
def deliver(result: Any, out: NDArray[Any] | None) -> Any: ...
