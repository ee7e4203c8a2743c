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
    "set_num_threads", "get_num_threads", "check_output", "output_view", "finish_output",
    "item_strided", "deliver", "check_real", "check_positive", "check_base",
    "check_temperature", "check_label_smoothing", "check_reduction", "check_int",
    "check_ignore_index", "check_output_kind",
]

from ._threads import (
    MAX_THREADS as MAX_THREADS,
    PARALLEL_MIN_ELEMENTS as PARALLEL_MIN_ELEMENTS,
    get_num_threads as get_num_threads,
    resolve_threads as resolve_threads,
    set_num_threads as set_num_threads,
)

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
def item_strided(a: NDArray[Any]) -> bool: ...
def check_output(
    buf: object, name: str, shape: tuple[int, ...], dtype: np.dtype[Any],
    inputs: Sequence[tuple[object, str]], inplace: Sequence[str] = (),
) -> NDArray[Any] | None: ...
def output_view(
    buf: NDArray[Any] | None, shape: tuple[int, ...], dtype: np.dtype[Any],
    view_shape: tuple[int, ...],
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None]: ...
def finish_output(buf: NDArray[Any], scratch: NDArray[Any] | None) -> NDArray[Any]: ...
def deliver(
    result: Any, out: NDArray[Any] | None,
    inputs: Sequence[tuple[object, str]] | None = None, inplace: Sequence[str] = (),
) -> Any: ...
def check_output_kind(buf: object, name: str) -> None: ...
def check_real(value: object, name: str, what: str) -> float: ...
def check_positive(value: object, name: str, allow_none: bool = False) -> float: ...
def check_temperature(temperature: object) -> float: ...
def check_base(base: object) -> float | None: ...
def check_label_smoothing(label_smoothing: object) -> float: ...
def check_reduction(reduction: object, allowed: Sequence[str]) -> str: ...
def check_int(value: object, name: str) -> int: ...
def check_ignore_index(ignore_index: object) -> int: ...
