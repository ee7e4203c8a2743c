"""Kernels for the streaming log-sum-exp state (``lossmle/_streaming.py``).

Design
------
The state of a row is three doubles over the terms merged so far: ``m``,
their running maximum; ``c``, how many of them equal ``m``; ``s``, the sum of
``exp(t - m)`` over the other terms ``t``.  Its log-sum-exp is
``log1p(s / c) + log(c) + m``, the formula of the one-shot ``row_logsumexp``
(the maximal terms are kept out of ``s``, which keeps full precision when one
term dominates; Blanchard, Higham & Higham 2021).

Two states merge by moving to the larger maximum ``M``: the terms of the
state whose maximum was below ``M`` all fall below it, so
``s = s_hi + (s_lo + c_lo) * exp(m_lo - M)`` and ``c = c_hi``; with equal
maxima the counts and the sums add.  A chunk row is first reduced to its own
log-sum-exp ``l`` by the shared ``row_logsumexp`` (exact formula above; its
vectorised path on contiguous rows) and enters as one term, ``(l, 1, 0)``:
the log-sum-exp of the union is the log-sum-exp of the parts' log-sum-exps,
and the precision of a dominant term survives because ``l`` itself keeps it.
So the terms of a state are its chunks' log-sum-exps (``m`` is the largest
of them), one chunk gives exactly the one-shot ``row_logsumexp`` and several
chunks differ from it only by the rounding of the rescalings.

Special values follow scipy.special.logsumexp: a nan anywhere makes the row
nan for good (``m = nan`` is sticky); ``m = +inf`` gives +inf; a row of only
-inf (or no terms at all: the initial state ``m = -inf, c = 0, s = 0``)
gives -inf.  When ``m`` is not finite, ``c`` and ``s`` are never read.

Layout: a chunk is an ``(n_outer, n, n_inner)`` view reduced over its middle
axis (``_validation.rows_view``); the state arrays are flat, row
``r = o * n_inner + i`` (the C order of the row shape).  Layers: the
Python state object (``_streaming.py``) -> ``update_rows`` (a nogil
``prange(schedule='static')`` over rows, so the state never depends on the
thread count), ``merge_rows`` and ``result_rows`` (serial nogil loops) ->
``row_logsumexp`` of ``rowops.pxd`` and the inline ``merge_one``.
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.math cimport exp, log, log1p, isfinite, NAN

from lossmle._kernels.rowops cimport row_logsumexp, simd_init


def _simd_init():
    """(Re)select this module's SIMD variant (reads LOSSMLE_SIMD); returns its name."""
    return simd_init()


_simd_init()  # row_logsumexp's vectorised path: the CPU's best variant


cdef inline void merge_one(double* m, double* c, double* s,
                           double m2, double c2, double s2) noexcept nogil:
    """(m, c, s) <- merge of (m, c, s) and (m2, c2, s2).  m, c, s: IN/OUT."""
    if m[0] != m[0]:
        return                      # nan is sticky
    if m2 != m2:
        m[0] = NAN
        return
    if m2 == m[0]:                  # equal maxima (also both +-inf)
        c[0] += c2
        s[0] += s2
    elif m2 > m[0]:
        if isfinite(m[0]):          # the old terms now all lie below m2
            s[0] = s2 + (s[0] + c[0]) * exp(m[0] - m2)
        else:                       # m == -inf: nothing (of weight) seen yet
            s[0] = s2
        c[0] = c2
        m[0] = m2
    elif isfinite(m2):              # m2 < m: the new terms lie below m
        s[0] += (s2 + c2) * exp(m2 - m[0])
    # else m2 == -inf < m: a chunk of -inf adds nothing


def update_rows(const floating[:, :, :] x, double[::1] m, double[::1] c,
                double[::1] s, int n_threads):
    """Merge every row of the chunk x into the state.  x: IN; m, c, s: IN/OUT.

    x has n >= 1 values per row; the state has n_outer * n_inner rows.
    """
    cdef Py_ssize_t n = x.shape[1], n_inner = x.shape[2]
    cdef Py_ssize_t n_rows = x.shape[0] * n_inner
    cdef Py_ssize_t stride = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r
    cdef double lse
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        lse = row_logsumexp(&x[r // n_inner, 0, r % n_inner], n, stride)
        merge_one(&m[r], &c[r], &s[r], lse, 1.0, 0.0)


def merge_rows(double[::1] m, double[::1] c, double[::1] s,
               const double[::1] m2, const double[::1] c2, const double[::1] s2):
    """(m, c, s) <- merge with (m2, c2, s2), row by row.  m, c, s: IN/OUT."""
    cdef Py_ssize_t r
    with nogil:
        for r in range(m.shape[0]):
            merge_one(&m[r], &c[r], &s[r], m2[r], c2[r], s2[r])


def result_rows(const double[::1] m, const double[::1] c, const double[::1] s,
                double[::1] out):
    """out = log1p(s / c) + log(c) + m (m where m is not finite).  OUT: out."""
    cdef Py_ssize_t r
    with nogil:
        for r in range(m.shape[0]):
            if isfinite(m[r]):
                out[r] = log1p(s[r] / c[r]) + log(c[r]) + m[r]
            else:
                out[r] = m[r]
