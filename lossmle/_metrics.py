"""evaluate_logits: a classifier's evaluation metrics from one read of the logits."""

import numpy as np

from ._kernels import training as _k
from ._validation import (
    as_float_array, check_ignore_index as _check_ignore_index, check_int as _check_int,
    check_positive, check_reduction as _check_reduction, class_axis as _class_axis,
    class_targets as _class_targets, resolve_threads, rows_view,
)

__all__ = ["evaluate_logits"]


def _check_ks(k):
    ks = (k,) if not isinstance(k, (tuple, list)) else tuple(k)
    if not ks:
        raise ValueError("k must be a positive int or a non-empty sequence of them")
    out = []
    for v in ks:
        v = _check_int(v, "k")
        if v < 1:
            raise ValueError(f"k must be positive, got {v}")
        out.append(v)
    return tuple(dict.fromkeys(out))


def evaluate_logits(logits, target, axis=-1, *, k=5, ignore_index=-100,
                    logit_softcap=None, reduction="mean", n_threads=None):
    r"""Evaluation metrics of a classifier (or language model) from ONE read of the logits.

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        Unnormalised log-probabilities.
    target : array_like of int
        Class indices shaped like ``logits`` without the class axis.
    axis : int, optional
        The class axis (default -1).
    k : int or sequence of int, optional
        The top-k accuracies to report (default 5).
    ignore_index : int, optional
        Positions whose target equals it are left out of every metric.
    logit_softcap : float > 0, optional
        Logits become ``cap * tanh(x / cap)`` first.
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' (default): averages over the positions that are not ignored;
        'none': per-position arrays plus a boolean ``'valid'``.
    n_threads : int or None, optional
        Threads for large inputs.

    Returns
    -------
    dict
        ``'nll'`` (``lse - x[y]``, the cross-entropy; a top class's is
        ``log1p`` of the others' share, precise however small), ``'accuracy'`` (argmax
        equals the target), ``'top{k}_accuracy'`` for each ``k``,
        ``'entropy'`` of the predicted distribution, ``'z_loss'``
        (``lse**2``, PaLM's auxiliary loss before its coefficient) and
        ``'count'`` (positions taking part).  Float metrics have the logits'
        dtype.  With 'none', ignored positions hold nan (floats) and False.

    Notes
    -----
    Per row one read: a running maximum ``m`` with the rescaled sums
    ``s = sum exp(x - m)`` and ``u = sum exp(x - m)(x - m)`` (so
    ``lse = m + log s`` and ``entropy = log s - u / s``), and the rank of the
    target, ``#{j: x_j > x_y} + #{j < y: x_j = x_y}``: its position in a
    stable descending sort.  Ties therefore go to the lower class index, as
    ``np.argmax``; top-k is ``rank < k``.  A row with nan counts as wrong
    and has nan metrics.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import evaluate_logits
    >>> m = evaluate_logits(np.array([[3.0, 1.0, 2.0], [0.0, 1.0, 2.0]]), [2, 0], k=2)
    >>> float(m["accuracy"]), float(m["top2_accuracy"]), m["count"]
    (0.0, 0.5, 2)
    """
    x = as_float_array(logits, "logits")
    ax = _class_axis(x, axis, "logits")
    n_classes = x.shape[ax]
    ks = _check_ks(k)
    ignore_index = _check_ignore_index(ignore_index)
    cap = check_positive(logit_softcap, "logit_softcap", allow_none=True)
    reduction = _check_reduction(reduction, ("none", "sum", "mean"))
    x3, _ = rows_view(x, (ax,))
    t2 = _class_targets(target, x.shape, ax, n_classes, ignore_index, "logits")
    shape = x.shape[:ax] + x.shape[ax + 1:]
    nll = np.empty(t2.shape, dtype=np.float64)
    ent = np.empty_like(nll)
    lse = np.empty_like(nll)
    rank = np.empty(t2.shape, dtype=np.int64)
    n_threads = resolve_threads(n_threads, x.size)
    if x.size:
        _k.evaluate_rows(x3, t2, ignore_index, cap, nll, ent, lse, rank,
                         n_threads)
    valid = t2 != ignore_index
    dtype = x.dtype
    metrics = {"nll": nll, "accuracy": rank == 0}
    for kk in ks:
        metrics[f"top{kk}_accuracy"] = (rank >= 0) & (rank < kk)
    metrics["entropy"] = ent
    with np.errstate(over="ignore"):   # lse ~ 1e308 squares to inf, quietly
        metrics["z_loss"] = lse * lse
    if reduction == "none":
        result = {}
        for name, val in metrics.items():
            if val.dtype == np.bool_:
                val = val & valid
            else:
                val = np.where(valid, val, np.nan).astype(dtype)
            val = val.reshape(shape)
            result[name] = val[()] if val.ndim == 0 else val
        result["valid"] = valid.reshape(shape)[()] if not shape else valid.reshape(shape)
        result["count"] = int(valid.sum())
        return result
    count = int(valid.sum())
    result = {}
    for name, val in metrics.items():
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            total = np.sum(val[valid], dtype=np.float64)
            if reduction == "mean":
                total = total / count if count else np.nan
            result[name] = dtype.type(total)
    result["count"] = count
    return result

