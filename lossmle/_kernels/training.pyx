"""Kernels for training and evaluation: logits-space divergences, fused
value-and-gradient losses, masks, sample weights and one-pass metrics.

Design
------
Three layers, as in ``special.pyx`` and ``losses.pyx``:

1. per-element and per-row helpers below (``cdef inline ... noexcept nogil``,
   every sum and intermediate in double): the logit transform
   ``logit_softcap`` then ``temperature`` (``xf``/``dxf``), the stable
   softplus and sigmoid of BCE, and the one-read online accumulators;
2. the loops (``def *_rows``), one row per iteration over a
   ``(n_outer, n, n_inner)`` view whose middle axis is the class axis, under
   ``prange(schedule='static')`` so a result never depends on the thread count;
3. the Python layer (``lossmle/_training.py``) that validates once, allocates
   the outputs and calls each loop once.

Kernels trust their input (n >= 1, shapes match, class indices checked).
Inputs are ``const``; every output is an explicit OUT argument.  Where a
gradient may be written over an input (``grad_out`` aliasing the logits), a
loop reads element k of every input before it writes element k of the
gradient, and reads nothing of the row after that, so an exact alias is safe.

One read per row.  ``row_entropy_stats`` keeps a running maximum ``m``, the
rescaled sum ``s = sum exp(x - m)`` and ``u = sum exp(x - m) (x - m)``; when
the maximum moves from ``m`` to ``m'`` both are rescaled by ``exp(m - m')``
and ``u`` gains ``(m - m') s``.  Then ``lse = m + log s`` and the entropy is
``H = log s - u / s``: a sum of two non-negative terms, so no cancellation.
The KL kernel runs the same recurrence on both rows and adds
``v = sum exp(a - m_a) (b - m_b)``, so ``KL = (u - v) / s_a + log s_b - log s_a``.
Every exp is taken against the running max (no overflow, no term above 1);
where a result needs ``log s`` with ``s`` close to 1, the values at the max
are counted apart and the rest enters through ``log1p`` (as ``row_logsumexp``,
Blanchard, Higham & Higham 2021).  Contiguous rows take the vectorised sums
of ``lm_simd.h``; a row they cannot define (nan, +inf) is redone by the scalar
recurrence, so special values have one definition.
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.stdint cimport int64_t
from libc.math cimport exp, log, log1p, expm1, tanh, fabs, fma, sinh, cosh, NAN, INFINITY, isfinite

from lossmle._kernels.loss_rows cimport RowStats, row_stats_fast, target_log_s, target_grad
from lossmle._kernels.rowops cimport (
    simd_init, lm_simd_ready, fast_max, fast_sumexp, fast_dot, lm_ce_grad_d, lm_ce_grad_f,
    lm_ent_sums_d, lm_ent_sums_f, lm_ent_sums_below_d, lm_ent_sums_below_f, lm_kl_logit_sums_d, lm_kl_logit_sums_f,
    lm_kl_logit_grad_d, lm_kl_logit_grad_f, lm_js_logit_sum_d, lm_js_logit_sum_f,
    lm_bce_logits_d, lm_bce_logits_f, lm_rank_count_d, lm_rank_count_f,
    lm_mul_sum_d, lm_mul_sum_f, lm_sum_d, lm_sum_f, lm_softmax_bwd_d, lm_softmax_bwd_f,
    lm_log_softmax_bwd_d, lm_log_softmax_bwd_f,
)


def _simd_init():
    """(Re)select this module's SIMD variant (reads LOSSMLE_SIMD); returns its name."""
    return simd_init()


_simd_init()

cdef double LOG_HALF = -0.6931471805599453

# Contiguous rows (stride 1, no soft cap) take vectorised paths (lm_simd.h):
# blocks of BLOCK values, the block's max first, then its exps against the
# running max while the block sits in L1, so a row still comes from memory
# once.  A row whose fast result is not finite (nan, inf, only -inf...) is
# redone by the scalar code below, which alone defines the special values;
# the fast paths decide that before they write any output, so a gradient
# written over an input (grad_out aliasing the logits) stays safe.
cdef enum:
    BLOCK = 2048
    BCE_BLOCK = 1024


# ---------------------------------------------------------------------------
# Element helpers
# ---------------------------------------------------------------------------
cdef inline double xf(double v, double inv_t, double cap) noexcept nogil:
    """The logit actually used: cap * tanh(v / cap) (if cap > 0), then / T."""
    if cap > 0:
        v = cap * tanh(v / cap)
    return v * inv_t


cdef inline double dxf(double v, double inv_t, double cap) noexcept nogil:
    """d xf(v) / d v = (1 - tanh(v / cap)^2) / T (1 / T without a cap)."""
    cdef double th
    if cap > 0:
        th = tanh(v / cap)
        return (1.0 - th * th) * inv_t
    return inv_t


cdef inline double log1p_exp_neg_abs(double x) noexcept nogil:
    """log1p(exp(-|x|)): the shared tail of softplus(x) and softplus(-x).

    softplus(x) = max(x, 0) + log1p(exp(-|x|)) never overflows and keeps full
    relative precision on both tails (torch's binary_cross_entropy_with_logits
    form; Maechler 2012, "Accurately computing log(1 - exp(-|a|))").
    """
    return log1p(exp(-fabs(x)))


cdef inline double sigmoid(double x) noexcept nogil:
    """1 / (1 + exp(-x)) evaluated on the side where exp cannot overflow."""
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


# ---------------------------------------------------------------------------
# Online (one-read) accumulators
# ---------------------------------------------------------------------------
cdef struct Online:
    double m     # running maximum (-inf before the first finite value)
    double c     # how many values are at m: their terms exp(0) = 1 are kept
                 # apart, so that log(c + s) can be log1p(s) when c = 1
    double s     # sum exp(x - m) over the values below m
    double u     # sum exp(x - m) * (x - m)


cdef inline void online_init(Online* st) noexcept nogil:
    st.m = -INFINITY
    st.c = 0.0
    st.s = 0.0
    st.u = 0.0


cdef inline double online_total(Online* st) noexcept nogil:
    """sum exp(x - m) over every value."""
    return st.c + st.s


cdef inline double online_log_total(Online* st) noexcept nogil:
    """log(sum exp(x - m)): log1p of the rest when one value is at the max, so
    a near one-hot row's entropy, or its top class's -log p, keeps its
    relative precision (log(1 + 4e-18) is 0)."""
    return log1p(st.s) if st.c == 1.0 else log(st.c + st.s)


cdef inline double online_rescale(Online* st, double v) noexcept nogil:
    """Move the maximum up to v (> st.m); return the factor old sums were scaled by."""
    cdef double sc
    if st.m == -INFINITY:
        st.s = 0.0
        st.u = 0.0
        sc = 0.0
    else:
        sc = exp(st.m - v)
        if sc == 0.0:
            # the old terms vanish; m - v may have overflowed to -inf
            # ([1e308, -1e308]), and 0 * -inf would make u nan
            st.u = 0.0
            st.s = 0.0
        else:
            st.u = sc * (st.u + (st.m - v) * online_total(st))
            st.s = sc * online_total(st)
    st.c = 0.0
    st.m = v
    return sc


cdef inline double online_push(Online* st, double v) noexcept nogil:
    """Add one value v (not nan, not +inf).  Returns exp(v - m) after the push."""
    cdef double e
    if v > st.m:
        online_rescale(st, v)
    if v == -INFINITY:
        return 0.0  # exp(-inf) == 0 takes no part (and keeps 0 * -inf out of u)
    if v == st.m:
        st.c += 1.0
        return 1.0
    e = exp(v - st.m)
    if e == 0.0:
        return 0.0  # likewise: v - m may be -inf for a finite v far below m
    st.s += e
    st.u += e * (v - st.m)
    return e


cdef inline double online_lse(Online* st) noexcept nogil:
    return st.m + online_log_total(st)


cdef inline double online_lse_rounded(Online* st) noexcept nogil:
    """m + log(total), the total rounded first: exactly m when the rest is
    below an ulp of the count.  js_row wants that: its mixture terms at the
    max, lp = lq = 0, then cancel to exactly 0 (with log1p's m + 4e-18 they
    left ulp(log 2) errors that swamped a JS of 1e-17, and made it < 0)."""
    return st.m + log(online_total(st))


cdef inline double online_nll(Online* st, double v) noexcept nogil:
    """-log softmax at a value v of the row (finite m): (m - v) + log total,
    not lse - v, whose log(1 + tiny) loses a top class's small loss."""
    return (st.m - v) + online_log_total(st)


cdef inline double online_entropy(Online* st) noexcept nogil:
    """-sum p log p = log s - u / s; both terms >= 0, so no cancellation."""
    return online_log_total(st) - st.u / online_total(st)


# ---------------------------------------------------------------------------
# Vectorised row statistics (contiguous rows)
# ---------------------------------------------------------------------------
cdef inline double ent_sums(const floating* x, Py_ssize_t n, double inv_t, double x_max,
                            double* s) noexcept nogil:
    if floating is double:
        return lm_ent_sums_d(x, n, inv_t, x_max, s)
    else:
        return lm_ent_sums_f(x, n, inv_t, x_max, s)


cdef inline double ent_sums_below(const floating* x, Py_ssize_t n, double inv_t, double x_max,
                                  double* s, double* n_at_max) noexcept nogil:
    if floating is double:
        return lm_ent_sums_below_d(x, n, inv_t, x_max, s, n_at_max)
    else:
        return lm_ent_sums_below_f(x, n, inv_t, x_max, s, n_at_max)


cdef inline double rank_count(const floating* x, Py_ssize_t n, double xy,
                              Py_ssize_t y) noexcept nogil:
    if floating is double:
        return lm_rank_count_d(x, n, xy, y)
    else:
        return lm_rank_count_f(x, n, xy, y)


cdef inline bint online_fast(const floating* x, Py_ssize_t n, double inv_t, Online* st,
                             bint count_top, bint want_rank, double xy, Py_ssize_t y,
                             double* above) noexcept nogil:
    """Online m, c, s, u of a = inv_t * x over a contiguous row, vectorised, one read.

    With want_rank also (OUT) above = #{j: x_j > xy} + #{j < y: x_j == xy}.
    Returns False (st undefined) when the row holds nan or +inf or starts
    with a block of only -inf: the caller's scalar code defines those rows.
    With count_top, a block that holds the running max counts its values at
    it (c) apart from the sum of the rest (s), as online_push does (for a
    result that needs log1p of the rest, which keeps full precision when the
    max dominates; only the block holding the max pays for the count, so
    long rows cost little more than the plain sums); the other blocks, and
    every block without count_top, take the plain sums (c = 0, s the whole
    sum).
    """
    cdef Py_ssize_t b0 = 0, nb
    cdef double m = -INFINITY, x_max = -INFINITY, c = 0.0, s = 0.0, u = 0.0
    cdef double n_above = 0.0, b_max, bm, sc, bs, bc
    while b0 < n:
        nb = min(<Py_ssize_t>BLOCK, n - b0)
        # the max is tracked in x's units: the kernels form a - m as
        # (x - x_max) inv_t, exactly 0 at the max (inv_t > 0 keeps the order)
        b_max = fast_max(x + b0, nb)
        if b_max > x_max:
            bm = b_max * inv_t
            if m != -INFINITY:
                sc = exp(m - bm)
                u = sc * (u + (m - bm) * (c + s))
                s = sc * (c + s)
                c = 0.0
            m = bm
            x_max = b_max
        if not isfinite(m):
            return False
        if count_top and b_max == x_max:
            u += ent_sums_below(x + b0, nb, inv_t, x_max, &bs, &bc)
            c += bc
        else:
            u += ent_sums(x + b0, nb, inv_t, x_max, &bs)
        s += bs
        if want_rank:
            n_above += rank_count(x + b0, nb, xy, y - b0)
        b0 += nb
    if not (isfinite(s) and isfinite(u)):
        return False
    st.m = m
    st.c = c
    st.s = s
    st.u = u
    above[0] = n_above
    return True


cdef struct KLStats:
    double ma    # max of a = inv_t * p
    double mb    # max of b = inv_t * q
    double sa    # sum exp(a - ma)
    double sb    # sum exp(b - mb)
    double w     # sum exp(a - ma) ((a - ma) - (b - mb)), a > -inf


cdef inline bint kl_stats_fast(const floating* p, const floating* q, Py_ssize_t n,
                               double inv_t, KLStats* st) noexcept nogil:
    """KLStats of two contiguous logit rows, vectorised, one read of each.

    When a's maximum moves from ma to ma' the sums scale by exp(ma - ma') and
    w gains (ma - ma') sa; when b's moves from mb to mb', w gains (mb' - mb) sa.
    Returns False for rows the scalar kl_row must define (nan, +inf, only
    -inf in a block-leading p or q, b = -inf where a is finite).
    """
    cdef Py_ssize_t b0 = 0, nb
    cdef double ma = -INFINITY, mb = -INFINITY, sa = 0.0, sb = 0.0, w = 0.0
    cdef double bma, bmb, sc
    cdef double sums[2]
    while b0 < n:
        nb = min(<Py_ssize_t>BLOCK, n - b0)
        bma = fast_max(p + b0, nb) * inv_t
        bmb = fast_max(q + b0, nb) * inv_t
        if bma > ma:
            if ma != -INFINITY:
                sc = exp(ma - bma)
                w = sc * (w + (ma - bma) * sa)
                sa = sc * sa
            ma = bma
        if bmb > mb:
            if mb != -INFINITY:
                w = w + (bmb - mb) * sa
                sb = sb * exp(mb - bmb)
            mb = bmb
        if not (isfinite(ma) and isfinite(mb)):
            return False
        if floating is double:
            w += lm_kl_logit_sums_d(p + b0, q + b0, nb, inv_t, ma, mb, sums)
        else:
            w += lm_kl_logit_sums_f(p + b0, q + b0, nb, inv_t, ma, mb, sums)
        sa += sums[0]
        sb += sums[1]
        b0 += nb
    if not (isfinite(sa) and isfinite(sb) and isfinite(w)):
        return False
    st.ma = ma
    st.mb = mb
    st.sa = sa
    st.sb = sb
    st.w = w
    return True


# ---------------------------------------------------------------------------
# Divergences from logits
#
# Every row body lives in a cdef function: its locals (the Online structs
# above all, which the loops only touch through pointers) are then private to
# the calling thread.  Cython's prange privatises only variables assigned by
# name in the loop body, so a struct declared in the def and filled through
# &st would be shared by all threads.
# ---------------------------------------------------------------------------
cdef inline double entropy_row(const floating* xr, Py_ssize_t n, Py_ssize_t xs,
                               double inv_t, double cap) noexcept nogil:
    cdef Py_ssize_t j
    cdef double v, unused
    cdef Online st
    if (xs == 1 and cap <= 0 and lm_simd_ready()
            and online_fast(xr, n, inv_t, &st, True, False, 0.0, 0, &unused)):
        return online_entropy(&st)
    online_init(&st)
    for j in range(n):
        v = xf(xr[j * xs], inv_t, cap)
        if not (v < INFINITY):
            return NAN
        online_push(&st, v)
    if st.m == -INFINITY:
        return NAN
    return online_entropy(&st)


def entropy_logits_rows(const floating[:, :, :] x, double inv_t, double cap,
                        double[:, :] out, int n_threads):
    """out = H(softmax(xf(x))) per row (nats).  x: IN; out: OUT.

    A row with nan or +inf, or only -inf, gives nan.
    """
    cdef Py_ssize_t n = x.shape[1], n_inner = x.shape[2]
    cdef Py_ssize_t n_rows = x.shape[0] * n_inner
    cdef Py_ssize_t xs = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        out[o, i] = entropy_row(&x[o, 0, i], n, xs, inv_t, cap)


# ---------------------------------------------------------------------------
# Near p = q: KL and JS without the O(1) terms that cancel
#
# With d = a - b, P = softmax(a), any constant c and d'' = d - c:
#   KL(P || Q) = E_P[d] - lse(a) + lse(b) = S1 + log1p(SG - S1),
#   S1 = E_P[d''], SG = E_P[g(d'')], g(x) = expm1(-x) + x >= 0,
# exactly, whatever c is; with c close to E_P[d], S1 is tiny and nothing
# cancels.  log Q_j - log P_j = -(d''_j + L), L = log1p(SG - S1), and
#   JS = 1/2 E_P[phi(log Q / P)], phi(t) = t e^t - (1 + e^t) log((1 + e^t) / 2) >= 0.
# d''_j = (p_j - q_j) inv_t - c takes the exact difference of the inputs
# (TwoSum) and one rounding (fma), so it is good to an ulp of itself.  Rows
# whose one-read value is small against its terms take these extra passes.
# ---------------------------------------------------------------------------
# refine a KL row when KL < tol * (|ma| + |mb| + |log sa| + |log sb| + |c|),
# a JS row when JS < tol / 4 * (|ma| + |mb| + |lse_a| + |lse_b|) (JS ~ KL / 4
# near p = q); float32 results have 29 bits more room (2^-20: an unrefined
# row is then still good to ~1/16 of a float32 ulp)
cdef double NEAR_TOL_D = 0.001953125        # 2^-9
cdef double NEAR_TOL_F = 9.5367431640625e-07  # 2^-20


cdef inline double near_g(double x) noexcept nogil:
    """expm1(-x) + x >= 0; its series below |x| = 1/2 (no cancellation), short
    below 1e-3."""
    cdef double y = -x
    if fabs(x) < 1e-3:
        # the x^8 term is below 2^-60 of x^2 / 2
        return x * x * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (
            1.0 / 720.0 + y * (1.0 / 5040.0))))))
    if fabs(x) < 0.5:
        return x * x * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (
            1.0 / 720.0 + y * (1.0 / 5040.0 + y * (1.0 / 40320.0 + y * (1.0 / 362880.0 + y * (
                1.0 / 3628800.0 + y * (1.0 / 39916800.0 + y * (1.0 / 479001600.0 + y * (
                    1.0 / 6227020800.0 + y * (1.0 / 87178291200.0 + y * (
                        1.0 / 1307674368000.0 + y * (1.0 / 20922789888000.0 + y * (
                            1.0 / 355687428096000.0))))))))))))))))
    return expm1(y) + x


cdef inline double near_phi(double t) noexcept nogil:
    """t e^t - (1 + e^t) log((1 + e^t) / 2) >= 0: its series below |t| = 1/4,
    else 2 e^s (s sinh s - cosh s log cosh s), s = t / 2, log cosh s as
    log1p(2 sinh(s/2)^2) (one bit lost at most)."""
    cdef double s, h
    if fabs(t) < 1e-3:
        # the t^8 term is below 2^-60 of t^2 / 4
        return t * t * (1.0 / 4.0 + t * (1.0 / 8.0 + t * (1.0 / 32.0 + t * (1.0 / 192.0 + t * (
            1.0 / 1152.0 + t * (1.0 / 5760.0))))))
    if fabs(t) < 0.25:
        return t * t * (1.0 / 4.0 + t * (1.0 / 8.0 + t * (1.0 / 32.0 + t * (1.0 / 192.0 + t * (
            1.0 / 1152.0 + t * (1.0 / 5760.0 + t * (1.0 / 46080.0 + t * (-1.0 / 1935360.0 + t * (
                -1.0 / 19353600.0 + t * (11.0 / 58060800.0 + t * (11.0 / 696729600.0 + t * (
                    -97.0 / 7664025600.0 + t * (-97.0 / 107296358400.0 + t * (
                        2287.0 / 2324754432000.0 + t * (2287.0 / 37196070912000.0 + t * (
                            -52259.0 / 669529276416000.0 + t * (
                                -52259.0 / 12051526975488000.0)))))))))))))))))
    s = 0.5 * t
    h = sinh(0.5 * s)
    return 2.0 * exp(s) * (s * sinh(s) - cosh(s) * log1p(2.0 * h * h))


cdef inline double near_d(const floating* pr, const floating* qr, Py_ssize_t j,
                          Py_ssize_t ps, Py_ssize_t qs, double inv_t, double cap,
                          double c) noexcept nogil:
    """d_j - c = xf(p_j) - xf(q_j) - c; without a cap from the exact p_j - q_j."""
    cdef double x, y, h, z, lo
    x = pr[j * ps]
    y = qr[j * qs]
    if cap > 0:
        return (xf(x, inv_t, cap) - xf(y, inv_t, cap)) - c
    h = x - y
    z = h - x
    lo = (x - (h - z)) - (y + z)    # TwoSum: x - y = h + lo exactly
    return fma(h, inv_t, -c) + lo * inv_t


cdef inline double near_h(double x) noexcept nogil:
    """x - log1p(x) >= 0: its series below |x| = 1e-3."""
    if fabs(x) < 1e-3:
        return x * x * (0.5 - x * (1.0 / 3.0 - x * (0.25 - x * (0.2 - x * (
            1.0 / 6.0 - x * (1.0 / 7.0 - x * 0.125))))))
    return x - log1p(x)


cdef inline void near_sums(const floating* pr, Py_ssize_t ps, const floating* qr,
                           Py_ssize_t qs, Py_ssize_t n, double inv_t, double cap,
                           double ma, double mb, double log_sb, double c,
                           double* s_out) noexcept nogil:
    """One pass over the row: with e = exp(a - ma) over the a whose e > 0,
    s_out = [S = sum e, S1 = sum e d'' / S, SG = sum e g(d'') / S, Q0 = the
    mass of Q where e = 0].  Then KL = S1 + L with
    L = log1p(SG - S1) - log1p(-Q0), and log Q_k - log P_k = -(d''_k + L)."""
    cdef Py_ssize_t j
    cdef double e, dd, s = 0.0, s1 = 0.0, sg = 0.0, q0 = 0.0
    for j in range(n):
        e = exp(xf(pr[j * ps], inv_t, cap) - ma)
        if e > 0:
            dd = near_d(pr, qr, j, ps, qs, inv_t, cap, c)
            s += e
            s1 += e * dd
            sg += e * near_g(dd)
        else:
            q0 += exp(xf(qr[j * qs], inv_t, cap) - mb - log_sb)
    s_out[0] = s
    s_out[1] = s1 / s
    s_out[2] = sg / s
    s_out[3] = q0


cdef inline double near_kl(const floating* pr, Py_ssize_t ps, const floating* qr,
                           Py_ssize_t qs, Py_ssize_t n, double inv_t, double cap,
                           double ma, double mb, double log_sb, double* c,
                           double* s_out) noexcept nogil:
    """KL = SG - h(SG - S1) - log1p(-Q0) (= S1 + L) from near_sums about c,
    where SG ~ KL + S1^2 / 2: when S1^2 is not small against that, c moves
    to c + S1 for a second pass (c and s_out are updated)."""
    cdef double kl
    near_sums(pr, ps, qr, qs, n, inv_t, cap, ma, mb, log_sb, c[0], s_out)
    kl = s_out[2] - near_h(s_out[2] - s_out[1])
    if s_out[1] * s_out[1] > 0.25 * kl:
        c[0] = c[0] + s_out[1]
        near_sums(pr, ps, qr, qs, n, inv_t, cap, ma, mb, log_sb, c[0], s_out)
        kl = s_out[2] - near_h(s_out[2] - s_out[1])
    return kl - log1p(-s_out[3])


cdef inline double kl_near(const floating* pr, Py_ssize_t ps, const floating* qr,
                           Py_ssize_t qs, Py_ssize_t n, double inv_t, double cap,
                           double ma, double mb, double log_sb, double c,
                           floating* gq, Py_ssize_t gqs, floating* gp, Py_ssize_t gps,
                           double grad_scale) noexcept nogil:
    """KL of a near-equal row pair (c: about E_P[d]; ma: max of a; mb, log_sb:
    b's max and log sum exp(b - mb)); the gradients too when gq / gp are not
    NULL:  Q_k - P_k = P_k expm1(-(d''_k + L)) (Q_k itself where P_k = 0),
    P_k (log P_k - log Q_k - KL) = P_k (d''_k - S1).  NaN if not finite
    (nothing written then)."""
    cdef Py_ssize_t j
    cdef double sums[4]
    cdef double L, kl, e, pk, dd, dq, dp
    kl = near_kl(pr, ps, qr, qs, n, inv_t, cap, ma, mb, log_sb, &c, sums)
    if not isfinite(kl):
        return NAN
    if gq == NULL and gp == NULL:
        return kl
    L = kl - sums[1]
    for j in range(n):
        e = exp(xf(pr[j * ps], inv_t, cap) - ma)
        pk = e / sums[0]
        dp = 0.0
        if e > 0:
            dd = near_d(pr, qr, j, ps, qs, inv_t, cap, c)
            dq = -(dd + L)
            dq = pk * expm1(dq) if dq != 0 else 0.0    # +0 where Q = P
            dp = pk * (dd - sums[1])
        else:
            dq = exp(xf(qr[j * qs], inv_t, cap) - mb - log_sb)
        dq = grad_scale * dq * dxf(qr[j * qs], inv_t, cap)
        dp = grad_scale * dp * dxf(pr[j * ps], inv_t, cap)
        # every read of element j is done: safe over an aliased input
        if gq != NULL:
            gq[j * gqs] = <floating>dq
        if gp != NULL:
            gp[j * gps] = <floating>dp
    return kl


cdef inline double js_near(const floating* pr, Py_ssize_t ps, const floating* qr,
                           Py_ssize_t qs, Py_ssize_t n, double inv_t, double cap,
                           double ma, double mb, double log_sb, double c) noexcept nogil:
    """JS of a near-equal row pair (arguments as kl_near): 1/2 E_P[phi(log Q/P)]
    plus Q0 log(2) / 2 for the classes where P = 0.  NaN if not finite."""
    cdef Py_ssize_t j
    cdef double sums[4]
    cdef double L, e, s = 0.0
    L = near_kl(pr, ps, qr, qs, n, inv_t, cap, ma, mb, log_sb, &c, sums) - sums[1]
    for j in range(n):
        e = exp(xf(pr[j * ps], inv_t, cap) - ma)
        if e > 0:
            s += e * near_phi(-(near_d(pr, qr, j, ps, qs, inv_t, cap, c) + L))
    s = 0.5 * (s / sums[0] + sums[3] * -LOG_HALF)
    return s if isfinite(s) else NAN


cdef inline double near_tol(floating dummy) noexcept nogil:
    if floating is double:
        return NEAR_TOL_D
    else:
        return NEAR_TOL_F


cdef inline double kl_row(const floating* pr, Py_ssize_t ps,
                          const floating* qr, Py_ssize_t qs, Py_ssize_t n,
                          double inv_t, double cap,
                          floating* gq, Py_ssize_t gqs, floating* gp, Py_ssize_t gps,
                          double grad_scale) noexcept nogil:
    """KL of one row pair; gradients written when gq / gp are not NULL."""
    cdef Py_ssize_t j
    cdef double va, vb, e, v = 0.0, pk, qk, kl, dq, dp, log_sa, log_sb, c, sa_t, sb_t
    cdef bint bad = False, inf_kl = False
    cdef Online sa, sb
    cdef KLStats ks
    if (ps == 1 and qs == 1 and cap <= 0 and (gq == NULL or gqs == 1)
            and (gp == NULL or gps == 1) and lm_simd_ready() and kl_stats_fast(pr, qr, n, inv_t, &ks)):
        log_sa = log(ks.sa)
        log_sb = log(ks.sb)
        c = ks.w / ks.sa
        kl = c + (log_sb - log_sa)
        if kl < near_tol(pr[0]) * (fabs(ks.ma) + fabs(ks.mb) + fabs(log_sa) + fabs(log_sb)
                                   + fabs(c)):
            dq = kl_near(pr, 1, qr, 1, n, inv_t, cap, ks.ma, ks.mb, log_sb,
                         c + (ks.ma - ks.mb), gq, 1, gp, 1, grad_scale)
            if dq == dq:
                return dq
        if gq != NULL or gp != NULL:
            if floating is double:
                lm_kl_logit_grad_d(pr, qr, n, inv_t, ks.ma, ks.mb, log_sa, log_sb, c,
                                   grad_scale, gq, gp)
            else:
                lm_kl_logit_grad_f(pr, qr, n, inv_t, ks.ma, ks.mb, log_sa, log_sb, c,
                                   grad_scale, gq, gp)
        return kl
    online_init(&sa)
    online_init(&sb)
    for j in range(n):
        va = xf(pr[j * ps], inv_t, cap)
        vb = xf(qr[j * qs], inv_t, cap)
        if not (va < INFINITY and vb < INFINITY):
            bad = True
            break
        # v holds terms exp(a - m_a) (b - m_b): rescale with a's maximum...
        if va > sa.m:
            v = v * online_rescale(&sa, va)
        # ...and shift with b's (terms with b = -inf are skipped: they set
        # inf_kl, which decides the row whatever v holds).
        if vb > sb.m:
            if sb.m != -INFINITY:
                v = v + (sb.m - vb) * online_total(&sa)
            online_rescale(&sb, vb)
        e = online_push(&sa, va)
        if e > 0:
            if vb == -INFINITY:
                inf_kl = True
            else:
                v = v + e * (vb - sb.m)
        elif va != -INFINITY and vb == -INFINITY:
            inf_kl = True  # exp underflowed but P > 0 exactly
        online_push(&sb, vb)
    sa_t = online_total(&sa)
    sb_t = online_total(&sb)
    if bad or sa.m == -INFINITY or sb.m == -INFINITY:
        kl = NAN
    elif inf_kl:
        kl = INFINITY
    else:
        c = (sa.u - v) / sa_t
        log_sa = online_log_total(&sa)
        log_sb = online_log_total(&sb)
        kl = c + (log_sb - log_sa)
        if kl < near_tol(pr[0]) * (fabs(sa.m) + fabs(sb.m) + fabs(log_sa) + fabs(log_sb)
                                   + fabs(c)):
            dq = kl_near(pr, ps, qr, qs, n, inv_t, cap, sa.m, sb.m, log_sb,
                         c + (sa.m - sb.m), gq, gqs, gp, gps, grad_scale)
            if dq == dq:
                return dq
    if gq == NULL and gp == NULL:
        return kl
    for j in range(n):
        va = xf(pr[j * ps], inv_t, cap)
        vb = xf(qr[j * qs], inv_t, cap)
        if kl != kl:
            dq = NAN
            dp = NAN
        else:
            pk = exp(va - sa.m) / sa_t
            qk = exp(vb - sb.m) / sb_t
            dq = grad_scale * (qk - pk) * dxf(qr[j * qs], inv_t, cap)
            if kl == INFINITY:
                dp = NAN  # d KL / d p is undefined where Q = 0 < P
            elif pk > 0:
                # P_k (log P_k - log Q_k - KL), in shifted pieces
                dp = grad_scale * pk * (
                    (va - sa.m - sa.u / sa_t) - (vb - sb.m - v / sa_t)
                ) * dxf(pr[j * ps], inv_t, cap)
            else:
                dp = 0.0
        # every read of element j is done: safe over an aliased input
        if gq != NULL:
            gq[j * gqs] = <floating>dq
        if gp != NULL:
            gp[j * gps] = <floating>dp
    return kl


def kl_logits_rows(const floating[:, :, :] p, const floating[:, :, :] q,
                   double inv_t, double cap, double[:, :] out,
                   floating[:, :, :] grad_q, floating[:, :, :] grad_p,
                   double grad_scale, int n_threads):
    """KL(softmax(a) || softmax(b)) per row, a = xf(p), b = xf(q).

    IN: p, q (same shape), inv_t, cap, grad_scale.  OUT: out (row KL), and when
    not None grad_q = grad_scale * d KL / d q, grad_p = grad_scale * d KL / d p.
    One read of both rows for the value; the gradients take a second.

    A row with nan or +inf, or with only -inf in p or in q, gives nan (and nan
    gradients).  b = -inf where a is finite gives +inf (P > 0, Q = 0).
    """
    cdef Py_ssize_t n = p.shape[1], n_inner = p.shape[2]
    cdef Py_ssize_t n_rows = p.shape[0] * n_inner
    cdef Py_ssize_t ps = p.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t qs = q.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t gqs = 0, gps = 0
    cdef bint want_q = grad_q is not None, want_p = grad_p is not None
    cdef Py_ssize_t r, o, i
    cdef floating* gq
    cdef floating* gp
    if want_q:
        gqs = grad_q.strides[1] // <Py_ssize_t>sizeof(floating)
    if want_p:
        gps = grad_p.strides[1] // <Py_ssize_t>sizeof(floating)
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        gq = &grad_q[o, 0, i] if want_q else NULL
        gp = &grad_p[o, 0, i] if want_p else NULL
        out[o, i] = kl_row(&p[o, 0, i], ps, &q[o, 0, i], qs, n, inv_t, cap,
                           gq, gqs, gp, gps, grad_scale)


cdef inline double js_refined(const floating* pr, Py_ssize_t ps,
                              const floating* qr, Py_ssize_t qs, Py_ssize_t n,
                              double inv_t, double cap, Online* sa, Online* sb,
                              double lse_a, double lse_b, double js) noexcept nogil:
    """js, or js_near's value where js is small against its terms."""
    cdef double r
    if js < 0.25 * near_tol(pr[0]) * (fabs(sa.m) + fabs(sb.m) + fabs(lse_a) + fabs(lse_b)):
        r = js_near(pr, ps, qr, qs, n, inv_t, cap, sa.m, sb.m, online_log_total(sb),
                    lse_a - lse_b)
        if r == r:
            return r
    return js


cdef inline double js_row(const floating* pr, Py_ssize_t ps,
                          const floating* qr, Py_ssize_t qs, Py_ssize_t n,
                          double inv_t, double cap) noexcept nogil:
    cdef Py_ssize_t j
    cdef double va, vb, lp, lq, lm, hi, lo, s = 0.0, lse_a, lse_b, unused
    cdef Online sa, sb
    if (ps == 1 and qs == 1 and cap <= 0 and lm_simd_ready()
            and online_fast(pr, n, inv_t, &sa, False, False, 0.0, 0, &unused)
            and online_fast(qr, n, inv_t, &sb, False, False, 0.0, 0, &unused)):
        if floating is double:
            s = lm_js_logit_sum_d(pr, qr, n, inv_t, online_lse_rounded(&sa),
                                  online_lse_rounded(&sb))
        else:
            s = lm_js_logit_sum_f(pr, qr, n, inv_t, online_lse_rounded(&sa),
                                  online_lse_rounded(&sb))
        if isfinite(s):
            return js_refined(pr, ps, qr, qs, n, inv_t, cap, &sa, &sb,
                              online_lse_rounded(&sa), online_lse_rounded(&sb), 0.5 * s)
        s = 0.0
    online_init(&sa)
    online_init(&sb)
    for j in range(n):
        va = xf(pr[j * ps], inv_t, cap)
        vb = xf(qr[j * qs], inv_t, cap)
        if not (va < INFINITY and vb < INFINITY):
            return NAN
        online_push(&sa, va)
        online_push(&sb, vb)
    if sa.m == -INFINITY or sb.m == -INFINITY:
        return NAN
    lse_a = online_lse_rounded(&sa)
    lse_b = online_lse_rounded(&sb)
    for j in range(n):
        lp = xf(pr[j * ps], inv_t, cap) - lse_a
        lq = xf(qr[j * qs], inv_t, cap) - lse_b
        if lp == -INFINITY and lq == -INFINITY:
            continue
        hi = lp if lp > lq else lq
        lo = lq if lp > lq else lp
        lm = LOG_HALF + hi + log1p(exp(lo - hi))   # log((P + Q) / 2)
        if lp != -INFINITY:
            s += exp(lp) * (lp - lm)
        if lq != -INFINITY:
            s += exp(lq) * (lq - lm)
    return js_refined(pr, ps, qr, qs, n, inv_t, cap, &sa, &sb, lse_a, lse_b, 0.5 * s)


def js_logits_rows(const floating[:, :, :] p, const floating[:, :, :] q,
                   double inv_t, double cap, double[:, :] out, int n_threads):
    """Jensen-Shannon divergence of softmax(xf(p)) and softmax(xf(q)) per row.

    IN: p, q.  OUT: out.  Two reads: the log-normalisers (one online pass over
    both rows), then 0.5 * sum [P (log P - log M) + Q (log Q - log M)] with
    log M = log(1/2) + logaddexp(log P, log Q); P = 0 terms are 0.
    """
    cdef Py_ssize_t n = p.shape[1], n_inner = p.shape[2]
    cdef Py_ssize_t n_rows = p.shape[0] * n_inner
    cdef Py_ssize_t ps = p.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t qs = q.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        out[o, i] = js_row(&p[o, 0, i], ps, &q[o, 0, i], qs, n, inv_t, cap)


# ---------------------------------------------------------------------------
# Binary cross-entropy with logits (elementwise, over 2-D (rows, last) views)
# ---------------------------------------------------------------------------
cdef struct BCEArgs:
    # one row of bce_logits_rows: pointers and element strides (NULL: absent)
    const void* w
    Py_ssize_t ws
    const void* pw
    Py_ssize_t pws
    const void* sw
    Py_ssize_t sws
    double grad_scale


cdef inline double bce_scalar(const floating* x, Py_ssize_t xs, const floating* t,
                              Py_ssize_t ts, const BCEArgs* a, Py_ssize_t j0, Py_ssize_t n,
                              floating* loss, Py_ssize_t ls, floating* grad,
                              Py_ssize_t gs) noexcept nogil:
    """Elements j0 .. j0 + n - 1 of one row, exactly (the definition); returns their sum."""
    cdef Py_ssize_t j
    cdef double xv, tv, w, pw, tail, sp_pos, sp_neg, l, acc = 0.0, sig
    cdef const floating* wr = <const floating*>a.w
    cdef const floating* pwr = <const floating*>a.pw
    cdef const floating* swr = <const floating*>a.sw
    for j in range(j0, j0 + n):
        xv = x[j * xs]
        tv = t[j * ts]
        w = wr[j * a.ws] if wr != NULL else 1.0
        if swr != NULL:
            w = w * swr[j * a.sws]
        pw = pwr[j * a.pws] if pwr != NULL else 1.0
        tail = log1p_exp_neg_abs(xv)
        sp_pos = (xv if xv > 0 else 0.0) + tail   # softplus(x)  = -log(1 - sigmoid(x))
        sp_neg = (-xv if xv < 0 else 0.0) + tail  # softplus(-x) = -log(sigmoid(x))
        l = w * (pw * tv * sp_neg + (1.0 - tv) * sp_pos)
        acc = acc + l
        if grad != NULL:
            sig = sigmoid(xv)
            grad[j * gs] = <floating>(a.grad_scale * w * (
                (1.0 - tv) * sig - pw * tv * sigmoid(-xv)))
        if loss != NULL:
            loss[j * ls] = <floating>l
    return acc


cdef double bce_row(const floating* x, Py_ssize_t xs, const floating* t, Py_ssize_t ts,
                    const BCEArgs* a, Py_ssize_t n, floating* loss, Py_ssize_t ls,
                    floating* grad, Py_ssize_t gs) noexcept nogil:
    """One row of bce_logits_rows; returns the sum of its losses.

    Contiguous rows go block by block through the vectorised lm_bce_logits
    (weights gathered into double blocks first); a block whose logits hold
    nan or inf, which that function reports before writing, is done exactly.
    """
    cdef double wb[BCE_BLOCK]
    cdef double pwb[BCE_BLOCK]
    cdef const floating* wr = <const floating*>a.w
    cdef const floating* pwr = <const floating*>a.pw
    cdef const floating* swr = <const floating*>a.sw
    cdef bint weighted = wr != NULL or pwr != NULL or swr != NULL
    cdef bint fast = (xs == 1 and ts == 1 and (loss == NULL or ls == 1)
                      and (grad == NULL or gs == 1) and lm_simd_ready())
    cdef Py_ssize_t b0 = 0, nb, j
    cdef int special
    cdef double acc = 0.0, wv
    while b0 < n:
        nb = min(<Py_ssize_t>BCE_BLOCK, n - b0)
        special = 1
        if fast:
            if weighted:
                for j in range(nb):
                    wv = wr[(b0 + j) * a.ws] if wr != NULL else 1.0
                    if swr != NULL:
                        wv = wv * swr[(b0 + j) * a.sws]
                    wb[j] = wv
                    pwb[j] = pwr[(b0 + j) * a.pws] if pwr != NULL else 1.0
            if floating is double:
                acc += lm_bce_logits_d(x + b0, t + b0, wb if weighted else NULL,
                                       pwb if weighted else NULL, nb, a.grad_scale,
                                       (loss + b0) if loss != NULL else NULL,
                                       (grad + b0) if grad != NULL else NULL, &special)
            else:
                acc += lm_bce_logits_f(x + b0, t + b0, wb if weighted else NULL,
                                       pwb if weighted else NULL, nb, a.grad_scale,
                                       (loss + b0) if loss != NULL else NULL,
                                       (grad + b0) if grad != NULL else NULL, &special)
        if special:
            acc += bce_scalar(x, xs, t, ts, a, b0, nb, loss, ls, grad, gs)
        b0 += nb
    return acc


def bce_logits_rows(const floating[:, :] x, const floating[:, :] t,
                    const floating[:, :] weight, const floating[:, :] pos_weight,
                    const floating[:, :] sample_weight,
                    floating[:, :] loss, double[::1] row_loss,
                    floating[:, :] grad, double grad_scale, int n_threads):
    """w * sw * [pw * t * softplus(-x) + (1 - t) * softplus(x)] per element.

    IN: x, t and the optional (None) weight, pos_weight, sample_weight views,
    all shaped like x (broadcast views with stride 0 are fine).  OUT: loss
    (elementwise, or None), row_loss[r] = sum of row r's losses (double), and
    grad = grad_scale * d loss / d x (or None).
    """
    cdef Py_ssize_t n_rows = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t item = sizeof(floating)
    cdef bint has_w = weight is not None, has_pw = pos_weight is not None
    cdef bint has_sw = sample_weight is not None
    cdef bint want_loss = loss is not None, want_grad = grad is not None
    cdef Py_ssize_t xs = x.strides[1] // item, ts = t.strides[1] // item
    cdef Py_ssize_t ls = 0, gs = 0, ws = 0, pws = 0, sws = 0
    cdef Py_ssize_t r
    if want_loss:
        ls = loss.strides[1] // item
    if want_grad:
        gs = grad.strides[1] // item
    if has_w:
        ws = weight.strides[1] // item
    if has_pw:
        pws = pos_weight.strides[1] // item
    if has_sw:
        sws = sample_weight.strides[1] // item
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        row_loss[r] = bce_rows_one(&x[r, 0], xs, &t[r, 0], ts,
                                   &weight[r, 0] if has_w else NULL, ws,
                                   &pos_weight[r, 0] if has_pw else NULL, pws,
                                   &sample_weight[r, 0] if has_sw else NULL, sws,
                                   grad_scale, n,
                                   &loss[r, 0] if want_loss else NULL, ls,
                                   &grad[r, 0] if want_grad else NULL, gs)


cdef double bce_rows_one(const floating* x, Py_ssize_t xs, const floating* t, Py_ssize_t ts,
                         const floating* w, Py_ssize_t ws, const floating* pw,
                         Py_ssize_t pws, const floating* sw, Py_ssize_t sws,
                         double grad_scale, Py_ssize_t n, floating* loss, Py_ssize_t ls,
                         floating* grad, Py_ssize_t gs) noexcept nogil:
    """bce_row with its arguments in a struct local to this call (thread-private)."""
    cdef BCEArgs a
    a.w = w
    a.ws = ws
    a.pw = pw
    a.pws = pws
    a.sw = sw
    a.sws = sws
    a.grad_scale = grad_scale
    return bce_row(x, xs, t, ts, &a, n, loss, ls, grad, gs)


# ---------------------------------------------------------------------------
# softmax / log_softmax backward
# ---------------------------------------------------------------------------
cdef inline void softmax_backward_row(const floating* gr, Py_ssize_t gs,
                                     const floating* yr, Py_ssize_t ys,
                                     floating* orow, Py_ssize_t os,
                                     Py_ssize_t n) noexcept nogil:
    """out = y * (g - sum(g * y)) of one row (out may alias g or y exactly)."""
    cdef Py_ssize_t j
    cdef double dot = 0.0, yj
    if gs == 1 and ys == 1 and os == 1 and lm_simd_ready():
        if floating is double:
            lm_softmax_bwd_d(gr, yr, orow, n, lm_mul_sum_d(gr, yr, n))
        else:
            lm_softmax_bwd_f(gr, yr, orow, n, lm_mul_sum_f(gr, yr, n))
        return
    for j in range(n):
        dot = dot + <double>gr[j * gs] * yr[j * ys]
    for j in range(n):
        yj = yr[j * ys]
        orow[j * os] = <floating>(yj * (gr[j * gs] - dot))


def softmax_backward_rows(const floating[:, :, :] g, const floating[:, :, :] y,
                          floating[:, :, :] out, int n_threads):
    """out = y * (g - sum(g * y)) per row.  g, y: IN; out: OUT (may alias g or y)."""
    cdef Py_ssize_t n = g.shape[1], n_inner = g.shape[2]
    cdef Py_ssize_t n_rows = g.shape[0] * n_inner
    cdef Py_ssize_t gs = g.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ys = y.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t os = out.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        softmax_backward_row(&g[o, 0, i], gs, &y[o, 0, i], ys, &out[o, 0, i], os, n)


cdef inline void log_softmax_backward_row(const floating* gr, Py_ssize_t gs,
                                         const floating* zr, Py_ssize_t zs,
                                         floating* orow, Py_ssize_t os,
                                         Py_ssize_t n) noexcept nogil:
    """out = g - exp(z) * sum(g) of one row (out may alias g or z exactly).

    The vectorised exp covers z <= 0 (a log-softmax output); any other row,
    or a strided one, takes libm's exp.
    """
    cdef Py_ssize_t j
    cdef double total = 0.0, gj
    if gs == 1 and zs == 1 and os == 1 and lm_simd_ready() and fast_max(zr, n) <= 0:
        if floating is double:
            lm_log_softmax_bwd_d(gr, zr, orow, n, lm_sum_d(gr, n))
        else:
            lm_log_softmax_bwd_f(gr, zr, orow, n, lm_sum_f(gr, n))
        return
    for j in range(n):
        total = total + gr[j * gs]
    for j in range(n):
        gj = gr[j * gs]
        orow[j * os] = <floating>(gj - exp(<double>zr[j * zs]) * total)


def log_softmax_backward_rows(const floating[:, :, :] g, const floating[:, :, :] z,
                              floating[:, :, :] out, int n_threads):
    """out = g - exp(z) * sum(g) per row.  g, z: IN; out: OUT (may alias g or z)."""
    cdef Py_ssize_t n = g.shape[1], n_inner = g.shape[2]
    cdef Py_ssize_t n_rows = g.shape[0] * n_inner
    cdef Py_ssize_t gs = g.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t zs = z.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t os = out.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        log_softmax_backward_row(&g[o, 0, i], gs, &z[o, 0, i], zs, &out[o, 0, i], os, n)


# ---------------------------------------------------------------------------
# Masked logsumexp / softmax / log_softmax
# ---------------------------------------------------------------------------
cdef inline void masked_stats(const floating* xr, Py_ssize_t xs,
                              const unsigned char* mr, Py_ssize_t ms, Py_ssize_t n,
                              Online* st, bint* has_nan, bint* pos_inf) noexcept nogil:
    """Online max / sum over the unmasked entries; flags nan and +inf (OUT)."""
    cdef Py_ssize_t j
    cdef double v
    online_init(st)
    has_nan[0] = False
    pos_inf[0] = False
    for j in range(n):
        if mr[j * ms]:
            v = xr[j * xs]
            if v != v:
                has_nan[0] = True
                return
            if v == INFINITY:
                pos_inf[0] = True
            else:
                online_push(st, v)


cdef inline double masked_lse_row(const floating* xr, Py_ssize_t xs,
                                  const unsigned char* mr, Py_ssize_t ms,
                                  Py_ssize_t n) noexcept nogil:
    cdef Online st
    cdef bint has_nan, pos_inf
    masked_stats(xr, xs, mr, ms, n, &st, &has_nan, &pos_inf)
    if has_nan:
        return NAN
    if pos_inf:
        return INFINITY
    if st.m == -INFINITY:
        return -INFINITY
    return online_lse(&st)


def masked_lse_rows(const floating[:, :, :] x, const unsigned char[:, :, :] mask,
                    floating[:, :] out, int n_threads):
    """out = log(sum over mask of exp(x)) per row; -inf for a fully masked row."""
    cdef Py_ssize_t n = x.shape[1], n_inner = x.shape[2]
    cdef Py_ssize_t n_rows = x.shape[0] * n_inner
    cdef Py_ssize_t xs = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ms = mask.strides[1]
    cdef Py_ssize_t r, o, i
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        out[o, i] = <floating>masked_lse_row(&x[o, 0, i], xs, &mask[o, 0, i], ms, n)


cdef inline void masked_softmax_row(const floating* xr, Py_ssize_t xs,
                                    const unsigned char* mr, Py_ssize_t ms,
                                    floating* orow, Py_ssize_t os, Py_ssize_t n,
                                    bint log_space) noexcept nogil:
    cdef Py_ssize_t j
    cdef double v, s, log_s, fill = -INFINITY if log_space else 0.0
    cdef Online st
    cdef bint has_nan, pos_inf
    masked_stats(xr, xs, mr, ms, n, &st, &has_nan, &pos_inf)
    if has_nan or pos_inf or st.m == -INFINITY:
        # nan, +inf or only -inf among the unmasked entries: nan (scipy); also
        # taken by a fully masked row, which never reads m or s.
        st.m = NAN
        s = NAN
        log_s = NAN
    else:
        s = online_total(&st)
        log_s = online_log_total(&st)
    for j in range(n):
        if mr[j * ms]:
            v = xr[j * xs] - st.m
            # exp(x - m) / s divides exactly; (x - m) - log s is exact at the max
            orow[j * os] = <floating>((v - log_s) if log_space else exp(v) / s)
        else:
            orow[j * os] = <floating>fill


def masked_softmax_rows(const floating[:, :, :] x, const unsigned char[:, :, :] mask,
                        floating[:, :, :] out, bint log_space, int n_threads):
    """Softmax (log_space: log-softmax) over the unmasked entries of each row.

    Masked entries get 0 (log_space: -inf).  A fully masked row is all 0
    (log_space: all -inf).  A row whose unmasked entries hold nan, +inf or
    only -inf is nan on its unmasked entries (as scipy).  IN: x, mask; OUT: out.
    """
    cdef Py_ssize_t n = x.shape[1], n_inner = x.shape[2]
    cdef Py_ssize_t n_rows = x.shape[0] * n_inner
    cdef Py_ssize_t xs = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t os = out.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ms = mask.strides[1]
    cdef Py_ssize_t r, o, i
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        masked_softmax_row(&x[o, 0, i], xs, &mask[o, 0, i], ms, &out[o, 0, i], os, n,
                           log_space)


# ---------------------------------------------------------------------------
# Cross-entropy / NLL with sample weights, masks and soft-capping
# ---------------------------------------------------------------------------
cdef inline void ce_ex_row(const floating* x, Py_ssize_t xs, Py_ssize_t n_classes,
                           int64_t y, const double* w, double w_all, double sw,
                           const unsigned char* mr, Py_ssize_t ms,
                           double eps, double cap,
                           floating* g, Py_ssize_t gs, double grad_scale,
                           double* loss, double* row_weight) noexcept nogil:
    """One row of cross_entropy_ex_rows (mr / g may be NULL); loss, row_weight OUT.

    w_all = sum(w) (n_classes without w).  A contiguous row without mask or
    cap takes the vectorised path (its loss needs x[y], read before the
    gradient is written: g may be x itself).
    """
    cdef Py_ssize_t k, n_on = 0
    cdef double keep = 1.0 - eps, wk, wy, v, w_on = 0.0, swx = 0.0, lse, xy
    cdef double pk, gk, spread, row_loss, alpha, top, s_rest, nll, rest
    cdef bint bad = False
    cdef Online st
    cdef RowStats cs
    if (sw != 0 and mr == NULL and cap <= 0 and xs == 1 and (g == NULL or gs == 1)
            and lm_simd_ready() and row_stats_fast(x, n_classes, w, eps > 0, y, &cs)):
        wy = w[y] if w != NULL else 1.0
        spread = eps / n_classes
        row_loss = keep * wy * ((cs.m - x[y]) + cs.log_s)
        if eps > 0:
            row_loss = row_loss + spread * (w_all * cs.log_s - cs.d_wx)
        loss[0] = sw * row_loss
        row_weight[0] = sw * wy
        if g != NULL:
            xy = x[y]   # before the gradient overwrites it (g may be x)
            alpha = grad_scale * sw * (keep * wy + spread * w_all)
            if floating is double:
                lm_ce_grad_d(x, g, n_classes, cs.m, cs.log_s, alpha, grad_scale * sw * spread, w)
            else:
                lm_ce_grad_f(x, g, n_classes, cs.m, cs.log_s, alpha, grad_scale * sw * spread, w)
            # the target's entry again, with p_y - 1 as -rest (no cancellation)
            g[y] = <floating>(grad_scale * sw * target_grad(&cs, xy, wy, keep, spread, w_all))
        return
    if sw != 0:
        online_init(&st)
        for k in range(n_classes):
            if mr != NULL and not mr[k * ms]:
                continue
            v = xf(x[k * xs], 1.0, cap)
            wk = w[k] if w != NULL else 1.0
            n_on += 1
            w_on += wk
            if eps > 0:
                swx += wk * v   # 0 * -inf = nan, as torch
            if not (v < INFINITY):
                bad = True       # nan or +inf: the row's loss is nan
            elif k != y:         # the target's term is added last, below
                online_push(&st, v)
    if n_on == 0:
        loss[0] = 0.0
        row_weight[0] = 0.0
        if g != NULL:
            for k in range(n_classes):
                g[k * gs] = 0
        return
    xy = xf(x[y * xs], 1.0, cap) if (mr == NULL or mr[y * ms] != 0) else -INFINITY
    top = xy if xy > st.m else st.m
    if bad or top == -INFINITY:
        # +inf (inf - inf) or all -inf (-inf - -inf) makes the row nan (torch)
        lse = NAN
        nll = NAN
        rest = NAN
    else:
        # the target's term out of the others' sum, as row_stats:
        # -log p_y = log1p(s_rest) when the target is the max
        s_rest = online_total(&st) * exp(st.m - top) if st.m != -INFINITY else 0.0
        target_log_s(s_rest, xy, top, &cs)
        rest = cs.rest
        lse = top + cs.log_s
        nll = (top - xy) + cs.log_s
    wy = w[y] if w != NULL else 1.0
    spread = eps / n_on
    row_loss = keep * wy * nll
    if eps > 0:
        row_loss = row_loss + spread * (w_on * lse - swx)
    loss[0] = sw * row_loss
    row_weight[0] = sw * wy
    if g == NULL:
        return
    for k in range(n_classes):
        if mr != NULL and not mr[k * ms]:
            g[k * gs] = 0
            continue
        v = x[k * xs]
        pk = exp(xf(v, 1.0, cap) - lse)
        # p_y - 1 as -rest: no cancellation when p_y is ~1
        gk = keep * wy * (-rest if k == y else pk)
        if eps > 0:
            gk = gk + spread * (w_on * pk - (w[k] if w != NULL else 1.0))
        g[k * gs] = <floating>(grad_scale * sw * gk * dxf(v, 1.0, cap))


def cross_entropy_ex_rows(const floating[:, :, :] logits, const int64_t[:, :] target,
                          const double[::1] weight, const double[:, :] sample_weight,
                          const unsigned char[:, :, :] mask,
                          int64_t ignore_index, double label_smoothing, double cap,
                          double[:, :] loss, double[:, :] row_weight,
                          floating[:, :, :] grad, double grad_scale, int n_threads):
    """Cross-entropy from class indices with sample weights, masks and a soft cap.

    IN: logits, target (validated), weight (None or (C,)), sample_weight (None
    or per row), mask (None or like logits), ignore_index, label_smoothing,
    cap (<= 0: none), grad_scale.  OUT: loss[o, i] = sw * row loss,
    row_weight[o, i] = sw * w[y] (0 where the row takes no part), and grad =
    grad_scale * d loss / d logits when grad is not None.

    Per row, over the K unmasked classes (all C without a mask), W = sum of
    their w, x' = xf(x):  loss = (1 - eps) w[y] (lse - x'[y])
    + eps / K (W lse - sum w x').  A row takes no part (loss, weight and
    gradient 0) when its target is ignore_index, its sample weight is 0, or
    every class is masked.  A masked target class gives loss +inf.
    """
    cdef Py_ssize_t n_classes = logits.shape[1], n_inner = logits.shape[2]
    cdef Py_ssize_t n_rows = logits.shape[0] * n_inner
    cdef Py_ssize_t xs = logits.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ms = 0, gs = 0
    cdef const double* w = NULL
    cdef bint has_sw = sample_weight is not None, has_mask = mask is not None
    cdef bint want_grad = grad is not None
    cdef Py_ssize_t r, o, i, k
    cdef int64_t y
    cdef double sw, w_all = n_classes
    if weight is not None:
        w = &weight[0]
        w_all = 0.0
        for k in range(n_classes):
            w_all += w[k]
    if has_mask:
        ms = mask.strides[1]
    if want_grad:
        gs = grad.strides[1] // <Py_ssize_t>sizeof(floating)
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        y = target[o, i]
        sw = sample_weight[o, i] if has_sw else 1.0
        if y == ignore_index:
            sw = 0.0  # takes no part, exactly like a zero sample weight
        ce_ex_row(&logits[o, 0, i], xs, n_classes, y, w, w_all, sw,
                  &mask[o, 0, i] if has_mask else NULL, ms, label_smoothing, cap,
                  &grad[o, 0, i] if want_grad else NULL, gs, grad_scale,
                  &loss[o, i], &row_weight[o, i])


def nll_ex_rows(const floating[:, :, :] log_probs, const int64_t[:, :] target,
                const double[::1] weight, const double[:, :] sample_weight,
                int64_t ignore_index, double[:, :] loss, double[:, :] row_weight,
                floating[:, :, :] grad, double grad_scale, int n_threads):
    """loss = -sw * w[y] * log_probs[y] per row, and optionally its gradient.

    IN: log_probs, target (validated), weight, sample_weight (None or per row),
    ignore_index, grad_scale.  OUT: loss, row_weight (sw * w[y]; 0 where
    ignored or sw == 0), grad (-grad_scale * sw * w[y] at y, 0 elsewhere).
    """
    cdef Py_ssize_t n_classes = log_probs.shape[1], n_inner = log_probs.shape[2]
    cdef Py_ssize_t n_rows = log_probs.shape[0] * n_inner
    cdef Py_ssize_t gs = 0
    cdef const double* w = NULL
    cdef bint has_sw = sample_weight is not None, want_grad = grad is not None
    cdef Py_ssize_t r, o, i, k
    cdef int64_t y
    cdef double wy, sw
    cdef floating* g
    if weight is not None:
        w = &weight[0]
    if want_grad:
        gs = grad.strides[1] // <Py_ssize_t>sizeof(floating)
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        y = target[o, i]
        sw = sample_weight[o, i] if has_sw else 1.0
        if y == ignore_index or sw == 0:
            loss[o, i] = 0.0
            row_weight[o, i] = 0.0
        else:
            wy = w[y] if w != NULL else 1.0
            loss[o, i] = -sw * wy * log_probs[o, y, i]
            row_weight[o, i] = sw * wy
        if want_grad:
            g = &grad[o, 0, i]
            for k in range(n_classes):
                g[k * gs] = 0
            if y != ignore_index and sw != 0:
                g[y * gs] = <floating>(-grad_scale * row_weight[o, i])


# ---------------------------------------------------------------------------
# One-pass evaluation metrics
# ---------------------------------------------------------------------------
cdef inline void eval_row(const floating* x, Py_ssize_t xs, Py_ssize_t n_classes,
                          int64_t y, bint valid, double cap,
                          double* nll, double* entropy, double* lse_out,
                          int64_t* rank) noexcept nogil:
    """One row of evaluate_rows; every result through an OUT pointer."""
    cdef Py_ssize_t k
    cdef int64_t above = 0
    cdef double v, xy = 0.0, lse, n_above
    cdef bint has_nan = False, pos_inf = False
    cdef Online st
    if valid:
        xy = xf(x[y * xs], 1.0, cap)
    if (xs == 1 and cap <= 0 and lm_simd_ready()
            and online_fast(x, n_classes, 1.0, &st, True, valid, xy, y, &n_above)):
        lse = online_lse(&st)
        entropy[0] = online_entropy(&st)
        lse_out[0] = lse
        if valid:
            nll[0] = online_nll(&st, xy)
            rank[0] = <int64_t>n_above
        else:
            nll[0] = NAN
            rank[0] = -1
        return
    online_init(&st)
    for k in range(n_classes):
        v = xf(x[k * xs], 1.0, cap)
        if v != v:
            has_nan = True
            break
        if valid and (v > xy or (v == xy and k < y)):
            above += 1
        if v == INFINITY:
            pos_inf = True
        else:
            online_push(&st, v)
    if has_nan or pos_inf or st.m == -INFINITY:
        lse = NAN
        entropy[0] = NAN
    else:
        lse = online_lse(&st)
        entropy[0] = online_entropy(&st)
    lse_out[0] = lse
    if valid and not has_nan:
        nll[0] = online_nll(&st, xy) if lse == lse else NAN
        rank[0] = above
    else:
        nll[0] = NAN
        rank[0] = -1


def evaluate_rows(const floating[:, :, :] logits, const int64_t[:, :] target,
                  int64_t ignore_index, double cap,
                  double[:, :] nll, double[:, :] entropy, double[:, :] lse_out,
                  int64_t[:, :] rank, int n_threads):
    """Per-row NLL, entropy, log-sum-exp and the target's rank, in ONE read.

    IN: logits, target (validated), ignore_index, cap.  OUT: nll = lse - x'[y],
    entropy, lse_out, rank = #{j: x'_j > x'_y} + #{j < y: x'_j == x'_y}
    (the position of y in a stable descending sort, so rank == 0 exactly when
    argmax, first index on ties, is y).  Ignored rows: nll nan, rank -1;
    entropy and lse are still computed.  A row with nan: nll, entropy, lse
    nan and rank -1 (never counted as correct).
    """
    cdef Py_ssize_t n_classes = logits.shape[1], n_inner = logits.shape[2]
    cdef Py_ssize_t n_rows = logits.shape[0] * n_inner
    cdef Py_ssize_t xs = logits.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    cdef int64_t y
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        y = target[o, i]
        eval_row(&logits[o, 0, i], xs, n_classes, y, y != ignore_index, cap,
                 &nll[o, i], &entropy[o, i], &lse_out[o, i], &rank[o, i])
