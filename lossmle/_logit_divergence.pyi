# Type stub for lossmle/_logit_divergence.py (the public kl_divergence_from_logits,
# kl_divergence_from_logits_with_grad, js_divergence_from_logits,
# entropy_from_logits).  Keep in step with the .py: tests/test_packaging_typing.py runs
# mypy's stubtest on it.
from typing import Any, Literal, SupportsIndex, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import TypeAlias

_SCT = TypeVar("_SCT", np.float32, np.float64)
# 'none' gives an array (a numpy scalar for a single position), the others a
# numpy scalar, all of the computation dtype.
_Result: TypeAlias = NDArray[np.floating[Any]] | np.floating[Any]
_FloatArray: TypeAlias = NDArray[np.floating[Any]]
_DivReduction: TypeAlias = Literal["batchmean", "sum", "mean", "none"]

__all__ = [
    "kl_divergence_from_logits", "kl_divergence_from_logits_with_grad",
    "js_divergence_from_logits", "entropy_from_logits",
]

def kl_divergence_from_logits(
    p_logits: ArrayLike, q_logits: ArrayLike, axis: SupportsIndex = -1, *,
    temperature: float = 1.0, logit_softcap: float | None = None,
    reduction: _DivReduction = "batchmean", n_threads: SupportsIndex | None = None,
) -> _Result: ...

# The gradients have the common dtype of p_logits and q_logits (float32 only
# when both are float32); p_grad=True adds the gradient for p_logits (and
# p_grad_out needs it).
@overload
def kl_divergence_from_logits_with_grad(
    p_logits: NDArray[_SCT], q_logits: NDArray[_SCT], axis: SupportsIndex = -1, *,
    temperature: float = 1.0, logit_softcap: float | None = None,
    reduction: _DivReduction = "batchmean", p_grad: Literal[False] = False,
    grad_out: NDArray[Any] | None = None, p_grad_out: None = None,
    n_threads: SupportsIndex | None = None,
) -> tuple[_Result, NDArray[_SCT]]: ...
@overload
def kl_divergence_from_logits_with_grad(
    p_logits: NDArray[_SCT], q_logits: NDArray[_SCT], axis: SupportsIndex = -1, *,
    temperature: float = 1.0, logit_softcap: float | None = None,
    reduction: _DivReduction = "batchmean", p_grad: Literal[True],
    grad_out: NDArray[Any] | None = None, p_grad_out: NDArray[Any] | None = None,
    n_threads: SupportsIndex | None = None,
) -> tuple[_Result, NDArray[_SCT], NDArray[_SCT]]: ...
@overload
def kl_divergence_from_logits_with_grad(
    p_logits: ArrayLike, q_logits: ArrayLike, axis: SupportsIndex = -1, *,
    temperature: float = 1.0, logit_softcap: float | None = None,
    reduction: _DivReduction = "batchmean", p_grad: Literal[False] = False,
    grad_out: NDArray[Any] | None = None, p_grad_out: None = None,
    n_threads: SupportsIndex | None = None,
) -> tuple[_Result, _FloatArray]: ...
@overload
def kl_divergence_from_logits_with_grad(
    p_logits: ArrayLike, q_logits: ArrayLike, axis: SupportsIndex = -1, *,
    temperature: float = 1.0, logit_softcap: float | None = None,
    reduction: _DivReduction = "batchmean", p_grad: Literal[True],
    grad_out: NDArray[Any] | None = None, p_grad_out: NDArray[Any] | None = None,
    n_threads: SupportsIndex | None = None,
) -> tuple[_Result, _FloatArray, _FloatArray]: ...
@overload
def kl_divergence_from_logits_with_grad(
    p_logits: ArrayLike, q_logits: ArrayLike, axis: SupportsIndex = -1, *,
    temperature: float = 1.0, logit_softcap: float | None = None,
    reduction: _DivReduction = "batchmean", p_grad: bool,
    grad_out: NDArray[Any] | None = None, p_grad_out: NDArray[Any] | None = None,
    n_threads: SupportsIndex | None = None,
) -> tuple[_Result, _FloatArray] | tuple[_Result, _FloatArray, _FloatArray]: ...
def js_divergence_from_logits(
    p_logits: ArrayLike, q_logits: ArrayLike, axis: SupportsIndex = -1, *,
    temperature: float = 1.0, logit_softcap: float | None = None,
    base: float | None = None, reduction: _DivReduction = "batchmean",
    n_threads: SupportsIndex | None = None,
) -> _Result: ...
def entropy_from_logits(
    logits: ArrayLike, axis: SupportsIndex = -1, base: float | None = None, *,
    temperature: float = 1.0, logit_softcap: float | None = None,
    reduction: Literal["none", "sum", "mean"] = "none",
    n_threads: SupportsIndex | None = None,
) -> _Result: ...
