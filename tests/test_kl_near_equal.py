"""KL of near-equal distributions keeps its digits (scipy gh-20710), on every path.

p log(p/q) with p/q close to 1: log of the rounded ratio is only good to an
ulp of the ratio, i.e. to 1e-16 absolute, which for |p/q - 1| ~ 1e-14 is
1e-2 relative.  The oracle is mpmath on the exact float inputs.
"""
import numpy as np
import pytest

import lossmle as lm
from oracles import mp_kl_rows

mpmath = pytest.importorskip("mpmath")


def near_pairs(n_rows, n, dtype, seed, rel=1e-12):
    """Rows of probabilities p and q = p (1 + rel * noise), as ``dtype``; every
    q differs from its p (at least by an ulp)."""
    rng = np.random.default_rng(seed)
    p = rng.random((n_rows, n)) + 0.05
    p /= p.sum(axis=1, keepdims=True)
    p = p.astype(dtype)
    q = (p.astype(np.float64) * (1 + rel * rng.normal(size=p.shape))).astype(dtype)
    q = np.where(q == p, np.nextafter(p, dtype(1)), q)
    return p, q


def ulps(got, want, dtype):
    """|got - want| in ulps of the result (of ``want`` as ``dtype``)."""
    want = np.asarray(want, dtype=np.float64)
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    return np.abs(np.asarray(got, dtype=np.float64) - want) / spacing


def test_issue_example_single_pair():
    # the issue's case: scipy (since gh-20710) and mpmath give -9.325873406851269e-15;
    # log(p / q) gave -9.34410922520972e-15
    p, q = [0.9456657713430001], [0.9456657713430094]
    got = lm.kl_divergence(p, q)
    want = mp_kl_rows(np.array([p]), np.array([q]))[0]
    assert want == pytest.approx(-9.325873406851269e-15, rel=1e-15, abs=0)
    assert ulps(got, want, np.float64) <= 2


# (n_rows, n): the small-input fast path, the flat short-row kernel, a long
# row (lm_kl), a block of short rows over threads
SHAPES = [(1, 5), (3, 7), (3000, 5), (4, 2000), (700, 64)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_contiguous_paths_within_ulps(simd_path, shape, dtype):
    p, q = near_pairs(*shape, dtype, seed=sum(shape),
                      rel=1e-12 if dtype == np.float64 else 1e-6)
    got = lm.kl_divergence(p, q, n_threads=2)
    want = mp_kl_rows(p, q)
    # terms of both signs: the sum's own rounding is measured against the
    # largest term, so allow that much beside the few ulps of each term
    terms = np.abs(p.astype(np.float64) * np.log(p.astype(np.float64) / q)).max(axis=1)
    tol = 4 * np.spacing(np.abs(want).astype(dtype)).astype(np.float64) \
        + 2 * shape[1] * np.finfo(np.float64).eps * terms
    assert np.all(np.abs(got.astype(np.float64) - want) <= tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_one_term_rows_within_ulps_every_layout(simd_path, dtype):
    """Rows of one value: the result is one term, so a few ulps exactly."""
    p, q = near_pairs(400, 1, dtype, seed=3, rel=1e-13 if dtype == np.float64 else 1e-6)
    p = p * dtype(0.9)
    q = (q * dtype(0.9)).astype(dtype)
    want = mp_kl_rows(p, q)
    layouts = {
        "rows": (p, q, -1),
        "column": (p.T.copy(), q.T.copy(), 0),                  # reduced axis 0
        "middle": (p.reshape(20, 1, 20), q.reshape(20, 1, 20), 1),  # tiles
        "strided": (np.repeat(p, 2, axis=1)[:, ::2], np.repeat(q, 2, axis=1)[:, ::2], -1),
    }
    for name, (pp, qq, axis) in layouts.items():
        got = np.asarray(lm.kl_divergence(pp, qq, axis=axis)).reshape(-1)
        assert ulps(got, want, dtype).max() <= 3, name


def test_scalar_fallback_row_within_ulps():
    # an entry whose ratio is subnormal sends the whole row to the scalar code
    p, q = near_pairs(5, 6, np.float64, seed=11)
    p[:, 0], q[:, 0] = 1e-300, 1e10
    want = mp_kl_rows(p, q)
    got = lm.kl_divergence(p, q)
    terms = np.abs(p * np.log(p / q)).max(axis=1)
    assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want)) + 12 * 2.3e-16 * terms)
    strided = lm.kl_divergence(np.repeat(p, 2, axis=1)[:, ::2], np.repeat(q, 2, axis=1)[:, ::2])
    assert np.all(np.abs(strided - want) <= 4 * np.spacing(np.abs(want)) + 12 * 2.3e-16 * terms)


@pytest.mark.parametrize("axis", [-1, 0])
def test_entropy_relative_within_ulps(axis):
    """entropy(pk, qk) normalises first (as scipy): the oracle takes the same
    normalised floats (5 values: numpy's sum is the plain loop)."""
    p, q = near_pairs(50, 5, np.float64, seed=5)
    p = p * 3.0
    q = q * 3.0
    pn = p / p.sum(axis=1, keepdims=True)
    qn = q / q.sum(axis=1, keepdims=True)
    want = mp_kl_rows(pn, qn)
    got = lm.entropy(p, q, axis=1) if axis == -1 else lm.entropy(p.T.copy(), q.T.copy(), axis=0)
    terms = np.abs(pn * np.log(pn / qn)).max(axis=1)
    assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want)) + 10 * 2.3e-16 * terms)


def test_far_ratios_unchanged():
    """Ratios away from 1 (and across the 1/2 and 2 switch points) still match scipy."""
    sps = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(2)
    p = rng.random((200, 9))
    q = p * np.array([0.4999, 0.5, 0.5001, 0.9, 1.0, 1.1, 1.9999, 2.0, 2.0001])
    for pp, qq in [(p, q), (q, p), (p[:3], q[:3])]:
        np.testing.assert_allclose(lm.kl_divergence(pp, qq),
                                   sps.rel_entr(pp, qq).sum(-1), rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(lm.kl_divergence(pp.T.copy(), qq.T.copy(), axis=0),
                                   sps.rel_entr(pp, qq).sum(-1), rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------
# The logits divergences: kl_divergence_from_logits (and _with_grad),
# js_divergence_from_logits.  With b = a + eps * noise the one-read formula
# (a difference of O(1) sums) lost every digit of a KL of ~eps^2; the oracle
# is mpmath on the exact float logits (and the exact temperature).
# ---------------------------------------------------------------------------
def mp_logit_rows(p, q, temperature=1.0, kind="kl"):
    """KL(P || Q) or JS(P, Q) of P = softmax(p / T), Q = softmax(q / T) over the
    last axis, in 60-digit arithmetic on the exact inputs."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    out = []
    with mpmath.workdps(60):
        t = mpmath.mpf(temperature)
        for pr, qr in zip(p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])):
            a = [mpmath.mpf(x) / t for x in pr]
            b = [mpmath.mpf(x) / t for x in qr]
            la = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in a))
            lb = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in b))
            P = [mpmath.exp(x - la) for x in a]
            Q = [mpmath.exp(x - lb) for x in b]
            if kind == "kl":
                v = mpmath.fsum(pk * ((x - la) - (y - lb)) for pk, x, y in zip(P, a, b) if pk)
            else:
                v = mpmath.fsum((pk * mpmath.log(2 * pk / (pk + qk)) if pk else 0)
                                + (qk * mpmath.log(2 * qk / (pk + qk)) if qk else 0)
                                for pk, qk in zip(P, Q)) / 2
            out.append(float(v))
    return np.array(out).reshape(p.shape[:-1])


def mp_kl_logit_grads(p, q, temperature=1.0):
    """d KL / d q = (Q - P) / T and d KL / d p = P (log P - log Q - KL) / T, per
    row (the gradient of the rows' sum), in 60 digits."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    gq = np.empty_like(p)
    gp = np.empty_like(p)
    with mpmath.workdps(60):
        t = mpmath.mpf(temperature)
        for r, (pr, qr) in enumerate(zip(p, q)):
            a = [mpmath.mpf(x) / t for x in pr]
            b = [mpmath.mpf(x) / t for x in qr]
            la = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in a))
            lb = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in b))
            lp = [x - la for x in a]
            lq = [y - lb for y in b]
            kl = mpmath.fsum(mpmath.exp(x) * (x - y) for x, y in zip(lp, lq))
            for j, (x, y) in enumerate(zip(lp, lq)):
                gq[r, j] = float((mpmath.exp(y) - mpmath.exp(x)) / t)
                gp[r, j] = float(mpmath.exp(x) * (x - y - kl) / t)
    return gq, gp


def near_logits(n_rows, n, dtype, eps, seed, n_equal=2):
    """Logit rows a (spread ~2) and b = a + eps * noise, as ``dtype``; the first
    ``n_equal`` rows have b == a exactly."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_rows, n)) * 2.0
    b = a + eps * rng.normal(size=a.shape)
    a = a.astype(dtype)
    b = b.astype(dtype)
    b[:n_equal] = a[:n_equal]
    return a, b


def assert_rows_within_ulps(got, want, dtype, n, what, ulps_allowed=4):
    """A few ulps of the mpmath value (as ``dtype``) plus the double sum's own
    rounding over n non-negative terms; mpmath's 0 must come out exactly 0."""
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    want = np.asarray(want, dtype=np.float64).reshape(-1)
    tol = ulps_allowed * np.spacing(np.abs(want).astype(dtype)).astype(np.float64) \
        + n * np.finfo(np.float64).eps * np.abs(want)
    bad = np.abs(got - want) > np.where(want == 0, 0.0, tol)
    assert not bad.any(), (what, got[bad][:4], want[bad][:4])


def logit_layouts(a, b):
    """(name, p, q, axis, rows_back): the same rows on each path.  rows_back maps
    the result to the rows' order."""
    n_rows, n = a.shape
    mid = lambda x: x.reshape(4, n_rows // 4, n).transpose(0, 2, 1).copy()  # (4, C, R/4)
    pad = lambda x: np.concatenate([x, np.full((n_rows, 1), -np.inf, x.dtype)], axis=1)
    return [
        ("rows", a, b, -1, lambda r: r),                      # contiguous: SIMD sums
        ("column", a.T.copy(), b.T.copy(), 0, lambda r: r),   # class axis 0
        ("middle", mid(a), mid(b), 1, lambda r: r.reshape(-1)),
        ("strided", np.repeat(a, 2, axis=1)[:, ::2], np.repeat(b, 2, axis=1)[:, ::2], -1,
         lambda r: r),                                        # the scalar row code
        ("neg_inf", pad(a), pad(b), -1, lambda r: r),         # P = Q = 0 class (JS: scalar)
    ]


LOGIT_EPS = [1e-4, 1e-6, 1e-8, 1e-10]


@pytest.mark.parametrize("temperature", [1.0, 3.0], ids=["T1", "T3"])
@pytest.mark.parametrize("eps", LOGIT_EPS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_logits_kl_js_near_equal_every_layout(dtype, eps, temperature):
    a, b = near_logits(24, 5, dtype, eps, seed=int(-np.log10(eps)))
    want_kl = mp_logit_rows(a, b, temperature, "kl")
    want_js = mp_logit_rows(a, b, temperature, "js")
    for name, pp, qq, axis, back in logit_layouts(a, b):
        kw = dict(axis=axis, temperature=temperature, reduction="none")
        kl = back(np.asarray(lm.kl_divergence_from_logits(pp, qq, **kw)))
        assert kl.dtype == dtype
        assert_rows_within_ulps(kl, want_kl, dtype, 5, ("kl", name))
        kl_g, _ = lm.kl_divergence_from_logits_with_grad(pp, qq, **kw)
        assert_rows_within_ulps(back(np.asarray(kl_g)), want_kl, dtype, 5, ("kl_grad", name))
        js = back(np.asarray(lm.js_divergence_from_logits(pp, qq, **kw)))
        assert_rows_within_ulps(js, want_js, dtype, 5, ("js", name))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_logits_near_equal_every_simd_variant(simd_path, dtype):
    """Contiguous rows on each SIMD variant: short rows and rows of several
    blocks (whose maxima move between blocks)."""
    for shape in [(6, 7), (3, 1500)]:
        a, b = near_logits(*shape, dtype, 1e-8, seed=shape[1])
        for kind, f in [("kl", lm.kl_divergence_from_logits),
                        ("js", lm.js_divergence_from_logits)]:
            got = f(a, b, reduction="none")
            assert_rows_within_ulps(got, mp_logit_rows(a, b, 1.0, kind), dtype, shape[1],
                                    (kind, shape))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_logits_near_equal_threads(dtype):
    """Enough rows to go parallel: 2 threads give the 1-thread rows bit for bit,
    and sampled rows match mpmath."""
    a, b = near_logits(27000, 5, dtype, 1e-7, seed=7, n_equal=50)
    sample = np.r_[0:60, 60:27000:450]
    for kind, f in [("kl", lm.kl_divergence_from_logits),
                    ("js", lm.js_divergence_from_logits)]:
        one = np.asarray(f(a, b, reduction="none", n_threads=1))
        two = np.asarray(f(a, b, reduction="none", n_threads=2))
        np.testing.assert_array_equal(one, two)
        assert_rows_within_ulps(two[sample], mp_logit_rows(a[sample], b[sample], 1.0, kind),
                                dtype, 5, kind)


def test_logits_near_equal_shifted_rows():
    """b = a + 3 + eps * noise: the same distributions as without the shift; the
    shift must not cost digits (the exact p - q carries it)."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(20, 6))
    b = a + 3.0 + 1e-9 * rng.normal(size=a.shape)
    for temperature in (1.0, 0.7):
        for kind, f in [("kl", lm.kl_divergence_from_logits),
                        ("js", lm.js_divergence_from_logits)]:
            want = mp_logit_rows(a, b, temperature, kind)
            for pp, qq in [(a, b), (np.repeat(a, 2, axis=1)[:, ::2],
                                    np.repeat(b, 2, axis=1)[:, ::2])]:
                got = f(pp, qq, temperature=temperature, reduction="none")
                assert_rows_within_ulps(got, want, np.float64, 6, (kind, temperature))


@pytest.mark.parametrize("eps", LOGIT_EPS)
@pytest.mark.parametrize("layout", ["rows", "strided"])
def test_logits_kl_grad_near_equal(eps, layout):
    """Both gradients against mpmath, within a few ulps of |Q - P| (d/dq) and of
    |P (log P - log Q - KL)| (d/dp), which are ~eps here."""
    a, b = near_logits(12, 5, np.float64, eps, seed=3)
    want_q, want_p = mp_kl_logit_grads(a, b, 2.0)
    if layout == "strided":
        a, b = np.repeat(a, 2, axis=1)[:, ::2], np.repeat(b, 2, axis=1)[:, ::2]
    _, gq, gp = lm.kl_divergence_from_logits_with_grad(a, b, temperature=2.0, reduction="sum",
                                                       p_grad=True)
    for got, want in [(gq, want_q), (gp, want_p)]:
        scale = np.abs(want).max(axis=1, keepdims=True)
        assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want)) + 4e-16 * scale)
        assert np.all(got[:2] == 0)      # the rows with b == a


# a row of the long-row kernel (lm_kl), a block of short rows (lm_kl_rows)
FAR_SHAPES = [(3, 1500), (300, 6)]


@pytest.mark.parametrize("shape", FAR_SHAPES, ids=[f"{r}x{c}" for r, c in FAR_SHAPES])
def test_float32_rows_far_from_equal_within_float_ulps(simd_path, shape):
    """float32 rows take the log series cut at s^5 (relative error < 5e-11
    where p/q is far from 1, exact near 1): their float32 results stay within
    a float ulp or two of mpmath, near-equal rows with a few far ratios too."""
    rng = np.random.default_rng(sum(shape))
    n_rows, n = shape
    p = rng.dirichlet(np.full(n, 0.5), size=n_rows) + 1e-4
    q = rng.dirichlet(np.full(n, 0.5), size=n_rows) + 1e-4
    # odd rows: q = p to 1e-5 but for two entries at ratios near the series'
    # worst (p/q ~ sqrt(2) and 1 / sqrt(2))
    q[1::2] = p[1::2] * (1 + 1e-5 * rng.normal(size=q[1::2].shape))
    q[1::2, 0] *= 1.41
    q[1::2, 1] /= 1.41
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    q = (q / q.sum(axis=1, keepdims=True)).astype(np.float32)
    want = mp_kl_rows(p, q)
    got = lm.kl_divergence(p, q, n_threads=2)
    assert got.dtype == np.float32
    assert ulps(got, want, np.float32).max() <= 2


# Rows refined only because their logits are large (a common offset, a small
# temperature) while P and Q are far apart: SG then grows like exp(KL), and the
# near-p = q form SG - h(SG - S1) cancelled to 0 (KL 49.3 came out 0.0, its
# gradient 2.6e21; JS 0.216 came out 1.25e86).
FAR_REFINED = [
    ([2e4, 2e4], [2e4, 2e4 + 100], 1.0),
    ([200.0, 200.0], [200.0, 201.0], 0.01),
    ([0.0, 0.0], [0.0, 400.0], 1.0),
    ([0.0, 0.0, 1.0], [0.0, 300.0, -80.0], 1.0),
    ([3e5, 3e5 + 1, 3e5 - 2], [3e5 + 5, 3e5, 3e5], 1.0),
]


@pytest.mark.parametrize("p, q, temperature", FAR_REFINED)
def test_logits_far_apart_rows_with_large_logits(p, q, temperature):
    p, q = np.array([p, p]), np.array([q, q])
    p[1], q[1] = p[1] - p[1].max(), q[1] - q[1].max()      # the same rows, centred
    want_kl = mp_logit_rows(p, q, temperature, "kl")
    want_js = mp_logit_rows(p, q, temperature, "js")
    kl = lm.kl_divergence_from_logits(p, q, temperature=temperature, reduction="none")
    js = lm.js_divergence_from_logits(p, q, temperature=temperature, reduction="none")
    # the one-read value's own error grows with |logits| / temperature (~eps * 1e7
    # at 3e5): a KL / JS of O(0.1-100) keeps ~1e-9 relative, never 0 or 1e86
    np.testing.assert_allclose(kl, want_kl, rtol=1e-9, atol=0)
    np.testing.assert_allclose(js, want_js, rtol=1e-9, atol=0)
    loss, grad_q = lm.kl_divergence_from_logits_with_grad(
        p, q, temperature=temperature, reduction="none")
    np.testing.assert_allclose(loss, want_kl, rtol=1e-9, atol=0)
    P = np.exp(p / temperature - np.log(np.exp(p / temperature - (p / temperature).max(-1, keepdims=True)).sum(-1, keepdims=True)) - (p / temperature).max(-1, keepdims=True))
    Q = np.exp(q / temperature - np.log(np.exp(q / temperature - (q / temperature).max(-1, keepdims=True)).sum(-1, keepdims=True)) - (q / temperature).max(-1, keepdims=True))
    np.testing.assert_allclose(grad_q, (Q - P) / temperature, rtol=1e-9, atol=1e-12 / temperature)
