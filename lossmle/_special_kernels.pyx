"""Kernels for logsumexp, softmax and log_softmax.

Design
------
Three layers: (1) the row helpers in ``_rowops.pxd`` (``noexcept nogil``,
double accumulation); (2) the loops below, one row per iteration over a
``(n_outer, n, n_inner)`` view whose middle axis is the reduced one, so any
single axis of a C-ordered array is reached without a copy; (3) the Python
layer (``lossmle/_special.py``) that validates, picks the dtype and the
thread count, allocates the outputs and calls these loops once.

Every loop here trusts its input: n >= 1, outputs shaped to match, strides in
whole elements.  Rows run under ``prange(schedule='static')`` so a result
never depends on the thread count or on scheduling.
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.math cimport NAN

from lossmle._rowops cimport (
    row_logsumexp, row_logsumexp_signed, row_softmax, row_log_softmax,
)


def logsumexp_rows(const floating[:, :, :] a, floating[:, :] out, int n_threads):
    """out[o, i] = logsumexp(a[o, :, i]).  a: IN, out: OUT."""
    cdef Py_ssize_t n_inner = a.shape[2], n = a.shape[1]
    cdef Py_ssize_t n_rows = a.shape[0] * n_inner
    cdef Py_ssize_t stride = a.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    for r in prange(n_rows, schedule='static', num_threads=n_threads,
                    nogil=True):
        o = r // n_inner
        i = r % n_inner
        out[o, i] = <floating>row_logsumexp(&a[o, 0, i], n, stride)


cdef inline void _signed_row(const floating[:, :, :] a, const floating[:, :, :] b,
                             floating[:, :] out, floating[:, :] sign,
                             bint return_sign, Py_ssize_t o, Py_ssize_t i,
                             Py_ssize_t a_stride, Py_ssize_t b_stride) noexcept nogil:
    cdef double sgn
    cdef double res = row_logsumexp_signed(&a[o, 0, i], a_stride, &b[o, 0, i],
                                           b_stride, a.shape[1], &sgn)
    if return_sign:
        sign[o, i] = <floating>sgn
    elif not (sgn >= 0):
        res = NAN  # scipy: a negative (or nan) sum has no real logarithm
    out[o, i] = <floating>res


def logsumexp_signed_rows(const floating[:, :, :] a, const floating[:, :, :] b,
                          floating[:, :] out, floating[:, :] sign,
                          bint return_sign, int n_threads):
    """out = log|sum(b * exp(a))| per row, sign = its sign.  a, b: IN; out, sign: OUT.

    Without return_sign a negative sum gives nan (sign is not written).
    """
    cdef Py_ssize_t n_inner = a.shape[2]
    cdef Py_ssize_t n_rows = a.shape[0] * n_inner
    cdef Py_ssize_t a_stride = a.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t b_stride = b.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r
    for r in prange(n_rows, schedule='static', num_threads=n_threads,
                    nogil=True):
        _signed_row(a, b, out, sign, return_sign, r // n_inner,
                    r % n_inner, a_stride, b_stride)


def softmax_rows(const floating[:, :, :] x, floating[:, :, :] out, int n_threads):
    """out[o, :, i] = softmax(x[o, :, i]).  x: IN, out: OUT (same shape)."""
    cdef Py_ssize_t n_inner = x.shape[2], n = x.shape[1]
    cdef Py_ssize_t n_rows = x.shape[0] * n_inner
    cdef Py_ssize_t xs = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t os = out.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    for r in prange(n_rows, schedule='static', num_threads=n_threads,
                    nogil=True):
        o = r // n_inner
        i = r % n_inner
        row_softmax(&x[o, 0, i], xs, &out[o, 0, i], os, n)


def log_softmax_rows(const floating[:, :, :] x, floating[:, :, :] out, int n_threads):
    """out[o, :, i] = log_softmax(x[o, :, i]).  x: IN, out: OUT (same shape)."""
    cdef Py_ssize_t n_inner = x.shape[2], n = x.shape[1]
    cdef Py_ssize_t n_rows = x.shape[0] * n_inner
    cdef Py_ssize_t xs = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t os = out.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    for r in prange(n_rows, schedule='static', num_threads=n_threads,
                    nogil=True):
        o = r // n_inner
        i = r % n_inner
        row_log_softmax(&x[o, 0, i], xs, &out[o, 0, i], os, n)
