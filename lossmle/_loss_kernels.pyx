"""Kernels for cross-entropy, NLL and the fused cross-entropy gradient.

Design
------
Layout as in ``_special_kernels``: ``logits`` is a ``(n_outer, n_classes,
n_inner)`` view with the class axis in the middle (torch's ``(N, C, d1..)``
is ``n_inner = d1 * ...``; the default last axis is ``n_inner = 1``), and
``target`` the matching ``(n_outer, n_inner)`` view.  Per row the kernels
write the loss (double) and the weight the row carries in a mean (double);
the Python layer sums those O(rows) arrays pairwise (np.sum) and divides, so a
mean over millions of rows keeps ~1e-16 relative accuracy and a result never
depends on the thread count.

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

Every difference is taken against the row max before it is summed, never as
``lse - x[y]``: with logits of 1e17 the latter cancels to 0 (or inf - inf).
Many short rows (C <= 8) take an across-rows SIMD kernel for ``L``.

and the gradients ``d loss / d x_k`` with ``p = softmax(x)``:

    class target y:  (1 - eps) * w[y] * (p_k - [k == y]) + eps / C * (W p_k - w_k)
    probabilities t: (sum_c w[c] t'[c]) * p_k - w_k t'_k
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.stdint cimport int64_t
from libc.math cimport exp, log, NAN, INFINITY, isfinite

from lossmle._rowops cimport (
    simd_init, fast_max, fast_sumexp, fast_dot, lm_ce_grad_d, lm_ce_grad_f,
    short_rows, LM_SHORT_MAX, SHORT_BLOCK, SHORT_LOGSUM,
)


def _simd_init():
    """(Re)select this module's SIMD variant (reads LOSSMLE_SIMD); returns its name."""
    global SIMD_PATH
    SIMD_PATH = simd_init()
    return SIMD_PATH


SIMD_PATH = _simd_init()

# Contiguous rows are processed in blocks of this many values: the block's
# max, then its exps against the running max, while it sits in L1 - so each
# row comes from memory once, and the exps run vectorised.
cdef enum:
    CE_BLOCK = 2048


ctypedef fused target_floating:
    float
    double


cdef struct RowStats:
    double m            # row max
    double log_s        # log(sum(exp(x - m))); nan marks a row whose loss is nan
    double d_wx         # sum_c w[c] * (x[c] - m)          (label smoothing)
    double sum_wt       # sum_c w[c] * t'[c]               (probability targets)
    double d_wtx        # sum_c w[c] * t'[c] * (x[c] - m)  (probability targets)


cdef inline bint row_stats_fast(const floating* x, Py_ssize_t n, const double* w,
                                bint want_wx, RowStats* st) noexcept nogil:
    """row_stats for a contiguous row: vectorised, block by block, one read.

    Returns False when the row holds nan or +inf, or only -inf: the caller
    then runs the scalar code, which defines those cases.
    """
    cdef Py_ssize_t b0 = 0, nb
    cdef double m = -INFINITY, s = 0.0, bm, d = 0.0, w_seen = 0.0, w_block
    while b0 < n:
        nb = min(<Py_ssize_t>CE_BLOCK, n - b0)
        bm = fast_max(x + b0, nb)
        if bm > m:
            if m != -INFINITY:
                s = s * exp(m - bm)
                d = d - w_seen * (bm - m)   # re-centre sum w (x - m) on the new max
            m = bm
        elif bm != bm:
            return False
        s += fast_sumexp(x + b0, nb, m)
        if want_wx:
            d += fast_dot(x + b0, (w + b0) if w != NULL else NULL, nb, m, &w_block)
            w_seen += w_block
        b0 += nb
    if not (isfinite(m) and isfinite(s)):
        return False
    st.m = m
    st.log_s = log(s)
    st.d_wx = d
    return True


cdef inline void row_stats(const floating* x, Py_ssize_t n, Py_ssize_t stride,
                           const double* w, bint want_wx, RowStats* st) noexcept nogil:
    """m, log_s and (want_wx) d_wx of a logits row.

    nan, +inf (inf - inf) and all -inf rows (-inf - -inf) have a nan
    log_softmax in torch, so their loss is nan: log_s = nan marks them.
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, s = 0.0, v, d = 0.0
    cdef bint has_nan = False
    if stride == 1 and row_stats_fast(x, n, w, want_wx, st):
        return
    for j in range(n):
        v = x[j * stride]
        has_nan = has_nan | (v != v)
        if v > m:
            # the guard keeps -inf - -inf (nan) out when the first value lands
            s = (s * exp(m - v) if m != -INFINITY else 0.0) + 1.0
            m = v
        elif m != -INFINITY:
            s += exp(v - m)
    st.m = m
    st.log_s = NAN if has_nan or not isfinite(m) else log(s)
    if want_wx and st.log_s == st.log_s:
        for j in range(n):
            d += (w[j] if w != NULL else 1.0) * (x[j * stride] - m)
    st.d_wx = d


cdef inline void row_stats_prob(const floating* x, Py_ssize_t n, Py_ssize_t stride,
                                const target_floating* t, Py_ssize_t t_stride,
                                const double* w, double keep, double spread,
                                RowStats* st) noexcept nogil:
    """m, log_s, sum_wt and d_wtx of a logits row and its probability row.

    t'[c] = keep * t[c] + spread (keep = 1 - eps, spread = eps / C).
    """
    cdef Py_ssize_t j
    cdef double wt, swt = 0.0, d = 0.0
    row_stats(x, n, stride, NULL, False, st)
    for j in range(n):
        wt = (keep * t[j * t_stride] + spread) * (w[j] if w != NULL else 1.0)
        swt += wt
        d += wt * (x[j * stride] - st.m)    # 0 * -inf = nan, as torch's t * log_softmax
    st.sum_wt = swt
    st.d_wtx = d


def check_class_indices(const int64_t[:, :] target, Py_ssize_t n_classes,
                        int64_t ignore_index):
    """Flat position of the first bad class index in target, or -1.  IN only."""
    cdef Py_ssize_t o, i, n_inner = target.shape[1], bad = -1
    cdef int64_t y
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


cdef struct ClassOpts:
    const double* w         # class weights or NULL
    double w_total          # sum(w), or C
    double keep             # 1 - eps
    double spread           # eps / C
    int64_t ignore_index
    double grad_scale       # d reduction / d row loss


cdef inline void ce_class_row(const floating* x, Py_ssize_t n, Py_ssize_t xs, int64_t y,
                              const ClassOpts* op, floating* g, Py_ssize_t gs,
                              double* loss, double* row_weight) noexcept nogil:
    """One row of cross_entropy_class_rows (g == NULL: no gradient)."""
    cdef RowStats st
    cdef Py_ssize_t k
    cdef double wy, p, gk
    cdef const double* w = op.w
    if y == op.ignore_index:
        loss[0] = 0.0
        row_weight[0] = 0.0
        if g != NULL:
            for k in range(n):
                g[k * gs] = 0
        return
    row_stats(x, n, xs, w, op.spread > 0, &st)
    wy = w[y] if w != NULL else 1.0
    loss[0] = op.keep * wy * ((st.m - x[y * xs]) + st.log_s)
    if op.spread > 0:
        loss[0] += op.spread * (op.w_total * st.log_s - st.d_wx)
    row_weight[0] = wy
    if g == NULL:
        return
    if xs == 1 and gs == 1 and isfinite(st.log_s):
        # g = alpha * p - beta * w, then the target's -keep * wy
        if floating is double:
            lm_ce_grad_d(x, g, n, st.m, st.log_s, op.grad_scale * (op.keep * wy + op.spread * op.w_total),
                         op.grad_scale * op.spread, w)
        else:
            lm_ce_grad_f(x, g, n, st.m, st.log_s, op.grad_scale * (op.keep * wy + op.spread * op.w_total),
                         op.grad_scale * op.spread, w)
        # the target's entry again, in double: p_y - 1 cancels, and a float32
        # p_y would leave only its rounding error (6e-8) of a 1e-6 gradient
        p = exp((x[y] - st.m) - st.log_s)
        g[y] = <floating>(op.grad_scale * ((op.keep * wy + op.spread * op.w_total) * p
                                           - (op.spread + op.keep) * wy))
        return
    for k in range(n):
        p = exp((x[k * xs] - st.m) - st.log_s)
        gk = op.keep * wy * (p - (1.0 if k == y else 0.0))
        if op.spread > 0:
            gk = gk + op.spread * (op.w_total * p - (w[k] if w != NULL else 1.0))
        g[k * gs] = <floating>(op.grad_scale * gk)


cdef void ce_class_short_block(const floating* x, Py_ssize_t n_rows, Py_ssize_t n,
                               const int64_t* y, const ClassOpts* op,
                               double* loss, double* row_weight) noexcept nogil:
    """Loss of a block of short contiguous rows: log-sum via the across-rows kernel."""
    cdef double log_s[SHORT_BLOCK]
    cdef double special[SHORT_BLOCK]
    cdef Py_ssize_t r, k
    cdef const floating* row
    cdef double m, d, wy
    short_rows(x, n_rows, n, SHORT_LOGSUM, log_s, <floating*>NULL, special)
    for r in range(n_rows):
        row = x + r * n
        if special[r] or y[r] == op.ignore_index:
            ce_class_row(row, n, 1, y[r], op, NULL, 0, loss + r, row_weight + r)
            continue
        m = row[0]
        for k in range(1, n):
            m = row[k] if row[k] > m else m
        wy = op.w[y[r]] if op.w != NULL else 1.0
        loss[r] = op.keep * wy * ((m - row[y[r]]) + log_s[r])
        if op.spread > 0:
            d = 0.0
            for k in range(n):
                d += (op.w[k] if op.w != NULL else 1.0) * (row[k] - m)
            loss[r] += op.spread * (op.w_total * log_s[r] - d)
        row_weight[r] = wy


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
    cdef ClassOpts op
    cdef floating* g
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
    if grad is not None:
        gs = grad.strides[1] // item
    elif (2 <= n_classes <= LM_SHORT_MAX and n_inner == 1 and xs == 1
          and logits.strides[0] == n_classes * item and target.strides[0] == 8):
        n_blocks = (n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK
        if n_threads == 1:  # no OpenMP region (~2 us) for one thread's work
            with nogil:
                for r in range(n_blocks):
                    start = r * SHORT_BLOCK
                    ce_class_short_block(&logits[start, 0, 0],
                                         min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n_classes,
                                         &target[start, 0], &op, &loss[start, 0],
                                         &row_weight[start, 0])
        else:
            for r in prange(n_blocks, schedule='static', num_threads=n_threads, nogil=True):
                start = r * SHORT_BLOCK
                ce_class_short_block(&logits[start, 0, 0],
                                     min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n_classes,
                                     &target[start, 0], &op, &loss[start, 0],
                                     &row_weight[start, 0])
        return
    if n_threads == 1:  # no OpenMP region (~2 us) for one thread's work
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


cdef inline void ce_prob_row(const floating* x, Py_ssize_t n, Py_ssize_t xs,
                             const target_floating* t, Py_ssize_t ts, const double* w,
                             double keep, double spread, double grad_scale,
                             floating* g, Py_ssize_t gs, double* loss) noexcept nogil:
    """One row of cross_entropy_prob_rows (g == NULL: no gradient)."""
    cdef RowStats st
    cdef Py_ssize_t k
    row_stats_prob(x, n, xs, t, ts, w, keep, spread, &st)
    loss[0] = st.sum_wt * st.log_s - st.d_wtx
    if g == NULL:
        return
    for k in range(n):
        g[k * gs] = <floating>(grad_scale * (
            st.sum_wt * exp((x[k * xs] - st.m) - st.log_s)
            - (w[k] if w != NULL else 1.0) * (keep * t[k * ts] + spread)))


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
    cdef Py_ssize_t gs = 0, r
    cdef const double* w = NULL
    cdef double keep = 1.0 - label_smoothing, spread = label_smoothing / n_classes
    cdef bint want_grad = grad is not None
    if weight is not None:
        w = &weight[0]
    if want_grad:
        gs = grad.strides[1] // <Py_ssize_t>sizeof(floating)
    if n_threads == 1:  # no OpenMP region (~2 us) for one thread's work
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
    """One row of nll_rows."""
    cdef int64_t y = target[o, i]
    cdef double wy
    if y == ignore_index:
        loss[o, i] = 0.0
        row_weight[o, i] = 0.0
    else:
        wy = w[y] if w != NULL else 1.0
        loss[o, i] = -wy * log_probs[o, y, i]
        row_weight[o, i] = wy


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
    if n_threads == 1:  # no OpenMP region (~2 us) for one thread's work
        with nogil:
            for r in range(n_rows):
                nll_row(log_probs, target, w, ignore_index, loss, row_weight,
                        r // n_inner, r % n_inner)
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
            nll_row(log_probs, target, w, ignore_index, loss, row_weight,
                    r // n_inner, r % n_inner)
