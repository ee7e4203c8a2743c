"""logsumexp, softmax and log_softmax: drop-in replacements for scipy.special."""
import numpy as np

from ._kernels import fastpath as _fastpath, special as _k, training as _tk
from ._validation import (
    alloc_transform_out, as_float_array, check_output, check_where as _check_where,
    checked_output as _output_buffer, common_float_dtype, deliver, finish_output,
    normalize_axes, reduced_shape, resolve_threads, rows_view,
    same_shape_pair as _same_shape_pair,
)

__all__ = ["logsumexp", "softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]

# docstring parts shared by logsumexp, softmax and log_softmax (filled in below them)
_DOC_PARTS = {
    "{x}": """    x : array_like
        Input values (float32 stays float32; integers compute in float64;
        float16 in float32).""",
    "{options}": """    where : array_like of bool, optional
        Only entries where it is True take part; masked entries get
        probability 0 (log-probability -inf), as does a fully masked row.
    out : ndarray, optional
        Where to write the result: same shape as ``x``, the result's dtype,
        writable; it may be ``x`` itself (in place) but may not overlap it
        otherwise.  Returned in place of a new array.
    n_threads : int or None, optional
        Threads for large inputs (None: :func:`lossmle.get_num_threads`).""",
    "{references}": """    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.""",
}


def _fill_doc(fn):
    for key, text in _DOC_PARTS.items():
        fn.__doc__ = (fn.__doc__ or "").replace(key, text)


def _scalar_or_array(out):
    return out[()] if out.ndim == 0 else out


def _lse_result(out, sgn, return_sign, user_out):
    """logsumexp's result, into ``user_out`` or as an array / numpy scalar, with its sign."""
    res = deliver(out, user_out) if user_out is not None else _scalar_or_array(out)
    if return_sign:
        return res, _scalar_or_array(sgn)
    return res


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

{references}

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
        return deliver(_masked_logsumexp(a, axis, keepdims, where=where, n_threads=n_threads),
                       out, [(a, "a"), (where, "where")])
    if _is_complex(a) or (b is not None and _is_complex(b)):
        resolve_threads(n_threads, 0)   # checked, though the complex path is NumPy's
        return _logsumexp_complex(a, axis, b, keepdims, return_sign, out)
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
    n_threads = resolve_threads(n_threads, a.size)   # checked on empty input too
    if a.size == 0:
        out = np.full(out_shape, -np.inf, dtype=dtype)
        sgn = np.sign(out)  # -1, as scipy
    else:
        a3, _ = rows_view(a, axes)
        out = np.empty((a3.shape[0], a3.shape[2]), dtype=dtype)
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
    return _lse_result(out, sgn, return_sign, user_out)


def _check_axis_not_empty(x, x3, name):
    """A softmax over an empty axis of a non-empty set of rows is undefined (scipy raises)."""
    if x3.shape[1] == 0 and x.size == 0 and x3.shape[0] * x3.shape[2] > 0:
        raise ValueError(f"{name} of x over an empty axis (shape {x.shape}) is undefined")


def _is_complex(x):
    if isinstance(x, np.ndarray):
        return x.dtype.kind == "c"
    if isinstance(x, (float, int, np.floating, np.integer, bool)):
        return False
    return np.asarray(x).dtype.kind == "c"


def _csign(z):
    """z / |z| (0 at 0), the array API's sign of a complex number: nan for an
    infinite z (NumPy's own np.sign gives 1 for inf + 2j, not SciPy's answer)."""
    with np.errstate(all="ignore"):
        return np.where(z == 0, 0, z / np.abs(z))


def _wrap_phase(x):
    """Angles into (-pi, pi], unchanged (to the bit) where already inside."""
    wrapped = -((np.pi - x) % (2 * np.pi) - np.pi)
    return np.where(np.abs(x) < np.pi, x, wrapped)


def _logsumexp_complex(a, axis, b, keepdims, return_sign, user_out):
    """logsumexp of complex ``a`` (or ``b``), as scipy: a NumPy path, not a kernel.

    The shift is the element of largest real part (one per slice), kept out of
    the sum, which is then ``log1p``'d; where that is not finite (an infinite
    element, an all -inf slice) the direct ``log(sum(b * exp(a)))`` is kept,
    whose infinities follow C99's complex exp and log (scipy's gh-22601).
    The imaginary part (``return_sign=False``) or the phase is in (-pi, pi].
    """
    arrays = [np.asarray(a)] + ([] if b is None else [np.asarray(b)])
    for x, name in zip(arrays, ("a", "b")):
        if x.dtype.kind not in "biufc" or x.dtype == np.clongdouble \
                or x.dtype == np.longdouble:
            raise TypeError(f"{name} has dtype {x.dtype}; complex logsumexp computes in "
                            f"complex64 or complex128")
    dtype = np.result_type(*arrays)
    if dtype.kind != "c":
        dtype = np.result_type(dtype, np.complex64)
    a = arrays[0].astype(dtype, copy=False)
    if b is not None:
        b = arrays[1].astype(dtype, copy=False)
        try:
            a, b = np.broadcast_arrays(a, b)
        except ValueError:
            raise ValueError(f"b with shape {b.shape} cannot be broadcast to a with shape "
                             f"{a.shape}") from None
    if a.ndim == 0:
        a = a.reshape(1)
        b = None if b is None else b.reshape(1)
    axes = normalize_axes(axis, a.ndim)
    out_shape = reduced_shape(a.shape, axes, keepdims)
    real_out = return_sign and a.size != 0   # |sum|'s log is real
    check_output(user_out, "out", out_shape,
                 dtype.type(0).real.dtype if real_out else dtype, [(a, "a"), (b, "b")])
    if a.size == 0:
        out = np.full(reduced_shape(a.shape, axes, True), -np.inf, dtype=dtype)
        sgn = _csign(out)
    else:
        with np.errstate(all="ignore"):
            direct = np.sum(np.exp(a) if b is None else b * np.exp(a), axis=axes,
                            keepdims=True)
            sgn_direct = _csign(direct) if return_sign else None
            out_direct = np.log(np.abs(direct) if return_sign else direct)
            out, sgn = _logsumexp_complex_shifted(a, b, axes)
            if return_sign:
                out = out.real
            finite = np.isfinite(out)
            out = np.where(finite, out, out_direct)
            if return_sign:
                sgn = np.where(finite, sgn, sgn_direct)
                sgn = (sgn.real + 1j * _wrap_phase(sgn.imag)).astype(dtype)
            else:
                out = (out.real + 1j * _wrap_phase(out.imag)).astype(dtype)
    if not keepdims:
        out = out.reshape(out_shape)
        sgn = sgn.reshape(out_shape) if return_sign else None
    return _lse_result(out, sgn, return_sign, user_out)


def _logsumexp_complex_shifted(a, b, axes):
    """(log(sum b exp(a)), its sign/phase) shifted by the largest real part."""
    if b is not None:   # a zero weight drops its element, inf or nan included
        a = np.where(b == 0, -np.inf, a)
    re = a.real
    top = re == np.max(re, axis=axes, keepdims=True)
    # one element per slice: the last of those with the largest real part
    idx = np.arange(a.size).reshape(a.shape)
    top = idx == np.max(np.where(top, idx, -1), axis=axes, keepdims=True)
    a_max = np.sum(np.where(top, a, 0), axis=axes, keepdims=True)
    m = np.sum(top if b is None else np.where(top, b, 0), axis=axes, keepdims=True,
               dtype=a.dtype)
    rest = np.exp(np.where(top, -np.inf, a) - a_max)
    if b is not None:
        rest = b * rest
    s = np.sum(rest, axis=axes, keepdims=True)
    s = np.where(s == 0, s, s / m)
    sgn = _csign(s + 1) * _csign(m) * np.exp(1j * a_max.imag)
    out = np.log1p(s) + np.log(m) + a_max
    return out, sgn


def _transform(x, axis, where, kernel, log_space, n_threads, user_out):
    """softmax (``log_space`` False) or log_softmax past the fast path: the masked
    kernel for ``where=``, else ``kernel`` over the rows."""
    if where is not None:
        return deliver(_masked_transform(x, axis, where, n_threads, log_space), user_out,
                       [(x, "x"), (where, "where")], ("x",))
    name = "log_softmax" if log_space else "softmax"
    given = x
    x = as_float_array(x, "x")
    check_output(user_out, "out", x.shape, x.dtype, [(given, "x"), (x, "x")], ("x",))
    scalar_in = x.ndim == 0
    if scalar_in:
        x = x.reshape(1)
    axes = normalize_axes(axis, x.ndim)
    x3, perm = rows_view(x, axes)
    _check_axis_not_empty(x, x3, name)
    if user_out is not None and perm is None and user_out.flags.c_contiguous \
            and user_out.flags.aligned and not scalar_in:
        # straight into the caller's buffer (a view; in place when it is x)
        out, out3 = user_out, user_out.reshape(x3.shape)
    else:
        out, out3 = alloc_transform_out(x.shape, x3.shape, perm, x.dtype)
    n_threads = resolve_threads(n_threads, x.size)
    if x.size:
        kernel(x3, out3, n_threads)
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
{x}
    axis : None or int or tuple of ints, optional
        Axis or axes the probabilities sum to one over.  None (default): the
        whole array.
{options}

    Returns
    -------
    ndarray
        Same shape as ``x``; sums to 1 along ``axis``.

    Notes
    -----
    ``softmax(x) = exp(x - max(x)) / sum(exp(x - max(x)))``: the shift makes
    every exponent <= 0, so nothing overflows [1]_.  A row holding nan, +inf, or
    only -inf is all nan, as in scipy.

{references}

    Examples
    --------
    >>> from lossmle import softmax
    >>> softmax([0.0, 0.0, 0.0, 0.0]).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    res = _fastpath.softmax(x, axis, where, out, n_threads)  # small plain arrays
    if res is not None:
        return res
    return _transform(x, axis, where, _k.softmax_rows, False, n_threads, out)


def log_softmax(x, axis=None, *, where=None, out=None, n_threads=None):
    r"""Compute ``log(softmax(x))`` along ``axis``, accurately.

    Same semantics as :func:`scipy.special.log_softmax`, and more precise at
    the row maximum.

    Parameters
    ----------
{x}
    axis : None or int or tuple of ints, optional
        Axis or axes to normalise over.  None (default): the whole array.
{options}

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

{references}

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
    return _transform(x, axis, where, _k.log_softmax_rows, True, n_threads, out)


for _fn in (logsumexp, softmax, log_softmax):
    _fill_doc(_fn)
del _fn


# ---------------------------------------------------------------------------
# where=: the masked paths
# ---------------------------------------------------------------------------
def _masked_prepare(a, where, name):
    x = as_float_array(a, name)
    if x.ndim == 0:
        x = x.reshape(1)
        where = np.asarray(where).reshape(np.shape(where) if np.ndim(where) else (1,))
    mask = _check_where(where, x.shape)
    return x, mask


def _masked_logsumexp(a, axis=None, keepdims=False, *, where, n_threads=None):
    """``lossmle.logsumexp(a, axis, keepdims=keepdims, where=where)``: over the entries
    where ``where`` is True (a fully masked row gives -inf)."""
    x, mask = _masked_prepare(a, where, "a")
    axes = normalize_axes(axis, x.ndim)
    out_shape = reduced_shape(x.shape, axes, keepdims)
    x3, _ = rows_view(x, axes)
    m3, _ = rows_view(mask, axes)
    out = np.full((x3.shape[0], x3.shape[2]), -np.inf, dtype=x.dtype)
    n_threads = resolve_threads(n_threads, x.size)
    if x.size:
        _tk.masked_lse_rows(x3, m3.view(np.uint8), out, n_threads)
    out = out.reshape(out_shape)
    return out[()] if out.ndim == 0 else out


def _masked_transform(a, axis, where, n_threads, log_space):
    scalar_in = np.ndim(a) == 0
    x, mask = _masked_prepare(a, where, "x")
    axes = normalize_axes(axis, x.ndim)
    x3, perm = rows_view(x, axes)
    _check_axis_not_empty(x, x3, "log_softmax" if log_space else "softmax")
    m3, _ = rows_view(mask, axes)
    out, out3 = alloc_transform_out(x.shape, x3.shape, perm, x.dtype)
    n_threads = resolve_threads(n_threads, x.size)
    if x.size:
        _tk.masked_softmax_rows(x3, m3.view(np.uint8), out3, log_space,
                               n_threads)
    # a 0-d input gives a scalar, as softmax / log_softmax without where
    return out.reshape(())[()] if scalar_in else out


# ---------------------------------------------------------------------------
# softmax / log_softmax backward (vector-Jacobian products)
# ---------------------------------------------------------------------------
def _backward(kernel, grad_output, output, axis, out, n_threads, out_name):
    g, y = _same_shape_pair(grad_output, output, "grad_output", out_name)
    scalar_in = g.ndim == 0
    if scalar_in:
        g, y = g.reshape(1), y.reshape(1)
    (ax,) = normalize_axes(axis, g.ndim, allow_tuple=False)
    g3, _ = rows_view(g, (ax,))
    y3, _ = rows_view(y, (ax,))
    res, res3, scratch = _output_buffer(
        out, "out", g.shape, g.dtype, g3.shape,
        [(grad_output, "grad_output"), (g, "grad_output"), (output, out_name), (y, out_name)],
        ("grad_output", out_name))
    n_threads = resolve_threads(n_threads, g.size)
    if g.size:
        kernel(g3, y3, res3, n_threads)
    res = finish_output(res, scratch)
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
    return _backward(_tk.softmax_backward_rows, grad_output, softmax_output, axis, out,
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
    return _backward(_tk.log_softmax_backward_rows, grad_output, log_softmax_output, axis,
                     out, n_threads, "log_softmax_output")


