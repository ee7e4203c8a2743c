"""Fast paths for small, plain inputs of the public functions (issue #4, "Tiny 8x10").

Design
------
A public call on a small array spends far longer in Python than in its
kernel: validation, ``rows_view``'s reshape, ``np.empty``, the fused-type
``def`` dispatch and memoryview acquisition of the kernel cost ~4 us, the
arithmetic of an 8x10 input ~0.1 us.  The functions here take the public
function's raw arguments and handle only the common case, with C-level checks:

* inputs are exact ``np.ndarray`` of float64 or float32 (native byte order,
  aligned) with C strides, 1-D or 2-D, at least one element and fewer than
  ``_validation.PARALLEL_MIN_ELEMENTS`` (so the general path would run them on
  one thread too);
* the reduction is over the last axis (or, where the public default is
  ``axis=None``, over the whole array); every optional argument has its
  default (``out``, ``where``, ``b``, ``weight``, ... are None);
* ``n_threads`` is None or an ``int`` >= 1.

Anything else, and every input that would raise (a class index out of range,
a negative probability under ``validate``), returns None: the public function
then runs its general path unchanged, which computes the result again or
raises its usual error.  Results are bit-identical to the general path: the
loops below run the same row helpers of ``_rowops.pxd`` with the same
dispatch (the across-rows kernel for short rows, the per-row helpers
otherwise) and the same order of summation.  Where a kernel module keeps a
helper private (``cdef`` in its ``.pyx``) it is mirrored here, named after
the original; ``tests/test_fastpath.py`` compares every fast path with the
general path bit for bit, so a kernel change that is not mirrored here fails
there.

Outputs are allocated with ``PyArray_EMPTY`` and 0-d results come back as
numpy scalars (``PyArray_Scalar``), as the general path returns them.  Inputs
are only read.  The GIL is released when the work is large enough to pay for
it (``NOGIL_MIN_ELEMENTS``).
"""
cimport numpy as cnp
from cython cimport floating
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport int64_t
from libc.math cimport exp, log, INFINITY, NAN, isfinite, fabs, copysign
from libc.float cimport DBL_MAX, DBL_MIN

from lossmle._rowops cimport (
    row_logsumexp, row_softmax, row_log_softmax, simd_init, short_rows, fast_max,
    fast_sumexp, lm_kl_d, lm_kl_f, LM_SHORT_MAX, SHORT_BLOCK, SHORT_LSE, SHORT_SOFTMAX,
    SHORT_LOG_SOFTMAX, SHORT_LOGSUM,
)
from lossmle import _validation

cdef extern from "numpy/arrayobject.h":
    # a numpy scalar holding a copy of *data (not declared in numpy's .pxd)
    object PyArray_Scalar(void* data, cnp.dtype descr, object base)

cnp.import_array()


# Bind to lossmle._simd's table.  The binding is to the table's *location*, so
# lossmle._config.reselect_simd() switches this module's variant as well: the
# fast path always runs the variant the kernels run.
simd_init()

# the general path runs smaller inputs on one thread, as every loop here does
cdef Py_ssize_t MAX_ELEMENTS = _validation.PARALLEL_MIN_ELEMENTS
# below this many elements the GIL is kept: releasing it costs more than the work
cdef Py_ssize_t NOGIL_MIN_ELEMENTS = 4096
cdef cnp.dtype F64 = cnp.PyArray_DescrFromType(cnp.NPY_DOUBLE)
cdef cnp.dtype F32 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT)

# The element type of short_rows' `special` flags, exactly as _rowops.pxd
# declares it (the one place to follow a change there).
ctypedef double special_t

cdef enum:
    NOT_MINE = 0
    IS_F64 = 1
    IS_F32 = 2
    CE_BLOCK = 2048     # _loss_kernels.CE_BLOCK


# ---- what is ours: cheap checks on the raw arguments ----

cdef inline bint _threads_ok(object n_threads):
    """None or an int >= 1: what resolve_threads accepts without a word (bool is not)."""
    return n_threads is None or (type(n_threads) is int and n_threads >= 1)


cdef inline int _plain(object x, Py_ssize_t* n_rows, Py_ssize_t* n):
    """IS_F64 / IS_F32 for an exact, native, aligned 1-D or 2-D float ndarray with C
    strides and 1 <= size < MAX_ELEMENTS (n_rows x n: its rows); NOT_MINE otherwise."""
    cdef cnp.ndarray a
    cdef int kind, nd
    cdef Py_ssize_t item
    cdef cnp.npy_intp* shape
    cdef cnp.npy_intp* strides
    if type(x) is not cnp.ndarray:
        return NOT_MINE
    a = <cnp.ndarray>x
    kind = cnp.PyArray_TYPE(a)
    if kind == cnp.NPY_DOUBLE:
        kind, item = IS_F64, 8
    elif kind == cnp.NPY_FLOAT:
        kind, item = IS_F32, 4
    else:
        return NOT_MINE
    if not (cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_ISALIGNED(a)):
        return NOT_MINE
    nd = cnp.PyArray_NDIM(a)
    shape = cnp.PyArray_DIMS(a)
    strides = cnp.PyArray_STRIDES(a)
    if nd == 1:
        n_rows[0] = 1
        n[0] = shape[0]
        if strides[0] != item:
            return NOT_MINE
    elif nd == 2:
        n_rows[0] = shape[0]
        n[0] = shape[1]
        # exactly C strides, even for length-1 axes: then the general path's
        # (n_rows, n, 1) view has them too, and takes the branches taken here
        if strides[1] != item or strides[0] != shape[1] * item:
            return NOT_MINE
    else:
        return NOT_MINE
    if n_rows[0] < 1 or n[0] < 1 or n_rows[0] * n[0] >= MAX_ELEMENTS:
        return NOT_MINE
    return kind


cdef inline bint _last_axis(object axis, int nd):
    """axis is an int naming the last axis."""
    return type(axis) is int and (axis == -1 or axis == nd - 1)


cdef inline object _scalar(void* value, int kind):
    return PyArray_Scalar(value, F64 if kind == IS_F64 else F32, None)


# ---- logsumexp, softmax, log_softmax (as _special_kernels) ----

cdef void _short_block(const floating* x, Py_ssize_t n_rows, Py_ssize_t n, int mode,
                       floating* out) noexcept nogil:
    """_special_kernels._short_block: short rows through the SIMD kernel, nan/inf redone."""
    cdef double res[SHORT_BLOCK]
    cdef special_t special[SHORT_BLOCK]
    cdef Py_ssize_t r
    short_rows(x, n_rows, n, mode, res, out, special)
    for r in range(n_rows):
        if mode == SHORT_LSE:
            out[r] = <floating>(row_logsumexp(x + r * n, n, 1) if special[r] else res[r])
        elif special[r]:
            if mode == SHORT_SOFTMAX:
                row_softmax(x + r * n, 1, out + r * n, 1, n)
            else:
                row_log_softmax(x + r * n, 1, out + r * n, 1, n)


cdef void _rows(const floating* x, Py_ssize_t n_rows, Py_ssize_t n, int mode,
                floating* out) noexcept nogil:
    """mode SHORT_LSE / SHORT_SOFTMAX / SHORT_LOG_SOFTMAX of n_rows contiguous rows,
    dispatched as logsumexp_rows / _transform_rows do with one thread."""
    cdef Py_ssize_t r, blk, start, per_row = 1 if mode == SHORT_LSE else n
    if 2 <= n <= LM_SHORT_MAX:
        for blk in range((n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK):
            start = blk * SHORT_BLOCK
            _short_block(x + start * n, min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n,
                         mode, out + start * per_row)
    elif mode == SHORT_LSE:
        for r in range(n_rows):
            out[r] = <floating>row_logsumexp(x + r * n, n, 1)
    elif mode == SHORT_SOFTMAX:
        for r in range(n_rows):
            row_softmax(x + r * n, 1, out + r * n, 1, n)
    else:
        for r in range(n_rows):
            row_log_softmax(x + r * n, 1, out + r * n, 1, n)


cdef inline void _run_rows(int kind, const void* x, Py_ssize_t n_rows, Py_ssize_t n,
                           int mode, void* out):
    if n_rows * n < NOGIL_MIN_ELEMENTS:
        if kind == IS_F64:
            _rows(<const double*>x, n_rows, n, mode, <double*>out)
        else:
            _rows(<const float*>x, n_rows, n, mode, <float*>out)
    else:
        with nogil:
            if kind == IS_F64:
                _rows(<const double*>x, n_rows, n, mode, <double*>out)
            else:
                _rows(<const float*>x, n_rows, n, mode, <float*>out)


def logsumexp(a, axis, b, keepdims, return_sign, where, out, n_threads):
    """lossmle.logsumexp(a, axis, b, keepdims, return_sign, where=, out=, n_threads=),
    or None when the call is not a plain one (the public function then goes on)."""
    cdef Py_ssize_t n_rows, n
    cdef int kind
    cdef double value[1]   # room for one float64 or float32
    if (b is not None or where is not None or out is not None or keepdims is not False
            or return_sign is not False or not _threads_ok(n_threads)):
        return None
    kind = _plain(a, &n_rows, &n)
    if kind == NOT_MINE:
        return None
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>a)
    if axis is None:            # every axis: one row of all values, a scalar
        n, n_rows = n * n_rows, 1
    elif not _last_axis(axis, nd):
        return None
    if n_rows == 1 and (nd == 1 or axis is None):
        _run_rows(kind, cnp.PyArray_DATA(<cnp.ndarray>a), 1, n, SHORT_LSE, value)
        return _scalar(value, kind)
    res = cnp.PyArray_EMPTY(1, <cnp.npy_intp*>&n_rows, cnp.NPY_DOUBLE if kind == IS_F64 else cnp.NPY_FLOAT, 0)
    _run_rows(kind, cnp.PyArray_DATA(<cnp.ndarray>a), n_rows, n, SHORT_LSE,
              cnp.PyArray_DATA(<cnp.ndarray>res))
    return res


cdef object _transform(object x, object axis, object where, object out, object n_threads,
                       int mode):
    cdef Py_ssize_t n_rows, n
    cdef int kind
    if where is not None or out is not None or not _threads_ok(n_threads):
        return None
    kind = _plain(x, &n_rows, &n)
    if kind == NOT_MINE:
        return None
    cdef cnp.ndarray arr = <cnp.ndarray>x
    if axis is None:            # every axis: the whole array is one row
        n, n_rows = n * n_rows, 1
    elif not _last_axis(axis, cnp.PyArray_NDIM(arr)):
        return None
    res = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(arr), cnp.PyArray_DIMS(arr),
                            cnp.PyArray_TYPE(arr), 0)
    _run_rows(kind, cnp.PyArray_DATA(arr), n_rows, n, mode, cnp.PyArray_DATA(<cnp.ndarray>res))
    return res


def softmax(x, axis, where, out, n_threads):
    """lossmle.softmax(x, axis, where=, out=, n_threads=) or None (not a plain call)."""
    return _transform(x, axis, where, out, n_threads, SHORT_SOFTMAX)


def log_softmax(x, axis, where, out, n_threads):
    """lossmle.log_softmax(x, axis, where=, out=, n_threads=) or None (not a plain call)."""
    return _transform(x, axis, where, out, n_threads, SHORT_LOG_SOFTMAX)


# ---- cross_entropy with class indices (as _loss_kernels, no weight/smoothing) ----

cdef struct RowStats:
    double m            # row max
    double log_s        # log(sum(exp(x - m))); nan marks a row whose loss is nan


cdef inline bint row_stats_fast(const floating* x, Py_ssize_t n, RowStats* st) noexcept nogil:
    """_loss_kernels.row_stats_fast without class weights (want_wx False)."""
    cdef Py_ssize_t b0 = 0, nb
    cdef double m = -INFINITY, s = 0.0, bm
    while b0 < n:
        nb = min(<Py_ssize_t>CE_BLOCK, n - b0)
        bm = fast_max(x + b0, nb)
        if bm > m:
            if m != -INFINITY:
                s = s * exp(m - bm)
            m = bm
        elif bm != bm:
            return False
        s += fast_sumexp(x + b0, nb, m)
        b0 += nb
    if not (isfinite(m) and isfinite(s)):
        return False
    st.m = m
    st.log_s = log(s)
    return True


cdef inline void row_stats(const floating* x, Py_ssize_t n, RowStats* st) noexcept nogil:
    """_loss_kernels.row_stats of a contiguous row without class weights."""
    cdef Py_ssize_t j
    cdef double m = -INFINITY, s = 0.0, v
    cdef bint has_nan = False
    if row_stats_fast(x, n, st):
        return
    for j in range(n):
        v = x[j]
        has_nan = has_nan | (v != v)
        if v > m:
            s = (s * exp(m - v) if m != -INFINITY else 0.0) + 1.0
            m = v
        elif m != -INFINITY:
            s += exp(v - m)
    st.m = m
    st.log_s = NAN if has_nan or not isfinite(m) else log(s)


cdef inline void ce_class_row(const floating* x, Py_ssize_t n, int64_t y,
                              int64_t ignore_index, double* loss,
                              double* row_weight) noexcept nogil:
    """_loss_kernels.ce_class_row with w NULL, no smoothing (keep 1), no gradient."""
    cdef RowStats st
    cdef double keep = 1.0, wy = 1.0
    if y == ignore_index:
        loss[0] = 0.0
        row_weight[0] = 0.0
        return
    row_stats(x, n, &st)
    loss[0] = keep * wy * ((st.m - x[y]) + st.log_s)
    row_weight[0] = wy


cdef void ce_class_short_block(const floating* x, Py_ssize_t n_rows, Py_ssize_t n,
                               const int64_t* y, int64_t ignore_index,
                               double* loss, double* row_weight) noexcept nogil:
    """_loss_kernels.ce_class_short_block with w NULL and no smoothing."""
    cdef double log_s[SHORT_BLOCK]
    cdef special_t special[SHORT_BLOCK]
    cdef Py_ssize_t r, k
    cdef const floating* row
    cdef double m, keep = 1.0, wy = 1.0
    short_rows(x, n_rows, n, SHORT_LOGSUM, log_s, <floating*>NULL, special)
    for r in range(n_rows):
        row = x + r * n
        if special[r] or y[r] == ignore_index:
            ce_class_row(row, n, y[r], ignore_index, loss + r, row_weight + r)
            continue
        m = row[0]
        for k in range(1, n):
            m = row[k] if row[k] > m else m
        loss[r] = keep * wy * ((m - row[y[r]]) + log_s[r])
        row_weight[r] = wy


cdef void ce_class_rows(const floating* x, Py_ssize_t n_rows, Py_ssize_t n,
                        const int64_t* y, int64_t ignore_index, double* loss,
                        double* row_weight) noexcept nogil:
    """cross_entropy_class_rows on one thread (contiguous logits and target, no grad)."""
    cdef Py_ssize_t r, blk, start
    if 2 <= n <= LM_SHORT_MAX:
        for blk in range((n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK):
            start = blk * SHORT_BLOCK
            ce_class_short_block(x + start * n, min(<Py_ssize_t>SHORT_BLOCK, n_rows - start),
                                 n, y + start, ignore_index, loss + start, row_weight + start)
    else:
        for r in range(n_rows):
            ce_class_row(x + r * n, n, y[r], ignore_index, loss + r, row_weight + r)


cdef double pairwise_sum(const double* a, Py_ssize_t n) noexcept nogil:
    """NumPy's pairwise summation (DOUBLE_pairwise_sum, as np.add.reduce of a
    contiguous float64 array runs it), so a reduction here gives its bits."""
    cdef Py_ssize_t i, j, n2
    cdef double res
    cdef double r[8]
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:    # PW_BLOCKSIZE
        for j in range(8):
            r[j] = a[j]
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] += a[i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2)


cdef enum:
    RED_NONE = 0
    RED_MEAN = 1
    RED_SUM = 2
    STACK_ROWS = 256


cdef inline object _float_scalar(double value, int kind):
    """_losses._to_dtype: a numpy scalar; float32 overflow gives inf quietly."""
    cdef float v32
    if kind == IS_F64:
        return PyArray_Scalar(&value, F64, None)
    if fabs(value) >= 3.4028235677973366e38:    # FLT_MAX + half an ulp
        v32 = <float>copysign(INFINITY, value)
    else:
        v32 = <float>value
    return PyArray_Scalar(&v32, F32, None)


def cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                  sample_weight, where, logit_softcap, out, n_threads):
    """lossmle.cross_entropy for 2-D logits and a 1-D int64 class-index target with
    default options, or None when the call is not a plain one (or would raise)."""
    cdef Py_ssize_t n_rows, n, r, i
    cdef int kind, red
    cdef int64_t ignore, y
    cdef cnp.ndarray t
    cdef double loss_stack[STACK_ROWS]
    cdef double weight_stack[STACK_ROWS]
    cdef double* loss
    cdef double* row_weight
    cdef double total, denom, value
    cdef const int64_t* ys
    cdef float* out32
    cdef double* out64
    cdef float out_nan
    if (weight is not None or sample_weight is not None or where is not None
            or logit_softcap is not None or out is not None or not _threads_ok(n_threads)):
        return None
    if not (type(label_smoothing) is float and <double>label_smoothing == 0.0
            or type(label_smoothing) is int and label_smoothing == 0):
        return None
    if type(reduction) is not str:
        return None
    if reduction == "mean":
        red = RED_MEAN
    elif reduction == "sum":
        red = RED_SUM
    elif reduction == "none":
        red = RED_NONE
    else:
        return None
    if type(ignore_index) is not int or not (-0x8000000000000000 <= ignore_index
                                             <= 0x7fffffffffffffff):
        return None
    ignore = ignore_index
    kind = _plain(logits, &n_rows, &n)
    if kind == NOT_MINE or cnp.PyArray_NDIM(<cnp.ndarray>logits) != 2 \
            or not _last_axis(axis, 2):
        return None
    # the target: exact int64 (NPY_LONG or NPY_LONGLONG), native, aligned, contiguous
    if type(target) is not cnp.ndarray:
        return None
    t = <cnp.ndarray>target
    if not ((cnp.PyArray_TYPE(t) == cnp.NPY_LONG or cnp.PyArray_TYPE(t) == cnp.NPY_LONGLONG)
            and cnp.PyArray_ITEMSIZE(t) == 8 and cnp.PyArray_NDIM(t) == 1
            and cnp.PyArray_DIMS(t)[0] == n_rows and cnp.PyArray_STRIDES(t)[0] == 8
            and cnp.PyArray_ISNOTSWAPPED(t) and cnp.PyArray_ISALIGNED(t)):
        return None
    ys = <const int64_t*>cnp.PyArray_DATA(t)
    # _loss_kernels.check_class_indices: a bad index is the general path's IndexError
    for r in range(n_rows):
        y = ys[r]
        if (y < 0 or y >= n) and y != ignore:
            return None
    if n_rows <= STACK_ROWS:
        loss, row_weight = loss_stack, weight_stack
    else:
        loss = <double*>PyMem_Malloc(2 * n_rows * sizeof(double))
        if loss == NULL:
            raise MemoryError()
        row_weight = loss + n_rows
    try:
        if n_rows * n < NOGIL_MIN_ELEMENTS:
            if kind == IS_F64:
                ce_class_rows(<const double*>cnp.PyArray_DATA(<cnp.ndarray>logits), n_rows, n,
                              ys, ignore, loss, row_weight)
            else:
                ce_class_rows(<const float*>cnp.PyArray_DATA(<cnp.ndarray>logits), n_rows, n,
                              ys, ignore, loss, row_weight)
        else:
            with nogil:
                if kind == IS_F64:
                    ce_class_rows(<const double*>cnp.PyArray_DATA(<cnp.ndarray>logits), n_rows,
                                  n, ys, ignore, loss, row_weight)
                else:
                    ce_class_rows(<const float*>cnp.PyArray_DATA(<cnp.ndarray>logits), n_rows,
                                  n, ys, ignore, loss, row_weight)
        if red == RED_NONE:
            # _losses._reduce: the row losses cast to the logits' dtype
            res = cnp.PyArray_EMPTY(1, <cnp.npy_intp*>&n_rows, cnp.NPY_DOUBLE if kind == IS_F64
                                    else cnp.NPY_FLOAT, 0)
            if kind == IS_F64:
                out64 = <double*>cnp.PyArray_DATA(<cnp.ndarray>res)
                for r in range(n_rows):
                    out64[r] = loss[r]
            else:
                out32 = <float*>cnp.PyArray_DATA(<cnp.ndarray>res)
                for r in range(n_rows):
                    out32[r] = <float>loss[r]
            return res
        # float(np.add.reduce(loss)): the identity 0.0 plus the pairwise sum
        total = 0.0 + pairwise_sum(loss, n_rows)
        if total != total:
            # which nan a sum of nans of both signs gives depends on the operand
            # order the compiler picked: leave it to the general path (rare)
            return None
        if red == RED_SUM:
            return _float_scalar(total, kind)
        denom = 0.0 + pairwise_sum(row_weight, n_rows)
        if denom == 0:  # every target ignored: 0/0 = nan, as torch
            value = NAN if total == 0 else copysign(INFINITY, total)
            if kind == IS_F64:
                return PyArray_Scalar(&value, F64, None)
            out_nan = <float>value
            return PyArray_Scalar(&out_nan, F32, None)
        return _float_scalar(total / denom, kind)
    finally:
        if loss != loss_stack:
            PyMem_Free(loss)


# ---- kl_divergence and entropy (as _divergence_kernels) ----

cdef inline double rel_entr(double x, double y) noexcept nogil:
    """_divergence_kernels.rel_entr (scipy.special.rel_entr)."""
    cdef double r
    if x > 0 and y > 0:
        r = x / y
        if r > DBL_MAX or r < DBL_MIN:
            return x * (log(x) - log(y))
        return x * log(r)
    if x == 0 and y >= 0:
        return 0.0
    if x != x or y != y:
        return NAN
    return INFINITY


cdef inline double entr(double x) noexcept nogil:
    """_divergence_kernels.entr (scipy.special.entr)."""
    if x > 0:
        return -x * log(x)
    if x == 0:
        return 0.0
    if x != x:
        return NAN
    return -INFINITY


cdef inline bint kl_row(const floating* p, const floating* q, Py_ssize_t n, bint validate,
                        floating* out) noexcept nogil:
    """_divergence_kernels.kl_row of contiguous rows: True for a bad (negative/nan) row."""
    cdef Py_ssize_t j
    cdef double s = 0.0, pj, qj, n_special = 1.0
    cdef bint bad_p = False, bad_q = False
    if floating is double:
        s = lm_kl_d(p, q, n, &n_special)
    else:
        s = lm_kl_f(p, q, n, &n_special)
    if n_special == 0:
        out[0] = <floating>s
        return False
    s = 0.0
    for j in range(n):
        pj = p[j]
        qj = q[j]
        if validate:
            bad_p = bad_p | (not (pj >= 0))
            bad_q = bad_q | (not (qj >= 0))
        s += rel_entr(pj, qj)
    out[0] = <floating>s
    return bad_p or bad_q


cdef Py_ssize_t kl_rows(const floating* p, const floating* q, Py_ssize_t n_rows,
                        Py_ssize_t n, bint validate, floating* out) noexcept nogil:
    cdef Py_ssize_t r, bad_rows = 0
    for r in range(n_rows):
        bad_rows += kl_row(p + r * n, q + r * n, n, validate, out + r)
    return bad_rows


def kl_divergence(p, q, axis, base, keepdims, validate, out, n_threads):
    """lossmle.kl_divergence for equally shaped plain p and q over the last axis,
    or None when the call is not a plain one (or p or q is invalid under validate)."""
    cdef Py_ssize_t n_rows, n, q_rows, q_n, bad
    cdef int kind
    cdef double value[1]
    cdef void* res_data
    cdef bint check = validate is True
    if (base is not None or keepdims is not False or out is not None
            or not (validate is True or validate is False) or not _threads_ok(n_threads)):
        return None
    kind = _plain(p, &n_rows, &n)
    if kind == NOT_MINE or _plain(q, &q_rows, &q_n) != kind:
        return None
    cdef cnp.ndarray pa = <cnp.ndarray>p, qa = <cnp.ndarray>q
    cdef int nd = cnp.PyArray_NDIM(pa)
    if cnp.PyArray_NDIM(qa) != nd or q_rows != n_rows or q_n != n:
        return None
    if axis is None:
        n, n_rows = n * n_rows, 1
    elif not _last_axis(axis, nd):
        return None
    scalar = nd == 1 or axis is None
    if scalar:
        res = None
        res_data = value
    else:
        res = cnp.PyArray_EMPTY(1, <cnp.npy_intp*>&n_rows, cnp.NPY_DOUBLE if kind == IS_F64
                                else cnp.NPY_FLOAT, 0)
        res_data = cnp.PyArray_DATA(<cnp.ndarray>res)
    if n_rows * n < NOGIL_MIN_ELEMENTS:
        if kind == IS_F64:
            bad = kl_rows(<const double*>cnp.PyArray_DATA(pa), <const double*>cnp.PyArray_DATA(qa),
                          n_rows, n, check, <double*>res_data)
        else:
            bad = kl_rows(<const float*>cnp.PyArray_DATA(pa), <const float*>cnp.PyArray_DATA(qa),
                          n_rows, n, check, <float*>res_data)
    else:
        with nogil:
            if kind == IS_F64:
                bad = kl_rows(<const double*>cnp.PyArray_DATA(pa),
                              <const double*>cnp.PyArray_DATA(qa), n_rows, n, check,
                              <double*>res_data)
            else:
                bad = kl_rows(<const float*>cnp.PyArray_DATA(pa),
                              <const float*>cnp.PyArray_DATA(qa), n_rows, n, check,
                              <float*>res_data)
    if bad:
        return None     # the general path names the argument in its ValueError
    return _scalar(value, kind) if scalar else res


cdef inline double entropy_row(const floating* p, Py_ssize_t ps, Py_ssize_t n) noexcept nogil:
    """_divergence_kernels.entropy_row without qk: sum entr(p / sum(p))."""
    cdef Py_ssize_t j
    cdef double s = 0.0, p_total = 0.0
    for j in range(n):      # _divergence_kernels.row_sum
        p_total += p[j * ps]
    for j in range(n):
        s += entr(p[j * ps] / p_total)
    return s


cdef void entropy_rows(const floating* p, Py_ssize_t n_rows, Py_ssize_t n, bint columns,
                       floating* out) noexcept nogil:
    """Row sums (columns False), or over axis 0 of the n_rows x n array (columns True)."""
    cdef Py_ssize_t r
    if columns:
        for r in range(n):
            out[r] = <floating>entropy_row(p + r, n, n_rows)
    else:
        for r in range(n_rows):
            out[r] = <floating>entropy_row(p + r * n, 1, n)


def entropy(pk, qk, base, axis, keepdims, out, n_threads):
    """lossmle.entropy(pk) of a plain pk over one axis, or None (not a plain call)."""
    cdef Py_ssize_t n_rows, n, n_out
    cdef int kind
    cdef bint columns = False
    cdef double value[1]
    cdef void* res_data
    if (qk is not None or base is not None or keepdims is not False or out is not None
            or not _threads_ok(n_threads)):
        return None
    kind = _plain(pk, &n_rows, &n)
    if kind == NOT_MINE:
        return None
    cdef cnp.ndarray pa = <cnp.ndarray>pk
    cdef int nd = cnp.PyArray_NDIM(pa)
    if axis is None:
        n, n_rows = n * n_rows, 1
    elif nd == 2 and type(axis) is int and (axis == 0 or axis == -2):
        columns = True      # scipy.stats.entropy's default axis
    elif not _last_axis(axis, nd):
        return None
    n_out = n if columns else n_rows
    scalar = nd == 1 or axis is None
    if scalar:
        res = None
        res_data = value
    else:
        res = cnp.PyArray_EMPTY(1, <cnp.npy_intp*>&n_out, cnp.NPY_DOUBLE if kind == IS_F64
                                else cnp.NPY_FLOAT, 0)
        res_data = cnp.PyArray_DATA(<cnp.ndarray>res)
    if n_rows * n < NOGIL_MIN_ELEMENTS:
        if kind == IS_F64:
            entropy_rows(<const double*>cnp.PyArray_DATA(pa), n_rows, n, columns,
                         <double*>res_data)
        else:
            entropy_rows(<const float*>cnp.PyArray_DATA(pa), n_rows, n, columns,
                         <float*>res_data)
    else:
        with nogil:
            if kind == IS_F64:
                entropy_rows(<const double*>cnp.PyArray_DATA(pa), n_rows, n, columns,
                             <double*>res_data)
            else:
                entropy_rows(<const float*>cnp.PyArray_DATA(pa), n_rows, n, columns,
                             <float*>res_data)
    return _scalar(value, kind) if scalar else res
