"""Training and evaluation: logits-space divergences, fused value-and-gradient
losses, sample weights, masks and one-pass evaluation metrics.

Every public function validates its input once, here, then calls one kernel of
``_training_kernels``.  Conventions shared with the core API: the class axis is
``axis`` (default -1; ``axis=1`` is torch's ``(N, C, d1, ...)``); float32 stays
float32, integers compute in float64; per-row results are accumulated in
double and reduced with NumPy's pairwise sum, so a result never depends on the
thread count; inputs are never modified (except a ``grad_out`` buffer the
caller hands in, which may be the logits array itself).
"""
import math
import operator

import numpy as np

from . import _training_kernels as _k
from ._validation import (
    alloc_transform_out, as_float_array, common_float_dtype, normalize_axes,
    reduced_shape, resolve_threads, rows_view,
)

__all__ = [
    "kl_divergence_from_logits", "kl_divergence_from_logits_with_grad",
    "js_divergence_from_logits", "entropy_from_logits",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_with_grad",
    "softmax_backward", "log_softmax_backward",
    "weighted_cross_entropy", "weighted_cross_entropy_with_grad",
    "weighted_nll_loss", "nll_loss_with_grad",
    "masked_logsumexp", "masked_softmax", "masked_log_softmax",
    "evaluate_logits",
]

_INT64 = np.iinfo(np.int64)


# ---------------------------------------------------------------------------
# Validation helpers (messages name the argument)
# ---------------------------------------------------------------------------
def _check_reduction(reduction, allowed):
    if not isinstance(reduction, str) or reduction not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"reduction must be one of {names}, got {reduction!r}")
    return reduction


def _positive_float(value, name, allow_none=False):
    if value is None and allow_none:
        return 0.0
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive float, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive float, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite float, got {value!r}")
    return v


def _check_base(base):
    if base is None:
        return None
    b = _positive_float(base, "base")
    if b == 1.0:
        raise ValueError("base must not be 1 (log(1) == 0)")
    return b


def _check_int(value, name):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    return v


def _check_ignore_index(ignore_index):
    v = _check_int(ignore_index, "ignore_index")
    if not _INT64.min <= v <= _INT64.max:
        raise ValueError(f"ignore_index must fit in int64, got {v}")
    return v


def _check_label_smoothing(label_smoothing):
    try:
        eps = float(label_smoothing)
    except (TypeError, ValueError):
        raise TypeError(
            f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return eps


def _class_axis(x, axis, name):
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis)")
    (ax,) = normalize_axes(axis, x.ndim, allow_tuple=False)
    if x.shape[ax] == 0:
        raise ValueError(f"{name} has no classes: axis {axis} has length 0")
    return ax


def _same_shape_pair(a, b, a_name, b_name):
    dtype = common_float_dtype((a, a_name), (b, b_name))
    a = as_float_array(a, a_name, dtype)
    b = as_float_array(b, b_name, dtype)
    if a.shape != b.shape:
        raise ValueError(f"{a_name} with shape {a.shape} and {b_name} with shape "
                         f"{b.shape} must have the same shape")
    return a, b


def _check_class_weight(weight, n_classes):
    if weight is None:
        return None
    w = as_float_array(weight, "weight", np.dtype(np.float64))
    if w.shape != (n_classes,):
        raise ValueError(f"weight must be a 1-D array of length {n_classes} (the number "
                         f"of classes), got shape {w.shape}")
    if not np.all(np.isfinite(w)):  # any finite weight, negative too, as torch
        raise ValueError("weight must hold finite class weights (no nan or inf)")
    return np.ascontiguousarray(w)


def _check_sample_weight(sample_weight, shape, name="sample_weight"):
    """Per-position weights as float64, broadcast to ``shape`` (finite, >= 0)."""
    if sample_weight is None:
        return None
    sw = as_float_array(sample_weight, name, np.dtype(np.float64))
    try:
        sw = np.broadcast_to(sw, shape)
    except ValueError:
        raise ValueError(f"{name} with shape {sw.shape} cannot be broadcast to "
                         f"{shape}") from None
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError(f"{name} must hold finite, non-negative weights")
    return sw


def _check_where(where, shape):
    """A boolean mask broadcast to ``shape`` (a view when possible)."""
    w = np.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {w.dtype}")
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"where with shape {w.shape} cannot be broadcast to "
                         f"{shape}") from None


def _class_targets(target, x_shape, ax, n_classes, ignore_index, x_name):
    """Integer class indices as an int64 (n_outer, n_inner) array, checked."""
    target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    expected = x_shape[:ax] + x_shape[ax + 1:]
    if target.shape != expected:
        raise ValueError(f"target holds class indices with shape {target.shape}, but "
                         f"{x_name} needs shape {expected} ({x_name} without its "
                         f"class axis)")
    if target.dtype.kind == "u" and target.size and target.max() > _INT64.max:
        raise IndexError(f"target contains class index {int(target.max())}, out of range")
    t = target.astype(np.int64, copy=False)
    bad = ((t < 0) | (t >= n_classes)) & (t != ignore_index)
    if bad.any():
        label = int(t[bad].flat[0])
        raise IndexError(f"target contains class index {label}, but {x_name} have "
                         f"{n_classes} classes along axis {ax} (valid: 0..{n_classes - 1} "
                         f"or ignore_index={ignore_index})")
    n_outer = math.prod(x_shape[:ax])
    return t.reshape(n_outer, math.prod(x_shape[ax + 1:]))


def _exact_alias(a, b):
    ia, ib = a.__array_interface__, b.__array_interface__
    return (ia["data"][0] == ib["data"][0] and a.strides == b.strides
            and a.shape == b.shape and a.dtype == b.dtype)


def _output_buffer(buf, name, shape, dtype, view_shape, inputs):
    """Validate a caller's output buffer; return ``(result, view, scratch)``.

    ``view`` is what the kernel writes: ``buf`` reshaped to ``view_shape``
    without a copy, or a scratch array copied into ``buf`` afterwards
    (``scratch`` is then not None).  ``buf`` may be exactly one of ``inputs``
    (same memory, strides and dtype: the kernels read element k before they
    write it) but must not partly overlap any of them.
    """
    if buf is None:
        out = np.empty(shape, dtype=dtype)
        return out, out.reshape(view_shape), None
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(buf).__name__}")
    if buf.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} (the computation dtype), "
                        f"got {buf.dtype}")
    if buf.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {buf.shape}")
    if not buf.flags.writeable:
        raise ValueError(f"{name} is read-only")
    for arr, arr_name in inputs:
        if arr is None or not np.may_share_memory(buf, arr):
            continue
        if _exact_alias(buf, arr):
            continue
        try:
            overlap = np.shares_memory(buf, arr, max_work=10_000)
        except np.exceptions.TooHardError:
            overlap = True
        if overlap:
            raise ValueError(f"{name} overlaps {arr_name} without being the same "
                             f"array (same memory, shape and strides)")
    try:
        return buf, buf.reshape(view_shape, copy=False), None
    except ValueError:
        scratch = np.empty(shape, dtype=dtype)
        return buf, scratch.reshape(view_shape), scratch


def _finish_buffer(buf, scratch):
    if scratch is not None:
        np.copyto(buf, scratch)
    return buf


def _scalar(dtype, value):
    return dtype.type(value)


def _row_result(rows, dtype, shape, reduction, denom):
    """Reduce double per-row values: 'none' -> array, else a scalar of ``dtype``."""
    # values near the float range overflow to inf quietly, as torch's do
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if reduction == "none":
            out = rows.reshape(shape).astype(dtype)
            return out[()] if out.ndim == 0 else out
        total = np.sum(rows)
        if reduction == "sum":
            return _scalar(dtype, total)
        return _scalar(dtype, total / denom)


# ---------------------------------------------------------------------------
# Divergences and entropy from logits
# ---------------------------------------------------------------------------
_DIV_REDUCTIONS = ("none", "sum", "mean", "batchmean")


def _div_denominator(reduction, n_rows, n_classes):
    """'batchmean': rows (positions); 'mean': elements (torch's kl_div)."""
    if reduction == "batchmean":
        return float(n_rows)
    if reduction == "mean":
        return float(n_rows * n_classes)
    return 1.0


def _kl_prepare(p_logits, q_logits, axis, temperature, logit_softcap, reduction):
    p, q = _same_shape_pair(p_logits, q_logits, "p_logits", "q_logits")
    ax = _class_axis(p, axis, "p_logits")
    inv_t = 1.0 / _positive_float(temperature, "temperature")
    cap = _positive_float(logit_softcap, "logit_softcap", allow_none=True)
    reduction = _check_reduction(reduction, _DIV_REDUCTIONS)
    p3, _ = rows_view(p, (ax,))
    q3, _ = rows_view(q, (ax,))
    return p, q, ax, p3, q3, inv_t, cap, reduction


def kl_divergence_from_logits(p_logits, q_logits, axis=-1, *, temperature=1.0,
                              logit_softcap=None, reduction="batchmean",
                              n_threads=None):
    r"""KL divergence ``D_KL(softmax(p/T) || softmax(q/T))`` straight from logits.

    The distillation loss: ``p_logits`` are the teacher's, ``q_logits`` the
    student's.  Each row is read once; neither softmax is materialised.

    Parameters
    ----------
    p_logits, q_logits : array_like, same shape (..., C, ...)
        Unnormalised log-probabilities of P (the reference) and Q.
    axis : int, optional
        The class axis (default -1).
    temperature : float > 0, optional
        Both logits are divided by it (default 1).  Hinton et al. scale the
        result by ``T**2``; do that yourself if you want it.
    logit_softcap : float > 0 or None, optional
        If given, logits become ``cap * tanh(x / cap)`` before the temperature.
    reduction : {'batchmean', 'sum', 'mean', 'none'}, optional
        'none': one value per position (the input without its class axis);
        'sum': the total; 'batchmean' (default): the total divided by the
        number of positions, i.e. sum over classes, mean over every other
        axis (right for (B, T, V) inputs, where torch's 'batchmean' divides by
        B only); 'mean': the total divided by the number of elements, as
        torch's ``kl_div(..., reduction='mean')``.
    n_threads : int or None, optional
        Threads for large inputs (None: :func:`lossmle.get_num_threads`).

    Returns
    -------
    numpy scalar or ndarray
        Of the input dtype; >= 0 up to rounding.

    Notes
    -----
    With ``a = p/T``, ``b = q/T`` and ``P = softmax(a)``:
    ``KL = sum_j P_j (a_j - b_j) - lse(a) + lse(b)``.  One read keeps running
    maxima ``m_a``, ``m_b``, the rescaled sums ``s_a = sum exp(a - m_a)``,
    ``s_b``, and ``u = sum exp(a - m_a)(a - m_a)``,
    ``v = sum exp(a - m_a)(b - m_b)``, rescaled whenever a maximum moves;
    then ``KL = (u - v) / s_a + log s_b - log s_a``.  Entries with
    ``p = -inf`` contribute 0 (``0 log 0 = 0``); ``q = -inf`` where ``p`` is
    finite gives ``+inf``; a row holding nan or +inf, or only -inf in either
    input, gives nan.  The absolute error is a few ulps of the largest
    logit (as any logits-space formula, including torch's).

    Examples
    --------
    The seed's coin: P = (1/2, 1/2), Q = (1/3, 2/3), as logits.

    >>> import numpy as np
    >>> from lossmle import kl_divergence_from_logits
    >>> p = np.log([1/2, 1/2]); q = np.log([1/3, 2/3])
    >>> round(float(kl_divergence_from_logits(p, q)), 10)
    0.0588915178
    """
    p, q, ax, p3, q3, inv_t, cap, reduction = _kl_prepare(
        p_logits, q_logits, axis, temperature, logit_softcap, reduction)
    rows = np.empty((p3.shape[0], p3.shape[2]), dtype=np.float64)
    if p.size:
        _k.kl_logits_rows(p3, q3, inv_t, cap, rows, None, None, 1.0,
                          resolve_threads(n_threads, p.size))
    denom = _div_denominator(reduction, rows.size, p3.shape[1])
    return _row_result(rows, p.dtype, p.shape[:ax] + p.shape[ax + 1:], reduction, denom)


def kl_divergence_from_logits_with_grad(p_logits, q_logits, axis=-1, *, temperature=1.0,
                                        logit_softcap=None, reduction="batchmean",
                                        p_grad=False, grad_out=None, p_grad_out=None,
                                        n_threads=None):
    r"""KL divergence from logits and its gradient(s), fused.

    Parameters
    ----------
    p_logits, q_logits, axis, temperature, logit_softcap, reduction, n_threads
        As :func:`kl_divergence_from_logits`.
    p_grad : bool, optional
        Also return the gradient with respect to ``p_logits`` (default False:
        the teacher is usually fixed).
    grad_out : ndarray, optional
        Where to write ``d loss / d q_logits`` (shape of the input, computation
        dtype).  May be ``q_logits`` itself (in place) or ``p_logits``.
    p_grad_out : ndarray, optional
        The same for ``d loss / d p_logits`` (only with ``p_grad=True``).

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`kl_divergence_from_logits`.
    grad_q : ndarray
        ``d loss / d q_logits`` (for 'none': of ``loss.sum()``).
    grad_p : ndarray
        ``d loss / d p_logits``; only with ``p_grad=True``.

    Notes
    -----
    With ``P = softmax(a)``, ``Q = softmax(b)``, ``a = xf(p)``, ``b = xf(q)``
    and ``xf(x) = cap tanh(x / cap) / T``:
    ``d KL / d q_k = (Q_k - P_k) xf'(q_k)`` and
    ``d KL / d p_k = P_k (log P_k - log Q_k - KL) xf'(p_k)``, times the
    reduction's ``1 / denominator``.  The value takes one read of each row;
    the gradients a second.  Rows whose KL is nan have nan gradients; where
    the KL is +inf, ``grad_q`` is still finite and ``grad_p`` is nan.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import kl_divergence_from_logits_with_grad
    >>> loss, g = kl_divergence_from_logits_with_grad(np.log([[0.5, 0.5]]),
    ...                                               np.zeros((1, 2)))
    >>> float(loss), g.tolist()
    (0.0, [[0.0, 0.0]])
    """
    p, q, ax, p3, q3, inv_t, cap, reduction = _kl_prepare(
        p_logits, q_logits, axis, temperature, logit_softcap, reduction)
    if p_grad_out is not None and not p_grad:
        raise ValueError("p_grad_out is given but p_grad is False")
    inputs = [(p, "p_logits"), (q, "q_logits")]
    gq, gq3, gq_tmp = _output_buffer(grad_out, "grad_out", p.shape, p.dtype, p3.shape,
                                     inputs)
    gp = gp3 = gp_tmp = None
    if p_grad:
        gp, gp3, gp_tmp = _output_buffer(p_grad_out, "p_grad_out", p.shape, p.dtype,
                                         p3.shape, inputs)
        if grad_out is not None and p_grad_out is not None and \
                np.may_share_memory(grad_out, p_grad_out):
            raise ValueError("grad_out and p_grad_out must not overlap")
    rows = np.empty((p3.shape[0], p3.shape[2]), dtype=np.float64)
    denom = _div_denominator(reduction, rows.size, p3.shape[1])
    if p.size:
        _k.kl_logits_rows(p3, q3, inv_t, cap, rows, gq3, gp3, 1.0 / denom,
                          resolve_threads(n_threads, p.size))
    loss = _row_result(rows, p.dtype, p.shape[:ax] + p.shape[ax + 1:], reduction, denom)
    gq = _finish_buffer(gq, gq_tmp)
    if p_grad:
        return loss, gq, _finish_buffer(gp, gp_tmp)
    return loss, gq


def js_divergence_from_logits(p_logits, q_logits, axis=-1, *, temperature=1.0,
                              logit_softcap=None, base=None, reduction="batchmean",
                              n_threads=None):
    r"""Jensen-Shannon divergence of ``softmax(p/T)`` and ``softmax(q/T)``.

    Parameters
    ----------
    p_logits, q_logits, axis, temperature, logit_softcap, reduction, n_threads
        As :func:`kl_divergence_from_logits`.
    base : float, optional
        Logarithm base (default e; 2 bounds the divergence by 1).

    Returns
    -------
    numpy scalar or ndarray
        ``JS = (KL(P || M) + KL(Q || M)) / 2`` with ``M = (P + Q) / 2``;
        symmetric, between 0 and ``log 2``.  Its square root (base 2) is
        ``scipy.spatial.distance.jensenshannon``.

    Notes
    -----
    Two reads per row: the log-normalisers of both rows (one online pass),
    then ``sum P (log P - log M) + Q (log Q - log M)`` with
    ``log M = log(1/2) + logaddexp(log P, log Q)`` evaluated as
    ``max + log1p(exp(min - max))``, so no probability is ever subtracted from
    another.  Terms with ``P = 0`` (or ``Q = 0``) contribute 0.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import js_divergence_from_logits
    >>> float(js_divergence_from_logits([0.0, -np.inf], [-np.inf, 0.0], base=2))
    1.0
    """
    p, q, ax, p3, q3, inv_t, cap, reduction = _kl_prepare(
        p_logits, q_logits, axis, temperature, logit_softcap, reduction)
    base = _check_base(base)
    rows = np.empty((p3.shape[0], p3.shape[2]), dtype=np.float64)
    if p.size:
        _k.js_logits_rows(p3, q3, inv_t, cap, rows, resolve_threads(n_threads, p.size))
    if base is not None:
        rows /= math.log(base)
    denom = _div_denominator(reduction, rows.size, p3.shape[1])
    return _row_result(rows, p.dtype, p.shape[:ax] + p.shape[ax + 1:], reduction, denom)


def entropy_from_logits(logits, axis=-1, base=None, *, temperature=1.0,
                        logit_softcap=None, reduction="none", n_threads=None):
    r"""Shannon entropy of ``softmax(logits / T)`` along ``axis``, in one read.

    Parameters
    ----------
    logits : array_like
        Unnormalised log-probabilities.
    axis : int, optional
        The class axis (default -1).
    base : float, optional
        Logarithm base (default e).
    temperature, logit_softcap
        As :func:`kl_divergence_from_logits`.
    reduction : {'none', 'sum', 'mean'}, optional
        'none' (default): one entropy per position; 'mean' averages over
        positions.
    n_threads : int or None, optional
        Threads for large inputs.

    Returns
    -------
    numpy scalar or ndarray
        ``H = -sum p log p`` with ``p = softmax(logits / T)``.

    Notes
    -----
    With ``m`` the row maximum, ``s = sum exp(x - m)`` and
    ``u = sum exp(x - m)(x - m)`` (both kept in one read by rescaling when
    the maximum moves), ``H = log s - u / s``: two non-negative terms, so no
    cancellation and ``H >= 0``.  ``-inf`` logits are classes of probability
    0; a row with nan or +inf, or only -inf, gives nan.

    Examples
    --------
    >>> from lossmle import entropy_from_logits
    >>> float(entropy_from_logits([0.0, 0.0, 0.0, 0.0], base=2))
    2.0
    """
    x = as_float_array(logits, "logits")
    ax = _class_axis(x, axis, "logits")
    base = _check_base(base)
    inv_t = 1.0 / _positive_float(temperature, "temperature")
    cap = _positive_float(logit_softcap, "logit_softcap", allow_none=True)
    reduction = _check_reduction(reduction, ("none", "sum", "mean"))
    x3, _ = rows_view(x, (ax,))
    rows = np.empty((x3.shape[0], x3.shape[2]), dtype=np.float64)
    if x.size:
        _k.entropy_logits_rows(x3, inv_t, cap, rows, resolve_threads(n_threads, x.size))
    if base is not None:
        rows /= math.log(base)
    return _row_result(rows, x.dtype, x.shape[:ax] + x.shape[ax + 1:], reduction,
                       float(rows.size))


# ---------------------------------------------------------------------------
# Binary cross-entropy with logits
# ---------------------------------------------------------------------------
def _bce_prepare(logits, target, weight, pos_weight, sample_weight, reduction):
    arrays = [(logits, "logits"), (target, "target")]
    arrays += [(a, n) for a, n in ((weight, "weight"), (pos_weight, "pos_weight"))
               if a is not None]
    dtype = common_float_dtype(*arrays)
    x = as_float_array(logits, "logits", dtype)
    t = as_float_array(target, "target", dtype)
    if t.shape != x.shape:
        raise ValueError(f"target with shape {t.shape} must have the shape of logits "
                         f"{x.shape}")
    reduction = _check_reduction(reduction, ("none", "sum", "mean"))
    shape2 = (x.size // x.shape[-1], x.shape[-1]) if x.ndim and x.size else (x.size, 1)

    def view2(a, name):
        if a is None:
            return None
        a = as_float_array(a, name, dtype)
        try:
            a = np.broadcast_to(a, x.shape)
        except ValueError:
            raise ValueError(f"{name} with shape {a.shape} cannot be broadcast to logits "
                             f"{x.shape}") from None
        return a.reshape(shape2)

    sw = _check_sample_weight(sample_weight, x.shape)
    sw2 = None if sw is None else view2(sample_weight, "sample_weight")
    others = [(weight, "weight"), (pos_weight, "pos_weight")]
    return (x, t, x.reshape(shape2), t.reshape(shape2), view2(weight, "weight"),
            view2(pos_weight, "pos_weight"), sw, sw2, reduction, shape2,
            [(np.asarray(a), n) for a, n in others if isinstance(a, np.ndarray)])


def _bce_run(logits, target, weight, pos_weight, sample_weight, reduction, n_threads,
             want_grad, grad_out):
    x, t, x2, t2, w2, pw2, sw, sw2, reduction, shape2, others = _bce_prepare(
        logits, target, weight, pos_weight, sample_weight, reduction)
    dtype = x.dtype
    if reduction == "mean":
        denom = float(np.sum(sw)) if sw is not None else float(x.size)
    else:
        denom = 1.0
    scale = 0.0 if denom == 0 else 1.0 / denom
    loss = np.empty(shape2, dtype=dtype) if reduction == "none" else None
    row_loss = np.zeros(shape2[0], dtype=np.float64)
    grad = grad2 = scratch = None
    if want_grad:
        grad, grad2, scratch = _output_buffer(
            grad_out, "grad_out", x.shape, dtype, shape2,
            [(x, "logits"), (t, "target")] + others)
    if x.size:
        _k.bce_logits_rows(x2, t2, w2, pw2, sw2, loss, row_loss, grad2, scale,
                           resolve_threads(n_threads, x.size))
    if reduction == "none":
        value = loss.reshape(x.shape)
        value = value[()] if value.ndim == 0 else value
    else:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = dtype.type(np.sum(row_loss) if reduction == "sum"
                               else np.sum(row_loss) / denom)
    if want_grad:
        return value, _finish_buffer(grad, scratch)
    return value


_BCE_PARAMS = """    logits : array_like
        Unnormalised log-odds, any shape.
    target : array_like
        Targets in [0, 1] (soft labels allowed), same shape as ``logits``.
    weight : array_like, optional
        Per-element rescaling, broadcast to ``logits`` (torch's ``weight``:
        it scales the loss but is not part of the mean's denominator).
    pos_weight : array_like, optional
        Weight of the positive term, broadcast to ``logits`` (torch: a
        ``(C,)`` vector weights class ``c`` of the last axis).
    sample_weight : array_like, optional
        Per-element weights (finite, >= 0) broadcast to ``logits``; with
        them ``'mean'`` is ``sum(sw * loss) / sum(sw)``.
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' divides by the number of elements (by ``sum(sample_weight)``
        when given); all-zero sample weights give nan.
    n_threads : int or None, optional
        Threads for large inputs."""


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     sample_weight=None, reduction="mean", n_threads=None):
    r"""Binary cross-entropy on logits, as torch's ``binary_cross_entropy_with_logits``.

    Parameters
    ----------
{params}

    Returns
    -------
    numpy scalar or ndarray
        Of the computation dtype; shaped like ``logits`` for 'none'.

    Notes
    -----
    ``loss = w [pw t softplus(-x) + (1 - t) softplus(x)]`` with
    ``softplus(x) = max(x, 0) + log1p(exp(-|x|))``, which never overflows
    and keeps full precision in both tails (``-log sigmoid(x)`` for large
    negative ``x`` is ``-x``, not ``log(0)``).  Infinite logits follow this
    formula: ``x = -inf`` with ``t > 0`` gives ``+inf`` (the limit; torch's
    ``(1 - t) x + softplus(-x)`` gives nan there), ``x = +inf`` with ``t < 1``
    gives ``+inf`` as torch, and ``0 * inf`` terms (``(-inf, 0)``,
    ``(+inf, 1)``) give nan as torch.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import binary_cross_entropy_with_logits
    >>> round(float(binary_cross_entropy_with_logits([0.0, 0.0], [1.0, 0.0])), 10)
    0.6931471806
    """
    return _bce_run(logits, target, weight, pos_weight, sample_weight, reduction,
                    n_threads, False, None)


def binary_cross_entropy_with_logits_with_grad(logits, target, *, weight=None,
                                               pos_weight=None, sample_weight=None,
                                               reduction="mean", grad_out=None,
                                               n_threads=None):
    r"""Binary cross-entropy on logits and its gradient, fused in one pass.

    Parameters
    ----------
{params}
    grad_out : ndarray, optional
        Buffer for the gradient (shape of ``logits``, computation dtype); may
        be ``logits`` itself.

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`binary_cross_entropy_with_logits`.
    grad : ndarray
        ``d loss / d logits`` (for 'none': of ``loss.sum()``).

    Notes
    -----
    ``d loss / d x = w [(1 - t) sigmoid(x) - pw t sigmoid(-x)]`` (``sigmoid(x) - t``
    without weights), each sigmoid evaluated on its non-overflowing side.

    Examples
    --------
    >>> from lossmle import binary_cross_entropy_with_logits_with_grad
    >>> loss, g = binary_cross_entropy_with_logits_with_grad([0.0], [1.0])
    >>> g.tolist()
    [-0.5]
    """
    return _bce_run(logits, target, weight, pos_weight, sample_weight, reduction,
                    n_threads, True, grad_out)


binary_cross_entropy_with_logits.__doc__ = \
    binary_cross_entropy_with_logits.__doc__.replace("{params}", _BCE_PARAMS)
binary_cross_entropy_with_logits_with_grad.__doc__ = \
    binary_cross_entropy_with_logits_with_grad.__doc__.replace("{params}", _BCE_PARAMS)


# ---------------------------------------------------------------------------
# softmax / log_softmax backward
# ---------------------------------------------------------------------------
def _backward(kernel, grad_output, output, axis, out, n_threads, out_name):
    g, y = _same_shape_pair(grad_output, output, "grad_output", out_name)
    scalar_in = g.ndim == 0
    if scalar_in:
        g, y = g.reshape(1), y.reshape(1)
    (ax,) = normalize_axes(axis, g.ndim, allow_tuple=False)
    g3, _ = rows_view(g, (ax,))
    y3, _ = rows_view(y, (ax,))
    res, res3, scratch = _output_buffer(out, "out", g.shape, g.dtype, g3.shape,
                                        [(g, "grad_output"), (y, out_name)])
    if g.size:
        kernel(g3, y3, res3, resolve_threads(n_threads, g.size))
    res = _finish_buffer(res, scratch)
    return res.reshape(())[()] if scalar_in and out is None else res


def softmax_backward(grad_output, softmax_output, axis=-1, *, out=None, n_threads=None):
    r"""Vector-Jacobian product of softmax: the gradient with respect to its input.

    For wrapping lossmle in an autograd framework: given ``y = softmax(x)``
    and ``g = d L / d y``, returns ``d L / d x``.

    Parameters
    ----------
    grad_output : array_like
        ``d L / d y``.
    softmax_output : array_like
        ``y = softmax(x, axis)``, same shape.
    axis : int, optional
        The softmax axis (default -1).
    out : ndarray, optional
        Buffer for the result; may be ``grad_output`` or ``softmax_output``
        itself (in place).
    n_threads : int or None, optional
        Threads for large inputs.

    Returns
    -------
    ndarray
        ``y * (g - sum(g * y, axis))``, as torch's ``_softmax_backward_data``.

    Notes
    -----
    Two reads per row: the dot product ``sum(g * y)`` in double, then the
    elementwise result.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import softmax_backward
    >>> softmax_backward([1.0, 0.0], [0.5, 0.5]).tolist()
    [0.25, -0.25]
    """
    return _backward(_k.softmax_backward_rows, grad_output, softmax_output, axis, out,
                     n_threads, "softmax_output")


def log_softmax_backward(grad_output, log_softmax_output, axis=-1, *, out=None,
                         n_threads=None):
    r"""Vector-Jacobian product of log_softmax: the gradient with respect to its input.

    Parameters
    ----------
    grad_output : array_like
        ``g = d L / d z`` with ``z = log_softmax(x)``.
    log_softmax_output : array_like
        ``z``, same shape.
    axis : int, optional
        The log_softmax axis (default -1).
    out : ndarray, optional
        Buffer for the result; may be either input itself.
    n_threads : int or None, optional
        Threads for large inputs.

    Returns
    -------
    ndarray
        ``g - exp(z) * sum(g, axis)``, as torch's ``_log_softmax_backward_data``.

    Notes
    -----
    ``exp(z)`` is the softmax, recomputed rather than stored; two reads per row.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import log_softmax_backward
    >>> log_softmax_backward([1.0, 0.0], np.log([0.5, 0.5])).tolist()
    [0.5, -0.5]
    """
    return _backward(_k.log_softmax_backward_rows, grad_output, log_softmax_output, axis,
                     out, n_threads, "log_softmax_output")


# ---------------------------------------------------------------------------
# Masked logsumexp / softmax / log_softmax
# ---------------------------------------------------------------------------
def _masked_prepare(a, where, name):
    x = as_float_array(a, name)
    if x.ndim == 0:
        x = x.reshape(1)
        where = np.asarray(where).reshape(np.shape(where) if np.ndim(where) else (1,))
    mask = _check_where(where, x.shape)
    return x, mask


def masked_logsumexp(a, axis=None, keepdims=False, *, where, n_threads=None):
    r"""``log(sum(exp(a)))`` over the entries where ``where`` is True.

    Parameters
    ----------
    a : array_like
        Input values.
    axis : None or int or tuple of ints, optional
        Axes to reduce (default None: all, as :func:`lossmle.logsumexp`).
    keepdims : bool, optional
        Keep the reduced axes as size-one dimensions.
    where : array_like of bool
        Broadcast to ``a``; False entries take no part, whatever they hold
        (inf and nan included).
    n_threads : int or None, optional
        Threads for large inputs.

    Returns
    -------
    ndarray or numpy scalar
        A fully masked row gives ``-inf`` (the log of an empty sum).

    Notes
    -----
    One read per row: a running maximum and a rescaled sum of
    ``exp(a - max)`` over the unmasked entries.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import masked_logsumexp
    >>> float(masked_logsumexp([0.0, 0.0, np.nan], where=[True, True, False]))
    0.6931471805599453
    """
    x, mask = _masked_prepare(a, where, "a")
    axes = normalize_axes(axis, x.ndim)
    out_shape = reduced_shape(x.shape, axes, keepdims)
    x3, _ = rows_view(x, axes)
    m3, _ = rows_view(mask, axes)
    out = np.full((x3.shape[0], x3.shape[2]), -np.inf, dtype=x.dtype)
    if x.size:
        _k.masked_lse_rows(x3, m3.view(np.uint8), out, resolve_threads(n_threads, x.size))
    out = out.reshape(out_shape)
    return out[()] if out.ndim == 0 else out


def _masked_transform(a, axis, where, n_threads, log_space):
    x, mask = _masked_prepare(a, where, "x")
    axes = normalize_axes(axis, x.ndim)
    x3, perm = rows_view(x, axes)
    m3, _ = rows_view(mask, axes)
    out, out3 = alloc_transform_out(x.shape, x3.shape, perm, x.dtype)
    if x.size:
        _k.masked_softmax_rows(x3, m3.view(np.uint8), out3, log_space,
                               resolve_threads(n_threads, x.size))
    return out


def masked_softmax(x, axis=None, *, where, n_threads=None):
    r"""Softmax over the entries where ``where`` is True; 0 elsewhere.

    Parameters
    ----------
    x : array_like
        Input values.
    axis : None or int or tuple of ints, optional
        Axes the probabilities sum to one over (default None: all).
    where : array_like of bool
        Broadcast to ``x``; False entries take no part and get probability 0.
    n_threads : int or None, optional
        Threads for large inputs.

    Returns
    -------
    ndarray
        Same shape as ``x``.  A fully masked row is all 0; a row whose unmasked
        entries hold nan, +inf or only -inf is nan on its unmasked entries.

    Notes
    -----
    ``exp(x - m) / s`` with the maximum ``m`` and ``s = sum exp(x - m)`` of
    the unmasked entries taken in one read (running maximum), so nothing
    overflows.

    Examples
    --------
    >>> from lossmle import masked_softmax
    >>> masked_softmax([1.0, 1.0, 5.0], where=[True, True, False]).tolist()
    [0.5, 0.5, 0.0]
    """
    return _masked_transform(x, axis, where, n_threads, False)


def masked_log_softmax(x, axis=None, *, where, n_threads=None):
    r"""Log-softmax over the entries where ``where`` is True; -inf elsewhere.

    Parameters
    ----------
    x : array_like
        Input values.
    axis : None or int or tuple of ints, optional
        Axes to normalise over (default None: all).
    where : array_like of bool
        Broadcast to ``x``; False entries take no part and get -inf.
    n_threads : int or None, optional
        Threads for large inputs.

    Returns
    -------
    ndarray
        Same shape as ``x``; a fully masked row is all -inf.

    Notes
    -----
    ``(x - m) - log(s)`` with ``m`` the maximum and ``s = sum exp(x - m)``
    over the unmasked entries, never ``log(softmax(x))``.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import masked_log_softmax
    >>> masked_log_softmax([0.0, 0.0, 9.0], where=[True, True, False]).tolist()
    [-0.6931471805599453, -0.6931471805599453, -inf]
    """
    return _masked_transform(x, axis, where, n_threads, True)


# ---------------------------------------------------------------------------
# Cross-entropy and NLL with sample weights (and masks, soft-capping)
# ---------------------------------------------------------------------------
def _ce_run(logits, target, axis, sample_weight, weight, ignore_index, reduction,
            label_smoothing, where, logit_softcap, n_threads, want_grad, grad_out,
            nll):
    x_name = "log_probs" if nll else "logits"
    x = as_float_array(logits, x_name)
    ax = _class_axis(x, axis, x_name)
    n_classes = x.shape[ax]
    reduction = _check_reduction(reduction, ("none", "sum", "mean"))
    ignore_index = _check_ignore_index(ignore_index)
    eps = 0.0 if nll else _check_label_smoothing(label_smoothing)
    cap = 0.0 if nll else _positive_float(logit_softcap, "logit_softcap", allow_none=True)
    weight = _check_class_weight(weight, n_classes)
    x3, _ = rows_view(x, (ax,))
    t2 = _class_targets(target, x.shape, ax, n_classes, ignore_index, x_name)
    pos_shape = x.shape[:ax] + x.shape[ax + 1:]
    sw = _check_sample_weight(sample_weight, pos_shape)
    sw2 = None if sw is None else np.ascontiguousarray(sw).reshape(t2.shape)
    m3 = None
    if where is not None:
        m3 = rows_view(_check_where(where, x.shape), (ax,))[0].view(np.uint8)
    denom = 1.0
    if reduction == "mean":
        keep = t2 != ignore_index
        if m3 is not None:
            keep &= m3.any(axis=1)
        kept = t2[keep]
        wy = weight[kept] if weight is not None else np.ones(kept.size)
        if sw2 is not None:
            wy = wy * sw2[keep]
        # nothing (weighted) taking part: a nan mean and a nan gradient on
        # the kept rows, as torch (0/0); rows that take no part keep their 0
        denom = float(np.sum(wy)) or math.nan
    grad = grad3 = scratch = None
    if want_grad:
        # every input the kernel reads while it writes the gradient
        grad, grad3, scratch = _output_buffer(
            grad_out, "grad_out", x.shape, x.dtype, x3.shape,
            [(x, x_name), (weight, "weight"), (sw2, "sample_weight"), (m3, "where")])
    loss = np.empty(t2.shape, dtype=np.float64)
    row_weight = np.empty(t2.shape, dtype=np.float64)
    scale = 1.0 / denom
    n_threads = resolve_threads(n_threads, x.size)
    if x.size:
        if nll:
            _k.nll_ex_rows(x3, t2, weight, sw2, ignore_index, loss, row_weight, grad3,
                           scale, n_threads)
        else:
            _k.cross_entropy_ex_rows(x3, t2, weight, sw2, m3, ignore_index, eps, cap,
                                     loss, row_weight, grad3, scale, n_threads)
    value = _row_result(loss, x.dtype, pos_shape, reduction, denom)
    if want_grad:
        return value, _finish_buffer(grad, scratch)
    return value


_CE_PARAMS = """    logits : array_like, shape (..., C, ...)
        Unnormalised log-probabilities.
    target : array_like of int
        Class indices, shaped like ``logits`` without the class axis.
    axis : int, optional
        The class axis (default -1; ``axis=1`` is torch's layout).
    sample_weight : array_like, optional
        Per-position weights (finite, >= 0), broadcast to the target's shape.
        A position with weight 0 takes no part at all (even if its logits
        hold nan or inf): a padding mask.
    weight : array_like of shape (C,), optional
        Class weights (any finite value, negative too), as torch's ``weight``.
    ignore_index : int, optional
        Targets equal to it take no part (default -100).
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' is ``sum_i sw_i l_i / sum_i sw_i w[y_i]`` over the positions
        that take part, where ``l_i`` already carries ``w[y_i]`` (torch's
        definition when ``sample_weight`` is None, including with
        ``label_smoothing``); nothing taking part gives nan.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution over the (unmasked)
        classes.
    where : array_like of bool, optional
        Class mask broadcast to ``logits``: False classes take no part (as if
        their logit were -inf; their gradient is 0).  A fully masked position
        takes no part (loss 0, weight 0); a masked target class gives +inf.
    logit_softcap : float > 0, optional
        Logits become ``cap * tanh(x / cap)`` first (Gemma-style soft-capping).
    n_threads : int or None, optional
        Threads for large inputs."""


def weighted_cross_entropy(logits, target, axis=-1, *, sample_weight=None, weight=None,
                           ignore_index=-100, reduction="mean", label_smoothing=0.0,
                           where=None, logit_softcap=None, n_threads=None):
    r"""Cross-entropy from class indices with per-position sample weights.

    :func:`lossmle.cross_entropy` (class-index targets) plus
    ``sample_weight``, ``where`` masks and ``logit_softcap``; without them
    it equals torch's ``cross_entropy``.

    Parameters
    ----------
{params}

    Returns
    -------
    numpy scalar or ndarray
        For 'none': ``sw_i * l_i`` per position (0 where it takes no part).

    Notes
    -----
    Per position, over the ``K`` unmasked classes with ``W = sum w`` over
    them and ``lse`` their log-sum-exp:
    ``l = (1 - eps) w[y] (lse - x[y]) + eps / K (W lse - sum_c w[c] x[c])``.
    Each row is read once for the value (running maximum, rescaled sum);
    sums in double.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import weighted_cross_entropy
    >>> logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    >>> round(float(weighted_cross_entropy(logits, [0, 1], sample_weight=[1.0, 0.0])), 6)
    0.126928
    """
    return _ce_run(logits, target, axis, sample_weight, weight, ignore_index, reduction,
                   label_smoothing, where, logit_softcap, n_threads, False, None, False)


def weighted_cross_entropy_with_grad(logits, target, axis=-1, *, sample_weight=None,
                                     weight=None, ignore_index=-100, reduction="mean",
                                     label_smoothing=0.0, where=None, logit_softcap=None,
                                     grad_out=None, n_threads=None):
    r""":func:`weighted_cross_entropy` and its gradient with respect to the logits, fused.

    Parameters
    ----------
{params}
    grad_out : ndarray, optional
        Buffer for the gradient (shape of ``logits``, computation dtype);
        may be ``logits`` itself (in place).

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`weighted_cross_entropy`.
    grad : ndarray
        ``d loss / d logits`` (for 'none': of ``loss.sum()``).

    Notes
    -----
    With ``p`` the softmax over the unmasked classes:
    ``d l / d x_k = sw [(1 - eps) w[y] (p_k - [k = y]) + eps / K (W p_k - w_k)]``
    times ``1 - tanh(x_k / cap)^2`` with a soft cap, divided by the mean's
    denominator for 'mean'; 0 on masked classes and on positions that take no
    part.  Two reads per row (statistics, then the gradient).

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import weighted_cross_entropy_with_grad
    >>> loss, g = weighted_cross_entropy_with_grad(np.zeros((2, 2)), [0, 1],
    ...                                            sample_weight=[1.0, 0.0])
    >>> g.tolist()
    [[-0.5, 0.5], [0.0, 0.0]]
    """
    return _ce_run(logits, target, axis, sample_weight, weight, ignore_index, reduction,
                   label_smoothing, where, logit_softcap, n_threads, True, grad_out, False)


_NLL_PARAMS = """    log_probs : array_like, shape (..., C, ...)
        Log-probabilities, e.g. from :func:`lossmle.log_softmax`.
    target : array_like of int
        Class indices shaped like ``log_probs`` without the class axis.
    axis : int, optional
        The class axis (default -1).
    sample_weight : array_like, optional
        Per-position weights (finite, >= 0) broadcast to the target's shape;
        weight 0 takes no part.
    weight : array_like of shape (C,), optional
        Class weights (any finite value, negative too).
    ignore_index : int, optional
        Targets equal to it take no part (default -100).
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' is ``sum_i sw_i w[y_i] l_i / sum_i sw_i w[y_i]`` (torch's
        when ``sample_weight`` is None).
    n_threads : int or None, optional
        Threads for large inputs."""


def weighted_nll_loss(log_probs, target, axis=-1, *, sample_weight=None, weight=None,
                      ignore_index=-100, reduction="mean", n_threads=None):
    r"""Negative log-likelihood of class indices with per-position sample weights.

    Parameters
    ----------
{params}

    Returns
    -------
    numpy scalar or ndarray
        ``-sw w[y] log_probs[y]`` per position, reduced as asked.

    Notes
    -----
    Reads one entry per row; without ``sample_weight`` it equals
    :func:`lossmle.nll_loss` and torch's ``nll_loss``.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import weighted_nll_loss
    >>> float(weighted_nll_loss(np.log([[0.5, 0.5], [0.25, 0.75]]), [0, 1],
    ...                         sample_weight=[0.0, 1.0]))
    0.2876820724517809
    """
    return _ce_run(log_probs, target, axis, sample_weight, weight, ignore_index, reduction,
                   0.0, None, None, n_threads, False, None, True)


def nll_loss_with_grad(log_probs, target, axis=-1, *, sample_weight=None, weight=None,
                       ignore_index=-100, reduction="mean", grad_out=None, n_threads=None):
    r"""NLL loss and its gradient with respect to ``log_probs``, fused.

    Parameters
    ----------
{params}
    grad_out : ndarray, optional
        Buffer for the gradient (shape of ``log_probs``); may be
        ``log_probs`` itself.

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`weighted_nll_loss`.
    grad : ndarray
        ``-sw w[y] / denominator`` at the target class, 0 elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import nll_loss_with_grad
    >>> loss, g = nll_loss_with_grad(np.log([[0.5, 0.5]]), [1])
    >>> g.tolist()
    [[0.0, -1.0]]
    """
    return _ce_run(log_probs, target, axis, sample_weight, weight, ignore_index, reduction,
                   0.0, None, None, n_threads, True, grad_out, True)


for _f, _p in ((weighted_cross_entropy, _CE_PARAMS),
               (weighted_cross_entropy_with_grad, _CE_PARAMS),
               (weighted_nll_loss, _NLL_PARAMS), (nll_loss_with_grad, _NLL_PARAMS)):
    _f.__doc__ = _f.__doc__.replace("{params}", _p)
del _f, _p


# ---------------------------------------------------------------------------
# One-pass evaluation
# ---------------------------------------------------------------------------
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
    cap = _positive_float(logit_softcap, "logit_softcap", allow_none=True)
    reduction = _check_reduction(reduction, ("none", "sum", "mean"))
    x3, _ = rows_view(x, (ax,))
    t2 = _class_targets(target, x.shape, ax, n_classes, ignore_index, "logits")
    shape = x.shape[:ax] + x.shape[ax + 1:]
    nll = np.empty(t2.shape, dtype=np.float64)
    ent = np.empty_like(nll)
    lse = np.empty_like(nll)
    rank = np.empty(t2.shape, dtype=np.int64)
    if x.size:
        _k.evaluate_rows(x3, t2, ignore_index, cap, nll, ent, lse, rank,
                         resolve_threads(n_threads, x.size))
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
