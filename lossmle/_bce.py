"""Binary cross-entropy with logits (torch's ``binary_cross_entropy_with_logits``)
and its gradient, fused in one pass of ``_kernels.training.bce_logits_rows``."""

import numpy as np

from ._kernels import training as _k
from ._reduce import reduce_rows
from ._validation import (
    as_float_array, check_reduction as _check_reduction,
    check_sample_weight as _check_sample_weight, checked_output as _output_buffer,
    common_float_dtype, finish_output, resolve_threads,
)

__all__ = ["binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_with_grad"]


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
    w2, pw2 = view2(weight, "weight"), view2(pos_weight, "pos_weight")
    # every array the kernel reads, as given and as converted
    read = [(logits, "logits"), (x, "logits"), (target, "target"), (t, "target"),
            (weight, "weight"), (w2, "weight"), (pos_weight, "pos_weight"),
            (pw2, "pos_weight"), (sample_weight, "sample_weight"), (sw2, "sample_weight")]
    return (x, t, x.reshape(shape2), t.reshape(shape2), w2, pw2, sw, sw2, reduction, shape2,
            read)


def _bce_run(logits, target, weight, pos_weight, sample_weight, reduction, n_threads,
             want_grad, grad_out):
    x, t, x2, t2, w2, pw2, sw, sw2, reduction, shape2, read = _bce_prepare(
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
        grad, grad2, scratch = _output_buffer(grad_out, "grad_out", x.shape, dtype, shape2,
                                              read, ("logits",))
    n_threads = resolve_threads(n_threads, x.size)
    if x.size:
        _k.bce_logits_rows(x2, t2, w2, pw2, sw2, loss, row_loss, grad2, scale,
                           n_threads)
    if reduction == "none":
        value = loss.reshape(x.shape)
        value = value[()] if value.ndim == 0 else value
    else:
        value = reduce_rows(row_loss, dtype, (), reduction, denom)
    if want_grad:
        return value, finish_output(grad, scratch)
    return value


_BCE_PARAMS = """    Parameters
    ----------
    logits : array_like
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
    (binary_cross_entropy_with_logits.__doc__ or "").replace("{params}", _BCE_PARAMS)
binary_cross_entropy_with_logits_with_grad.__doc__ = \
    (binary_cross_entropy_with_logits_with_grad.__doc__ or "").replace("{params}", _BCE_PARAMS)


