# Type stub for lossmle/_losses.py (the public cross_entropy, cross_entropy_with_grad,
# nll_loss, nll_loss_with_grad).  Keep in step with the .py: tests/test_packaging_typing.py runs mypy's stubtest.
from typing import Any, Literal, SupportsIndex, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import TypeAlias

_SCT = TypeVar("_SCT", np.float32, np.float64)
# 'mean' and 'sum' give a numpy scalar, 'none' an array.
_Result: TypeAlias = NDArray[np.floating[Any]] | np.floating[Any]
_Reduction: TypeAlias = Literal["mean", "sum", "none"]

__all__ = ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "nll_loss_with_grad"]

def cross_entropy(
    logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
    weight: ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    reduction: _Reduction = "mean", label_smoothing: float = 0.0,
    sample_weight: ArrayLike | None = None, where: ArrayLike | None = None, logit_softcap: float | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
@overload
def cross_entropy_with_grad(
    logits: NDArray[_SCT], target: ArrayLike, axis: SupportsIndex = -1, *,
    weight: ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    reduction: _Reduction = "mean", label_smoothing: float = 0.0,
    sample_weight: ArrayLike | None = None, where: ArrayLike | None = None, logit_softcap: float | None = None, grad_out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> tuple[_Result, NDArray[_SCT]]: ...
@overload
def cross_entropy_with_grad(
    logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
    weight: ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    reduction: _Reduction = "mean", label_smoothing: float = 0.0,
    sample_weight: ArrayLike | None = None, where: ArrayLike | None = None, logit_softcap: float | None = None, grad_out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> tuple[_Result, NDArray[np.floating[Any]]]: ...
def nll_loss(
    log_probs: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
    weight: ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    reduction: _Reduction = "mean", sample_weight: ArrayLike | None = None, out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
def nll_loss_with_grad(
    log_probs: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
    sample_weight: ArrayLike | None = None, weight: ArrayLike | None = None,
    ignore_index: SupportsIndex = -100, reduction: _Reduction = "mean",
    grad_out: NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> tuple[_Result, NDArray[np.floating[Any]]]: ...
