"""Kernels for logsumexp, softmax and log_softmax.

Design
------
Three layers: (1) the row helpers in ``rowops.pxd`` (``noexcept nogil``,
double accumulation), and ``contig_rows`` / ``strided_rows`` of
``rows.pxd`` for rows of up to COL_CONTIG_MAX values (the across-rows
kernels) and for a middle axis (tiles of neighbouring rows), shared with
``fastpath.pyx``, which must give these loops' bits; (2) the loops below, one
row per iteration over a ``(n_outer, n, n_inner)`` view whose middle axis is
the reduced one, so any single axis of a C-ordered array is reached without
a copy; (3) the Python layer
(``lossmle/_special.py``) that validates, picks the dtype and the thread
count, allocates the outputs and calls these loops once.

Every loop here trusts its input: n >= 1, outputs shaped to match, strides in
whole elements.  Rows run under ``prange(schedule='static')`` so a result
never depends on the thread count or on scheduling.

Numerics (in the row helpers): every exp is taken against the row max ``m``;
the ``c`` values equal to ``m`` are kept out of the sum ``s`` of the others,
so ``logsumexp = m + log1p(s / c) + log(c)`` keeps full precision when one
term dominates (Blanchard, Higham & Higham 2021, as scipy.special does);
softmax is ``exp(x - m) / sum``, the division correctly rounded (FMA steps
under Markstein's theorem where they apply; float32 rows in float32, the
nearest float but within ~2^-47 of a tie, see ``lm_divide``); log_softmax is
``(x - m) - log(sum)``, never ``x - logsumexp`` (no cancellation for large
logits).  A contiguous row whose vectorised result is not finite is redone
by the exact scalar code, so nan and +-inf follow one definition.
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.math cimport NAN

from lossmle._kernels.rowops cimport (
    row_logsumexp, row_logsumexp_signed, row_softmax, row_log_softmax,
    simd_init, SHORT_BLOCK, SHORT_LSE, SHORT_SOFTMAX, SHORT_LOG_SOFTMAX,
)
from lossmle._kernels.rows cimport (
    contig_rows, strided_rows, tile_units, middle_axis_c, c_rows, COL_CONTIG_MAX,
)


def _simd_init():
    """(Re)select this module's SIMD variant (reads LOSSMLE_SIMD); returns its name."""
    global SIMD_PATH
    SIMD_PATH = simd_init()
    return SIMD_PATH


SIMD_PATH = _simd_init()


cdef inline bint _across_layout(const floating[:, :, :] x, Py_ssize_t out_row_stride,
                                Py_ssize_t out_stride) noexcept nogil:
    """Contiguous rows of 2..COL_CONTIG_MAX values, the output's rows too:
    contig_rows takes them (the across-rows kernels short_blocks and, up to
    col_contig_max(mode) - the SIMD path's limit, softmax's - col_blocks;
    longer rows row by row there).

    out_row_stride / out_stride: the output's strides (bytes) between rows and
    between a row's values that the kernel would write with.
    """
    cdef Py_ssize_t n = x.shape[1], item = sizeof(floating)
    return (2 <= n <= COL_CONTIG_MAX and x.shape[2] == 1 and x.strides[1] == item
            and (x.shape[0] == 1 or (x.strides[0] == n * item
                                     and out_row_stride == out_stride * n))
            and out_stride == item)


cdef void _across_rows_parallel(const floating[:, :, :] x, floating* out, int mode,
                                int n_threads) noexcept nogil:
    cdef Py_ssize_t n = x.shape[1], n_rows = x.shape[0]
    cdef Py_ssize_t n_blocks = (n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK
    cdef Py_ssize_t blk, start, per_row = 1 if mode == SHORT_LSE else n
    if n_threads == 1 or n_blocks == 1:  # one thread's work: no OpenMP region to start
        contig_rows(&x[0, 0, 0], n_rows, n, mode, out)
    else:
        for blk in prange(n_blocks, schedule='static', num_threads=n_threads):
            start = blk * SHORT_BLOCK
            contig_rows(&x[start, 0, 0], min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n,
                        mode, out + start * per_row)


cdef inline bint _tiled_layout(const floating[:, :, :] x) noexcept nogil:
    """A middle axis of a C-ordered array: the rows go through strided_rows'
    tiles (the caller checks that the output is C-ordered too)."""
    return middle_axis_c(x.shape, x.strides, sizeof(floating))


cdef void _tiles_parallel(const floating[:, :, :] x, floating* out, int mode,
                          int n_threads) noexcept nogil:
    """strided_rows over every tile of x, the tiles split evenly between the
    threads (each thread allocates its buffers once)."""
    cdef Py_ssize_t n = x.shape[1], n_inner = x.shape[2]
    cdef Py_ssize_t n_units = tile_units(x.shape[0], n, n_inner), t, nt
    nt = min(<Py_ssize_t>n_threads, n_units)
    if nt <= 1:  # one thread's work: no OpenMP region to start
        strided_rows(&x[0, 0, 0], n, n_inner, mode, out, 0, n_units)
    else:
        for t in prange(nt, schedule='static', num_threads=nt):
            strided_rows(&x[0, 0, 0], n, n_inner, mode, out, t * n_units // nt,
                         (t + 1) * n_units // nt)


def logsumexp_rows(const floating[:, :, :] a, floating[:, :] out, int n_threads):
    """out[o, i] = logsumexp(a[o, :, i]).  a: IN, out: OUT."""
    cdef Py_ssize_t n_inner = a.shape[2], n = a.shape[1]
    cdef Py_ssize_t n_rows = a.shape[0] * n_inner
    cdef Py_ssize_t stride = a.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    if _across_layout(a, out.strides[0] * n, out.strides[0]):
        with nogil:
            _across_rows_parallel(a, &out[0, 0], SHORT_LSE, n_threads)
        return
    if _tiled_layout(a) and c_rows(out.shape[0], n_inner, out.strides, sizeof(floating)):
        with nogil:
            _tiles_parallel(a, &out[0, 0], SHORT_LSE, n_threads)
        return
    if n_threads == 1:  # one thread's work: no OpenMP region to start
        with nogil:
            for r in range(n_rows):
                o = r // n_inner
                i = r % n_inner
                out[o, i] = <floating>row_logsumexp(&a[o, 0, i], n, stride)
    else:
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
    if n_threads == 1:  # one thread's work: no OpenMP region to start
        with nogil:
            for r in range(n_rows):
                _signed_row(a, b, out, sign, return_sign, r // n_inner,
                            r % n_inner, a_stride, b_stride)
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads,
                        nogil=True):
            _signed_row(a, b, out, sign, return_sign, r // n_inner,
                        r % n_inner, a_stride, b_stride)


cdef inline void _transform_row(const floating[:, :, :] x, floating[:, :, :] out,
                                Py_ssize_t r, bint log_space) noexcept nogil:
    """Row r of softmax_rows (log_space False) or log_softmax_rows (True)."""
    cdef Py_ssize_t n_inner = x.shape[2], o = r // n_inner, i = r % n_inner
    cdef Py_ssize_t xs = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t os = out.strides[1] // <Py_ssize_t>sizeof(floating)
    if log_space:
        row_log_softmax(&x[o, 0, i], xs, &out[o, 0, i], os, x.shape[1])
    else:
        row_softmax(&x[o, 0, i], xs, &out[o, 0, i], os, x.shape[1])


cdef _transform_rows(const floating[:, :, :] x, floating[:, :, :] out, int n_threads,
                     bint log_space):
    cdef Py_ssize_t n_rows = x.shape[0] * x.shape[2], r
    if _across_layout(x, out.strides[0], out.strides[1]):
        with nogil:
            _across_rows_parallel(x, &out[0, 0, 0],
                                  SHORT_LOG_SOFTMAX if log_space else SHORT_SOFTMAX, n_threads)
    elif _tiled_layout(x) and _tiled_layout(out):
        with nogil:
            _tiles_parallel(x, &out[0, 0, 0],
                            SHORT_LOG_SOFTMAX if log_space else SHORT_SOFTMAX, n_threads)
    elif n_threads == 1:  # one thread's work: no OpenMP region to start
        with nogil:
            for r in range(n_rows):
                _transform_row(x, out, r, log_space)
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
            _transform_row(x, out, r, log_space)


def softmax_rows(const floating[:, :, :] x, floating[:, :, :] out, int n_threads):
    """out[o, :, i] = softmax(x[o, :, i]).  x: IN, out: OUT (same shape; may be x)."""
    _transform_rows(x, out, n_threads, False)


def log_softmax_rows(const floating[:, :, :] x, floating[:, :, :] out, int n_threads):
    """out[o, :, i] = log_softmax(x[o, :, i]).  x: IN, out: OUT (same shape; may be x)."""
    _transform_rows(x, out, n_threads, True)
