"""NumPy pieces shared by the framework adapters (``lossmle.torch``, ``lossmle.jax``).

What lossmle's core does not (yet) offer as a kernel: torch's ``kl_div``
(pointwise ``xlogy(t, t) - t * x``; to move onto lossmle's own ``kl_div``
kernel) and the gradient pass of ``linear_cross_entropy`` for per-row
incoming gradients (``reduction='none'`` under an arbitrary upstream
gradient), which the core's ``linear_cross_entropy_with_grad`` computes only
for ``loss.sum()``.  No framework is imported here.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

# The core functions the adapters wrap, named once for both (``_core.ce`` ...).
from ._bce import (  # noqa: F401
    binary_cross_entropy_with_logits as bce,
    binary_cross_entropy_with_logits_with_grad as bce_with_grad,
)
from ._linear_ce import (  # noqa: F401
    linear_cross_entropy as lce, linear_cross_entropy_with_grad as lce_with_grad,
)
from ._logit_divergence import (  # noqa: F401
    kl_divergence_from_logits as kl_logits,
    kl_divergence_from_logits_with_grad as kl_logits_with_grad,
)
from ._losses import (  # noqa: F401
    cross_entropy as ce, cross_entropy_with_grad as ce_with_grad, nll_loss as nll,
    nll_loss_with_grad as nll_with_grad,
)
from ._special import (  # noqa: F401
    log_softmax, log_softmax_backward, logsumexp, softmax, softmax_backward,
)

__all__ = ["KL_DIV_REDUCTIONS", "kl_div_value", "kl_div_grads", "linear_ce_rows_grads"]

KL_DIV_REDUCTIONS = ("none", "batchmean", "sum", "mean")


def check_kl_div_reduction(reduction: object) -> str:
    if not isinstance(reduction, str) or reduction not in KL_DIV_REDUCTIONS:
        raise ValueError(f"reduction must be one of 'none', 'batchmean', 'sum', 'mean', "
                         f"got {reduction!r}")
    return reduction


def _kl_div_denominator(reduction: str, x: np.ndarray) -> float:
    if reduction == "mean":
        return float(x.size)
    if reduction == "batchmean":
        return float(x.shape[0]) if x.ndim else 1.0
    return 1.0


def kl_div_value(x: np.ndarray, t: np.ndarray, reduction: str,
                 log_target: bool) -> np.ndarray:
    """torch's ``kl_div(x, t)``: pointwise ``xlogy(t, t) - t * x`` (``t = 0``
    gives ``0 - 0 * x``), or ``exp(t) * (t - x)`` for log targets; the sums in
    double.  Returns an array of ``x.dtype`` (0-d unless ``'none'``)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if log_target:
            terms = np.exp(t) * (t - x)
        else:
            tlogt = np.where(t == 0, 0.0, t * np.log(np.where(t == 0, 1.0, t)))
            terms = tlogt - t * x
        if reduction == "none":
            return np.asarray(terms, dtype=x.dtype)
        total = np.sum(terms, dtype=np.float64)
        return np.asarray(total / _kl_div_denominator(reduction, x), dtype=x.dtype)


def kl_div_grads(x: np.ndarray, t: np.ndarray, reduction: str, log_target: bool,
                 need_x: bool, need_t: bool) -> tuple[Optional[np.ndarray],
                                                      Optional[np.ndarray]]:
    """Gradients of :func:`kl_div_value` (of its sum for 'none') w.r.t. x and t,
    as torch's autograd gives them: ``-t`` (``-exp(t)``) for ``x``;
    ``log t + t / t - x`` for ``t`` (``nan`` at ``t = 0``, torch's
    derivative of ``xlogy``), ``exp(t) (t - x + 1)`` for log targets."""
    scale = 1.0 / _kl_div_denominator(reduction, x)
    gx = gt = None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        et = np.exp(t) if log_target else t
        if need_x:
            gx = np.multiply(et, -scale, dtype=x.dtype)
        if need_t:
            d = et * (t - x + 1.0) if log_target else np.log(t) + t / t - x
            gt = np.multiply(d, scale, dtype=x.dtype)
    return gx, gt


def linear_ce_rows_grads(h: np.ndarray, w: np.ndarray, b: Optional[np.ndarray],
                         target: np.ndarray, loss: np.ndarray, row_grad: np.ndarray,
                         ignore_index: int, chunk_size: Optional[int],
                         need: tuple[bool, bool, bool]) -> list[Optional[np.ndarray]]:
    """Gradients of ``sum_i row_grad_i * loss_i`` w.r.t. hidden, weight, bias,
    where ``loss`` holds the per-row losses of ``linear_cross_entropy(h, w,
    target, bias=b, reduction='none')``.

    Each row's log-sum-exp is ``loss_i + z_i[y_i]`` (``z[y] = h . W[y] + b[y]``
    in double); then block by block over the classes, as
    :func:`lossmle.linear_cross_entropy_with_grad`:
    ``G = row_grad * (exp(z - lse) - onehot(y))``, ``dh += G W_blk``,
    ``dW_blk = G^T h``, ``db_blk = sum_rows G``.  Ignored rows get 0.
    """
    d = h.shape[-1]
    h2 = np.ascontiguousarray(h.reshape(-1, d))
    w2 = np.ascontiguousarray(w)
    n, v = h2.shape[0], w2.shape[0]
    dtype = h2.dtype
    t1 = np.asarray(target).reshape(-1).astype(np.int64, copy=False)
    kept = t1 != ignore_index
    tt = np.where(kept, t1, 0)
    zy = np.einsum("nd,nd->n", h2, w2[tt], dtype=np.float64)
    if b is not None:
        zy += b[tt]
    lse = np.where(kept, np.asarray(loss, dtype=np.float64).reshape(-1) + zy, 0.0)
    scale = np.where(kept, np.asarray(row_grad, dtype=np.float64).reshape(-1), 0.0)
    chunk = chunk_size or max(256, (1 << 23) // max(n, 1))
    chunk = min(chunk, v)
    gh = np.zeros((n, d), dtype=dtype) if need[0] else None
    gw = np.empty((v, d), dtype=dtype) if need[1] else None
    gb = np.empty(v, dtype=dtype) if need[2] and b is not None else None
    rows = np.arange(n)
    scale_col = scale.astype(dtype)[:, None]
    neg_lse = (-lse).astype(dtype)[:, None]
    buf = np.empty((n, chunk), dtype=dtype)
    for v0 in range(0, v, chunk):
        v1 = min(v0 + chunk, v)
        g = buf[:, :v1 - v0]
        np.matmul(h2, w2[v0:v1].T, out=g)
        if b is not None:
            g += b[v0:v1]
        g += neg_lse                  # z - lse <= ~0: exp never overflows
        np.exp(g, out=g)
        g *= scale_col
        here = kept & (tt >= v0) & (tt < v1)
        g[rows[here], tt[here] - v0] -= scale_col[here, 0]
        if gh is not None:
            gh += g @ w2[v0:v1]
        if gw is not None:
            np.matmul(g.T, h2, out=gw[v0:v1])
        if gb is not None:
            np.sum(g, axis=0, out=gb[v0:v1])
    return [None if gh is None else gh.reshape(h.shape), gw, gb]
