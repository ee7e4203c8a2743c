/* lossmle's SIMD layer: the smallest C that Cython cannot express.
 *
 * Why C and not Cython: the hot loops need (1) a branch-free exp/log the
 * compiler can vectorise (libm's scalar exp caps a kernel at ~1/4 of the
 * machine's speed), (2) `#pragma omp simd reduction(...)` so GCC may
 * reassociate the floating-point sums (we never use -ffast-math: inf and nan
 * must keep their meaning), and (3) per-function target attributes, so one
 * build carries AVX-512, AVX2 and baseline variants and picks one at run time
 * (no -march=native: a wheel must run on any x86-64).  Everything else, the
 * loops over rows, threading, special values, stays in Cython.
 *
 * Dispatch: lm_simd_select() (in lossmle._kernels.simd) chooses the best variant this
 * CPU supports, or the one named by the environment variable LOSSMLE_SIMD
 * (avx512, avx2, baseline) when that is lower, so tests can run every path on
 * one machine.  Other modules call lm_simd_bind() with that module's capsule
 * (``simd_init()`` in rowops.pxd does it).  On non-x86
 * or other compilers only the portable baseline exists.
 *
 * Accuracy: lm_exp_neg and lm_log_normal are within ~1 ulp (Cody-Waite
 * reduction with a split ln 2, degree-13 / atanh-series polynomials), the
 * float exp within ~1 ulp of float, the float64 rows' lm_log1p_pos within
 * ~0.76 ulp (lm_log_plus); sums are in double.  The training
 * primitives (the last section of lm_simd_impl.h) use the double exp/log for
 * both dtypes, but for the KL gradient's P and Q (LM_T's exp).
 */
#ifndef LOSSMLE_SIMD_H
#define LOSSMLE_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define LM_INLINE static inline __attribute__((always_inline))
#else
#define LM_INLINE static inline
#endif

/* Fully unroll a loop over a row of at most 8 values, so that the loop around
 * it (one row per SIMD lane) can vectorise. */
#if defined(__clang__)
#define LM_UNROLL _Pragma("unroll 8")
#elif defined(__GNUC__)
#define LM_UNROLL _Pragma("GCC unroll 8")
#else
#define LM_UNROLL
#endif

/* Medium rows (lm_col_rows): up to LM_COL_ROWS rows per call, one per SIMD
 * lane, of at most LM_COL_MAX values (the callers' copies of a block of such
 * rows, 64 x 64 values, stay in L1). */
#define LM_COL_ROWS 64
#define LM_COL_MAX 64
/* Contiguous rows (a C-ordered last axis) reach lm_col_rows through
 * lm_transpose's copies, for up to the variant's col_contig_max values
 * (softmax: 20 on every variant, lossmle/_kernels/rows.pxd).  With AVX-512
 * the copies move 8 x 8 tiles through registers and the kernel runs the
 * table exp: up to 40 values it beats the row-wise kernels (logsumexp 0.34-
 * 0.76x their time, log_softmax and cross-entropy 0.42-0.92x, but float
 * log_softmax at 32 values, 1.09x).  The avx2 and baseline variants copy a
 * value at a time and run the auto-vectorised exp: at 24-40 values 1.1-1.8x
 * the row-wise time for log_softmax and cross-entropy, so they stop at 20.
 * LM_COL_CONTIG_MAX bounds every variant's value (the callers' buffers). */
#define LM_COL_CONTIG_MAX 40
/* lm_entr_rows: rows of up to this many values, across rows */
#define LM_ENTR_COLS_MAX 64
/* lm_col_rows walks eight rows down all n values (LM_COL_WALK) in the
 * callers' transposed copies (column stride LM_COL_LD_COPY: 72, not 64, as
 * a power-of-two stride puts every column in the same few L1 sets) and
 * along a middle axis with at most LM_COL_LD_NEAR positions after it; other
 * middle axes keep the rows inner (see the sum pass). */
#define LM_COL_LD_COPY 72
#define LM_COL_LD_NEAR 32
#define LM_COL_WALK(ld) ((ld) <= LM_COL_LD_NEAR || (ld) == LM_COL_LD_COPY)
#define LM_COL_CONTIG_MAX_NARROW 20

/* Software prefetch of the data that follows a row (the next row of a
 * C-ordered array, or the next block of a long one), issued a little at a
 * time while the row is computed: the exp-bound passes then overlap the
 * memory traffic of the next row's first, memory-bound pass (-25% at
 * 4096x4096 on one thread; prefetching it all at once helped 4%).  A
 * prefetch never faults, so running past the array's end is harmless. */
#if defined(__GNUC__) || defined(__clang__)
#define LM_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define LM_PREFETCH(p) ((void)(p))
#endif
#define LM_PF_BYTES 1024  /* bytes of a row per chunk, and prefetched per chunk */

LM_INLINE uint64_t lm_bits(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
LM_INLINE double lm_from_bits(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }
LM_INLINE uint32_t lm_bitsf(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
LM_INLINE float lm_from_bitsf(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* Polynomials for exp(r) on |r| <= ln2/2 (+0.05%): Chebyshev fits (mpmath
 * chebyfit, near-minimax), max error 3.2e-18 (double, degree 11) and 2.0e-9
 * (float, degree 6) relative, well below half an ulp. */
LM_INLINE double lm_exp_poly(double r)
{
    double p = 2.5110095611886237174e-8;
    p = p * r + 2.763271507163225414e-7;
    p = p * r + 2.7557240761739259262e-6;
    p = p * r + 0.00002480148527837006257;
    p = p * r + 0.0001984126989019370597;
    p = p * r + 0.0013888888952505406454;
    p = p * r + 0.0083333333333195455608;
    p = p * r + 0.041666666666487379615;
    p = p * r + 0.16666666666666680877;
    p = p * r + 0.50000000000000184777;
    p = p * r + 0.99999999999999999976;
    return p * r + 1.0;
}

LM_INLINE float lm_expf_poly(float r)
{
    float p = 0.00139411607538f;
    p = p * r + 0.00837516828895f;
    p = p * r + 0.0416663522681f;
    p = p * r + 0.166664150113f;
    p = p * r + 0.500000004726f;
    p = p * r + 1.00000003783f;
    return p * r + 1.0f;
}

/* exp(x) for -708 <= x <= 0 (Cody-Waite: x = k ln2 + r, ln 2 split so that
 * k * ln2_hi is exact; 2^k from the exponent bits).  Below -708 it returns
 * exp(-708): callers clamp or rescale first.  nan -> nan. */
LM_INLINE double lm_exp_core(double xs)
{
    const double ln2_hi = 6.93147180369123816490e-01;  /* 42 significant bits */
    const double ln2_lo = 1.90821492927058770002e-10;
    const double log2e = 1.44269504088896338700e+00;
    const double shifter = 6755399441055744.0;          /* 1.5 * 2^52 */
    xs = xs < -708.0 ? -708.0 : xs;                     /* keeps -inf out of the bits */
    double kd = xs * log2e + shifter;
    uint64_t ki = lm_bits(kd);
    kd -= shifter;
    double r = (xs - kd * ln2_hi) - kd * ln2_lo;
    return lm_exp_poly(r) * lm_from_bits((ki + 1023u) << 52);  /* 2^k, k in [-1022, 0] */
}

/* exp(x) for x <= 0, subnormal results included: below -708 the scale 2^k
 * would leave the normal range, so it is built as 2^(k + 54) and the
 * product scaled by 2^-54 afterwards, the one rounding into the subnormals
 * (shifting x itself by 54 ln 2 instead would cost ~1e-13 relative: ln 2 is
 * not exact).  Below -745.2 the result is 0, as exp's.  nan -> nan. */
LM_INLINE double lm_exp_neg(double x)
{
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    const double log2e = 1.44269504088896338700e+00;
    const double shifter = 6755399441055744.0;          /* 1.5 * 2^52 */
    double xs = x < -746.0 ? -746.0 : x;                /* keeps -inf out of the bits */
    int tiny = xs < -708.0;                             /* k < -1021 */
    double kd = xs * log2e + shifter;
    uint64_t ki = lm_bits(kd);
    kd -= shifter;
    double r = (xs - kd * ln2_hi) - kd * ln2_lo;
    uint64_t e = (ki + (tiny ? 1023u + 54u : 1023u)) << 52;  /* 2^k or 2^(k+54) */
    double y = lm_exp_poly(r) * lm_from_bits(e);
    return tiny ? y * 5.551115123125783e-17 : y;           /* 2^-54 */
}

/* exp(x) for x <= 0 inside a sum that holds a term >= 1: results below
 * 2^-1022 (which cannot change such a sum) are not needed, so the subnormal
 * branch is skipped.  -inf -> ~0 (3e-308, invisible in the sum). */
LM_INLINE double lm_exp_neg_sum(double x)
{
    return x < -708.0 ? 0.0 : lm_exp_core(x);
}

LM_INLINE float lm_expf_core(float xs)
{
    const float ln2_hi = 0.693145751953125f;
    const float ln2_lo = 1.428606765330187045e-06f;
    const float log2e = 1.44269502162933349609f;
    const float shifter = 12582912.0f;                  /* 1.5 * 2^23 */
    xs = xs < -87.33f ? -87.33f : xs;                   /* ln(FLT_MIN) = -87.3365 */
    float kd = xs * log2e + shifter;
    uint32_t ki = lm_bitsf(kd);
    kd -= shifter;
    float r = (xs - kd * ln2_hi) - kd * ln2_lo;
    return lm_expf_poly(r) * lm_from_bitsf((ki + 127u) << 23);
}

/* expf(x) for x <= 0 (and nan -> nan), same scheme in float: below -87 the
 * scale is 2^(k + 24), the product then scaled by 2^-24. */
LM_INLINE float lm_expf_neg(float x)
{
    const float ln2_hi = 0.693145751953125f;
    const float ln2_lo = 1.428606765330187045e-06f;
    const float log2e = 1.44269502162933349609f;
    const float shifter = 12582912.0f;                  /* 1.5 * 2^23 */
    float xs = x < -104.0f ? -104.0f : x;               /* below ln(2^-150): 0 */
    int tiny = xs < -87.0f;                             /* k < -125 */
    float kd = xs * log2e + shifter;
    uint32_t ki = lm_bitsf(kd);
    kd -= shifter;
    float r = (xs - kd * ln2_hi) - kd * ln2_lo;
    uint32_t e = (ki + (tiny ? 127u + 24u : 127u)) << 23;  /* 2^k or 2^(k+24) */
    float y = lm_expf_poly(r) * lm_from_bitsf(e);
    return tiny ? y * 5.9604644775390625e-08f : y;         /* 2^-24 */
}

LM_INLINE float lm_expf_neg_sum(float x)
{
    return x < -87.0f ? 0.0f : lm_expf_core(x);
}

/* a * b - p exactly, for p = fl(a * b), without an FMA (Dekker's product) */
LM_INLINE double lm_prod_err(double a, double b, double p)
{
    const double split = 134217729.0;  /* 2^27 + 1 */
    double ta = split * a, ah = ta - (ta - a), al = a - ah;
    double tb = split * b, bh = tb - (tb - b), bl = b - bh;
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl;
}

/* log(x + c) for a positive, normal, finite x, with x = 2^k z, z in
 * [sqrt(1/2), sqrt(2)): log(z + c') = 2 atanh(f), c' = c 2^-k,
 * f = (z - 1 + c') / (z + 1 + c').  mode 0: log(x), c unused; mode 4:
 * log(x), c unused, the series cut at s^5 (relative error < 5e-11); otherwise
 * |c| is below half x's ulp, and mode 3 puts c' into f's numerator only
 * (~2.3 ulp, one division less than log(x) + c / x), while modes 1 (with
 * an FMA) and 2 (without: Dekker's product) also undo the rounding of
 * f's numerator, its denominator and the division, carrying the rest of
 * 2f beside it: within ~0.76 ulp (3e7 arguments against log1pl), at ~10
 * more flops. */
LM_INLINE double lm_log_plus(double x, double c, int mode)
{
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    uint64_t ix = lm_bits(x);
    /* offset-binary exponent: u >> 52 == k + 2048 without a signed shift */
    uint64_t u = ix - 0x3fe6a09e667f3bcdULL + 0x8000000000000000ULL;
    uint64_t kbits = u >> 52;
    double k = lm_from_bits(kbits | 0x4330000000000000ULL) - (4503599627370496.0 + 2048.0);
    double z = lm_from_bits(ix - ((u - 0x8000000000000000ULL) & 0xfff0000000000000ULL));
    double num = z - 1.0;  /* exact: z in [0.7, 1.5) */
    double d = z + 1.0, c_k = 0.0, e_num = 0.0, two_f_lo = 0.0;
    if (mode != 0 && mode != 4) {
        /* 2^-k has the exponent field 1023 - k = 3071 - kbits; k >= 1023
         * (x >= 2^1022.5) gives 0, where c' is far below the result's ulp */
        uint64_t kc = kbits < 3071u ? kbits : 3071u;
        double num_hi = num;
        c_k = c * lm_from_bits((3071u - kc) << 52);
        num = num_hi + c_k;
        e_num = c_k - (num - num_hi);  /* exact (Fast2Sum: num_hi is 0 or >= c_k) */
    }
    /* 2f as 2 num / d: for a subnormal num (u in lm_log1p_pos) that is num
     * itself, exactly, where 2 (num / d) would round */
    double two_f = (2.0 * num) / d;
    if (mode == 1 || mode == 2) {
        /* 2f = 2 (num + e_num) / (d + e_d) exactly, with d + e_d == z + c' + 1
         * (Fast2Sum: z < 2, d - 1 is exact); r = that numerator less two_f
         * times that denominator, exact but for two_f * e_d's rounding (the
         * division's remainder is exact with an FMA or Dekker's product).
         * two_f_lo = r / d, to 2^-5.5 (a line in d on [1.7, 2.42]), is
         * added to the small terms, below two_f's own rounding */
        double e_d = (z - (d - 1.0)) + c_k;
        double q = two_f * d;
        double r = mode == 1 ? __builtin_fma(-two_f, d, 2.0 * num)
                             : (2.0 * num - q) - lm_prod_err(two_f, d, q);
        r += 2.0 * e_num - two_f * e_d;
        two_f_lo = r * (0.976173893 - 0.23592431 * d);
    }
    double f = 0.5 * two_f;
    double s = f * f;
    /* sum_{i>=0} s^i / (2i + 1), |s| <= 0.0295, to s^10; mode 4 to s^5
     * (a relative error below 5e-11: for results rounded to float) */
    double p = 1.0 / 21.0;
    if (mode == 4) {
        p = 1.0 / 11.0;
    } else {
        p = p * s + 1.0 / 19.0;
        p = p * s + 1.0 / 17.0;
        p = p * s + 1.0 / 15.0;
        p = p * s + 1.0 / 13.0;
        p = p * s + 1.0 / 11.0;
    }
    p = p * s + 1.0 / 9.0;
    p = p * s + 1.0 / 7.0;
    p = p * s + 1.0 / 5.0;
    p = p * s + 1.0 / 3.0;
    if (mode == 0 || mode == 3 || mode == 4)
        return k * ln2_hi + (two_f + (two_f * s * p + k * ln2_lo));
    return k * ln2_hi + (two_f + (two_f * s * p + (k * ln2_lo + two_f_lo)));
}

/* log(x) for a positive, normal, finite x */
LM_INLINE double lm_log_normal(double x) { return lm_log_plus(x, 0.0, 0); }
/* the same to a relative error below 5e-11, half the polynomial: for a sum
 * of terms of one sign rounded to float (float32 entropy), where that error
 * stays ~1000x below the result's half ulp */
LM_INLINE double lm_log_normal_for_float(double x) { return lm_log_plus(x, 0.0, 4); }

/* One term of rel_entr(p, q) = p log(p / q) where the vectorised formula
 * holds (p > 0, q > 0, p/q a normal number), else 0; (OUT) *special = 0 there
 * and for p == 0 <= q (a term of 0), 1 where the exact scalar code must
 * decide (negative, nan, inf, q == 0 < p, p/q out of the normal range).
 * With t = fl(p / q) and r = p - t q its remainder (exact: one FMA, or
 * Dekker's product without), p log(p/q) = p log t + p log(1 + r / (t q)),
 * and as p / (t q) is 1 to an ulp and r / (t q) below an ulp, that is
 * p log t + r to an ulp of r.  log t alone is only good to an ulp of t, so
 * the KL of near-equal distributions (p/q - 1 ~ 1e-14) lost its digits, as
 * scipy's rel_entr did before gh-20710.  Shared by lm_kl (one row) and
 * lm_kl_rows (a block of short rows); called as lm_rel_entr_term(p, q, &s)
 * inside lm_simd_impl.h: mode 1 (FMA) or 2 (Dekker's product); float32
 * rows without an FMA, mode 3 (an exact split of t).  float32 rows
 * need it too: each term without it is only good to ~1e-9 relative, and the
 * terms of near-equal rows cancel (1e-7 terms, a 5e-14 sum: 1800 float ulps
 * off).  Mode 0 (no remainder) is kept for comparison only. */
LM_INLINE double lm_rel_entr_term_(double p, double q, double *special, int mode,
                                     int for_float)
{
    double t = p / q;
    int regular = p > 0.0 && q > 0.0 && t >= 2.2250738585072014e-308 &&
                  t <= 1.7976931348623157e308;
    int zero = p == 0.0 && q >= 0.0;
    double r = 0.0;
    if (mode == 1) {
        r = __builtin_fma(-t, q, p);
    } else if (mode == 2) {
        double tq = t * q;   /* p - tq is exact (Sterbenz: tq is p to 2 ulps) */
        r = (p - tq) - lm_prod_err(t, q, tq);
        r = r - r == 0.0 ? r : 0.0;  /* Dekker's split overflows above ~1e300 */
    } else if (mode == 3) {
        /* p, q floats, no FMA: t = t_hi + t_lo with t_hi t's leading 24 bits,
         * t_lo the other 29; t_hi q and t_lo q are exact (48 and 53 bits), and
         * so are both subtractions (Sterbenz: t_hi q is p to 2^-23, and the
         * two differences are equal to ~2^-29 of either) */
        double t_hi = lm_from_bits(lm_bits(t) & 0xffffffffe0000000ULL);
        r = (p - t_hi * q) - (t - t_hi) * q;
    }
    double lt = for_float ? lm_log_normal_for_float(regular ? t : 1.0)
                          : lm_log_normal(regular ? t : 1.0);
    double term = p * lt + r;
    *special = (regular || zero) ? 0.0 : 1.0;
    return regular ? term : 0.0;
}
#define lm_rel_entr_term(p, q, special) \
    lm_rel_entr_term_((p), (q), (special), LM_HAS_FMA ? 1 : LM_DOUBLE ? 2 : 3, !LM_DOUBLE)

/* One term of entr(t) = -t log t, t = p / total, where the vectorised
 * formula holds (t positive, normal, finite), else 0; (OUT) *special = 0
 * there and for p == 0 (a term of 0), 1 where the exact scalar code must
 * decide (lm_entr's two loops). */
LM_INLINE double lm_entr_term(double p, double t, double *special, int for_float)
{
    int regular = t >= 2.2250738585072014e-308 && t <= 1.7976931348623157e308;
    double lt = for_float ? lm_log_normal_for_float(regular ? t : 1.0)
                          : lm_log_normal(regular ? t : 1.0);
    double term = -t * lt;
    *special = (regular || p == 0.0) ? 0.0 : 1.0;
    return regular ? term : 0.0;
}

/* log1p(u) for u >= 0 finite: log(w + c), w = 1 + u rounded and c = its
 * rounding error (exact: w - 1 is), by lm_log_plus in the given mode.
 * Called as lm_log1p_pos(u) inside lm_simd_impl.h: float64 rows get the
 * ~0.76-ulp mode (the log-sum of a row whose max is 0 is this log1p
 * itself), float32 rows, rounded to float afterwards, the cheaper mode 3. */
LM_INLINE double lm_log1p_pos_(double u, int mode)
{
    double w = 1.0 + u;
    return lm_log_plus(w, u - (w - 1.0), mode);
}
#define lm_log1p_pos(u) lm_log1p_pos_((u), !LM_DOUBLE ? 3 : LM_HAS_FMA ? 1 : 2)

/* ---- the variants: compiled once, in the extension lossmle._kernels.simd ----
 * Only the translation unit that defines LM_SIMD_IMPLEMENT (lossmle/_kernels/simd.pyx)
 * instantiates the per-ISA functions and their tables; every other module
 * binds to that module's table through a capsule (lm_simd_bind), so the
 * heavy code is compiled once, and a re-selection switches every module. */
#ifdef LM_SIMD_IMPLEMENT
/* ---- the variants ---- */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(_M_X64))
#define LM_X86 1
#else
#define LM_X86 0
#endif

/* LM_HAS_FMA: fused multiply-add is an instruction (not a libm call) */
#define LM_ISA baseline
#define LM_TARGET
#if defined(__FMA__) || defined(__aarch64__)
#define LM_HAS_FMA 1
#else
#define LM_HAS_FMA 0
#endif
#include "lm_simd_impl.h"  /* both dtypes */
#undef LM_ISA
#undef LM_TARGET
#undef LM_HAS_FMA
#define LM_HAS_FMA 1  /* the x86 variants below all target fma */

#if LM_X86
#if defined(__clang__)
#define LM_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,prfchw")))
#else
#define LM_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,prfchw,prefer-vector-width=512")))
#endif
#define LM_TARGET_AVX2 __attribute__((target("avx2,fma,prfchw")))

#include <immintrin.h>

/* exp(d) of 8 doubles d <= 0: the AVX-512 variant's exp for float64 rows
 * (lm_sumexp, lm_sumexp_below, lm_expwrite, lm_ce_grad).  Written in
 * intrinsics because the two instructions that make it cheap have no
 * scalar C the vectoriser would turn into them:
 *  - a 16-entry table of 2^(j/16) held in registers and read with a
 *    permute (vpermt2pd; a gather from memory costs more than the polynomial
 *    it saves): x = (16 k' + j) ln2/16 + r, |r| <= ln2/32, so exp(r) needs a
 *    degree-6 polynomial instead of lm_exp_poly's degree 11 (|r| <= ln2/2);
 *    each entry is 2^(j/16) rounded to double.  Its residual (a second
 *    table, t + (t q + t_lo)) took a permute and an add per vector: without
 *    it the exp-and-sum loop takes 0.43 instead of 0.49 ns per value, and
 *    logsumexp / cross-entropy 0.90-0.93x the time (one thread, old and new
 *    builds alternated), for a max error of 1.21 instead of 0.81 ulp - the
 *    other paths' polynomial exp has 1.22, and logsumexp's error over random
 *    rows against mpmath did not move (mean 0.51 / 0.53 ulp, the same p99);
 *  - vscalefpd for the 2^k' scale, rounding once into the subnormals and to
 *    0 below them: one path for every d (lm_exp_neg's semantics, no tiny
 *    branch and no re-run of a row that reaches it).
 * C harness, one thread, 4096-value rows in L1: 0.43 ns per value against
 * 0.61 for the auto-vectorised lm_exp_neg_sum; max error 1.21 ulp over 20M
 * arguments in [-745, 0] (lm_exp_neg: 1.22 ulp).  -inf -> 0, nan -> nan
 * (vmaxpd returns its second operand, d, when that is nan). */
static inline __attribute__((always_inline)) LM_TARGET_AVX512 __m512d
lm_exp_neg_pd512(__m512d d)
{
    const __m512d t_hi_a = _mm512_setr_pd(
        1.0, 1.0442737824274138, 1.0905077326652577, 1.1387886347566916,
        1.189207115002721, 1.241857812073484, 1.2968395546510096, 1.3542555469368927);
    const __m512d t_hi_b = _mm512_setr_pd(
        1.4142135623730951, 1.4768261459394993, 1.5422108254079407, 1.6104903319492543,
        1.681792830507429, 1.7562521603732995, 1.8340080864093424, 1.9152065613971474);
    const __m512d shifter = _mm512_set1_pd(6755399441055744.0);   /* 1.5 * 2^52 */
    /* below -746 the result is 0 whatever the clamp; the clamp keeps k' small */
    d = _mm512_max_pd(_mm512_set1_pd(-746.0), d);
    __m512d kd = _mm512_fmadd_pd(d, _mm512_set1_pd(23.083120654223414), shifter); /* 16/ln2 */
    __m512i j = _mm512_castpd_si512(kd);          /* low 4 bits: k mod 16 */
    kd = _mm512_sub_pd(kd, shifter);
    /* ln2/16 split so that kd * hi is exact (hi has 36 bits, |kd| < 2^15) */
    __m512d r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(0.04332169878489367), d);
    r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(1.0291218489310676e-13), r);
    /* exp(r) - 1 = r + r^2 g(r): a minimax fit on |r| <= ln2/32 */
    __m512d g = _mm512_set1_pd(0.00138890346396658647607);
    g = _mm512_fmadd_pd(g, r, _mm512_set1_pd(0.00833344993410718535229));
    g = _mm512_fmadd_pd(g, r, _mm512_set1_pd(0.0416666666649536145539));
    g = _mm512_fmadd_pd(g, r, _mm512_set1_pd(0.166666666652962227394));
    g = _mm512_fmadd_pd(g, r, _mm512_set1_pd(0.5));
    __m512d q = _mm512_fmadd_pd(_mm512_mul_pd(r, r), g, r);
    __m512d t = _mm512_permutex2var_pd(t_hi_a, j, t_hi_b);
    __m512d y = _mm512_fmadd_pd(t, q, t);
    /* 2^floor(kd / 16) = 2^((k - j) / 16), exactly */
    return _mm512_scalef_pd(y, _mm512_mul_pd(kd, _mm512_set1_pd(0.0625)));
}

/* expf(d) of 16 floats d <= 0: the float32 rows' exp in the AVX-512 variant,
 * lm_exp_neg_pd512's scheme in float (the table fits one register, read by
 * vpermps; a cubic on |r| <= ln2/32; vscalefps).  The table residual is left
 * out here: with it the loops were ~10% slower, and without it the error is
 * already below the scalar-C float exp's (max 1.002 ulp against mpmath over
 * 200k sampled arguments in [-104, 0]; lm_expf_neg: 1.07).  Harness, one
 * thread, ns per value: sumexp 0.30 -> 0.24, expwrite 0.33-0.36 -> 0.24. */
static inline __attribute__((always_inline)) LM_TARGET_AVX512 __m512
lm_expf_neg_ps512(__m512 d)
{
    const __m512 table = _mm512_setr_ps(
        1.0f, 1.0442737340927124f, 1.0905077457427979f, 1.1387885808944702f,
        1.1892070770263672f, 1.2418577671051025f, 1.2968395948410034f, 1.3542555570602417f,
        1.4142135381698608f, 1.4768261909484863f, 1.5422108173370361f, 1.610490322113037f,
        1.6817928552627563f, 1.7562521696090698f, 1.8340080976486206f, 1.9152065515518188f);
    const __m512 shifter = _mm512_set1_ps(12582912.0f);            /* 1.5 * 2^23 */
    d = _mm512_max_ps(_mm512_set1_ps(-104.0f), d);                 /* below: 0 */
    __m512 kd = _mm512_fmadd_ps(d, _mm512_set1_ps(23.083120346069336f), shifter);
    __m512i j = _mm512_castps_si512(kd);
    kd = _mm512_sub_ps(kd, shifter);
    __m512 r = _mm512_fnmadd_ps(kd, _mm512_set1_ps(0.0433197021484375f), d);
    r = _mm512_fnmadd_ps(kd, _mm512_set1_ps(1.9966364561696537e-06f), r);
    __m512 g = _mm512_fmadd_ps(_mm512_set1_ps(0.166668625558f), r,
                               _mm512_set1_ps(0.500009794478f));
    __m512 q = _mm512_fmadd_ps(_mm512_mul_ps(r, r), g, r);
    __m512 t = _mm512_permutexvar_ps(j, table);
    return _mm512_scalef_ps(_mm512_fmadd_ps(t, q, t), _mm512_mul_ps(kd, _mm512_set1_ps(0.0625f)));
}

/* One 8 x 8 tile of lm_transpose through registers: d[k * dld + r] =
 * s[r * ld + k] for r < nr, k < nk (masked loads and stores; rows past nr
 * are never read).  float64: unpack pairs of rows, then permute and shuffle
 * 128- and 256-bit lanes (24 shuffles); float32 the same on 256-bit
 * vectors. */
static inline __attribute__((always_inline)) LM_TARGET_AVX512 void
lm_transpose8_pd512(const double *s, ptrdiff_t ld, int nr, int nk, double *d, ptrdiff_t dld)
{
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    const __mmask8 km = (__mmask8)((1u << nk) - 1u), rm = (__mmask8)((1u << nr) - 1u);
    __m512d v[8], a[8], b[8];
    int i;
    for (i = 0; i < 8; i++)
        v[i] = i < nr ? _mm512_maskz_loadu_pd(km, s + i * ld) : _mm512_setzero_pd();
    for (i = 0; i < 8; i += 2) {
        a[i] = _mm512_unpacklo_pd(v[i], v[i + 1]);      /* columns 0 2 4 6 */
        a[i + 1] = _mm512_unpackhi_pd(v[i], v[i + 1]);  /* columns 1 3 5 7 */
    }
    for (i = 0; i < 8; i += 4) {
        b[i] = _mm512_permutex2var_pd(a[i], lo, a[i + 2]);          /* 0, 4 */
        b[i + 1] = _mm512_permutex2var_pd(a[i + 1], lo, a[i + 3]);  /* 1, 5 */
        b[i + 2] = _mm512_permutex2var_pd(a[i], hi, a[i + 2]);      /* 2, 6 */
        b[i + 3] = _mm512_permutex2var_pd(a[i + 1], hi, a[i + 3]);  /* 3, 7 */
    }
    for (i = 0; i < 4; i++) {
        /* column i of the tile: rows 0-3 from b[i], 4-7 from b[i + 4] */
        if (i < nk)
            _mm512_mask_storeu_pd(d + i * dld, rm, _mm512_shuffle_f64x2(b[i], b[i + 4], 0x44));
        if (i + 4 < nk)
            _mm512_mask_storeu_pd(d + (i + 4) * dld, rm,
                                  _mm512_shuffle_f64x2(b[i], b[i + 4], 0xEE));
    }
}

static inline __attribute__((always_inline)) LM_TARGET_AVX512 void
lm_transpose8_ps256(const float *s, ptrdiff_t ld, int nr, int nk, float *d, ptrdiff_t dld)
{
    const __mmask8 km = (__mmask8)((1u << nk) - 1u), rm = (__mmask8)((1u << nr) - 1u);
    __m256 v[8], a[8], b[8];
    int i;
    for (i = 0; i < 8; i++)
        v[i] = i < nr ? _mm256_maskz_loadu_ps(km, s + i * ld) : _mm256_setzero_ps();
    for (i = 0; i < 8; i += 2) {
        a[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);      /* columns 0 1 4 5 */
        a[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);  /* columns 2 3 6 7 */
    }
    for (i = 0; i < 8; i += 4) {
        b[i] = _mm256_shuffle_ps(a[i], a[i + 2], _MM_SHUFFLE(1, 0, 1, 0));          /* 0, 4 */
        b[i + 1] = _mm256_shuffle_ps(a[i], a[i + 2], _MM_SHUFFLE(3, 2, 3, 2));      /* 1, 5 */
        b[i + 2] = _mm256_shuffle_ps(a[i + 1], a[i + 3], _MM_SHUFFLE(1, 0, 1, 0));  /* 2, 6 */
        b[i + 3] = _mm256_shuffle_ps(a[i + 1], a[i + 3], _MM_SHUFFLE(3, 2, 3, 2));  /* 3, 7 */
    }
    for (i = 0; i < 4; i++) {
        if (i < nk)
            _mm256_mask_storeu_ps(d + i * dld, rm, _mm256_permute2f128_ps(b[i], b[i + 4], 0x20));
        if (i + 4 < nk)
            _mm256_mask_storeu_ps(d + (i + 4) * dld, rm,
                                  _mm256_permute2f128_ps(b[i], b[i + 4], 0x31));
    }
}

/* s_lo += the low 8 floats of e, s_hi += the high 8, in double */
#define LM_ADD_PS_TO_PD(s_lo, s_hi, e)                                               \
    do {                                                                             \
        s_lo = _mm512_add_pd(s_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));     \
        s_hi = _mm512_add_pd(s_hi, _mm512_cvtps_pd(_mm256_castpd_ps(                 \
                                       _mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)))); \
    } while (0)

#define LM_ISA avx512
#define LM_TARGET LM_TARGET_AVX512
#define LM_EXP_PD512 1  /* lm_simd_impl.h: exps through lm_exp_neg_pd512 / lm_expf_neg_ps512 */
#include "lm_simd_impl.h"  /* both dtypes */
#undef LM_EXP_PD512
#undef LM_ADD_PS_TO_PD
#undef LM_ISA
#undef LM_TARGET

#define LM_ISA avx2
#define LM_TARGET LM_TARGET_AVX2
#include "lm_simd_impl.h"  /* both dtypes */
#undef LM_ISA
#undef LM_TARGET
#endif /* LM_X86 */
#endif /* LM_SIMD_IMPLEMENT */

/* ---- dispatch ---- */
#define LM_TABLE_FIELDS(T, S)                                                      \
    double (*max_##S)(const T *, ptrdiff_t);                                       \
    double (*sumexp_below_##S)(const T *, ptrdiff_t, double, double *);            \
    double (*sumexp_##S)(const T *, ptrdiff_t, double);                            \
    double (*expwrite_##S)(const T *, T *, ptrdiff_t, double);                     \
    void (*divide_##S)(T *, ptrdiff_t, double);                                    \
    void (*shift_##S)(const T *, T *, ptrdiff_t, double, double);                  \
    void (*ce_grad_##S)(const T *, T *, ptrdiff_t, double, double, double, double, \
                        const double *);                                           \
    double (*dot_##S)(const T *, const double *, ptrdiff_t, double, double *);     \
    double (*kl_##S)(const T *, const T *, ptrdiff_t, double *);                   \
    double (*short_rows_##S)(const T *, ptrdiff_t, ptrdiff_t, int, double *, T *,  \
                           double *);                                              \
    /* training primitives (issue 6) */                                            \
    double (*ent_sums_##S)(const T *, ptrdiff_t, double, double, double *);        \
    double (*ent_sums_below_##S)(const T *, ptrdiff_t, double, double, double *,   \
                                 double *);                                        \
    double (*kl_logit_sums_##S)(const T *, const T *, ptrdiff_t, double, double,   \
                                double, double *);                                 \
    void (*kl_logit_grad_##S)(const T *, const T *, ptrdiff_t, double, double,     \
                              double, double, double, double, double, T *, T *);   \
    double (*js_logit_sum_##S)(const T *, const T *, ptrdiff_t, double, double,    \
                               double);                                            \
    double (*bce_logits_##S)(const T *, const T *, const double *, const double *, \
                             ptrdiff_t, double, T *, T *, int *);                  \
    double (*rank_count_##S)(const T *, ptrdiff_t, double, ptrdiff_t);            \
    double (*mul_sum_##S)(const T *, const T *, ptrdiff_t);                        \
    double (*sum_##S)(const T *, ptrdiff_t);                                       \
    void (*softmax_bwd_##S)(const T *, const T *, T *, ptrdiff_t, double);         \
    void (*log_softmax_bwd_##S)(const T *, const T *, T *, ptrdiff_t, double);     \
    double (*kl_rows_##S)(const T *, const T *, ptrdiff_t, ptrdiff_t, double *,     \
                          double *);                                               \
    double (*entr_##S)(const T *, ptrdiff_t, double, double *);                    \
    double (*entr_rows_##S)(const T *, ptrdiff_t, ptrdiff_t, double *, double *);  \
    double (*wdot_##S)(const T *, const T *, ptrdiff_t, double, double, double,    \
                       const double *, double *);                                  \
    double (*short_ce_##S)(const T *, ptrdiff_t, ptrdiff_t, const int64_t *, int64_t, \
                           double *, double *);                                    \
    double (*short_ce_grad_##S)(const T *, ptrdiff_t, ptrdiff_t, const int64_t *,  \
                                int64_t, double, double *, T *, double *);          \
    double (*col_rows_##S)(const T *, ptrdiff_t, ptrdiff_t, ptrdiff_t, int,         \
                           const int64_t *, int64_t, double *, T *, ptrdiff_t,      \
                           double *);                                              \
    double (*sumexp_below_pf_##S)(const T *, ptrdiff_t, double, double *, T *);     \
    double (*sumexp_pf_##S)(const T *, ptrdiff_t, double, T *);                  \
    double (*expwrite_below_##S)(const T *, T *, ptrdiff_t, double, double *);     \
    void (*affine_##S)(T *, ptrdiff_t, double, double, const double *);

/* Fields added later go at the end: a module compiled against an earlier
 * lm_simd.h (another package that cimports lossmle's helpers) binds to this
 * table at run time and keeps the offsets it was built with. */
typedef struct {
    const char *name;
    LM_TABLE_FIELDS(double, d)
    LM_TABLE_FIELDS(float, f)
    int col_contig_max;  /* contiguous rows of up to this many values: lm_col_rows */
    void (*transpose_d)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, double *, ptrdiff_t);
    void (*transpose_f)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, float *, ptrdiff_t);
} lm_table_t;

#ifdef LM_SIMD_IMPLEMENT
#define LM_TABLE_ENTRIES(S, ISA)                                                   \
    lm_max_##S##_##ISA, lm_sumexp_below_##S##_##ISA, lm_sumexp_##S##_##ISA,         \
        lm_expwrite_##S##_##ISA, lm_divide_##S##_##ISA, lm_shift_##S##_##ISA,       \
        lm_ce_grad_##S##_##ISA, lm_dot_##S##_##ISA, lm_kl_##S##_##ISA,              \
        lm_short_rows_##S##_##ISA,                                                  \
        lm_ent_sums_##S##_##ISA, lm_ent_sums_below_##S##_##ISA,                     \
        lm_kl_logit_sums_##S##_##ISA,                                               \
        lm_kl_logit_grad_##S##_##ISA, lm_js_logit_sum_##S##_##ISA,                  \
        lm_bce_logits_##S##_##ISA, lm_rank_count_##S##_##ISA, lm_mul_sum_##S##_##ISA, \
        lm_sum_##S##_##ISA, lm_softmax_bwd_##S##_##ISA, lm_log_softmax_bwd_##S##_##ISA, \
        lm_kl_rows_##S##_##ISA, lm_entr_##S##_##ISA, lm_entr_rows_##S##_##ISA,       \
        lm_wdot_##S##_##ISA,                                                        \
        lm_short_ce_##S##_##ISA, lm_short_ce_grad_##S##_##ISA, lm_col_rows_##S##_##ISA, \
        lm_sumexp_below_pf_##S##_##ISA, lm_sumexp_pf_##S##_##ISA, \
        lm_expwrite_below_##S##_##ISA, lm_affine_##S##_##ISA

static const lm_table_t lm_table_baseline = {
    "baseline", LM_TABLE_ENTRIES(d, baseline), LM_TABLE_ENTRIES(f, baseline),
    LM_COL_CONTIG_MAX_NARROW, lm_transpose_d_baseline, lm_transpose_f_baseline};
#if LM_X86
static const lm_table_t lm_table_avx2 = {
    "avx2", LM_TABLE_ENTRIES(d, avx2), LM_TABLE_ENTRIES(f, avx2),
    LM_COL_CONTIG_MAX_NARROW, lm_transpose_d_avx2, lm_transpose_f_avx2};
static const lm_table_t lm_table_avx512 = {
    "avx512", LM_TABLE_ENTRIES(d, avx512), LM_TABLE_ENTRIES(f, avx512),
    LM_COL_CONTIG_MAX, lm_transpose_d_avx512, lm_transpose_f_avx512};
#endif

static const lm_table_t *lm_simd_current = &lm_table_baseline;

/* Pick the variant; returns its name.  Safe to call more than once. */
static const char *lm_simd_select(void)
{
    const char *want = getenv("LOSSMLE_SIMD");
    int cap = 2; /* 2 avx512, 1 avx2, 0 baseline: the most the user allows */
    if (want != NULL && *want) {
        if (strcmp(want, "avx2") == 0) cap = 1;
        else if (strcmp(want, "baseline") == 0 || strcmp(want, "scalar") == 0) cap = 0;
    }
    lm_simd_current = &lm_table_baseline;
#if LM_X86
    __builtin_cpu_init();
    if (cap >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw")) {
        lm_simd_current = &lm_table_avx512;
    } else if (cap >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        lm_simd_current = &lm_table_avx2;
    }
#else
    (void)cap;
#endif
    return lm_simd_current->name;
}

/* What the capsule lossmle._kernels.simd.TABLE_REF carries: where the current table is. */
static const void *lm_simd_table_ref(void) { return (const void *)&lm_simd_current; }
static const lm_table_t *const *lm_simd_ref = &lm_simd_current;
#else
static const lm_table_t *const *lm_simd_ref = NULL;
#endif /* LM_SIMD_IMPLEMENT */

/* Bind this module to the implementing module's table (the capsule's pointer). */
static inline void lm_simd_bind(const void *ref) { lm_simd_ref = (const lm_table_t *const *)ref; }
/* False until bound: callers then take their scalar paths. */
static inline int lm_simd_ready(void) { return lm_simd_ref != NULL; }
#define lm_simd (*lm_simd_ref)

/* Thin wrappers with one name per (operation, dtype) for Cython. */
#define LM_WRAPPERS(T, S)                                                          \
    LM_INLINE double lm_max_##S(const T *x, ptrdiff_t n) { return lm_simd->max_##S(x, n); } \
    LM_INLINE double lm_sumexp_below_##S(const T *x, ptrdiff_t n, double m, double *c) \
    { return lm_simd->sumexp_below_##S(x, n, m, c); }                               \
    LM_INLINE double lm_sumexp_##S(const T *x, ptrdiff_t n, double m)              \
    { return lm_simd->sumexp_##S(x, n, m); }                                        \
    LM_INLINE double lm_sumexp_below_pf_##S(const T *x, ptrdiff_t n, double m, double *c, \
                                           T *pf)                                  \
    { return lm_simd->sumexp_below_pf_##S(x, n, m, c, pf); }                         \
    LM_INLINE double lm_sumexp_pf_##S(const T *x, ptrdiff_t n, double m, T *pf)     \
    { return lm_simd->sumexp_pf_##S(x, n, m, pf); }                                  \
    LM_INLINE double lm_expwrite_below_##S(const T *x, T *o, ptrdiff_t n, double m,  \
                                           double *c)                              \
    { return lm_simd->expwrite_below_##S(x, o, n, m, c); }                          \
    LM_INLINE void lm_affine_##S(T *g, ptrdiff_t n, double a, double b, const double *w) \
    { lm_simd->affine_##S(g, n, a, b, w); }                                         \
    LM_INLINE double lm_expwrite_##S(const T *x, T *o, ptrdiff_t n, double m)      \
    { return lm_simd->expwrite_##S(x, o, n, m); }                                   \
    LM_INLINE void lm_divide_##S(T *o, ptrdiff_t n, double d) { lm_simd->divide_##S(o, n, d); } \
    LM_INLINE void lm_shift_##S(const T *x, T *o, ptrdiff_t n, double m, double c) \
    { lm_simd->shift_##S(x, o, n, m, c); }                                          \
    LM_INLINE void lm_ce_grad_##S(const T *x, T *g, ptrdiff_t n, double m, double ls, \
                                  double a, double b, const double *w)             \
    { lm_simd->ce_grad_##S(x, g, n, m, ls, a, b, w); }                              \
    LM_INLINE double lm_dot_##S(const T *x, const double *w, ptrdiff_t n, double m, \
                                double *ws)                                        \
    { return lm_simd->dot_##S(x, w, n, m, ws); }                                    \
    LM_INLINE double lm_kl_##S(const T *p, const T *q, ptrdiff_t n, double *bad)   \
    { return lm_simd->kl_##S(p, q, n, bad); }                                       \
    LM_INLINE double lm_kl_rows_##S(const T *p, const T *q, ptrdiff_t r, ptrdiff_t c, \
                                    double *o, double *sp)                         \
    { return lm_simd->kl_rows_##S(p, q, r, c, o, sp); }                             \
    LM_INLINE double lm_wdot_##S(const T *x, const T *t, ptrdiff_t n, double m,     \
                                 double keep, double spread, const double *w,      \
                                 double *ws)                                       \
    { return lm_simd->wdot_##S(x, t, n, m, keep, spread, w, ws); }                  \
    LM_INLINE double lm_entr_rows_##S(const T *p, ptrdiff_t r, ptrdiff_t c, double *o, \
                                      double *sp)                                  \
    { return lm_simd->entr_rows_##S(p, r, c, o, sp); }                              \
    LM_INLINE double lm_entr_##S(const T *p, ptrdiff_t n, double t, double *bad)    \
    { return lm_simd->entr_##S(p, n, t, bad); }                                     \
    LM_INLINE double lm_short_ce_##S(const T *x, ptrdiff_t r, ptrdiff_t c,          \
                                     const int64_t *y, int64_t ig, double *loss,   \
                                     double *sp)                                   \
    { return lm_simd->short_ce_##S(x, r, c, y, ig, loss, sp); }                     \
    LM_INLINE double lm_short_ce_grad_##S(const T *x, ptrdiff_t r, ptrdiff_t c,     \
                                          const int64_t *y, int64_t ig, double sc, \
                                          double *loss, T *g, double *sp)          \
    { return lm_simd->short_ce_grad_##S(x, r, c, y, ig, sc, loss, g, sp); }         \
    LM_INLINE double lm_col_rows_##S(const T *x, ptrdiff_t ld, ptrdiff_t nr, ptrdiff_t n, \
                                     int mode, const int64_t *y, int64_t ig,        \
                                     double *o_row, T *o, ptrdiff_t ld_out,         \
                                     double *sp)                                    \
    { return lm_simd->col_rows_##S(x, ld, nr, n, mode, y, ig, o_row, o, ld_out, sp); } \
    LM_INLINE void lm_transpose_##S(const T *x, ptrdiff_t ld, ptrdiff_t rows,        \
                                    ptrdiff_t cols, T *o, ptrdiff_t ld_out)        \
    { lm_simd->transpose_##S(x, ld, rows, cols, o, ld_out); }                       \
    LM_INLINE double lm_short_rows_##S(const T *x, ptrdiff_t r, ptrdiff_t c, int mode, \
                                       double *o_row, T *o, double *sp)            \
    { return lm_simd->short_rows_##S(x, r, c, mode, o_row, o, sp); }                \
    /* training primitives (issue 6) */                                            \
    LM_INLINE double lm_ent_sums_##S(const T *x, ptrdiff_t n, double it, double m,  \
                                     double *s)                                    \
    { return lm_simd->ent_sums_##S(x, n, it, m, s); }                               \
    LM_INLINE double lm_ent_sums_below_##S(const T *x, ptrdiff_t n, double it,      \
                                           double m, double *s, double *c)         \
    { return lm_simd->ent_sums_below_##S(x, n, it, m, s, c); }                      \
    LM_INLINE double lm_kl_logit_sums_##S(const T *p, const T *q, ptrdiff_t n,      \
                                          double it, double ma, double mb, double *s) \
    { return lm_simd->kl_logit_sums_##S(p, q, n, it, ma, mb, s); }                  \
    LM_INLINE void lm_kl_logit_grad_##S(const T *p, const T *q, ptrdiff_t n, double it, \
                                        double ma, double mb, double lsa, double lsb, \
                                        double c, double sc, T *gq, T *gp)          \
    { lm_simd->kl_logit_grad_##S(p, q, n, it, ma, mb, lsa, lsb, c, sc, gq, gp); }   \
    LM_INLINE double lm_js_logit_sum_##S(const T *p, const T *q, ptrdiff_t n,       \
                                         double it, double la, double lb)          \
    { return lm_simd->js_logit_sum_##S(p, q, n, it, la, lb); }                      \
    LM_INLINE double lm_bce_logits_##S(const T *x, const T *t, const double *w,     \
                                       const double *pw, ptrdiff_t n, double sc,    \
                                       T *l, T *g, int *sp)                         \
    { return lm_simd->bce_logits_##S(x, t, w, pw, n, sc, l, g, sp); }               \
    LM_INLINE double lm_rank_count_##S(const T *x, ptrdiff_t n, double xy, ptrdiff_t y) \
    { return lm_simd->rank_count_##S(x, n, xy, y); }                                \
    LM_INLINE double lm_mul_sum_##S(const T *a, const T *b, ptrdiff_t n)           \
    { return lm_simd->mul_sum_##S(a, b, n); }                                       \
    LM_INLINE double lm_sum_##S(const T *a, ptrdiff_t n) { return lm_simd->sum_##S(a, n); } \
    LM_INLINE void lm_softmax_bwd_##S(const T *g, const T *y, T *o, ptrdiff_t n, double d) \
    { lm_simd->softmax_bwd_##S(g, y, o, n, d); }                                    \
    LM_INLINE void lm_log_softmax_bwd_##S(const T *g, const T *z, T *o, ptrdiff_t n, \
                                          double t)                                \
    { lm_simd->log_softmax_bwd_##S(g, z, o, n, t); }

LM_WRAPPERS(double, d)
LM_WRAPPERS(float, f)
LM_INLINE int lm_col_contig_max(void) { return lm_simd->col_contig_max; }

#define LM_SHORT_MAX 8

#endif /* LOSSMLE_SIMD_H */
