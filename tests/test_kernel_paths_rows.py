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


# ===========================================================================
# Rows along a middle axis (was test_middle_axis.py)
# Rows along a middle axis (torch's (N, C, d1..) layout) and rows of 9..64 values.
#
# A middle axis of a C-ordered array is read a tile of neighbouring rows at a
# time: rows of up to 64 values by the across-rows kernel for such rows, which
# reads them in place; longer rows gathered into a contiguous buffer and run by
# the contiguous-row kernels.  Contiguous rows of 9..40 values on the AVX-512
# path, 9..20 on the others and for softmax, take the same across-rows kernel
# through a transposed copy.  Checked on every SIMD path, both dtypes, one and
# two threads, with special values: against scipy.special and torch (float64
# oracles), mpmath for the ulp bound, and bit for bit against the same rows
# laid out along the last axis where both layouts run the same kernel (rows
# within that limit, or > 64 values; longer medium rows are read in place
# along a middle axis but row-wise along the last, so they agree to the
# oracle's tolerance, not to the bit).
# ===========================================================================
FUNCS = {
    "logsumexp": (lm.logsumexp, sps.logsumexp),
    "softmax": (lm.softmax, sps.softmax),
    "log_softmax": (lm.log_softmax, sps.log_softmax),
}


def make_array(shape, axis, dtype, seed):
    """Random values with special rows along ``axis`` at spread positions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=shape)
    moved = np.moveaxis(x, axis, -1)          # a view: writes land in x
    flat = moved.reshape(-1, shape[axis])     # a copy unless contiguous
    n_rows = flat.shape[0]
    picks = rng.choice(n_rows, size=min(n_rows, 8), replace=False)
    kinds = [
        lambda r: r.__setitem__(0, np.nan),
        lambda r: r.__setitem__(-1, np.inf),
        lambda r: r.__setitem__(slice(None), -np.inf),
        lambda r: r.__setitem__(0, -np.inf),
        lambda r: r.__setitem__(slice(None), 7.0),             # ties at the max
        lambda r: r.__setitem__(1 % len(r), r[0] - 700.0),     # softmax near underflow
        lambda r: r.__setitem__(slice(None), np.linspace(-1e3, 1e3, len(r))),
        lambda r: r.__setitem__(1 % len(r), r[0] - 669.0),
    ]
    for pick, kind in zip(picks, kinds):
        row = flat[pick].copy()
        kind(row)
        flat[pick] = row
    moved[...] = flat.reshape(moved.shape)
    return x.astype(dtype)


def oracle(theirs, x, axis):
    """scipy's answer in float64 (its nan/inf rows warn; they are expected)."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return theirs(x.astype(np.float64), axis=axis)


def check_close_axis(got, want, dtype, scale):
    """TOL relative, plus TOL * scale absolute (log_softmax near 0 carries the
    error of the row's logsumexp, of the size of its largest |value|)."""
    want = want.astype(dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    err = np.abs(got[finite].astype(np.float64) - want[finite].astype(np.float64))
    bound = TOL[dtype] * (np.abs(want[finite]) + scale[finite])
    assert np.all(err <= bound), f"max error {err.max()}"


def row_scale(x, axis, keep_shape):
    """max |finite value| of each row, broadcast like the result."""
    a = np.where(np.isfinite(x), np.abs(x.astype(np.float64)), 0.0).max(axis=axis, keepdims=True)
    return np.broadcast_to(a, x.shape) if keep_shape else np.squeeze(a, axis)


def along_last(func, x, axis, **kw):
    """func over the last axis of a contiguous copy with ``axis`` moved there."""
    moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    res = func(moved, axis=-1, **kw)
    return res if res.ndim < x.ndim else np.moveaxis(res, -1, axis)


SHAPES = [
    ((4, 3, 37), 1),          # short rows, gathered
    ((3, 9, 70), 1),          # medium: the across-rows kernel, in place
    ((2, 16, 5, 7), 1),
    ((2, 21, 130), 1),        # medium, past softmax's last-axis limit of 20
    ((2, 40, 70), 1),         # the last-axis limit of the others
    ((3, 41, 9), 1),          # past it
    ((2, 64, 65), -2),
    ((3, 65, 19), 1),         # long: gathered tiles
    ((2, 300, 40), 1),
    ((10, 6, 3), 0),          # the first axis of three
    ((1, 12, 200), 1),        # one slab, several 64-row blocks
]


def contiguous_col_limit(name, path):
    """Contiguous rows of up to this many values take the across-rows kernel
    for medium rows (through a transposed copy) on this SIMD path."""
    return 40 if path == "avx512" and name != "softmax" else 20


def same_kernel_both_layouts(name, n, path):
    """Rows of n values run the same kernel along the last axis as along a
    middle one: the across-rows kernel (contiguous rows within
    contiguous_col_limit; a middle axis of up to 64, in place) or the
    contiguous-row kernels (gathered tiles of 65+)."""
    return n <= contiguous_col_limit(name, path) or n > 64


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=[f"{s}ax{a}" for s, a in SHAPES])
@pytest.mark.parametrize("name", list(FUNCS))
def test_middle_axis_matches_scipy(simd_path, name, shape, axis, dtype, n_threads):
    ours, theirs = FUNCS[name]
    x = make_array(shape, axis, dtype, seed=sum(shape) + axis)
    before = x.copy()
    got = ours(x, axis=axis, n_threads=n_threads)
    np.testing.assert_array_equal(x, before)                 # input untouched
    want = oracle(theirs, x, axis)
    assert got.dtype == dtype and got.shape == want.shape
    check_close_axis(got, want, dtype, row_scale(x, axis, name != "logsumexp"))
    # the same bits for any thread count
    np.testing.assert_array_equal(got, ours(x, axis=axis, n_threads=3 - n_threads))
    if same_kernel_both_layouts(name, shape[axis], simd_path):
        np.testing.assert_array_equal(got, along_last(ours, x, axis, n_threads=n_threads))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=[f"{s}ax{a}" for s, a in SHAPES])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_middle_axis_in_place(simd_path, name, shape, axis, dtype):
    """out=x: every row is read before its tile is written back."""
    ours, _ = FUNCS[name]
    x = make_array(shape, axis, dtype, seed=7 + sum(shape))
    want = ours(x, axis=axis)
    res = ours(x, axis=axis, out=x)
    assert res is x
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", [9, 10, 12, 16, 20, 21, 24, 33, 40, 41, 64, 65])
@pytest.mark.parametrize("name", list(FUNCS))
def test_medium_rows_match_scipy(simd_path, name, n_cols, dtype):
    """Contiguous rows on both sides of the across-rows kernel's limits (40
    along the last axis, softmax 20), with the special rows, 1000 rows (a
    tail block)."""
    ours, theirs = FUNCS[name]
    x = make_array((1000, n_cols), 1, dtype, seed=n_cols)
    got = ours(x, axis=-1)
    want = oracle(theirs, x, -1)
    check_close_axis(got, want, dtype, row_scale(x, -1, name != "logsumexp"))
    np.testing.assert_array_equal(got, ours(x, axis=-1, n_threads=1))
    # a single row gets the bits it gets among many
    for r in (0, 500, 999):
        np.testing.assert_array_equal(ours(x[r], axis=-1), got[r])


@pytest.mark.parametrize("n_cols,layout", [
    (9, "last"), (20, "last"), (21, "last"), (40, "last"),
    (9, "middle"), (20, "middle"), (21, "middle"), (64, "middle"),
])
def test_medium_logsumexp_at_max_zero_within_two_ulp(simd_path, mpmath, n_cols, layout):
    """Rows whose max is 0: logsumexp is log1p(s) itself, nothing dilutes the
    kernel's log error; within 2 ulp of mpmath wherever the medium-row kernel
    runs (contiguous rows within contiguous_col_limit, a middle axis of <=
    64).  (With a plain running sum instead of the compensated one, 15 of 24
    such cases - 4 widths x 2 layouts x 3 paths - failed, at up to 3 ulp.
    Longer contiguous rows are summed lane-wise by the row kernels: up to 2.4
    ulp, as the README says, and 3 in the debug build's avx2 / baseline
    code.)"""
    if layout == "last" and n_cols > contiguous_col_limit("logsumexp", simd_path):
        pytest.skip(f"{n_cols}-value contiguous rows run row-wise on {simd_path}")
    x, exact = _max0_rows(n_cols)
    if layout == "last":
        got = lm.logsumexp(x, axis=-1)
    else:
        got = lm.logsumexp(np.ascontiguousarray(x.T)[None], axis=1)[0]
    err = np.abs(got - exact) / np.spacing(exact)
    assert err.max() <= 2.0, f"{err.max():.2f} ulp at row {np.argmax(err)}"


def test_non_contiguous_middle_axis_still_right():
    """A strided view takes the row-wise path: same oracle."""
    x = make_array((3, 12, 40), 1, np.float64, seed=5)[:, :, ::3]
    for name, (ours, theirs) in FUNCS.items():
        check_close_axis(ours(x, axis=1), oracle(theirs, x, 1), np.float64,
                    row_scale(x, 1, name != "logsumexp"))


# ---- cross-entropy with the class axis in the middle ----

CE_SHAPES = [(4, 3, 37), (3, 10, 70), (2, 21, 5, 13), (2, 40, 9), (2, 41, 9), (2, 64, 9),
             (2, 65, 30), (2, 300, 20)]
CE_AXIS_OPTIONS = [{}, {"weight": True}, {"label_smoothing": 0.1},
              {"weight": True, "label_smoothing": 0.25}, {"ignore_index": 1}]


def ce_case(shape, dtype, seed, option):
    rng = np.random.default_rng(seed)
    x = (rng.normal(scale=4.0, size=shape)).astype(dtype)
    target = rng.integers(0, shape[1], size=(shape[0],) + shape[2:])
    target.flat[::9] = option.get("ignore_index", -100)      # some rows ignored
    weight = rng.uniform(0.1, 2.0, size=shape[1])
    return x, target, weight


def ce_kwargs(option, weight):
    kw = dict(option)
    if kw.get("weight"):
        kw["weight"] = weight
    return kw


def log_softmax_pick(x, target, weight, label_smoothing=0.0, ignore_index=-100):
    """torch's per-row loss along axis 1 (the oracle's, in float64)."""
    return np_cross_entropy_rows(x, target, 1, weight, ignore_index, label_smoothing)[0]


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("option", CE_AXIS_OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_cross_entropy_middle_axis_matches_scipy(simd_path, shape, option, dtype, n_threads):
    x, target, weight = ce_case(shape, dtype, seed=sum(shape), option=option)
    x.flat[11] = np.nan
    x.flat[23] = np.inf
    kw = ce_kwargs(option, weight)
    got = lm.cross_entropy(x, target, axis=1, reduction="none", n_threads=n_threads, **kw)
    want = log_softmax_pick(x, target, kw.get("weight"), kw.get("label_smoothing", 0.0),
                            kw.get("ignore_index", -100))
    assert got.shape == target.shape
    scale = np.abs(x[np.isfinite(x)]).max()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=TOL[dtype] * 4,
                               atol=TOL[dtype] * 4 * scale)
    np.testing.assert_array_equal(
        got, lm.cross_entropy(x, target, axis=1, reduction="none", n_threads=3 - n_threads,
                              **kw))
    # the bits of the same rows along the last axis, but for the plain loss of
    # 41..64 classes (read in place along a middle axis, row-wise along the last)
    plain = not (option.get("weight") or option.get("label_smoothing"))
    if not plain or same_kernel_both_layouts("cross_entropy", shape[1], simd_path):
        moved = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        np.testing.assert_array_equal(
            got, lm.cross_entropy(moved, target, reduction="none", n_threads=n_threads, **kw))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("option", CE_AXIS_OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_cross_entropy_with_grad_middle_axis(simd_path, shape, option, dtype):
    """The gradient along a middle class axis: torch autograd's (float64), and
    bit for bit the gradient of the same rows along the last axis (the tiles
    run the contiguous rows' kernels); the loss too where those rows are."""
    torch = pytest.importorskip("torch")
    x, target, weight = ce_case(shape, dtype, seed=3 + sum(shape), option=option)
    kw = ce_kwargs(option, weight)
    loss, grad = lm.cross_entropy_with_grad(x, target, axis=1, **kw)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    tkw = {k: torch.from_numpy(v) if k == "weight" else v for k, v in kw.items()}
    want = torch.nn.functional.cross_entropy(xt, torch.from_numpy(target), **tkw)
    want.backward()
    assert abs(loss - want.item()) <= TOL[dtype] * 8 * max(1.0, abs(want.item()))
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=0, atol=TOL[dtype] * 4)
    moved = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    loss_last, grad_last = lm.cross_entropy_with_grad(moved, target, **kw)
    np.testing.assert_array_equal(grad, np.moveaxis(grad_last, -1, 1))
    assert loss == loss_last


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", [9, 10, 16, 20, 21, 32, 40, 41])
def test_cross_entropy_medium_rows(simd_path, n_cols, dtype):
    """Contiguous rows of 9..40 classes (and 41, past the limit): the plain loss through the medium-row
    kernel (a transposed copy), special rows redone row-wise; against scipy's
    log_softmax, the same bits for one or two threads, and 'sum' the blocked
    pairwise sum of 'none' (the total skips the row array)."""
    x, target, _ = ce_case((1000, n_cols), dtype, seed=n_cols, option={})
    x[3, 2] = np.nan
    x[5, :] = -np.inf
    x[7, 1] = -np.inf
    x[9, 0] = np.inf
    x[11, :] = 4.0
    got = lm.cross_entropy(x, target, reduction="none")
    want = log_softmax_pick(x, target, None)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=TOL[dtype] * 4,
                               atol=TOL[dtype] * 4 * np.abs(x[np.isfinite(x)]).max())
    np.testing.assert_array_equal(got, lm.cross_entropy(x, target, reduction="none",
                                                        n_threads=1))
    if dtype is np.float64:   # (float32 'none' is rounded; the sums are not)
        clean = np.isfinite(x).all(axis=1)
        xs, ts = x[clean], target[clean]
        rows = lm.cross_entropy(xs, ts, reduction="none")
        blocks = [np.sum(rows[i:i + 256]) for i in range(0, len(rows), 256)]
        assert lm.cross_entropy(xs, ts, reduction="sum") == 0.0 + np.sum(np.array(blocks))


# ---- KL divergence and entropy over a middle axis (gathered tiles) ----

DIV_SHAPES = [((3, 5, 40), 1), ((2, 17, 9), 1), ((4, 100, 33), 1), ((2, 3, 4, 5), 2),
              ((30, 7), 0), ((300, 50), 0), ((2, 1, 8), 1)]


def prob_pair(shape, axis, dtype, seed):
    rng = np.random.default_rng(seed)
    p = rng.random(shape)
    q = rng.random(shape)
    if shape[axis] > 1:
        p.flat[3] = 0.0                           # a zero term (0 log 0 = 0)
    p /= p.sum(axis=axis, keepdims=True)
    q /= q.sum(axis=axis, keepdims=True)
    return p.astype(dtype), q.astype(dtype)


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,axis", DIV_SHAPES, ids=[f"{s}ax{a}" for s, a in DIV_SHAPES])
def test_divergences_middle_axis(simd_path, shape, axis, dtype, n_threads):
    """kl_divergence, entropy and the relative entropy over a middle axis (and
    scipy.stats.entropy's default axis 0): scipy's values, and the bits of the
    same rows along the last axis (the tiles run the contiguous rows' code)."""
    import scipy.stats as sst
    p, q = prob_pair(shape, axis, dtype, seed=sum(shape) + axis)
    tol = 1e-5 if dtype is np.float32 else 1e-13
    p64, q64 = p.astype(np.float64), q.astype(np.float64)
    moved = [np.ascontiguousarray(np.moveaxis(a, axis, -1)) for a in (p, q)]
    cases = [
        (lm.kl_divergence(p, q, axis=axis, n_threads=n_threads),
         sps.rel_entr(p64, q64).sum(axis=axis),
         lm.kl_divergence(*moved, axis=-1, n_threads=n_threads)),
        (lm.entropy(p, axis=axis, n_threads=n_threads), sst.entropy(p64, axis=axis),
         lm.entropy(moved[0], axis=-1, n_threads=n_threads)),
        (lm.entropy(p, q, axis=axis, n_threads=n_threads), sst.entropy(p64, q64, axis=axis),
         lm.entropy(*moved, axis=-1, n_threads=n_threads)),
    ]
    for got, want, along_last_axis in cases:
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 1e-2, equal_nan=True)
        np.testing.assert_array_equal(got, along_last_axis)
    if p.ndim == 2 and axis == 0:     # the default axis, through the fast path
        np.testing.assert_array_equal(lm.entropy(p), cases[1][0])


def test_kl_middle_axis_still_validates():
    """A negative probability along a middle axis raises, as along the last."""
    p, q = prob_pair((3, 20, 40), 1, np.float64, seed=1)
    p[1, 5, 7] = -0.1
    with pytest.raises(ValueError, match="p"):
        lm.kl_divergence(p, q, axis=1)


# ---- the layouts around the fast branches ----

@pytest.mark.parametrize("name", list(FUNCS))
def test_long_middle_rows_run_strided(name):
    """Rows longer than the tiles take (70000 values along axis 1) are not
    gathered (a buffer of the input's order of size): they run strided, in
    place - same oracle."""
    ours, theirs = FUNCS[name]
    x = make_array((1, 70000, 3), 1, np.float64, seed=4)
    got = ours(x, axis=1, n_threads=2)
    check_close_axis(got, oracle(theirs, x, 1), np.float64, row_scale(x, 1, name != "logsumexp"))


def test_long_middle_rows_cross_entropy_and_divergences():
    x, target, _ = ce_case((1, 70000, 3), np.float64, seed=6, option={})
    got = lm.cross_entropy(x, target, axis=1, reduction="none")
    np.testing.assert_allclose(got, log_softmax_pick(x, target, None), rtol=1e-13,
                               atol=1e-13 * np.abs(x).max())
    p, q = prob_pair((1, 70000, 3), 1, np.float64, seed=6)
    np.testing.assert_allclose(lm.kl_divergence(p, q, axis=1),
                               sps.rel_entr(p, q).sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", [((4, 21, 3000), 1), ((3, 9, 5000), 1), ((2, 300, 500), 1)])
def test_middle_axis_out_buffers_and_threads(name, shape, axis):
    """out= a strided buffer, and out=x with two threads (inputs large enough
    to be split between them): the fresh result's bits."""
    ours, _ = FUNCS[name]
    x = make_array(shape, axis, np.float64, seed=sum(shape))
    want = ours(x, axis=axis, n_threads=1)
    wide = np.full(shape[:-1] + (2 * shape[-1],), 7.0)
    res = ours(x, axis=axis, out=wide[..., ::2], n_threads=2)
    np.testing.assert_array_equal(res, want)
    np.testing.assert_array_equal(wide[..., 1::2], 7.0)      # nothing written between
    same = x.copy()
    assert ours(same, axis=axis, out=same, n_threads=2) is same
    np.testing.assert_array_equal(same, want)


@pytest.mark.parametrize("shape,axis", [((5, 1, 7), 1), ((5, 1), -1), ((1, 12), -1),
                                        ((1, 9, 1), 1), ((12,), 0)])
@pytest.mark.parametrize("name", list(FUNCS))
def test_one_value_and_one_row(name, shape, axis):
    """Axes of length 1 on either side of the reduced one, through the fast
    path and (out=) the general path: scipy's values, the same bits."""
    ours, theirs = FUNCS[name]
    x = make_array(shape, axis, np.float64, seed=len(shape) + shape[axis])
    got = ours(x, axis=axis)
    check_close_axis(got, oracle(theirs, x, axis), np.float64,
                row_scale(x, axis, name != "logsumexp"))
    buf = np.empty_like(got)
    np.testing.assert_array_equal(ours(x, axis=axis, out=buf), got)


@pytest.mark.parametrize("n_classes", [3, 12, 40, 100])
def test_cross_entropy_grad_out_middle_axis(n_classes):
    """grad_out= along a middle axis - a separate buffer, a strided one, the
    logits themselves: the fresh gradient's bits."""
    x, target, _ = ce_case((3, n_classes, 70), np.float64, seed=n_classes, option={})
    loss, grad = lm.cross_entropy_with_grad(x, target, axis=1)
    for buf in (np.empty_like(x), np.empty(x.shape[:-1] + (140,))[..., ::2]):
        loss2, grad2 = lm.cross_entropy_with_grad(x, target, axis=1, grad_out=buf)
        assert grad2 is buf and loss2 == loss
        np.testing.assert_array_equal(grad2, grad)
    own = x.copy()
    loss3, grad3 = lm.cross_entropy_with_grad(own, target, axis=1, grad_out=own)
    assert grad3 is own and loss3 == loss
    np.testing.assert_array_equal(own, grad)
