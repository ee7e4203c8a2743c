# Type stub for lossmle/_divergence.py (the public kl_divergence and entropy).
# Keep in step with the .py: tests/test_packaging_typing.py runs mypy's stubtest on it.
from collections.abc import Sequence
from typing import Any, Literal, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import TypeAlias

# A reduction gives an array, or a numpy scalar when every axis is reduced.
_Result: TypeAlias = NDArray[np.floating[Any]] | np.floating[Any]
_Axis: TypeAlias = SupportsIndex | Sequence[SupportsIndex] | None

__all__ = ["kl_divergence", "entropy"]

def kl_divergence(
    p: ArrayLike, q: ArrayLike, axis: _Axis = -1, *, base: float | None = None,
    keepdims: bool = False, validate: bool = True,
    out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
def entropy(
    pk: ArrayLike, qk: ArrayLike | None = None, base: float | None = None,
    axis: _Axis = 0, *, nan_policy: Literal["propagate", "omit", "raise"] = "propagate",
    keepdims: bool = False,
    out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
