"""Kernels for the KL divergence and the (relative) entropy.

Design
------
Layout as in ``_special_kernels``: inputs are ``(n_outer, n, n_inner)`` views
reduced over the middle axis, outputs ``(n_outer, n_inner)``.  The elementwise
terms follow scipy.special exactly (``entr`` and ``rel_entr``), including
their conventions at 0, for negative arguments and for nan, so that results
agree with ``rel_entr(p, q).sum(axis)`` and ``scipy.stats.entropy``.  Sums are
in double.

The KL loop also counts entries that are negative or nan when asked to
(``validate``), in the same pass; the Python layer raises on a non-zero count,
so a bad probability never turns into a silent number.  Contiguous rows take
the vectorised ``lm_kl`` (p log(p/q) with a vectorised log); a row with any
entry outside its fast domain (p or q negative, nan, inf, p > 0 with q = 0,
p/q not a normal number) is redone by the scalar loop, which defines those.
Many short rows back to back (``n <= KL_SHORT_MAX``) go through
``lm_kl_rows`` a block at a time instead: one flat vectorised pass over the
block's terms, then a sum per row.
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.math cimport log, INFINITY, NAN
from libc.float cimport DBL_MAX, DBL_MIN

from lossmle._rowops cimport (
    simd_init, lm_simd_ready, lm_kl_d, lm_kl_f, lm_kl_rows_d, lm_kl_rows_f, SHORT_BLOCK,
)

# rows up to this long, back to back, take the flat kernel lm_kl_rows: the
# row-wise lm_kl has nothing to vectorise in a 4-value row (1e6 x 4: 2.7x faster)
cdef enum:
    KL_SHORT_MAX = 16


def _simd_init():
    """(Re)select this module's SIMD variant (reads LOSSMLE_SIMD); returns its name."""
    global SIMD_PATH
    SIMD_PATH = simd_init()
    return SIMD_PATH


SIMD_PATH = _simd_init()


cdef inline double rel_entr(double x, double y) noexcept nogil:
    """scipy.special.rel_entr: x log(x/y); 0 at x == 0 <= y; inf elsewhere; nan in, nan out."""
    cdef double r
    if x > 0 and y > 0:
        r = x / y
        if r > DBL_MAX or r < DBL_MIN:
            # x / y overflowed or went subnormal (y or x tiny): the logs apart
            return x * (log(x) - log(y))
        return x * log(r)
    if x == 0 and y >= 0:
        return 0.0        # the 0 * log(0 / q) = 0 convention
    if x != x or y != y:
        return NAN
    return INFINITY       # p > 0 with q == 0, or a negative argument


cdef inline double entr(double x) noexcept nogil:
    """scipy.special.entr: -x log x; 0 at 0; -inf for x < 0; nan in, nan out."""
    if x > 0:
        return -x * log(x)
    if x == 0:
        return 0.0
    if x != x:
        return NAN
    return -INFINITY


cdef inline bint kl_row(const floating* p, Py_ssize_t ps, const floating* q,
                        Py_ssize_t qs, Py_ssize_t n, bint validate,
                        floating* out) noexcept nogil:
    """out = sum rel_entr(p, q) over the row; returns True if p or q held a
    negative or nan entry (checked only when validate), flagged through the
    return so the caller can count bad rows."""
    cdef Py_ssize_t j
    cdef double s = 0.0, pj, qj, n_special = 1.0
    cdef bint bad_p = False, bad_q = False
    if ps == 1 and qs == 1:
        if floating is double:
            s = lm_kl_d(p, q, n, &n_special)
        else:
            s = lm_kl_f(p, q, n, &n_special)
        if n_special == 0:       # every entry regular: nothing negative or nan
            out[0] = <floating>s
            return False
        s = 0.0
    for j in range(n):
        pj = p[j * ps]
        qj = q[j * qs]
        if validate:
            bad_p = bad_p | (not (pj >= 0))
            bad_q = bad_q | (not (qj >= 0))
        s += rel_entr(pj, qj)
    out[0] = <floating>s
    return bad_p or bad_q


cdef inline double row_sum(const floating* x, Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
    cdef Py_ssize_t j
    cdef double s = 0.0
    for j in range(n):
        s += x[j * stride]
    return s


cdef Py_ssize_t _kl_short_block(const floating* p, const floating* q, Py_ssize_t n_rows,
                                Py_ssize_t n, bint validate, floating* out) noexcept nogil:
    """KL of n_rows contiguous rows of n values; rows the kernel flags are redone
    by kl_row, which also counts the invalid ones (returned)."""
    cdef double res[SHORT_BLOCK]
    cdef double special[SHORT_BLOCK]
    cdef Py_ssize_t r, bad_rows = 0
    if floating is double:
        lm_kl_rows_d(p, q, n_rows, n, res, special)
    else:
        lm_kl_rows_f(p, q, n_rows, n, res, special)
    for r in range(n_rows):
        if special[r] != 0:
            bad_rows += kl_row(p + r * n, 1, q + r * n, 1, n, validate, out + r)
        else:
            out[r] = <floating>res[r]
    return bad_rows


cdef inline bint _kl_short_layout(const floating[:, :, :] p, const floating[:, :, :] q,
                                  floating[:, :] out) noexcept nogil:
    cdef Py_ssize_t n = p.shape[1], item = sizeof(floating)
    return (n <= KL_SHORT_MAX and p.shape[2] == 1 and lm_simd_ready()
            and p.strides[1] == item and q.strides[1] == item
            and p.strides[0] == n * item and q.strides[0] == n * item
            and out.strides[0] == item)


cdef Py_ssize_t _kl_short_rows(const floating[:, :, :] p, const floating[:, :, :] q,
                               floating[:, :] out, bint validate, int n_threads):
    cdef Py_ssize_t n = p.shape[1], n_rows = p.shape[0]
    cdef Py_ssize_t n_blocks = (n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK
    cdef Py_ssize_t blk, start, bad_rows = 0
    if n_threads == 1:  # no OpenMP region (~2 us) for one thread's work
        with nogil:
            for blk in range(n_blocks):
                start = blk * SHORT_BLOCK
                bad_rows += _kl_short_block(&p[start, 0, 0], &q[start, 0, 0],
                                            min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n,
                                            validate, &out[start, 0])
    else:
        for blk in prange(n_blocks, schedule='static', num_threads=n_threads, nogil=True):
            start = blk * SHORT_BLOCK
            bad_rows += _kl_short_block(&p[start, 0, 0], &q[start, 0, 0],
                                        min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n,
                                        validate, &out[start, 0])
    return bad_rows


def kl_rows(const floating[:, :, :] p, const floating[:, :, :] q, floating[:, :] out,
            bint validate, int n_threads):
    """out = sum rel_entr(p, q) over axis 1.  p, q: IN; out: OUT.

    Returns how many rows hold a negative or nan entry in p or q (0 when
    validate is False).
    """
    cdef Py_ssize_t n = p.shape[1], n_inner = p.shape[2]
    cdef Py_ssize_t n_rows = p.shape[0] * n_inner
    cdef Py_ssize_t ps = p.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t qs = q.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    cdef Py_ssize_t bad_rows = 0
    if n_rows > 0 and _kl_short_layout(p, q, out):
        return _kl_short_rows(p, q, out, validate, n_threads)
    if n_threads == 1:  # no OpenMP region (~2 us) for one thread's work
        with nogil:
            for r in range(n_rows):
                o = r // n_inner
                i = r % n_inner
                bad_rows += kl_row(&p[o, 0, i], ps, &q[o, 0, i], qs, n, validate, &out[o, i])
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
            o = r // n_inner
            i = r % n_inner
            bad_rows += kl_row(&p[o, 0, i], ps, &q[o, 0, i], qs, n, validate, &out[o, i])
    return bad_rows


cdef inline double entropy_row(const floating* p, Py_ssize_t ps, const floating* q,
                               Py_ssize_t qs, Py_ssize_t n) noexcept nogil:
    """sum entr(p / sum(p)), or with q (not NULL) sum rel_entr(p / sum(p), q / sum(q))."""
    cdef Py_ssize_t j
    cdef double s = 0.0, p_total = row_sum(p, n, ps), q_total
    if q == NULL:
        for j in range(n):
            s += entr(p[j * ps] / p_total)
        return s
    q_total = row_sum(q, n, qs)
    for j in range(n):
        s += rel_entr(p[j * ps] / p_total, q[j * qs] / q_total)
    return s


cdef _entropy_rows(const floating[:, :, :] pk, const floating[:, :, :] qk,
                   floating[:, :] out, int n_threads, bint relative):
    """entropy_rows (relative False: qk is not read) or relative_entropy_rows."""
    cdef Py_ssize_t n = pk.shape[1], n_inner = pk.shape[2]
    cdef Py_ssize_t n_rows = pk.shape[0] * n_inner
    cdef Py_ssize_t ps = pk.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t qs = qk.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r
    if n_threads == 1:  # no OpenMP region (~2 us) for one thread's work
        with nogil:
            for r in range(n_rows):
                out[r // n_inner, r % n_inner] = <floating>entropy_row(
                    &pk[r // n_inner, 0, r % n_inner], ps,
                    &qk[r // n_inner, 0, r % n_inner] if relative else NULL, qs, n)
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
            out[r // n_inner, r % n_inner] = <floating>entropy_row(
                &pk[r // n_inner, 0, r % n_inner], ps,
                &qk[r // n_inner, 0, r % n_inner] if relative else NULL, qs, n)


def entropy_rows(const floating[:, :, :] pk, floating[:, :] out, int n_threads):
    """out = sum entr(pk / sum(pk)) over axis 1 (scipy.stats.entropy).  OUT: out."""
    _entropy_rows(pk, pk, out, n_threads, False)


def relative_entropy_rows(const floating[:, :, :] pk, const floating[:, :, :] qk,
                          floating[:, :] out, int n_threads):
    """out = sum rel_entr(pk / sum(pk), qk / sum(qk)) over axis 1.  OUT: out."""
    _entropy_rows(pk, qk, out, n_threads, True)
