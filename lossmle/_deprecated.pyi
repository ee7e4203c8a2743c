# Type stub for lossmle/_deprecated.py (the deprecated aliases, handed out by
# lossmle.__getattr__ with a DeprecationWarning; removal planned for 0.3).
# Keep in step with the .py: tests/test_packaging_typing.py runs mypy's stubtest on it.
from collections.abc import Sequence
from typing import Any, Literal, SupportsIndex, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import TypeAlias, deprecated

_SCT = TypeVar("_SCT", np.float32, np.float64)
_Result: TypeAlias = NDArray[np.floating[Any]] | np.floating[Any]
_Axis: TypeAlias = SupportsIndex | Sequence[SupportsIndex] | None
_Reduction: TypeAlias = Literal["mean", "sum", "none"]

__all__ = ["REPLACEMENTS", "message"]

REPLACEMENTS: dict[str, str]

def message(name: str) -> str: ...
@deprecated("lossmle.weighted_cross_entropy is deprecated: use "
            "lossmle.cross_entropy(logits, target, sample_weight=...)")
def weighted_cross_entropy(
    logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
    sample_weight: ArrayLike | None = None, weight: ArrayLike | None = None,
    ignore_index: SupportsIndex = -100, reduction: _Reduction = "mean",
    label_smoothing: float = 0.0, where: ArrayLike | None = None,
    logit_softcap: float | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
@overload
@deprecated("lossmle.weighted_cross_entropy_with_grad is deprecated: use "
            "lossmle.cross_entropy_with_grad(logits, target, sample_weight=...)")
def weighted_cross_entropy_with_grad(
    logits: NDArray[_SCT], target: ArrayLike, axis: SupportsIndex = -1, *,
    sample_weight: ArrayLike | None = None, weight: ArrayLike | None = None,
    ignore_index: SupportsIndex = -100, reduction: _Reduction = "mean",
    label_smoothing: float = 0.0, where: ArrayLike | None = None,
    logit_softcap: float | None = None, grad_out: NDArray[Any] | None = None,
    n_threads: SupportsIndex | None = None,
) -> tuple[_Result, NDArray[_SCT]]: ...
@overload
@deprecated("lossmle.weighted_cross_entropy_with_grad is deprecated: use "
            "lossmle.cross_entropy_with_grad(logits, target, sample_weight=...)")
def weighted_cross_entropy_with_grad(
    logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
    sample_weight: ArrayLike | None = None, weight: ArrayLike | None = None,
    ignore_index: SupportsIndex = -100, reduction: _Reduction = "mean",
    label_smoothing: float = 0.0, where: ArrayLike | None = None,
    logit_softcap: float | None = None, grad_out: NDArray[Any] | None = None,
    n_threads: SupportsIndex | None = None,
) -> tuple[_Result, NDArray[np.floating[Any]]]: ...
@deprecated("lossmle.weighted_nll_loss is deprecated: use "
            "lossmle.nll_loss(log_probs, target, sample_weight=...)")
def weighted_nll_loss(
    log_probs: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
    sample_weight: ArrayLike | None = None, weight: ArrayLike | None = None,
    ignore_index: SupportsIndex = -100, reduction: _Reduction = "mean",
    n_threads: SupportsIndex | None = None,
) -> _Result: ...
@deprecated("lossmle.masked_logsumexp is deprecated: use "
            "lossmle.logsumexp(a, axis, keepdims=..., where=...)")
def masked_logsumexp(
    a: ArrayLike, axis: _Axis = None, keepdims: bool = False, *, where: ArrayLike,
    n_threads: SupportsIndex | None = None,
) -> _Result: ...
@overload
@deprecated("lossmle.masked_softmax is deprecated: use lossmle.softmax(x, axis, where=...)")
def masked_softmax(
    x: NDArray[_SCT], axis: _Axis = None, *, where: ArrayLike,
    n_threads: SupportsIndex | None = None,
) -> NDArray[_SCT]: ...
@overload
@deprecated("lossmle.masked_softmax is deprecated: use lossmle.softmax(x, axis, where=...)")
def masked_softmax(
    x: ArrayLike, axis: _Axis = None, *, where: ArrayLike,
    n_threads: SupportsIndex | None = None,
) -> _Result: ...
@overload
@deprecated("lossmle.masked_log_softmax is deprecated: use "
            "lossmle.log_softmax(x, axis, where=...)")
def masked_log_softmax(
    x: NDArray[_SCT], axis: _Axis = None, *, where: ArrayLike,
    n_threads: SupportsIndex | None = None,
) -> NDArray[_SCT]: ...
@overload
@deprecated("lossmle.masked_log_softmax is deprecated: use "
            "lossmle.log_softmax(x, axis, where=...)")
def masked_log_softmax(
    x: ArrayLike, axis: _Axis = None, *, where: ArrayLike,
    n_threads: SupportsIndex | None = None,
) -> _Result: ...
