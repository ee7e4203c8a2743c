"""linear_cross_entropy: cross-entropy of a linear layer's logits, never built whole.

``cross_entropy(hidden @ weight.T + bias, target)`` for a vocabulary of V
classes needs an N x V logits matrix (823 MB for N=4096, V=50257 in float32,
and as much again for its gradient).  Here the vocabulary is processed in
blocks of ``chunk_size`` classes: each block's logits are one matmul (BLAS,
through numpy), merged into a per-row streaming log-sum-exp state
(``_kernels/streaming.pyx``: running max, count at it, rescaled sum, in float64)
and the target logit is picked out of the block that holds it.  Extra memory
is one N x chunk block.  The gradient makes a second pass over the blocks:
recompute the block, turn it into ``softmax - onehot`` in place, and
accumulate ``d hidden += G @ W_blk`` and ``d W_blk = G.T @ hidden``.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels import streaming as _sk
from ._validation import (
    as_float_array, check_ignore_index, check_int, check_reduction, common_float_dtype,
    resolve_threads,
)

__all__ = ["linear_cross_entropy", "linear_cross_entropy_with_grad"]

_FloatArray = NDArray[np.floating[Any]]
_Result = Union[_FloatArray, np.floating[Any]]
_Reduction = Literal["mean", "sum", "none"]
_INT64 = np.iinfo(np.int64)

#: default block: about this many logits (32 MiB in float32, 64 MiB in float64)
_BLOCK_ELEMENTS = 1 << 23


class _Problem:
    """A validated call: 2-D contiguous operands, flat targets, options."""
    __slots__ = ("hidden", "weight", "bias", "target", "batch_shape", "n", "v",
                 "ignore_index", "reduction", "chunk", "n_threads", "kept", "denom")
    hidden: _FloatArray          # (n, d), C-contiguous
    weight: _FloatArray          # (v, d), C-contiguous
    bias: Optional[_FloatArray]  # (v,)
    target: NDArray[np.int64]    # (n,)
    batch_shape: Tuple[int, ...]
    n: int
    v: int
    ignore_index: int
    reduction: str
    chunk: int
    n_threads: int
    kept: NDArray[np.bool_]      # target != ignore_index
    denom: float                 # number of kept targets


def _prepare(hidden: ArrayLike, weight: ArrayLike, target: ArrayLike,
             bias: Optional[ArrayLike], chunk_size: Optional[int],
             ignore_index: int, reduction: str, n_threads: Optional[int]) -> _Problem:
    p = _Problem()
    p.reduction = check_reduction(reduction, ("mean", "sum", "none"))
    pairs = [(hidden, "hidden"), (weight, "weight")]
    if bias is not None:
        pairs.append((bias, "bias"))
    dtype = common_float_dtype(*pairs)
    h = as_float_array(hidden, "hidden", dtype)
    w = as_float_array(weight, "weight", dtype)
    if h.ndim < 1:
        raise ValueError("hidden must have at least one dimension (the features, last)")
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D (n_classes, n_features), got shape {w.shape}")
    d = h.shape[-1]
    if w.shape[1] != d:
        raise ValueError(
            f"weight has {w.shape[1]} features (shape {w.shape}), but hidden has {d} "
            f"(last axis of shape {h.shape})")
    p.v = w.shape[0]
    if p.v == 0:
        raise ValueError("weight has no classes (shape[0] == 0)")
    if bias is not None:
        b = as_float_array(bias, "bias", dtype)
        if b.shape != (p.v,):
            raise ValueError(f"bias must have shape ({p.v},) (one per class of weight), "
                             f"got {b.shape}")
        p.bias = np.ascontiguousarray(b)
    else:
        p.bias = None
    p.ignore_index = check_ignore_index(ignore_index)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    p.batch_shape = h.shape[:-1]
    if t.shape != p.batch_shape:
        raise ValueError(f"target has shape {t.shape}, but hidden of shape {h.shape} "
                         f"needs {p.batch_shape} (hidden without its last axis)")
    if t.dtype.kind == "u" and t.size and t.max() > _INT64.max:
        raise IndexError(f"target contains class index {int(t.max())}, out of range")
    t = t.astype(np.int64, copy=False).reshape(-1)
    bad = ((t < 0) | (t >= p.v)) & (t != p.ignore_index)
    if bad.any():
        raise IndexError(
            f"target contains class index {int(t[np.argmax(bad)])}, but weight has "
            f"{p.v} classes (valid: 0..{p.v - 1} or ignore_index={p.ignore_index})")
    p.target = t
    # BLAS wants contiguous operands: one copy up front beats one per block
    p.hidden = np.ascontiguousarray(h.reshape(-1, d))
    p.weight = np.ascontiguousarray(w)
    p.n = p.hidden.shape[0]
    if chunk_size is None:
        p.chunk = max(256, _BLOCK_ELEMENTS // max(p.n, 1))
    else:
        p.chunk = check_int(chunk_size, "chunk_size")
        if p.chunk < 1:
            raise ValueError(f"chunk_size must be a positive int, got {p.chunk}")
    p.chunk = min(p.chunk, p.v)
    p.n_threads = resolve_threads(n_threads, p.n * p.chunk)
    p.kept = p.target != p.ignore_index
    p.denom = float(np.count_nonzero(p.kept))
    return p


def _block(p: _Problem, v0: int, v1: int, out: _FloatArray) -> _FloatArray:
    """out[:, :v1-v0] = hidden @ weight[v0:v1].T + bias[v0:v1]; returns that view."""
    blk = out[:, :v1 - v0]
    np.matmul(p.hidden, p.weight[v0:v1].T, out=blk)
    if p.bias is not None:
        blk += p.bias[v0:v1]
    return blk


def _forward(p: _Problem, buf: _FloatArray) -> Tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-row log-sum-exp and row loss (float64), one pass over the blocks."""
    m = np.full(p.n, -np.inf)
    c = np.zeros(p.n)
    s = np.zeros(p.n)
    target_logit = np.zeros(p.n)
    rows = np.arange(p.n)
    for v0 in range(0, p.v, p.chunk):
        v1 = min(v0 + p.chunk, p.v)
        blk = _block(p, v0, v1, buf)
        _sk.update_rows(blk.reshape(p.n, v1 - v0, 1), m, c, s, p.n_threads)
        here = (p.target >= v0) & (p.target < v1)
        target_logit[here] = blk[rows[here], p.target[here] - v0]
    lse = np.empty(p.n)
    _sk.result_rows(m, c, s, lse)
    loss = np.where(p.kept, lse - target_logit, 0.0)
    return lse, loss


def _reduce(p: _Problem, loss: NDArray[np.float64], dtype: np.dtype[Any]) -> _Result:
    if p.reduction == "none":
        out: _FloatArray = loss.reshape(p.batch_shape).astype(dtype)
        return out
    total = np.sum(loss)  # pairwise
    if p.reduction == "sum":
        return dtype.type(total)  # type: ignore[no-any-return]
    with np.errstate(invalid="ignore", divide="ignore"):
        return dtype.type(total / p.denom)  # type: ignore[no-any-return]


_DOC_PARAMS = """    Parameters
    ----------
    hidden : array_like, shape (..., d)
        Inputs of the linear layer (e.g. a language model's last hidden
        states); float32 stays float32.
    weight : array_like, shape (V, d)
        The layer's weight, one row per class (torch's ``nn.Linear.weight``).
    target : array_like of int, shape (...)
        Class indices, shaped like ``hidden`` without its last axis.
    bias : array_like, shape (V,), optional
        The layer's bias.
    chunk_size : int, optional
        Classes per block.  Default: about 8M logits per block (2048 classes
        for N = 4096 rows), at least 256.  Peak extra memory is one N x
        ``chunk_size`` block.
    ignore_index : int, optional
        Targets equal to it contribute neither loss nor gradient
        (default -100).
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' divides by the number of non-ignored targets (nan if none).
    n_threads : int or None, optional
        Threads of the log-sum-exp kernel (None:
        :func:`lossmle.get_num_threads`); the matmuls use numpy's BLAS
        threads."""


def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, target: ArrayLike, *,
                         bias: Optional[ArrayLike] = None,
                         chunk_size: Optional[int] = None, ignore_index: int = -100,
                         reduction: _Reduction = "mean",
                         n_threads: Optional[int] = None) -> _Result:
    """Cross-entropy of ``hidden @ weight.T + bias`` without the N x V logits.

    Equal to ``cross_entropy(hidden @ weight.T + bias, target)`` (torch's
    ``F.cross_entropy(F.linear(hidden, weight, bias), target)``), with
    extra memory O(N x chunk_size) instead of O(N x V).

{params}

    Returns
    -------
    loss : numpy scalar or ndarray
        A scalar of the inputs' dtype for 'mean' and 'sum'; for 'none' an
        array shaped like ``target``.

    Notes
    -----
    Per row, ``loss = logsumexp(z) - z[y]`` with ``z = W h + b``.  The
    vocabulary is cut into blocks; each block's logits are one matmul, then
    merged into a streaming log-sum-exp (running max ``m``, count ``c`` at
    it, ``s = sum exp(z - m)`` over the rest, rescaled when ``m`` grows;
    ``lse = log1p(s / c) + log(c) + m``, in float64), and ``z[y]`` is read
    from the block that holds ``y``.  The logits of a block are rounded to
    the inputs' dtype exactly as the full matmul's would be.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import linear_cross_entropy, cross_entropy
    >>> rng = np.random.default_rng(0)
    >>> h, W = rng.normal(size=(8, 4)), rng.normal(size=(100, 4))
    >>> y = rng.integers(0, 100, size=8)
    >>> a = linear_cross_entropy(h, W, y, chunk_size=16)
    >>> bool(np.isclose(a, cross_entropy(h @ W.T, y), rtol=1e-13))
    True
    """
    p = _prepare(hidden, weight, target, bias, chunk_size, ignore_index, reduction,
                 n_threads)
    buf = np.empty((p.n, p.chunk), dtype=p.hidden.dtype)
    _, loss = _forward(p, buf)
    return _reduce(p, loss, p.hidden.dtype)


def linear_cross_entropy_with_grad(
        hidden: ArrayLike, weight: ArrayLike, target: ArrayLike, *,
        bias: Optional[ArrayLike] = None, chunk_size: Optional[int] = None,
        ignore_index: int = -100, reduction: _Reduction = "mean",
        n_threads: Optional[int] = None,
) -> Tuple[_Result, _FloatArray, _FloatArray, Optional[_FloatArray]]:
    """:func:`linear_cross_entropy` and its gradients with respect to hidden, weight and bias.

{params}

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`linear_cross_entropy`.
    grad_hidden : ndarray, shape of ``hidden``
    grad_weight : ndarray, shape (V, d)
    grad_bias : ndarray, shape (V,), or None when ``bias`` is None
        Gradients of the loss (of ``loss.sum()`` for 'none'), equal to
        torch autograd's, in the inputs' dtype.

    Notes
    -----
    With ``G = (softmax(z) - onehot(y)) * scale`` (``scale`` = 1 / number of
    kept targets for 'mean', 1 otherwise, 0 on ignored rows):
    ``d hidden = G W``, ``d W = G^T hidden``, ``d b = sum_rows G``.  The
    first pass gives every row's log-sum-exp; a second pass recomputes each
    block's logits, makes ``G`` in place (``exp(z - lse) * scale``, minus
    ``scale`` at the target) and accumulates the three products, so ``G``
    never exists beyond one block.  That costs one more matmul per block
    than the naive composition (4 instead of 3) and saves 2 N x V arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import linear_cross_entropy_with_grad
    >>> h, W = np.zeros((2, 3)), np.zeros((4, 3))
    >>> loss, gh, gW, gb = linear_cross_entropy_with_grad(h, W, np.array([0, 1]))
    >>> float(loss) == float(np.log(4)), gh.shape, gW.shape, gb is None
    (True, (2, 3), (4, 3), True)
    """
    p = _prepare(hidden, weight, target, bias, chunk_size, ignore_index, reduction,
                 n_threads)
    dtype = p.hidden.dtype
    buf = np.empty((p.n, p.chunk), dtype=dtype)
    lse, loss = _forward(p, buf)
    if p.reduction == "mean":
        scale = 1.0 / p.denom if p.denom else 0.0
    else:
        scale = 1.0
    row_scale = np.where(p.kept, scale, 0.0).astype(dtype)
    neg_lse = (-lse).astype(dtype)[:, None]
    d = p.hidden.shape[1]
    grad_h = np.zeros((p.n, d), dtype=dtype)
    tmp = np.empty((p.n, d), dtype=dtype)
    grad_w = np.empty((p.v, d), dtype=dtype)
    grad_b = np.empty(p.v, dtype=dtype) if p.bias is not None else None
    rows = np.arange(p.n)
    for v0 in range(0, p.v, p.chunk):
        v1 = min(v0 + p.chunk, p.v)
        g = _block(p, v0, v1, buf)
        g += neg_lse                       # z - lse <= ~0: exp never overflows
        np.exp(g, out=g)
        g *= row_scale[:, None]
        here = p.kept & (p.target >= v0) & (p.target < v1)
        g[rows[here], p.target[here] - v0] -= row_scale[here]
        np.matmul(g, p.weight[v0:v1], out=tmp)
        grad_h += tmp
        np.matmul(g.T, p.hidden, out=grad_w[v0:v1])
        if grad_b is not None:
            np.sum(g, axis=0, out=grad_b[v0:v1])
    hidden_shape = p.batch_shape + (d,)
    return _reduce(p, loss, dtype), grad_h.reshape(hidden_shape), grad_w, grad_b


for _f in (linear_cross_entropy, linear_cross_entropy_with_grad):
    _f.__doc__ = (_f.__doc__ or "").replace("{params}", _DOC_PARAMS)
del _f
