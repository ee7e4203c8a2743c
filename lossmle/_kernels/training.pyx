"""Kernels for training and evaluation: fused value-and-gradient losses (BCE,
cross-entropy / NLL with sample weights, masks and soft-capping), softmax /
log_softmax backward, masked reductions and one-pass metrics.

Design
------
Three layers, as in ``special.pyx`` and ``losses.pyx``:

1. per-element and per-row helpers (``cdef inline ... noexcept nogil``,
   every sum and intermediate in double): the logit transform and the
   one-read online accumulators of ``logit_rows.pxd``, the stable softplus
   and sigmoid of BCE below;
2. the loops (``def *_rows``), one row per iteration over a
   ``(n_outer, n, n_inner)`` view whose middle axis is the class axis, under
   ``prange(schedule='static')`` so a result never depends on the thread count;
3. the Python layer (``_bce``, ``_special``, ``_losses``, ``_metrics``) that validates once, allocates
   the outputs and calls each loop once.

Kernels trust their input (n >= 1, shapes match, class indices checked).
Inputs are ``const``; every output is an explicit OUT argument.  Where a
gradient may be written over an input (``grad_out`` aliasing the logits), a
loop reads element k of every input before it writes element k of the
gradient, and reads nothing of the row after that, so an exact alias is safe.

One read per row: the online accumulators (``logit_rows.pxd``) give a row's
max, sum of exps and entropy in one pass, every exp taken against the running
max (no overflow, no term above 1); where a result needs ``log s`` with ``s``
close to 1, the values at the max are counted apart and the rest enters
through ``log1p`` (Blanchard, Higham & Higham 2021).  Contiguous rows take the
vectorised sums of ``lm_simd.h``; a row they cannot define (nan, +inf) is
redone by the scalar recurrence, so special values have one definition.
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.stdint cimport int64_t
from libc.math cimport exp, log, log1p, fabs, NAN, INFINITY

from lossmle._kernels.loss_rows cimport RowStats, row_stats_fast, target_log_s, target_grad
from lossmle._kernels.rowops cimport (
    simd_init, lm_simd_ready, fast_max, lm_ce_grad_d, lm_ce_grad_f, lm_bce_logits_d,
    lm_bce_logits_f, lm_mul_sum_d, lm_mul_sum_f, lm_sum_d, lm_sum_f, lm_softmax_bwd_d,
    lm_softmax_bwd_f, lm_log_softmax_bwd_d, lm_log_softmax_bwd_f,
)
from lossmle._kernels.logit_rows cimport (
    xf, dxf, Online, online_init, online_total, online_log_total, online_push, online_lse,
    online_nll, online_entropy, online_fast,
)


def _simd_init():
    """(Re)select this module's SIMD variant (reads LOSSMLE_SIMD); returns its name."""
    return simd_init()


_simd_init()

# BCE rows are summed in blocks of BCE_BLOCK values (the row's terms, then
# their blocked sum, while the block sits in L1)
cdef enum:
    BCE_BLOCK = 1024


# ---------------------------------------------------------------------------
# Element helpers of BCE
# ---------------------------------------------------------------------------
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
