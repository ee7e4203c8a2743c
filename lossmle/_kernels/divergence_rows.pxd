# KL divergence and entropy rows (private).
#
# One definition for the general kernels (divergence.pyx) and the fast path
# (fastpath.pyx), so small inputs get the general path's bits.
#
# What is here:
#   rel_entr, entr                  scipy.special's elementwise terms, exact near
#                                   p = q (SciPy gh-20710's log1p form)
#   kl_row, entropy_row, row_sum    one row, any stride
#   KL_SHORT_MAX, kl_short_block(s), ENTR_SHORT_MAX, entropy_short_block(s)
#                                   many short contiguous rows at once
#   kl_contig_rows, entropy_contig_rows, divergence_strided_rows, DIV_*
#                                   contiguous rows, and a middle axis by tiles
#
# Every helper trusts its input (n >= 1, as the kernels' own callers check) and
# is ``noexcept nogil``, pure, safe in ``prange``.  Private: not part of the
# public Cython API (``__init__.pxd`` / ``rowops.pxd``); installed with the
# package only because the kernel modules cimport it.

from cython cimport floating
from libc.math cimport log, log1p, NAN, INFINITY
from libc.float cimport DBL_MAX, DBL_MIN
from libc.stdlib cimport free

from lossmle._kernels.rowops cimport (
    lm_kl_d, lm_kl_f, lm_kl_rows_d, lm_kl_rows_f, lm_entr_d, lm_entr_f, lm_entr_rows_d,
    lm_entr_rows_f, lm_sum_d, lm_sum_f, lm_simd_ready, SHORT_BLOCK, LM_ENTR_COLS_MAX,
)
from lossmle._kernels.rows cimport (
    tile_rows, tile_span, tile_buffer, gather_rows, strided_rows, TILE_LONG_ROW,
)


cdef enum:
    DIV_KL = 0              # divergence_strided_rows' kinds
    DIV_ENTR = 1
    DIV_REL_ENTR = 2

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
