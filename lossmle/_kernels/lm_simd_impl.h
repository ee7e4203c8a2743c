/* One instruction-set variant of lossmle's contiguous-row primitives.
 *
 * Layers: rowops.pxd / rows.pxd (Cython row helpers, called from
 * the nogil row loops of the kernel modules) -> the dispatch table of
 * lm_simd.h (one entry per ISA, chosen once at import) -> these functions:
 * per-row passes (lm_max, lm_sumexp*, lm_expwrite, lm_divide, lm_shift, the
 * dot products, lm_kl / lm_entr, the logit-space sums), and across-rows
 * kernels for many short or medium rows (lm_short_rows_*, lm_col_rows,
 * lm_entr_rows / _cols: one SIMD lane per row, over a transposed copy).
 * Numerical methods: every exp is taken against the row max, so no term
 * exceeds 1; log-sum-exp keeps the terms equal to the max out of the sum,
 * log1p(s / c) + log(c) (Blanchard, Higham & Higham 2021); softmax divides
 * by FMA steps that give the correctly rounded quotient where Markstein's
 * theorem applies (float rows: float-float steps, nearest but for near-ties);
 * the across-rows sums of medium rows are compensated (TwoSum).  Long rows
 * prefetch the next row while this one's exps run.
 *
 * Included by lm_simd.h once per ISA (it then includes itself once per dtype):
 * LM_ISA names the variant,
 * LM_TARGET is its function attribute, LM_T the element type (float or
 * double) with LM_SFX its suffix (f or d) and LM_EXPNEG the matching exp for
 * arguments <= 0.  Every sum is accumulated in double.  Loops are written
 * for the compiler's vectoriser: `omp simd` reductions (the only way to let
 * GCC reassociate a floating-point sum without -ffast-math) and branch-free
 * bodies.
 *
 * None of these functions handle nan or +inf specially: the callers in
 * rowops.pxd detect a non-finite result and redo that row with the exact
 * scalar code, so special values follow one definition only.
 */

#ifndef LM_T
/* Included by lm_simd.h once per ISA: instantiate this file for both dtypes. */
#define LM_T double
#define LM_SFX d
#define LM_EXPNEG lm_exp_neg
#define LM_EXPNEG_SUM lm_exp_neg_sum
#define LM_DOUBLE 1
#include "lm_simd_impl.h"
#undef LM_DOUBLE
#undef LM_T
#undef LM_SFX
#undef LM_EXPNEG
#undef LM_EXPNEG_SUM
#define LM_T float
#define LM_SFX f
#define LM_EXPNEG lm_expf_neg
#define LM_EXPNEG_SUM lm_expf_neg_sum
#define LM_DOUBLE 0
#include "lm_simd_impl.h"
#undef LM_DOUBLE
#undef LM_T
#undef LM_SFX
#undef LM_EXPNEG
#undef LM_EXPNEG_SUM
#else /* LM_T: one (ISA, dtype) instance */

#define LM_CAT3_(a, b, c) a##_##b##_##c
#define LM_CAT3(a, b, c) LM_CAT3_(a, b, c)
#define LM_FN(name) LM_CAT3(name, LM_SFX, LM_ISA)

/* entropy's log: float rows' terms (all of one sign, rounded to float at
 * the end) need no more than lm_log_normal_for_float */
#if LM_DOUBLE
#define LM_ENTR_LOG lm_log_normal
#else
#define LM_ENTR_LOG lm_log_normal_for_float
#endif
/* LM_VEXP: this instance's exp-bound loops are the intrinsic ones below
 * (the AVX-512 variant: lm_exp_neg_pd512 / lm_expf_neg_ps512 in lm_simd.h;
 * float sums in double, as everywhere); every other instance keeps the
 * auto-vectorised loops. */
#if defined(LM_EXP_PD512)
#define LM_VEXP 1
/* lanes j .. end - 1 of a tail of fewer than 8 (16 for float) */
#define LM_TAIL_MASK(j, end) ((__mmask8)((1u << ((end) - (j))) - 1u))
#define LM_TAIL_MASK16(j, end) ((__mmask16)((1u << ((end) - (j))) - 1u))
/* lm_transpose's 8 x 8 tile for this dtype (lm_simd.h) */
#if LM_DOUBLE
#define LM_TRANSPOSE8 lm_transpose8_pd512
#else
#define LM_TRANSPOSE8 lm_transpose8_ps256
#endif
#else
#define LM_VEXP 0
#endif

/* max of a row (nan entries are skipped: the caller's sum turns nan). */
static LM_TARGET double LM_FN(lm_max)(const LM_T *x, ptrdiff_t n)
{
    LM_T m = x[0];
    ptrdiff_t j;
#if LM_VEXP && LM_DOUBLE
    /* four running maxima: the vectoriser keeps one, so every vmaxpd waits
     * for the previous one's latency; four independent chains keep the
     * max unit busy.  Same values
     * and nan rule as the loop below: each lane starts at x[0] and
     * vmaxpd(x, m) keeps m when x is nan. */
    if (n >= 32) {
        __m512d m0 = _mm512_set1_pd(x[0]), m1 = m0, m2 = m0, m3 = m0;
        for (j = 0; j + 32 <= n; j += 32) {
            m0 = _mm512_max_pd(_mm512_loadu_pd(x + j), m0);
            m1 = _mm512_max_pd(_mm512_loadu_pd(x + j + 8), m1);
            m2 = _mm512_max_pd(_mm512_loadu_pd(x + j + 16), m2);
            m3 = _mm512_max_pd(_mm512_loadu_pd(x + j + 24), m3);
        }
        for (; j < n; j += 8) {
            __mmask8 k = n - j >= 8 ? (__mmask8)0xff : LM_TAIL_MASK(j, n);
            m0 = _mm512_mask_max_pd(m0, k, _mm512_maskz_loadu_pd(k, x + j), m0);
        }
        m0 = _mm512_max_pd(_mm512_max_pd(m0, m1), _mm512_max_pd(m2, m3));
        return _mm512_reduce_max_pd(m0);
    }
#endif
#pragma omp simd reduction(max : m)
    for (j = 0; j < n; j++) {
        m = x[j] > m ? x[j] : m;
    }
    return (double)m;
}

/* The exp-bound passes run over a row in chunks of LM_PF_BYTES, each chunk
 * prefetching as many bytes of what follows the row (see LM_PREFETCH). */
#define LM_PF_CHUNK ((ptrdiff_t)(LM_PF_BYTES / sizeof(LM_T)))
/* Rows shorter than this are neither chunked (double) nor prefetched; float
 * is always chunked (its two-loop sums use a chunk-sized buffer).  From 128
 * values on, the next row comes in while this one's exps run.  Where memory
 * is fast next to the exps, prefetching pays only for long rows; on machines
 * with little L2 per core and a slow L3 it already pays from a few hundred
 * values, and below 128 the rows are too short for it to matter either
 * way.  (Measurements: benchmarks/RESULTS.md, "Kernel design
 * measurements".) */
#define LM_PF_MIN_N 128
#define LM_PF_LOOP_BEGIN(after)                                                  \
    const char *pf_ = (const char *)(after);                                     \
    const int pf_on_ = n >= LM_PF_MIN_N;                                         \
    const ptrdiff_t chunk_ =                                                     \
        (pf_on_ || sizeof(LM_T) < sizeof(double)) ? LM_PF_CHUNK : n;             \
    ptrdiff_t j0_;                                                               \
    for (j0_ = 0; j0_ < n; j0_ += chunk_) {                                      \
        const ptrdiff_t end_ = n - j0_ < chunk_ ? n : j0_ + chunk_;              \
        const char *pf_end_ = pf_ + (end_ - j0_) * (ptrdiff_t)sizeof(LM_T);     \
        if (pf_on_)                                                              \
            for (; pf_ < pf_end_; pf_ += 64) LM_PREFETCH(pf_);                   \
        if (pfw_ != NULL)                                                         \
            for (const char *pw_ = (const char *)(pfw_ + j0_);                    \
                 pw_ < (const char *)(pfw_ + end_); pw_ += 64)                    \
                __builtin_prefetch(pw_, 1, 3);
#define LM_PF_LOOP_END }

/* sum of exp(x - m) over x != m, and (OUT) the count of x == m.  For
 * float, two loops per chunk as in lm_sumexp; the chunk's count is a float
 * (exact: at most 256). */
static inline __attribute__((always_inline)) LM_TARGET double LM_FN(lm_sumexp_below_body)(
    const LM_T *x, ptrdiff_t n, double m, double *n_at_max, const LM_T *pfw_)
{
    const LM_T mt = (LM_T)m;
    double s = 0.0, c = 0.0;
    ptrdiff_t j;
#if LM_VEXP && !LM_DOUBLE
    {
    const __m512 mv = _mm512_set1_ps(mt);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    long long cnt = 0;
    LM_PF_LOOP_BEGIN(x + n)
    for (j = j0_; j < end_; j += 16) {
        __mmask16 k = end_ - j >= 16 ? (__mmask16)0xffff : LM_TAIL_MASK16(j, end_);
        __m512 x0 = _mm512_maskz_loadu_ps(k, x + j);
        __mmask16 b0 = _mm512_mask_cmp_ps_mask(k, x0, mv, _CMP_NEQ_UQ);  /* not at the max */
        __m512 e = _mm512_maskz_mov_ps(b0, lm_expf_neg_ps512(_mm512_sub_ps(x0, mv)));
        LM_ADD_PS_TO_PD(s0, s1, e);
        cnt += __builtin_popcount((unsigned)k) - __builtin_popcount((unsigned)b0);
    }
    LM_PF_LOOP_END
    (void)s;
    *n_at_max = (double)cnt;
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    }
#elif LM_VEXP
    {
    const __m512d mv = _mm512_set1_pd(m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    long long cnt = 0;
    LM_PF_LOOP_BEGIN(x + n)
    for (j = j0_; j + 16 <= end_; j += 16) {
        __m512d x0 = _mm512_loadu_pd(x + j), x1 = _mm512_loadu_pd(x + j + 8);
        __mmask8 b0 = _mm512_cmp_pd_mask(x0, mv, _CMP_NEQ_UQ);  /* not at the max */
        __mmask8 b1 = _mm512_cmp_pd_mask(x1, mv, _CMP_NEQ_UQ);
        s0 = _mm512_mask_add_pd(s0, b0, s0, lm_exp_neg_pd512(_mm512_sub_pd(x0, mv)));
        s1 = _mm512_mask_add_pd(s1, b1, s1, lm_exp_neg_pd512(_mm512_sub_pd(x1, mv)));
        cnt += 16 - __builtin_popcount((unsigned)b0) - __builtin_popcount((unsigned)b1);
    }
    for (; j < end_; j += 8) {
        __mmask8 k = end_ - j >= 8 ? (__mmask8)0xff : LM_TAIL_MASK(j, end_);
        __m512d x0 = _mm512_maskz_loadu_pd(k, x + j);
        __mmask8 b0 = _mm512_mask_cmp_pd_mask(k, x0, mv, _CMP_NEQ_UQ);
        s0 = _mm512_mask_add_pd(s0, b0, s0, lm_exp_neg_pd512(_mm512_sub_pd(x0, mv)));
        cnt += __builtin_popcount((unsigned)k) - __builtin_popcount((unsigned)b0);
    }
    LM_PF_LOOP_END
    (void)mt;
    (void)s;
    *n_at_max = (double)cnt;
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    }
#endif
    LM_PF_LOOP_BEGIN(x + n)
    if (sizeof(LM_T) < sizeof(double)) {
        LM_T e[LM_PF_BYTES / sizeof(LM_T)], cf = 0;
#pragma omp simd reduction(+ : cf)
        for (j = j0_; j < end_; j++) {
            int at_max = x[j] == mt;
            e[j - j0_] = at_max ? (LM_T)0 : LM_EXPNEG_SUM(x[j] - mt);
            cf += at_max ? (LM_T)1 : (LM_T)0;
        }
#pragma omp simd reduction(+ : s)
        for (j = 0; j < end_ - j0_; j++) s += (double)e[j];
        c += (double)cf;
    } else {
#pragma omp simd reduction(+ : s, c)
        for (j = j0_; j < end_; j++) {
            LM_T e = LM_EXPNEG_SUM(x[j] - mt);
            int at_max = x[j] == mt;
            s += at_max ? 0.0 : (double)e;
            c += at_max ? 1.0 : 0.0;
        }
    }
    LM_PF_LOOP_END
    *n_at_max = c;
    return s;
}

/* sum of exp(x - m), m >= every x.  For float, the exps of a chunk go to a
 * buffer first and are summed (in double) in a second loop: in one loop the
 * double sum set the vector width, so the float exp ran on half-width
 * vectors. */
static inline __attribute__((always_inline)) LM_TARGET double LM_FN(lm_sumexp_body)(
    const LM_T *x, ptrdiff_t n, double m, const LM_T *pfw_)
{
    const LM_T mt = (LM_T)m;
    double s = 0.0;
    ptrdiff_t j;
#if LM_VEXP && !LM_DOUBLE
    {
    const __m512 mv = _mm512_set1_ps(mt);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    LM_PF_LOOP_BEGIN(x + n)
    for (j = j0_; j + 16 <= end_; j += 16) {
        __m512 e = lm_expf_neg_ps512(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv));
        LM_ADD_PS_TO_PD(s0, s1, e);
    }
    if (j < end_) {
        __mmask16 k = LM_TAIL_MASK16(j, end_);
        __m512 e = _mm512_maskz_mov_ps(
            k, lm_expf_neg_ps512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mv)));
        LM_ADD_PS_TO_PD(s0, s1, e);
    }
    LM_PF_LOOP_END
    (void)s;
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    }
#elif LM_VEXP
    {
    const __m512d mv = _mm512_set1_pd(m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    LM_PF_LOOP_BEGIN(x + n)
    for (j = j0_; j + 16 <= end_; j += 16) {
        s0 = _mm512_add_pd(s0, lm_exp_neg_pd512(_mm512_sub_pd(_mm512_loadu_pd(x + j), mv)));
        s1 = _mm512_add_pd(s1, lm_exp_neg_pd512(_mm512_sub_pd(_mm512_loadu_pd(x + j + 8), mv)));
    }
    for (; j < end_; j += 8) {
        __mmask8 k = end_ - j >= 8 ? (__mmask8)0xff : LM_TAIL_MASK(j, end_);
        __m512d e = lm_exp_neg_pd512(_mm512_sub_pd(_mm512_maskz_loadu_pd(k, x + j), mv));
        s0 = _mm512_mask_add_pd(s0, k, s0, e);
    }
    LM_PF_LOOP_END
    (void)mt;
    (void)s;
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    }
#endif
    LM_PF_LOOP_BEGIN(x + n)
    if (sizeof(LM_T) < sizeof(double)) {
        LM_T e[LM_PF_BYTES / sizeof(LM_T)];
#pragma omp simd
        for (j = j0_; j < end_; j++) e[j - j0_] = LM_EXPNEG_SUM(x[j] - mt);
#pragma omp simd reduction(+ : s)
        for (j = 0; j < end_ - j0_; j++) s += (double)e[j];
    } else {
#pragma omp simd reduction(+ : s)
        for (j = j0_; j < end_; j++) {
            s += (double)LM_EXPNEG_SUM(x[j] - mt);
        }
    }
    LM_PF_LOOP_END
    return s;
}

static LM_TARGET double LM_FN(lm_sumexp_below)(const LM_T *x, ptrdiff_t n, double m,
                                               double *n_at_max)
{
    return LM_FN(lm_sumexp_below_body)(x, n, m, n_at_max, NULL);
}

static LM_TARGET double LM_FN(lm_sumexp)(const LM_T *x, ptrdiff_t n, double m)
{
    return LM_FN(lm_sumexp_body)(x, n, m, NULL);
}

/* lm_sumexp_below / lm_sumexp that also fetch the n values at pf, chunk by
 * chunk (prefetchw: owned, ready to be written): the row that the caller's
 * next pass writes (log_softmax's output, cross-entropy's gradient) or reads
 * with x (a probability target) arrives while the exps run, so that pass
 * works in the cache instead of waiting on memory. */
static LM_TARGET double LM_FN(lm_sumexp_below_pf)(const LM_T *x, ptrdiff_t n, double m,
                                                 double *n_at_max, LM_T *pf)
{
    return LM_FN(lm_sumexp_below_body)(x, n, m, n_at_max, pf);
}

static LM_TARGET double LM_FN(lm_sumexp_pf)(const LM_T *x, ptrdiff_t n, double m, LM_T *pf)
{
    return LM_FN(lm_sumexp_body)(x, n, m, pf);
}

/* out = exp(x - m); returns the sum.  The exp without the subnormal branch
 * (LM_EXPNEG_SUM, identical above it) runs first, counting the values below
 * that branch's threshold; a row with any redoes its exps with LM_EXPNEG
 * (values near the subnormals are rare: a spread of 87 in float, 708 in
 * double).  float: the exps at full width, summed in a second loop.  For
 * out == x the redo would read its own output: a first read of the row
 * decides, and a row with such values takes LM_EXPNEG at once - the exps,
 * and the bits, of out != x either way. */
static LM_TARGET double LM_FN(lm_expwrite)(const LM_T *x, LM_T *out, ptrdiff_t n, double m)
{
    const LM_T *const pfw_ = NULL;
    const LM_T mt = (LM_T)m;
    const LM_T tiny = sizeof(LM_T) < sizeof(double) ? (LM_T)-87.0 : (LM_T)-708.0;
    double s = 0.0;
    LM_T low = 0;
    ptrdiff_t j;
#if LM_VEXP && !LM_DOUBLE
    {
    /* one pass: lm_expf_neg_ps512 is exact in the subnormals too */
    const __m512 mv = _mm512_set1_ps(mt);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    (void)tiny;
    (void)low;
    (void)s;
    LM_PF_LOOP_BEGIN(x + n)
    for (j = j0_; j + 16 <= end_; j += 16) {
        __m512 e = lm_expf_neg_ps512(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv));
        _mm512_storeu_ps(out + j, e);
        LM_ADD_PS_TO_PD(s0, s1, e);
    }
    if (j < end_) {
        __mmask16 k = LM_TAIL_MASK16(j, end_);
        __m512 e = _mm512_maskz_mov_ps(
            k, lm_expf_neg_ps512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mv)));
        _mm512_mask_storeu_ps(out + j, k, e);
        LM_ADD_PS_TO_PD(s0, s1, e);
    }
    LM_PF_LOOP_END
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    }
#elif LM_VEXP
    {
    /* one pass: lm_exp_neg_pd512 is exact in the subnormals too */
    const __m512d mv = _mm512_set1_pd(m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    (void)tiny;
    (void)low;
    (void)s;
    LM_PF_LOOP_BEGIN(x + n)
    for (j = j0_; j + 16 <= end_; j += 16) {
        __m512d e0 = lm_exp_neg_pd512(_mm512_sub_pd(_mm512_loadu_pd(x + j), mv));
        __m512d e1 = lm_exp_neg_pd512(_mm512_sub_pd(_mm512_loadu_pd(x + j + 8), mv));
        _mm512_storeu_pd(out + j, e0);
        _mm512_storeu_pd(out + j + 8, e1);
        s0 = _mm512_add_pd(s0, e0);
        s1 = _mm512_add_pd(s1, e1);
    }
    for (; j < end_; j += 8) {
        __mmask8 k = end_ - j >= 8 ? (__mmask8)0xff : LM_TAIL_MASK(j, end_);
        __m512d e = lm_exp_neg_pd512(_mm512_sub_pd(_mm512_maskz_loadu_pd(k, x + j), mv));
        _mm512_mask_storeu_pd(out + j, k, e);
        s0 = _mm512_mask_add_pd(s0, k, s0, e);
    }
    LM_PF_LOOP_END
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    }
#endif
    int redo_impossible = (const void *)out == (const void *)x;
    if (redo_impossible) {
        /* in place the redo could not read x again: one read decides first
         * whether the row has values below the threshold, so that out == x
         * runs the exps out != x runs, and gives its bits */
        LM_T low_in = 0;
#pragma omp simd reduction(+ : low_in)
        for (j = 0; j < n; j++) low_in += (x[j] - mt) < tiny ? (LM_T)1 : (LM_T)0;
        redo_impossible = low_in != 0;
    }
    if (!redo_impossible) {
        LM_PF_LOOP_BEGIN(x + n)
        if (sizeof(LM_T) < sizeof(double)) {
#pragma omp simd reduction(+ : low)
            for (j = j0_; j < end_; j++) {
                LM_T d = x[j] - mt;
                out[j] = LM_EXPNEG_SUM(d);
                low += d < tiny ? (LM_T)1 : (LM_T)0;
            }
#pragma omp simd reduction(+ : s)
            for (j = j0_; j < end_; j++) s += (double)out[j];
        } else {
#pragma omp simd reduction(+ : s, low)
            for (j = j0_; j < end_; j++) {
                LM_T d = x[j] - mt;
                LM_T e = LM_EXPNEG_SUM(d);
                out[j] = e;
                s += (double)e;
                low += d < tiny ? (LM_T)1 : (LM_T)0;
            }
        }
        LM_PF_LOOP_END
        if (low == 0)
            return s;
        s = 0.0;
    }
#pragma omp simd reduction(+ : s)
    for (j = 0; j < n; j++) {
        LM_T e = LM_EXPNEG(x[j] - mt);
        out[j] = e;
        s += (double)e;
    }
    return s;
}

/* out = exp(x - m) for every value (m >= every x); returns the sum over the
 * x != m and (OUT) the count of x == m, as lm_sumexp_below: cross-entropy's
 * loss sums and its gradient's exps from one exp per value.  The exp with
 * its subnormal results (LM_EXPNEG): the values are the output's.  float:
 * the exps at full width, summed in double in a second loop (lm_sumexp). */
static LM_TARGET double LM_FN(lm_expwrite_below)(const LM_T *x, LM_T *out, ptrdiff_t n,
                                                 double m, double *n_at_max)
{
    const LM_T mt = (LM_T)m;
    const LM_T *const pfw_ = NULL;
    double s = 0.0, c = 0.0;
    ptrdiff_t j;
    LM_PF_LOOP_BEGIN(x + n)
    if (sizeof(LM_T) < sizeof(double)) {
        LM_T cf = 0;
#pragma omp simd reduction(+ : cf)
        for (j = j0_; j < end_; j++) {
            out[j] = LM_EXPNEG(x[j] - mt);
            cf += x[j] == mt ? (LM_T)1 : (LM_T)0;
        }
#pragma omp simd reduction(+ : s)
        for (j = j0_; j < end_; j++) s += x[j] == mt ? 0.0 : (double)out[j];
        c += (double)cf;
    } else {
#pragma omp simd reduction(+ : s, c)
        for (j = j0_; j < end_; j++) {
            LM_T e = LM_EXPNEG(x[j] - mt);
            int at_max = x[j] == mt;
            out[j] = e;
            s += at_max ? 0.0 : (double)e;
            c += at_max ? 1.0 : 0.0;
        }
    }
    LM_PF_LOOP_END
    *n_at_max = c;
    return s;
}

/* g = alpha * g - beta * (w ? w : 1), in double, rounded once (the
 * cross-entropy gradient from the exps lm_expwrite_below left in g). */
static LM_TARGET void LM_FN(lm_affine)(LM_T *g, ptrdiff_t n, double alpha, double beta,
                                       const double *w)
{
    ptrdiff_t j;
    if (w == NULL) {
#pragma omp simd
        for (j = 0; j < n; j++) g[j] = (LM_T)(alpha * (double)g[j] - beta);
    } else {
#pragma omp simd
        for (j = 0; j < n; j++) g[j] = (LM_T)(alpha * (double)g[j] - beta * w[j]);
    }
}

/* out = out / d as scipy's division (not a multiply by 1/d), for
 * 0 <= out <= 1, 1 <= d finite (softmax), without a division per value: the
 * packed division's throughput is several times lower than a multiply's and
 * dominated a softmax of long rows.  One min pass first picks the steps.
 * double with FMA, every e >= 2^-900: q = e * y, y = 1 / d, then
 * q += (e - q d) y, the correctly rounded e / d (Markstein's theorem; no step
 * underflows; a C check against the division found no difference over 3.3e9
 * random and edge-mantissa pairs); else the division.  float with FMA, every
 * quotient normal (min e * y >= 2^-125): in float, at full vector width
 * (through double the conversions cost three times the arithmetic): y split
 * in two floats y_hi + y_lo (~2^-48 relative), then e y_hi + e y_lo with one
 * FMA (e scaled by 2^100 and back, exactly, so that e y_lo never
 * underflows): the nearest float to e / d but where e / d lies within
 * ~2^-47 relative of a tie between two floats, then one ulp off (an error
 * below 0.5 + 2^-23 ulp; ~1 value in 4e7 in a C check against __float128
 * quotients, the double steps rounded to float ~1 in 2e8); a row with a
 * subnormal quotient takes the double steps, whose one rounding into the
 * subnormals the float steps' scaling back would repeat.  Without FMA: the
 * division in double. */
static LM_TARGET void LM_FN(lm_divide)(LM_T *out, ptrdiff_t n, double d)
{
    ptrdiff_t j;
    const double y = 1.0 / d;
    int markstein = LM_HAS_FMA, float_steps = 0;
    if (LM_HAS_FMA) {
        LM_T lowest = out[0];
#pragma omp simd reduction(min : lowest)
        for (j = 0; j < n; j++) lowest = out[j] < lowest ? out[j] : lowest;
        if (sizeof(LM_T) == sizeof(double))
            markstein = lowest >= (LM_T)0x1p-900;
        else
            float_steps = (double)lowest * y >= 0x1p-125;
    }
    if (float_steps) {
        const float y_hi = (float)y, y_lo = (float)(y - (double)y_hi);
#pragma omp simd
        for (j = 0; j < n; j++) {
            float e = (float)out[j] * 0x1p100f;
            out[j] = (LM_T)(__builtin_fmaf(e, y_hi, e * y_lo) * 0x1p-100f);
        }
    } else if (markstein) {
#pragma omp simd
        for (j = 0; j < n; j++) {
            double e = (double)out[j];
            double q = e * y;
            out[j] = (LM_T)__builtin_fma(__builtin_fma(-q, d, e), y, q);
        }
    } else {
#pragma omp simd
        for (j = 0; j < n; j++) {
            out[j] = (LM_T)((double)out[j] / d);
        }
    }
}

/* out = (x - m) - c, c >= 0 (log_softmax: x - m <= 0, so no cancellation).
 * float computes in float (c split in two floats): through double, the
 * float <-> double conversions would cost far more than the arithmetic; the
 * result is within
 * ~1 ulp instead of 0.5 (x == m still gives exactly -c rounded once). */
static LM_TARGET void LM_FN(lm_shift)(const LM_T *x, LM_T *out, ptrdiff_t n, double m,
                                      double c)
{
    ptrdiff_t j;
    if (sizeof(LM_T) < sizeof(double)) {
        const LM_T mt = (LM_T)m, c_hi = (LM_T)c, c_lo = (LM_T)(c - (double)c_hi);
#pragma omp simd
        for (j = 0; j < n; j++) out[j] = ((x[j] - mt) - c_hi) - c_lo;
    } else {
#pragma omp simd
        for (j = 0; j < n; j++) {
            out[j] = (LM_T)(((double)x[j] - m) - c);
        }
    }
}

/* g = alpha * exp((x - m) - log_s) - beta * (w ? w : 1): the cross-entropy
 * gradient row (lse = m + log_s is never formed: at |x| ~ 1e8 its rounding
 * alone would cost 1e-8 relative). */
static LM_TARGET void LM_FN(lm_ce_grad)(const LM_T *x, LM_T *g, ptrdiff_t n, double m,
                                        double log_s, double alpha, double beta,
                                        const double *w)
{
    const LM_T mt = (LM_T)m, lt = (LM_T)log_s;
    ptrdiff_t j;
#if LM_VEXP && !LM_DOUBLE
    /* d = (x - m) - log_s and its exp in float, as the loop below; the
     * affine step alpha e - beta w in double, rounded to float once */
    const __m512 mv = _mm512_set1_ps(mt), lv = _mm512_set1_ps(lt);
    const __m512d av = _mm512_set1_pd(alpha), bv = _mm512_set1_pd(beta);
    for (j = 0; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? (__mmask16)0xffff : LM_TAIL_MASK16(j, n);
        __m512 e = lm_expf_neg_ps512(
            _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mv), lv));
        __m512d e_lo = _mm512_cvtps_pd(_mm512_castps512_ps256(e));
        __m512d e_hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
        __m512d b_lo = bv, b_hi = bv;
        if (w != NULL) {
            b_lo = _mm512_mul_pd(bv, _mm512_maskz_loadu_pd((__mmask8)k, w + j));
            b_hi = _mm512_mul_pd(bv, _mm512_maskz_loadu_pd((__mmask8)(k >> 8), w + j + 8));
        }
        __m256 g_lo = _mm512_cvtpd_ps(_mm512_fmsub_pd(av, e_lo, b_lo));
        __m256 g_hi = _mm512_cvtpd_ps(_mm512_fmsub_pd(av, e_hi, b_hi));
        _mm512_mask_storeu_ps(g + j, k, _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castpd256_pd512(_mm256_castps_pd(g_lo)), _mm256_castps_pd(g_hi), 1)));
    }
    return;
#elif LM_VEXP
    const __m512d mv = _mm512_set1_pd(m), lv = _mm512_set1_pd(log_s);
    const __m512d av = _mm512_set1_pd(alpha), bv = _mm512_set1_pd(beta);
    (void)mt;
    (void)lt;
    for (j = 0; j < n; j += 8) {
        __mmask8 k = n - j >= 8 ? (__mmask8)0xff : LM_TAIL_MASK(j, n);
        __m512d d = _mm512_sub_pd(_mm512_sub_pd(_mm512_maskz_loadu_pd(k, x + j), mv), lv);
        __m512d b = w == NULL ? bv : _mm512_mul_pd(bv, _mm512_maskz_loadu_pd(k, w + j));
        _mm512_mask_storeu_pd(g + j, k, _mm512_fmsub_pd(av, lm_exp_neg_pd512(d), b));
    }
    return;
#endif
    if (w == NULL) {
#pragma omp simd
        for (j = 0; j < n; j++) {
            g[j] = (LM_T)(alpha * (double)LM_EXPNEG((x[j] - mt) - lt) - beta);
        }
    } else {
#pragma omp simd
        for (j = 0; j < n; j++) {
            g[j] = (LM_T)(alpha * (double)LM_EXPNEG((x[j] - mt) - lt) - beta * w[j]);
        }
    }
}

/* sum of w * (x - m) (w == NULL: weights 1), and (OUT) the sum of w. */
static LM_TARGET double LM_FN(lm_dot)(const LM_T *x, const double *w, ptrdiff_t n, double m,
                                      double *w_sum)
{
    double s = 0.0, ws = 0.0;
    ptrdiff_t j;
    if (w == NULL) {
#pragma omp simd reduction(+ : s)
        for (j = 0; j < n; j++) s += (double)x[j] - m;
        ws = (double)n;
    } else {
#pragma omp simd reduction(+ : s, ws)
        for (j = 0; j < n; j++) {
            s += w[j] * ((double)x[j] - m);
            ws += w[j];
        }
    }
    *w_sum = ws;
    return s;
}

/* Probability-target cross-entropy's two row sums: returns sum wt_j (x_j - m)
 * and (OUT) *wt_sum = sum wt_j, with wt_j = (keep t_j + spread) w_j (w NULL:
 * w_j = 1).  No special cases: 0 * -inf gives nan, as torch's t * log_softmax. */
static LM_TARGET double LM_FN(lm_wdot)(const LM_T *x, const LM_T *t, ptrdiff_t n, double m,
                                       double keep, double spread, const double *w,
                                       double *wt_sum)
{
    double s = 0.0, ws = 0.0;
    ptrdiff_t j;
    if (w == NULL) {
#pragma omp simd reduction(+ : s, ws)
        for (j = 0; j < n; j++) {
            double wt = keep * (double)t[j] + spread;
            s += wt * ((double)x[j] - m);
            ws += wt;
        }
    } else {
#pragma omp simd reduction(+ : s, ws)
        for (j = 0; j < n; j++) {
            double wt = (keep * (double)t[j] + spread) * w[j];
            s += wt * ((double)x[j] - m);
            ws += wt;
        }
    }
    *wt_sum = ws;
    return s;
}

/* sum of rel_entr(p, q) over the row, for entries where the fast formula
 * holds (p > 0, q > 0, p/q a normal number, or p == 0 <= q); (OUT) how many
 * entries need the exact scalar code instead (the caller redoes the row). */
static LM_TARGET double LM_FN(lm_kl)(const LM_T *p, const LM_T *q, ptrdiff_t n,
                                     double *n_special)
{
    double s = 0.0, bad = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : s, bad)
    for (j = 0; j < n; j++) {
        double special;
        s += lm_rel_entr_term((double)p[j], (double)q[j], &special);
        bad += special;
    }
    *n_special = bad;
    return s;
}

/* sum of entr(p / total) = -(p / total) log(p / total) over the row, for
 * entries where the fast formula holds (p / total positive, normal and
 * finite, or p == 0); (OUT) how many entries need the exact scalar code
 * (the caller redoes the row).  p / total is scipy's entropy's division,
 * bit for bit (below: with an FMA, without a division per value). */
static LM_TARGET double LM_FN(lm_entr)(const LM_T *p, ptrdiff_t n, double total,
                                       double *n_special)
{
    double s = 0.0, bad = 0.0;
    ptrdiff_t j;
    /* p / total as q = p * inv and one FMA residual step: the correctly
     * rounded quotient for normal results (Markstein's theorem, as softmax's
     * divide), so t is the division's, bit for bit, without a division per
     * value.  The steps need inv normal and an FMA; otherwise divide. */
    if (LM_HAS_FMA && total >= 0x1p-1000 && total <= 0x1p1000) {
        const double inv = 1.0 / total;
#pragma omp simd reduction(+ : s, bad)
        for (j = 0; j < n; j++) {
            double pj = (double)p[j], q = pj * inv, special;
            s += lm_entr_term(pj, __builtin_fma(__builtin_fma(-q, total, pj), inv, q), &special,
                              !LM_DOUBLE);
            bad += special;
        }
    } else {
#pragma omp simd reduction(+ : s, bad)
        for (j = 0; j < n; j++) {
            double pj = (double)p[j], special;
            s += lm_entr_term(pj, pj / total, &special, !LM_DOUBLE);
            bad += special;
        }
    }
    *n_special = bad;
    return s;
}

/* KL of many short contiguous rows (n_cols values each, rows back to back):
 * out_row[r] = sum of rel_entr(p, q) over row r.  A 4-value row leaves the
 * row-wise lm_kl nothing to vectorise, so the terms of a run of rows are
 * computed as one flat vectorised loop, then summed row by row.
 * special[r] = how many entries of row r need the exact scalar code (the
 * caller redoes those rows); returns their total (0: nothing to redo). */
#define LM_KL_TERMS 512
#define LM_KL_SUMS(NC)                                                           \
    case NC:                                                                     \
        _Pragma("omp simd reduction(+ : n_bad)")                                 \
        for (r = 0; r < nr; r++) {                                               \
            double s = 0.0, bad = 0.0;                                           \
            LM_UNROLL for (k = 0; k < NC; k++) {                                 \
                s += terms[r * NC + k];                                          \
                bad += flags[r * NC + k];                                        \
            }                                                                    \
            out_row[r0 + r] = s;                                                 \
            special[r0 + r] = bad;                                               \
            n_bad += bad;                                                        \
        }                                                                        \
        break;
static LM_TARGET double LM_FN(lm_kl_rows)(const LM_T *p, const LM_T *q, ptrdiff_t n_rows,
                                          ptrdiff_t n_cols, double *out_row, double *special)
{
    double terms[LM_KL_TERMS], flags[LM_KL_TERMS], n_bad = 0.0;
    ptrdiff_t per = n_cols < LM_KL_TERMS ? LM_KL_TERMS / n_cols : 1;
    ptrdiff_t r0, r, k, j;
    if (n_cols > LM_KL_TERMS) {  /* not what this is for: row by row */
        for (r = 0; r < n_rows; r++) {
            out_row[r] = LM_FN(lm_kl)(p + r * n_cols, q + r * n_cols, n_cols, &special[r]);
            n_bad += special[r];
        }
        return n_bad;
    }
    for (r0 = 0; r0 < n_rows; r0 += per) {
        ptrdiff_t nr = n_rows - r0 < per ? n_rows - r0 : per, m = nr * n_cols;
        const LM_T *pp = p + r0 * n_cols, *qq = q + r0 * n_cols;
#pragma omp simd
        for (j = 0; j < m; j++)
            terms[j] = lm_rel_entr_term((double)pp[j], (double)qq[j], &flags[j]);
        switch (n_cols) {  /* the row sums, vectorised across rows where GCC can */
        LM_KL_SUMS(2) LM_KL_SUMS(3) LM_KL_SUMS(4) LM_KL_SUMS(5) LM_KL_SUMS(6)
        LM_KL_SUMS(7) LM_KL_SUMS(8)
        default:
            for (r = 0; r < nr; r++) {
                double s = 0.0, bad = 0.0;
                if (n_cols <= 16) {
                    for (k = 0; k < n_cols; k++) {
                        s += terms[r * n_cols + k];
                        bad += flags[r * n_cols + k];
                    }
                } else {
                    /* lane-wise: pays for long rows; for rows of up to 16
                     * values the reduction's set-up costs more than it saves */
#pragma omp simd reduction(+ : s, bad)
                    for (k = 0; k < n_cols; k++) {
                        s += terms[r * n_cols + k];
                        bad += flags[r * n_cols + k];
                    }
                }
                out_row[r0 + r] = s;
                special[r0 + r] = bad;
                n_bad += bad;
            }
        }
    }
    return n_bad;
}
#undef LM_KL_TERMS
#undef LM_KL_SUMS

/* Blocks of many short contiguous rows (2 <= n_cols <= LM_SHORT_MAX),
 * vectorised ACROSS rows: inside a 4-wide row there is nothing to
 * vectorise, so each SIMD lane takes one row.  mode 0: out_row[r] =
 * logsumexp(row); mode 1: out = softmax(row); mode 2: out = log_softmax(row).
 * mode 3: out_row[r] = log(sum(exp(row - max))) (logsumexp less the max);
 * mode 5: out_row[r] = logsumexp(row) - row[target[r]] (cross-entropy of a
 * class index), computed as (max - row[y]) + log-sum; a target equal to
 * `ignore` or outside 0..NC-1 flags the row too.  The target's logit is picked
 * by a select over the row's values, not a gather (the lanes stay in
 * registers).  mode 6: mode 5's loss and its gradient (see lm_short_ce_grad).
 * Rows holding nan or +-inf (and, for softmax, a value more than 670 below
 * the row max: its result is below 2^-966, near the subnormals, where the
 * division trick below could be off in the last bit, and the exp here
 * skips subnormals) get special[r] = 1: the caller redoes them with the
 * exact scalar path.  Modes
 * 1 and 2 store every row unconditionally (a masked store would stop the
 * vectoriser): a special row gets its own input back, so out may be x
 * itself (in place) and the caller's redo still reads the input.
 * Softmax divides by the row sum without a division per value: q = e * inv
 * with inv = 1 / total, then one FMA residual step, which gives the correctly
 * rounded e / total for normal results (Markstein's theorem), so the values
 * are those of scipy's division. */
#define LM_SHORT_BODY(NC, MODE, N, XV, OUTV, OFF)                                \
    _Pragma("omp simd reduction(+ : n_bad)")                                     \
    for (r = 0; r < N; r++) {                                                    \
        double m, s = 0.0, c = 0.0, fin = 0.0, e[NC], v[NC], lo[NC];             \
        double tiny = 0.0;                                                       \
        int64_t y = (MODE == 5 || MODE == 6) ? target[OFF + r] : 0;              \
        int k;                                                                   \
        LM_UNROLL for (k = 0; k < NC; k++) v[k] = (double)XV(r, k, NC);          \
        m = v[0];                                                                \
        if (MODE == 0 || MODE == 3 || MODE == 5) {                               \
            /* only the log-sum: the running max's losers are the NC - 1 */     \
            /* values besides one maximal one (a tie's twin among them), */     \
            /* so NC - 1 exps, and log(1 + s) = log1p(s) is precise when */     \
            /* the max dominates */                                              \
            LM_UNROLL for (k = 1; k < NC; k++) {                                 \
                lo[k] = v[k] > m ? m : v[k];                                     \
                m = v[k] > m ? v[k] : m;                                         \
            }                                                                    \
            LM_UNROLL for (k = 0; k < NC; k++) fin += v[k] - v[k];               \
            LM_UNROLL for (k = 1; k < NC; k++) s += lm_exp_neg_sum(lo[k] - m);   \
            sums[r] = s; /* its log1p: LM_SHORT_LOG_PASS */                      \
        } else {                                                                 \
            LM_UNROLL for (k = 1; k < NC; k++) m = v[k] > m ? v[k] : m;          \
            LM_UNROLL for (k = 0; k < NC; k++) {                                 \
                int at_max = v[k] == m;                                          \
                e[k] = lm_exp_neg_sum(v[k] - m);                                 \
                s += at_max ? 0.0 : e[k];                                        \
                c += at_max ? 1.0 : 0.0;                                         \
                fin += v[k] - v[k];                                              \
                if (MODE == 1 || MODE == 6)                                      \
                    tiny += (v[k] - m) < -670.0 ? 1.0 : 0.0;                     \
            }                                                                    \
        }                                                                        \
        /* one flag, in double: a narrower type here would make the */         \
        /* vectoriser take 64 rows per step (a 240 KiB loop body) */            \
        double bad = (fin != 0.0 || tiny != 0.0) ? 1.0 : 0.0;                   \
        if (MODE == 5 || MODE == 6) {                                            \
            double xy = 0.0;                                                     \
            LM_UNROLL for (k = 0; k < NC; k++) xy = y == k ? v[k] : xy;          \
            bad = (y < 0 || y >= NC || y == ignore) ? 1.0 : bad;                 \
            base[r] = m - xy;                                                    \
            if (MODE == 6) sums[r] = (c - 1.0) + s;                              \
        }                                                                        \
        special[OFF + r] = bad;                                                  \
        n_bad += bad;                                                            \
        if (MODE == 0) {                                                         \
            base[r] = m;                                                         \
        } else if (MODE == 1) {                                                  \
            double total = c + s, inv = 1.0 / total;                             \
            LM_UNROLL for (k = 0; k < NC; k++) {                                           \
                double q = LM_HAS_FMA ? e[k] * inv : e[k] / total;               \
                if (LM_HAS_FMA)                                                  \
                    q = __builtin_fma(__builtin_fma(-q, total, e[k]), inv, q);   \
                OUTV(r, k, NC) = bad != 0.0 ? XV(r, k, NC) : (LM_T)q;                \
            }                                                                    \
        } else if (MODE == 2) {                                                  \
            sums[r] = (c - 1.0) + s; /* the rest: LM_SHORT_LSM_PASS */           \
            base[r] = m;                                                         \
        } else if (MODE == 6) {                                                  \
            double s_other = 0.0, factor = scale / (c + s);                      \
            LM_UNROLL for (k = 0; k < NC; k++) s_other += y == k ? 0.0 : e[k];   \
            /* p_y - 1 as minus the other classes' share: no cancellation */     \
            LM_UNROLL for (k = 0; k < NC; k++)                                   \
                OUTV(r, k, NC) = (LM_T)(y == k ? -(s_other * factor) : e[k] * factor); \
        }                                                                        \
    }

/* The modes that take a log (0, 2, 3, 5, 6) finish in a second, short loop
 * over the block, with the same operations as in one loop (GCC contracts a
 * few of them differently: float64 2-value logsumexp / CE rows moved by 1-4
 * ulp, towards mpmath, when this came in):
 * out_row = base + log1p(sum) (0, 3, 5, 6: the loss), or log_softmax's
 * values (2).  As one loop, the row's max -> exps -> sum -> division -> log
 * polynomial was one long dependent chain per 8 rows, and the long loop
 * body kept the core from overlapping the next rows' chains; split in two,
 * the out-of-order core overlaps the rows' chains. */
#define LM_SHORT_LOG_PASS(MODE, N, OFF)                                          \
    _Pragma("omp simd")                                                          \
    for (r = 0; r < N; r++) {                                                    \
        double log_s = lm_log1p_pos(sums[r]);                                    \
        out_row[OFF + r] = MODE == 3 ? log_s : base[r] + log_s;                  \
    }
#define LM_SHORT_LSM_PASS(NC, N, XV, OUTV, OFF)                                  \
    _Pragma("omp simd")                                                          \
    for (r = 0; r < N; r++) {                                                    \
        double lse = lm_log1p_pos(sums[r]), m = base[r];                         \
        double bad = special[OFF + r];                                           \
        int k;                                                                   \
        LM_UNROLL for (k = 0; k < NC; k++)                                       \
            OUTV(r, k, NC) = bad != 0.0 ? XV(r, k, NC)                           \
                                        : (LM_T)(((double)XV(r, k, NC) - m) - lse); \
    }

/* The loop reads a transposed copy of up to LM_SOA_ROWS rows, xt[k][r]
 * (every load unit-stride), and modes 1, 2 and 6 write through ot[k][r]. */
#define LM_SOA_X(r, k, NC) xt[k][r]
#define LM_SOA_OUT(r, k, NC) ot[k][r]
#define LM_SOA_ROWS 64
/* buf[k][r] = src[(r0 + r) * NC + k] for the nr rows from r0 */
#define LM_SOA_LOAD(buf, src, NC)                                                \
    for (r = 0; r < nr; r++)                                                     \
        for (kk = 0; kk < NC; kk++) buf[kk][r] = src[(r0 + r) * NC + kk];

/* GCC 12's value-range pass turns the 2-value row's selects into branches
 * the vectoriser then refuses (leaving the loop scalar); without it the loop
 * vectorises.  Other widths are unaffected. */
#if defined(__GNUC__) && !defined(__clang__)
#define LM_SHORT_OPT_2 __attribute__((optimize("no-tree-vrp")))
#else
#define LM_SHORT_OPT_2
#endif
#define LM_SHORT_OPT_3
#define LM_SHORT_OPT_4
#define LM_SHORT_OPT_5
#define LM_SHORT_OPT_6
#define LM_SHORT_OPT_7
#define LM_SHORT_OPT_8

/* One function per (n_cols, mode): GCC vectorised the same loop into worse
 * code when it shared a function with the other cases.  The rows are first
 * copied transposed, 64 at a time, into a stack buffer, so every load of the
 * loop is unit-stride: read in place (x[r * NC + k]) GCC 12 left rows of 2,
 * 5, 6 and 7 values scalar, and strided loads slowed the other widths'
 * softmax / log_softmax too. */
#define LM_SHORT_FN(NC, MODE)                                                    \
    static LM_TARGET LM_SHORT_OPT_##NC __attribute__((noinline)) double          \
    LM_FN(lm_short_rows_##NC##_##MODE)(const LM_T *x, ptrdiff_t n_rows,          \
                                       const int64_t *target, int64_t ignore,    \
                                       double scale, double *out_row, LM_T *out, \
                                       double *special)                          \
    {                                                                            \
        LM_T xt[NC][LM_SOA_ROWS], ot[NC][LM_SOA_ROWS];                           \
        double sums[LM_SOA_ROWS], base[LM_SOA_ROWS];                             \
        ptrdiff_t r, r0, nr;                                                     \
        double n_bad = 0.0;                                                      \
        int kk;                                                                  \
        for (r0 = 0; r0 < n_rows; r0 += LM_SOA_ROWS) {                           \
            nr = n_rows - r0 < LM_SOA_ROWS ? n_rows - r0 : LM_SOA_ROWS;           \
            LM_SOA_LOAD(xt, x, NC)                                               \
            LM_SHORT_BODY(NC, MODE, nr, LM_SOA_X, LM_SOA_OUT, r0)                \
            if (MODE == 0 || MODE == 3 || MODE == 5 || MODE == 6)                \
                LM_SHORT_LOG_PASS(MODE, nr, r0)                                  \
            if (MODE == 2)                                                       \
                LM_SHORT_LSM_PASS(NC, nr, LM_SOA_X, LM_SOA_OUT, r0)              \
            if (MODE == 1 || MODE == 2 || MODE == 6)                             \
                for (r = 0; r < nr; r++)                                         \
                    for (kk = 0; kk < NC; kk++)                                  \
                        out[(r0 + r) * NC + kk] = ot[kk][r];                     \
        }                                                                        \
        return n_bad;                                                            \
    }
#define LM_SHORT_FNS(MODE) LM_SHORT_FN(2, MODE) LM_SHORT_FN(3, MODE)              \
    LM_SHORT_FN(4, MODE) LM_SHORT_FN(5, MODE) LM_SHORT_FN(6, MODE)               \
    LM_SHORT_FN(7, MODE) LM_SHORT_FN(8, MODE)
LM_SHORT_FNS(0)
LM_SHORT_FNS(1)
LM_SHORT_FNS(2)
LM_SHORT_FNS(3)
LM_SHORT_FNS(5)
LM_SHORT_FNS(6)
#undef LM_SHORT_FNS
#undef LM_SHORT_FN

/* dst[k * dst_ld + r] = src[r * src_ld + k] for r < rows, k < cols: the
 * transposed copies around lm_col_rows (contiguous rows into a column-major
 * block, and softmax / log_softmax's block back into rows; lm_entr_cols'
 * copy in).  As a scalar loop, one value per load and store, the copy is a
 * large share of a short-row kernel's time; the AVX-512 variant moves 8 x 8
 * tiles through registers
 * (lm_transpose8_pd512 / _ps256 in lm_simd.h, masked at the edges), the
 * others keep the scalar loop.  Data movement only: the bits stay. */
static LM_TARGET void LM_FN(lm_transpose)(const LM_T *src, ptrdiff_t src_ld, ptrdiff_t rows,
                                          ptrdiff_t cols, LM_T *dst, ptrdiff_t dst_ld)
{
    ptrdiff_t r, k;
#if LM_VEXP
    for (r = 0; r < rows; r += 8) {
        const int nr = rows - r < 8 ? (int)(rows - r) : 8;
        for (k = 0; k < cols; k += 8)
            LM_TRANSPOSE8(src + r * src_ld + k, src_ld, nr, cols - k < 8 ? (int)(cols - k) : 8,
                          dst + k * dst_ld + r, dst_ld);
    }
    return;
#endif
    for (r = 0; r < rows; r++)
        for (k = 0; k < cols; k++) dst[k * dst_ld + r] = src[r * src_ld + k];
}

/* Entropy of many short contiguous rows (scipy.stats.entropy of each):
 * out_row[r] = sum_k entr(p_k / total), total = the row's sum in order,
 * with the same transposed 64-row copy as above (one SIMD lane per row).
 * special[r] = 1 where the exact scalar code must decide (a total that is
 * not positive and finite; p_k / total negative, nan, inf or subnormal);
 * returns how many rows that is. */
#define LM_ENTR_ROWS_FN(NC)                                                      \
    static LM_TARGET LM_SHORT_OPT_##NC __attribute__((noinline)) double          \
    LM_FN(lm_entr_rows_##NC)(const LM_T *p, ptrdiff_t n_rows, double *out_row,   \
                             double *special)                                    \
    {                                                                            \
        LM_T pt[NC][LM_SOA_ROWS];                                                \
        ptrdiff_t r, r0, nr;                                                     \
        int kk;                                                                  \
        double n_bad = 0.0;                                                      \
        for (r0 = 0; r0 < n_rows; r0 += LM_SOA_ROWS) {                           \
            nr = n_rows - r0 < LM_SOA_ROWS ? n_rows - r0 : LM_SOA_ROWS;           \
            LM_SOA_LOAD(pt, p, NC)                                               \
            _Pragma("omp simd reduction(+ : n_bad)")                             \
            for (r = 0; r < nr; r++) {                                           \
                double total = 0.0, s = 0.0, bad = 0.0;                          \
                int k;                                                           \
                LM_UNROLL for (k = 0; k < NC; k++) total += (double)pt[k][r];    \
                int total_ok = total > 0.0 && total <= 1.7976931348623157e308;   \
                double div = total_ok ? total : 1.0;                             \
                LM_UNROLL for (k = 0; k < NC; k++) {                             \
                    double pj = (double)pt[k][r], t = pj / div;                  \
                    int regular = t >= 2.2250738585072014e-308 &&                \
                                  t <= 1.7976931348623157e308;                   \
                    double term = -t * LM_ENTR_LOG(regular ? t : 1.0);           \
                    s += regular ? term : 0.0;                                   \
                    bad += (regular || pj == 0.0) ? 0.0 : 1.0;                   \
                }                                                                \
                bad = (total_ok && bad == 0.0) ? 0.0 : 1.0;                      \
                out_row[r0 + r] = s;                                             \
                special[r0 + r] = bad;                                           \
                n_bad += bad;                                                    \
            }                                                                    \
        }                                                                        \
        return n_bad;                                                            \
    }
LM_ENTR_ROWS_FN(2) LM_ENTR_ROWS_FN(3) LM_ENTR_ROWS_FN(4) LM_ENTR_ROWS_FN(5)
LM_ENTR_ROWS_FN(6) LM_ENTR_ROWS_FN(7) LM_ENTR_ROWS_FN(8)
#undef LM_ENTR_ROWS_FN

/* Entropy of many medium contiguous rows (LM_SHORT_MAX < n_cols <=
 * LM_ENTR_COLS_MAX), as lm_entr_rows_NC: one SIMD lane per row, the same
 * arithmetic in the same order (the total summed in order, then p / total
 * and its entr), through lm_transpose's copy of up to 64 rows, the row's
 * values in a loop.  Row-wise, a row of fewer than 16 values was scalar
 * (a libm log per value) and a longer one left its last n % 16 values to
 * the vectoriser's scalar epilogue; across rows every lane is busy whatever
 * n % 16 is.  The gain shrinks as rows approach LM_ENTR_COLS_MAX, where
 * the row-wise path's vectors are full. */
static LM_TARGET double LM_FN(lm_entr_cols)(const LM_T *p, ptrdiff_t n_rows, ptrdiff_t n,
                                            double *out_row, double *special)
{
    LM_T pt[LM_ENTR_COLS_MAX * LM_COL_LD_COPY];
    double total[LM_SOA_ROWS], s[LM_SOA_ROWS], bad[LM_SOA_ROWS];
    double n_bad = 0.0;
    ptrdiff_t r0, r, k;
    for (r0 = 0; r0 < n_rows; r0 += LM_SOA_ROWS) {
        const ptrdiff_t nr = n_rows - r0 < LM_SOA_ROWS ? n_rows - r0 : LM_SOA_ROWS;
        LM_FN(lm_transpose)(p + r0 * n, n, nr, n, pt, LM_COL_LD_COPY);
#pragma omp simd
        for (r = 0; r < nr; r++) total[r] = s[r] = bad[r] = 0.0;
        for (k = 0; k < n; k++) {
            const LM_T *col = pt + k * LM_COL_LD_COPY;
#pragma omp simd
            for (r = 0; r < nr; r++) total[r] += (double)col[r];
        }
#pragma omp simd
        for (r = 0; r < nr; r++) {
            int total_ok = total[r] > 0.0 && total[r] <= 1.7976931348623157e308;
            bad[r] = total_ok ? 0.0 : 1.0;
            total[r] = total_ok ? total[r] : 1.0;
        }
        for (k = 0; k < n; k++) {
            const LM_T *col = pt + k * LM_COL_LD_COPY;
#pragma omp simd
            for (r = 0; r < nr; r++) {
                double pj = (double)col[r], t = pj / total[r];
                int regular = t >= 2.2250738585072014e-308 && t <= 1.7976931348623157e308;
                double term = -t * LM_ENTR_LOG(regular ? t : 1.0);
                s[r] += regular ? term : 0.0;
                bad[r] += (regular || pj == 0.0) ? 0.0 : 1.0;
            }
        }
#pragma omp simd reduction(+ : n_bad)
        for (r = 0; r < nr; r++) {
            double flag = bad[r] == 0.0 ? 0.0 : 1.0;
            out_row[r0 + r] = s[r];
            special[r0 + r] = flag;
            n_bad += flag;
        }
    }
    return n_bad;
}

static LM_TARGET double LM_FN(lm_entr_rows)(const LM_T *p, ptrdiff_t n_rows, ptrdiff_t n_cols,
                                            double *out_row, double *special)
{
    ptrdiff_t r;
    switch (n_cols) {
    case 2: return LM_FN(lm_entr_rows_2)(p, n_rows, out_row, special);
    case 3: return LM_FN(lm_entr_rows_3)(p, n_rows, out_row, special);
    case 4: return LM_FN(lm_entr_rows_4)(p, n_rows, out_row, special);
    case 5: return LM_FN(lm_entr_rows_5)(p, n_rows, out_row, special);
    case 6: return LM_FN(lm_entr_rows_6)(p, n_rows, out_row, special);
    case 7: return LM_FN(lm_entr_rows_7)(p, n_rows, out_row, special);
    case 8: return LM_FN(lm_entr_rows_8)(p, n_rows, out_row, special);
    default:
        if (n_cols > 8 && n_cols <= LM_ENTR_COLS_MAX)  /* 2..8: the cases above */
            return LM_FN(lm_entr_cols)(p, n_rows, n_cols, out_row, special);
        for (r = 0; r < n_rows; r++) special[r] = 1.0;
        return (double)n_rows;
    }
}

#define LM_SHORT_CALL(NC, M)                                                     \
    n_bad = LM_FN(lm_short_rows_##NC##_##M)(x, n_rows, t, ignore, scale, out_row, out, special)
#define LM_SHORT_CASE(NC)                                                        \
    case NC:                                                                     \
        if (mode == 0) LM_SHORT_CALL(NC, 0);                                     \
        else if (mode == 1) LM_SHORT_CALL(NC, 1);                                \
        else if (mode == 2) LM_SHORT_CALL(NC, 2);                                \
        else if (mode == 3) LM_SHORT_CALL(NC, 3);                                \
        else if (mode == 5) LM_SHORT_CALL(NC, 5);                                \
        else if (mode == 6) LM_SHORT_CALL(NC, 6);                                \
        else for (r = 0; r < n_rows; r++) special[r] = 1.0;                      \
        break;

/* Returns how many rows it flagged (0: the caller need not look at special). */
static LM_TARGET double LM_FN(lm_short_rows_any)(const LM_T *x, ptrdiff_t n_rows,
                                                 ptrdiff_t n_cols, int mode, const int64_t *t,
                                                 int64_t ignore, double scale, double *out_row,
                                                 LM_T *out, double *special)
{
    ptrdiff_t r;
    double n_bad = (double)n_rows;
    switch (n_cols) {
    LM_SHORT_CASE(2) LM_SHORT_CASE(3) LM_SHORT_CASE(4) LM_SHORT_CASE(5)
    LM_SHORT_CASE(6) LM_SHORT_CASE(7) LM_SHORT_CASE(8)
    default:
        for (r = 0; r < n_rows; r++) special[r] = 1.0;
    }
    return n_bad;
}

/* modes 0..3 (no target; any other mode flags every row) */
static LM_TARGET double LM_FN(lm_short_rows)(const LM_T *x, ptrdiff_t n_rows, ptrdiff_t n_cols,
                                             int mode, double *out_row, LM_T *out,
                                             double *special)
{
    return LM_FN(lm_short_rows_any)(x, n_rows, n_cols, mode <= 3 ? mode : -1, NULL, 0, 1.0,
                                    out_row, out, special);
}

/* mode 5: loss[r] = logsumexp(row r) - row r's logit at class target[r];
 * rows whose target is ignore (or outside 0..n_cols-1) are flagged */
static LM_TARGET double LM_FN(lm_short_ce)(const LM_T *x, ptrdiff_t n_rows, ptrdiff_t n_cols,
                                           const int64_t *target, int64_t ignore, double *loss,
                                           double *special)
{
    return LM_FN(lm_short_rows_any)(x, n_rows, n_cols, 5, target, ignore, 1.0, loss, NULL,
                                    special);
}

/* mode 6: loss[r] as mode 5, and grad (rows x n_cols) = scale * (softmax(row)
 * - onehot(target)), the target's entry as minus the other classes' share
 * (p_y - 1 without cancellation); flags as mode 5 plus mode 1's tiny gap */
static LM_TARGET double LM_FN(lm_short_ce_grad)(const LM_T *x, ptrdiff_t n_rows,
                                                ptrdiff_t n_cols, const int64_t *target,
                                                int64_t ignore, double scale, double *loss,
                                                LM_T *grad, double *special)
{
    return LM_FN(lm_short_rows_any)(x, n_rows, n_cols, 6, target, ignore, scale, loss, grad,
                                    special);
}
#undef LM_SHORT_CASE
#undef LM_SHORT_CALL
#undef LM_SHORT_BODY

/* Medium rows (LM_SHORT_MAX < n <= LM_COL_MAX values), vectorised ACROSS
 * rows like the short-row kernel above, but with the row's values in a loop
 * instead of registers: up to LM_COL_ROWS rows stored column-major, value k
 * of row r at x[k * ld + r] - a transposed copy of contiguous rows, or a
 * middle axis of the array itself (ld = the axis' stride).  Row-wise, a
 * 10-value row is two masked vectors and a scalar libm log1p, mostly
 * overhead; here each lane takes one row.  Per row, with m the max,
 * c the count of values equal to it and s the sum of exp(x - m) over the
 * others: log-sum = log1p(s / c) + log(c) (row_logsumexp's formula), s
 * summed with TwoSum's compensation (a plain running sum of 63 terms left
 * logsumexp of a row whose max is 0 up to 3 ulp from mpmath).
 * mode 0: out_row[r] = log-sum + m (logsumexp); mode 1: out[k * ld_out + r]
 * = softmax; mode 2: out[k * ld_out + r] = log_softmax = (x - m) - log-sum;
 * mode 5: out_row[r] = (m - x[target[r]]) + log-sum (cross-entropy), a
 * target equal to `ignore` or outside 0..n-1 flagging the row.  Rows holding
 * nan or +-inf get special[r] = 1 and are left for the caller to redo;
 * modes 1 and 2 write a special row's own input back (out may be x).
 * Returns how many rows it flagged. */
#if LM_VEXP && LM_DOUBLE
#define LM_COL_LOAD8(km, p) _mm512_maskz_loadu_pd((km), (p))
#define LM_COL_STORE8(km, p, v) _mm512_mask_storeu_pd((p), (km), (v))
#elif LM_VEXP
#define LM_COL_LOAD8(km, p) _mm512_cvtps_pd(_mm256_maskz_loadu_ps((km), (p)))
#define LM_COL_STORE8(km, p, v) _mm256_mask_storeu_ps((p), (km), _mm512_cvtpd_ps(v))
#endif
/* softmax's last pass over the columns: out = Q, computed from e = EXP
 * (exp(d), d = x - m: recomputed, or the sum pass's), the row's total = c + s
 * (tv) and inv = 1 / total (iv); a flagged row gets its input back */
#define LM_COL_SOFTMAX_PD512(EXP, Q)                                              \
    for (k = 0; k < n; k++) {                                                     \
        const LM_T *col = x + k * ld;                                             \
        LM_T *ocol = out + k * ld_out;                                            \
        for (r = 0; r < nr; r += 8) {                                             \
            __mmask8 km = nr - r >= 8 ? (__mmask8)0xff : LM_TAIL_MASK(r, nr);     \
            __m512d v = LM_COL_LOAD8(km, col + r);                                \
            __m512d e = (EXP);                                                    \
            __m512d tv = _mm512_mask_loadu_pd(_mm512_set1_pd(1.0), km, total + r); \
            __m512d iv = _mm512_mask_loadu_pd(_mm512_set1_pd(1.0), km, inv + r); \
            __mmask8 keep = _mm512_mask_cmp_pd_mask(                              \
                km, _mm512_maskz_loadu_pd(km, special + r), _mm512_setzero_pd(), _CMP_NEQ_UQ); \
            (void)tv;                                                             \
            (void)iv;                                                             \
            LM_COL_STORE8(km, ocol + r, _mm512_mask_blend_pd(keep, (Q), v));      \
        }                                                                         \
    }
#define LM_COL_SOFTMAX_LOOP(EXP, Q)                                               \
    for (k = 0; k < n; k++) {                                                     \
        const LM_T *col = x + k * ld;                                             \
        LM_T *ocol = out + k * ld_out;                                            \
        _Pragma("omp simd")                                                       \
        for (r = 0; r < nr; r++) {                                                \
            double d = (double)col[r] - m[r], e = (EXP);                          \
            (void)d;                                                              \
            ocol[r] = special[r] != 0.0 ? col[r] : (LM_T)(Q);                     \
        }                                                                         \
    }
#if LM_VEXP
/* One step of lm_col_rows' sum pass for eight rows (km: those present):
 * value v of each, mv its row's max.  e = exp(v - mv), 0 at the max, goes
 * into the sum sv with TwoSum's error into compv; cv counts the values at
 * the max; softmax (mode 1) keeps exp(v - mv) at e_out and counts in tv the
 * values more than 670 below the max. */
static inline __attribute__((always_inline)) LM_TARGET void LM_FN(lm_col_sum_step)(
    __m512d v, __m512d mv, __mmask8 km, const int mode, __m512d *sv, __m512d *cv,
    __m512d *compv, __m512d *tv, double *e_out)
{
    __m512d d = _mm512_sub_pd(v, mv);
    __mmask8 other = _mm512_mask_cmp_pd_mask(km, v, mv, _CMP_NEQ_UQ);
    __m512d e_all = lm_exp_neg_pd512(d);
    __m512d e = _mm512_maskz_mov_pd(other, e_all);
    /* TwoSum: sv + e exactly as the rounded sum plus its error */
    __m512d t = _mm512_add_pd(*sv, e), bv = _mm512_sub_pd(t, *sv);
    __m512d err = _mm512_add_pd(_mm512_sub_pd(*sv, _mm512_sub_pd(t, bv)), _mm512_sub_pd(e, bv));
    if (mode == 1) _mm512_mask_storeu_pd(e_out, km, e_all);
    *compv = _mm512_add_pd(*compv, err);
    *cv = _mm512_mask_add_pd(*cv, km & (__mmask8)~other, *cv, _mm512_set1_pd(1.0));
    *sv = t;
    if (mode == 1) {
        __mmask8 low = _mm512_mask_cmp_pd_mask(km, d, _mm512_set1_pd(-670.0), _CMP_LT_OQ);
        *tv = _mm512_mask_add_pd(*tv, low, *tv, _mm512_set1_pd(1.0));
    }
}
#endif
static inline __attribute__((always_inline)) LM_TARGET double LM_FN(lm_col_rows_body)(
    const LM_T *x, ptrdiff_t ld, ptrdiff_t nr, ptrdiff_t n, const int mode,
    const int64_t *target, int64_t ignore, double *out_row, LM_T *out, ptrdiff_t ld_out,
    double *special)
{
    double m[LM_COL_ROWS], s[LM_COL_ROWS], c[LM_COL_ROWS], fin[LM_COL_ROWS];
    double tiny[LM_COL_ROWS], xy[LM_COL_ROWS], log_s[LM_COL_ROWS], comp[LM_COL_ROWS];
    /* softmax: the exps of the sum's pass, reused for the output (~1/3 of
     * the work per value was the second exp) */
    double ebuf[LM_COL_ROWS * LM_COL_MAX];
    double n_bad = 0.0, n_tiny = 0.0;
    ptrdiff_t r, k;
    if (nr > LM_COL_ROWS || n < 1 || n > LM_COL_MAX) {  /* not what this is for */
        for (r = 0; r < nr; r++) special[r] = 1.0;
        return (double)nr;
    }
#pragma omp simd
    for (r = 0; r < nr; r++) {
        m[r] = (double)x[r];
        s[r] = c[r] = fin[r] = tiny[r] = xy[r] = comp[r] = 0.0;
    }
#if LM_VEXP
    /* the max pass, arranged as the sum pass below */
    if (LM_COL_WALK(ld)) {
        for (r = 0; r < nr; r += 8) {
            const __mmask8 km = nr - r >= 8 ? (__mmask8)0xff : LM_TAIL_MASK(r, nr);
            const __m512i tk = mode == 5 ? _mm512_maskz_loadu_epi64(km, target + r)
                                         : _mm512_setzero_si512();
            __m512d mv = LM_COL_LOAD8(km, x + r);
            __m512d fv = _mm512_setzero_pd(), xyv = _mm512_setzero_pd();
            const LM_T *col = x + r;
            for (k = 0; k < n; k++, col += ld) {
                __m512d v = LM_COL_LOAD8(km, col);
                fv = _mm512_add_pd(fv, _mm512_sub_pd(v, v));  /* nan for nan and +-inf */
                mv = _mm512_max_pd(v, mv);                      /* v > m ? v : m */
                if (mode == 5)
                    xyv = _mm512_mask_mov_pd(
                        xyv, _mm512_cmpeq_epi64_mask(tk, _mm512_set1_epi64((long long)k)), v);
            }
            _mm512_mask_storeu_pd(m + r, km, mv);
            _mm512_mask_storeu_pd(fin + r, km, fv);
            _mm512_mask_storeu_pd(xy + r, km, xyv);
        }
    } else
#endif
    for (k = 0; k < n; k++) {
        const LM_T *col = x + k * ld;
#pragma omp simd
        for (r = 0; r < nr; r++) {
            double v = (double)col[r];
            fin[r] += v - v;  /* nan for nan and +-inf */
            m[r] = v > m[r] ? v : m[r];
            if (mode == 5) xy[r] = target[r] == k ? v : xy[r];
        }
    }
#if LM_VEXP
    /* the exps with the AVX-512 table exp (half the instructions of the
     * auto-vectorised polynomial, the bound here), in double for both
     * dtypes.  LM_COL_WALK(ld) (a transposed copy, or a middle axis with
     * few positions after it): eight rows at a time down all n values, their
     * sums in registers; with the rows inner, every step loaded and stored
     * s, c and the compensation, which then bound the loop.  Other middle
     * axes keep the rows inner: value k of the nr rows, up to 512
     * contiguous bytes at a time, which the hardware prefetchers follow;
     * for those (a long stride between a row's values) the walk's strided
     * loads, or a copy of the block first, cost more than the stores they
     * save, so LM_COL_WALK takes the walk only for a copy or a short stride.
     * Either way each row's terms are added in the same order: the same
     * bits. */
    if (LM_COL_WALK(ld)) {
        for (r = 0; r < nr; r += 8) {
            const __mmask8 km = nr - r >= 8 ? (__mmask8)0xff : LM_TAIL_MASK(r, nr);
            const __m512d mv = _mm512_maskz_loadu_pd(km, m + r);
            __m512d sv = _mm512_setzero_pd(), cv = _mm512_setzero_pd();
            __m512d compv = _mm512_setzero_pd(), tv = _mm512_setzero_pd();
            const LM_T *col = x + r;
            for (k = 0; k < n; k++, col += ld)
                LM_FN(lm_col_sum_step)(LM_COL_LOAD8(km, col), mv, km, mode, &sv, &cv, &compv,
                                       &tv, ebuf + k * LM_COL_ROWS + r);
            _mm512_mask_storeu_pd(s + r, km, sv);
            _mm512_mask_storeu_pd(c + r, km, cv);
            _mm512_mask_storeu_pd(comp + r, km, compv);
            _mm512_mask_storeu_pd(tiny + r, km, tv);
        }
    } else {
        for (k = 0; k < n; k++) {
            const LM_T *col = x + k * ld;
            for (r = 0; r < nr; r += 8) {
                const __mmask8 km = nr - r >= 8 ? (__mmask8)0xff : LM_TAIL_MASK(r, nr);
                __m512d sv = _mm512_maskz_loadu_pd(km, s + r);
                __m512d cv = _mm512_maskz_loadu_pd(km, c + r);
                __m512d compv = _mm512_maskz_loadu_pd(km, comp + r);
                __m512d tv = mode == 1 ? _mm512_maskz_loadu_pd(km, tiny + r)
                                       : _mm512_setzero_pd();
                LM_FN(lm_col_sum_step)(LM_COL_LOAD8(km, col + r),
                                       _mm512_maskz_loadu_pd(km, m + r), km, mode, &sv, &cv,
                                       &compv, &tv, ebuf + k * LM_COL_ROWS + r);
                _mm512_mask_storeu_pd(s + r, km, sv);
                _mm512_mask_storeu_pd(c + r, km, cv);
                _mm512_mask_storeu_pd(comp + r, km, compv);
                if (mode == 1) _mm512_mask_storeu_pd(tiny + r, km, tv);
            }
        }
    }
#else
    for (k = 0; k < n; k++) {
        const LM_T *col = x + k * ld;
#pragma omp simd
        for (r = 0; r < nr; r++) {
            double v = (double)col[r], d = v - m[r];
            int at_max = v == m[r];
            double e_all = lm_exp_neg_sum(d);
            double e = at_max ? 0.0 : e_all, t = s[r] + e, b = t - s[r];
            if (mode == 1) ebuf[k * LM_COL_ROWS + r] = e_all;
            comp[r] += (s[r] - (t - b)) + (e - b);  /* TwoSum's error */
            s[r] = t;
            c[r] += at_max ? 1.0 : 0.0;
            if (mode == 1) tiny[r] += d < -670.0 ? 1.0 : 0.0;
        }
    }
#endif
#pragma omp simd
    for (r = 0; r < nr; r++) s[r] += comp[r];
#pragma omp simd reduction(+ : n_bad, n_tiny)
    for (r = 0; r < nr; r++) {
        double bad = fin[r] != 0.0 ? 1.0 : 0.0;
        n_tiny += tiny[r];
        if (mode == 5)
            bad = (target[r] < 0 || target[r] >= n || target[r] == ignore) ? 1.0 : bad;
        special[r] = bad;
        n_bad += bad;
        /* c >= 1 (a count), so both logs see normal arguments; a flagged
         * row's sums may be nan, and its result is never used */
        log_s[r] = lm_log1p_pos(bad != 0.0 ? 0.0 : s[r] / c[r]) + lm_log_normal(c[r]);
        if (mode == 0) out_row[r] = log_s[r] + m[r];
        else if (mode == 5) out_row[r] = (m[r] - xy[r]) + log_s[r];
    }
    if (mode == 1) {
        /* exp(x - m) / (c + s) without a division per value, as the
         * short-row softmax: q = e * inv and one FMA residual step - the
         * correctly rounded quotient for normal results.  A block holding a
         * value more than 670 below its row's max (a result near or below
         * 2^-966) divides instead, with exps exact into the subnormals:
         * the same bits wherever the steps hold, so no row is redone by
         * another kernel (whose sum could round differently) */
        double total[LM_COL_ROWS], inv[LM_COL_ROWS];
#pragma omp simd
        for (r = 0; r < nr; r++) {
            total[r] = c[r] + s[r];
            inv[r] = 1.0 / total[r];
        }
        if (n_tiny != 0.0) {
#if LM_VEXP
            LM_COL_SOFTMAX_PD512(
                lm_exp_neg_pd512(_mm512_sub_pd(v, _mm512_maskz_loadu_pd(km, m + r))),
                _mm512_div_pd(e, tv))
#else
            LM_COL_SOFTMAX_LOOP(lm_exp_neg(d), e / total[r])
#endif
            return n_bad;
        }
#if LM_VEXP
        LM_COL_SOFTMAX_PD512(_mm512_maskz_loadu_pd(km, ebuf + k * LM_COL_ROWS + r),
                             _mm512_fmadd_pd(_mm512_fnmadd_pd(_mm512_mul_pd(e, iv), tv, e), iv,
                                             _mm512_mul_pd(e, iv)))
#else
        LM_COL_SOFTMAX_LOOP(ebuf[k * LM_COL_ROWS + r],
                            LM_HAS_FMA ? __builtin_fma(__builtin_fma(-(e * inv[r]), total[r], e),
                                                       inv[r], e * inv[r])
                                       : e / total[r])
#endif
    } else if (mode == 2) {
        for (k = 0; k < n; k++) {
            const LM_T *col = x + k * ld;
            LM_T *ocol = out + k * ld_out;
#pragma omp simd
            for (r = 0; r < nr; r++) {
                double v = (double)col[r];
                ocol[r] = special[r] != 0.0 ? col[r] : (LM_T)((v - m[r]) - log_s[r]);
            }
        }
    }
    return n_bad;
}

/* One copy of the loops per mode (a constant after inlining): with the mode
 * a run-time value inside them, GCC left the loops partly scalar. */
static LM_TARGET double LM_FN(lm_col_rows)(const LM_T *x, ptrdiff_t ld, ptrdiff_t nr,
                                           ptrdiff_t n, int mode, const int64_t *target,
                                           int64_t ignore, double *out_row, LM_T *out,
                                           ptrdiff_t ld_out, double *special)
{
    ptrdiff_t r;
    switch (mode) {
    case 0: return LM_FN(lm_col_rows_body)(x, ld, nr, n, 0, NULL, 0, out_row, NULL, 0, special);
    case 1: return LM_FN(lm_col_rows_body)(x, ld, nr, n, 1, NULL, 0, NULL, out, ld_out, special);
    case 2: return LM_FN(lm_col_rows_body)(x, ld, nr, n, 2, NULL, 0, NULL, out, ld_out, special);
    case 5: return LM_FN(lm_col_rows_body)(x, ld, nr, n, 5, target, ignore, out_row, NULL, 0,
                                           special);
    default:
        for (r = 0; r < nr; r++) special[r] = 1.0;
        return (double)nr;
    }
}
#undef LM_COL_LOAD8
#undef LM_COL_STORE8
#undef LM_COL_SOFTMAX_PD512
#undef LM_COL_SOFTMAX_LOOP
#undef LM_SHORT_LOG_PASS
#undef LM_SHORT_LSM_PASS
#undef LM_SOA_X
#undef LM_SOA_OUT
#undef LM_SOA_ROWS
#undef LM_SOA_LOAD
#undef LM_SHORT_OPT_2
#undef LM_SHORT_OPT_3
#undef LM_SHORT_OPT_4
#undef LM_SHORT_OPT_5
#undef LM_SHORT_OPT_6
#undef LM_SHORT_OPT_7
#undef LM_SHORT_OPT_8

/* ==========================================================================
 * Training primitives (issue 6, lossmle/_kernels/training.pyx).
 *
 * Whatever LM_T is, every value here is widened to double and every exp is
 * the double lm_exp_neg / lm_exp_neg_sum (within ~1 ulp of double; the one
 * exception, lm_kl_logit_grad's P and Q, is documented there), every
 * log the double lm_log_normal / lm_log1p_pos (~1 ulp), every sum a double
 * `omp simd` reduction: the divergences cancel (KL of two near-equal rows is
 * a small difference of O(1) terms), so a float exp would cost ~1e-7
 * absolute.  As above, nothing here treats nan or inf specially: each
 * function documents which result turns non-finite (or which flag is set)
 * so that the caller can redo the row with its exact scalar code before it
 * has written anything.
 * ========================================================================== */

/* Entropy sums of a = inv_t * x against the max of a, given as x_max >=
 * every x (inv_t > 0): with d = (x - x_max) inv_t, returns u = sum e d over
 * the d > -inf and (OUT) s = sum e, e = exp(d) (0 below exp's double range:
 * s >= 1 holds the term at the max).  d is formed from the difference, not
 * as x inv_t - inv_t x_max: with FMA contraction (the avx2 / AVX-512
 * variants) that is the product's rounding error at the max, not 0, and a
 * one-value row's entropy came out -5.6e-17.  A nan entry makes s nan. */
static LM_TARGET double LM_FN(lm_ent_sums)(const LM_T *x, ptrdiff_t n, double inv_t, double x_max,
                                           double *s_out)
{
    double s = 0.0, u = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : s, u)
    for (j = 0; j < n; j++) {
        double d = ((double)x[j] - x_max) * inv_t;
        double e = lm_exp_neg_sum(d);
        s += e;
        u += e > 0.0 ? e * d : 0.0;
    }
    *s_out = s;
    return s == s ? u : s;
}

/* lm_ent_sums without the values at the max: *s_out = the sum of exp(d)
 * over the d != 0 only, *n_at_max = #{d == 0} = #{x == x_max}.  The return
 * value is u, to which the values at the max add nothing.  Kept apart, the
 * 1s let the caller take log1p of the rest: a row with one dominant value
 * has an entropy or a target loss far below 1 ulp of log(1 + rest).  (Terms
 * below exp(-708) are still left out, as in lm_ent_sums: a rest made only of
 * such terms, a loss below 1e-307, comes out 0.) */
static LM_TARGET double LM_FN(lm_ent_sums_below)(const LM_T *x, ptrdiff_t n, double inv_t,
                                                 double x_max, double *s_out, double *n_at_max)
{
    double s = 0.0, u = 0.0, c = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : s, u, c)
    for (j = 0; j < n; j++) {
        double d = ((double)x[j] - x_max) * inv_t;
        double e = lm_exp_neg_sum(d);
        u += e > 0.0 ? e * d : 0.0;
        s += d == 0.0 ? 0.0 : e;
        c += d == 0.0 ? 1.0 : 0.0;
    }
    *s_out = s;
    *n_at_max = c;
    return s == s ? u : s;
}

/* KL sums of two logit rows, a = inv_t * p and b = inv_t * q, against
 * ma >= every a and mb >= every b:  sums[0] = sa = sum exp(a - ma),
 * sums[1] = sb = sum exp(b - mb), and the return value
 * w = sum exp(a - ma) * ((a - ma) - (b - mb)) over the a > -inf, so that
 * KL = w / sa + log(sb) - log(sa).  nan anywhere, or b = -inf where a is
 * finite (KL = +inf), makes the result or a sum non-finite. */
static LM_TARGET double LM_FN(lm_kl_logit_sums)(const LM_T *p, const LM_T *q, ptrdiff_t n,
                                                double inv_t, double ma, double mb,
                                                double *sums)
{
    double sa = 0.0, sb = 0.0, w = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : sa, sb, w)
    for (j = 0; j < n; j++) {
        double da = (double)p[j] * inv_t - ma;
        double db = (double)q[j] * inv_t - mb;
        double ea = lm_exp_neg_sum(da);
        sa += ea;
        sb += lm_exp_neg_sum(db);
        w += da >= -1.7976931348623157e308 ? ea * (da - db) : 0.0;
    }
    sums[0] = sa;
    sums[1] = sb;
    return w;
}

/* Gradients of KL(softmax(a) || softmax(b)) times scale, given the row's
 * ma, mb, log sa, log sb and c = w / sa of lm_kl_logit_sums (all finite):
 *   gq = scale * inv_t * (Q - P),  gp = scale * inv_t * P * ((a - ma) - (b - mb) - c)
 * with P = exp((a - ma) - log sa), Q = exp((b - mb) - log sb) (gp = 0 where
 * P = 0, as the scalar code: P * (-inf) is not a gradient).  P and Q use
 * the exp of LM_T (a float gradient takes float's exp, within ~1 ulp of
 * float: its argument's rounding to float moves P by at most ~2e-8
 * absolute, since P = e^x and |x| e^x <= 1/e); the rest is double.  gq or gp
 * may be NULL (not both); either may be exactly p or q (element j is read
 * before it is written). */
#define LM_KLG_BODY(GQ, GP)                                                       \
    _Pragma("omp simd")                                                           \
    for (j = 0; j < n; j++) {                                                     \
        double da = (double)p[j] * inv_t - ma;                                    \
        double db = (double)q[j] * inv_t - mb;                                    \
        double pk = (double)LM_EXPNEG((LM_T)(da - log_sa));                       \
        if (GQ) {                                                                 \
            double qk = (double)LM_EXPNEG((LM_T)(db - log_sb));                   \
            gq[j] = (LM_T)(k * (qk - pk));                                        \
        }                                                                         \
        if (GP) gp[j] = (LM_T)(pk > 0.0 ? k * pk * ((da - db) - c) : 0.0);       \
    }

static LM_TARGET void LM_FN(lm_kl_logit_grad)(const LM_T *p, const LM_T *q, ptrdiff_t n,
                                              double inv_t, double ma, double mb,
                                              double log_sa, double log_sb, double c,
                                              double scale, LM_T *gq, LM_T *gp)
{
    const double k = scale * inv_t;
    ptrdiff_t j;
    if (gp == NULL) {
        LM_KLG_BODY(1, 0)
    } else if (gq == NULL) {
        LM_KLG_BODY(0, 1)
    } else {
        LM_KLG_BODY(1, 1)
    }
}
#undef LM_KLG_BODY

/* Jensen-Shannon sum of two logit rows given their log-normalisers:
 * sum P (lp - lm) + Q (lq - lm), lp = inv_t p - lse_a, lq = inv_t q - lse_b,
 * lm = log(1/2) + max + log1p(exp(min - max)) = log((P + Q) / 2).  Any
 * -inf, inf or nan entry makes the result nan. */
static LM_TARGET double LM_FN(lm_js_logit_sum)(const LM_T *p, const LM_T *q, ptrdiff_t n,
                                               double inv_t, double lse_a, double lse_b)
{
    double s = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : s)
    for (j = 0; j < n; j++) {
        double lp = (double)p[j] * inv_t - lse_a;
        double lq = (double)q[j] * inv_t - lse_b;
        double hi = lp > lq ? lp : lq, lo = lp > lq ? lq : lp;
        double lm = -0.6931471805599453 + hi + lm_log1p_pos(lm_exp_neg(lo - hi));
        s += lm_exp_neg(lp) * (lp - lm) + lm_exp_neg(lq) * (lq - lm);
    }
    return s;
}

/* Binary cross-entropy with logits, elementwise over n contiguous values:
 *   l = w * (pw * t * softplus(-x) + (1 - t) * softplus(x)),
 *   softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)),
 *   grad = scale * w * ((1 - t) * sigmoid(x) - pw * t * sigmoid(-x)),
 * sigmoid from the same e = exp(-|x|): 1 / (1 + e) on x's side, e / (1 + e)
 * on the other.  w and pw (double, NULL together: weights 1); loss and grad
 * may be NULL.  Returns the sum of l.  If x holds a nan or an inf, nothing
 * is written and *special = 1 (the caller's exact code defines those). */
#define LM_BCE_BODY(WT, LS, GR)                                                   \
    _Pragma("omp simd reduction(+ : acc)")                                        \
    for (j = 0; j < n; j++) {                                                     \
        double xv = (double)x[j], tv = (double)t[j];                              \
        double wv = WT ? w[j] : 1.0, pv = WT ? pw[j] : 1.0;                       \
        double ax = xv < 0.0 ? -xv : xv;                                          \
        double e = lm_exp_neg(-ax);                                               \
        double tail = lm_log1p_pos(e);                                            \
        double sp_pos = (xv > 0.0 ? xv : 0.0) + tail;                             \
        double sp_neg = (xv < 0.0 ? -xv : 0.0) + tail;                            \
        double l = wv * (pv * tv * sp_neg + (1.0 - tv) * sp_pos);                 \
        acc += l;                                                                 \
        if (LS) loss[j] = (LM_T)l;                                                \
        if (GR) {                                                                 \
            double r = 1.0 / (1.0 + e), er = e * r;                               \
            double sig = xv >= 0.0 ? r : er, sig_neg = xv >= 0.0 ? er : r;        \
            grad[j] = (LM_T)(scale * wv * ((1.0 - tv) * sig - pv * tv * sig_neg)); \
        }                                                                         \
    }

static LM_TARGET double LM_FN(lm_bce_logits)(const LM_T *x, const LM_T *t, const double *w,
                                             const double *pw, ptrdiff_t n, double scale,
                                             LM_T *loss, LM_T *grad, int *special)
{
    double acc = 0.0, chk = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : chk)
    for (j = 0; j < n; j++) chk += (double)x[j] - (double)x[j];
    if (chk != 0.0) {
        *special = 1;
        return 0.0;
    }
    *special = 0;
    if (w == NULL) {
        if (loss == NULL && grad != NULL) { LM_BCE_BODY(0, 0, 1) }
        else if (loss != NULL && grad == NULL) { LM_BCE_BODY(0, 1, 0) }
        else if (loss != NULL) { LM_BCE_BODY(0, 1, 1) }
        else { LM_BCE_BODY(0, 0, 0) }
    } else {
        if (loss == NULL && grad != NULL) { LM_BCE_BODY(1, 0, 1) }
        else if (loss != NULL && grad == NULL) { LM_BCE_BODY(1, 1, 0) }
        else if (loss != NULL) { LM_BCE_BODY(1, 1, 1) }
        else { LM_BCE_BODY(1, 0, 0) }
    }
    return acc;
}
#undef LM_BCE_BODY

/* How many x[j] > xy, plus how many x[j] == xy with j < y (a stable
 * descending rank); exact (a count below 2^53). */
static LM_TARGET double LM_FN(lm_rank_count)(const LM_T *x, ptrdiff_t n, double xy,
                                             ptrdiff_t y)
{
    double c = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : c)
    for (j = 0; j < n; j++) {
        double v = (double)x[j];
        c += (v > xy || (v == xy && j < y)) ? 1.0 : 0.0;
    }
    return c;
}

/* sum of a * b, in double. */
static LM_TARGET double LM_FN(lm_mul_sum)(const LM_T *a, const LM_T *b, ptrdiff_t n)
{
    double s = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : s)
    for (j = 0; j < n; j++) s += (double)a[j] * (double)b[j];
    return s;
}

/* sum of a, in double: pairwise above 256 values (a plain lane-wise sum of
 * 4097 equal values was ~1e-13 off on the 2-lane baseline; this is ~1e-15). */
static LM_TARGET double LM_FN(lm_sum)(const LM_T *a, ptrdiff_t n)
{
    double s = 0.0;
    ptrdiff_t j;
    if (n > 256) {
        ptrdiff_t half = (n / 2 + 7) & ~(ptrdiff_t)7;  /* keep the halves aligned alike */
        return LM_FN(lm_sum)(a, half) + LM_FN(lm_sum)(a + half, n - half);
    }
#pragma omp simd reduction(+ : s)
    for (j = 0; j < n; j++) s += (double)a[j];
    return s;
}

/* softmax backward: out = y * (g - dot); out may be exactly g or y. */
static LM_TARGET void LM_FN(lm_softmax_bwd)(const LM_T *g, const LM_T *y, LM_T *out,
                                            ptrdiff_t n, double dot)
{
    ptrdiff_t j;
#pragma omp simd
    for (j = 0; j < n; j++) out[j] = (LM_T)((double)y[j] * ((double)g[j] - dot));
}

/* log_softmax backward: out = g - exp(z) * total for z <= 0 (the caller
 * checks max(z) <= 0); out may be exactly g or z. */
static LM_TARGET void LM_FN(lm_log_softmax_bwd)(const LM_T *g, const LM_T *z, LM_T *out,
                                                ptrdiff_t n, double total)
{
    ptrdiff_t j;
#pragma omp simd
    for (j = 0; j < n; j++) out[j] = (LM_T)((double)g[j] - lm_exp_neg((double)z[j]) * total);
}
/* ---- end of the training primitives ---- */

#undef LM_PF_CHUNK
#undef LM_PF_MIN_N
#undef LM_PF_LOOP_BEGIN
#undef LM_PF_LOOP_END
#if LM_VEXP
#undef LM_TAIL_MASK
#undef LM_TAIL_MASK16
#undef LM_TRANSPOSE8
#endif
#undef LM_VEXP
#undef LM_ENTR_LOG
#undef LM_FN
#undef LM_CAT3
#undef LM_CAT3_

#endif /* LM_T */
