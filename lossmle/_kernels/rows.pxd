# Row-level helpers shared by the kernel modules and lossmle._kernels.fastpath (private).
#
# Why here: each helper belongs to one kernel module's general path, and
# lossmle._kernels.fastpath runs the same rows for small plain inputs without the
# memoryview / fused ``def`` overhead.  Its results must be bit-identical to the
# general path's, so both run this one definition: ``cdef inline`` (as in
# ``rowops.pxd``), compiled into every module that cimports it.  Not part of
# the public Cython API (``__init__.pxd`` / ``rowops.pxd``): the signatures
# follow the kernels' needs and may change with them.  Installed with the
# package (package-data ``*.pxd``) only because the kernel modules cimport it.
#
# Who uses what:
#   short_block, short_blocks, contig_rows,         special (logsumexp_rows,
#       middle_axis_c, c_rows, tile_rows,               softmax_rows, log_softmax_rows),
#       tile_units,
#       tile_span,
#       tile_buffer, gather_rows,
#       scatter_rows, strided_rows                      fastpath (logsumexp, softmax,
#                                                       log_softmax); tiles also
#                                                       losses (middle class axis)
#   RowStats, row_stats_fast, row_stats             losses (every cross-entropy row);
#                                                       row_stats_fast also training
#   ClassOpts, ce_class_row, ce_class_short_block,  losses (cross_entropy_class_rows),
#       ce_class_short_blocks                           fastpath (cross_entropy)
#   ce_class_short_grad_block                       losses (with the gradient),
#                                                       fastpath (cross_entropy_with_grad)
#   target_floating, row_stats_prob, ce_prob_row,   losses (cross_entropy_prob_rows),
#       ce_prob_short_block                             fastpath (cross_entropy)
#   nll_pick                                        losses (nll_rows), fastpath
#                                                       (nll_loss)
#   pairwise_sum, blocked_sum                       losses (pairwise_total: the
#       general path's reductions, lossmle._reduce; the short-row totals), fastpath
#   rel_entr, entr, kl_row, row_sum, entropy_row    divergence, fastpath
#       (kl_divergence, entropy)
#   ENTR_SHORT_MAX, entropy_short_block(s)          divergence (entropy_rows),
#                                                       fastpath (entropy)
#   KL_SHORT_MAX, kl_short_block, kl_short_blocks   divergence (kl_rows),
#                                                       fastpath (kl_divergence)
#   kl_contig_rows, entropy_contig_rows,            divergence (a middle axis),
#       divergence_strided_rows, DIV_*                  fastpath (kl_divergence,
#                                                       entropy over axis 0)
#
# Every helper trusts its input (n >= 1, as the kernels' own callers check) and
# is ``noexcept nogil``, pure, safe in ``prange``.

from cython cimport floating
from libc.stdint cimport int64_t
from libc.math cimport exp, log, log1p, NAN, INFINITY, isfinite
from libc.float cimport DBL_MAX, DBL_MIN

from lossmle._kernels.rowops cimport (
    row_logsumexp, row_softmax, row_log_softmax, row_max, short_rows, fast_max, fast_sumexp,
    fast_sumexp_below,
    fast_dot, short_ce, short_ce_grad, lm_ce_grad_d, lm_ce_grad_f, lm_kl_d, lm_kl_f,
    lm_kl_rows_d, lm_kl_rows_f, lm_entr_d, lm_entr_f, lm_entr_rows_d, lm_entr_rows_f,
    lm_sum_d, lm_sum_f, lm_wdot_d, lm_wdot_f, lm_simd_ready, SHORT_BLOCK, SHORT_LSE,
    SHORT_SOFTMAX, SHORT_LOGSUM, LM_SHORT_MAX, col_rows, LM_COL_ROWS, LM_COL_MAX, transpose,
    lm_col_contig_max, LM_COL_CONTIG_MAX, LM_ENTR_COLS_MAX, LM_COL_LD_COPY,
)
from libc.stdlib cimport malloc, free


# ---- logsumexp, softmax, log_softmax of short rows (special) ----

cdef inline void short_block(const floating* x, Py_ssize_t n_rows, Py_ssize_t n, int mode,
                             floating* out) noexcept nogil:
    """One block (<= SHORT_BLOCK) of short contiguous rows through the SIMD kernel;
    nan/inf rows redone exactly.

    mode SHORT_LSE: out has one value per row; otherwise n per row.
    """
    cdef double res[SHORT_BLOCK]
    cdef double special[SHORT_BLOCK]
    cdef double* out_row = <double*>out if floating is double else res
    cdef Py_ssize_t r
    # logsumexp of double rows goes straight into out
    if short_rows(x, n_rows, n, mode, out_row, out, special) == 0:
        if mode == SHORT_LSE and floating is float:
            for r in range(n_rows):
                out[r] = <floating>res[r]
        return
    for r in range(n_rows):
        if mode == SHORT_LSE:
            out[r] = <floating>(row_logsumexp(x + r * n, n, 1) if special[r] else out_row[r])
        elif special[r]:
            if mode == SHORT_SOFTMAX:
                row_softmax(x + r * n, 1, out + r * n, 1, n)
            else:
                row_log_softmax(x + r * n, 1, out + r * n, 1, n)


cdef inline void short_blocks(const floating* x, Py_ssize_t n_rows, Py_ssize_t n, int mode,
                              floating* out) noexcept nogil:
    """short_block over n_rows contiguous rows, block after block on this thread."""
    cdef Py_ssize_t blk, start, per_row = 1 if mode == SHORT_LSE else n
    for blk in range((n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK):
        start = blk * SHORT_BLOCK
        short_block(x + start * n, min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n, mode,
                    out + start * per_row)



cdef enum:
    # contiguous rows take col_blocks up to col_contig_max(mode) values:
    # the SIMD variant's limit (lm_col_contig_max: 40 with AVX-512, else 20;
    # lm_simd.h says why), softmax up to COL_SOFTMAX_MAX.  Past it, the
    # transposed copies and the kernel cost more than the row-wise kernels.
    # One thread, 4000 rows, AVX-512, time per row against the row-wise
    # kernels (per-process minimum of three alternated runs), float64 /
    # float32: logsumexp 21 values 0.34 / 0.36, 24 0.60 / 0.41, 32 0.76 /
    # 0.63, 40 0.76 / 0.61; log_softmax 21 0.47 / 0.42, 32 0.92 / 1.09, 40
    # 0.88 / 0.71; cross-entropy 21 0.43 / 0.42, 32 0.91 / 0.76, 40 0.90 /
    # 0.71.  A row-wise row whose length is not a multiple of 8 pays for its
    # masked tail (21 values cost more than 24).  softmax writes its exps
    # twice over (the block, then the rows): col / row-wise 0.72 at 21 values
    # but 1.24 at 24 and 1.47 at 32 (float64), so it stops at 20.  A middle
    # axis, read in place, takes col_block up to LM_COL_MAX (3-6x the
    # row-wise speed)
    COL_CONTIG_MAX = LM_COL_CONTIG_MAX     # the largest col_contig_max
    COL_SOFTMAX_MAX = 20
    # one transposed block: COL_CONTIG_MAX columns of COL_LD >= LM_COL_ROWS
    # values (lm_simd.h says why 72)
    COL_LD = LM_COL_LD_COPY
    COL_BLOCK_VALUES = COL_CONTIG_MAX * COL_LD

cdef inline Py_ssize_t col_contig_max(int mode) noexcept nogil:
    """Contiguous rows of up to this many values take col_blocks (mode
    SHORT_LSE / SHORT_SOFTMAX / SHORT_LOG_SOFTMAX, or 5: the plain
    cross-entropy), for the SIMD variant in use."""
    if mode == SHORT_SOFTMAX:
        return COL_SOFTMAX_MAX
    return lm_col_contig_max()


cdef inline void col_block(const floating* x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n,
                           int mode, floating* out, Py_ssize_t ld_out) noexcept nogil:
    """mode SHORT_LSE / SHORT_SOFTMAX / SHORT_LOG_SOFTMAX of nr <= LM_COL_ROWS
    rows of LM_SHORT_MAX < n <= LM_COL_MAX values stored column-major (value k
    of row r at x[k * ld + r]) through the across-rows kernel col_rows; out[r]
    (SHORT_LSE) or out[k * ld_out + r].  Flagged rows (nan or inf values) are
    redone by the row helpers on a contiguous copy of the row, so they get
    the bits a contiguous row gets there."""
    cdef double res[LM_COL_ROWS]
    cdef double special[LM_COL_ROWS]
    cdef floating row[LM_COL_MAX]
    cdef floating row_out[LM_COL_MAX]
    cdef Py_ssize_t r, k
    cdef double n_bad = col_rows(x, ld, nr, n, mode, NULL, 0, res, out, ld_out, special)
    if mode == SHORT_LSE:
        for r in range(nr):
            out[r] = <floating>res[r]
    if n_bad == 0:
        return
    for r in range(nr):
        if special[r] == 0:
            continue
        for k in range(n):
            row[k] = x[k * ld + r]
        if mode == SHORT_LSE:
            out[r] = <floating>row_logsumexp(row, n, 1)
            continue
        if mode == SHORT_SOFTMAX:
            row_softmax(row, 1, row_out, 1, n)
        else:
            row_log_softmax(row, 1, row_out, 1, n)
        for k in range(n):
            out[k * ld_out + r] = row_out[k]


cdef inline void transpose_rows(const floating* x, Py_ssize_t nr, Py_ssize_t n,
                                floating* xt) noexcept nogil:
    """xt[k * COL_LD + r] = x[r * n + k]: nr <= LM_COL_ROWS contiguous rows of
    n values, column-major for col_block / ce_col_block."""
    transpose(x, n, nr, n, xt, COL_LD)


cdef inline void col_blocks(const floating* x, Py_ssize_t n_rows, Py_ssize_t n, int mode,
                            floating* out) noexcept nogil:
    """col_block over n_rows contiguous rows of LM_SHORT_MAX < n <= COL_CONTIG_MAX
    values, LM_COL_ROWS at a time through transposed copies (in L1)."""
    cdef floating xt[COL_BLOCK_VALUES]
    cdef floating ot[COL_BLOCK_VALUES]
    cdef Py_ssize_t blk, r0, nr
    for blk in range((n_rows + LM_COL_ROWS - 1) // LM_COL_ROWS):
        r0 = blk * LM_COL_ROWS
        nr = min(<Py_ssize_t>LM_COL_ROWS, n_rows - r0)
        transpose_rows(x + r0 * n, nr, n, xt)
        if mode == SHORT_LSE:
            col_block(xt, COL_LD, nr, n, mode, out + r0, 0)
            continue
        col_block(xt, COL_LD, nr, n, mode, ot, COL_LD)
        transpose(ot, COL_LD, n, nr, out + r0 * n, n)


cdef inline void contig_rows(const floating* x, Py_ssize_t n_rows, Py_ssize_t n, int mode,
                             floating* out) noexcept nogil:
    """mode SHORT_LSE / SHORT_SOFTMAX / SHORT_LOG_SOFTMAX of n_rows contiguous
    rows on this thread, dispatched as the kernels dispatch contiguous rows:
    an across-rows kernel for 2..LM_SHORT_MAX values and (in blocks of rows)
    for up to col_contig_max(mode), else row by row."""
    cdef Py_ssize_t r
    if 2 <= n <= LM_SHORT_MAX:
        short_blocks(x, n_rows, n, mode, out)
    elif LM_SHORT_MAX < n <= col_contig_max(mode):
        col_blocks(x, n_rows, n, mode, out)
    elif mode == SHORT_LSE:
        for r in range(n_rows):
            out[r] = <floating>row_logsumexp(x + r * n, n, 1)
    elif mode == SHORT_SOFTMAX:
        for r in range(n_rows):
            row_softmax(x + r * n, 1, out + r * n, 1, n)
    else:
        for r in range(n_rows):
            row_log_softmax(x + r * n, 1, out + r * n, 1, n)


# ---- rows along a middle axis (torch's (N, C, d1..) layout) ----
#
# Row (o, i) of a C-ordered (n_outer, n, n_inner) array is strided by n_inner:
# one value per cache line, none of it for the vectorised kernels.  So the
# rows are taken a tile at a time - the tile_rows(n, n_inner) neighbouring
# rows i0 .. i0 + T of one slab o, whose values lie side by side in memory -
# copied into a contiguous (T, n) buffer (gather_rows), run through the same
# contiguous-row helpers as the last axis (so a row's result is the same bits
# whichever axis it lies along), and written back (scatter_rows) where the
# output has rows too.  Memory traffic stays one read of the input and one
# write of the output; the copies run in L1/L2.  A unit of work is one tile:
# unit u is tile u % n_tiles of slab u // n_tiles.

cdef enum:
    DIV_KL = 0              # divergence_strided_rows' kinds
    DIV_ENTR = 1
    DIV_REL_ENTR = 2

cdef enum:
    TILE_VALUES = 16384     # a tile's values: 128 KiB of float64, in L2
    TILE_MIN_ROWS = 16      # rows per tile at least: a cache line of float32 values
    # longer rows are not gathered: they run strided, in place (a tile of them
    # would be a temporary of the input's order of size; up to this length a
    # tile's buffers stay <= 2 x 8 MiB per thread)
    TILE_LONG_ROW = 65536


cdef inline bint middle_axis_c(const Py_ssize_t* shape, const Py_ssize_t* strides,
                               Py_ssize_t item) noexcept nogil:
    """shape / strides (bytes) of an (n_outer, n, n_inner) view: a middle axis
    (n_inner > 1) of a C-ordered array of item-byte values, at least one row -
    the layout strided_rows' tiles (and col_block in place) take."""
    return (shape[2] > 1 and shape[0] > 0 and shape[1] > 0 and strides[2] == item
            and strides[1] == shape[2] * item
            and (shape[0] == 1 or strides[0] == shape[1] * shape[2] * item))


cdef inline bint c_rows(Py_ssize_t n_rows, Py_ssize_t n_cols, const Py_ssize_t* strides,
                        Py_ssize_t item) noexcept nogil:
    """strides (bytes) of an (n_rows, n_cols) array of item-byte values are C
    order's - the per-position outputs (and targets) beside a middle_axis_c
    input, which the tiles write and read as one flat run."""
    return strides[1] == item and (n_rows == 1 or strides[0] == n_cols * item)


cdef inline Py_ssize_t tile_rows(Py_ssize_t n, Py_ssize_t n_inner) noexcept nogil:
    """How many neighbouring rows (of n values, strided by n_inner) one tile holds."""
    cdef Py_ssize_t t = TILE_VALUES // n
    if t < TILE_MIN_ROWS:
        t = TILE_MIN_ROWS if n <= TILE_LONG_ROW else 1
    return t if t < n_inner else n_inner


cdef inline Py_ssize_t tile_span(Py_ssize_t u, Py_ssize_t n, Py_ssize_t n_inner,
                                 Py_ssize_t t_rows, Py_ssize_t* row0,
                                 Py_ssize_t* x_off) noexcept nogil:
    """Tile u (of t_rows = tile_rows(n, n_inner) rows): returns how many rows
    it holds; (OUT) row0, its first row's index in an (n_outer, n_inner)
    output, and x_off, that row's first value's offset in the input."""
    cdef Py_ssize_t n_tiles = (n_inner + t_rows - 1) // t_rows
    cdef Py_ssize_t o = u // n_tiles, i0 = (u % n_tiles) * t_rows
    row0[0] = o * n_inner + i0
    x_off[0] = o * n * n_inner + i0
    return min(t_rows, n_inner - i0)


cdef inline void* tile_buffer(Py_ssize_t n, Py_ssize_t n_inner, Py_ssize_t n_arrays,
                              Py_ssize_t item) noexcept nogil:
    """Memory for n_arrays tiles of tile_rows(n, n_inner) rows of n values
    (item bytes each), or NULL - rows longer than TILE_LONG_ROW, or no memory:
    the caller then runs the rows strided, in place."""
    if n > TILE_LONG_ROW:
        return NULL
    return malloc(n_arrays * tile_rows(n, n_inner) * n * item)


cdef inline Py_ssize_t tile_units(Py_ssize_t n_outer, Py_ssize_t n,
                                  Py_ssize_t n_inner) noexcept nogil:
    """How many tiles (units of work) an (n_outer, n, n_inner) array has."""
    cdef Py_ssize_t t = tile_rows(n, n_inner)
    return n_outer * ((n_inner + t - 1) // t)


cdef inline void gather_rows(const floating* x, Py_ssize_t n, Py_ssize_t n_inner,
                             Py_ssize_t n_rows, floating* buf) noexcept nogil:
    """buf[t * n + j] = x[j * n_inner + t] (t < n_rows, j < n): n_rows rows that
    start side by side at x, strided by n_inner, as contiguous rows."""
    cdef Py_ssize_t j, t
    for j in range(n):
        for t in range(n_rows):
            buf[t * n + j] = x[j * n_inner + t]


cdef inline void scatter_rows(const floating* buf, Py_ssize_t n, Py_ssize_t n_inner,
                              Py_ssize_t n_rows, floating* out) noexcept nogil:
    """The inverse of gather_rows: out[j * n_inner + t] = buf[t * n + j]."""
    cdef Py_ssize_t j, t
    for j in range(n):
        for t in range(n_rows):
            out[j * n_inner + t] = buf[t * n + j]


cdef inline void strided_rows(const floating* x, Py_ssize_t n, Py_ssize_t n_inner,
                              int mode, floating* out, Py_ssize_t u0,
                              Py_ssize_t u1) noexcept nogil:
    """mode SHORT_LSE / SHORT_SOFTMAX / SHORT_LOG_SOFTMAX of the rows of tiles
    u0 .. u1 of a C-ordered (n_outer, n, n_inner) x, on this thread.  out:
    (n_outer, n_inner) C-ordered for SHORT_LSE, else x's shape.  Rows longer
    than TILE_LONG_ROW, or without memory for the buffers, run strided in
    place (slower, as accurate, not the contiguous rows' bits)."""
    cdef Py_ssize_t t_rows = tile_rows(n, n_inner)
    cdef Py_ssize_t u, row0, x_off, cnt, r, blk
    cdef bint medium = LM_SHORT_MAX < n <= LM_COL_MAX
    # medium rows need no copy: col_block reads them where they are
    cdef floating* buf = NULL if medium else <floating*>tile_buffer(
        n, n_inner, 1 if mode == SHORT_LSE else 2, sizeof(floating))
    cdef floating* res = NULL if buf == NULL or mode == SHORT_LSE else buf + t_rows * n
    for u in range(u0, u1):
        cnt = tile_span(u, n, n_inner, t_rows, &row0, &x_off)
        if medium:
            for blk in range((cnt + LM_COL_ROWS - 1) // LM_COL_ROWS):
                r = blk * LM_COL_ROWS
                col_block(x + x_off + r, n_inner, min(<Py_ssize_t>LM_COL_ROWS, cnt - r), n,
                          mode, out + (row0 if mode == SHORT_LSE else x_off) + r, n_inner)
            continue
        if buf == NULL:
            for r in range(cnt):
                if mode == SHORT_LSE:
                    out[row0 + r] = <floating>row_logsumexp(x + x_off + r, n, n_inner)
                elif mode == SHORT_SOFTMAX:
                    row_softmax(x + x_off + r, n_inner, out + x_off + r, n_inner, n)
                else:
                    row_log_softmax(x + x_off + r, n_inner, out + x_off + r, n_inner, n)
            continue
        gather_rows(x + x_off, n, n_inner, cnt, buf)
        if mode == SHORT_LSE:
            contig_rows(buf, cnt, n, mode, out + row0)
        else:
            contig_rows(buf, cnt, n, mode, res)
            scatter_rows(res, n, n_inner, cnt, out + x_off)
    free(buf)


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
                                bint want_wx, Py_ssize_t y, RowStats* st) noexcept nogil:
    """row_stats for a contiguous row: vectorised, block by block, one read.

    y: the target class, or -1 for none (st.rest is then -1).  Where
    the target is the max of the row so far, its block is summed without the
    values at that max (lm_sumexp_below, one call) and the others at it are
    added back as their count: the target's term stays out of the sum (see
    target_log_s).  Elsewhere p_y <= 1/2 and the target's term stays in.
    Returns False when the row holds nan or +inf, or only -inf: the caller
    then runs the scalar code, which defines those cases.
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
            s += fast_sumexp_below(x + b0, nb, m, &c) + (c - 1.0)
            y_out = True
        else:
            s += fast_sumexp(x + b0, nb, m)
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
                           RowStats* st) noexcept nogil:
    """m, log_s and (want_wx) d_wx of a logits row; y as in row_stats_fast.

    nan, +inf (inf - inf) and all -inf rows (-inf - -inf) have a nan
    log_softmax in torch, so their loss is nan: log_s = nan marks them.
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, s = 0.0, v, d = 0.0
    cdef bint has_nan = False
    if stride == 1 and row_stats_fast(x, n, w, want_wx, y, st):
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


# ---- KL divergence and entropy rows (divergence) ----

cdef inline double rel_entr(double x, double y) noexcept nogil:
    """scipy.special.rel_entr: x log(x/y); 0 at x == 0 <= y; inf elsewhere; nan in, nan out."""
    cdef double r
    if x > 0 and y > 0:
        if 0.5 * y <= x <= 2.0 * y:
            # x - y is exact (Sterbenz): log1p of p/q - 1 to half an ulp keeps
            # the digits of a near-equal pair (log(x / y) has an ulp of x / y
            # as its floor; scipy's rel_entr since gh-20710)
            return x * log1p((x - y) / y)
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


# rows up to this long, back to back, take the flat kernel lm_kl_rows: the
# row-wise lm_kl has nothing to vectorise in a 4-value row (1e6 x 4: 2.7x
# faster), and it leaves the last n % 16 values of a row to the vectoriser's
# scalar epilogue, a division and a log each.  One thread, 4000 rows, time
# per row, flat / row-wise (per-process minimum of three alternated runs):
# 17 values 0.68, 21 0.49, 24 0.40, 31 0.37, 32 0.93, 40 0.55, 48 0.96, 64
# 1.00, 100 0.95; in one run each, 128 1.07, 256 1.12, 500 1.15.
cdef enum:
    KL_SHORT_MAX = 100


cdef inline bint kl_row(const floating* p, Py_ssize_t ps, const floating* q,
                        Py_ssize_t qs, Py_ssize_t n, bint validate,
                        floating* out) noexcept nogil:
    """out = sum rel_entr(p, q) over the row; returns True if p or q held a
    negative or nan entry (checked only when validate), flagged through the
    return so the caller can count bad rows."""
    cdef Py_ssize_t j
    cdef double s = 0.0, pj, qj, n_special = 1.0, row_special
    cdef bint bad_p = False, bad_q = False
    if ps == 1 and qs == 1 and lm_simd_ready():
        # a row of up to KL_SHORT_MAX values takes the flat kernel as a block
        # of such rows does, so it gets their bits however the rows arrive
        # (one q broadcast against many p, rows with a gap between them)
        if n <= KL_SHORT_MAX:
            if floating is double:
                n_special = lm_kl_rows_d(p, q, 1, n, &s, &row_special)
            else:
                n_special = lm_kl_rows_f(p, q, 1, n, &s, &row_special)
        elif floating is double:
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


cdef inline Py_ssize_t kl_short_block(const floating* p, const floating* q, Py_ssize_t n_rows,
                                      Py_ssize_t n, bint validate,
                                      floating* out) noexcept nogil:
    """KL of n_rows (<= SHORT_BLOCK) contiguous rows of n <= KL_SHORT_MAX values;
    rows the kernel flags are redone by kl_row, which also counts the invalid
    ones (returned).  Needs the SIMD table bound (lm_simd_ready())."""
    cdef double res[SHORT_BLOCK]
    cdef double special[SHORT_BLOCK]
    cdef double n_flagged
    cdef Py_ssize_t r, bad_rows = 0
    if floating is double:
        n_flagged = lm_kl_rows_d(p, q, n_rows, n, res, special)
    else:
        n_flagged = lm_kl_rows_f(p, q, n_rows, n, res, special)
    if n_flagged == 0:   # no row to redo (nor to validate: every entry regular)
        for r in range(n_rows):
            out[r] = <floating>res[r]
        return 0
    for r in range(n_rows):
        if special[r] != 0:
            bad_rows += kl_row(p + r * n, 1, q + r * n, 1, n, validate, out + r)
        else:
            out[r] = <floating>res[r]
    return bad_rows


cdef inline Py_ssize_t kl_short_blocks(const floating* p, const floating* q, Py_ssize_t n_rows,
                                       Py_ssize_t n, bint validate,
                                       floating* out) noexcept nogil:
    """kl_short_block over any number of rows, one block after another (one thread)."""
    cdef Py_ssize_t start = 0, bad_rows = 0
    while start < n_rows:
        bad_rows += kl_short_block(p + start * n, q + start * n,
                                   min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n, validate,
                                   out + start)
        start += SHORT_BLOCK
    return bad_rows


cdef inline double row_sum(const floating* x, Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
    cdef Py_ssize_t j
    cdef double s = 0.0
    for j in range(n):
        s += x[j * stride]
    return s


# contiguous rows of 2..ENTR_SHORT_MAX values take the across-rows kernel
# lm_entr_rows (1e6 x 4: the scalar rows cost a libm log per value; rows of
# 9..LM_ENTR_COLS_MAX values through a transposed copy, lm_entr_cols)
cdef enum:
    ENTR_SHORT_MAX = LM_ENTR_COLS_MAX


cdef inline double entropy_row(const floating* p, Py_ssize_t ps, const floating* q,
                               Py_ssize_t qs, Py_ssize_t n) noexcept nogil:
    """sum entr(p / sum(p)), or with q (not NULL) sum rel_entr(p / sum(p), q / sum(q)).

    A contiguous p (stride 1) without q: a row of 2..ENTR_SHORT_MAX values
    takes lm_entr_rows as a block of one row (so it gets the bits a block of
    such rows gets), a longer one the vectorised sum and lm_entr; a row with
    anything outside their fast domain is redone here, exactly.
    """
    cdef Py_ssize_t j
    cdef double s = 0.0, p_total, q_total, n_special = 1.0, row_special
    if q == NULL and ps == 1 and 2 <= n <= ENTR_SHORT_MAX and lm_simd_ready():
        # as a block of such rows (entropy_short_block), so the row gets
        # their bits however the rows arrive (with a gap between them, say)
        if floating is double:
            n_special = lm_entr_rows_d(p, 1, n, &s, &row_special)
        else:
            n_special = lm_entr_rows_f(p, 1, n, &s, &row_special)
        if n_special == 0:
            return s
        s = 0.0
    elif q == NULL and ps == 1 and n >= 16 and lm_simd_ready():
        if floating is double:
            p_total = lm_sum_d(p, n)
        else:
            p_total = lm_sum_f(p, n)
        if p_total > 0 and p_total <= DBL_MAX:
            if floating is double:
                s = lm_entr_d(p, n, p_total, &n_special)
            else:
                s = lm_entr_f(p, n, p_total, &n_special)
            if n_special == 0:
                return s
        s = 0.0
    p_total = row_sum(p, n, ps)
    if q == NULL:
        for j in range(n):
            s += entr(p[j * ps] / p_total)
        return s
    q_total = row_sum(q, n, qs)
    for j in range(n):
        s += rel_entr(p[j * ps] / p_total, q[j * qs] / q_total)
    return s




cdef inline void entropy_short_block(const floating* p, Py_ssize_t n_rows, Py_ssize_t n,
                                     floating* out) noexcept nogil:
    """entropy_row of n_rows (<= SHORT_BLOCK) contiguous rows of 2 <= n <=
    ENTR_SHORT_MAX values, into out[r]: the SIMD kernel, the rows it flags
    redone by entropy_row.  Needs the SIMD table bound (lm_simd_ready())."""
    cdef double res[SHORT_BLOCK]
    cdef double special[SHORT_BLOCK]
    cdef double n_flagged
    cdef Py_ssize_t r
    if floating is double:
        n_flagged = lm_entr_rows_d(p, n_rows, n, res, special)
    else:
        n_flagged = lm_entr_rows_f(p, n_rows, n, res, special)
    for r in range(n_rows):
        out[r] = <floating>res[r]
    if n_flagged != 0:
        for r in range(n_rows):
            if special[r] != 0:
                out[r] = <floating>entropy_row(p + r * n, 1, <const floating*>NULL, 0, n)


cdef inline void entropy_short_blocks(const floating* p, Py_ssize_t n_rows, Py_ssize_t n,
                                      floating* out) noexcept nogil:
    """entropy_short_block over any number of rows, one block after another."""
    cdef Py_ssize_t blk, start
    for blk in range((n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK):
        start = blk * SHORT_BLOCK
        entropy_short_block(p + start * n, min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n,
                            out + start)


cdef inline Py_ssize_t kl_contig_rows(const floating* p, const floating* q, Py_ssize_t n_rows,
                                      Py_ssize_t n, bint validate,
                                      floating* out) noexcept nogil:
    """kl_row over n_rows contiguous rows on this thread, dispatched as every
    contiguous row is (the across-rows kernel up to KL_SHORT_MAX values);
    returns how many rows held a bad entry (validate)."""
    cdef Py_ssize_t r, bad_rows = 0
    if n <= KL_SHORT_MAX and lm_simd_ready():
        return kl_short_blocks(p, q, n_rows, n, validate, out)
    for r in range(n_rows):
        bad_rows += kl_row(p + r * n, 1, q + r * n, 1, n, validate, out + r)
    return bad_rows


cdef inline void entropy_contig_rows(const floating* p, const floating* q, Py_ssize_t n_rows,
                                     Py_ssize_t n, floating* out) noexcept nogil:
    """entropy_row over n_rows contiguous rows (q NULL: entropy, else the
    relative entropy against q's rows) on this thread, dispatched as every
    contiguous row is (the across-rows kernel for 2..ENTR_SHORT_MAX values)."""
    cdef Py_ssize_t r
    if q == NULL and 2 <= n <= ENTR_SHORT_MAX and lm_simd_ready():
        entropy_short_blocks(p, n_rows, n, out)
        return
    for r in range(n_rows):
        out[r] = <floating>entropy_row(p + r * n, 1, (q + r * n) if q != NULL else NULL, 1, n)


cdef inline Py_ssize_t divergence_strided_rows(const floating* p, const floating* q,
                                               Py_ssize_t n, Py_ssize_t n_inner, int kind,
                                               bint validate, floating* out, Py_ssize_t u0,
                                               Py_ssize_t u1) noexcept nogil:
    """Tiles u0 .. u1 (strided_rows' tiles) of C-ordered (n_outer, n, n_inner)
    p (and q) reduced over the middle axis into the C-ordered (n_outer,
    n_inner) out: kind DIV_KL kl_row (returns the bad rows, validate), DIV_ENTR
    entropy_row of p, DIV_REL_ENTR entropy_row of p against q.  Each tile is
    gathered into contiguous rows and run as those (kl_contig_rows /
    entropy_contig_rows), so a row gets the same bits along any axis; rows
    longer than TILE_LONG_ROW, or without memory for the buffers, run
    strided in place."""
    cdef Py_ssize_t t_rows = tile_rows(n, n_inner)
    cdef Py_ssize_t u, cnt, r, at, x_off, bad_rows = 0
    cdef bint two = kind != DIV_ENTR
    cdef floating* pbuf = <floating*>tile_buffer(n, n_inner, 2 if two else 1, sizeof(floating))
    cdef floating* qbuf = NULL
    cdef const floating* ps
    cdef const floating* qs
    if pbuf != NULL and two:
        qbuf = pbuf + t_rows * n
    for u in range(u0, u1):
        cnt = tile_span(u, n, n_inner, t_rows, &at, &x_off)
        ps = p + x_off
        qs = (q + x_off) if two else NULL
        if pbuf == NULL:
            for r in range(cnt):
                if kind == DIV_KL:
                    bad_rows += kl_row(ps + r, n_inner, qs + r, n_inner, n, validate,
                                       out + at + r)
                else:
                    out[at + r] = <floating>entropy_row(ps + r, n_inner,
                                                        qs + r if two else NULL, n_inner, n)
            continue
        gather_rows(ps, n, n_inner, cnt, pbuf)
        if two:
            gather_rows(qs, n, n_inner, cnt, qbuf)
        if kind == DIV_KL:
            bad_rows += kl_contig_rows(pbuf, qbuf, cnt, n, validate, out + at)
        else:
            entropy_contig_rows(pbuf, qbuf, cnt, n, out + at)
    free(pbuf)
    return bad_rows


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
