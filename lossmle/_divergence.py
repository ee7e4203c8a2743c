"""kl_divergence (the seed's D_KL) and entropy (scipy.stats.entropy)."""
import math

import numpy as np

from ._kernels import divergence as _k, fastpath as _fastpath
from ._validation import (
    as_float_array, check_base as _check_base, common_float_dtype, deliver, normalize_axes,
    reduced_shape, resolve_threads, rows_view,
)

__all__ = ["kl_divergence", "entropy"]

_OUT_PARAMS = """    out : ndarray, optional
        Where to write the result: exactly its shape and dtype, writable,
        sharing no memory with the inputs.  Returned in place of a new array.
    n_threads : int or None, optional
        Threads for large inputs (None: :func:`lossmle.get_num_threads`)."""


def _pair(p, q, p_name, q_name):
    """p and q in one float dtype, broadcast together (views, no copies)."""
    if (type(p) is np.ndarray and type(q) is np.ndarray and p.shape == q.shape
            and p.dtype == q.dtype):  # the common case, without broadcast_arrays' cost
        return as_float_array(p, p_name), as_float_array(q, q_name)
    dtype = common_float_dtype((p, p_name), (q, q_name))
    p = as_float_array(p, p_name, dtype)
    q = as_float_array(q, q_name, dtype)
    try:
        return np.broadcast_arrays(p, q)
    except ValueError:
        raise ValueError(f"Array shapes are incompatible for broadcasting: {p_name} with "
                         f"shape {p.shape} and {q_name} with shape {q.shape} cannot be "
                         f"broadcast together") from None


def _reduced_axes(arrays, axis, keepdims):
    """Equally shaped ``arrays`` (a 0-d one as 1-d), the reduced axes and the result shape."""
    if arrays[0].ndim == 0:
        arrays = [a.reshape(1) for a in arrays]
    axes = normalize_axes(axis, arrays[0].ndim)
    return arrays, axes, reduced_shape(arrays[0].shape, axes, keepdims)


def _in_base(values, base, out_shape):
    """Values in nats, divided by ``log(base)`` in place (None: kept in nats) and
    shaped ``out_shape`` (a scalar when 0-d)."""
    if base is not None:
        with np.errstate(over="ignore"):   # a change of base may overflow to inf, quietly
            values /= math.log(base)
    values = values.reshape(out_shape)
    return values[()] if values.ndim == 0 else values


def _reduce_rows(kernel, arrays, axis, keepdims, base, n_threads, *args):
    """Run a row-reducing kernel over ``axis`` of equally shaped ``arrays``."""
    arrays, axes, out_shape = _reduced_axes(arrays, axis, keepdims)
    x = arrays[0]
    views = [rows_view(a, axes)[0] for a in arrays]
    out = np.zeros((views[0].shape[0], views[0].shape[2]), dtype=x.dtype)
    result = None
    if views[0].shape[1] > 0 and out.size > 0:  # an empty sum is 0
        result = kernel(*views, out, *args, resolve_threads(n_threads, x.size))
    return _in_base(out, base, out_shape), result


def kl_divergence(p, q, axis=-1, *, base=None, keepdims=False, validate=True,
                  out=None, n_threads=None):
    r"""Kullback-Leibler divergence ``D_KL(p || q) = sum p log(p / q)`` along ``axis``.

    One value per distribution, with no renormalisation of ``p`` or ``q``
    (unlike :func:`entropy`); equal to ``scipy.special.rel_entr(p, q).sum(axis)``.

    Parameters
    ----------
    p, q : array_like
        Probabilities, broadcast against each other.
    axis : None or int or tuple of ints, optional
        The axis (axes) holding each distribution; default -1; None: all.
    base : float, optional
        Logarithm base (default e: nats; 2 gives bits).
    keepdims : bool, optional
        Keep the reduced axes as size-one dimensions.
    validate : bool, optional
        If True (default) a negative or nan entry in ``p`` or ``q`` raises
        ValueError.  False skips that check (a little faster); such entries
        then follow ``rel_entr`` (negative -> inf, nan -> nan).
{out_params}

    Returns
    -------
    numpy scalar or ndarray
        ``D_KL(p || q)`` (>= 0 for probability vectors); a scalar when every
        axis is reduced.

    Notes
    -----
    Terms follow the limits: ``0 * log(0 / q) = 0`` for any ``q >= 0``, and
    ``p > 0`` with ``q = 0`` gives ``+inf``.  KL is not symmetric [1]_.

    References
    ----------
    .. [1] S. Kullback, R. A. Leibler, "On information and sufficiency",
       Ann. Math. Statist. 22(1), 79-86, 1951.

    Examples
    --------
    The seed's coin: a fair coin against one with P(heads) = 1/3.

    >>> from lossmle import kl_divergence
    >>> round(float(kl_divergence([1/2, 1/2], [1/3, 2/3])), 10)
    0.0588915178
    >>> round(float(kl_divergence([1/3, 2/3], [1/2, 1/2])), 10)
    0.0566330123
    """
    # small plain inputs: the whole call in compiled code (None: not such a call)
    res = _fastpath.kl_divergence(p, q, axis, base, keepdims, validate, out, n_threads)
    if res is not None:
        return res
    base = _check_base(base)
    resolve_threads(n_threads, 0)   # n_threads is checked on empty input too
    given = [(p, "p"), (q, "q")]
    p, q = _pair(p, q, "p", "q")
    user_out = out
    out, bad_rows = _reduce_rows(_k.kl_rows, [p, q], axis, keepdims, base,
                                 n_threads, bool(validate)) \
        if p.size else (_empty_reduction(p, axis, keepdims), 0)
    if bad_rows:
        # the error path only: find which argument to name
        with np.errstate(invalid="ignore"):
            name = "p" if not np.all(p >= 0) else "q"
        raise ValueError(f"{name} must hold probabilities, but some of its entries are "
                         f"negative or nan ({bad_rows} distribution(s) affected; "
                         f"pass validate=False to skip this check)")
    return _into(out, user_out, given + [(p, "p"), (q, "q")])


def _into(result, out, inputs):
    """Deliver a reduction into the caller's ``out`` (validated) or as is."""
    if out is None:
        return result
    return deliver(result, out, inputs)


def _empty_reduction(x, axis, keepdims):
    x = x.reshape(1) if x.ndim == 0 else x
    axes = normalize_axes(axis, x.ndim)
    out = np.zeros(reduced_shape(x.shape, axes, keepdims), dtype=x.dtype)
    return out[()] if out.ndim == 0 else out


def entropy(pk, qk=None, base=None, axis=0, *, nan_policy="propagate", keepdims=False,
            out=None, n_threads=None):
    r"""Shannon entropy of ``pk``, or relative entropy ``D(pk || qk)``, as scipy.stats.

    Same semantics and results as :func:`scipy.stats.entropy`: ``pk`` (and
    ``qk``) are first normalised to sum to 1 along ``axis``.

    Parameters
    ----------
    pk : array_like
        (Unnormalised) probabilities.
    qk : array_like, optional
        A second distribution, broadcast against ``pk``; gives the relative
        entropy ``sum pk log(pk / qk)``.
    base : float, optional
        Logarithm base (default e).
    axis : None or int or tuple of ints, optional
        The axis holding each distribution (default 0, as scipy); None: all.
    nan_policy : {'propagate', 'omit', 'raise'}, optional
        As scipy: 'propagate' (default) gives nan for a distribution holding
        a nan; 'omit' drops the nan entries first (with ``qk``, the positions
        where either holds a nan, from both); 'raise' raises ValueError.
    keepdims : bool, optional
        Keep the reduced axes as size-one dimensions.
{out_params}

    Returns
    -------
    numpy scalar or ndarray
        ``H(pk) = -sum pk log pk`` or ``D(pk || qk)``.

    Notes
    -----
    Terms follow ``scipy.special.entr`` and ``rel_entr`` (0 at 0; a negative
    entry gives inf; nan propagates).  The cross-entropy of ``pk`` and ``qk``
    is ``entropy(pk) + entropy(pk, qk)`` [1]_.

    References
    ----------
    .. [1] T. M. Cover, J. A. Thomas, "Elements of Information Theory",
       2nd ed., Wiley, 2006, ch. 2.

    Examples
    --------
    >>> from lossmle import entropy
    >>> float(entropy([1/2, 1/2], base=2))
    1.0
    >>> float(entropy([1/2, float("nan"), 1/2], base=2, nan_policy="omit"))
    1.0
    """
    if nan_policy == "propagate":
        res = _fastpath.entropy(pk, qk, base, axis, keepdims, out, n_threads)  # small plain pk
        if res is not None:
            return res
    elif nan_policy not in ("omit", "raise"):
        raise ValueError("nan_policy must be one of {'propagate', 'omit', 'raise'}, "
                         f"got {nan_policy!r}")
    base = _check_base(base)
    resolve_threads(n_threads, 0)   # n_threads is checked on empty input too
    given = [(pk, "pk"), (qk, "qk")]
    if qk is None:
        arrays, kernel = [as_float_array(pk, "pk")], _k.entropy_rows
    else:
        arrays, kernel = list(_pair(pk, qk, "pk", "qk")), _k.relative_entropy_rows
    if nan_policy != "propagate" and any(np.isnan(a).any() for a in arrays):
        if nan_policy == "raise":
            raise ValueError("The input contains nan values")
        result = _entropy_omit(arrays, kernel, axis, keepdims, base)
        return _into(result, out, given + list(zip(arrays, ("pk", "qk"))))
    if arrays[0].size == 0:
        result = _empty_reduction(arrays[0], axis, keepdims)
    else:
        result = _reduce_rows(kernel, arrays, axis, keepdims, base, n_threads)[0]
    return _into(result, out, given + list(zip(arrays, ("pk", "qk"))))


def _entropy_omit(arrays, kernel, axis, keepdims, base):
    """entropy with nan_policy='omit': each distribution without the positions
    where any of ``arrays`` holds a nan (scipy's paired omission)."""
    arrays, axes, out_shape = _reduced_axes(arrays, axis, keepdims)
    x = arrays[0]
    kept = [i for i in range(x.ndim) if i not in axes]
    # (distributions, values): the kept axes first, the reduced ones raveled
    flat = [np.moveaxis(a, list(axes), list(range(len(kept), x.ndim)))
            .reshape(-1, math.prod(x.shape[i] for i in axes)) for a in arrays]
    nan = np.zeros(flat[0].shape, dtype=bool)
    for a in flat:
        nan |= np.isnan(a)
    res = np.empty(flat[0].shape[0], dtype=x.dtype)
    for r in range(res.shape[0]):
        rows = [np.ascontiguousarray(a[r][~nan[r]]).reshape(1, -1, 1) for a in flat]
        one = np.zeros((1, 1), dtype=x.dtype)
        if rows[0].shape[1] > 0:   # an empty distribution: 0, as scipy's
            kernel(*rows, one, 1)
        res[r] = one[0, 0]
    return _in_base(res, base, out_shape)


kl_divergence.__doc__ = (kl_divergence.__doc__ or "").replace("{out_params}", _OUT_PARAMS)
entropy.__doc__ = (entropy.__doc__ or "").replace("{out_params}", _OUT_PARAMS)
