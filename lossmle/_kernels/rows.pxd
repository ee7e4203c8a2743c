# How rows are walked, shared by every kernel module and fastpath (private).
#
# Why here: each helper belongs to the kernels' general path, and
# lossmle._kernels.fastpath runs the same rows for small plain inputs without the
# memoryview / fused ``def`` overhead.  Its results must be bit-identical to the
# general path's, so both run this one definition: ``cdef inline`` (as in
# ``rowops.pxd``), compiled into every module that cimports it.  The row
# helpers of the losses and of the divergences build on these, in
# ``loss_rows.pxd`` and ``divergence_rows.pxd``.
#
# What is here:
#   short_block(s), col_block(s), contig_rows   many short contiguous rows at once
#                                               (blocks, transposed column blocks)
#   middle_axis_c, c_rows, tile_*, gather_rows, a class axis in the middle
#       scatter_rows, strided_rows              (torch's (N, C, d1..) layout)
#   used by special, losses, divergence and fastpath
#
# Every helper trusts its input (n >= 1, as the kernels' own callers check) and
# is ``noexcept nogil``, pure, safe in ``prange``.  Private: not part of the
# public Cython API (``__init__.pxd`` / ``rowops.pxd``); installed with the
# package only because the kernel modules cimport it.

from cython cimport floating
from libc.stdlib cimport malloc, free

from lossmle._kernels.rowops cimport (
    row_logsumexp, row_softmax, row_log_softmax, short_rows, SHORT_BLOCK, SHORT_LSE,
    SHORT_SOFTMAX, LM_SHORT_MAX, col_rows, LM_COL_ROWS, LM_COL_MAX, transpose,
    lm_col_contig_max, LM_COL_CONTIG_MAX, LM_COL_LD_COPY,
)

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
    # transposed copies and the kernel cost more than the row-wise kernels
    # (a row-wise row whose length is not a multiple of 8 pays for its masked
    # tail, which is what the transposed block saves); softmax, which writes
    # its exps twice over (the block, then the rows), stops at 20.  A middle
    # axis, read in place, takes col_block up to LM_COL_MAX.  The measured
    # crossovers are in benchmarks/RESULTS.md ("Transposed column blocks").
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
