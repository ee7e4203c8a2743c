"""Every SIMD dispatch path and thread count gives the oracle's answers.

The kernels carry AVX-512, AVX2 and baseline variants chosen at run time;
LOSSMLE_SIMD lowers the choice, so each path available on this CPU runs here.
Oracles: scipy.special and NumPy written in the tests.
"""
import os
import re

import numpy as np
import pytest
import scipy.special as sps

import lossmle as lm
from lossmle._cli import config as _config

from conftest import SIMD_PATHS as PATHS, rtol_for
from oracles import np_cross_entropy


SHAPES = [(64, 3000), (5000, 4), (300, 2), (33, 17), (2, 5000)]
IDS = [f"{r}x{c}" for r, c in SHAPES]


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_every_path_matches_oracles(simd_path, shape, dtype, n_threads):
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 4).astype(dtype)
    x[0, : shape[1] // 2] = -np.inf          # a partly masked row takes the fast path too
    y = rng.integers(0, shape[1], shape[0])
    x64 = x.astype(np.float64)
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    kw = {"n_threads": n_threads}
    np.testing.assert_allclose(lm.logsumexp(x, axis=-1, **kw),
                               sps.logsumexp(x64, axis=-1), rtol=rtol)
    np.testing.assert_allclose(lm.softmax(x, axis=-1, **kw), sps.softmax(x64, axis=-1),
                               rtol=rtol * 8, atol=1e-300)
    np.testing.assert_allclose(lm.log_softmax(x, axis=-1, **kw),
                               sps.log_softmax(x64, axis=-1), rtol=rtol, atol=rtol)
    rows = np_cross_entropy(x, y, reduction="none")
    np.testing.assert_allclose(lm.cross_entropy(x, y, reduction="none", **kw), rows,
                               rtol=rtol, atol=rtol)
    loss, grad = lm.cross_entropy_with_grad(x, y, reduction="sum", **kw)
    onehot = np.zeros_like(x64)
    onehot[np.arange(shape[0]), y] = 1
    # softmax - onehot in the output dtype: entries near 0 carry its eps absolutely
    np.testing.assert_allclose(grad, sps.softmax(x64, axis=-1) - onehot, rtol=rtol * 8,
                               atol=np.finfo(dtype).eps)
    p = rng.random(shape).astype(dtype)
    q = rng.random(shape).astype(dtype)
    p[1, ::3] = 0                              # 0 * log(0 / q) = 0 stays on the fast path
    np.testing.assert_allclose(lm.kl_divergence(p, q, **kw),
                               sps.rel_entr(p.astype(np.float64), q.astype(np.float64)).sum(-1),
                               rtol=rtol * 10)


def test_paths_agree_with_each_other():
    """The same call on every available path: equal to a few ulps."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 1000)) * 10
    results = {}
    try:
        for path in PATHS:
            os.environ["LOSSMLE_SIMD"] = path
            if _config.reselect_simd() == path:
                results[path] = (lm.logsumexp(x, axis=-1), lm.softmax(x, axis=-1))
    finally:
        os.environ.pop("LOSSMLE_SIMD", None)
        _config.reselect_simd()
    assert "baseline" in results
    ref_lse, ref_sm = results["baseline"]
    for lse, sm in results.values():
        np.testing.assert_allclose(lse, ref_lse, rtol=4e-16 * 4)
        np.testing.assert_allclose(sm, ref_sm, rtol=1e-14)


def test_show_config_names_the_path(capsys):
    lm.show_config()
    out = capsys.readouterr().out
    assert _config.simd_path() in PATHS
    assert re.search(rf"^\s*simd: {_config.simd_path()}$", out, flags=re.M), out


def test_threadpoolctl_sees_and_limits_the_pool():
    """The kernels' OpenMP pool is the one threadpoolctl reports and limits."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    apis = {info["user_api"] for info in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
    before = lm.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert lm.get_num_threads() == 1
    assert lm.get_num_threads() == before


def test_set_num_threads_is_process_wide_and_validated():
    before = lm.get_num_threads()
    try:
        lm.set_num_threads(1)
        assert lm.get_num_threads() == 1
        x = np.random.default_rng(3).normal(size=(600, 500))   # above the threading threshold
        np.testing.assert_array_equal(lm.logsumexp(x, axis=-1),
                                      lm.logsumexp(x, axis=-1, n_threads=2))
        with pytest.raises(ValueError, match="n_threads"):
            lm.set_num_threads(0)
        with pytest.raises(TypeError, match="n_threads"):
            lm.set_num_threads(1.5)
    finally:
        lm.set_num_threads(None)
    assert lm.get_num_threads() == before


def _ulps_from_exact(mpmath, got, exact):
    """|got - exact| in units of the last place, in got's dtype, of the value
    nearest exact (the smallest subnormal at 0); exact: mpmath numbers."""
    diff = np.array([float(abs(mpmath.mpf(float(g)) - e)) for g, e in zip(got.ravel(), exact)])
    nearest = np.array([float(e) for e in exact]).astype(got.dtype)
    return diff / np.spacing(np.abs(nearest)).astype(np.float64)


# row lengths around the 16-value main loop and the masked tail of the long-row
# exp loops; 127 / 129 either side of the first row that is chunked and prefetched,
# 2061 many 1 KiB chunks and a ragged last one
LONG_ROWS = [9, 16, 17, 23, 31, 127, 129, 300, 2061]
# per dtype: the gap below which the other terms of a row leave its exp-sum
# exactly 1, the band whose exps are subnormal, the end of the range
EXP_SUM_ONE = {np.float64: (50.0, (700.0, 746.0), 760.0),
               np.float32: (30.0, (85.0, 104.0), 110.0)}
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])


def _exp_bound(simd_path, dtype):
    """Max ulp of the exp each path uses, against mpmath (the design
    comments in lossmle/_kernels/lm_simd.h give the measurements): AVX-512's table exps
    1.21 (double) and 1.002 (float); the polynomial exps of the other
    paths up to 1.22 (double; 1.12 seen for float in the subnormals, where
    the float product is rounded twice)."""
    if simd_path == "avx512":
        return 1.22 if dtype == np.float64 else 1.01
    return 1.25


@DTYPES
@pytest.mark.parametrize("n_cols", LONG_ROWS)
def test_long_row_exp_within_one_ulp_of_mpmath(simd_path, mpmath, n_cols, dtype):
    """Rows whose exp-sum rounds to 1 (one 0, the rest far below): softmax is
    exp(x) itself, and the class-0 cross-entropy gradient too, each within
    the path's exp bound (about 1 ulp) of mpmath's exp, down through the
    subnormals to where it rounds to 0.  Catches a less accurate exp, a wrong
    table entry or scale on any path, and a masked tail lane leaking into the
    row (the sum would not be 1)."""
    bound = _exp_bound(simd_path, dtype)
    gap, (sub_lo, sub_hi), end = EXP_SUM_ONE[dtype]
    rng = np.random.default_rng(n_cols)
    n_rows = max(2, 4000 // n_cols)
    x = -rng.uniform(gap, end, size=(n_rows, n_cols))
    x[::2] = -rng.uniform(sub_lo, sub_hi, size=x[::2].shape)   # subnormal results
    x[:, 0] = 0.0
    x[1, 1:] = -np.inf
    x = x.astype(dtype)
    with mpmath.workdps(40):
        # the exact softmax, e_k / (1 + S) with S < 2^-70 (double) / 2^-30
        # (float): within a tiny fraction of an ulp of e_k itself
        exps = [[mpmath.exp(mpmath.mpf(float(v))) for v in row] for row in x]
        want = [e / mpmath.fsum(row) for row in exps for e in row]
        got = lm.softmax(x, axis=-1, n_threads=1)
        assert _ulps_from_exact(mpmath, got, want).max() <= bound
        # the gradient's non-target entries are the same softmax values (its
        # target entry, -S / (1 + S), is not an exp: left to the CE tests)
        _, grad = lm.cross_entropy_with_grad(x, np.zeros(n_rows, dtype=np.intp),
                                             reduction="sum", n_threads=1)
        want_off = [w for j, w in zip(np.tile(np.arange(n_cols), n_rows), want) if j]
        assert _ulps_from_exact(mpmath, grad[:, 1:], want_off).max() <= bound
        inplace = x.copy()
        lm.softmax(inplace, axis=-1, out=inplace)
        np.testing.assert_array_equal(inplace, got)


@DTYPES
@pytest.mark.parametrize("n_cols", LONG_ROWS)
def test_long_row_softmax_of_two_terms_vs_mpmath(simd_path, mpmath, n_cols, dtype):
    """[0, d, -inf, ...] in any order, d in [-50, 0] (float32: [-20, 0]):
    softmax at d is e^d / (1 + e^d) within 2 ulp of mpmath (about 1 for the
    exp, 1/2 each for the sum and the division), logsumexp log1p(e^d) within
    2 ulp: the exp's accuracy where the sum is not 1, in every lane."""
    rng = np.random.default_rng(100 + n_cols)
    n_rows = 400
    x = np.full((n_rows, n_cols), -np.inf, dtype=dtype)
    cols = np.array([rng.choice(n_cols, 2, replace=False) for _ in range(n_rows)])
    d = -rng.uniform(0.0, 50.0 if dtype == np.float64 else 20.0, n_rows).astype(dtype)
    x[np.arange(n_rows), cols[:, 0]] = 0.0
    x[np.arange(n_rows), cols[:, 1]] = d
    with mpmath.workdps(40):
        e = [mpmath.exp(mpmath.mpf(float(v))) for v in d]
        sm = lm.softmax(x, axis=-1, n_threads=1)[np.arange(n_rows), cols[:, 1]]
        assert _ulps_from_exact(mpmath, sm, [v / (1 + v) for v in e]).max() <= 2.0
        lse = lm.logsumexp(x, axis=-1, n_threads=1)
        assert _ulps_from_exact(mpmath, lse, [mpmath.log1p(v) for v in e]).max() <= 2.0


@DTYPES
@pytest.mark.parametrize("n_cols", LONG_ROWS)
@pytest.mark.parametrize("sample_weight", [False, True], ids=["plain", "sample_weight"])
def test_long_row_weighted_smoothed_grad_vs_closed_form(simd_path, n_cols, dtype, sample_weight):
    """cross_entropy_with_grad with class weights and label smoothing on rows
    of every long-row length, against the closed form in float64 (torch's
    definition, reduction 'sum'): loss_i = -sum_k t_ik w_k log p_ik with
    t_ik = (1 - eps) [k == y_i] + eps / C; its gradient
    sum_k t_ik w_k p_ij - t_ij w_j.  Each lane of the gradient loop takes
    its own class weight here (a weight read from the wrong lane, or a tail
    lane, moves the answer by ~eps / C).  The tolerance is a few roundings
    of the larger term plus |log p| of them: p is exp((x - max) - log-sum),
    whose argument is rounded once in the logits' dtype."""
    rng = np.random.default_rng(7 * n_cols + (dtype == np.float32))
    n_rows, eps = 40, 0.3
    x = (rng.standard_normal((n_rows, n_cols)) * 3).astype(dtype)
    y = rng.integers(0, n_cols, n_rows)
    w = rng.uniform(0.1, 2.0, n_cols)
    sw = rng.uniform(0.5, 1.5, n_rows) if sample_weight else np.ones(n_rows)
    kwargs = {"sample_weight": sw} if sample_weight else {}
    loss, grad = lm.cross_entropy_with_grad(x, y, weight=w.astype(dtype), label_smoothing=eps,
                                            reduction="sum", n_threads=1, **kwargs)
    log_p = sps.log_softmax(x.astype(np.float64), axis=-1)
    t = np.full((n_rows, n_cols), eps / n_cols)
    t[np.arange(n_rows), y] += 1.0 - eps
    tw = t * w
    want_loss = -(sw * (tw * log_p).sum(axis=-1)).sum()
    p = sps.softmax(x.astype(np.float64), axis=-1)
    want_grad = sw[:, None] * (tw.sum(axis=-1, keepdims=True) * p - tw)
    tiny = np.finfo(dtype).eps
    np.testing.assert_allclose(float(loss), want_loss, rtol=50 * tiny)
    scale = sw[:, None] * (tw.sum(axis=-1, keepdims=True) * p + tw) * (8 - log_p)
    assert grad.dtype == dtype
    assert np.all(np.abs(grad.astype(np.float64) - want_grad) <= tiny * scale)


@pytest.mark.parametrize("n_cols", [9, 17, 33, 300, 2061])
def test_softmax_division_steps_agree_bitwise(simd_path, n_cols):
    """float64 softmax divides a row's exps by their sum with two FMA steps
    (Markstein) when every exp is >= 2^-900, by vdivpd otherwise.  Rows A and
    B differ in one entry only, whose exp (e^-600 in A: FMA steps; e^-700 in
    B: division) is absorbed by every partial sum, so both rows have the same
    exps and sum elsewhere: the two ways must give the same bits there - the
    correctly rounded quotient, as scipy's division."""
    rng = np.random.default_rng(n_cols)
    n_rows = 200
    v = rng.uniform(-30.0, 0.0, size=(n_rows, n_cols))
    v[:, 0] = 0.0
    k = rng.integers(1, n_cols, n_rows)
    a, b = v.copy(), v.copy()
    a[np.arange(n_rows), k] = -600.0
    b[np.arange(n_rows), k] = -700.0
    sa = lm.softmax(a, axis=-1, n_threads=1)
    sb = lm.softmax(b, axis=-1, n_threads=1)
    other = np.ones_like(v, dtype=bool)
    other[np.arange(n_rows), k] = False
    np.testing.assert_array_equal(sa[other], sb[other])
    # and the value itself, against the closed form in NumPy (its own exp and
    # sum: a few ulps apart)
    want = np.exp(a) / np.exp(a).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(sa[other], want[other], rtol=2e-14, atol=0)


def _nearest_float32_or_near_tie(got, e, s):
    """Which of ``got`` (float32) are not the float32 nearest the exact e / s
    (e, s float64, e / s taken exactly) and not within 2^-40 relative of a
    tie between two floats, where a rounding of the quotient may fall
    either way."""
    from fractions import Fraction
    want = (e.astype(np.longdouble) / s.astype(np.longdouble)).astype(np.float32)
    bad = []
    for idx in zip(*np.nonzero(got != want)):
        q = Fraction(float(e[idx])) / Fraction(float(s[idx[:-1] + (0,)]))
        g, w = Fraction(float(got[idx])), Fraction(float(want[idx]))
        if abs(abs(g - q) - abs(w - q)) > q * Fraction(1, 2 ** 40):
            bad.append((idx, float(got[idx]), float(want[idx])))
    return bad


@pytest.mark.parametrize("n_cols", [33, 300, 2061])
def test_float32_softmax_division_is_the_nearest_float(simd_path, n_cols):
    """float32 softmax divides its exps e by their (double) sum s with no
    division per value: e * y_hi + e * y_lo in float (y = 1 / s split in two
    floats, one FMA) - the nearest float to e / s but within ~2^-47 of a tie;
    a multiply by a float 1 / s would be up to 1.5 ulp off.  The rows hold
    x = -k 2^-24 (k = 0..64, max 0), whose exps are exactly 1 - k 2^-24 on
    every path (exp(d) = 1 + d + d^2/2 + ..., the square far below half an
    ulp), so the sum is known exactly and each result must be the float32
    nearest e / s (or, at a near-tie, its neighbour)."""
    rng = np.random.default_rng(n_cols)
    n_rows = 40
    k = rng.integers(0, 65, size=(n_rows, n_cols))
    k[:, 0] = 0                                     # the max, 0, in every row
    x = (-k * 2.0 ** -24).astype(np.float32)
    assert np.array_equal(x.astype(np.float64), -k * 2.0 ** -24)   # exact
    e = 1.0 - k * 2.0 ** -24                        # exact in float32 and float64
    s = e.sum(axis=-1, keepdims=True)               # exact in float64 (< 2^-53 ulp)
    got = lm.softmax(x, axis=-1, n_threads=1)
    assert got.dtype == np.float32
    assert _nearest_float32_or_near_tie(got, e, np.broadcast_to(s, e.shape)) == []


@pytest.mark.parametrize("n_max", [1, 2, 3, 5, 7])
def test_float32_softmax_subnormal_quotients(simd_path, n_max):
    """A float32 row whose quotients reach the subnormals divides with the
    double steps (one rounding into the subnormals): the float steps' exact
    scaling back by 2^-100 would round a second time there, 1 ulp off in
    ~1% of such values (found in review).  Row: n_max entries at the max 0,
    the rest of one row's values far below (exps of 0 in float32: the sum
    is exactly n_max) but one value per row whose exp is subnormal or just
    above the normal range; its exp e is read off the one-max row (a
    division by 1, exact), and e / n_max must be the float32 nearest."""
    rng = np.random.default_rng(n_max)
    n_rows, n_cols = 4000, 40
    lows = rng.uniform(-103.0, -85.0, n_rows).astype(np.float32)
    base = np.full((n_rows, n_cols), -200.0, np.float32)
    base[:, 0] = 0.0
    base[:, -1] = lows
    e = lm.softmax(base, axis=-1, n_threads=1)[:, -1].astype(np.float64)  # exps, /1
    assert np.count_nonzero((e > 0) & (e < np.finfo(np.float32).tiny)) > 2000
    x = base.copy()
    x[:, :n_max] = 0.0
    got = lm.softmax(x, axis=-1, n_threads=1)[:, -1]
    want = (e.astype(np.longdouble) / n_max).astype(np.float32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("value", ["AVX2", "avx1024", " avx2"])
def test_unknown_simd_name_warns_and_keeps_the_best_path(monkeypatch, value):
    """A LOSSMLE_SIMD the selection does not know (a typo, upper case, a
    space) was silently ignored: a test run meant for avx2 ran the best
    path.  It now warns, naming the value and the path in use."""
    from lossmle._cli import config as _config
    try:
        monkeypatch.delenv("LOSSMLE_SIMD", raising=False)
        best = _config.reselect_simd()
        monkeypatch.setenv("LOSSMLE_SIMD", value)
        with pytest.warns(RuntimeWarning, match=f"LOSSMLE_SIMD={value!r}.*using {best}"):
            assert _config.reselect_simd() == best
    finally:
        monkeypatch.undo()   # the caller's LOSSMLE_SIMD, if any, and its path
        _config.reselect_simd()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_low", [False, True], ids=["plain", "near-subnormal"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_in_place_gives_the_out_of_place_bits(simd_path, name, dtype, with_low):
    """out=x runs the exps out != x runs: the avx2/baseline softmax wrote its
    in-place rows with the subnormal-exact exp at once and differed by an ulp
    from the out-of-place call on rows of over ~20 values."""
    rng = np.random.default_rng(31)
    x = rng.normal(size=(20, 500)).astype(dtype)
    if with_low:
        x[::3, 7] = -800.0 if dtype == np.float64 else -100.0   # below the fast exp's range
    fn = getattr(lm, name)
    expected = fn(x, axis=-1, n_threads=1)
    buf = x.copy()
    got = fn(buf, axis=-1, out=buf, n_threads=1)
    assert got is buf
    np.testing.assert_array_equal(got, expected)
    # and against SciPy, so that equal bits are not equally wrong
    want = getattr(sps, name)(x.astype(np.float64), axis=-1).astype(dtype)
    np.testing.assert_allclose(got, want, rtol=rtol_for(dtype), atol=0)
