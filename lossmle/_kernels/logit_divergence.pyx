"""Kernels for the divergences from logits: entropy, KL and Jensen-Shannon of
softmax(a) and softmax(b), neither softmax materialised.

Design
------
Three layers, as in ``special.pyx`` and ``losses.pyx``:

1. the row helpers of ``logit_rows.pxd`` (the logit transform ``xf``, the
   one-read online accumulators) and the per-row bodies below
   (``cdef inline ... noexcept nogil``, every sum in double);
2. the loops (``def *_rows``), one row per iteration over a
   ``(n_outer, n, n_inner)`` view whose middle axis is the class axis, under
   ``prange(schedule='static')`` so a result never depends on the thread count;
3. the Python layer (``lossmle/_logit_divergence.py``) that validates once,
   allocates the outputs and calls each loop once.

One read per row.  The entropy is ``H = log s - u / s`` from the online
accumulators (no cancellation).  The KL kernel runs the same recurrence on
both rows and adds ``v = sum exp(a - m_a) (b - m_b)``, so
``KL = (u - v) / s_a + log s_b - log s_a``.  Every exp is taken against the
running max; where a result needs ``log s`` with ``s`` close to 1, the values
at the max are counted apart and the rest enters through ``log1p`` (as
``row_logsumexp``, Blanchard, Higham & Higham 2021).

Near p = q that one-read KL is a difference of O(1) terms and loses every
digit of a KL of ~d^2.  A row whose value is small against its own terms is
refined: with ``d'' = (a - b) - c`` taken exactly (TwoSum, one fma) and ``c``
close to ``E_P[a - b]``, ``KL = SG - h(SG - S1) - log1p(-Q0)`` from
``S1 = E_P[d'']`` and ``SG = E_P[g(d'')]``, ``g(x) = expm1(-x) + x >= 0``,
and ``JS = E_P[phi(log Q / P)] / 2`` with ``phi >= 0``: sums of non-negative
terms, so nothing cancels (the idea of SciPy's gh-20710 ``rel_entr`` fix,
carried to logits).  Contiguous rows take the vectorised sums of
``lm_simd.h``; a row they cannot define (nan, +inf) is redone by the scalar
recurrence, so special values have one definition.
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.math cimport exp, log, log1p, expm1, fabs, fma, sinh, cosh, NAN, INFINITY, isfinite

from lossmle._kernels.rowops cimport (
    simd_init, lm_simd_ready, fast_max, lm_kl_logit_sums_d, lm_kl_logit_sums_f,
    lm_kl_logit_grad_d, lm_kl_logit_grad_f, lm_js_logit_sum_d, lm_js_logit_sum_f,
)
from lossmle._kernels.logit_rows cimport (
    BLOCK, xf, dxf, Online, online_init, online_total, online_log_total, online_rescale,
    online_push, online_lse_rounded, online_entropy, online_fast,
)


def _simd_init():
    """(Re)select this module's SIMD variant (reads LOSSMLE_SIMD); returns its name."""
    return simd_init()


_simd_init()

cdef double LOG_HALF = -0.6931471805599453


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


cdef inline double near_kl_value(double s1, double sg) noexcept nogil:
    """S1 + log1p(SG - S1), the KL but for Q0's term.  Near p = q (x = SG - S1
    small) as SG - h(x), which keeps the digits of a KL of ~d^2; otherwise as
    written: far from p = q SG grows like exp(KL), and SG - h(x) would cancel
    to nothing (a row refined only because its logits are large, e.g. a
    common offset of 2e4, has a KL of O(1) or more)."""
    cdef double x = sg - s1
    if x <= 0.5:
        return sg - near_h(x)
    return s1 + log1p(x)


cdef inline double near_kl(const floating* pr, Py_ssize_t ps, const floating* qr,
                           Py_ssize_t qs, Py_ssize_t n, double inv_t, double cap,
                           double ma, double mb, double log_sb, double* c,
                           double* s_out) noexcept nogil:
    """KL = SG - h(SG - S1) - log1p(-Q0) (= S1 + L) from near_sums about c,
    where SG ~ KL + S1^2 / 2: when S1^2 is not small against that, c moves
    to c + S1 for a second pass (c and s_out are updated)."""
    cdef double kl
    near_sums(pr, ps, qr, qs, n, inv_t, cap, ma, mb, log_sb, c[0], s_out)
    kl = near_kl_value(s_out[1], s_out[2])
    if s_out[1] * s_out[1] > 0.25 * kl:
        c[0] = c[0] + s_out[1]
        near_sums(pr, ps, qr, qs, n, inv_t, cap, ma, mb, log_sb, c[0], s_out)
        kl = near_kl_value(s_out[1], s_out[2])
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
    L = near_kl(pr, ps, qr, qs, n, inv_t, cap, ma, mb, log_sb, &c, sums)
    if not L <= 0.5:
        # not a near-equal pair (the row was refined for its large logits): phi
        # of its large arguments would cancel; the one-read JS is accurate there
        return NAN
    L = L - sums[1]
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
