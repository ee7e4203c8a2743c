"""Divergences and entropy of softmax distributions, straight from logits:
KL (with gradients, for distillation), Jensen-Shannon and entropy.

Each row is read once for the value (running maxima and rescaled sums, see
``_kernels/logit_divergence.pyx``); neither softmax is materialised.  The class axis is
``axis`` (default -1); float32 stays float32; per-row values are reduced by
``_reduce``.
"""
import math

import numpy as np

from ._kernels import logit_divergence as _k
from ._reduce import reduce_rows
from ._validation import (
    as_float_array, check_base as _check_base, check_positive,
    check_reduction as _check_reduction, check_temperature,
    checked_output as _output_buffer, class_axis as _class_axis, finish_output,
    resolve_threads, rows_view, same_shape_pair as _same_shape_pair,
)

__all__ = [
    "kl_divergence_from_logits", "kl_divergence_from_logits_with_grad",
    "js_divergence_from_logits", "entropy_from_logits",
]

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
    inv_t = check_temperature(temperature)
    cap = check_positive(logit_softcap, "logit_softcap", allow_none=True)
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
    logit (as any logits-space formula, including torch's), except near
    ``P = Q``: a row whose KL is small against those terms is recomputed
    from ``d = a - b`` (``p - q`` taken exactly, no O(1) terms), within a few
    ulps of the exact KL (without ``logit_softcap``); ``p == q`` gives 0.

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
    n_threads = resolve_threads(n_threads, p.size)
    if p.size:
        _k.kl_logits_rows(p3, q3, inv_t, cap, rows, None, None, 1.0,
                          n_threads)
    denom = _div_denominator(reduction, rows.size, p3.shape[1])
    return reduce_rows(rows, p.dtype, p.shape[:ax] + p.shape[ax + 1:], reduction, denom)


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
    the gradients a second.  Near ``P = Q`` (the rows the value refines) they
    are ``P_k expm1(log Q_k/P_k)`` and ``P_k (d_k - E_P[d])`` from the exact
    ``p - q``, within a few ulps of their own size.  Rows whose KL is nan have nan gradients; where
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
    inputs = [(p_logits, "p_logits"), (p, "p_logits"), (q_logits, "q_logits"),
              (q, "q_logits")]
    in_place = ("p_logits", "q_logits")
    gq, gq3, gq_tmp = _output_buffer(grad_out, "grad_out", p.shape, p.dtype, p3.shape,
                                     inputs, in_place)
    gp = gp3 = gp_tmp = None
    if p_grad:
        gp, gp3, gp_tmp = _output_buffer(p_grad_out, "p_grad_out", p.shape, p.dtype,
                                         p3.shape, inputs + [(grad_out, "grad_out")],
                                         in_place)
    rows = np.empty((p3.shape[0], p3.shape[2]), dtype=np.float64)
    denom = _div_denominator(reduction, rows.size, p3.shape[1])
    n_threads = resolve_threads(n_threads, p.size)
    if p.size:
        _k.kl_logits_rows(p3, q3, inv_t, cap, rows, gq3, gp3, 1.0 / denom,
                          n_threads)
    loss = reduce_rows(rows, p.dtype, p.shape[:ax] + p.shape[ax + 1:], reduction, denom)
    gq = finish_output(gq, gq_tmp)
    if p_grad:
        return loss, gq, finish_output(gp, gp_tmp)
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
    another.  Terms with ``P = 0`` (or ``Q = 0``) contribute 0.  A row whose
    JS is small against the log-normalisers is recomputed as
    ``1/2 E_P[phi(log Q/P)]``, ``phi(t) = t e^t - (1 + e^t) log((1 + e^t)/2) >= 0``,
    with ``log Q/P`` from the exact ``p - q``: within a few ulps near ``P = Q``.

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
    n_threads = resolve_threads(n_threads, p.size)
    if p.size:
        _k.js_logits_rows(p3, q3, inv_t, cap, rows, n_threads)
    if base is not None:
        rows /= math.log(base)
    denom = _div_denominator(reduction, rows.size, p3.shape[1])
    return reduce_rows(rows, p.dtype, p.shape[:ax] + p.shape[ax + 1:], reduction, denom)


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
    inv_t = check_temperature(temperature)
    cap = check_positive(logit_softcap, "logit_softcap", allow_none=True)
    reduction = _check_reduction(reduction, ("none", "sum", "mean"))
    x3, _ = rows_view(x, (ax,))
    rows = np.empty((x3.shape[0], x3.shape[2]), dtype=np.float64)
    n_threads = resolve_threads(n_threads, x.size)
    if x.size:
        _k.entropy_logits_rows(x3, inv_t, cap, rows, n_threads)
    if base is not None:
        rows /= math.log(base)
    return reduce_rows(rows, x.dtype, x.shape[:ax] + x.shape[ax + 1:], reduction,
                       float(rows.size))


