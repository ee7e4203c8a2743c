# Cross-entropy and NLL rows, and the reductions' pairwise sums (private).
#
# One definition for the general kernels (losses.pyx) and the fast path
# (fastpath.pyx), so small inputs get the general path's bits.
#
# What is here:
#   RowStats, row_stats_fast, row_stats, target_log_s, target_grad
#                                   the row's max, sum of exps and target term
#                                   (losses; row_stats_fast also training)
#   ClassOpts, plain_loss, ce_class_row, ce_class_short_block(s),
#       ce_class_short_grad_block, ce_col_block, ce_class_contig_rows
#                                   class-index targets (losses, fastpath)
#   target_floating, row_stats_prob, ce_prob_row, ce_prob_short_block
#                                   probability targets (losses, fastpath)
#   nll_pick                        nll_loss's row (losses, fastpath)
#   pairwise_sum, blocked_sum       NumPy's pairwise summation: the reductions'
#                                   totals, the same for any thread count
#
# Every helper trusts its input (n >= 1, as the kernels' own callers check) and
# is ``noexcept nogil``, pure, safe in ``prange``.  Private: not part of the
# public Cython API (``__init__.pxd`` / ``rowops.pxd``); installed with the
# package only because the kernel modules cimport it.

from cython cimport floating
from libc.stdint cimport int64_t
from libc.math cimport exp, log, log1p, NAN, INFINITY, isfinite

from lossmle._kernels.rowops cimport (
    row_max, short_rows, fast_max, fast_sumexp, fast_sumexp_below, fast_dot, short_ce,
    short_ce_grad, lm_ce_grad_d, lm_ce_grad_f, lm_wdot_d, lm_wdot_f, lm_simd_ready,
    lm_expwrite_below_d, lm_expwrite_below_f, lm_affine_d, lm_affine_f,
    SHORT_BLOCK, SHORT_LOGSUM, LM_SHORT_MAX, col_rows, LM_COL_ROWS, LM_COL_MAX,
)
from lossmle._kernels.rows cimport col_contig_max, transpose_rows, COL_LD, COL_BLOCK_VALUES


# ---- cross-entropy rows (losses) ----

# Contiguous rows are processed in blocks of this many values: the block's
# max, then its exps against the running max, while it sits in L1 - so each
# row comes from memory once, and the exps run vectorised.
cdef enum:
    CE_BLOCK = 2048


cdef struct RowStats:
    double m            # row max
    double log_s        # log(sum(exp(x - m))); nan marks a row whose loss is nan
    double rest         # with a target y: 1 - p_y, the other classes' share
                        # (target_log_s), or -1 where row_stats_fast left the
                        # target's term in the sum (then p_y <= 1/2 and
                        # 1 - p_y has no cancellation); -1 without a target
    double d_wx         # sum_c w[c] * (x[c] - m)          (label smoothing)
    double sum_wt       # sum_c w[c] * t'[c]               (probability targets)
    double d_wtx        # sum_c w[c] * t'[c] * (x[c] - m)  (probability targets)


cdef inline void target_log_s(double s_rest, double x_y, double m,
                              RowStats* st) noexcept nogil:
    """st.log_s and st.rest from s_rest, the sum of exp(x_k - m) over every
    class k but the target y (finite m).  The target's own term is added
    last: when x_y is the max it is exactly 1 and log_s is log1p(s_rest), so
    the loss (m - x_y) + log_s = log1p(s_rest) keeps its relative precision
    however small (with the 1 inside the sum, a loss of 4e-18 came out 0),
    and so does the gradient's target entry, -rest."""
    cdef double e_y
    if x_y == m:
        st.log_s = log1p(s_rest)
        st.rest = s_rest / (1.0 + s_rest)
    else:
        e_y = exp(x_y - m)
        st.log_s = log(s_rest + e_y)
        st.rest = s_rest / (s_rest + e_y)


cdef inline bint row_stats_fast(const floating* x, Py_ssize_t n, const double* w,
                                bint want_wx, Py_ssize_t y, RowStats* st,
                                floating* pf=NULL) noexcept nogil:
    """row_stats for a contiguous row: vectorised, block by block, one read.

    y: the target class, or -1 for none (st.rest is then -1).  Where
    the target is the max of the row so far, its block is summed without the
    values at that max (lm_sumexp_below, one call) and the others at it are
    added back as their count: the target's term stays out of the sum (see
    target_log_s).  Elsewhere p_y <= 1/2 and the target's term stays in.
    Returns False when the row holds nan or +inf, or only -inf: the caller
    then runs the scalar code, which defines those cases.  pf: n values the
    caller reads next (a probability target's row), fetched while
    the exps run (fast_sumexp_below), or NULL.
    """
    cdef Py_ssize_t b0 = 0, nb
    cdef double m = -INFINITY, s = 0.0, bm, d = 0.0, w_seen = 0.0, w_block, c
    cdef bint y_out = False
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
        if b0 <= y < b0 + nb and x[y] == m and m != -INFINITY:
            # (an all -inf block has every value "at" m: it takes the plain
            # sum, whose nan sends the row to the scalar code, as before)
            s += fast_sumexp_below(x + b0, nb, m, &c, NULL if pf == NULL else pf + b0) + (c - 1.0)
            y_out = True
        else:
            s += fast_sumexp(x + b0, nb, m, NULL if pf == NULL else pf + b0)
        if want_wx:
            d += fast_dot(x + b0, (w + b0) if w != NULL else NULL, nb, m, &w_block)
            w_seen += w_block
        b0 += nb
    if not (isfinite(m) and isfinite(s)):
        return False
    st.m = m
    if y_out:
        target_log_s(s, x[y], m, st)
    else:
        st.log_s = log(s)
        st.rest = -1.0
    st.d_wx = d
    return True


cdef inline void row_stats(const floating* x, Py_ssize_t n, Py_ssize_t stride,
                           const double* w, bint want_wx, Py_ssize_t y,
                           RowStats* st, floating* pf=NULL) noexcept nogil:
    """m, log_s and (want_wx) d_wx of a logits row; y and pf as in row_stats_fast.

    nan, +inf (inf - inf) and all -inf rows (-inf - -inf) have a nan
    log_softmax in torch, so their loss is nan: log_s = nan marks them.
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, s = 0.0, v, d = 0.0
    cdef bint has_nan = False
    if stride == 1 and row_stats_fast(x, n, w, want_wx, y, st, pf):
        return
    for j in range(n):
        v = x[j * stride]
        has_nan = has_nan | (v != v)
        if v > m:
            # the guard keeps -inf - -inf (nan) out when the first value lands
            s = (s * exp(m - v) if m != -INFINITY else 0.0) + (0.0 if j == y else 1.0)
            m = v
        elif m != -INFINITY and j != y:
            s += exp(v - m)
    st.m = m
    if has_nan or not isfinite(m):
        st.log_s = NAN
    elif y >= 0:
        target_log_s(s, x[y * stride], m, st)
    else:
        st.log_s = log(s)
        st.rest = -1.0
    if want_wx and st.log_s == st.log_s:
        for j in range(n):
            d += (w[j] if w != NULL else 1.0) * (x[j * stride] - m)
    st.d_wx = d


cdef inline double target_grad(const RowStats* st, double x_y, double wy, double keep,
                               double spread, double w_total) noexcept nogil:
    """d loss / d x_y of a class-target row (before the reduction's scale):
    keep wy (p_y - 1) + spread (w_total p_y - wy), with p_y - 1 = -rest."""
    cdef double p_y = exp((x_y - st.m) - st.log_s)
    cdef double gy = -(keep * wy * (st.rest if st.rest >= 0 else 1.0 - p_y))
    if spread > 0:
        gy = gy + spread * (w_total * p_y - wy)
    return gy


cdef struct ClassOpts:
    const double* w         # class weights or NULL
    double w_total          # sum(w), or C
    double keep             # 1 - eps
    double spread           # eps / C
    int64_t ignore_index
    double grad_scale       # d reduction / d row loss


cdef inline bint plain_loss(const ClassOpts* op) noexcept nogil:
    """No class weights and no label smoothing: the loss the across-rows
    kernels compute whole (they pick the target's logit themselves)."""
    return op.w == NULL and op.spread == 0 and op.keep == 1


cdef inline void nll_pick(const floating* x, Py_ssize_t xs, int64_t y, const double* w,
                          int64_t ignore_index, double* loss, double* row_weight) noexcept nogil:
    """One row of nll_loss: loss = -(w[y] x[y]) (0 where ignored), row_weight = w[y].
    Written as the negated product so that a nan logit comes out with the same
    sign bit whether or not the compiler folds a weight of 1 (x -> -x)."""
    cdef double wy
    if y == ignore_index:
        loss[0] = 0.0
        row_weight[0] = 0.0
    else:
        wy = w[y] if w != NULL else 1.0
        loss[0] = -(wy * x[y * xs])
        row_weight[0] = wy


cdef inline bint ce_class_grad_row(const floating* x, Py_ssize_t n, int64_t y,
                                   const ClassOpts* op, floating* g, double* loss,
                                   double* row_weight) noexcept nogil:
    """ce_class_row for a contiguous row with a contiguous gradient row g that
    is not x (y not ignored): one exp per value.  The pass that sums the exps
    exp(x - m) leaves them in g (the max found first: one more read of the
    row, from the cache after the first), and g = alpha e / S - beta w
    follows in place, S the full sum: p = e / S is within ~2 ulp, where
    exp((x - m) - log_s) carried log_s's rounding (~|log_s| ulp).  The loss
    sums are row_stats': the terms at the max counted apart (target_log_s).
    False for a row the exact code defines (nan, inf, all -inf); g is then
    rewritten whole by the caller."""
    cdef RowStats st
    cdef double m = fast_max(x, n), s_below, c, wy, w_sum, x_y = x[y]
    cdef const double* w = op.w
    if not isfinite(m):
        return False
    if floating is double:
        s_below = lm_expwrite_below_d(x, g, n, m, &c)
    else:
        s_below = lm_expwrite_below_f(x, g, n, m, &c)
    if not isfinite(s_below):
        return False
    st.m = m
    if x_y == m:
        target_log_s(s_below + (c - 1.0), x_y, m, &st)
    else:
        st.log_s = log(s_below + c)
        st.rest = -1.0
    st.d_wx = fast_dot(x, w, n, m, &w_sum) if op.spread > 0 else 0.0
    wy = w[y] if w != NULL else 1.0
    loss[0] = op.keep * wy * ((m - x_y) + st.log_s)
    if op.spread > 0:
        loss[0] += op.spread * (op.w_total * st.log_s - st.d_wx)
    row_weight[0] = wy
    if floating is double:
        lm_affine_d(g, n, op.grad_scale * (op.keep * wy + op.spread * op.w_total)
                    / (s_below + c), op.grad_scale * op.spread, w)
    else:
        lm_affine_f(g, n, op.grad_scale * (op.keep * wy + op.spread * op.w_total)
                    / (s_below + c), op.grad_scale * op.spread, w)
    g[y] = <floating>(op.grad_scale * target_grad(&st, x_y, wy, op.keep, op.spread,
                                                  op.w_total))
    return True


cdef inline void ce_class_row(const floating* x, Py_ssize_t n, Py_ssize_t xs, int64_t y,
                              const ClassOpts* op, floating* g, Py_ssize_t gs,
                              double* loss, double* row_weight) noexcept nogil:
    """One row of cross_entropy_class_rows (g == NULL: no gradient)."""
    cdef RowStats st
    cdef Py_ssize_t k
    cdef double wy, p, gk, x_y
    cdef const double* w = op.w
    if y == op.ignore_index:
        loss[0] = 0.0
        row_weight[0] = 0.0
        if g != NULL:
            for k in range(n):
                g[k * gs] = 0
        return
    if (g != NULL and xs == 1 and gs == 1 and <const void*>g != <const void*>x
            and lm_simd_ready() and ce_class_grad_row(x, n, y, op, g, loss, row_weight)):
        return
    row_stats(x, n, xs, w, op.spread > 0, y, &st)
    wy = w[y] if w != NULL else 1.0
    if st.log_s != st.log_s:
        # a row whose loss is nan (row_stats' mark): nan for the loss and
        # every gradient entry, one NaN whatever the compiler makes of the
        # formulas below (with or without FMAs their NaN's sign differs, and
        # this helper is compiled into several modules that must agree)
        loss[0] = NAN
        row_weight[0] = wy
        if g != NULL:
            for k in range(n):
                g[k * gs] = NAN
        return
    loss[0] = op.keep * wy * ((st.m - x[y * xs]) + st.log_s)
    if op.spread > 0:
        loss[0] += op.spread * (op.w_total * st.log_s - st.d_wx)
    row_weight[0] = wy
    if g == NULL:
        return
    if xs == 1 and gs == 1 and isfinite(st.log_s):
        x_y = x[y]   # before the gradient is written (g may be x)
        # g = alpha * p - beta * w, then the target's -keep * wy
        if floating is double:
            lm_ce_grad_d(x, g, n, st.m, st.log_s, op.grad_scale * (op.keep * wy + op.spread * op.w_total),
                         op.grad_scale * op.spread, w)
        else:
            lm_ce_grad_f(x, g, n, st.m, st.log_s, op.grad_scale * (op.keep * wy + op.spread * op.w_total),
                         op.grad_scale * op.spread, w)
        # the target's entry again, in double, with p_y - 1 as -rest (no
        # cancellation: a float32 p_y would leave only its rounding error,
        # 6e-8, of a 1e-6 gradient, and a double one 0 of a 4e-18 one)
        g[y] = <floating>(op.grad_scale * target_grad(&st, x_y, wy, op.keep, op.spread,
                                                      op.w_total))
        return
    for k in range(n):
        if k == y:
            g[k * gs] = <floating>(op.grad_scale * target_grad(&st, x[k * xs], wy, op.keep,
                                                               op.spread, op.w_total))
            continue
        p = exp((x[k * xs] - st.m) - st.log_s)
        gk = op.keep * wy * p
        if op.spread > 0:
            gk = gk + op.spread * (op.w_total * p - (w[k] if w != NULL else 1.0))
        g[k * gs] = <floating>(op.grad_scale * gk)


cdef inline void ce_class_short_block(const floating* x, Py_ssize_t n_rows, Py_ssize_t n,
                                      const int64_t* y, const ClassOpts* op,
                                      double* loss, double* row_weight) noexcept nogil:
    """Loss of a block (<= SHORT_BLOCK) of short contiguous rows: log-sum via the
    across-rows kernel."""
    cdef double log_s[SHORT_BLOCK]
    cdef double special[SHORT_BLOCK]
    cdef Py_ssize_t r, k
    cdef const floating* row
    cdef double m, d, wy
    if plain_loss(op):
        # plain cross-entropy: the kernel picks the target's logit too, so no
        # row is read again here (ignored rows come back flagged)
        if short_ce(x, n_rows, n, y, op.ignore_index, loss, special) == 0:
            for r in range(n_rows):
                row_weight[r] = 1.0
            return
        for r in range(n_rows):
            if special[r]:
                ce_class_row(x + r * n, n, 1, y[r], op, NULL, 0, loss + r, row_weight + r)
            else:
                row_weight[r] = 1.0
        return
    short_rows(x, n_rows, n, SHORT_LOGSUM, log_s, <floating*>NULL, special)
    for r in range(n_rows):
        row = x + r * n
        if special[r] or y[r] == op.ignore_index:
            ce_class_row(row, n, 1, y[r], op, NULL, 0, loss + r, row_weight + r)
            continue
        m = row_max(row, n, 1)   # a flagged-free row: all finite
        wy = op.w[y[r]] if op.w != NULL else 1.0
        loss[r] = op.keep * wy * ((m - row[y[r]]) + log_s[r])
        if op.spread > 0:
            d = 0.0
            for k in range(n):
                d += (op.w[k] if op.w != NULL else 1.0) * (row[k] - m)
            loss[r] += op.spread * (op.w_total * log_s[r] - d)
        row_weight[r] = wy


cdef inline void ce_class_short_grad_block(const floating* x, Py_ssize_t n_rows,
                                           Py_ssize_t n, const int64_t* y, const ClassOpts* op,
                                           double* loss, double* row_weight,
                                           floating* g) noexcept nogil:
    """Loss and gradient of a block (<= SHORT_BLOCK) of short contiguous rows, for
    op without class weights or label smoothing; g contiguous like x.

    One pass of the across-rows kernel gives each row's loss and gradient
    (short_ce_grad: the target's entry in double as minus the other classes'
    share, so p_y - 1 neither cancels nor carries a float32 p_y's rounding).
    Rows the kernel flags, and ignored rows, go to ce_class_row.
    """
    cdef double special[SHORT_BLOCK]
    cdef Py_ssize_t r
    if short_ce_grad(x, n_rows, n, y, op.ignore_index, op.grad_scale, loss, g, special) == 0:
        for r in range(n_rows):
            row_weight[r] = 1.0
        return
    for r in range(n_rows):
        if special[r]:
            ce_class_row(x + r * n, n, 1, y[r], op, g + r * n, 1, loss + r, row_weight + r)
        else:
            row_weight[r] = 1.0


cdef inline void ce_class_short_blocks(const floating* x, Py_ssize_t n_rows, Py_ssize_t n,
                                       const int64_t* y, const ClassOpts* op,
                                       double* loss, double* row_weight) noexcept nogil:
    """ce_class_short_block over n_rows contiguous rows, block after block on this thread."""
    cdef Py_ssize_t blk, start
    for blk in range((n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK):
        start = blk * SHORT_BLOCK
        ce_class_short_block(x + start * n, min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n,
                             y + start, op, loss + start, row_weight + start)


cdef inline void ce_col_block(const floating* x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n,
                              const int64_t* y, const ClassOpts* op, double* loss,
                              double* row_weight) noexcept nogil:
    """The plain loss (no weights, smoothing or gradient) of nr <= LM_COL_ROWS
    rows of n <= LM_COL_MAX classes stored column-major (value k of row r at
    x[k * ld + r]) through col_rows; flagged rows (nan or inf logits, an
    ignored or bad target) by ce_class_row on a contiguous copy of the row,
    so a row gets the same bits in either layout."""
    cdef double special[LM_COL_ROWS]
    cdef floating row[LM_COL_MAX]
    cdef Py_ssize_t r, k
    if col_rows(x, ld, nr, n, 5, y, op.ignore_index, loss, <floating*>NULL, 0, special) == 0:
        for r in range(nr):
            row_weight[r] = 1.0
        return
    for r in range(nr):
        if special[r] == 0:
            row_weight[r] = 1.0
            continue
        for k in range(n):
            row[k] = x[k * ld + r]
        ce_class_row(row, n, 1, y[r], op, NULL, 0, loss + r, row_weight + r)


cdef inline void ce_class_contig_rows(const floating* x, Py_ssize_t n_rows, Py_ssize_t n,
                                      const int64_t* y, const ClassOpts* op, double* loss,
                                      double* row_weight, floating* g) noexcept nogil:
    """Cross-entropy of n_rows contiguous rows on this thread, dispatched as
    every contiguous row is (losses, fastpath, a middle axis's
    gathered tiles): the across-rows kernels for short rows and, for the plain
    loss, for rows of up to col_contig_max(5) classes (a transposed copy of
    64 rows at a time), else row by row.  g (contiguous like x) NULL: no
    gradient."""
    cdef floating xt[COL_BLOCK_VALUES]
    cdef Py_ssize_t r, k, blk, r0, nr
    if 2 <= n <= LM_SHORT_MAX and (g == NULL or (op.w == NULL and op.spread == 0)):
        if g == NULL:
            ce_class_short_blocks(x, n_rows, n, y, op, loss, row_weight)
        else:
            for blk in range((n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK):
                r0 = blk * SHORT_BLOCK
                ce_class_short_grad_block(x + r0 * n, min(<Py_ssize_t>SHORT_BLOCK, n_rows - r0),
                                          n, y + r0, op, loss + r0, row_weight + r0,
                                          g + r0 * n)
    elif g == NULL and plain_loss(op) and 2 <= n <= col_contig_max(5):
        for blk in range((n_rows + LM_COL_ROWS - 1) // LM_COL_ROWS):
            r0 = blk * LM_COL_ROWS
            nr = min(<Py_ssize_t>LM_COL_ROWS, n_rows - r0)
            transpose_rows(x + r0 * n, nr, n, xt)
            ce_col_block(xt, COL_LD, nr, n, y + r0, op, loss + r0, row_weight + r0)
    else:   # with the gradient, weights or smoothing: row by row
        for r in range(n_rows):
            ce_class_row(x + r * n, n, 1, y[r], op, (g + r * n) if g != NULL else NULL, 1,
                         loss + r, row_weight + r)


cdef inline double pairwise_sum(const double* a, Py_ssize_t n) noexcept nogil:
    """NumPy's pairwise summation of n contiguous doubles (DOUBLE_pairwise_sum,
    which np.add.reduce runs over a contiguous float64 array after its identity
    0.0: ``0.0 + pairwise_sum(a, n)`` is its result to the bit).

    The reductions of the per-row losses use it (the general path through
    losses.pairwise_total, the fast path directly), so both give one
    result whatever NumPy's own summation does: ~1e-16 relative error over
    millions of rows, blocks of 8 accumulators, recursive halves above 128.
    """
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


cdef inline double blocked_sum(const double* a, Py_ssize_t n, double* totals) noexcept nogil:
    """The loss reductions' sum of n doubles: pairwise_sum over each block of
    SHORT_BLOCK values, then pairwise_sum over the block totals (OUT totals:
    room for ceil(n / SHORT_BLOCK) doubles).

    Blocked so that a kernel can sum a block of row losses while it sits in a
    stack buffer, with no array of all the row losses (whose fresh pages cost
    more than the losses themselves for many short rows); the fast path and
    losses.pairwise_total give the same bits from an array of them.
    For n <= SHORT_BLOCK this is pairwise_sum itself (np.add.reduce's result);
    above, still ~1e-16 relative error over millions of rows.
    """
    cdef Py_ssize_t b, n_blocks = (n + SHORT_BLOCK - 1) // SHORT_BLOCK
    if n_blocks <= 1:
        return pairwise_sum(a, n)
    for b in range(n_blocks):
        totals[b] = pairwise_sum(a + b * SHORT_BLOCK,
                                 min(<Py_ssize_t>SHORT_BLOCK, n - b * SHORT_BLOCK))
    return pairwise_sum(totals, n_blocks)




# ---- cross-entropy with probability targets (losses) ----

ctypedef fused target_floating:
    float
    double


cdef inline void row_stats_prob(const floating* x, Py_ssize_t n, Py_ssize_t stride,
                                const target_floating* t, Py_ssize_t t_stride,
                                const double* w, double keep, double spread,
                                RowStats* st) noexcept nogil:
    """m, log_s, sum_wt and d_wtx of a logits row and its probability row.

    t'[c] = keep * t[c] + spread (keep = 1 - eps, spread = eps / C).
    """
    cdef Py_ssize_t j
    cdef double wt, swt = 0.0, d = 0.0
    # both rows contiguous and of one dtype: the target row is fetched while
    # the exps run, and read by the vectorised sums after
    if floating is double and target_floating is double and stride == 1 and t_stride == 1:
        row_stats(x, n, stride, NULL, False, -1, st, <double*>t)
    elif floating is float and target_floating is float and stride == 1 and t_stride == 1:
        row_stats(x, n, stride, NULL, False, -1, st, <float*>t)
    else:
        row_stats(x, n, stride, NULL, False, -1, st)
    if stride == 1 and t_stride == 1 and lm_simd_ready():
        # both rows contiguous and of one dtype: the vectorised sums (a scalar
        # loop of two dependent sums was most of the time at 1024x1000)
        if floating is double and target_floating is double:
            st.d_wtx = lm_wdot_d(x, t, n, st.m, keep, spread, w, &st.sum_wt)
            return
        elif floating is float and target_floating is float:
            st.d_wtx = lm_wdot_f(x, t, n, st.m, keep, spread, w, &st.sum_wt)
            return
    for j in range(n):
        wt = (keep * t[j * t_stride] + spread) * (w[j] if w != NULL else 1.0)
        swt += wt
        d += wt * (x[j * stride] - st.m)    # 0 * -inf = nan, as torch's t * log_softmax
    st.sum_wt = swt
    st.d_wtx = d


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


cdef inline void ce_prob_short_block(const floating* x, const target_floating* t,
                                     Py_ssize_t n_rows, Py_ssize_t n, const double* w,
                                     double keep, double spread, double* loss) noexcept nogil:
    """Losses of a block (<= SHORT_BLOCK) of short contiguous rows: the row's
    log-sum from the across-rows kernel, the rest as row_stats_prob; rows the
    kernel flags go to ce_prob_row."""
    cdef double log_s[SHORT_BLOCK]
    cdef double special[SHORT_BLOCK]
    cdef Py_ssize_t r, j
    cdef const floating* row
    cdef const target_floating* trow
    cdef double m, wt, swt, d
    short_rows(x, n_rows, n, SHORT_LOGSUM, log_s, <floating*>NULL, special)
    for r in range(n_rows):
        row = x + r * n
        trow = t + r * n
        if special[r]:
            ce_prob_row(row, n, 1, trow, 1, w, keep, spread, 0.0, <floating*>NULL, 0,
                        loss + r)
            continue
        m = row_max(row, n, 1)   # a flagged-free row: all finite
        swt = 0.0
        d = 0.0
        for j in range(n):
            wt = (keep * trow[j] + spread) * (w[j] if w != NULL else 1.0)
            swt += wt
            d += wt * (row[j] - m)
        loss[r] = swt * log_s[r] - d
