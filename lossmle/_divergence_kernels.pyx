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
so a bad probability never turns into a silent number.
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.math cimport log, INFINITY, NAN


cdef inline double rel_entr(double x, double y) noexcept nogil:
    """scipy.special.rel_entr: x log(x/y); 0 at x == 0 <= y; inf elsewhere; nan in, nan out."""
    if x > 0 and y > 0:
        return x * log(x / y)
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


cdef inline double row_sum(const floating* x, Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
    cdef Py_ssize_t j
    cdef double s = 0.0
    for j in range(n):
        s += x[j * stride]
    return s


def kl_rows(const floating[:, :, :] p, const floating[:, :, :] q, floating[:, :] out,
            bint validate, int n_threads):
    """out = sum rel_entr(p, q) over axis 1.  p, q: IN; out: OUT.

    Returns (bad_p, bad_q): how many rows of p and of q hold a negative or nan
    entry (0, 0 when validate is False).
    """
    cdef Py_ssize_t n = p.shape[1], n_inner = p.shape[2]
    cdef Py_ssize_t n_rows = p.shape[0] * n_inner
    cdef Py_ssize_t ps = p.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t qs = q.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i, j
    cdef Py_ssize_t bad_p = 0, bad_q = 0
    cdef const floating* pr
    cdef const floating* qr
    cdef double s, pj, qj
    cdef bint row_bad_p, row_bad_q
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        pr = &p[o, 0, i]
        qr = &q[o, 0, i]
        s = 0.0
        row_bad_p = False
        row_bad_q = False
        for j in range(n):
            pj = pr[j * ps]
            qj = qr[j * qs]
            if validate:
                row_bad_p = row_bad_p | (not (pj >= 0))
                row_bad_q = row_bad_q | (not (qj >= 0))
            s = s + rel_entr(pj, qj)
        out[o, i] = <floating>s
        bad_p += row_bad_p
        bad_q += row_bad_q
    return bad_p, bad_q


def entropy_rows(const floating[:, :, :] pk, floating[:, :] out, int n_threads):
    """out = sum entr(pk / sum(pk)) over axis 1 (scipy.stats.entropy).  OUT: out."""
    cdef Py_ssize_t n = pk.shape[1], n_inner = pk.shape[2]
    cdef Py_ssize_t n_rows = pk.shape[0] * n_inner
    cdef Py_ssize_t ps = pk.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i, j
    cdef const floating* pr
    cdef double s, total
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        pr = &pk[o, 0, i]
        total = row_sum(pr, n, ps)
        s = 0.0
        for j in range(n):
            s = s + entr(pr[j * ps] / total)
        out[o, i] = <floating>s


def relative_entropy_rows(const floating[:, :, :] pk, const floating[:, :, :] qk,
                          floating[:, :] out, int n_threads):
    """out = sum rel_entr(pk / sum(pk), qk / sum(qk)) over axis 1.  OUT: out."""
    cdef Py_ssize_t n = pk.shape[1], n_inner = pk.shape[2]
    cdef Py_ssize_t n_rows = pk.shape[0] * n_inner
    cdef Py_ssize_t ps = pk.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t qs = qk.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i, j
    cdef const floating* pr
    cdef const floating* qr
    cdef double s, p_total, q_total
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        pr = &pk[o, 0, i]
        qr = &qk[o, 0, i]
        p_total = row_sum(pr, n, ps)
        q_total = row_sum(qr, n, qs)
        s = 0.0
        for j in range(n):
            s = s + rel_entr(pr[j * ps] / p_total, qr[j * qs] / q_total)
        out[o, i] = <floating>s
