"""The across-rows kernel for many short rows (2..8 values), on every SIMD path.

Rows of 2..8 contiguous values take a kernel that puts one row in each SIMD
lane; rows it cannot do exactly (nan, +-inf, and for softmax a value more
than 670 below the row max, whose result is near the subnormals) are flagged
and redone by the exact scalar code.  These tests cover every row length on
both sides of the limit, both dtypes, every dispatch path, in place and not,
against scipy.special (float64 oracle) and, where the answer is exact, bit
for bit.
"""
import math

import numpy as np
import pytest
import scipy.special as sps

import lossmle as lm
from oracles import MAX0_ROWS, max0_rows as _max0_rows, np_cross_entropy_rows
from oracles import np_cross_entropy_grad as ce_grad_oracle

N_COLS = list(range(2, 10))  # 9 is past the kernel's limit: the row-wise path
N_ROWS = 1000                # several of the kernel's 256-row blocks, and a tail


def make_rows(n_cols, dtype, seed):
    """Random rows with special ones sprinkled in (at fixed, spread positions)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=(N_ROWS, n_cols))
    x[5, 0] = np.nan
    x[300, -1] = np.inf
    x[301, :] = -np.inf
    x[302, 0] = -np.inf                       # a partly -inf row is ordinary
    x[303, :] = 7.0                           # ties at the max
    x[600, 1] = x[600, 0] - 800.0             # exp underflows to 0 / subnormal
    x[601, 1] = x[601, 0] - 700.0             # softmax value ~1e-304: flagged
    x[602, 1] = x[602, 0] - 669.0             # just inside the fast range
    x[999, :] = np.linspace(-1e3, 1e3, n_cols)
    return x.astype(dtype)


TOL = {np.float64: 4e-15, np.float32: 2e-6}


def check_close(got, want, dtype, scale=None):
    """Relative tolerance; plus, where ``scale`` is given, an absolute one of
    TOL * scale: log_softmax near 0 is x - m - lse, whose error is that of
    lse (scipy's own is larger there: it takes log(s) without log1p)."""
    want = want.astype(dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    atol = np.finfo(dtype).tiny if scale is None else TOL[dtype] * scale[finite]
    err = np.abs(got[finite].astype(np.float64) - want[finite])
    assert np.all(err <= TOL[dtype] * np.abs(want[finite]) + atol), (
        f"max error {err.max()} at {np.argmax(err)}")


@pytest.mark.parametrize("rows", ["special", "clean"])
@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", N_COLS)
def test_short_rows_match_scipy(simd_path, n_cols, dtype, n_threads, rows):
    """'special': every 256-row block holds rows the kernel flags; 'clean':
    none does (the path that skips the per-row look at the flags); ties and
    the max in every position either way."""
    if rows == "special":
        x = make_rows(n_cols, dtype, n_cols)
    else:
        rng = np.random.default_rng(n_cols)
        x = rng.normal(scale=3.0, size=(N_ROWS, n_cols))
        x[::7, -1] = x[::7, 0]                # ties at every position
        x[::11] = np.round(x[::11])
        x = x.astype(dtype)
    x64 = x.astype(np.float64)
    before = x.copy()
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        check_close(lm.logsumexp(x, axis=-1, n_threads=n_threads),
                    sps.logsumexp(x64, axis=-1), dtype)
        check_close(lm.softmax(x, axis=-1, n_threads=n_threads),
                    sps.softmax(x64, axis=-1), dtype)
        scale = np.broadcast_to(1.0 + np.abs(np.nan_to_num(x64)).max(axis=-1, keepdims=True),
                                x.shape)
        check_close(lm.log_softmax(x, axis=-1, n_threads=n_threads),
                    sps.log_softmax(x64, axis=-1), dtype, scale)
    np.testing.assert_array_equal(x, before)  # inputs are never written


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", N_COLS)
@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
def test_short_rows_in_place(simd_path, func, n_cols, dtype):
    """out=x: special rows are redone from the input, which must still be there."""
    x = make_rows(n_cols, dtype, 100 + n_cols)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        want = getattr(sps, func)(x.astype(np.float64), axis=-1)
    scale = np.broadcast_to(1.0 + np.abs(np.nan_to_num(x.astype(np.float64))).max(
        axis=-1, keepdims=True), x.shape)
    got = getattr(lm, func)(x, axis=-1, out=x)
    assert got is x
    check_close(x, want, dtype, scale if func == "log_softmax" else None)


# (smallest gap that leaves a sum of 1.0 exact, gap past the normal range,
#  gap where the result rounds to 0)
GAPS = {np.float64: (40.0, 708.0, 745.2), np.float32: (20.0, 87.4, 103.98)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", N_COLS)
def test_softmax_where_the_sum_is_one(simd_path, n_cols, dtype):
    """When the row sum rounds to exactly 1, softmax is exp(x - max) itself.

    Rows [0, -d, ...] with d large enough sum to exactly 1.0, so the answer is
    exp(-d) (oracle: float64 scipy/libm, rounded to the dtype), and ours may
    differ only by the vectorised exp's rounding (<= 1 ulp) - also near and
    in the subnormals, and down to where the result rounds to 0.  (A former
    exp that shifted x by 54 ln 2 there was 34 ulp off.)
    """
    low, normal_end, zero = GAPS[dtype]
    rng = np.random.default_rng(n_cols)
    gaps = rng.uniform(low, zero + 1.0, size=(N_ROWS, n_cols))
    gaps[:, 0] = 0.0
    gaps[::3, 1:] = rng.uniform(low, normal_end - 40.0, size=gaps[::3, 1:].shape)
    gaps[::7, 1] = rng.uniform(normal_end - 40.0, zero + 1.0, size=gaps[::7, 1].shape)
    x = (-gaps).astype(dtype)
    with np.errstate(under="ignore"):
        want = sps.softmax(x.astype(np.float64), axis=-1).astype(dtype)
        assert np.all(np.exp(x).sum(axis=-1) == 1.0)  # the premise
    assert ((want < np.finfo(dtype).tiny) & (want > 0)).any()  # subnormals are in
    assert (want == 0).any()
    np.testing.assert_array_max_ulp(lm.softmax(x, axis=-1), want, maxulp=1)


@pytest.mark.parametrize("n_cols", [2, 3, 4, 5, 8])
def test_softmax_close_to_numpy_division(simd_path, n_cols):
    """softmax = exp(x - max) / sum, within 4 ulp of NumPy doing exactly that.

    The ulp budget covers exp's rounding (ours vs libm's; 1 ulp of a value at
    the bottom of its binade can be 2 of the quotient), the sum's and the
    quotient's; a kernel that, say, dropped a term or divided by the
    wrong row's sum is off by far more.
    """
    rng = np.random.default_rng(n_cols)
    x = rng.normal(scale=5.0, size=(N_ROWS, n_cols))
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    want = e / e.sum(axis=-1, keepdims=True)
    np.testing.assert_array_max_ulp(lm.softmax(x, axis=-1), want, maxulp=4)


@pytest.mark.parametrize("n_cols", N_COLS)
def test_softmax_of_ties_is_one_over_count(simd_path, n_cols):
    """c maxima and negligible others: each maximum gets exactly RN(1 / c)."""
    rng = np.random.default_rng(n_cols)
    counts = rng.integers(1, n_cols + 1, size=N_ROWS)
    x = -40.0 - rng.uniform(0.0, 5.0, size=(N_ROWS, n_cols))  # exp < 2^-57: no change
    for r, c in enumerate(counts):
        x[r, rng.permutation(n_cols)[:c]] = 2.5
    got = lm.softmax(x, axis=-1)
    at_max = x == 2.5
    want = np.broadcast_to((1.0 / counts)[:, None], x.shape)
    np.testing.assert_array_equal(got[at_max], want[at_max])


# ---- KL divergence: many short rows take a flat kernel (lm_kl_rows) ----

# 9..16: the flat kernel's sequential row sums; 17..100 its lane-wise ones
# (100 is its limit); 101 and 128 the row-wise path
KL_COLS = [2, 3, 4, 5, 6, 7, 8, 16, 17, 31, 100, 101, 128]


def make_prob_rows(n_cols, dtype, seed):
    rng = np.random.default_rng(seed)
    p = rng.random((N_ROWS, n_cols))
    q = rng.random((N_ROWS, n_cols))
    p /= p.sum(axis=-1, keepdims=True)
    q /= q.sum(axis=-1, keepdims=True)
    p[3, 0] = 0.0                 # 0 log(0 / q) = 0: stays on the fast path
    p[4, 0], q[4, 0] = 0.0, 0.0   # 0 log(0 / 0) = 0
    q[257, -1] = 0.0              # p > 0, q == 0: inf (the exact path)
    p[258, 1] = np.inf            # inf in p
    q[259, 0] = np.nan            # nan in q
    p[600, 0] = 1e-310            # subnormal p: the exact path
    q[601, 1] = 1e-300            # p / q overflows the fast domain
    p[602, :] = q[602, :]         # KL(p || p) = 0
    return p.astype(dtype), q.astype(dtype)


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", KL_COLS)
def test_kl_short_rows_match_scipy(simd_path, n_cols, dtype, n_threads):
    p, q = make_prob_rows(n_cols, dtype, n_cols)
    before = (p.copy(), q.copy())
    p64, q64 = p.astype(np.float64), q.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        want = sps.rel_entr(p64, q64).sum(axis=-1)
        if dtype == np.float64:  # (in float32, q = 1e-300 is 0: inf is right)
            # where p / q overflows, rel_entr gives inf; the true value is finite
            want[601] = (p64[601] * (np.log(p64[601]) - np.log(q64[601]))).sum()
    got = lm.kl_divergence(p, q, axis=-1, validate=False, n_threads=n_threads)
    check_close(got, want, dtype, scale=np.ones_like(want))
    assert got[602] == 0.0
    for r in (0, 257, 600, 999):  # a row alone gets the bits it gets among many
        assert lm.kl_divergence(p[r], q[r], validate=False) == got[r] or (
            np.isnan(got[r]) and np.isnan(lm.kl_divergence(p[r], q[r], validate=False)))
    # and so do rows with a gap between them, and rows against one shared q
    # (broadcast: row by row, not a block)
    gapped = np.repeat(p, 2, axis=0)[::2]
    np.testing.assert_array_equal(
        lm.kl_divergence(gapped, q, axis=-1, validate=False, n_threads=n_threads), got)
    shared = lm.kl_divergence(p, q[0], axis=-1, validate=False, n_threads=n_threads)
    for r in (0, 257, 600, 999):
        alone = lm.kl_divergence(p[r], q[0], validate=False)
        assert alone == shared[r] or (np.isnan(alone) and np.isnan(shared[r]))
    np.testing.assert_array_equal(p, before[0])
    np.testing.assert_array_equal(q, before[1])


@pytest.mark.parametrize("n_cols", KL_COLS)
def test_kl_short_rows_validate(simd_path, n_cols):
    """A negative or nan entry in any one short row is still caught."""
    p, q = make_prob_rows(n_cols, np.float64, 7)
    p[258, 1] = 0.5               # drop the inf: only the planted bad entry remains
    q[259, 0] = 0.5
    lm.kl_divergence(p, q, axis=-1)  # valid: no error
    for row in (0, 255, 256, 999):
        bad = p.copy()
        bad[row, n_cols - 1] = -0.1
        with pytest.raises(ValueError, match="p"):
            lm.kl_divergence(bad, q, axis=-1)
        bad = q.copy()
        bad[row, 0] = np.nan
        with pytest.raises(ValueError, match="q"):
            lm.kl_divergence(p, bad, axis=-1)


def test_kl_seed_coin_example_many_rows(simd_path):
    """The seed's coin: D_KL((1/2, 1/2) || (1/3, 2/3)) = 0.0588915178... nats, on every row."""
    p = np.tile([0.5, 0.5], (N_ROWS, 1))
    q = np.tile([1 / 3, 2 / 3], (N_ROWS, 1))
    want = 0.5 * np.log(1.5) + 0.5 * np.log(0.75)  # closed form
    assert abs(want - 0.0588915178) < 1e-10
    np.testing.assert_allclose(lm.kl_divergence(p, q, axis=-1), want, rtol=1e-15)


# ---- one dominant term, in float32 too (the maxima kept out of the sum) ----

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", [2, 4, 8, 10, 100, 5000])
def test_dominant_term_keeps_full_precision(simd_path, n_cols, dtype):
    if dtype == np.float64 and n_cols > 10:
        # here the result is the sum of n - 1 equal terms itself: the float64
        # sum (SIMD lanes, 1 KiB chunks, not pairwise) rounds up to ~40 ulp
        # off for thousands of them; a documented limit (README)
        pytest.skip("long float64 rows of equal tiny terms: the sum's own rounding")
    """logsumexp([0, -d, ..., -d]) = log1p((n - 1) e^-d): tiny, and exact to the ulp.

    Summing exp(x - max) with the maximum's own 1.0 in it would round the
    tiny part away (a float32 row [0, -30 x 9] came out 16384 ulp off); the
    maxima are counted apart.  Oracle: mpmath.
    """
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    gaps = np.array([30.0, 60.0] if dtype == np.float32 else [30.0, 200.0, 600.0])
    x = np.zeros((len(gaps), n_cols))
    x[:, 1:] = -gaps[:, None]
    x = x.astype(dtype)
    want = np.array([float(mpmath.log1p((n_cols - 1) * mpmath.exp(-mpmath.mpf(float(g)))))
                     for g in gaps])
    got = lm.logsumexp(x, axis=-1)
    np.testing.assert_array_max_ulp(got, want.astype(dtype), maxulp=2)
    # log_softmax at the maximum is -logsumexp (scipy#19521)
    np.testing.assert_array_max_ulp(lm.log_softmax(x, axis=-1)[:, 0], (-want).astype(dtype),
                                    maxulp=2)


# ---- cross-entropy with its gradient: the across-rows kernel (mode 6) ----

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", N_COLS)
def test_cross_entropy_with_grad_short_rows(simd_path, n_cols, dtype, n_threads, reduction):
    rng = np.random.default_rng(n_cols)
    x = rng.normal(scale=3.0, size=(N_ROWS, n_cols))
    y = rng.integers(0, n_cols, N_ROWS)
    y[[7, 300, 999]] = -100                   # ignored rows, in several blocks
    x[600, 1] = x[600, 0] - 800.0             # a flagged row (gap over 670)
    x[601, :] = 5.0                           # ties
    x[602, y[602]] = 40.0                     # p_y ~ 1: p_y - 1 must not cancel
    x[603, :] = 0.0
    x[603, y[603]] = 40.0                     # closed form below
    x = x.astype(dtype)
    before = x.copy()
    want_loss, want_grad = ce_grad_oracle(x, y, reduction)
    loss, grad = lm.cross_entropy_with_grad(x, y, reduction=reduction, n_threads=n_threads)
    np.testing.assert_array_equal(x, before)
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    # per-row losses near 0 (p_y ~ 1): scipy's log_softmax is only absolutely
    # accurate there (scipy#19521), ours relatively
    np.testing.assert_allclose(loss, want_loss, rtol=rtol,
                               atol=1e-15 if dtype == np.float64 else 1e-7)
    assert grad.dtype == dtype and grad.shape == x.shape
    # p_y - 1 at the target has an absolute error of a few float64 eps (here
    # and in the oracle alike), scaled like the gradient
    grad_scale = 1.0 / (y != -100).sum() if reduction == "mean" else 1.0
    scale = np.broadcast_to(np.abs(want_grad).max(axis=-1, keepdims=True), x.shape)
    assert np.all(np.abs(grad - want_grad) <= rtol * scale + 8e-16 * grad_scale)
    # the target's entry near p_y = 1 keeps its precision: a float32 p_y - 1
    # would be all rounding (~6e-8 against a gradient of ~1e-17 here)
    np.testing.assert_allclose(grad[602, y[602]], want_grad[602, y[602]],
                               rtol=rtol, atol=8e-16 * grad_scale)
    np.testing.assert_array_equal(grad[[7, 300, 999]], 0.0)
    # p_y - 1 = -(C - 1) e^-40 / (1 + (C - 1) e^-40) ~ -1e-17: a difference
    # 1 - p_y taken in double would be all rounding (0 or -1.1e-16).  The
    # across-rows kernel (C <= 8) sums the other classes' share instead; the
    # row-wise path (C = 9) keeps log(sum) and has torch's 0 here.
    share = (n_cols - 1) * math.exp(-40.0)
    if y[603] != -100 and n_cols <= 8:
        np.testing.assert_allclose(grad[603, y[603]], -share / (1 + share) * grad_scale,
                                   rtol=1e-14 if dtype == np.float64 else 1e-6)


# ---- cross-entropy with probability targets: the across-rows log-sum ----

@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1},
                                     {"weight": "w"}, {"weight": "w", "label_smoothing": 0.2}],
                         ids=["plain", "smooth", "weight", "weight-smooth"])
@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", N_COLS + [100, 1000])
def test_cross_entropy_prob_short_rows(simd_path, n_cols, dtype, n_threads, options):
    """Per-row losses -sum_c w_c ((1 - eps) t_c + eps / C) log_softmax(x)_c (torch's
    definition), oracle from scipy's float64 log_softmax.  Rows of 100 and 1000
    values take the row-wise path with its vectorised target sums (lm_wdot)."""
    rng = np.random.default_rng(n_cols)
    x = rng.normal(scale=3.0, size=(N_ROWS, n_cols))
    t = rng.random((N_ROWS, n_cols))
    t /= t.sum(axis=-1, keepdims=True)
    x[600, 1] = x[600, 0] - 800.0             # exp underflows
    x[601, 0] = np.inf                        # flagged: the exact path
    x[602, :] = -np.inf
    x = x.astype(dtype)
    t = t.astype(dtype)
    kw = dict(options)
    w = rng.uniform(0.5, 2.0, n_cols)
    if "weight" in kw:
        kw["weight"] = w
    eps = kw.get("label_smoothing", 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        logp = sps.log_softmax(x.astype(np.float64), axis=-1)
        tt = (1 - eps) * t.astype(np.float64) + eps / n_cols
        ww = w if "weight" in kw else np.ones(n_cols)
        want = -(ww * tt * logp).sum(axis=-1)
    got = lm.cross_entropy(x, t, reduction="none", n_threads=n_threads, **kw)
    check_close(got, want, dtype, scale=np.broadcast_to(
        1.0 + np.abs(np.nan_to_num(x.astype(np.float64), posinf=0, neginf=0)).max(axis=-1),
        want.shape))


@pytest.mark.parametrize("n_cols", [3, 9, 1000, 5000])
def test_log_softmax_float32_within_two_ulp(simd_path, n_cols):
    """float32 log_softmax (shifted in float arithmetic on long rows) stays within
    2 ulp of the float64 oracle rounded to float32; at a dominant maximum, of
    mpmath (scipy is off there)."""
    rng = np.random.default_rng(n_cols)
    x = (rng.normal(scale=4.0, size=(64, n_cols))).astype(np.float32)
    x[0, 0] = x[0].max() + 30.0                 # one dominant term
    got = lm.log_softmax(x, axis=-1)
    want = sps.log_softmax(x.astype(np.float64), axis=-1).astype(np.float32)
    # at the dominant maximum scipy itself is off (scipy#19521): mpmath there
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    row = [mpmath.mpf(float(v)) for v in x[0]]
    at_max = np.float32(float(row[0] - mpmath.log(mpmath.fsum([mpmath.exp(v) for v in row]))))
    # there the result (~1e-13) is the sum of the other terms' exps, which long
    # float32 rows take in float32 precision (each within an ulp): a few ulp
    np.testing.assert_array_max_ulp(got[0, 0], at_max, maxulp=2 if n_cols <= 8 else 8)
    want[0, 0] = got[0, 0]
    np.testing.assert_array_max_ulp(got, want, maxulp=2)


# ---- cross-entropy of class indices, loss only: the across-rows kernel picks
# the target's logit (mode 5); 'mean'/'sum' sum block by block, no row arrays ----

CE_OPTIONS = {
    "plain": {},
    "ignore_collides": {"ignore_index": 1},     # a valid class index, ignored
    "weight": {"weight": "w"},
    "smooth": {"label_smoothing": 0.1},
    "weight_smooth_ignore": {"weight": "w", "label_smoothing": 0.3, "ignore_index": 0},
}


@pytest.mark.parametrize("n_rows", [1000, 70001], ids=["1000rows", "70001rows"])
@pytest.mark.parametrize("option", list(CE_OPTIONS))
@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", N_COLS)
def test_cross_entropy_class_short_rows(simd_path, n_cols, dtype, n_threads, option, n_rows):
    rng = np.random.default_rng(n_cols + n_rows)
    x = rng.normal(scale=3.0, size=(n_rows, n_cols))
    y = rng.integers(0, n_cols, n_rows)
    kw = dict(CE_OPTIONS[option])
    y[[7, 300, 999]] = kw.get("ignore_index", -100)   # ignored rows, in several blocks
    x[600, 1] = x[600, 0] - 800.0             # exp underflows
    x[601, :] = 5.0                           # ties
    x[602, y[602]] = 40.0                     # p_y ~ 1: a loss of ~1e-17
    x[603, 0] = -np.inf                       # a partly -inf row
    y[603] = n_cols - 1
    x = x.astype(dtype)
    before, y_before = x.copy(), y.copy()
    if "weight" in kw:
        kw["weight"] = rng.uniform(0.5, 2.0, n_cols)
    losses, row_w = np_cross_entropy_rows(x, y, **kw)
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    got_none = lm.cross_entropy(x, y, reduction="none", n_threads=n_threads, **kw)
    np.testing.assert_allclose(got_none, losses.astype(dtype), rtol=rtol,
                               atol=1e-15 if dtype == np.float64 else 1e-7)
    got_sum = lm.cross_entropy(x, y, reduction="sum", n_threads=n_threads, **kw)
    got_mean = lm.cross_entropy(x, y, reduction="mean", n_threads=n_threads, **kw)
    assert got_sum.dtype == dtype and got_mean.dtype == dtype
    total = math.fsum(losses)
    np.testing.assert_allclose(got_sum, total, rtol=rtol)
    np.testing.assert_allclose(got_mean, total / math.fsum(row_w), rtol=rtol)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(y, y_before)
    if dtype == np.float64:
        # the documented reduction: NumPy's pairwise sum of each 256-row block
        # of the row losses, then of the block totals - to the bit
        blocks = [np.add.reduce(got_none[i:i + 256]) for i in range(0, n_rows, 256)]
        assert got_sum == np.add.reduce(np.array(blocks))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_cross_entropy_class_short_rows_specials(simd_path, dtype):
    """nan / inf logits give torch's nan / inf, every target ignored gives nan,
    and a bad index is an IndexError: through the summing kernel (large input)."""
    rng = np.random.default_rng(3)
    n_rows = 40000
    x = rng.normal(size=(n_rows, 4)).astype(dtype)
    y = rng.integers(0, 4, n_rows)
    x_nan = x.copy()
    x_nan[20000, 2] = np.nan
    assert np.isnan(lm.cross_entropy(x_nan, y))
    x_inf = x.copy()
    x_inf[30000, 0] = np.inf                  # +inf logit: an inf - inf row loss
    y_inf = y.copy()
    y_inf[30000] = 1
    assert np.isnan(lm.cross_entropy(x_inf, y_inf, reduction="sum"))
    x_neg = x.copy()
    x_neg[123, y[123]] = -np.inf              # the target's logit -inf: loss +inf
    assert lm.cross_entropy(x_neg, y) == np.inf
    assert np.isnan(lm.cross_entropy(x, np.full(n_rows, -100)))
    assert lm.cross_entropy(x, np.full(n_rows, -100), reduction="sum") == 0.0
    y_bad = y.copy()
    y_bad[39999] = 4
    with pytest.raises(IndexError, match="class index 4"):
        lm.cross_entropy(x, y_bad)


@pytest.mark.parametrize("n_cols", [2, 4, 8])
def test_cross_entropy_class_sum_same_for_any_thread_count(simd_path, n_cols):
    rng = np.random.default_rng(n_cols)
    x = rng.normal(scale=4.0, size=(300001, n_cols))
    y = rng.integers(0, n_cols, 300001)
    one = lm.cross_entropy(x, y, n_threads=1)
    assert lm.cross_entropy(x, y, n_threads=2) == one
    assert lm.cross_entropy(x, y) == one


# ---- float64 rows whose max is 0: the log-sum is log1p(s) itself ----

@pytest.mark.parametrize("n_cols", range(2, 9))
def test_float64_log_sum_at_max_zero_within_two_ulp(simd_path, mpmath, n_cols):
    """logsumexp, the cross-entropy of the max class and -log_softmax at the
    max are all log1p(s) for these rows, where nothing dilutes the error of
    the kernel's log1p: within 2 ulp of mpmath on every path.  (Before its
    log1p carried the rounding of 1 + u and of the division, up to 3.4 ulp
    came out here: this fails then.)"""
    x, exact = _max0_rows(n_cols)
    ulp = np.spacing(exact)
    got = {
        "logsumexp": lm.logsumexp(x, axis=-1),
        "cross_entropy": lm.cross_entropy(x, np.zeros(MAX0_ROWS, np.int64), reduction="none"),
        "-log_softmax": -lm.log_softmax(x, axis=-1)[:, 0],
    }
    for name, value in got.items():
        err = np.abs(value - exact) / ulp
        assert err.max() <= 2.0, f"{name}: {err.max():.2f} ulp at row {np.argmax(err)}"
