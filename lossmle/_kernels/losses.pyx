"""Kernels for cross-entropy, NLL and the fused cross-entropy gradient.

Design
------
Layout as in ``special.pyx``: ``logits`` is a ``(n_outer, n_classes,
n_inner)`` view with the class axis in the middle (torch's ``(N, C, d1..)``
is ``n_inner = d1 * ...``; the default last axis is ``n_inner = 1``), and
``target`` the matching ``(n_outer, n_inner)`` view.  Per row the kernels
write the loss (double) and the weight the row carries in a mean (double);
the Python layer sums those O(rows) arrays pairwise (``pairwise_total``:
NumPy's pairwise summation within blocks of 256 rows, then over the block
totals) and divides, so a mean over millions of rows keeps ~1e-16 relative
accuracy and a result never depends on the thread count.  Many short rows
with a 'mean'/'sum' reduction skip the arrays: ``cross_entropy_class_total``
sums each block of row losses from a stack buffer, the same blocked sum
(for many short rows, first-touching the pages of two fresh row arrays is a
large part of the call).

Class indices are checked here, before any arithmetic, in one cheap serial
pass over ``target``: the loop returns the flat position of the first index
outside ``[0, n_classes)`` that is not ``ignore_index`` (or -1), and the
Python layer turns that into an IndexError.  Nothing else is validated here.

Cross-entropy reads each logits row once (``row_stats``: block by block, a
running max ``m`` and the sum ``s`` of exp(x - m) rescaled when ``m`` grows)
and never materialises the softmax.  Per row, with ``L = log(s)`` (so
``lse = m + L``), class weights ``w`` (1 when absent), ``W = sum(w)``,
smoothing ``eps`` and ``C`` classes (torch.nn.functional.cross_entropy):

    class target y:  loss = (1 - eps) * w[y] * ((m - x[y]) + L)
                            + eps / C * (W * L - sum_c w[c] (x[c] - m))
    probabilities t: t' = (1 - eps) * t + eps / C
                     loss = sum_c w[c] t'[c] * L - sum_c w[c] t'[c] (x[c] - m)

and the gradients ``d loss / d x_k`` with ``p = softmax(x)``:

    class target y:  (1 - eps) * w[y] * (p_k - [k == y]) + eps / C * (W p_k - w_k)
    probabilities t: (sum_c w[c] t'[c]) * p_k - w_k t'_k

Every difference is taken against the row max before it is summed, never as
``lse - x[y]``: with logits of 1e17 the latter cancels to 0 (or inf - inf).
Many short rows (C <= 8) take an across-rows SIMD kernel for ``L``.

The row helpers of cross-entropy (``row_stats``, ``ce_class_row``,
``ce_class_short_block(s)``, ``ce_class_short_grad_block``; for probability
targets ``row_stats_prob``, ``ce_prob_row``, ``ce_prob_short_block``) and
``pairwise_sum`` live in ``loss_rows.pxd``, one definition shared with
``fastpath.pyx`` (which must give these kernels' bits for small inputs).
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.stdint cimport int64_t
from libc.math cimport exp

from lossmle._kernels.rowops cimport simd_init, LM_SHORT_MAX, SHORT_BLOCK, LM_COL_ROWS, LM_COL_MAX
from lossmle._kernels.rows cimport (
    tile_rows, tile_units, gather_rows, scatter_rows, COL_CONTIG_MAX, tile_buffer, tile_span,
    middle_axis_c, c_rows,
)
from lossmle._kernels.loss_rows cimport (
    RowStats, row_stats, ClassOpts, ce_class_row, ce_class_short_block, ce_class_short_blocks,
    ce_class_short_grad_block, pairwise_sum, blocked_sum, target_floating, ce_prob_row,
    ce_prob_short_block, nll_pick, ce_col_block, ce_class_contig_rows, plain_loss,
)
from libc.stdlib cimport malloc, free


def _simd_init():
    """(Re)select this module's SIMD variant (reads LOSSMLE_SIMD); returns its name."""
    global SIMD_PATH
    SIMD_PATH = simd_init()
    return SIMD_PATH


SIMD_PATH = _simd_init()

def check_class_indices(const int64_t[:, :] target, Py_ssize_t n_classes,
                        int64_t ignore_index, int n_threads=1):
    """Flat position of the first bad class index in target, or -1.  IN only.

    A contiguous target is first counted through in parallel (a branch-free
    loop, bound by memory), and scanned for the position only if it holds one.
    """
    cdef Py_ssize_t o, i, n_inner = target.shape[1], bad = -1
    cdef Py_ssize_t j, n_bad = 0, size = target.shape[0] * n_inner
    cdef const int64_t* flat
    cdef int64_t y
    if (size > 0 and target.strides[1] == 8 and target.strides[0] == 8 * n_inner):
        flat = &target[0, 0]
        for j in prange(size, schedule='static', num_threads=n_threads, nogil=True):
            n_bad += (flat[j] < 0 or flat[j] >= n_classes) and flat[j] != ignore_index
        if n_bad == 0:
            return -1
    with nogil:
        for o in range(target.shape[0]):
            for i in range(n_inner):
                y = target[o, i]
                if (y < 0 or y >= n_classes) and y != ignore_index:
                    bad = o * n_inner + i
                    break
            if bad >= 0:
                break
    return bad


cdef ClassOpts _class_opts(const double[::1] weight, Py_ssize_t n_classes,
                           int64_t ignore_index, double label_smoothing,
                           double grad_scale):
    """The class-index options as the row helpers take them."""
    cdef ClassOpts op
    cdef Py_ssize_t k
    op.w = NULL
    op.w_total = n_classes
    op.keep = 1.0 - label_smoothing
    op.spread = label_smoothing / n_classes
    op.ignore_index = ignore_index
    op.grad_scale = grad_scale
    if weight is not None:
        op.w = &weight[0]
        op.w_total = 0.0
        for k in range(n_classes):
            op.w_total += op.w[k]
    return op


cdef void _ce_class_block_sums(const floating* x, Py_ssize_t n_rows, Py_ssize_t n,
                              const int64_t* y, const ClassOpts* op, double* loss_sum,
                              double* weight_sum) noexcept nogil:
    """pairwise_sum of a block's row losses and row weights (the buffers are
    this call's own: one per thread)."""
    cdef double loss[SHORT_BLOCK]
    cdef double row_weight[SHORT_BLOCK]
    ce_class_contig_rows(x, n_rows, n, y, op, loss, row_weight, <floating*>NULL)
    loss_sum[0] = pairwise_sum(loss, n_rows)
    weight_sum[0] = pairwise_sum(row_weight, n_rows)


cdef inline bint _class_rows_layout(const floating[:, :, :] logits,
                                    const int64_t[:, :] target,
                                    Py_ssize_t max_classes) noexcept nogil:
    """Contiguous rows of 2..max_classes classes (the class axis last, rows
    back to back) and one contiguous target per row."""
    cdef Py_ssize_t n_classes = logits.shape[1], item = sizeof(floating)
    return (2 <= n_classes <= max_classes and logits.shape[2] == 1
            and logits.strides[1] == item and logits.strides[0] == n_classes * item
            and target.strides[0] == 8)


cdef inline bint _class_short_layout(const floating[:, :, :] logits,
                                     const int64_t[:, :] target) noexcept nogil:
    """Many short contiguous rows (2..LM_SHORT_MAX classes): the layout the
    short-row kernel takes."""
    return _class_rows_layout(logits, target, LM_SHORT_MAX)


cdef inline bint _middle_layout(const floating[:, :, :] logits,
                                const int64_t[:, :] target, const double[:, ::1] loss,
                                const double[:, ::1] row_weight) noexcept nogil:
    """The class axis in the middle of a C-ordered array (torch's (N, C, d..)),
    target, loss and row_weight rows C-ordered too."""
    cdef Py_ssize_t n_inner = logits.shape[2]
    return (middle_axis_c(logits.shape, logits.strides, sizeof(floating))
            and c_rows(target.shape[0], n_inner, target.strides, 8)
            and loss.shape[1] == n_inner and row_weight.shape[1] == n_inner
            and (loss.shape[0] == 1 or (loss.strides[0] == 8 * n_inner
                                        and row_weight.strides[0] == 8 * n_inner)))


cdef inline bint _class_col_layout(const floating[:, :, :] logits,
                                   const int64_t[:, :] target, const double[:, ::1] loss,
                                   const double[:, ::1] row_weight) noexcept nogil:
    """A middle class axis (_middle_layout) of LM_SHORT_MAX + 1 .. LM_COL_MAX
    classes: the across-rows kernel col_rows reads the logits where they are
    (shorter rows take the short-row kernel in gathered tiles, as along the
    last axis)."""
    return (LM_SHORT_MAX < logits.shape[1] <= LM_COL_MAX
            and _middle_layout(logits, target, loss, row_weight))


cdef inline void _class_col_unit(const floating* x, Py_ssize_t n, Py_ssize_t n_inner,
                                 Py_ssize_t n_blocks, Py_ssize_t u, const int64_t* target,
                                 const ClassOpts* op, double* loss,
                                 double* row_weight) noexcept nogil:
    """Unit u of a middle class axis: the rows i0 .. i0 + LM_COL_ROWS of slab
    u // n_blocks, read in place by ce_col_block (the plain loss)."""
    cdef Py_ssize_t o = u // n_blocks, i0 = (u % n_blocks) * LM_COL_ROWS
    cdef Py_ssize_t at = o * n_inner + i0
    ce_col_block(x + o * n * n_inner + i0, n_inner, min(<Py_ssize_t>LM_COL_ROWS, n_inner - i0),
                 n, target + at, op, loss + at, row_weight + at)


cdef inline void _class_tiles(const floating* x, Py_ssize_t n, Py_ssize_t n_inner,
                              const int64_t* target, const ClassOpts* op, double* loss,
                              double* row_weight, floating* grad, Py_ssize_t u0,
                              Py_ssize_t u1) noexcept nogil:
    """Tiles u0 .. u1 of a middle class axis (C-ordered logits, target, loss,
    row_weight and grad, NULL for none): each tile's rows gathered into a
    contiguous buffer (rows' gather_rows) and run as contiguous rows
    (ce_class_contig_rows); the gradient computed into a second buffer and
    scattered back.  Rows longer than TILE_LONG_ROW, or without memory for
    the buffers, run strided in place."""
    cdef Py_ssize_t t_rows = tile_rows(n, n_inner)
    cdef Py_ssize_t u, cnt, r, at, x_off
    cdef floating* buf = <floating*>tile_buffer(n, n_inner, 2 if grad != NULL else 1,
                                                sizeof(floating))
    cdef floating* gbuf = NULL
    if buf != NULL and grad != NULL:
        gbuf = buf + t_rows * n
    for u in range(u0, u1):
        cnt = tile_span(u, n, n_inner, t_rows, &at, &x_off)
        if buf == NULL:
            for r in range(cnt):
                ce_class_row(x + x_off + r, n, n_inner, target[at + r], op,
                             grad + x_off + r if grad != NULL else NULL,
                             n_inner, loss + at + r, row_weight + at + r)
            continue
        gather_rows(x + x_off, n, n_inner, cnt, buf)
        # the dispatch of contiguous rows, so a row gets the bits it gets
        # along the last axis
        ce_class_contig_rows(buf, cnt, n, target + at, op, loss + at, row_weight + at, gbuf)
        if gbuf != NULL:
            scatter_rows(gbuf, n, n_inner, cnt, grad + x_off)
    free(buf)


cdef inline bint _class_across_layout(const floating[:, :, :] logits,
                                      const int64_t[:, :] target,
                                      const ClassOpts* op) noexcept nogil:
    """_class_short_layout, or its layout with up to COL_CONTIG_MAX classes
    for the plain loss: the rows ce_class_contig_rows takes (across rows up to
    col_contig_max(5), the SIMD path's limit; row by row past it)."""
    return _class_rows_layout(logits, target,
                              COL_CONTIG_MAX if plain_loss(op) else LM_SHORT_MAX)


def cross_entropy_class_total(const floating[:, :, :] logits,
                              const int64_t[:, :] target,
                              const double[::1] weight,
                              int64_t ignore_index, double label_smoothing,
                              int n_threads):
    """(sum of the row losses, sum of the row weights) of class-index
    cross-entropy over many short contiguous rows, or None when the layout
    is not that (_class_across_layout: 2 <= n_classes <= LM_SHORT_MAX, or up
    to COL_CONTIG_MAX for the plain loss; one contiguous row per target, at
    least one row).

    The sums are ``blocked_sum`` of what cross_entropy_class_rows would
    write (so ``pairwise_total`` of those arrays, to the bit), with each
    block of row losses summed from a stack buffer and no array of them.
    IN only: logits, target (validated), weight, ignore_index, label_smoothing.
    """
    cdef Py_ssize_t n_classes = logits.shape[1], n_rows = logits.shape[0]
    cdef Py_ssize_t n_blocks, blk, start, nr
    cdef ClassOpts op = _class_opts(weight, n_classes, ignore_index, label_smoothing, 1.0)
    cdef double* block_sums
    cdef double total, weight_total
    if not (n_rows > 0 and _class_across_layout(logits, target, &op)):
        return None
    n_blocks = (n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK
    block_sums = <double*>malloc(2 * n_blocks * sizeof(double))
    if block_sums == NULL:
        raise MemoryError()
    with nogil:
        for blk in prange(n_blocks, schedule='static', num_threads=n_threads):
            start = blk * SHORT_BLOCK
            nr = min(<Py_ssize_t>SHORT_BLOCK, n_rows - start)
            _ce_class_block_sums(&logits[start, 0, 0], nr, n_classes, &target[start, 0], &op,
                                 &block_sums[blk], &block_sums[n_blocks + blk])
        total = 0.0 + pairwise_sum(block_sums, n_blocks)
        weight_total = 0.0 + pairwise_sum(block_sums + n_blocks, n_blocks)
    free(block_sums)
    return total, weight_total


def cross_entropy_class_rows(const floating[:, :, :] logits,
                             const int64_t[:, :] target,
                             const double[::1] weight,
                             int64_t ignore_index, double label_smoothing,
                             double[:, ::1] loss, double[:, ::1] row_weight,
                             floating[:, :, :] grad, double grad_scale,
                             int n_threads):
    """Cross-entropy per row from class indices, optionally with its gradient.

    IN: logits, target (validated), weight (None or length n_classes),
    ignore_index, label_smoothing, grad_scale (d reduction / d row loss).
    OUT: loss (row losses), row_weight (w[y], 0 where ignored), and, when
    grad is not None, grad = grad_scale * d loss_row / d logits.
    """
    cdef Py_ssize_t n_classes = logits.shape[1], n_inner = logits.shape[2]
    cdef Py_ssize_t n_rows = logits.shape[0] * n_inner
    cdef Py_ssize_t xs = logits.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t gs = 0, item = sizeof(floating)
    cdef Py_ssize_t r, k, start, n_blocks
    cdef ClassOpts op = _class_opts(weight, n_classes, ignore_index, label_smoothing,
                                    grad_scale)
    cdef floating* g
    if grad is not None:
        gs = grad.strides[1] // item
        if (n_rows > 0 and _class_short_layout(logits, target) and gs == 1
                and grad.strides[0] == n_classes * item and op.w == NULL
                and op.spread == 0):
            # many short rows with the gradient: the across-rows softmax
            n_blocks = (n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK
            if n_threads == 1:  # one thread's work: no OpenMP region to start
                with nogil:
                    for r in range(n_blocks):
                        start = r * SHORT_BLOCK
                        ce_class_short_grad_block(
                            &logits[start, 0, 0], min(<Py_ssize_t>SHORT_BLOCK, n_rows - start),
                            n_classes, &target[start, 0], &op, &loss[start, 0],
                            &row_weight[start, 0], &grad[start, 0, 0])
            else:
                for r in prange(n_blocks, schedule='static', num_threads=n_threads, nogil=True):
                    start = r * SHORT_BLOCK
                    ce_class_short_grad_block(
                        &logits[start, 0, 0], min(<Py_ssize_t>SHORT_BLOCK, n_rows - start),
                        n_classes, &target[start, 0], &op, &loss[start, 0],
                        &row_weight[start, 0], &grad[start, 0, 0])
            return
    elif plain_loss(&op) and _class_col_layout(logits, target, loss, row_weight):
        # a middle class axis, the plain loss: across rows, read in place
        n_blocks = (n_inner + LM_COL_ROWS - 1) // LM_COL_ROWS
        if n_threads == 1:  # one thread's work: no OpenMP region to start
            with nogil:
                for r in range(logits.shape[0] * n_blocks):
                    _class_col_unit(&logits[0, 0, 0], n_classes, n_inner, n_blocks, r,
                                    &target[0, 0], &op, &loss[0, 0], &row_weight[0, 0])
        else:
            for r in prange(logits.shape[0] * n_blocks, schedule='static',
                            num_threads=n_threads, nogil=True):
                _class_col_unit(&logits[0, 0, 0], n_classes, n_inner, n_blocks, r,
                                &target[0, 0], &op, &loss[0, 0], &row_weight[0, 0])
        return
    elif n_rows > 0 and _class_across_layout(logits, target, &op):
        # the across-rows kernels (short rows; the plain loss of up to
        # COL_CONTIG_MAX classes) through ce_class_contig_rows, by blocks
        n_blocks = (n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK
        if n_threads == 1 or n_blocks == 1:  # no OpenMP region (~2 us)
            with nogil:
                ce_class_contig_rows(&logits[0, 0, 0], n_rows, n_classes, &target[0, 0], &op,
                                     &loss[0, 0], &row_weight[0, 0], <floating*>NULL)
        else:
            for r in prange(n_blocks, schedule='static', num_threads=n_threads, nogil=True):
                start = r * SHORT_BLOCK
                ce_class_contig_rows(&logits[start, 0, 0],
                                     min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n_classes,
                                     &target[start, 0], &op, &loss[start, 0],
                                     &row_weight[start, 0], <floating*>NULL)
        return
    cdef floating* gp = NULL
    cdef Py_ssize_t n_units, nt
    if (n_inner > 1 and _middle_layout(logits, target, loss, row_weight)
            and (grad is None or (grad.strides[2] == item and grad.strides[1] == n_inner * item
                                  and (grad.shape[0] == 1
                                       or grad.strides[0] == n_classes * n_inner * item)))):
        # a middle class axis: tiles of neighbouring rows, gathered
        if grad is not None:
            gp = &grad[0, 0, 0]
        n_units = tile_units(logits.shape[0], n_classes, n_inner)
        nt = min(<Py_ssize_t>n_threads, n_units)
        if nt <= 1:  # one thread's work: no OpenMP region to start
            with nogil:
                _class_tiles(&logits[0, 0, 0], n_classes, n_inner, &target[0, 0], &op,
                             &loss[0, 0], &row_weight[0, 0], gp, 0, n_units)
        else:
            for r in prange(nt, schedule='static', num_threads=nt, nogil=True):
                _class_tiles(&logits[0, 0, 0], n_classes, n_inner, &target[0, 0], &op,
                             &loss[0, 0], &row_weight[0, 0], gp, r * n_units // nt,
                             (r + 1) * n_units // nt)
        return
    if n_threads == 1:  # one thread's work: no OpenMP region to start
        with nogil:
            for r in range(n_rows):
                g = &grad[r // n_inner, 0, r % n_inner] if gs != 0 or grad is not None else NULL
                ce_class_row(&logits[r // n_inner, 0, r % n_inner], n_classes, xs,
                             target[r // n_inner, r % n_inner], &op, g, gs,
                             &loss[r // n_inner, r % n_inner], &row_weight[r // n_inner, r % n_inner])
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
            g = &grad[r // n_inner, 0, r % n_inner] if gs != 0 or grad is not None else NULL
            ce_class_row(&logits[r // n_inner, 0, r % n_inner], n_classes, xs,
                         target[r // n_inner, r % n_inner], &op, g, gs,
                         &loss[r // n_inner, r % n_inner], &row_weight[r // n_inner, r % n_inner])


def cross_entropy_prob_rows(const floating[:, :, :] logits,
                            const target_floating[:, :, :] target,
                            const double[::1] weight, double label_smoothing,
                            double[:, ::1] loss,
                            floating[:, :, :] grad, double grad_scale,
                            int n_threads):
    """Cross-entropy per row from class probabilities, optionally with its gradient.

    IN: logits, target (same shape), weight (None or length n_classes),
    label_smoothing, grad_scale.  OUT: loss (row losses) and, when grad is not
    None, grad = grad_scale * d loss_row / d logits.
    """
    cdef Py_ssize_t n_classes = logits.shape[1], n_inner = logits.shape[2]
    cdef Py_ssize_t n_rows = logits.shape[0] * n_inner
    cdef Py_ssize_t xs = logits.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ts = target.strides[1] // <Py_ssize_t>sizeof(target_floating)
    cdef Py_ssize_t gs = 0, r, start, n_blocks
    cdef const double* w = NULL
    cdef double keep = 1.0 - label_smoothing, spread = label_smoothing / n_classes
    cdef bint want_grad = grad is not None
    if weight is not None:
        w = &weight[0]
    if want_grad:
        gs = grad.strides[1] // <Py_ssize_t>sizeof(floating)
    elif (2 <= n_classes <= LM_SHORT_MAX and n_inner == 1 and xs == 1 and ts == 1
          and logits.strides[0] == n_classes * <Py_ssize_t>sizeof(floating)
          and target.strides[0] == n_classes * <Py_ssize_t>sizeof(target_floating)
          and n_rows > 0):
        # many short rows, loss only: the across-rows log-sum
        n_blocks = (n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK
        if n_threads == 1:  # one thread's work: no OpenMP region to start
            with nogil:
                for r in range(n_blocks):
                    start = r * SHORT_BLOCK
                    ce_prob_short_block(&logits[start, 0, 0], &target[start, 0, 0],
                                        min(<Py_ssize_t>SHORT_BLOCK, n_rows - start),
                                        n_classes, w, keep, spread, &loss[start, 0])
        else:
            for r in prange(n_blocks, schedule='static', num_threads=n_threads, nogil=True):
                start = r * SHORT_BLOCK
                ce_prob_short_block(&logits[start, 0, 0], &target[start, 0, 0],
                                    min(<Py_ssize_t>SHORT_BLOCK, n_rows - start),
                                    n_classes, w, keep, spread, &loss[start, 0])
        return
    if n_threads == 1:  # one thread's work: no OpenMP region to start
        with nogil:
            for r in range(n_rows):
                ce_prob_row(&logits[r // n_inner, 0, r % n_inner], n_classes, xs,
                            &target[r // n_inner, 0, r % n_inner], ts, w, keep, spread,
                            grad_scale,
                            &grad[r // n_inner, 0, r % n_inner] if want_grad else NULL, gs,
                            &loss[r // n_inner, r % n_inner])
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
            ce_prob_row(&logits[r // n_inner, 0, r % n_inner], n_classes, xs,
                        &target[r // n_inner, 0, r % n_inner], ts, w, keep, spread,
                        grad_scale,
                        &grad[r // n_inner, 0, r % n_inner] if want_grad else NULL, gs,
                        &loss[r // n_inner, r % n_inner])


cdef inline void nll_row(const floating[:, :, :] log_probs, const int64_t[:, :] target,
                         const double* w, int64_t ignore_index, double[:, ::1] loss,
                         double[:, ::1] row_weight, Py_ssize_t o, Py_ssize_t i) noexcept nogil:
    """One row of nll_rows (nll_pick, as fastpath.nll_loss)."""
    nll_pick(&log_probs[o, 0, i], log_probs.strides[1] // <Py_ssize_t>sizeof(floating),
             target[o, i], w, ignore_index, &loss[o, i], &row_weight[o, i])


def nll_rows(const floating[:, :, :] log_probs, const int64_t[:, :] target,
             const double[::1] weight, int64_t ignore_index,
             double[:, ::1] loss, double[:, ::1] row_weight, int n_threads):
    """loss = -w[y] * log_probs[y] per row (0 where ignored).  OUT: loss, row_weight."""
    cdef Py_ssize_t n_inner = log_probs.shape[2]
    cdef Py_ssize_t n_rows = log_probs.shape[0] * n_inner
    cdef const double* w = NULL
    cdef Py_ssize_t r
    if weight is not None:
        w = &weight[0]
    if n_threads == 1:  # one thread's work: no OpenMP region to start
        with nogil:
            for r in range(n_rows):
                nll_row(log_probs, target, w, ignore_index, loss, row_weight,
                        r // n_inner, r % n_inner)
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
            nll_row(log_probs, target, w, ignore_index, loss, row_weight,
                    r // n_inner, r % n_inner)


def pairwise_total(const double[::1] a):
    """The sum of a contiguous float64 array, as a Python float: the identity
    0.0 plus ``rows.blocked_sum`` (NumPy's pairwise summation within
    blocks of 256 values, then over the block totals; up to 256 values
    float(np.add.reduce(a)) to the bit): the reductions of the per-row losses
    and row weights, which ``fastpath.pyx`` and ``cross_entropy_class_total``
    run through the same definition.  IN only.
    """
    cdef double total = 0.0
    cdef Py_ssize_t n = a.shape[0]
    cdef double* totals
    if n > 0:
        totals = <double*>malloc(((n + SHORT_BLOCK - 1) // SHORT_BLOCK) * sizeof(double))
        if totals == NULL:
            raise MemoryError()
        with nogil:
            total = 0.0 + blocked_sum(&a[0], n, totals)
        free(totals)
    return total
