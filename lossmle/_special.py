"""logsumexp, softmax and log_softmax: drop-in replacements for scipy.special."""
import numpy as np

from . import _fastpath, _special_kernels as _k
from ._validation import (
    alloc_transform_out, as_float_array, check_output, common_float_dtype, deliver,
    normalize_axes, reduced_shape, resolve_threads, rows_view,
)

__all__ = ["logsumexp", "softmax", "log_softmax"]


def _scalar_or_array(out):
    return out[()] if out.ndim == 0 else out


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, *,
              where=None, out=None, n_threads=None):
    """Compute ``log(sum(b * exp(a)))`` along ``axis``, stably.

    Same semantics and results as :func:`scipy.special.logsumexp`, computed
    in one compiled pass per row without temporaries of the input's size.

    Parameters
    ----------
    a : array_like
        Input values.  Integer and bool input computes in float64; float16
        computes in and returns float32; float32 stays float32.
    axis : None or int or tuple of ints, optional
        Axis or axes to reduce.  None (default) reduces all of them.
    b : array_like, optional
        Weights for ``exp(a)``, broadcast against ``a``; may be negative
        (subtraction).  Entries with ``b == 0`` take no part, even where
        ``a`` is inf or nan.
    keepdims : bool, optional
        Keep the reduced axes as size-one dimensions.
    return_sign : bool, optional
        If True return ``(res, sgn)`` with ``res = log|sum|`` and ``sgn`` its
        sign (+1, 0, -1).  If False a negative sum gives nan.
    where : array_like of bool, optional
        Only entries where it is True take part (broadcast against ``a``),
        whatever the others hold (inf and nan included); a row with none
        gives -inf (the log of an empty sum).
        Not combinable with ``b`` or ``return_sign``.
    out : ndarray, optional
        Where to write ``res``: exactly its shape and dtype, writable, sharing
        no memory with ``a`` or ``b``.  Returned in place of a new array.
    n_threads : int or None, optional
        Threads for large inputs (None: :func:`lossmle.get_num_threads`).

    Returns
    -------
    res : ndarray or numpy scalar
        The log-sum-exp; a numpy scalar when every axis is reduced.
    sgn : ndarray or numpy scalar
        Only with ``return_sign=True``.

    Notes
    -----
    With ``m = max(a)`` and ``c`` the (weighted) number of entries equal to
    ``m``, the result is ``log1p(s / c) + log(c) + m`` where
    ``s = sum(b * exp(a - m))`` over the other entries; keeping the maximal
    terms out of ``s`` keeps full precision when one term dominates [1]_.
    Rows whose maximum is not finite take the direct formula: nan gives nan,
    +inf gives inf, a row of -inf gives -inf.  An empty input gives -inf.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import logsumexp
    >>> float(logsumexp(np.arange(10)))
    9.45862974442671
    >>> res, sgn = logsumexp([1, 2], b=[1, -1], return_sign=True)
    >>> float(res), float(sgn)
    (1.5413248546129181, -1.0)
    """
    # small plain arrays: the whole call in compiled code (None: not such a call)
    res = _fastpath.logsumexp(a, axis, b, keepdims, return_sign, where, out, n_threads)
    if res is not None:
        return res
    if where is not None:
        if b is not None or return_sign:
            raise ValueError("where cannot be combined with b or return_sign; "
                             "use b=where for a 0/1 weighting instead")
        from ._training import _masked_logsumexp
        return deliver(_masked_logsumexp(a, axis, keepdims, where=where, n_threads=n_threads),
                       out, [(a, "a"), (where, "where")])
    given = [(a, "a"), (b, "b")]
    if b is None:
        a = as_float_array(a, "a")
    else:
        dtype = common_float_dtype((a, "a"), (b, "b"))
        a = as_float_array(a, "a", dtype)
        b = as_float_array(b, "b", dtype)
        try:
            a, b = np.broadcast_arrays(a, b)
        except ValueError:
            raise ValueError(
                f"b with shape {b.shape} cannot be broadcast to a with shape "
                f"{a.shape}") from None
    user_out = out
    if a.ndim == 0:
        a = a.reshape(1)
        b = None if b is None else b.reshape(1)
    axes = normalize_axes(axis, a.ndim)
    out_shape = reduced_shape(a.shape, axes, keepdims)
    dtype = a.dtype
    check_output(user_out, "out", out_shape, dtype, given + [(a, "a"), (b, "b")])
    if a.size == 0:
        out = np.full(out_shape, -np.inf, dtype=dtype)
        sgn = np.sign(out)  # -1, as scipy
    else:
        a3, _ = rows_view(a, axes)
        out = np.empty((a3.shape[0], a3.shape[2]), dtype=dtype)
        n_threads = resolve_threads(n_threads, a.size)
        if b is None:
            _k.logsumexp_rows(a3, out, n_threads)
            sgn = None
            if return_sign:
                # the sum of exps is positive unless empty (-inf) or nan
                sgn = np.where(out == -np.inf, 0, 1).astype(dtype)
                sgn[np.isnan(out)] = np.nan
        else:
            b3, _ = rows_view(b, axes)
            sgn = np.empty_like(out) if return_sign else out
            _k.logsumexp_signed_rows(a3, b3, out, sgn, return_sign, n_threads)
        out = out.reshape(out_shape)
        sgn = sgn.reshape(out_shape) if return_sign else None
    res = deliver(out, user_out) if user_out is not None else _scalar_or_array(out)
    if return_sign:
        return res, _scalar_or_array(sgn)
    return res


def _transform(x, axis, kernel, name, n_threads, user_out):
    given = x
    x = as_float_array(x, "x")
    check_output(user_out, "out", x.shape, x.dtype, [(given, "x"), (x, "x")], ("x",))
    scalar_in = x.ndim == 0
    if scalar_in:
        x = x.reshape(1)
    axes = normalize_axes(axis, x.ndim)
    x3, perm = rows_view(x, axes)
    if x3.shape[1] == 0 and x.size == 0 and x3.shape[0] * x3.shape[2] > 0:
        raise ValueError(f"{name} of x over an empty axis (shape {x.shape}) is undefined")
    if user_out is not None and perm is None and user_out.flags.c_contiguous \
            and user_out.flags.aligned and not scalar_in:
        # straight into the caller's buffer (a view; in place when it is x)
        out, out3 = user_out, user_out.reshape(x3.shape)
    else:
        out, out3 = alloc_transform_out(x.shape, x3.shape, perm, x.dtype)
    if x.size:
        kernel(x3, out3, resolve_threads(n_threads, x.size))
    if user_out is not None:
        return out if out is user_out else deliver(out.reshape(user_out.shape), user_out)
    if scalar_in:
        return out.reshape(())[()]
    return out


def softmax(x, axis=None, *, where=None, out=None, n_threads=None):
    r"""Compute the softmax ``exp(x) / sum(exp(x))`` along ``axis``.

    Same semantics and results as :func:`scipy.special.softmax`.

    Parameters
    ----------
    x : array_like
        Input values (float32 stays float32; integers compute in float64;
        float16 in float32).
    axis : None or int or tuple of ints, optional
        Axis or axes the probabilities sum to one over.  None (default): the
        whole array.
    where : array_like of bool, optional
        Only entries where it is True take part; masked entries get
        probability 0 (log-probability -inf), as does a fully masked row.
    out : ndarray, optional
        Where to write the result: same shape as ``x``, the result's dtype,
        writable; it may be ``x`` itself (in place) but may not overlap it
        otherwise.  Returned in place of a new array.
    n_threads : int or None, optional
        Threads for large inputs (None: :func:`lossmle.get_num_threads`).

    Returns
    -------
    ndarray
        Same shape as ``x``; sums to 1 along ``axis``.

    Notes
    -----
    ``softmax(x) = exp(x - max(x)) / sum(exp(x - max(x)))``: the shift makes
    every exponent <= 0, so nothing overflows [1]_.  A row holding nan, +inf, or
    only -inf is all nan, as in scipy.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> from lossmle import softmax
    >>> softmax([0.0, 0.0, 0.0, 0.0]).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    res = _fastpath.softmax(x, axis, where, out, n_threads)  # small plain arrays
    if res is not None:
        return res
    if where is not None:
        from ._training import _masked_softmax
        return deliver(_masked_softmax(x, axis, where=where, n_threads=n_threads), out,
                       [(x, "x"), (where, "where")], ("x",))
    return _transform(x, axis, _k.softmax_rows, "softmax", n_threads, out)


def log_softmax(x, axis=None, *, where=None, out=None, n_threads=None):
    r"""Compute ``log(softmax(x))`` along ``axis``, accurately.

    Same semantics as :func:`scipy.special.log_softmax`, and more precise at
    the row maximum.

    Parameters
    ----------
    x : array_like
        Input values (float32 stays float32; integers compute in float64;
        float16 in float32).
    axis : None or int or tuple of ints, optional
        Axis or axes to normalise over.  None (default): the whole array.
    where : array_like of bool, optional
        Only entries where it is True take part; masked entries get
        probability 0 (log-probability -inf), as does a fully masked row.
    out : ndarray, optional
        Where to write the result: same shape as ``x``, the result's dtype,
        writable; it may be ``x`` itself (in place) but may not overlap it
        otherwise.  Returned in place of a new array.
    n_threads : int or None, optional
        Threads for large inputs (None: :func:`lossmle.get_num_threads`).

    Returns
    -------
    ndarray
        Same shape as ``x``; ``exp`` of it sums to 1 along ``axis``.

    Notes
    -----
    ``log_softmax(x) = x - logsumexp(x)``, never ``log(softmax(x))``.  With
    ``m = max(x)``, ``c`` the number of entries equal to ``m`` and ``s`` the
    sum of ``exp(x - m)`` over the others, the result is
    ``(x - m) - (log1p(s / c) + log(c))``, so the maximum keeps full relative
    precision (scipy returns 0 for ``log_softmax([0., -40.])[0]``, whose
    true value is -4.25e-18; scipy#19521; on the accuracy of these formulas
    see [1]_).  Rows with a non-finite maximum follow scipy (nan where it has
    nan).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> from lossmle import log_softmax
    >>> log_softmax([1000.0, 1.0]).tolist()
    [0.0, -999.0]
    >>> float(log_softmax([0.0, -40.0])[0])
    -4.248354255291589e-18
    """
    res = _fastpath.log_softmax(x, axis, where, out, n_threads)  # small plain arrays
    if res is not None:
        return res
    if where is not None:
        from ._training import _masked_log_softmax
        return deliver(_masked_log_softmax(x, axis, where=where, n_threads=n_threads), out,
                       [(x, "x"), (where, "where")], ("x",))
    return _transform(x, axis, _k.log_softmax_rows, "log_softmax", n_threads, out)
