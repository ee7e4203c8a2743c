# Type stub for lossmle/_bce.py (the public binary_cross_entropy_with_logits and
# its _with_grad twin).  Keep in step with the .py: tests/test_packaging_typing.py runs
# mypy's stubtest on it.
from typing import Any, Literal, SupportsIndex, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import TypeAlias

_SCT = TypeVar("_SCT", np.float32, np.float64)
# 'mean' and 'sum' give a numpy scalar, 'none' an array (a scalar for 0-d input).
_Result: TypeAlias = NDArray[np.floating[Any]] | np.floating[Any]
_Reduction: TypeAlias = Literal["mean", "sum", "none"]

__all__ = ["binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_with_grad"]

def binary_cross_entropy_with_logits(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None, sample_weight: ArrayLike | None = None,
    reduction: _Reduction = "mean", n_threads: SupportsIndex | None = None,
) -> _Result: ...

# The computation dtype is the promotion of logits, target, weight and
# pos_weight (a Python float or int counts as float64): the gradient stays
# float32 only when all of them are float32.
@overload
def binary_cross_entropy_with_logits_with_grad(
    logits: NDArray[_SCT], target: NDArray[_SCT], *,
    weight: NDArray[_SCT] | None = None, pos_weight: NDArray[_SCT] | None = None,
    sample_weight: ArrayLike | None = None, reduction: _Reduction = "mean",
    grad_out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> tuple[_Result, NDArray[_SCT]]: ...
@overload
def binary_cross_entropy_with_logits_with_grad(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None, sample_weight: ArrayLike | None = None,
    reduction: _Reduction = "mean", grad_out: NDArray[Any] | None = None,
    n_threads: SupportsIndex | None = None,
) -> tuple[_Result, NDArray[np.floating[Any]]]: ...
