# Row helpers of the logits-space kernels (private): the logit transform and
# the one-read online accumulators, shared by logit_divergence.pyx and
# training.pyx.
#
# What is here:
#   xf, dxf              the logit transform: ``logit_softcap`` then
#                        ``temperature``, and its derivative
#   Online, online_*     one read per row: a running maximum ``m``, the
#                        rescaled sum ``s = sum exp(x - m)`` and
#                        ``u = sum exp(x - m) (x - m)``; when the maximum moves
#                        from ``m`` to ``m'`` both are rescaled by
#                        ``exp(m - m')`` and ``u`` gains ``(m - m') s``.  Then
#                        ``lse = m + log s`` and the entropy ``H = log s - u / s``
#                        is a sum of two non-negative terms (no cancellation).
#   online_fast, ent_sums(_below), rank_count
#                        the same statistics of a contiguous row from the
#                        vectorised sums of ``lm_simd.h`` (block by block)
#
# Every helper trusts its input, is ``noexcept nogil`` and keeps every sum in
# double.  Private: not part of the public Cython API (``__init__.pxd``).

from cython cimport floating
from libc.math cimport exp, log, log1p, tanh, INFINITY, isfinite

from lossmle._kernels.rowops cimport (
    fast_max, lm_ent_sums_d, lm_ent_sums_f, lm_ent_sums_below_d, lm_ent_sums_below_f,
    lm_rank_count_d, lm_rank_count_f,
)


# Contiguous rows (stride 1, no soft cap) take vectorised paths (lm_simd.h):
# blocks of BLOCK values, the block's max first, then its exps against the
# running max while the block sits in L1, so a row still comes from memory
# once.  A row whose fast result is not finite (nan, inf, only -inf...) is
# redone by the scalar code below, which alone defines the special values;
# the fast paths decide that before they write any output, so a gradient
# written over an input (grad_out aliasing the logits) stays safe.
cdef enum:
    BLOCK = 2048

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
