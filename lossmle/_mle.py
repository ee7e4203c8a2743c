"""Likelihood of categorical samples, and the seed's empirical KL estimator.

``log_likelihood`` / ``negative_log_likelihood`` score class-index samples
under a categorical model given as probabilities or logits;
``empirical_kl`` is the seed's coin-flip estimator
``(1/N) sum_i log(p(x_i) / q(x_i))`` of ``D_KL(p || q)`` from samples of ``p``.

Layers: validation here (once), then either counts (one shared distribution:
``sum_c n_c log p_c``, O(N + C)) or a gather of the sampled entries (one
distribution per sample); logits go through the fused cross-entropy kernel.
"""
import math

import numpy as np

from ._losses import cross_entropy
from ._threads import check_n_threads
from ._validation import (
    as_float_array, check_base as _check_base, check_reduction, normalize_axes,
)

__all__ = ["log_likelihood", "negative_log_likelihood", "empirical_kl"]

_REDUCTIONS = ("sum", "mean", "none")


def _check_reduction(reduction):
    return check_reduction(reduction, _REDUCTIONS)


def _check_samples(samples, name="samples"):
    """Integer (or bool) class indices as an int64 ndarray."""
    s = np.asarray(samples)
    if s.dtype.kind == "b":
        return s.astype(np.int64)
    if s.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must hold integer class indices, got dtype {s.dtype}")
    if s.dtype.kind == "u" and s.size and s.max() > np.iinfo(np.int64).max:
        raise IndexError(f"{name} contains class index {int(s.max())}, out of range")
    return s.astype(np.int64, copy=False)


def _check_range(samples, n_classes, name, dist_name):
    if samples.size == 0:
        return
    lo, hi = int(samples.min()), int(samples.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        raise IndexError(
            f"{name} contains class index {bad}, but {dist_name} has {n_classes} "
            f"classes (valid: 0..{n_classes - 1})")


def _check_probs(p, name):
    """Finite, non-negative entries whose rows (last axis) sum to 1."""
    if p.size == 0:
        return
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{name} must hold finite, non-negative probabilities")
    # sqrt(eps) per class: rounding in a user's normalisation passes, a missing
    # normalisation (or logits passed as probabilities) does not.
    tol = math.sqrt(np.finfo(p.dtype).eps) * max(1, p.shape[-1])
    sums = np.sum(p, axis=-1, dtype=np.float64)
    if np.any(np.abs(sums - 1.0) > tol):
        worst = float(sums.reshape(-1)[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(
            f"{name} must hold probability distributions summing to 1 along the "
            f"class axis, but one sums to {worst!r} (pass logits=True for "
            f"unnormalised log-probabilities)")


def _dist_and_samples(dist, samples, axis, dist_name, samples_name, dtype=None):
    """``dist`` with its class axis last, and samples checked against it.

    Returns ``(dist, samples, shared)``: ``shared`` is True when ``dist`` is one
    distribution of shape (C,) used for every sample.
    """
    d = as_float_array(dist, dist_name, dtype)
    if d.ndim == 0:
        raise ValueError(f"{dist_name} must have at least one dimension (the class axis)")
    (ax,) = normalize_axes(axis, d.ndim, allow_tuple=False)
    d = np.moveaxis(d, ax, -1)
    n_classes = d.shape[-1]
    if n_classes == 0:
        raise ValueError(f"{dist_name} has no classes: axis {axis} has length 0")
    s = _check_samples(samples, samples_name)
    shared = d.ndim == 1
    if not shared and s.shape != d.shape[:-1]:
        raise ValueError(
            f"{samples_name} has shape {s.shape}, but {dist_name} with shape "
            f"{np.moveaxis(d, -1, ax).shape} holds one distribution per sample, so "
            f"{samples_name} must have shape {d.shape[:-1]} ({dist_name} without "
            f"its class axis); pass a 1-D {dist_name} to share one distribution")
    _check_range(s, n_classes, samples_name, dist_name)
    return d, s, shared


def _log_prob_of_samples(d, s, shared, logits, n_threads):
    """``log d(x_i)`` per sample (float64 array of ``s.shape``)."""
    if logits:
        if shared:
            d = np.broadcast_to(d, s.shape + d.shape)
        # -cross_entropy per row is log softmax(d)[x_i], from the fused kernel
        # (max-shifted log-sum-exp; the softmax is never formed).
        out = cross_entropy(d.astype(np.float64, copy=False), s, reduction="none",
                            n_threads=n_threads)
        return -np.asarray(out, dtype=np.float64)
    if shared:
        picked = d[s]
    else:
        picked = np.take_along_axis(d, s[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore"):  # log(0) = -inf: an impossible sample
        return np.log(picked.astype(np.float64))


def _reduce(values, reduction, dtype):
    if reduction == "none":
        return values.astype(dtype)
    total = np.sum(values)  # pairwise summation
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            total = total / values.size if values.size else np.nan
    return dtype.type(total)


def log_likelihood(dist, samples, *, logits=False, axis=-1, reduction="sum",
                   n_threads=None):
    r"""Log-likelihood of categorical samples under a model, ``sum_i log p(x_i)``.

    Parameters
    ----------
    dist : array_like, shape (C,) or (..., C)
        The model: either one distribution over ``C`` classes shared by every
        sample, or one distribution per sample (``dist`` shaped like
        ``samples`` plus the class axis).  Probabilities (finite, >= 0, summing
        to 1 along ``axis``) unless ``logits=True``.
    samples : array_like of int
        Observed class indices in ``0..C-1`` (bool is read as 0/1).
    logits : bool, optional
        If True, ``dist`` holds unnormalised log-probabilities and the model is
        ``softmax(dist)``.
    axis : int, optional
        The class axis of ``dist`` (default -1).
    reduction : {'sum', 'mean', 'none'}, optional
        'sum' (default): ``log L = sum_i log p(x_i)``; 'mean': ``(1/N) log L``,
        the average log-likelihood per sample; 'none': ``log p(x_i)`` per
        sample, shaped like ``samples``.
    n_threads : int or None, optional
        Threads for the logits kernel (None: :func:`lossmle.get_num_threads`).

    Returns
    -------
    numpy scalar or ndarray
        In the float dtype of ``dist`` (float32 stays float32).  A sample of
        probability 0 gives ``-inf``.

    Notes
    -----
    With one shared distribution the sum is computed from the counts ``n_c``
    as the seed does, ``log L = sum_c n_c log p_c`` (O(N + C), and exact in
    the counts).  With logits, ``log p(x) = x_y - logsumexp(x)`` from the
    max-shifted cross-entropy kernel: never ``log(softmax(x))``.  Sums are
    pairwise in float64.  'mean' of zero samples is nan.

    Examples
    --------
    The seed's ten flips (x = 1 is heads), under the fair coin and under
    ``q(1) = 1/3``:

    >>> from lossmle import log_likelihood
    >>> flips = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    >>> float(log_likelihood([1/2, 1/2], flips))  # 10 log(1/2)
    -6.931471805599453
    >>> round(float(log_likelihood([2/3, 1/3], flips)), 12)  # 5 log(2/3) + 5 log(1/3)
    -7.520386983881
    """
    reduction = _check_reduction(reduction)
    if not isinstance(logits, (bool, np.bool_)):
        raise TypeError(f"logits must be True or False, got {logits!r}")
    if n_threads is not None:   # checked whether or not the kernel runs
        check_n_threads(n_threads)
    d, s, shared = _dist_and_samples(dist, samples, axis, "dist", "samples")
    if not logits:
        _check_probs(d, "dist")
    if shared and not logits and reduction != "none":
        counts = np.bincount(s.reshape(-1), minlength=d.shape[0])
        seen = counts > 0  # 0 * log 0 = 0: unobserved classes contribute nothing
        with np.errstate(divide="ignore"):
            total = float(np.sum(counts[seen] * np.log(d[seen].astype(np.float64))))
        if reduction == "mean":
            total = total / s.size if s.size else math.nan
        return d.dtype.type(total)
    return _reduce(_log_prob_of_samples(d, s, shared, logits, n_threads),
                   reduction, d.dtype)


def negative_log_likelihood(dist, samples, *, logits=False, axis=-1, reduction="sum",
                            n_threads=None):
    r"""Negative log-likelihood ``-sum_i log p(x_i)``: the quantity MLE minimises.

    Parameters
    ----------
    dist, samples, logits, axis, reduction, n_threads
        As :func:`log_likelihood`.

    Returns
    -------
    numpy scalar or ndarray
        ``-log_likelihood(...)``; with ``reduction='mean'`` this is the
        cross-entropy loss of the seed, ``-(1/N) sum_i log p(x_i)``.

    Notes
    -----
    Minimising it over a model's parameters is maximum-likelihood estimation;
    with ``reduction='mean'`` and ``logits=True`` it equals
    :func:`lossmle.cross_entropy` with class-index targets.

    Examples
    --------
    >>> from lossmle import negative_log_likelihood
    >>> round(float(negative_log_likelihood([0.25, 0.75], [1, 1, 0], reduction="mean")), 12)  # -(2 log 3/4 + log 1/4) / 3
    0.653886168674
    """
    return -log_likelihood(dist, samples, logits=logits, axis=axis,
                           reduction=reduction, n_threads=n_threads)


def empirical_kl(samples, p, q, *, axis=-1, base=None):
    r"""The seed's estimate of ``D_KL(p || q)`` from samples of ``p``.

    ``(1/N) sum_i log(p(x_i) / q(x_i))``: the normalised log-likelihood ratio
    of the samples under ``p`` and under ``q``, which converges to
    ``D_KL(p || q)`` as ``N`` grows.

    Parameters
    ----------
    samples : array_like of int
        Class indices ``x_i`` drawn from ``p`` (bool is read as 0/1).
    p, q : array_like, shape (C,) or (..., C)
        Probabilities (finite, >= 0, summing to 1 along ``axis``): one
        distribution each, shared by all samples, or one per sample (e.g. the
        conditionals ``p*(y | x_i)`` and ``p_w(y | x_i)`` of a model); ``p``
        and ``q`` must have the same shape.
    axis : int, optional
        The class axis of ``p`` and ``q`` (default -1).
    base : float, optional
        Logarithm base (default e: nats; 2 gives bits).

    Returns
    -------
    numpy float64
        The estimate; ``+inf`` if some sample has ``q(x_i) = 0``; nan for
        no samples.

    Raises
    ------
    ValueError
        If a sample has probability 0 under ``p`` (it cannot have been drawn
        from ``p``), or ``p``/``q`` are not probability distributions.

    Notes
    -----
    With shared ``p`` and ``q`` this is the seed's
    ``sum_c (n_c / N) log(p_c / q_c)``, computed from the counts ``n_c``;
    whenever ``n_c / N = p_c`` exactly (the seed's ten flips: five of each)
    it equals ``D_KL(p || q)`` exactly.  Per-sample distributions use the
    gathered ``log p(x_i) - log q(x_i)``, summed pairwise in float64.

    Examples
    --------
    >>> from lossmle import empirical_kl, kl_divergence
    >>> flips = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    >>> p, q = [1/2, 1/2], [2/3, 1/3]  # P(tails), P(heads)
    >>> round(float(empirical_kl(flips, p, q)), 12)  # (1/2) log(9/8)
    0.058891517828
    >>> round(float(kl_divergence(p, q)), 12)
    0.058891517828
    """
    base = _check_base(base)
    pa = as_float_array(p, "p", np.dtype(np.float64))
    qa = as_float_array(q, "q", np.dtype(np.float64))
    if pa.shape != qa.shape:
        raise ValueError(f"p and q must have the same shape, got {pa.shape} and {qa.shape}")
    pd, s, shared = _dist_and_samples(pa, samples, axis, "p", "samples")
    qd = np.moveaxis(qa, axis, -1)  # axis already checked against p's (equal) shape
    _check_probs(pd, "p")
    _check_probs(qd, "q")
    if shared:
        counts = np.bincount(s.reshape(-1), minlength=pd.shape[0])
        seen = counts > 0
        if np.any(pd[seen] == 0):
            c = int(np.flatnonzero(seen & (pd == 0))[0])
            raise ValueError(
                f"samples contains class {c}, which has probability 0 under p: "
                f"the samples cannot come from p")
        with np.errstate(divide="ignore"):
            terms = counts[seen] * (np.log(pd[seen]) - np.log(qd[seen]))
        total = float(np.sum(terms))
    else:
        lp = _log_prob_of_samples(pd, s, False, False, None)
        lq = _log_prob_of_samples(qd, s, False, False, None)
        if np.any(np.isneginf(lp)):
            raise ValueError("samples contains a class that has probability 0 under p "
                             "for its row: the samples cannot come from p")
        total = float(np.sum(lp - lq))
    n = s.size
    value = total / n if n else math.nan
    if base is not None:
        value /= math.log(base)
    return np.float64(value)
