"""cross_entropy, nll_loss and cross_entropy_with_grad with torch.nn.functional semantics."""
import math

import numpy as np

from ._kernels import fastpath as _fastpath, losses as _k, training as _tk
from ._reduce import reduce_rows, to_dtype, total as reduce_total
from ._validation import (
    as_float_array, check_class_weight as _check_class_weight,
    check_ignore_index as _check_ignore_index,
    check_label_smoothing as _check_label_smoothing, check_output, check_output_kind,
    check_positive, check_reduction as _check_reduction,
    check_sample_weight as _check_sample_weight, check_where as _check_where,
    checked_output as _output_buffer, class_axis as _class_axis,
    class_targets as _class_targets, deliver, finish_output, normalize_axes, output_view,
    resolve_threads, rows_view,
)

__all__ = ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "nll_loss_with_grad"]

_REDUCTIONS = ("none", "mean", "sum")
_INT64 = np.iinfo(np.int64)


class _Problem:
    """A validated loss call: 3-D views, options, and where results go."""
    __slots__ = ("x", "x3", "axis", "n_classes", "target", "target3", "class_target",
                 "weight", "ignore_index", "reduction", "label_smoothing", "n_threads")


def _class_indices(target, expected_shape, x_name):
    """Integer class-index target as an int64 array of ``expected_shape``."""
    if target.shape != expected_shape:
        raise ValueError(
            f"target holds class indices with shape {target.shape}, but {x_name} "
            f"of that layout needs shape {expected_shape} ({x_name} without its "
            f"class axis)")
    if target.dtype.kind == "u" and target.size and target.max() > _INT64.max:
        raise IndexError(f"target contains class index {int(target.max())}, out of range")
    return target.astype(np.int64, copy=False)


def _prepare(x, target, axis, weight, ignore_index, reduction, label_smoothing,
             n_threads, x_name, allow_prob_target):
    p = _Problem()
    x = as_float_array(x, x_name)
    if x.ndim == 0:
        raise ValueError(f"{x_name} must have at least one dimension (the class axis)")
    if axis is None:  # normalize_axes would read None as "every axis"
        raise TypeError("axis must be an int (the class axis), got None")
    (ax,) = normalize_axes(axis, x.ndim, allow_tuple=False)
    n_classes = x.shape[ax]
    if n_classes == 0:
        raise ValueError(f"{x_name} has no classes: axis {axis} has length 0")
    p.reduction = _check_reduction(reduction, _REDUCTIONS)
    p.label_smoothing = _check_label_smoothing(label_smoothing)
    p.weight = _check_class_weight(weight, n_classes)
    p.ignore_index = _check_ignore_index(ignore_index)
    target = np.asarray(target)
    kind = target.dtype.kind
    index_shape = x.shape[:ax] + x.shape[ax + 1:]
    p.x3, _ = rows_view(x, (ax,))
    if kind in "iu":
        t = _class_indices(target, index_shape, x_name)
        p.target3 = t.reshape(p.x3.shape[0], p.x3.shape[2])
        bad = _k.check_class_indices(p.target3, n_classes, p.ignore_index,
                                     resolve_threads(n_threads, t.size))
        if bad >= 0:
            label = int(t.reshape(-1)[bad])
            raise IndexError(
                f"target contains class index {label}, but {x_name} have "
                f"{n_classes} classes along axis {axis} (valid: 0..{n_classes - 1} "
                f"or ignore_index={p.ignore_index})")
        p.class_target = True
        p.target = t
    elif kind == "f" and allow_prob_target:
        if target.shape != x.shape:
            raise ValueError(
                f"target is floating, so it must hold class probabilities shaped "
                f"like {x_name} {x.shape}; got shape {target.shape} (class "
                f"indices must be an integer array)")
        t = as_float_array(target, "target")
        p.target3, _ = rows_view(t, (ax,))
        p.class_target = False
        p.target = t
    else:
        expected = "integer class indices or floating class probabilities" \
            if allow_prob_target else "integer class indices"
        raise TypeError(f"target must hold {expected}, got dtype {target.dtype}")
    p.x, p.axis, p.n_classes = x, ax, n_classes
    p.n_threads = resolve_threads(n_threads, x.size)
    return p


def _check_extended(reduction, out):
    """out= with the sample-weight / mask path: reduction='none' only."""
    check_output_kind(out, "out")
    if out is not None and reduction != "none":
        raise ValueError(f"out is only for reduction='none', got reduction={reduction!r}")


def _wide_class_indices(target):
    """Class indices of a narrower integer dtype (int8..int32, uint8..uint32),
    or a list / tuple of ints, as an int64 array for the fast path (the
    values are exact; every path converts them so).  None for anything else.
    Only the fast path sees the copy: the general path gets the caller's
    target, so its checks (an ``out=`` overlapping the target, the order of
    its errors) are those of the call as given."""
    if type(target) is list or type(target) is tuple:
        try:
            target = np.asarray(target)
        except (ValueError, TypeError):   # ragged: the general path's error
            return None
        return target if target.dtype == np.int64 else None
    if type(target) is np.ndarray and target.dtype.kind in "iu" and target.itemsize < 8:
        return target.astype(np.int64)
    return None


def _check_loss_out(out, p, x_given, target_given, weight_given, x_name):
    """``out=`` is for reduction='none': the per-position losses."""
    if out is None:
        return
    check_output_kind(out, "out")
    if p.reduction != "none":
        raise ValueError(f"out is only for reduction='none', got reduction={p.reduction!r}")
    check_output(out, "out", p.x.shape[:p.axis] + p.x.shape[p.axis + 1:], p.x.dtype,
                 [(x_given, x_name), (p.x, x_name), (target_given, "target"),
                  (p.target, "target"), (weight_given, "weight"), (p.weight, "weight")])


def _mean_denominator(p):
    """What reduction='mean' divides by (torch): summed target weight, or rows."""
    if not p.class_target:
        return float(p.x3.shape[0] * p.x3.shape[2])
    kept = p.target3[p.target3 != p.ignore_index]
    if p.weight is None:
        return float(kept.size)
    return float(np.sum(p.weight[kept]))


def _reduce(p, loss, row_weight):
    """Apply the reduction to the per-row losses (double) and cast to the input dtype."""
    dtype = p.x.dtype
    if p.reduction == "none":
        # float32 results may overflow to inf, as torch's do: no warning for that
        with np.errstate(over="ignore"):
            return loss.reshape(p.target.shape if p.class_target else
                                p.x.shape[:p.axis] + p.x.shape[p.axis + 1:]).astype(dtype)
    # np.add.reduce's pairwise summation in blocks of 256 rows, then over the
    # block totals, in the one definition the fast path and the short-row
    # totals run too; inf/nan sums are quiet, as torch's
    total = reduce_total(loss)
    if p.reduction == "sum":
        return _reduce_sums(p, total, None)
    denom = reduce_total(row_weight) if row_weight is not None \
        else _mean_denominator(p)
    return _reduce_sums(p, total, denom)


def _reduce_sums(p, total, denom):
    """'sum' / 'mean' from the summed row losses and the mean's denominator."""
    dtype = p.x.dtype
    if p.reduction == "sum":
        return to_dtype(total, dtype)
    if denom == 0:
        # every target ignored or weighted 0: nan, as torch, whose mean divides
        # the target term by this 0 (0/0) - with label smoothing too, where the
        # smoothing term alone would be x/0 = inf
        return dtype.type(math.nan)
    return to_dtype(total / denom, dtype)


def _grad_scale(denom):
    """d mean / d row loss: 1 / denom, and nan for a 0 denominator (torch's
    nan gradient on every kept row; ignored rows keep their exact 0)."""
    return 1.0 / denom if denom != 0 else math.nan


def _grad_buffer(p, grad_out, given):
    """``(grad, kernel view, scratch)`` for cross_entropy_with_grad's gradient.

    ``grad_out`` is validated as the other ``grad_out=`` parameters are.  The
    kernels write into it directly when it is C-contiguous and no input's
    memory; otherwise into a C-contiguous scratch array, copied into it at
    the end.  In place, because the kernels redo the rows they flag from the
    input after the gradient block is written; for other layouts, so that the
    gradient's bits are those of the call without ``grad_out`` (a strided
    gradient takes the row-by-row kernel, which rounds differently).
    """
    # every input, as given and as converted: the kernels read the class
    # weights and the target while they write the gradient
    inputs = [(given[0], "logits"), (p.x, "logits"), (given[1], "target"),
              (p.target, "target"), (given[2], "weight"), (p.weight, "weight")]
    # in place: logits, or a probability target of the logits' dtype
    check_output(grad_out, "grad_out", p.x.shape, p.x.dtype, inputs, ("logits", "target"))
    grad, grad3, scratch = output_view(grad_out, p.x.shape, p.x.dtype, p.x3.shape)
    if scratch is None and grad_out is not None and (
            not grad_out.flags.c_contiguous
            or any(isinstance(arr, np.ndarray) and np.may_share_memory(grad_out, arr)
                   for arr, _ in inputs)):
        scratch = np.empty(p.x.shape, dtype=p.x.dtype)
        grad3 = scratch.reshape(p.x3.shape)
    return grad, grad3, scratch


def _run(p, want_grad, grad_out=None, given=None):
    if p.class_target and not want_grad and p.reduction != "none":
        # many short rows: the kernel sums the row losses block by block
        sums = _k.cross_entropy_class_total(p.x3, p.target3, p.weight, p.ignore_index,
                                            p.label_smoothing, p.n_threads)
        if sums is not None:
            return _reduce_sums(p, sums[0], sums[1]), None
    n_rows = (p.x3.shape[0], p.x3.shape[2])
    loss = np.empty(n_rows, dtype=np.float64)
    grad = grad3 = scratch = None
    scale = 1.0
    if want_grad:
        grad, grad3, scratch = _grad_buffer(p, grad_out, given)
        if p.reduction == "mean":
            denom = _mean_denominator(p)
            scale = _grad_scale(denom)
    if p.class_target:
        row_weight = np.empty(n_rows, dtype=np.float64)
        _k.cross_entropy_class_rows(p.x3, p.target3, p.weight, p.ignore_index,
                                    p.label_smoothing, loss, row_weight, grad3,
                                    scale, p.n_threads)
    else:
        row_weight = None
        _k.cross_entropy_prob_rows(p.x3, p.target3, p.weight, p.label_smoothing,
                                   loss, grad3, scale, p.n_threads)
    if scratch is not None:
        np.copyto(grad, scratch)
    return _reduce(p, loss, row_weight), grad


_SHARED_PARAMS = """    axis : int, optional
        The class axis (default -1, the last).  ``axis=1`` is PyTorch's
        ``(N, C, d1, ...)`` layout.
    weight : array_like of shape (C,), optional
        Class weights (any finite value, negative too), as torch's ``weight``.
    ignore_index : int, optional
        Class-index targets equal to it contribute neither loss nor weight
        (default -100).  Unused for probability targets.
    reduction : {'mean', 'sum', 'none'}, optional
        ``'mean'`` divides the summed loss by the summed weight ``w[y]`` of the
        non-ignored class targets (by the number of rows for probability
        targets); every target ignored gives nan, as torch.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution:
        ``(1 - eps) * target + eps / C``.
    n_threads : int or None, optional
        Threads for large inputs (None: :func:`lossmle.get_num_threads`)."""

_EXTENDED_PARAMS = """
    sample_weight : array_like, optional
        Per-position weights (broadcast to the shape of ``target``, finite,
        >= 0), class indices only; 'mean' becomes
        ``sum(sw * w[y] * loss) / sum(sw * w[y])``.  A position with weight 0
        takes no part at all (even if its logits hold nan or inf): a padding
        mask.
    where : array_like of bool, optional
        Class mask shaped like (or broadcast to) ``logits``: masked classes take
        no part (as if their logit were -inf; their gradient is 0); a fully
        masked position contributes nothing (loss 0, weight 0); a masked target
        class gives +inf (class indices only).
    logit_softcap : float, optional
        Use ``cap * tanh(logits / cap)`` as the logits (class indices only)."""

_OUT_PARAM = """
    out : ndarray, optional
        With ``reduction='none'`` only: where to write the per-position losses
        (exactly their shape and dtype, writable, no overlap with the inputs)."""


def cross_entropy(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                  reduction="mean", label_smoothing=0.0, sample_weight=None, where=None,
                  logit_softcap=None, out=None, n_threads=None):
    """Cross-entropy between softmax(logits) and a target, as torch's ``cross_entropy``.

    The negative log-likelihood of the targets under the categorical model
    ``softmax(logits)``: minimising it is maximum-likelihood estimation.

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        Unnormalised log-probabilities; float32 stays float32.
    target : array_like
        Either integer class indices shaped like ``logits`` without the class
        axis, or floating class probabilities shaped like ``logits``.
{shared}

    Returns
    -------
    loss : numpy scalar or ndarray
        A scalar of the logits' dtype for 'mean' and 'sum'; for 'none' an
        array shaped like ``logits`` without the class axis.

    Notes
    -----
    Per row, with ``lse = logsumexp(x)``: ``loss = w[y] * (lse - x[y])`` for
    a class index ``y``, ``loss = -sum_c w[c] t[c] (x[c] - lse)`` for
    probabilities ``t``.  Each row is read once (a running maximum and a
    rescaled sum of exponentials) and the softmax is never stored; sums are in
    double.  A row holding nan, +inf or only -inf gives nan, as torch.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import cross_entropy
    >>> logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    >>> round(float(cross_entropy(logits, np.array([0, 1]))), 6)
    0.410038
    """
    # small plain inputs: the whole call in compiled code (None: not such a call)
    res = _fastpath.cross_entropy(logits, target, axis, weight, ignore_index, reduction,
                                  label_smoothing, sample_weight, where, logit_softcap, out,
                                  n_threads)
    if res is None and (wide := _wide_class_indices(target)) is not None:
        res = _fastpath.cross_entropy(logits, wide, axis, weight, ignore_index, reduction,
                                      label_smoothing, sample_weight, where, logit_softcap,
                                      out, n_threads)
    if res is not None:
        return res
    if sample_weight is not None or where is not None or logit_softcap is not None:
        _check_extended(reduction, out)
        return deliver(_weighted_cross_entropy(
            logits, target, axis, sample_weight=sample_weight, weight=weight,
            ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
            where=where, logit_softcap=logit_softcap, n_threads=n_threads), out,
            [(logits, "logits"), (target, "target"), (weight, "weight"),
             (sample_weight, "sample_weight"), (where, "where")])
    p = _prepare(logits, target, axis, weight, ignore_index, reduction,
                 label_smoothing, n_threads, "logits", allow_prob_target=True)
    _check_loss_out(out, p, logits, target, weight, "logits")
    return deliver(_run(p, want_grad=False)[0], out)


def cross_entropy_with_grad(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                            reduction="mean", label_smoothing=0.0, sample_weight=None,
                            where=None, logit_softcap=None, grad_out=None, n_threads=None):
    """Cross-entropy and its gradient with respect to the logits, in one fused pass.

    Parameters
    ----------
    logits, target
        As :func:`cross_entropy`.
{shared}

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`cross_entropy`.
    grad : ndarray
        ``d loss / d logits``, same shape and dtype as ``logits`` (for
        ``reduction='none'`` the gradient of ``loss.sum()``), equal to torch
        autograd's.

    Notes
    -----
    With ``p = softmax(x)``, the gradient of a row is
    ``w[y] * (p - onehot(y))`` for a class index (plus the smoothing term
    ``eps / C * (sum(w) p - w)``) and ``sum_c(w t) * p - w * t`` for
    probabilities, divided by the mean's denominator for 'mean'.  Ignored
    rows get a zero gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import cross_entropy_with_grad
    >>> loss, grad = cross_entropy_with_grad(np.zeros((1, 2)), np.array([0]))
    >>> grad.tolist()
    [[-0.5, 0.5]]
    """
    # small plain inputs: the whole call in compiled code (None: not such a call)
    res = _fastpath.cross_entropy_with_grad(logits, target, axis, weight, ignore_index,
                                            reduction, label_smoothing, sample_weight, where,
                                            logit_softcap, grad_out, n_threads)
    if res is None and (wide := _wide_class_indices(target)) is not None:
        res = _fastpath.cross_entropy_with_grad(logits, wide, axis, weight, ignore_index,
                                                reduction, label_smoothing, sample_weight,
                                                where, logit_softcap, grad_out, n_threads)
    if res is not None:
        return res
    if sample_weight is not None or where is not None or logit_softcap is not None:
        return _weighted_cross_entropy_with_grad(
            logits, target, axis, sample_weight=sample_weight, weight=weight,
            ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
            where=where, logit_softcap=logit_softcap, grad_out=grad_out, n_threads=n_threads)
    p = _prepare(logits, target, axis, weight, ignore_index, reduction,
                 label_smoothing, n_threads, "logits", allow_prob_target=True)
    return _run(p, want_grad=True, grad_out=grad_out, given=(logits, target, weight))


def nll_loss(log_probs, target, axis=-1, *, weight=None, ignore_index=-100,
             reduction="mean", sample_weight=None, out=None, n_threads=None):
    """Negative log-likelihood of class indices given log-probabilities (torch's ``nll_loss``).

    Parameters
    ----------
    log_probs : array_like, shape (..., C, ...)
        Log-probabilities, e.g. from :func:`log_softmax`.
    target : array_like of int
        Class indices shaped like ``log_probs`` without the class axis.
    axis : int, optional
        The class axis (default -1; ``axis=1`` is torch's layout).
    weight, ignore_index, reduction, sample_weight, out, n_threads
        As :func:`cross_entropy`.

    Returns
    -------
    loss : numpy scalar or ndarray
        ``-w[y] * log_probs[y]`` per row, reduced as asked.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import nll_loss
    >>> float(nll_loss(np.log([[0.5, 0.5], [0.25, 0.75]]), np.array([0, 1])))
    0.4904146265058631
    """
    # small plain inputs: the whole call in compiled code (None: not such a call)
    res = _fastpath.nll_loss(log_probs, target, axis, weight, ignore_index, reduction,
                             sample_weight, out, n_threads)
    if res is None and (wide := _wide_class_indices(target)) is not None:
        res = _fastpath.nll_loss(log_probs, wide, axis, weight, ignore_index, reduction,
                                 sample_weight, out, n_threads)
    if res is not None:
        return res
    if sample_weight is not None:
        _check_extended(reduction, out)
        return deliver(_weighted_nll_loss(
            log_probs, target, axis, sample_weight=sample_weight, weight=weight,
            ignore_index=ignore_index, reduction=reduction, n_threads=n_threads), out,
            [(log_probs, "log_probs"), (target, "target"), (weight, "weight"),
             (sample_weight, "sample_weight")])
    p = _prepare(log_probs, target, axis, weight, ignore_index, reduction, 0.0,
                 n_threads, "log_probs", allow_prob_target=False)
    _check_loss_out(out, p, log_probs, target, weight, "log_probs")
    loss = np.empty((p.x3.shape[0], p.x3.shape[2]), dtype=np.float64)
    row_weight = np.empty_like(loss)
    _k.nll_rows(p.x3, p.target3, p.weight, p.ignore_index, loss, row_weight,
                p.n_threads)
    return deliver(_reduce(p, loss, row_weight), out)


cross_entropy.__doc__ = (cross_entropy.__doc__ or "").replace(
    "{shared}", _SHARED_PARAMS + _EXTENDED_PARAMS + _OUT_PARAM)
cross_entropy_with_grad.__doc__ = (cross_entropy_with_grad.__doc__ or "").replace(
    "{shared}", _SHARED_PARAMS + _EXTENDED_PARAMS + """
    grad_out : ndarray, optional
        Where to write the gradient: the shape of ``logits`` and the
        computation dtype (float32 for float32 logits, else float64),
        writable, any strides; it may be ``logits`` itself (in place), or a
        probability ``target`` itself, but must share no other memory with an
        input.  The returned ``grad`` is ``grad_out``.""")


# ---------------------------------------------------------------------------
# Class-index losses with sample weights, class masks and soft-capping
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
    cap = 0.0 if nll else check_positive(logit_softcap, "logit_softcap", allow_none=True)
    weight_given = weight
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
        # the weights of the positions taking part, 0 elsewhere, in position
        # order: summed as cross_entropy sums its row weights, to the bit
        wy = weight[np.where(keep, t2, 0)] if weight is not None else np.ones(t2.shape)
        if sw2 is not None:
            wy = wy * sw2
        # nothing (weighted) taking part: a nan mean and a nan gradient on
        # the kept rows, as torch (0/0); rows that take no part keep their 0
        denom = reduce_total(np.where(keep, wy, 0.0)) or math.nan
    grad = grad3 = scratch = None
    if want_grad:
        # every input, as given and as the kernel reads it while it writes
        # the gradient (an int64 target is read in place: class indices
        # overwritten by gradient floats sent the kernel out of bounds)
        grad, grad3, scratch = _output_buffer(
            grad_out, "grad_out", x.shape, x.dtype, x3.shape,
            [(logits, x_name), (x, x_name), (target, "target"), (t2, "target"),
             (weight_given, "weight"), (weight, "weight"),
             (sample_weight, "sample_weight"), (sw2, "sample_weight"),
             (where, "where"), (m3, "where")], (x_name,))
    loss = np.empty(t2.shape, dtype=np.float64)
    row_weight = np.empty(t2.shape, dtype=np.float64)
    scale = 1.0 / denom
    n_threads = resolve_threads(n_threads, x.size)
    if x.size:
        if nll:
            _tk.nll_ex_rows(x3, t2, weight, sw2, ignore_index, loss, row_weight, grad3,
                           scale, n_threads)
        else:
            _tk.cross_entropy_ex_rows(x3, t2, weight, sw2, m3, ignore_index, eps, cap,
                                     loss, row_weight, grad3, scale, n_threads)
    value = reduce_rows(loss, x.dtype, pos_shape, reduction, denom)
    if want_grad:
        return value, finish_output(grad, scratch)
    return value


def _weighted_cross_entropy(logits, target, axis=-1, *, sample_weight=None, weight=None,
                           ignore_index=-100, reduction="mean", label_smoothing=0.0,
                           where=None, logit_softcap=None, n_threads=None):
    """``lossmle.cross_entropy`` with ``sample_weight`` / ``where`` /
    ``logit_softcap`` (class-index targets): its Notes give the formula."""
    return _ce_run(logits, target, axis, sample_weight, weight, ignore_index, reduction,
                   label_smoothing, where, logit_softcap, n_threads, False, None, False)


def _weighted_cross_entropy_with_grad(logits, target, axis=-1, *, sample_weight=None,
                                     weight=None, ignore_index=-100, reduction="mean",
                                     label_smoothing=0.0, where=None, logit_softcap=None,
                                     grad_out=None, n_threads=None):
    """``lossmle.cross_entropy_with_grad`` with ``sample_weight`` / ``where``
    / ``logit_softcap`` (class-index targets)."""
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


def _weighted_nll_loss(log_probs, target, axis=-1, *, sample_weight=None, weight=None,
                      ignore_index=-100, reduction="mean", n_threads=None):
    """``lossmle.nll_loss`` with ``sample_weight``."""
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


nll_loss_with_grad.__doc__ = (nll_loss_with_grad.__doc__ or "").replace("{params}", _NLL_PARAMS)


