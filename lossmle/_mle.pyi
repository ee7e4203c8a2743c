# Type stub for lossmle/_mle.py (the public log_likelihood,
# negative_log_likelihood, empirical_kl).  Keep in step with the .py:
# tests/test_packaging_typing.py runs mypy's stubtest on it.
from typing import Any, Literal, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import TypeAlias

# 'sum' and 'mean' give a numpy scalar, 'none' an array shaped like samples,
# in the float dtype of dist (float32 stays float32).
_Result: TypeAlias = NDArray[np.floating[Any]] | np.floating[Any]
_Reduction: TypeAlias = Literal["sum", "mean", "none"]

__all__ = ["log_likelihood", "negative_log_likelihood", "empirical_kl"]

def log_likelihood(
    dist: ArrayLike, samples: ArrayLike, *, logits: bool = False,
    axis: SupportsIndex = -1, reduction: _Reduction = "sum",
    n_threads: SupportsIndex | None = None,
) -> _Result: ...
def negative_log_likelihood(
    dist: ArrayLike, samples: ArrayLike, *, logits: bool = False,
    axis: SupportsIndex = -1, reduction: _Reduction = "sum",
    n_threads: SupportsIndex | None = None,
) -> _Result: ...
def empirical_kl(
    samples: ArrayLike, p: ArrayLike, q: ArrayLike, *, axis: SupportsIndex = -1,
    base: float | None = None,
) -> np.float64: ...
