# Shared row helpers for every lossmle kernel, and the C surface other Cython
# code can ``cimport``:  ``from lossmle._kernels.rowops cimport row_logsumexp``.
#
# Conventions (the contract for callers):
# * A "row" is ``n`` values at ``x[0], x[stride], ..., x[(n - 1) * stride]``;
#   ``stride`` counts elements (not bytes) and may be 0 or negative.  n >= 1.
# * Inputs are ``const floating*`` (float or double); every sum and every
#   intermediate is accumulated in double.
# * All helpers are ``noexcept nogil``, pure (no global state) and therefore
#   safe to call from any number of threads at once.
# * nan propagates: a row holding a nan gives nan (as scipy.special does).
# * Contiguous rows (stride 1) take the vectorised path of lm_simd.h; a row
#   whose fast result is not finite (nan, +inf, all -inf) is redone by the
#   exact scalar code below, so special values have one definition only.
#   A module that cimports these helpers calls ``simd_init()`` once (at
#   import) to select the CPU's best SIMD variant; without it the portable
#   baseline runs.

from cython cimport floating
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.math cimport exp, log, log1p, fabs, INFINITY, NAN, isfinite
from libc.stdint cimport int64_t


cdef extern from "lm_simd.h" nogil:
    void lm_simd_bind(const void* ref)
    bint lm_simd_ready()
    double lm_max_d(const double* x, Py_ssize_t n)
    double lm_max_f(const float* x, Py_ssize_t n)
    double lm_sumexp_below_d(const double* x, Py_ssize_t n, double m, double* c)
    double lm_sumexp_below_f(const float* x, Py_ssize_t n, double m, double* c)
    double lm_sumexp_d(const double* x, Py_ssize_t n, double m)
    double lm_sumexp_f(const float* x, Py_ssize_t n, double m)
    double lm_sumexp_below_pf_d(const double* x, Py_ssize_t n, double m, double* c, double* pf)
    double lm_sumexp_below_pf_f(const float* x, Py_ssize_t n, double m, double* c, float* pf)
    double lm_sumexp_pf_d(const double* x, Py_ssize_t n, double m, double* pf)
    double lm_sumexp_pf_f(const float* x, Py_ssize_t n, double m, float* pf)
    double lm_expwrite_below_d(const double* x, double* out, Py_ssize_t n, double m, double* c)
    double lm_expwrite_below_f(const float* x, float* out, Py_ssize_t n, double m, double* c)
    void lm_affine_d(double* g, Py_ssize_t n, double alpha, double beta, const double* w)
    void lm_affine_f(float* g, Py_ssize_t n, double alpha, double beta, const double* w)
    double lm_expwrite_d(const double* x, double* out, Py_ssize_t n, double m)
    double lm_expwrite_f(const float* x, float* out, Py_ssize_t n, double m)
    void lm_divide_d(double* out, Py_ssize_t n, double d)
    void lm_divide_f(float* out, Py_ssize_t n, double d)
    void lm_shift_d(const double* x, double* out, Py_ssize_t n, double m, double c)
    void lm_shift_f(const float* x, float* out, Py_ssize_t n, double m, double c)
    void lm_ce_grad_d(const double* x, double* g, Py_ssize_t n, double m, double log_s,
                      double alpha, double beta, const double* w)
    void lm_ce_grad_f(const float* x, float* g, Py_ssize_t n, double m, double log_s,
                      double alpha, double beta, const double* w)
    double lm_dot_d(const double* x, const double* w, Py_ssize_t n, double m, double* w_sum)
    double lm_dot_f(const float* x, const double* w, Py_ssize_t n, double m, double* w_sum)
    double lm_kl_d(const double* p, const double* q, Py_ssize_t n, double* n_special)
    double lm_kl_f(const float* p, const float* q, Py_ssize_t n, double* n_special)
    double lm_kl_rows_d(const double* p, const double* q, Py_ssize_t n_rows, Py_ssize_t n_cols,
                      double* out_row, double* special)
    double lm_kl_rows_f(const float* p, const float* q, Py_ssize_t n_rows, Py_ssize_t n_cols,
                      double* out_row, double* special)
    double lm_entr_d(const double* p, Py_ssize_t n, double total, double* n_special)
    double lm_entr_f(const float* p, Py_ssize_t n, double total, double* n_special)
    double lm_wdot_d(const double* x, const double* t, Py_ssize_t n, double m, double keep,
                     double spread, const double* w, double* wt_sum)
    double lm_wdot_f(const float* x, const float* t, Py_ssize_t n, double m, double keep,
                     double spread, const double* w, double* wt_sum)
    double lm_entr_rows_d(const double* p, Py_ssize_t n_rows, Py_ssize_t n_cols,
                          double* out_row, double* special)
    double lm_entr_rows_f(const float* p, Py_ssize_t n_rows, Py_ssize_t n_cols,
                          double* out_row, double* special)
    double lm_short_rows_d(const double* x, Py_ssize_t n_rows, Py_ssize_t n_cols, int mode,
                         double* out_row, double* out, double* special)
    double lm_short_rows_f(const float* x, Py_ssize_t n_rows, Py_ssize_t n_cols, int mode,
                         double* out_row, float* out, double* special)
    double lm_short_ce_d(const double* x, Py_ssize_t n_rows, Py_ssize_t n_cols,
                       const int64_t* target, int64_t ignore, double* loss, double* special)
    double lm_short_ce_f(const float* x, Py_ssize_t n_rows, Py_ssize_t n_cols,
                       const int64_t* target, int64_t ignore, double* loss, double* special)
    double lm_short_ce_grad_d(const double* x, Py_ssize_t n_rows, Py_ssize_t n_cols,
                              const int64_t* target, int64_t ignore, double scale,
                              double* loss, double* grad, double* special)
    double lm_short_ce_grad_f(const float* x, Py_ssize_t n_rows, Py_ssize_t n_cols,
                              const int64_t* target, int64_t ignore, double scale,
                              double* loss, float* grad, double* special)
    int LM_SHORT_MAX
    double lm_col_rows_d(const double* x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n,
                         int mode, const int64_t* target, int64_t ignore, double* out_row,
                         double* out, Py_ssize_t ld_out, double* special)
    double lm_col_rows_f(const float* x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n,
                         int mode, const int64_t* target, int64_t ignore, double* out_row,
                         float* out, Py_ssize_t ld_out, double* special)
    void lm_transpose_d(const double* src, Py_ssize_t src_ld, Py_ssize_t rows, Py_ssize_t cols,
                        double* dst, Py_ssize_t dst_ld)
    void lm_transpose_f(const float* src, Py_ssize_t src_ld, Py_ssize_t rows, Py_ssize_t cols,
                        float* dst, Py_ssize_t dst_ld)
    int lm_col_contig_max()
    enum:
        LM_COL_ROWS
        LM_COL_MAX
        LM_COL_CONTIG_MAX
        LM_ENTR_COLS_MAX
        LM_COL_LD_COPY


# Training primitives (issue 6; the last section of lm_simd_impl.h): double
# exp/log and double sums for both dtypes; see each function's comment there
# for which special values turn its result non-finite.
cdef extern from "lm_simd.h" nogil:
    double lm_ent_sums_d(const double* x, Py_ssize_t n, double inv_t, double x_max, double* s)
    double lm_ent_sums_f(const float* x, Py_ssize_t n, double inv_t, double x_max, double* s)
    double lm_ent_sums_below_d(const double* x, Py_ssize_t n, double inv_t, double x_max,
                               double* s, double* n_at_max)
    double lm_ent_sums_below_f(const float* x, Py_ssize_t n, double inv_t, double x_max,
                               double* s, double* n_at_max)
    double lm_kl_logit_sums_d(const double* p, const double* q, Py_ssize_t n, double inv_t,
                              double ma, double mb, double* sums)
    double lm_kl_logit_sums_f(const float* p, const float* q, Py_ssize_t n, double inv_t,
                              double ma, double mb, double* sums)
    void lm_kl_logit_grad_d(const double* p, const double* q, Py_ssize_t n, double inv_t,
                            double ma, double mb, double log_sa, double log_sb, double c,
                            double scale, double* gq, double* gp)
    void lm_kl_logit_grad_f(const float* p, const float* q, Py_ssize_t n, double inv_t,
                            double ma, double mb, double log_sa, double log_sb, double c,
                            double scale, float* gq, float* gp)
    double lm_js_logit_sum_d(const double* p, const double* q, Py_ssize_t n, double inv_t,
                             double lse_a, double lse_b)
    double lm_js_logit_sum_f(const float* p, const float* q, Py_ssize_t n, double inv_t,
                             double lse_a, double lse_b)
    double lm_bce_logits_d(const double* x, const double* t, const double* w,
                           const double* pw, Py_ssize_t n, double scale, double* loss,
                           double* grad, int* special)
    double lm_bce_logits_f(const float* x, const float* t, const double* w,
                           const double* pw, Py_ssize_t n, double scale, float* loss,
                           float* grad, int* special)
    double lm_rank_count_d(const double* x, Py_ssize_t n, double xy, Py_ssize_t y)
    double lm_rank_count_f(const float* x, Py_ssize_t n, double xy, Py_ssize_t y)
    double lm_mul_sum_d(const double* a, const double* b, Py_ssize_t n)
    double lm_mul_sum_f(const float* a, const float* b, Py_ssize_t n)
    double lm_sum_d(const double* a, Py_ssize_t n)
    double lm_sum_f(const float* a, Py_ssize_t n)
    void lm_softmax_bwd_d(const double* g, const double* y, double* out, Py_ssize_t n,
                          double dot)
    void lm_softmax_bwd_f(const float* g, const float* y, float* out, Py_ssize_t n,
                          double dot)
    void lm_log_softmax_bwd_d(const double* g, const double* z, double* out, Py_ssize_t n,
                              double total)
    void lm_log_softmax_bwd_f(const float* g, const float* z, float* out, Py_ssize_t n,
                              double total)


cdef inline str simd_init():
    """Bind this module to the SIMD variants compiled in lossmle._kernels.simd, (re)selecting
    the variant (LOSSMLE_SIMD may lower it); returns its name.  Call it once at
    import: until then every helper here takes its exact scalar path."""
    from lossmle._kernels import simd as _simd
    name = _simd.select()
    lm_simd_bind(PyCapsule_GetPointer(_simd.TABLE_REF, b"lossmle._kernels.simd.table_ref"))
    return name


# ---- vectorised primitives over contiguous rows, one name for both dtypes ----

cdef enum:
    # rows handled per call of the across-rows kernel for short rows
    SHORT_BLOCK = 256
    SHORT_LSE = 0
    SHORT_SOFTMAX = 1
    SHORT_LOG_SOFTMAX = 2
    SHORT_LOGSUM = 3      # logsumexp less the row max


cdef inline double short_rows(const floating* x, Py_ssize_t n_rows, Py_ssize_t n, int mode,
                              double* out_row, floating* out,
                              double* special) noexcept nogil:
    """Across-rows SIMD kernel for n_rows contiguous rows of 2..LM_SHORT_MAX values.

    mode SHORT_LSE / SHORT_LOGSUM write out_row[r]; SHORT_SOFTMAX /
    SHORT_LOG_SOFTMAX write out (n_rows x n).
    special[r] = 1 marks rows (nan/inf) the caller must redo exactly; returns
    how many (0: nothing to redo).
    """
    if floating is double:
        return lm_short_rows_d(x, n_rows, n, mode, out_row, out, special)
    else:
        return lm_short_rows_f(x, n_rows, n, mode, out_row, out, special)

cdef inline double col_rows(const floating* x, Py_ssize_t ld, Py_ssize_t nr, Py_ssize_t n,
                            int mode, const int64_t* target, int64_t ignore, double* out_row,
                            floating* out, Py_ssize_t ld_out, double* special) noexcept nogil:
    """Across-rows SIMD kernel for nr <= LM_COL_ROWS rows of n <= LM_COL_MAX values
    stored column-major (value k of row r at x[k * ld + r]): mode SHORT_LSE
    writes out_row[r], SHORT_SOFTMAX / SHORT_LOG_SOFTMAX out[k * ld_out + r],
    5 the cross-entropy of class target[r] into out_row[r].  special[r] = 1
    marks rows the caller must redo exactly; returns how many."""
    if floating is double:
        return lm_col_rows_d(x, ld, nr, n, mode, target, ignore, out_row, out, ld_out, special)
    else:
        return lm_col_rows_f(x, ld, nr, n, mode, target, ignore, out_row, out, ld_out, special)

cdef inline void transpose(const floating* src, Py_ssize_t src_ld, Py_ssize_t rows,
                           Py_ssize_t cols, floating* dst, Py_ssize_t dst_ld) noexcept nogil:
    """dst[k * dst_ld + r] = src[r * src_ld + k] for r < rows, k < cols (8 x 8
    tiles through registers in the AVX-512 variant)."""
    if floating is double:
        lm_transpose_d(src, src_ld, rows, cols, dst, dst_ld)
    else:
        lm_transpose_f(src, src_ld, rows, cols, dst, dst_ld)


cdef inline double short_ce(const floating* x, Py_ssize_t n_rows, Py_ssize_t n,
                            const int64_t* target, int64_t ignore, double* loss,
                            double* special) noexcept nogil:
    """Across-rows SIMD kernel: loss[r] = logsumexp(row r) - row r's value at
    class target[r], for n_rows contiguous rows of 2..LM_SHORT_MAX values.

    special[r] = 1 marks rows the caller must redo exactly: nan/inf in the row,
    a target equal to ignore or outside 0..n-1 (loss[r] is then meaningless);
    returns how many.
    """
    if floating is double:
        return lm_short_ce_d(x, n_rows, n, target, ignore, loss, special)
    else:
        return lm_short_ce_f(x, n_rows, n, target, ignore, loss, special)


cdef inline double short_ce_grad(const floating* x, Py_ssize_t n_rows, Py_ssize_t n,
                                 const int64_t* target, int64_t ignore, double scale,
                                 double* loss, floating* grad, double* special) noexcept nogil:
    """short_ce's loss[r], and grad (n_rows x n, contiguous) = scale * (softmax(row)
    - onehot(target[r])), the target's entry as minus the other classes' share
    (no cancellation near p = 1).  Flags as short_ce, plus rows whose softmax
    reaches near the subnormals; returns how many; flagged rows' grad is junk.
    """
    if floating is double:
        return lm_short_ce_grad_d(x, n_rows, n, target, ignore, scale, loss, grad, special)
    else:
        return lm_short_ce_grad_f(x, n_rows, n, target, ignore, scale, loss, grad, special)


cdef inline double fast_max(const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is double:
        return lm_max_d(x, n)
    else:
        return lm_max_f(x, n)


cdef inline double fast_sumexp_below(const floating* x, Py_ssize_t n, double m,
                                     double* n_at_max, floating* pf=NULL) noexcept nogil:
    """pf: n values the caller's next pass writes or reads (or NULL), fetched
    while the exps run (lm_sumexp_below_pf)."""
    if pf != NULL:
        if floating is double:
            return lm_sumexp_below_pf_d(x, n, m, n_at_max, pf)
        else:
            return lm_sumexp_below_pf_f(x, n, m, n_at_max, pf)
    if floating is double:
        return lm_sumexp_below_d(x, n, m, n_at_max)
    else:
        return lm_sumexp_below_f(x, n, m, n_at_max)


cdef inline double fast_sumexp(const floating* x, Py_ssize_t n, double m,
                               floating* pf=NULL) noexcept nogil:
    """pf: as fast_sumexp_below."""
    if pf != NULL:
        if floating is double:
            return lm_sumexp_pf_d(x, n, m, pf)
        else:
            return lm_sumexp_pf_f(x, n, m, pf)
    if floating is double:
        return lm_sumexp_d(x, n, m)
    else:
        return lm_sumexp_f(x, n, m)


cdef inline double fast_dot(const floating* x, const double* w, Py_ssize_t n, double m,
                           double* w_sum) noexcept nogil:
    """sum of w * (x - m) (w NULL: weights 1) and (OUT) sum of w."""
    if floating is double:
        return lm_dot_d(x, w, n, m, w_sum)
    else:
        return lm_dot_f(x, w, n, m, w_sum)


cdef inline double sign_of(double v) noexcept nogil:
    """np.sign for one double: -1, 0, +1, or nan."""
    if v > 0:
        return 1.0
    if v < 0:
        return -1.0
    return v  # 0.0 (either sign) or nan


cdef inline double row_max(const floating* x, Py_ssize_t n,
                           Py_ssize_t stride) noexcept nogil:
    """Maximum of a row; nan if the row holds a nan."""
    cdef Py_ssize_t j
    cdef double m = -INFINITY
    cdef double v
    cdef bint has_nan = False
    for j in range(n):
        v = x[j * stride]
        has_nan = has_nan | (v != v)
        m = v if v > m else m
    return NAN if has_nan else m


cdef inline double row_sum_exp_below_max(const floating* x, Py_ssize_t n,
                                         Py_ssize_t stride, double m,
                                         double* n_at_max) noexcept nogil:
    """Sum of exp(x_j - m) over the x_j != m, and (OUT) how many equal m.

    Keeping the maximal terms out of the sum is what makes
    log1p(sum / count) + log(count) + m exact when one term dominates
    (Blanchard, Higham & Higham 2021; scipy.special.logsumexp does the same).
    """
    cdef Py_ssize_t j
    cdef double s = 0.0, c = 0.0, v
    for j in range(n):
        v = x[j * stride]
        if v == m:
            c += 1.0
        else:
            s += exp(v - m)
    n_at_max[0] = c
    return s


# Contiguous rows longer than this are read once, block by block (its max,
# then its exps while it sits in L1): max-then-sum over a whole row read a
# 4096-value float64 row (32 KiB, an L1's size) twice from L2.
cdef enum:
    LSE_BLOCK = 2048


cdef inline bint blocked_sumexp_below(const floating* x, Py_ssize_t n, double* m_out,
                                      double* s_out, double* c_out,
                                      floating* pf=NULL) noexcept nogil:
    """The max m of a contiguous row, the sum s of exp(x - m) over the values
    below it and the count c at it, in one read: block by block against the
    running max, the older sums rescaled when it rises (values at an old max
    go into s).  False when the row holds nan or +inf, or only -inf: the
    caller's exact code defines those rows.  pf: as fast_sumexp_below."""
    cdef Py_ssize_t b0 = 0, nb
    cdef double m = -INFINITY, s = 0.0, c = 0.0, bm, bc
    while b0 < n:
        nb = min(<Py_ssize_t>LSE_BLOCK, n - b0)
        bm = fast_max(x + b0, nb)   # nan only when the block starts with one
        if bm > m:
            if m != -INFINITY:
                s = (s + c) * exp(m - bm)
            c = 0.0
            m = bm
        if bm != bm or m == INFINITY:
            return False
        if m == -INFINITY:
            # only -inf so far (masked or padded classes at the front): no
            # terms, but a nan fast_max passed over must still end the row;
            # exp(-inf) is 0 and exp(nan) nan.  (Giving up here would send
            # such rows, common with masked vocabularies, to the far slower
            # scalar code.)
            if fast_sumexp(x + b0, nb, 0.0) != 0.0:
                return False
            b0 += nb
            continue
        if bm == m:
            s += fast_sumexp_below(x + b0, nb, m, &bc, NULL if pf == NULL else pf + b0)
            c += bc
        else:
            s += fast_sumexp(x + b0, nb, m, NULL if pf == NULL else pf + b0)
        b0 += nb
    if not isfinite(s) or m == -INFINITY:
        return False
    m_out[0] = m
    s_out[0] = s
    c_out[0] = c
    return True


cdef inline double row_logsumexp(const floating* x, Py_ssize_t n,
                                 Py_ssize_t stride) noexcept nogil:
    """log(sum(exp(x))) of a row, stable and precise when one term dominates.

    Non-finite maxima need no sum: nan -> nan, +inf -> +inf, and an all -inf
    row -> -inf (log of an empty sum), exactly as the direct formula gives.
    """
    cdef double m, c, s
    if stride == 1 and lm_simd_ready() and n > LSE_BLOCK:
        if blocked_sumexp_below(x, n, &m, &s, &c):
            return log1p(s / c) + log(c) + m
    elif stride == 1 and lm_simd_ready():
        m = fast_max(x, n)
        if isfinite(m):
            # also for float: with the maxima in the sum, a row [0, -30, ...]
            # lost its result (~1e-12) to the sum's rounding (16384 ulp off)
            s = fast_sumexp_below(x, n, m, &c)
            if isfinite(s):
                return log1p(s / c) + log(c) + m
    m = row_max(x, n, stride)
    if not isfinite(m):
        return m
    s = row_sum_exp_below_max(x, n, stride, m, &c)
    return log1p(s / c) + log(c) + m


cdef inline double row_logsumexp_signed(const floating* x, Py_ssize_t x_stride,
                                        const floating* b, Py_ssize_t b_stride,
                                        Py_ssize_t n, double* sign) noexcept nogil:
    """log|sum(b * exp(x))| of a row, with (OUT) the sign of the sum.

    Entries with b == 0 take no part (even when x is inf or nan), the terms at
    the maximum are kept out of the shifted sum, and a result that is not
    finite falls back to the direct sum, all as scipy.special.logsumexp.
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, c = 0.0, s = 0.0, v, bj, out, sgn, direct = 0.0
    cdef bint has_nan = False
    for j in range(n):
        if b[j * b_stride] != 0:
            v = x[j * x_stride]
            has_nan = has_nan | (v != v)
            m = v if v > m else m
    if has_nan:
        m = NAN
    if isfinite(m):
        for j in range(n):
            bj = b[j * b_stride]
            if bj == 0:
                continue
            v = x[j * x_stride]
            if v == m:
                c += bj
            else:
                s += bj * exp(v - m)
        if s != 0:
            s = s / c
        sgn = sign_of(s + 1.0) * sign_of(c)
        if s < -1.0:
            s = -s - 2.0
        out = log1p(s) + log(fabs(c)) + m
        if isfinite(out):
            sign[0] = sgn
            return out
    # Infinite, nan or cancelling rows: the plain formula defines the answer.
    for j in range(n):
        direct += b[j * b_stride] * exp(<double>x[j * x_stride])
    sign[0] = sign_of(direct)
    return log(fabs(direct))


cdef inline double row_logsumexp_online(const floating* x, Py_ssize_t n,
                                        Py_ssize_t stride) noexcept nogil:
    """log(sum(exp(x))) in ONE read of the row (running max, rescaled sum).

    For kernels that must not read a long row twice.  An all -inf row gives
    -inf, +inf gives +inf, nan gives nan, as row_logsumexp.
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, s = 0.0, v
    for j in range(n):
        v = x[j * stride]
        if v > m:
            # exp(-inf) == 0 drops the old sum when the first finite value
            # arrives; the guard keeps -inf - -inf (nan) out of it.
            s = (s * exp(m - v) if m != -INFINITY else 0.0) + 1.0
            m = v
        elif v == v:
            if m != -INFINITY:
                s += exp(v - m)
        else:
            return NAN
    if not isfinite(m):
        return m
    return m + log(s)


cdef inline void row_softmax(const floating* x, Py_ssize_t x_stride,
                             floating* out, Py_ssize_t out_stride,
                             Py_ssize_t n) noexcept nogil:
    """out = exp(x - max) / sum(exp(x - max)) (scipy.special.softmax); out may be x."""
    cdef Py_ssize_t j
    cdef double m, s = 0.0, e
    if x_stride == 1 and out_stride == 1 and lm_simd_ready():
        m = fast_max(x, n)
        # in place (out == x), a nan found only by the exp pass would leave no
        # input for the exact redo: check the row first (one more exp pass)
        if isfinite(m) and (<const void*>out != <const void*>x
                            or isfinite(fast_sumexp(x, n, m))):
            if floating is double:
                s = lm_expwrite_d(x, out, n, m)
            else:
                s = lm_expwrite_f(x, out, n, m)
            if isfinite(s):
                if floating is double:
                    lm_divide_d(out, n, s)
                else:
                    lm_divide_f(out, n, s)
                return
        s = 0.0
    m = row_max(x, n, x_stride)
    for j in range(n):
        e = exp(x[j * x_stride] - m)
        out[j * out_stride] = <floating>e
        s += e
    # a nan or all -inf row leaves s == nan, so every entry is nan, as scipy.
    for j in range(n):
        out[j * out_stride] = <floating>(out[j * out_stride] / s)


cdef inline void row_log_softmax(const floating* x, Py_ssize_t x_stride,
                                 floating* out, Py_ssize_t out_stride,
                                 Py_ssize_t n) noexcept nogil:
    """out = x - logsumexp(x), precise at the maximum.

    With the maximal terms kept out of the sum, the maximum gets
    -(log1p(s / c) + log(c)) instead of 0 (scipy#19521).  A row with a
    non-finite maximum follows scipy: shift by 0, out = x - log(sum(exp(x))).
    """
    cdef Py_ssize_t j
    cdef double m, c, s, lse
    cdef bint have_sums = False
    # the output's lines are fetched for writing while the exps run (unless
    # they are x's own): the shift pass below then writes to the cache
    cdef floating* pf = NULL if <const void*>out == <const void*>x else out
    if x_stride == 1 and out_stride == 1 and lm_simd_ready():
        if n > LSE_BLOCK:
            have_sums = blocked_sumexp_below(x, n, &m, &s, &c, pf)
        else:
            m = fast_max(x, n)
            if isfinite(m):
                s = fast_sumexp_below(x, n, m, &c, pf)
                have_sums = isfinite(s)
        if have_sums:
            lse = log1p(s / c) + log(c)
            if floating is double:
                lm_shift_d(x, out, n, m, lse)
            else:
                lm_shift_f(x, out, n, m, lse)
            return
    m = row_max(x, n, x_stride)
    if isfinite(m):
        s = row_sum_exp_below_max(x, n, x_stride, m, &c)
        lse = log1p(s / c) + log(c)
    else:
        m = 0.0
        s = 0.0
        for j in range(n):
            s += exp(<double>x[j * x_stride])
        lse = log(s)
    for j in range(n):
        out[j * out_stride] = <floating>((x[j * x_stride] - m) - lse)
