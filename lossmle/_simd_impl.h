/* One instruction-set variant of lossmle's contiguous-row primitives.
 *
 * Included by _simd.h once per (ISA, dtype): LM_ISA names the variant,
 * LM_TARGET is its function attribute, LM_T the element type (float or
 * double) with LM_SFX its suffix (f or d) and LM_EXPNEG the matching exp for
 * arguments <= 0.  Every sum is accumulated in double.  Loops are written
 * for the compiler's vectoriser: `omp simd` reductions (the only way to let
 * GCC reassociate a floating-point sum without -ffast-math) and branch-free
 * bodies.
 *
 * None of these functions handle nan or +inf specially: the callers in
 * _rowops.pxd detect a non-finite result and redo that row with the exact
 * scalar code, so special values follow one definition only.
 */

#define LM_CAT3_(a, b, c) a##_##b##_##c
#define LM_CAT3(a, b, c) LM_CAT3_(a, b, c)
#define LM_FN(name) LM_CAT3(name, LM_SFX, LM_ISA)

/* max of a row (nan entries are skipped: the caller's sum turns nan). */
static LM_TARGET double LM_FN(lm_max)(const LM_T *x, ptrdiff_t n)
{
    LM_T m = x[0];
    ptrdiff_t j;
#pragma omp simd reduction(max : m)
    for (j = 0; j < n; j++) {
        m = x[j] > m ? x[j] : m;
    }
    return (double)m;
}

/* sum of exp(x - m) over x != m, and (OUT) the count of x == m. */
static LM_TARGET double LM_FN(lm_sumexp_below)(const LM_T *x, ptrdiff_t n, double m,
                                               double *n_at_max)
{
    const LM_T mt = (LM_T)m;
    double s = 0.0, c = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : s, c)
    for (j = 0; j < n; j++) {
        LM_T e = LM_EXPNEG_SUM(x[j] - mt);
        int at_max = x[j] == mt;
        s += at_max ? 0.0 : (double)e;
        c += at_max ? 1.0 : 0.0;
    }
    *n_at_max = c;
    return s;
}

/* sum of exp(x - m), m >= every x. */
static LM_TARGET double LM_FN(lm_sumexp)(const LM_T *x, ptrdiff_t n, double m)
{
    const LM_T mt = (LM_T)m;
    double s = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : s)
    for (j = 0; j < n; j++) {
        s += (double)LM_EXPNEG_SUM(x[j] - mt);
    }
    return s;
}

/* out = exp(x - m); returns the sum. */
static LM_TARGET double LM_FN(lm_expwrite)(const LM_T *x, LM_T *out, ptrdiff_t n, double m)
{
    const LM_T mt = (LM_T)m;
    double s = 0.0;
    ptrdiff_t j;
#pragma omp simd reduction(+ : s)
    for (j = 0; j < n; j++) {
        LM_T e = LM_EXPNEG(x[j] - mt);
        out[j] = e;
        s += (double)e;
    }
    return s;
}

/* out = out / d (a division, as scipy, not a multiply by 1/d). */
static LM_TARGET void LM_FN(lm_divide)(LM_T *out, ptrdiff_t n, double d)
{
    ptrdiff_t j;
#pragma omp simd
    for (j = 0; j < n; j++) {
        out[j] = (LM_T)((double)out[j] / d);
    }
}

/* out = (x - m) - c */
static LM_TARGET void LM_FN(lm_shift)(const LM_T *x, LM_T *out, ptrdiff_t n, double m,
                                      double c)
{
    ptrdiff_t j;
#pragma omp simd
    for (j = 0; j < n; j++) {
        out[j] = (LM_T)(((double)x[j] - m) - c);
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
        double pj = (double)p[j], qj = (double)q[j];
        double t = pj / qj;
        int regular = pj > 0.0 && qj > 0.0 && t >= 2.2250738585072014e-308 &&
                      t <= 1.7976931348623157e308;
        int zero = pj == 0.0 && qj >= 0.0;
        double term = pj * lm_log_normal(regular ? t : 1.0);
        s += regular ? term : 0.0;
        bad += (regular || zero) ? 0.0 : 1.0;
    }
    *n_special = bad;
    return s;
}

/* Blocks of many short contiguous rows (2 <= n_cols <= LM_SHORT_MAX),
 * vectorised ACROSS rows: inside a 4-wide row there is nothing to
 * vectorise, so each SIMD lane takes one row.  mode 0: out_row[r] =
 * logsumexp(row); mode 1: out = softmax(row); mode 2: out = log_softmax(row).
 * mode 3: out_row[r] = log(sum(exp(row - max))) (logsumexp less the max).
 * Rows holding nan or +-inf get special[r] = 1 and are left for the caller's
 * exact scalar path; the others get 0. */
#define LM_SHORT_BODY(NC, MODE)                                                  \
    _Pragma("omp simd")                                                          \
    for (r = 0; r < n_rows; r++) {                                               \
        const LM_T *row = x + r * NC;                                            \
        double m = (double)row[0], s = 0.0, c = 0.0, fin = 0.0, e[NC];           \
        int k;                                                                   \
        for (k = 1; k < NC; k++) m = (double)row[k] > m ? (double)row[k] : m;    \
        for (k = 0; k < NC; k++) {                                               \
            double v = (double)row[k];                                           \
            int at_max = v == m;                                                 \
            e[k] = MODE == 1 ? lm_exp_neg(v - m) : lm_exp_neg_sum(v - m);        \
            s += at_max ? 0.0 : e[k];                                            \
            c += at_max ? 1.0 : 0.0;                                             \
            fin += v - v;                                                        \
        }                                                                        \
        special[r] = (fin == 0.0) ? 0 : 1;                                       \
        if (MODE == 0) {                                                         \
            /* log(c + s) = log1p((c - 1) + s): precise when one term dominates */ \
            out_row[r] = m + lm_log1p_pos((c - 1.0) + s);                        \
        } else if (MODE == 3) {                                                  \
            out_row[r] = lm_log1p_pos((c - 1.0) + s);                            \
        } else if (MODE == 1) {                                                  \
            double total = c + s;                                                \
            for (k = 0; k < NC; k++) out[r * NC + k] = (LM_T)(e[k] / total);     \
        } else {                                                                 \
            double lse = lm_log1p_pos((c - 1.0) + s);                            \
            for (k = 0; k < NC; k++) out[r * NC + k] = (LM_T)(((double)row[k] - m) - lse); \
        }                                                                        \
    }

#define LM_SHORT_CASES(MODE)                                                     \
    switch (n_cols) {                                                            \
    case 2: LM_SHORT_BODY(2, MODE) break;                                        \
    case 3: LM_SHORT_BODY(3, MODE) break;                                        \
    case 4: LM_SHORT_BODY(4, MODE) break;                                        \
    case 5: LM_SHORT_BODY(5, MODE) break;                                        \
    case 6: LM_SHORT_BODY(6, MODE) break;                                        \
    case 7: LM_SHORT_BODY(7, MODE) break;                                        \
    case 8: LM_SHORT_BODY(8, MODE) break;                                        \
    default: for (r = 0; r < n_rows; r++) special[r] = 1;                        \
    }

static LM_TARGET void LM_FN(lm_short_rows)(const LM_T *x, ptrdiff_t n_rows, ptrdiff_t n_cols,
                                           int mode, double *out_row, LM_T *out,
                                           unsigned char *special)
{
    ptrdiff_t r;
    if (mode == 0) {
        LM_SHORT_CASES(0)
    } else if (mode == 1) {
        LM_SHORT_CASES(1)
    } else if (mode == 2) {
        LM_SHORT_CASES(2)
    } else {
        LM_SHORT_CASES(3)
    }
}
#undef LM_SHORT_CASES
#undef LM_SHORT_BODY

#undef LM_FN
#undef LM_CAT3
#undef LM_CAT3_
