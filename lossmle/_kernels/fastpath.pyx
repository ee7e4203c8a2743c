"""Fast paths for small, plain inputs of the public functions (issue #4, "Tiny 8x10").

Design
------
A public call on a small array spends far longer in Python than in its
kernel: validation, ``rows_view``'s reshape, ``np.empty``, the fused-type
``def`` dispatch and memoryview acquisition of the kernel cost many times
the arithmetic of an 8x10 input.  The functions here take the public
function's raw arguments and handle only the common case, with C-level checks:

* inputs are exact ``np.ndarray`` of float64 or float32 (native byte order,
  aligned) with C strides, 1-D or 2-D (any number of dimensions, reduced
  over any one axis, for logsumexp, softmax and log_softmax), at least one
  element and fewer than
  ``PARALLEL_MIN_ELEMENTS`` of parallel.pyx (so the general path would run them on
  one thread too);
* the reduction is over the last axis (or, where the public default is
  ``axis=None``, over the whole array); every optional argument has its
  default (``out``, ``where``, ``b``, ... are None), but for cross-entropy's
  class ``weight`` (an exact contiguous float64 vector) and
  ``label_smoothing`` (a Python float in [0, 1]), logsumexp's
  ``keepdims``, and softmax's / log_softmax's ``out`` when it is an exact
  writeable array of the input's dtype, shape and strides that is the input
  itself or shares no memory with it (``_plain_out``);
* ``n_threads`` is None or an ``int`` in 1 .. ``MAX_THREADS``.

Anything else, and every input that would raise (a class index out of range,
a negative probability under ``validate``), returns None: the public function
then runs its general path unchanged, which computes the result again or
raises its usual error.  Results are bit-identical to the general path: the
loops below run the general path's own row helpers - those of ``rowops.pxd``
and the kernel modules' block/row helpers of ``rows.pxd``, ``loss_rows.pxd``
and ``divergence_rows.pxd`` (one definition, cimported by both) - with the same dispatch (the across-rows
kernel for short rows, the per-row helpers otherwise) and the same order of
summation, ``blocked_sum`` for the loss reductions included.  What is left
here is that dispatch for one thread and contiguous rows;
``tests/test_kernel_paths_fastpath.py`` compares every fast path with the general path bit
for bit, so a change of the kernels' dispatch not followed here fails there.

Outputs are allocated with ``PyArray_EMPTY`` (softmax / log_softmax write
into a plain ``out=`` instead) and 0-d results come back as numpy scalars
(``PyArray_Scalar``), as the general path returns them.  Inputs are only
read, but for ``out=x`` (in place).  The GIL is released when the work is
large enough to pay for it (``NOGIL_MIN_ELEMENTS``).
"""
cimport numpy as cnp
from cython cimport floating
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport int64_t
from libc.math cimport INFINITY, NAN, fabs, copysign

from lossmle._kernels.rowops cimport (
    simd_init, lm_simd_ready, LM_SHORT_MAX, SHORT_BLOCK, SHORT_LSE, SHORT_SOFTMAX,
    SHORT_LOG_SOFTMAX,
)
from lossmle._kernels.rows cimport contig_rows, strided_rows, tile_units
from lossmle._kernels.loss_rows cimport (
    ClassOpts, ce_class_row, ce_class_contig_rows, ce_prob_row, ce_prob_short_block,
    blocked_sum, pairwise_sum, nll_pick,
)
from lossmle._kernels.divergence_rows cimport (
    kl_row, entropy_row, kl_contig_rows, entropy_contig_rows, divergence_strided_rows,
    DIV_ENTR,
)
from lossmle._kernels import parallel as _parallel

cdef extern from "numpy/arrayobject.h":
    # a numpy scalar holding a copy of *data (not declared in numpy's .pxd)
    object PyArray_Scalar(void* data, cnp.dtype descr, object base)

cnp.import_array()


# Bind to lossmle._kernels.simd's table.  The binding is to the table's *location*, so
# lossmle._cli.config.reselect_simd() switches this module's variant as well: the
# fast path always runs the variant the kernels run.
simd_init()

# the general path runs smaller inputs on one thread, as every loop here does
cdef Py_ssize_t MAX_ELEMENTS = _parallel.PARALLEL_MIN_ELEMENTS
# below this many elements the GIL is kept: releasing it costs more than the work
cdef Py_ssize_t NOGIL_MIN_ELEMENTS = 4096
cdef cnp.dtype F64 = cnp.PyArray_DescrFromType(cnp.NPY_DOUBLE)
cdef cnp.dtype F32 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT)

cdef enum:
    NOT_MINE = 0
    IS_F64 = 1
    IS_F32 = 2


# ---- what is ours: cheap checks on the raw arguments ----

cdef object _MAX_THREADS = _parallel.MAX_THREADS


cdef inline bint _threads_ok(object n_threads):
    """None or an int in 1 .. MAX_THREADS: what resolve_threads accepts without
    a word (bool is not)."""
    return n_threads is None or (type(n_threads) is int and 1 <= n_threads <= _MAX_THREADS)


cdef inline int _float_kind(cnp.ndarray a, Py_ssize_t* item):
    """IS_F64 / IS_F32 (item: the element size) for a native, aligned float64 /
    float32 array; NOT_MINE otherwise."""
    cdef int kind = cnp.PyArray_TYPE(a)
    if kind == cnp.NPY_DOUBLE:
        kind, item[0] = IS_F64, 8
    elif kind == cnp.NPY_FLOAT:
        kind, item[0] = IS_F32, 4
    else:
        return NOT_MINE
    if not (cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_ISALIGNED(a)):
        return NOT_MINE
    return kind


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
    kind = _float_kind(a, &item)
    if kind == NOT_MINE:
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


cdef inline int _plain_nd(object x):
    """_plain's checks for any number of dimensions (logsumexp, softmax,
    log_softmax; _one_axis then splits the array into rows): every axis,
    length-1 ones included, has exactly C strides, so rows_view's reshape in
    the general path has them too."""
    cdef cnp.ndarray a
    cdef int kind, nd, i
    cdef Py_ssize_t item, expected, n_rows, n
    cdef cnp.npy_intp* shape
    cdef cnp.npy_intp* strides
    if type(x) is not cnp.ndarray:
        return NOT_MINE
    a = <cnp.ndarray>x
    nd = cnp.PyArray_NDIM(a)
    if nd <= 2:
        return _plain(x, &n_rows, &n)
    kind = _float_kind(a, &item)
    if kind == NOT_MINE:
        return NOT_MINE
    shape = cnp.PyArray_DIMS(a)
    strides = cnp.PyArray_STRIDES(a)
    expected = item
    for i in range(nd - 1, -1, -1):
        if shape[i] < 1 or strides[i] != expected:
            return NOT_MINE
        expected *= shape[i]
        if expected >= MAX_ELEMENTS * item:   # too large (and no overflow on the way)
            return NOT_MINE
    return kind


cdef inline bint _last_axis(object axis, int nd):
    """axis is an int naming the last axis."""
    return type(axis) is int and (axis == -1 or axis == nd - 1)


cdef inline int _one_axis(cnp.ndarray a, object axis, Py_ssize_t* outer, Py_ssize_t* n,
                          Py_ssize_t* inner):
    """The reduced axis of a _plain_nd array: None (every axis: one row of all
    values) gives -1; a Python int naming one axis (negative from the end) gives
    it, with the array as rows (outer, n, inner) - rows_view's reshape, strided
    by inner; anything else (a tuple, a numpy int, out of range) -2: the
    general path decides, its errors included."""
    cdef int nd = cnp.PyArray_NDIM(a), ax, i
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(a)
    outer[0] = 1
    inner[0] = 1
    if axis is None:
        n[0] = cnp.PyArray_SIZE(a)
        return -1
    if type(axis) is not int or not (-nd <= axis < nd):
        return -2
    ax = axis + nd if axis < 0 else axis
    for i in range(ax):
        outer[0] *= shape[i]
    n[0] = shape[ax]
    for i in range(ax + 1, nd):
        inner[0] *= shape[i]
    return ax


cdef inline object _scalar(void* value, int kind):
    return PyArray_Scalar(value, F64 if kind == IS_F64 else F32, None)


cdef inline cnp.ndarray _vector(Py_ssize_t n, int kind):
    """A new 1-D float64 (IS_F64) or float32 array of n values."""
    return cnp.PyArray_EMPTY(1, <cnp.npy_intp*>&n, cnp.NPY_DOUBLE if kind == IS_F64
                             else cnp.NPY_FLOAT, 0)


# ---- logsumexp, softmax, log_softmax (as special) ----

cdef void _rows(const floating* x, Py_ssize_t n_rows, Py_ssize_t n, Py_ssize_t inner,
                int mode, floating* out) noexcept nogil:
    """mode SHORT_LSE / SHORT_SOFTMAX / SHORT_LOG_SOFTMAX of the rows of an
    (n_rows, n, inner) C-ordered array (rows strided by inner), dispatched as
    logsumexp_rows / _transform_rows do with one thread."""
    if inner > 1:   # a middle axis: gathered a tile of rows at a time
        strided_rows(x, n, inner, mode, out, 0, tile_units(n_rows, n, inner))
    else:
        contig_rows(x, n_rows, n, mode, out)


cdef inline void _rows_of(int kind, const void* x, Py_ssize_t n_rows, Py_ssize_t n,
                          Py_ssize_t inner, int mode, void* out) noexcept nogil:
    if kind == IS_F64:
        _rows(<const double*>x, n_rows, n, inner, mode, <double*>out)
    else:
        _rows(<const float*>x, n_rows, n, inner, mode, <float*>out)


cdef inline void _run_rows(int kind, const void* x, Py_ssize_t n_rows, Py_ssize_t n,
                           Py_ssize_t inner, int mode, void* out):
    if n_rows * n * inner < NOGIL_MIN_ELEMENTS:
        _rows_of(kind, x, n_rows, n, inner, mode, out)
    else:
        with nogil:
            _rows_of(kind, x, n_rows, n, inner, mode, out)


def logsumexp(a, axis, b, keepdims, return_sign, where, out, n_threads):
    """lossmle.logsumexp(a, axis, b, keepdims, return_sign, where=, out=, n_threads=),
    or None when the call is not a plain one (the public function then goes on)."""
    cdef Py_ssize_t n, outer, inner
    cdef int kind, i, nd_out, ax
    cdef double value[1]   # room for one float64 or float32
    cdef cnp.npy_intp dims[cnp.NPY_MAXDIMS]
    if (b is not None or where is not None or out is not None
            or not (keepdims is False or keepdims is True)
            or return_sign is not False or not _threads_ok(n_threads)):
        return None
    kind = _plain_nd(a)
    if kind == NOT_MINE:
        return None
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>a)
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(<cnp.ndarray>a)
    ax = _one_axis(<cnp.ndarray>a, axis, &outer, &n, &inner)
    if ax == -2:
        return None
    if keepdims is False and (nd == 1 or ax == -1):    # a scalar
        _run_rows(kind, cnp.PyArray_DATA(<cnp.ndarray>a), 1, n, 1, SHORT_LSE, value)
        return _scalar(value, kind)
    # the input's shape less the reduced axes, or with them as 1 (keepdims)
    nd_out = 0
    for i in range(nd):
        if ax == -1 or i == ax:
            if keepdims is True:
                dims[nd_out] = 1
                nd_out += 1
        else:
            dims[nd_out] = shape[i]
            nd_out += 1
    res = cnp.PyArray_EMPTY(nd_out, dims, cnp.NPY_DOUBLE if kind == IS_F64
                            else cnp.NPY_FLOAT, 0)
    _run_rows(kind, cnp.PyArray_DATA(<cnp.ndarray>a), outer, n, inner, SHORT_LSE,
              cnp.PyArray_DATA(<cnp.ndarray>res))
    return res


cdef bint _plain_out(object out, cnp.ndarray x):
    """``out=`` of softmax / log_softmax as the fast path takes it: an exact,
    writeable ndarray of x's dtype, shape and (C) strides - so the general
    path would write straight into it too - that is x itself (in place) or
    shares no byte with it.  Anything else (a view overlapping x, another
    layout, shape or dtype, read-only) is the general path's: it checks
    ``out`` and raises its errors."""
    cdef cnp.ndarray o
    cdef int nd = cnp.PyArray_NDIM(x), i
    cdef char* lo
    cdef char* xlo
    cdef Py_ssize_t nbytes
    if type(out) is not cnp.ndarray:
        return False
    o = <cnp.ndarray>out
    if (cnp.PyArray_TYPE(o) != cnp.PyArray_TYPE(x) or cnp.PyArray_NDIM(o) != nd
            or not (cnp.PyArray_ISNOTSWAPPED(o) and cnp.PyArray_ISALIGNED(o)
                    and cnp.PyArray_ISWRITEABLE(o))):
        return False
    for i in range(nd):
        if (cnp.PyArray_DIMS(o)[i] != cnp.PyArray_DIMS(x)[i]
                or cnp.PyArray_STRIDES(o)[i] != cnp.PyArray_STRIDES(x)[i]):
            return False
    if o is x:
        return True
    # both are C-contiguous blocks of nbytes: apart, or the general path decides
    lo = <char*>cnp.PyArray_DATA(o)
    xlo = <char*>cnp.PyArray_DATA(x)
    nbytes = cnp.PyArray_NBYTES(x)
    return lo + nbytes <= xlo or xlo + nbytes <= lo


cdef object _transform(object x, object axis, object where, object out, object n_threads,
                       int mode):
    cdef Py_ssize_t n, outer, inner
    cdef int kind
    if where is not None or not _threads_ok(n_threads):
        return None
    kind = _plain_nd(x)
    if kind == NOT_MINE:
        return None
    cdef cnp.ndarray arr = <cnp.ndarray>x
    if out is not None and not _plain_out(out, arr):
        return None
    if _one_axis(arr, axis, &outer, &n, &inner) == -2:
        return None
    if out is not None:
        res = out
    else:
        res = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(arr), cnp.PyArray_DIMS(arr),
                                cnp.PyArray_TYPE(arr), 0)
    _run_rows(kind, cnp.PyArray_DATA(arr), outer, n, inner, mode,
              cnp.PyArray_DATA(<cnp.ndarray>res))
    return res


def softmax(x, axis, where, out, n_threads):
    """lossmle.softmax(x, axis, where=, out=, n_threads=) or None (not a plain call)."""
    return _transform(x, axis, where, out, n_threads, SHORT_SOFTMAX)


def log_softmax(x, axis, where, out, n_threads):
    """lossmle.log_softmax(x, axis, where=, out=, n_threads=) or None (not a plain call)."""
    return _transform(x, axis, where, out, n_threads, SHORT_LOG_SOFTMAX)


# ---- cross_entropy (and with its gradient), as losses ----

cdef inline void _ce_prob_rows_of(int kind, const void* x, const void* t, Py_ssize_t n_rows,
                                  Py_ssize_t n, const ClassOpts* op, double* loss,
                                  void* g) noexcept nogil:
    if kind == IS_F64:
        ce_prob_rows(<const double*>x, <const double*>t, n_rows, n, op, loss, <double*>g)
    else:
        ce_prob_rows(<const float*>x, <const float*>t, n_rows, n, op, loss, <float*>g)


cdef void nll_rows(const floating* x, Py_ssize_t n_rows, Py_ssize_t n, const int64_t* y,
                   const ClassOpts* op, double* loss, double* row_weight) noexcept nogil:
    """losses.nll_rows over contiguous rows (the same nll_pick)."""
    cdef Py_ssize_t r
    for r in range(n_rows):
        nll_pick(x + r * n, 1, y[r], op.w, op.ignore_index, loss + r, row_weight + r)


cdef inline void _nll_rows_of(int kind, const void* x, Py_ssize_t n_rows, Py_ssize_t n,
                              const int64_t* y, const ClassOpts* op, double* loss,
                              double* row_weight) noexcept nogil:
    if kind == IS_F64:
        nll_rows(<const double*>x, n_rows, n, y, op, loss, row_weight)
    else:
        nll_rows(<const float*>x, n_rows, n, y, op, loss, row_weight)


cdef inline void _ce_rows_of(int kind, const void* x, Py_ssize_t n_rows, Py_ssize_t n,
                             const int64_t* y, const ClassOpts* op, double* loss,
                             double* row_weight, void* g) noexcept nogil:
    if kind == IS_F64:
        ce_class_contig_rows(<const double*>x, n_rows, n, y, op, loss, row_weight,
                             <double*>g)
    else:
        ce_class_contig_rows(<const float*>x, n_rows, n, y, op, loss, row_weight,
                             <float*>g)


cdef void ce_prob_rows(const floating* x, const floating* t, Py_ssize_t n_rows,
                       Py_ssize_t n, const ClassOpts* op, double* loss,
                       floating* g) noexcept nogil:
    """cross_entropy_prob_rows on one thread (contiguous logits and probabilities
    of one dtype; op's w, keep, spread and grad_scale); g (contiguous like x)
    NULL: no gradient."""
    cdef Py_ssize_t r, start
    if g != NULL:   # with the gradient every row is a ce_prob_row, as there
        for r in range(n_rows):
            ce_prob_row(x + r * n, n, 1, t + r * n, 1, op.w, op.keep, op.spread,
                        op.grad_scale, g + r * n, 1, loss + r)
    elif 2 <= n <= LM_SHORT_MAX:
        start = 0
        while start < n_rows:   # losses' block loop
            ce_prob_short_block(x + start * n, t + start * n,
                                min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n, op.w,
                                op.keep, op.spread, loss + start)
            start += SHORT_BLOCK
    else:
        for r in range(n_rows):
            ce_prob_row(x + r * n, n, 1, t + r * n, 1, op.w, op.keep, op.spread, 0.0,
                        <floating*>NULL, 0, loss + r)


cdef enum:
    RED_NONE = 0
    RED_MEAN = 1
    RED_SUM = 2
    STACK_ROWS = 256
    # block totals of blocked_sum: rows < MAX_ELEMENTS = 2^17, 256 per block
    STACK_BLOCKS = 512


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


cdef struct CeCall:
    int kind            # IS_F64 / IS_F32
    int red             # RED_*
    int64_t ignore
    Py_ssize_t n_rows, n
    const int64_t* ys   # class indices, or NULL: probabilities
    const void* probs   # the probabilities (same dtype and shape as the logits)
    Py_ssize_t n_kept   # targets != ignore
    const double* w     # class weights (validated), or NULL
    double w_total      # their sum in order (losses._class_opts), or n
    double eps          # label smoothing
    bint nll            # nll_loss: the logits are log-probabilities


cdef bint _ce_plain(object logits, object target, object axis, object weight,
                    object ignore_index, object reduction, object label_smoothing,
                    object sample_weight, object where, object logit_softcap, object out,
                    object n_threads, CeCall* c):
    """A plain call (2-D logits; a 1-D int64 target, every index valid, or
    probabilities of the logits' dtype and shape; default options but for a
    class weight and label smoothing as _losses accepts them without a
    conversion): fill c and return True; else False."""
    cdef Py_ssize_t r, k, t_rows, t_n
    cdef int64_t y
    cdef cnp.ndarray t, wa
    cdef const double* wp
    c.nll = False
    if (sample_weight is not None or where is not None
            or logit_softcap is not None or out is not None or not _threads_ok(n_threads)):
        return False
    # _losses._check_label_smoothing: float(eps) in [0, 1] (nan fails)
    if type(label_smoothing) is float:
        c.eps = <double>label_smoothing
    elif type(label_smoothing) is int and (label_smoothing == 0 or label_smoothing == 1):
        c.eps = 1.0 if label_smoothing == 1 else 0.0
    else:
        return False
    if not (0.0 <= c.eps <= 1.0):
        return False
    if type(reduction) is not str:
        return False
    if reduction == "mean":
        c.red = RED_MEAN
    elif reduction == "sum":
        c.red = RED_SUM
    elif reduction == "none":
        c.red = RED_NONE
    else:
        return False
    if type(ignore_index) is not int or not (-0x8000000000000000 <= ignore_index
                                             <= 0x7fffffffffffffff):
        return False
    c.ignore = ignore_index
    c.kind = _plain(logits, &c.n_rows, &c.n)
    if c.kind == NOT_MINE or cnp.PyArray_NDIM(<cnp.ndarray>logits) != 2 \
            or not _last_axis(axis, 2):
        return False
    # _losses._check_weight: n finite weights >= 0 (anything it would convert,
    # or reject, is the general path's)
    c.w = NULL
    c.w_total = <double>c.n
    if weight is not None:
        if type(weight) is not cnp.ndarray:
            return False
        wa = <cnp.ndarray>weight
        if not (cnp.PyArray_TYPE(wa) == cnp.NPY_DOUBLE and cnp.PyArray_NDIM(wa) == 1
                and cnp.PyArray_DIMS(wa)[0] == c.n
                and (cnp.PyArray_STRIDES(wa)[0] == 8 or c.n == 1)
                and cnp.PyArray_ISNOTSWAPPED(wa) and cnp.PyArray_ISALIGNED(wa)):
            return False
        wp = <const double*>cnp.PyArray_DATA(wa)
        c.w_total = 0.0
        for k in range(c.n):
            if not (0.0 <= wp[k] <= 1.7976931348623157e308):
                return False
            c.w_total += wp[k]
        c.w = wp
    if type(target) is not cnp.ndarray:
        return False
    t = <cnp.ndarray>target
    c.probs = NULL
    if cnp.PyArray_TYPE(t) == cnp.PyArray_TYPE(<cnp.ndarray>logits):
        # probabilities: exactly the logits' dtype, shape and C layout (_plain)
        if (cnp.PyArray_NDIM(t) == 2 and cnp.PyArray_DIMS(t)[0] == c.n_rows
                and cnp.PyArray_DIMS(t)[1] == c.n and _plain(t, &t_rows, &t_n) == c.kind):
            c.probs = cnp.PyArray_DATA(t)
            c.ys = NULL
            c.n_kept = c.n_rows
            return True
        return False
    # class indices: exact int64 (NPY_LONG or NPY_LONGLONG), native, aligned, contiguous
    if not ((cnp.PyArray_TYPE(t) == cnp.NPY_LONG or cnp.PyArray_TYPE(t) == cnp.NPY_LONGLONG)
            and cnp.PyArray_ITEMSIZE(t) == 8 and cnp.PyArray_NDIM(t) == 1
            and cnp.PyArray_DIMS(t)[0] == c.n_rows and cnp.PyArray_STRIDES(t)[0] == 8
            and cnp.PyArray_ISNOTSWAPPED(t) and cnp.PyArray_ISALIGNED(t)):
        return False
    c.ys = <const int64_t*>cnp.PyArray_DATA(t)
    # losses.check_class_indices: a bad index is the general path's IndexError
    c.n_kept = 0
    for r in range(c.n_rows):
        y = c.ys[r]
        if y == c.ignore:
            continue
        if y < 0 or y >= c.n:
            return False
        c.n_kept += 1
    if c.n_rows > STACK_ROWS * STACK_BLOCKS:  # (not with MAX_ELEMENTS as it is)
        return False
    return True


cdef object _ce_run(object logits, const CeCall* c, double grad_scale, void* g):
    """The row losses (and g) of a plain call, reduced as lossmle._reduce does;
    None for a nan 'sum' / 'mean' (left to the general path)."""
    cdef Py_ssize_t r
    cdef ClassOpts op      # as losses._class_opts
    op.w = c.w
    op.w_total = c.w_total
    op.keep = 1.0 - c.eps
    op.spread = c.eps / <double>c.n
    op.ignore_index = c.ignore
    op.grad_scale = grad_scale     # read only with g
    cdef double loss_stack[STACK_ROWS]
    cdef double weight_stack[STACK_ROWS]
    cdef double block_totals[STACK_BLOCKS]
    cdef double* loss
    cdef double* row_weight
    cdef double total, denom, value
    cdef float* out32
    cdef double* out64
    cdef float out_nan
    cdef const void* xd = cnp.PyArray_DATA(<cnp.ndarray>logits)
    if c.n_rows <= STACK_ROWS:
        loss, row_weight = loss_stack, weight_stack
    else:
        loss = <double*>PyMem_Malloc(2 * c.n_rows * sizeof(double))
        if loss == NULL:
            raise MemoryError()
        row_weight = loss + c.n_rows
    try:
        if c.nll:   # (a few operations per row: no GIL release)
            _nll_rows_of(c.kind, xd, c.n_rows, c.n, c.ys, &op, loss, row_weight)
        elif c.probs != NULL:
            if c.n_rows * c.n < NOGIL_MIN_ELEMENTS:
                _ce_prob_rows_of(c.kind, xd, c.probs, c.n_rows, c.n, &op, loss, g)
            else:
                with nogil:
                    _ce_prob_rows_of(c.kind, xd, c.probs, c.n_rows, c.n, &op, loss, g)
        elif c.n_rows * c.n < NOGIL_MIN_ELEMENTS:
            _ce_rows_of(c.kind, xd, c.n_rows, c.n, c.ys, &op, loss, row_weight, g)
        else:
            with nogil:
                _ce_rows_of(c.kind, xd, c.n_rows, c.n, c.ys, &op, loss, row_weight, g)
        if c.red == RED_NONE:
            # lossmle._reduce: the row losses cast to the logits' dtype
            res = _vector(c.n_rows, c.kind)
            if c.kind == IS_F64:
                out64 = <double*>cnp.PyArray_DATA(<cnp.ndarray>res)
                for r in range(c.n_rows):
                    out64[r] = loss[r]
            else:
                out32 = <float*>cnp.PyArray_DATA(<cnp.ndarray>res)
                for r in range(c.n_rows):
                    out32[r] = <float>loss[r]
            return res
        # as lossmle._reduce (losses.pairwise_total): 0.0 plus the blocked sum
        total = 0.0 + blocked_sum(loss, c.n_rows, block_totals)
        if total != total:
            # which nan a sum of nans of both signs gives depends on the operand
            # order the compiler picked: leave it to the general path (rare)
            return None
        if c.red == RED_SUM:
            return _float_scalar(total, c.kind)
        # lossmle._reduce: the summed row weights, or (probabilities) the rows
        denom = <double>c.n_rows if c.probs != NULL else \
            0.0 + blocked_sum(row_weight, c.n_rows, block_totals)
        if denom == 0:  # every target ignored or weighted 0: nan (lossmle._reduce_sums)
            value = NAN
            if c.kind == IS_F64:
                return PyArray_Scalar(&value, F64, None)
            out_nan = <float>value
            return PyArray_Scalar(&out_nan, F32, None)
        return _float_scalar(total / denom, c.kind)
    finally:
        if loss != loss_stack:
            PyMem_Free(loss)


def cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                  sample_weight, where, logit_softcap, out, n_threads):
    """lossmle.cross_entropy for 2-D logits and a 1-D int64 class-index target (or
    probabilities shaped and typed as the logits) with default options but for
    ``weight`` and ``label_smoothing``, or None when the call is not such a one
    (or would raise)."""
    cdef CeCall c
    if not _ce_plain(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                     sample_weight, where, logit_softcap, out, n_threads, &c):
        return None
    return _ce_run(logits, &c, 1.0, NULL)


def nll_loss(log_probs, target, axis, weight, ignore_index, reduction, sample_weight, out,
             n_threads):
    """lossmle.nll_loss for 2-D log-probabilities and a 1-D int64 class-index
    target with default options but for ``weight``, or None when the call is
    not such a one (or would raise: probabilities are the general path's
    TypeError)."""
    cdef CeCall c
    if not _ce_plain(log_probs, target, axis, weight, ignore_index, reduction, 0.0,
                     sample_weight, None, None, out, n_threads, &c) or c.ys == NULL:
        return None
    c.nll = True
    return _ce_run(log_probs, &c, 1.0, NULL)


cdef double _kept_weight(const CeCall* c) except? -1:
    """_losses._mean_denominator with class weights: np.sum(w[kept targets]),
    which is 0.0 + NumPy's pairwise sum of them in order."""
    cdef double stack[STACK_ROWS]
    cdef double* wy = stack
    cdef Py_ssize_t r, m = 0
    cdef double total
    if c.n_kept > STACK_ROWS:
        wy = <double*>PyMem_Malloc(c.n_kept * sizeof(double))
        if wy == NULL:
            raise MemoryError()
    for r in range(c.n_rows):
        if c.ys[r] != c.ignore:
            wy[m] = c.w[c.ys[r]]
            m += 1
    total = 0.0 + pairwise_sum(wy, m)
    if wy != stack:
        PyMem_Free(wy)
    return total


def cross_entropy_with_grad(logits, target, axis, weight, ignore_index, reduction,
                            label_smoothing, sample_weight, where, logit_softcap, grad_out,
                            n_threads):
    """lossmle.cross_entropy_with_grad for the calls cross_entropy takes here
    (class indices or probabilities; grad_out None): (loss, grad), or None."""
    cdef CeCall c
    cdef double grad_scale = 1.0, denom
    cdef cnp.ndarray grad
    cdef cnp.npy_intp dims[2]
    if grad_out is not None or not _ce_plain(
            logits, target, axis, weight, ignore_index, reduction, label_smoothing,
            sample_weight, where, logit_softcap, None, n_threads, &c):
        return None
    if c.red == RED_MEAN:
        # _losses._run: 1 / _mean_denominator (the kept rows, or their summed
        # class weights - every row for probabilities), nan when that is 0
        # (_losses._grad_scale)
        denom = <double>c.n_kept if c.w == NULL or c.ys == NULL else _kept_weight(&c)
        grad_scale = 1.0 / denom if denom != 0 else NAN
    dims[0], dims[1] = c.n_rows, c.n
    grad = cnp.PyArray_EMPTY(2, dims, cnp.NPY_DOUBLE if c.kind == IS_F64 else cnp.NPY_FLOAT, 0)
    loss = _ce_run(logits, &c, grad_scale, cnp.PyArray_DATA(grad))
    if loss is None:
        return None
    return loss, grad


# ---- kl_divergence and entropy (as divergence) ----

cdef inline Py_ssize_t _kl_rows_of(int kind, const void* p, const void* q, Py_ssize_t n_rows,
                                   Py_ssize_t n, bint validate, void* out) noexcept nogil:
    if kind == IS_F64:
        return kl_contig_rows(<const double*>p, <const double*>q, n_rows, n, validate,
                              <double*>out)
    return kl_contig_rows(<const float*>p, <const float*>q, n_rows, n, validate, <float*>out)


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
    res = None if scalar else _vector(n_rows, kind)
    res_data = <void*>value if scalar else cnp.PyArray_DATA(<cnp.ndarray>res)
    cdef const void* pd = cnp.PyArray_DATA(pa)
    cdef const void* qd = cnp.PyArray_DATA(qa)
    if n_rows * n < NOGIL_MIN_ELEMENTS:
        bad = _kl_rows_of(kind, pd, qd, n_rows, n, check, res_data)
    else:
        with nogil:
            bad = _kl_rows_of(kind, pd, qd, n_rows, n, check, res_data)
    if bad:
        return None     # the general path names the argument in its ValueError
    return _scalar(value, kind) if scalar else res


cdef void entropy_rows(const floating* p, Py_ssize_t n_rows, Py_ssize_t n, bint columns,
                       floating* out) noexcept nogil:
    """Row sums (columns False), or over axis 0 of the n_rows x n array (columns True)."""
    cdef Py_ssize_t r
    if columns and n == 1:   # one column is one contiguous row (as the general path sees it)
        entropy_rows(p, 1, n_rows, False, out)
    elif columns:            # a middle axis of (1, n_rows, n): gathered tiles
        divergence_strided_rows(p, <const floating*>NULL, n_rows, n, DIV_ENTR, False, out, 0,
                                tile_units(1, n_rows, n))
    else:                    # as divergence
        entropy_contig_rows(p, <const floating*>NULL, n_rows, n, out)


cdef inline void _entropy_rows_of(int kind, const void* p, Py_ssize_t n_rows, Py_ssize_t n,
                                 bint columns, void* out) noexcept nogil:
    if kind == IS_F64:
        entropy_rows(<const double*>p, n_rows, n, columns, <double*>out)
    else:
        entropy_rows(<const float*>p, n_rows, n, columns, <float*>out)


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
    res = None if scalar else _vector(n_out, kind)
    res_data = <void*>value if scalar else cnp.PyArray_DATA(<cnp.ndarray>res)
    cdef const void* pd = cnp.PyArray_DATA(pa)
    if n_rows * n < NOGIL_MIN_ELEMENTS:
        _entropy_rows_of(kind, pd, n_rows, n, columns, res_data)
    else:
        with nogil:
            _entropy_rows_of(kind, pd, n_rows, n, columns, res_data)
    return _scalar(value, kind) if scalar else res
