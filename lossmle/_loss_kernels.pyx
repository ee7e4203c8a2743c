"""Kernels for cross-entropy, NLL and the fused cross-entropy gradient.

Design
------
Layout as in ``_special_kernels``: ``logits`` is a ``(n_outer, n_classes,
n_inner)`` view with the class axis in the middle (torch's ``(N, C, d1..)``
is ``n_inner = d1 * ...``; the default last axis is ``n_inner = 1``), and
``target`` the matching ``(n_outer, n_inner)`` view.  Per row the kernels
write the loss (double) and the weight the row carries in a mean (double);
the Python layer sums those O(rows) arrays pairwise (np.sum) and divides, so a
mean over millions of rows keeps ~1e-16 relative accuracy and a result never
depends on the thread count.

Class indices are checked here, before any arithmetic, in one cheap serial
pass over ``target``: the loop returns the flat position of the first index
outside ``[0, n_classes)`` that is not ``ignore_index`` (or -1), and the
Python layer turns that into an IndexError.  Nothing else is validated here.

Cross-entropy reads each logits row once (a running max and rescaled sum,
``row_online_stats``) and never materialises the softmax.  Per row, with
``lse = logsumexp(x)``, class weights ``w`` (1 when absent), ``W = sum(w)``,
smoothing ``eps`` and ``C`` classes (torch.nn.functional.cross_entropy):

    class target y:  loss = (1 - eps) * w[y] * (lse - x[y])
                            + eps / C * (W * lse - sum_c w[c] * x[c])
    probabilities t: t' = (1 - eps) * t + eps / C
                     loss = lse * sum_c w[c] t'[c] - sum_c w[c] t'[c] x[c]

and the gradients ``d loss / d x_k`` with ``p = softmax(x)``:

    class target y:  (1 - eps) * w[y] * (p_k - [k == y]) + eps / C * (W p_k - w_k)
    probabilities t: (sum_c w[c] t'[c]) * p_k - w_k t'_k
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.stdint cimport int64_t
from libc.math cimport exp, log, NAN, INFINITY, isfinite


ctypedef fused target_floating:
    float
    double


cdef struct RowStats:
    double lse          # log(sum(exp(x)))
    double sum_wx       # sum_c w[c] * x[c]   (when asked for)
    double sum_wt       # sum_c w[c] * t'[c]  (probability targets)
    double sum_wtx      # sum_c w[c] * t'[c] * x[c]


cdef inline void row_online_stats(const floating* x, Py_ssize_t n, Py_ssize_t stride,
                                  const double* w, bint want_wx,
                                  RowStats* st) noexcept nogil:
    """One read of a logits row: lse (running max, rescaled sum) and sum w*x.

    A +inf logit makes the row's loss nan, as torch's log_softmax (inf - inf).
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, s = 0.0, v, wx = 0.0
    cdef bint has_nan = False
    for j in range(n):
        v = x[j * stride]
        has_nan = has_nan | (v != v)
        if want_wx:
            wx += (w[j] if w != NULL else 1.0) * v
        if v > m:
            # the guard keeps -inf - -inf (nan) out when the first value lands
            s = (s * exp(m - v) if m != -INFINITY else 0.0) + 1.0
            m = v
        elif m != -INFINITY:
            s += exp(v - m)
    # +inf (inf - inf) and all -inf rows (-inf - -inf) have a nan
    # log_softmax in torch, so their loss is nan; so has a row with a nan.
    st.lse = NAN if has_nan or not isfinite(m) else m + log(s)
    st.sum_wx = wx


cdef inline void row_online_stats_prob(const floating* x, Py_ssize_t n,
                                       Py_ssize_t stride,
                                       const target_floating* t, Py_ssize_t t_stride,
                                       const double* w, double keep, double spread,
                                       RowStats* st) noexcept nogil:
    """One read of a logits row and its probability-target row.

    t'[c] = keep * t[c] + spread (keep = 1 - eps, spread = eps / C).
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, s = 0.0, v, wt, swt = 0.0, swtx = 0.0
    cdef bint has_nan = False
    for j in range(n):
        v = x[j * stride]
        has_nan = has_nan | (v != v)
        wt = (keep * t[j * t_stride] + spread) * (w[j] if w != NULL else 1.0)
        swt += wt
        swtx += wt * v           # 0 * -inf = nan, as torch's t * log_softmax
        if v > m:
            s = (s * exp(m - v) if m != -INFINITY else 0.0) + 1.0
            m = v
        elif m != -INFINITY:
            s += exp(v - m)
    st.lse = NAN if has_nan or not isfinite(m) else m + log(s)
    st.sum_wt = swt
    st.sum_wtx = swtx


def check_class_indices(const int64_t[:, :] target, Py_ssize_t n_classes,
                        int64_t ignore_index):
    """Flat position of the first bad class index in target, or -1.  IN only."""
    cdef Py_ssize_t o, i, n_inner = target.shape[1], bad = -1
    cdef int64_t y
    with nogil:
        for o in range(target.shape[0]):
            for i in range(n_inner):
                y = target[o, i]
                if (y < 0 or y >= n_classes) and y != ignore_index:
                    bad = o * n_inner + i
                    break
            if bad >= 0:
                break
    return bad


def cross_entropy_class_rows(const floating[:, :, :] logits,
                             const int64_t[:, :] target,
                             const double[::1] weight,
                             int64_t ignore_index, double label_smoothing,
                             double[:, :] loss, double[:, :] row_weight,
                             floating[:, :, :] grad, double grad_scale,
                             int n_threads):
    """Cross-entropy per row from class indices, optionally with its gradient.

    IN: logits, target (validated), weight (None or length n_classes),
    ignore_index, label_smoothing, grad_scale (d reduction / d row loss).
    OUT: loss (row losses), row_weight (w[y], 0 where ignored), and, when
    grad is not None, grad = grad_scale * d loss_row / d logits.
    """
    cdef Py_ssize_t n_classes = logits.shape[1], n_inner = logits.shape[2]
    cdef Py_ssize_t n_rows = logits.shape[0] * n_inner
    cdef Py_ssize_t xs = logits.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t gs = 0
    cdef const double* w = NULL
    cdef double w_total = n_classes
    cdef double eps = label_smoothing
    cdef double keep = 1.0 - eps, spread = eps / n_classes
    cdef bint want_grad = grad is not None
    cdef Py_ssize_t r, o, i, k
    cdef int64_t y
    cdef const floating* x
    cdef floating* g
    cdef double wy, p, gk
    cdef RowStats st
    if weight is not None:
        w = &weight[0]
        w_total = 0.0
        for k in range(n_classes):
            w_total += w[k]
    if want_grad:
        gs = grad.strides[1] // <Py_ssize_t>sizeof(floating)
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        y = target[o, i]
        x = &logits[o, 0, i]
        if y == ignore_index:
            loss[o, i] = 0.0
            row_weight[o, i] = 0.0
            if want_grad:
                g = &grad[o, 0, i]
                for k in range(n_classes):
                    g[k * gs] = 0
            continue
        row_online_stats(x, n_classes, xs, w, eps > 0, &st)
        wy = w[y] if w != NULL else 1.0
        loss[o, i] = keep * wy * (st.lse - x[y * xs])
        if eps > 0:
            loss[o, i] = loss[o, i] + spread * (w_total * st.lse - st.sum_wx)
        row_weight[o, i] = wy
        if want_grad:
            g = &grad[o, 0, i]
            for k in range(n_classes):
                p = exp(x[k * xs] - st.lse)
                gk = keep * wy * (p - (1.0 if k == y else 0.0))
                if eps > 0:
                    gk = gk + spread * (w_total * p - (w[k] if w != NULL else 1.0))
                g[k * gs] = <floating>(grad_scale * gk)


def cross_entropy_prob_rows(const floating[:, :, :] logits,
                            const target_floating[:, :, :] target,
                            const double[::1] weight, double label_smoothing,
                            double[:, :] loss,
                            floating[:, :, :] grad, double grad_scale,
                            int n_threads):
    """Cross-entropy per row from class probabilities, optionally with its gradient.

    IN: logits, target (same shape), weight (None or length n_classes),
    label_smoothing, grad_scale.  OUT: loss (row losses) and, when grad is not
    None, grad = grad_scale * d loss_row / d logits.
    """
    cdef Py_ssize_t n_classes = logits.shape[1], n_inner = logits.shape[2]
    cdef Py_ssize_t n_rows = logits.shape[0] * n_inner
    cdef Py_ssize_t xs = logits.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ts = target.strides[1] // <Py_ssize_t>sizeof(target_floating)
    cdef Py_ssize_t gs = 0
    cdef const double* w = NULL
    cdef double keep = 1.0 - label_smoothing, spread = label_smoothing / n_classes
    cdef bint want_grad = grad is not None
    cdef Py_ssize_t r, o, i, k
    cdef const floating* x
    cdef const target_floating* t
    cdef floating* g
    cdef double wk
    cdef RowStats st
    if weight is not None:
        w = &weight[0]
    if want_grad:
        gs = grad.strides[1] // <Py_ssize_t>sizeof(floating)
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        x = &logits[o, 0, i]
        t = &target[o, 0, i]
        row_online_stats_prob(x, n_classes, xs, t, ts, w, keep, spread, &st)
        loss[o, i] = st.lse * st.sum_wt - st.sum_wtx
        if want_grad:
            g = &grad[o, 0, i]
            for k in range(n_classes):
                wk = w[k] if w != NULL else 1.0
                g[k * gs] = <floating>(grad_scale * (
                    st.sum_wt * exp(x[k * xs] - st.lse)
                    - wk * (keep * t[k * ts] + spread)))


def nll_rows(const floating[:, :, :] log_probs, const int64_t[:, :] target,
             const double[::1] weight, int64_t ignore_index,
             double[:, :] loss, double[:, :] row_weight, int n_threads):
    """loss = -w[y] * log_probs[y] per row (0 where ignored).  OUT: loss, row_weight."""
    cdef Py_ssize_t n_inner = log_probs.shape[2]
    cdef Py_ssize_t n_rows = log_probs.shape[0] * n_inner
    cdef const double* w = NULL
    cdef Py_ssize_t r, o, i
    cdef int64_t y
    cdef double wy
    if weight is not None:
        w = &weight[0]
    for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
        o = r // n_inner
        i = r % n_inner
        y = target[o, i]
        if y == ignore_index:
            loss[o, i] = 0.0
            row_weight[o, i] = 0.0
        else:
            wy = w[y] if w != NULL else 1.0
            loss[o, i] = -wy * log_probs[o, y, i]
            row_weight[o, i] = wy
