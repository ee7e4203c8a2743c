# Shared row helpers for every lossmle kernel, and the C surface other Cython
# code can ``cimport``:  ``from lossmle._rowops cimport row_logsumexp``.
#
# Conventions (the contract for callers):
# * A "row" is ``n`` values at ``x[0], x[stride], ..., x[(n - 1) * stride]``;
#   ``stride`` counts elements (not bytes) and may be 0 or negative.  n >= 1.
# * Inputs are ``const floating*`` (float or double); every sum and every
#   intermediate is accumulated in double.
# * All helpers are ``noexcept nogil``, pure (no global state) and therefore
#   safe to call from any number of threads at once.
# * nan propagates: a row holding a nan gives nan (as scipy.special does).

from cython cimport floating
from libc.math cimport exp, log, log1p, fabs, INFINITY, NAN, isfinite


cdef inline double sign_of(double v) noexcept nogil:
    """np.sign for one double: -1, 0, +1, or nan."""
    if v > 0:
        return 1.0
    if v < 0:
        return -1.0
    return v  # 0.0 (either sign) or nan


cdef inline double row_max(const floating* x, Py_ssize_t n,
                           Py_ssize_t stride) noexcept nogil:
    """Maximum of a row; nan if the row holds a nan."""
    cdef Py_ssize_t j
    cdef double m = -INFINITY
    cdef double v
    cdef bint has_nan = False
    for j in range(n):
        v = x[j * stride]
        has_nan = has_nan | (v != v)
        m = v if v > m else m
    return NAN if has_nan else m


cdef inline double row_sum_exp_below_max(const floating* x, Py_ssize_t n,
                                         Py_ssize_t stride, double m,
                                         double* n_at_max) noexcept nogil:
    """Sum of exp(x_j - m) over the x_j != m, and (OUT) how many equal m.

    Keeping the maximal terms out of the sum is what makes
    log1p(sum / count) + log(count) + m exact when one term dominates
    (Blanchard, Higham & Higham 2021; scipy.special.logsumexp does the same).
    """
    cdef Py_ssize_t j
    cdef double s = 0.0, c = 0.0, v
    for j in range(n):
        v = x[j * stride]
        if v == m:
            c += 1.0
        else:
            s += exp(v - m)
    n_at_max[0] = c
    return s


cdef inline double row_logsumexp(const floating* x, Py_ssize_t n,
                                 Py_ssize_t stride) noexcept nogil:
    """log(sum(exp(x))) of a row, stable and precise when one term dominates.

    Non-finite maxima need no sum: nan -> nan, +inf -> +inf, and an all -inf
    row -> -inf (log of an empty sum), exactly as the direct formula gives.
    """
    cdef double m = row_max(x, n, stride)
    cdef double c, s
    if not isfinite(m):
        return m
    s = row_sum_exp_below_max(x, n, stride, m, &c)
    return log1p(s / c) + log(c) + m


cdef inline double row_logsumexp_signed(const floating* x, Py_ssize_t x_stride,
                                        const floating* b, Py_ssize_t b_stride,
                                        Py_ssize_t n, double* sign) noexcept nogil:
    """log|sum(b * exp(x))| of a row, with (OUT) the sign of the sum.

    Entries with b == 0 take no part (even when x is inf or nan), the terms at
    the maximum are kept out of the shifted sum, and a result that is not
    finite falls back to the direct sum, all as scipy.special.logsumexp.
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, c = 0.0, s = 0.0, v, bj, out, sgn, direct = 0.0
    cdef bint has_nan = False
    for j in range(n):
        if b[j * b_stride] != 0:
            v = x[j * x_stride]
            has_nan = has_nan | (v != v)
            m = v if v > m else m
    if has_nan:
        m = NAN
    if isfinite(m):
        for j in range(n):
            bj = b[j * b_stride]
            if bj == 0:
                continue
            v = x[j * x_stride]
            if v == m:
                c += bj
            else:
                s += bj * exp(v - m)
        if s != 0:
            s = s / c
        sgn = sign_of(s + 1.0) * sign_of(c)
        if s < -1.0:
            s = -s - 2.0
        out = log1p(s) + log(fabs(c)) + m
        if isfinite(out):
            sign[0] = sgn
            return out
    # Infinite, nan or cancelling rows: the plain formula defines the answer.
    for j in range(n):
        direct += b[j * b_stride] * exp(<double>x[j * x_stride])
    sign[0] = sign_of(direct)
    return log(fabs(direct))


cdef inline double row_logsumexp_online(const floating* x, Py_ssize_t n,
                                        Py_ssize_t stride) noexcept nogil:
    """log(sum(exp(x))) in ONE read of the row (running max, rescaled sum).

    For kernels that must not read a long row twice.  An all -inf row gives
    -inf, +inf gives +inf, nan gives nan, as row_logsumexp.
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, s = 0.0, v
    for j in range(n):
        v = x[j * stride]
        if v > m:
            # exp(-inf) == 0 drops the old sum when the first finite value
            # arrives; the guard keeps -inf - -inf (nan) out of it.
            s = (s * exp(m - v) if m != -INFINITY else 0.0) + 1.0
            m = v
        elif v == v:
            if m != -INFINITY:
                s += exp(v - m)
        else:
            return NAN
    if not isfinite(m):
        return m
    return m + log(s)


cdef inline void row_softmax(const floating* x, Py_ssize_t x_stride,
                             floating* out, Py_ssize_t out_stride,
                             Py_ssize_t n) noexcept nogil:
    """out = exp(x - max) / sum(exp(x - max)) (scipy.special.softmax)."""
    cdef Py_ssize_t j
    cdef double m = row_max(x, n, x_stride)
    cdef double s = 0.0, e
    for j in range(n):
        e = exp(x[j * x_stride] - m)
        out[j * out_stride] = <floating>e
        s += e
    # a nan or all -inf row leaves s == nan, so every entry is nan, as scipy.
    for j in range(n):
        out[j * out_stride] = <floating>(out[j * out_stride] / s)


cdef inline void row_log_softmax(const floating* x, Py_ssize_t x_stride,
                                 floating* out, Py_ssize_t out_stride,
                                 Py_ssize_t n) noexcept nogil:
    """out = x - logsumexp(x), precise at the maximum.

    With the maximal terms kept out of the sum, the maximum gets
    -(log1p(s / c) + log(c)) instead of 0 (scipy#19521).  A row with a
    non-finite maximum follows scipy: shift by 0, out = x - log(sum(exp(x))).
    """
    cdef Py_ssize_t j
    cdef double m = row_max(x, n, x_stride)
    cdef double c, s, lse
    if isfinite(m):
        s = row_sum_exp_below_max(x, n, x_stride, m, &c)
        lse = log1p(s / c) + log(c)
    else:
        m = 0.0
        s = 0.0
        for j in range(n):
            s += exp(<double>x[j * x_stride])
        lse = log(s)
    for j in range(n):
        out[j * out_stride] = <floating>((x[j * x_stride] - m) - lse)
