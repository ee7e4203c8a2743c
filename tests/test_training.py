"""Training/evaluation functions (divergences from logits, BCE, sample weights, masks,
backward, evaluate_logits) against independent oracles.

Oracles: torch autograd (skipped cleanly when torch is absent), central finite
differences (always), scipy (softmax, log_softmax, logsumexp, entropy,
jensenshannon) and explicit NumPy references written in this file.  Nothing
here uses lossmle to produce an expected value.
"""
import numpy as np
import pytest
import scipy.special as sps
import scipy.stats
from scipy.spatial.distance import jensenshannon

import lossmle as lm
from conftest import quiet, rtol_for
from oracles import central_fd as fd_grad, np_bce_with_logits as ref_bce
from oracles import np_evaluate_logits as ref_eval, np_kl_from_logits_rows as ref_kl_rows
from oracles import np_masked_cross_entropy_rows as ref_ce_rows, reduce_kl as reduce_ref

DTYPES = {"f64": np.float64, "f32": np.float32}
C = 5
LAYOUTS = {
    # id: (shape, class axis)
    "1d": ((C,), -1),
    "2d": ((6, C), -1),
    "2d-axis0": ((C, 4), 0),
    "3d-axis1": ((3, C, 4), 1),
    "3d-axis-1": ((3, 4, C), -1),
}


def tol(dtype, scale=1.0):
    r = rtol_for(dtype)
    return dict(rtol=r * 10, atol=r * 10 * scale)


def pos_shape(shape, axis):
    ax = axis % len(shape)
    return shape[:ax] + shape[ax + 1:]


def to_torch(torch, a, grad=False):
    t = torch.tensor(np.asarray(a, dtype=np.float64))
    return t.requires_grad_(grad)


def torch_dim(shape, axis):
    return axis % len(shape)


# ---------------------------------------------------------------------------
# KL / JS / entropy from logits
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUTS.keys())
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean", "mean"])
@pytest.mark.parametrize("T", [1.0, 2.5])
def test_kl_from_logits_value(rng, dtype, layout, reduction, T):
    shape, axis = LAYOUTS[layout]
    p = (3 * rng.standard_normal(shape)).astype(dtype)
    q = (3 * rng.standard_normal(shape)).astype(dtype)
    got = lm.kl_divergence_from_logits(p, q, axis, temperature=T, reduction=reduction)
    expected = reduce_ref(ref_kl_rows(p, q, axis, T), reduction, C)
    assert np.asarray(got).dtype == dtype
    np.testing.assert_allclose(got, expected, **tol(dtype, 3))


@pytest.mark.parametrize("reduction", ["sum", "batchmean", "mean", "none"])
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kl_from_logits_vs_torch(torch, rng, reduction, T):
    F = torch.nn.functional
    p = 2 * rng.standard_normal((7, C))
    q = 2 * rng.standard_normal((7, C))
    # quiet: torch warns that its 'mean' will change (lossmle keeps today's)
    expected = quiet(F.kl_div, F.log_softmax(to_torch(torch, q) / T, -1),
                     F.log_softmax(to_torch(torch, p) / T, -1),
                     reduction=reduction, log_target=True)
    if reduction == "none":
        expected = expected.sum(-1)
    got = lm.kl_divergence_from_logits(p, q, temperature=T, reduction=reduction)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-13)


def test_kl_batchmean_is_per_position_for_3d(rng):
    # (B, T, V): 'batchmean' divides by B*T (torch's divides by B only)
    p = rng.standard_normal((2, 3, C))
    q = rng.standard_normal((2, 3, C))
    got = lm.kl_divergence_from_logits(p, q, reduction="batchmean")
    np.testing.assert_allclose(got, ref_kl_rows(p, q, -1).sum() / 6, rtol=1e-13)


def test_kl_seed_coin_and_identity():
    # the seed's coin: D(P || Q) = 0.0588915178..., D(Q || P) = 0.0566330123...
    p, q = np.log([1 / 2, 1 / 2]), np.log([1 / 3, 2 / 3])
    closed_pq = 0.5 * np.log(0.5 / (1 / 3)) + 0.5 * np.log(0.5 / (2 / 3))
    closed_qp = (1 / 3) * np.log((1 / 3) / 0.5) + (2 / 3) * np.log((2 / 3) / 0.5)
    assert lm.kl_divergence_from_logits(p, q) == pytest.approx(closed_pq, rel=1e-14)
    assert lm.kl_divergence_from_logits(q, p) == pytest.approx(closed_qp, rel=1e-14)
    x = np.array([3.0, -1.0, 1e3, 2.0])
    assert abs(lm.kl_divergence_from_logits(x, x + 7.0)) < 1e-12  # shift-invariant


def test_kl_large_logits_do_not_overflow():
    # KL is shift-invariant per input: the oracle gets the shifted-back logits
    p = np.array([1000.0, 999.0, 0.0])
    q = np.array([-500.0, -501.0, -1000.0])
    expected = ref_kl_rows(p - 1000.0, q + 500.0, -1)
    np.testing.assert_allclose(lm.kl_divergence_from_logits(p, q), expected, atol=1e-12)


def test_kl_infinities_and_nan():
    ninf = -np.inf
    # p = -inf: class of probability 0, contributes 0 (0 log 0 = 0)
    p = np.array([0.0, 1.0, ninf])
    q = np.array([0.5, 0.0, 3.0])
    pp = np.array([np.exp(0.0), np.exp(1.0), 0.0]); pp /= pp.sum()
    qq = np.exp(q) / np.exp(q).sum()
    expected = np.sum(pp[:2] * np.log(pp[:2] / qq[:2]))
    assert lm.kl_divergence_from_logits(p, q) == pytest.approx(expected, rel=1e-13)
    # q = -inf where P > 0: +inf
    assert lm.kl_divergence_from_logits([0.0, 1.0], [0.0, ninf]) == np.inf
    # both -inf at the same class: that class takes no part
    assert lm.kl_divergence_from_logits([0.0, ninf], [1.0, ninf]) == pytest.approx(0.0, abs=0)
    for bad_p, bad_q in [([np.nan, 0.0], [0.0, 0.0]), ([0.0, np.inf], [0.0, 0.0]),
                         ([ninf, ninf], [0.0, 0.0]), ([0.0, 0.0], [ninf, ninf])]:
        assert np.isnan(lm.kl_divergence_from_logits(bad_p, bad_q))


@pytest.mark.parametrize("layout", ["2d", "3d-axis1", "2d-axis0"])
@pytest.mark.parametrize("reduction", ["sum", "batchmean", "mean", "none"])
@pytest.mark.parametrize("cap", [None, 2.0])
def test_kl_grad_vs_finite_differences(rng, layout, reduction, cap):
    shape, axis = LAYOUTS[layout]
    p = 2 * rng.standard_normal(shape)
    q = 2 * rng.standard_normal(shape)
    T = 1.7

    def ref_total(pp, qq):
        if cap is not None:
            pp, qq = cap * np.tanh(pp / cap), cap * np.tanh(qq / cap)
        return np.sum(reduce_ref(ref_kl_rows(pp, qq, axis, T), reduction, C))

    loss, gq, gp = lm.kl_divergence_from_logits_with_grad(
        p, q, axis, temperature=T, logit_softcap=cap, reduction=reduction, p_grad=True)
    np.testing.assert_allclose(np.sum(loss), ref_total(p, q), rtol=1e-12)
    np.testing.assert_allclose(gq, fd_grad(lambda z: ref_total(p, z), q), atol=1e-8)
    np.testing.assert_allclose(gp, fd_grad(lambda z: ref_total(z, q), p), atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("layout", ["2d", "3d-axis1", "3d-axis-1"])
def test_kl_grad_vs_torch(torch, rng, dtype, layout):
    F = torch.nn.functional
    shape, axis = LAYOUTS[layout]
    dim = torch_dim(shape, axis)
    p = (2 * rng.standard_normal(shape)).astype(dtype)
    q = (2 * rng.standard_normal(shape)).astype(dtype)
    T = 3.0
    tp, tq = to_torch(torch, p, True), to_torch(torch, q, True)
    n_pos = int(np.prod(pos_shape(shape, axis)))
    ref = F.kl_div(F.log_softmax(tq / T, dim), F.log_softmax(tp / T, dim),
                   reduction="sum", log_target=True) / n_pos
    ref.backward()
    loss, gq, gp = lm.kl_divergence_from_logits_with_grad(p, q, axis, temperature=T,
                                                          p_grad=True)
    assert gq.dtype == dtype and gp.dtype == dtype
    np.testing.assert_allclose(loss, ref.item(), **tol(dtype, 3))
    np.testing.assert_allclose(gq, tq.grad.numpy(), **tol(dtype, 1))
    np.testing.assert_allclose(gp, tp.grad.numpy(), **tol(dtype, 1))


def test_kl_grad_out_in_place(rng):
    p = rng.standard_normal((4, C))
    q = rng.standard_normal((4, C))
    loss, gq = lm.kl_divergence_from_logits_with_grad(p, q)
    q_buf = q.copy()
    loss2, g2 = lm.kl_divergence_from_logits_with_grad(p, q_buf, grad_out=q_buf)
    assert g2 is q_buf
    np.testing.assert_array_equal(g2, gq)
    assert loss2 == loss
    # p_grad_out over p, grad_out over q at once
    pb, qb = p.copy(), q.copy()
    _, gq3, gp3 = lm.kl_divergence_from_logits_with_grad(pb, qb, p_grad=True,
                                                         grad_out=qb, p_grad_out=pb)
    _, _, gp = lm.kl_divergence_from_logits_with_grad(p, q, p_grad=True)
    np.testing.assert_array_equal(gq3, gq)
    np.testing.assert_array_equal(gp3, gp)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUTS.keys())
@pytest.mark.parametrize("base", [None, 2.0])
def test_entropy_from_logits(rng, dtype, layout, base):
    shape, axis = LAYOUTS[layout]
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    T = 0.7
    got = lm.entropy_from_logits(x, axis, base, temperature=T)
    expected = scipy.stats.entropy(sps.softmax(x.astype(np.float64) / T, axis=axis),
                                   base=base, axis=axis)
    assert np.asarray(got).dtype == dtype
    np.testing.assert_allclose(got, expected, **tol(dtype, 3))
    got_mean = lm.entropy_from_logits(x, axis, base, temperature=T, reduction="mean")
    np.testing.assert_allclose(got_mean, np.mean(expected), **tol(dtype, 3))


def test_entropy_from_logits_edges():
    assert lm.entropy_from_logits([0.0, 0.0, 0.0, 0.0]) == pytest.approx(np.log(4), rel=1e-15)
    assert lm.entropy_from_logits([5.0]) == 0.0
    # -inf classes have probability 0
    got = lm.entropy_from_logits([1.0, -np.inf, 1.0])
    assert got == pytest.approx(np.log(2), rel=1e-15)
    # a nearly deterministic row stays >= 0 and precise (no cancellation)
    x = np.array([0.0, -50.0])
    e = np.exp(-50.0)
    p1 = e / (1 + e)
    expected = -(1 - p1) * np.log1p(-p1) - p1 * np.log(p1)
    assert lm.entropy_from_logits(x) == pytest.approx(expected, rel=1e-12)
    for row in ([np.nan, 0.0], [np.inf, 0.0], [-np.inf, -np.inf]):
        assert np.isnan(lm.entropy_from_logits(row))


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("layout", ["2d", "3d-axis1", "2d-axis0"])
def test_js_from_logits_vs_scipy(rng, dtype, layout):
    shape, axis = LAYOUTS[layout]
    p = (2 * rng.standard_normal(shape)).astype(dtype)
    q = (2 * rng.standard_normal(shape)).astype(dtype)
    P = sps.softmax(p.astype(np.float64), axis=axis)
    Q = sps.softmax(q.astype(np.float64), axis=axis)
    expected = jensenshannon(P, Q, base=2, axis=axis) ** 2
    got = lm.js_divergence_from_logits(p, q, axis, base=2, reduction="none")
    np.testing.assert_allclose(got, expected, **tol(dtype, 3))
    got_sum = lm.js_divergence_from_logits(p, q, axis, base=2, reduction="sum")
    np.testing.assert_allclose(got_sum, expected.sum(), **tol(dtype, 3))


def test_js_disjoint_and_symmetric(rng):
    assert lm.js_divergence_from_logits([0.0, -np.inf], [-np.inf, 0.0]) == \
        pytest.approx(np.log(2), rel=1e-15)
    p, q = rng.standard_normal((3, C)), rng.standard_normal((3, C))
    np.testing.assert_allclose(lm.js_divergence_from_logits(p, q, reduction="none"),
                               lm.js_divergence_from_logits(q, p, reduction="none"),
                               rtol=1e-13)


# ---------------------------------------------------------------------------
# Binary cross-entropy with logits
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("opts", ["plain", "weight", "pos_weight", "both"])
def test_bce_vs_torch(torch, rng, dtype, reduction, opts):
    F = torch.nn.functional
    x = (4 * rng.standard_normal((4, 3, C))).astype(dtype)
    t = rng.random((4, 3, C)).astype(dtype)
    t[0, 0] = (t[0, 0] > 0.5)
    w = rng.random((3, 1)) + 0.5 if opts in ("weight", "both") else None
    pw = rng.random(C) * 3 if opts in ("pos_weight", "both") else None
    kw = {}
    tkw = {}
    if w is not None:
        kw["weight"] = w.astype(dtype)
        tkw["weight"] = to_torch(torch, w.astype(dtype))
    if pw is not None:
        kw["pos_weight"] = pw.astype(dtype)
        tkw["pos_weight"] = to_torch(torch, pw.astype(dtype))
    tx = to_torch(torch, x, True)
    ref = F.binary_cross_entropy_with_logits(tx, to_torch(torch, t), reduction=reduction,
                                             **tkw)
    got = lm.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
    assert np.asarray(got).dtype == dtype
    np.testing.assert_allclose(got, ref.detach().numpy(), **tol(dtype, 4))
    ref.sum().backward()
    loss, grad = lm.binary_cross_entropy_with_logits_with_grad(x, t, reduction=reduction,
                                                               **kw)
    np.testing.assert_allclose(loss, got, **tol(dtype, 4))
    np.testing.assert_allclose(grad, tx.grad.numpy(), **tol(dtype, 1))


def test_bce_extreme_logits_closed_form():
    x = np.array([-800.0, -40.0, -1e-10, 0.0, 1e-10, 40.0, 800.0])
    for t in (0.0, 1.0, 0.3):
        got = lm.binary_cross_entropy_with_logits(x, np.full_like(x, t), reduction="none")
        np.testing.assert_allclose(got, ref_bce(x, t), rtol=1e-14, atol=0)
    # tails keep full relative precision: softplus(-40) = log1p(exp(-40))
    got = lm.binary_cross_entropy_with_logits([40.0], [1.0], reduction="none")[0]
    assert got == pytest.approx(np.log1p(np.exp(-40.0)), rel=1e-15, abs=0)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("with_sw", [False, True])
def test_bce_grad_vs_finite_differences(rng, reduction, with_sw):
    x = 3 * rng.standard_normal((3, 4))
    t = rng.random((3, 4))
    w = rng.random(4) + 0.5
    pw = rng.random(4) * 2 + 0.1
    sw = rng.random((3, 1)) if with_sw else None

    def ref_total(z):
        l = ref_bce(z, t, w, pw)
        s = np.ones((3, 1)) if sw is None else sw
        if reduction == "mean":
            return np.sum(s * l) / np.sum(np.broadcast_to(s, l.shape))
        return np.sum(s * l)

    loss, grad = lm.binary_cross_entropy_with_logits_with_grad(
        x, t, weight=w, pos_weight=pw, sample_weight=sw, reduction=reduction)
    np.testing.assert_allclose(np.sum(loss), ref_total(x), rtol=1e-13)
    np.testing.assert_allclose(grad, fd_grad(ref_total, x), atol=1e-8)


def test_bce_grad_out_in_place_and_no_mutation(rng):
    x = rng.standard_normal((5, 3))
    t = (rng.random((5, 3)) > 0.5).astype(np.float64)
    x0, t0 = x.copy(), t.copy()
    loss, grad = lm.binary_cross_entropy_with_logits_with_grad(x, t)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)
    loss2, g2 = lm.binary_cross_entropy_with_logits_with_grad(x, t, grad_out=x)
    assert g2 is x
    np.testing.assert_array_equal(x, grad)
    assert loss2 == loss


# ---------------------------------------------------------------------------
# softmax / log_softmax backward
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUTS.keys())
def test_softmax_backward_vs_torch(torch, rng, dtype, layout):
    shape, axis = LAYOUTS[layout]
    dim = torch_dim(shape, axis)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    tx = to_torch(torch, x, True)
    torch.softmax(tx, dim).backward(to_torch(torch, g))
    y = sps.softmax(x.astype(np.float64), axis=axis).astype(dtype)
    got = lm.softmax_backward(g, y, axis)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, tx.grad.numpy(), **tol(dtype, 1))
    tx.grad = None
    torch.log_softmax(tx, dim).backward(to_torch(torch, g))
    z = sps.log_softmax(x.astype(np.float64), axis=axis).astype(dtype)
    got = lm.log_softmax_backward(g, z, axis)
    np.testing.assert_allclose(got, tx.grad.numpy(), **tol(dtype, 3))


@pytest.mark.parametrize("layout", ["2d", "3d-axis1", "2d-axis0"])
def test_softmax_backward_vs_finite_differences(rng, layout):
    shape, axis = LAYOUTS[layout]
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    expected = fd_grad(lambda z: np.sum(g * sps.softmax(z, axis=axis)), x)
    got = lm.softmax_backward(g, sps.softmax(x, axis=axis), axis)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    expected = fd_grad(lambda z: np.sum(g * sps.log_softmax(z, axis=axis)), x)
    got = lm.log_softmax_backward(g, sps.log_softmax(x, axis=axis), axis)
    np.testing.assert_allclose(got, expected, atol=1e-8)


def test_softmax_backward_out_in_place(rng):
    x = rng.standard_normal((4, C))
    g = rng.standard_normal((4, C))
    y = sps.softmax(x, axis=-1)
    expected = y * (g - np.sum(g * y, axis=-1, keepdims=True))
    g_buf = g.copy()
    got = lm.softmax_backward(g_buf, y, out=g_buf)
    assert got is g_buf
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-16)
    y_buf = y.copy()
    lm.softmax_backward(g, y_buf, out=y_buf)
    np.testing.assert_allclose(y_buf, expected, rtol=1e-14, atol=1e-16)
    # a non-contiguous out buffer is filled too
    big = np.zeros((4, 2 * C))
    out = big[:, ::2]
    lm.softmax_backward(g, y, out=out)
    np.testing.assert_allclose(big[:, ::2], expected, rtol=1e-14, atol=1e-16)
    assert np.all(big[:, 1::2] == 0)


# ---------------------------------------------------------------------------
# Weighted / masked cross-entropy and NLL
# ---------------------------------------------------------------------------
def weighted_mean(loss, wrow, sw):
    sw = np.ones_like(loss) if sw is None else np.broadcast_to(sw, loss.shape)
    keep = sw != 0
    return np.sum(np.where(keep, sw * loss, 0.0)) / np.sum(sw * wrow)


def make_ce(rng, layout, dtype, ignore=False):
    shape, axis = LAYOUTS[layout]
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    y = rng.integers(0, C, size=pos_shape(shape, axis))
    if ignore and y.ndim:
        y.reshape(-1)[::3] = -100
    return x, y, axis


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("layout", ["2d", "3d-axis1", "2d-axis0"])
@pytest.mark.parametrize("weighted", [False, True], ids=["nowt", "classwt"])
@pytest.mark.parametrize("ignore", [False, True], ids=["noign", "ignore"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("with_sw", [False, True], ids=["nosw", "sw"])
def test_weighted_cross_entropy_grid(rng, dtype, layout, weighted, ignore, eps, with_sw):
    x, y, axis = make_ce(rng, layout, dtype, ignore)
    weight = rng.random(C) + 0.2 if weighted else None
    sw = None
    if with_sw:
        sw = rng.random(y.shape) * 2
        sw.reshape(-1)[1::4] = 0.0
    loss_r, wrow = ref_ce_rows(x, y, axis, weight, -100, eps)
    swb = 1.0 if sw is None else sw
    kw = dict(sample_weight=sw, weight=weight, label_smoothing=eps)
    got_none = lm.cross_entropy(x, y, axis, reduction="none", **kw)
    np.testing.assert_allclose(got_none, swb * loss_r, **tol(dtype, 4))
    got_sum = lm.cross_entropy(x, y, axis, reduction="sum", **kw)
    np.testing.assert_allclose(got_sum, np.sum(swb * loss_r), **tol(dtype, 4))
    expected_mean = weighted_mean(loss_r, wrow, sw)
    got_mean = lm.cross_entropy(x, y, axis, **kw)
    np.testing.assert_allclose(got_mean, expected_mean, **tol(dtype, 4))
    if dtype == np.float64:
        def ref_total(z):
            lr, wr = ref_ce_rows(z, y, axis, weight, -100, eps)
            return weighted_mean(lr, wr, sw)
        loss, grad = lm.cross_entropy_with_grad(x, y, axis, **kw)
        np.testing.assert_allclose(loss, expected_mean, rtol=1e-12)
        np.testing.assert_allclose(grad, fd_grad(ref_total, x), atol=1e-8)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_weighted_cross_entropy_matches_torch(torch, rng, weighted, eps):
    """Without sample weights: torch's cross_entropy, including the ignore/weight/
    smoothing combination of pytorch#69339; with them: torch's per-sample losses
    combined as sum(sw * l) / sum(sw * w[y]), gradient by autograd."""
    F = torch.nn.functional
    x, y, axis = make_ce(rng, "3d-axis1", np.float64, ignore=True)
    weight = rng.random(C) + 0.2 if weighted else None
    tw = None if weight is None else to_torch(torch, weight)
    tx = to_torch(torch, x, True)
    ty = torch.tensor(y)
    ref = F.cross_entropy(tx, ty, weight=tw, label_smoothing=eps)
    got = lm.cross_entropy(x, y, 1, weight=weight, label_smoothing=eps)
    np.testing.assert_allclose(got, ref.item(), rtol=1e-12)
    sw = rng.random(y.shape)
    tx.grad = None
    per = F.cross_entropy(tx, ty, weight=tw, label_smoothing=eps, reduction="none")
    wy = torch.ones_like(per) if tw is None else tw[ty.clamp(min=0)]
    tsw = to_torch(torch, sw) * (ty != -100)
    ref = (to_torch(torch, sw) * per).sum() / (tsw * wy).sum()
    ref.backward()
    loss, grad = lm.cross_entropy_with_grad(x, y, 1, weight=weight,
                                                     label_smoothing=eps, sample_weight=sw)
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-11, atol=1e-14)


def test_sample_weight_zero_excludes_rows_even_nan(rng):
    x = rng.standard_normal((4, C))
    y = np.array([1, 2, 3, 4])
    x_bad = x.copy()
    x_bad[2] = np.nan
    sw = np.array([1.0, 2.0, 0.0, 0.5])
    keep = sw != 0
    expected = lm.cross_entropy(x[keep], y[keep], sample_weight=sw[keep])
    loss, grad = lm.cross_entropy_with_grad(x_bad, y, sample_weight=sw)
    assert loss == expected
    assert np.all(grad[2] == 0)
    # integer sample weights as counts: the same as repeating rows
    counts = np.array([1, 3, 0, 2])
    rep = lm.cross_entropy(np.repeat(x, counts, 0), np.repeat(y, counts))
    got = lm.cross_entropy(x, y, sample_weight=counts)
    assert got == pytest.approx(rep, rel=1e-14)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("layout", ["2d", "3d-axis1"])
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_masked_cross_entropy_vs_numpy(rng, dtype, layout, eps):
    x, y, axis = make_ce(rng, layout, dtype)
    mask = rng.random(x.shape) > 0.3
    # the target class always allowed, one position fully masked
    yy = np.expand_dims(y, axis)
    np.put_along_axis(mask, yy, True, axis)
    flat_mask = np.moveaxis(mask, axis, -1)
    flat_mask[(0,) * (flat_mask.ndim - 1)] = False
    weight = rng.random(C) + 0.2
    loss_r, wrow = ref_ce_rows(x, y, axis, weight, -100, eps, mask=mask)
    got = lm.cross_entropy(x, y, axis, weight=weight, label_smoothing=eps,
                                    where=mask, reduction="none")
    np.testing.assert_allclose(got, loss_r, **tol(dtype, 4))
    assert got[(0,) * got.ndim] == 0  # fully masked position: no part
    got = lm.cross_entropy(x, y, axis, weight=weight, label_smoothing=eps,
                                    where=mask)
    np.testing.assert_allclose(got, weighted_mean(loss_r, wrow, None), **tol(dtype, 4))
    if dtype == np.float64:
        def ref_total(z):
            lr, wr = ref_ce_rows(z, y, axis, weight, -100, eps, mask=mask)
            return weighted_mean(lr, wr, None)
        _, grad = lm.cross_entropy_with_grad(
            x, y, axis, weight=weight, label_smoothing=eps, where=mask)
        np.testing.assert_allclose(grad, fd_grad(ref_total, x), atol=1e-8)
        assert np.all(grad[~mask] == 0)


def test_masked_cross_entropy_nan_in_masked_class_and_masked_target():
    x = np.array([[0.0, 1.0, np.nan], [0.0, 1.0, 2.0]])
    where = np.array([[True, True, False], [True, False, True]])
    got = lm.cross_entropy(x, [1, 1], where=where, reduction="none")
    assert got[0] == pytest.approx(np.logaddexp(0.0, 1.0) - 1.0, rel=1e-15)
    assert got[1] == np.inf  # a masked target class has probability 0


@pytest.mark.parametrize("cap", [1.5, 30.0])
def test_cross_entropy_softcap_vs_torch(torch, rng, cap):
    F = torch.nn.functional
    x = 5 * rng.standard_normal((6, C))
    y = rng.integers(0, C, 6)
    tx = to_torch(torch, x, True)
    ref = F.cross_entropy(cap * torch.tanh(tx / cap), torch.tensor(y), label_smoothing=0.1)
    ref.backward()
    loss, grad = lm.cross_entropy_with_grad(x, y, logit_softcap=cap,
                                                     label_smoothing=0.1)
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-11, atol=1e-15)


def test_weighted_cross_entropy_grad_out_in_place(rng):
    x, y, axis = make_ce(rng, "3d-axis1", np.float32)
    loss, grad = lm.cross_entropy_with_grad(x, y, axis, label_smoothing=0.1)
    xb = x.copy()
    loss2, g2 = lm.cross_entropy_with_grad(xb, y, axis, label_smoothing=0.1,
                                                    grad_out=xb)
    assert g2 is xb and loss2 == loss
    np.testing.assert_array_equal(g2, grad)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("layout", ["2d", "3d-axis1", "2d-axis0"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_nll_with_grad_vs_torch(torch, rng, dtype, layout, reduction):
    F = torch.nn.functional
    x, y, axis = make_ce(rng, layout, dtype, ignore=True)
    lp = sps.log_softmax(x.astype(np.float64), axis=axis).astype(dtype)
    weight = rng.random(C) + 0.1
    tlp = to_torch(torch, lp, True)
    tlp_in = tlp if len(x.shape) == 1 else torch.movedim(tlp, axis % x.ndim, 1)
    ref = F.nll_loss(tlp_in, torch.tensor(y), weight=to_torch(torch, weight),
                     reduction=reduction)
    ref.sum().backward()
    loss, grad = lm.nll_loss_with_grad(lp, y, axis, weight=weight, reduction=reduction)
    np.testing.assert_allclose(loss, ref.detach().numpy(), **tol(dtype, 3))
    np.testing.assert_allclose(grad, tlp.grad.numpy(), **tol(dtype, 1))


def test_weighted_nll_sample_weight_vs_numpy(rng):
    lp = sps.log_softmax(rng.standard_normal((8, C)), axis=-1)
    y = rng.integers(0, C, 8)
    y[3] = -100
    w = rng.random(C) + 0.1
    sw = rng.random(8)
    wy = np.where(y == -100, 0.0, w[np.clip(y, 0, None)])
    l = -wy * lp[np.arange(8), np.clip(y, 0, None)]
    expected = np.sum(sw * l) / np.sum(sw * wy)
    got = lm.nll_loss(lp, y, weight=w, sample_weight=sw)
    assert got == pytest.approx(expected, rel=1e-14)
    loss, grad = lm.nll_loss_with_grad(lp, y, weight=w, sample_weight=sw)
    g = np.zeros_like(lp)
    for i in range(8):
        if y[i] != -100:
            g[i, y[i]] = -sw[i] * w[y[i]] / np.sum(sw * wy)
    np.testing.assert_allclose(grad, g, rtol=1e-14)


# ---------------------------------------------------------------------------
# Masked logsumexp / softmax / log_softmax
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), None])
def test_masked_softmax_family_vs_numpy(rng, dtype, axis):
    x = (3 * rng.standard_normal((3, 4, C))).astype(dtype)
    mask = rng.random(x.shape) > 0.4
    mask[0, 0, :] = False
    mask[0, :, 0] = False
    mask[0, 1, 2] = True
    x[~mask & (rng.random(x.shape) > 0.5)] = np.nan  # masked nan takes no part
    xm = np.where(mask, x.astype(np.float64), -np.inf)
    lse = quiet(sps.logsumexp, xm, axis=axis, keepdims=True)
    got = lm.logsumexp(x, axis, where=mask)
    np.testing.assert_allclose(got, np.squeeze(lse, axis=axis) if axis is not None
                               else lse.reshape(()), **tol(dtype, 3))
    with np.errstate(invalid="ignore"):
        expected_sm = np.where(mask, np.exp(xm - lse), 0.0)
        expected_lsm = np.where(mask, xm - lse, -np.inf)
    # fully masked rows: all 0 / all -inf
    expected_sm = np.nan_to_num(expected_sm, nan=0.0)
    expected_lsm = np.where(np.isnan(expected_lsm), -np.inf, expected_lsm)
    got = lm.softmax(x, axis, where=mask)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected_sm, **tol(dtype, 1))
    got = lm.log_softmax(x, axis, where=mask)
    np.testing.assert_allclose(got, expected_lsm, **tol(dtype, 3))


def test_masked_fully_masked_rows_and_broadcast_mask():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    where = np.array([[False, False], [True, True]])
    np.testing.assert_array_equal(lm.logsumexp(x, -1, where=where)[0], -np.inf)
    np.testing.assert_array_equal(lm.softmax(x, -1, where=where)[0], [0.0, 0.0])
    np.testing.assert_array_equal(lm.log_softmax(x, -1, where=where)[0],
                                  [-np.inf, -np.inf])
    got = lm.softmax(x, -1, where=np.array([True, False]))  # broadcast
    np.testing.assert_array_equal(got, [[1.0, 0.0], [1.0, 0.0]])
    assert lm.logsumexp(x, where=True) == pytest.approx(sps.logsumexp(x))


# ---------------------------------------------------------------------------
# evaluate_logits
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("layout", ["2d", "3d-axis1", "3d-axis-1"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_evaluate_logits_vs_numpy(rng, dtype, layout, reduction):
    shape, axis = LAYOUTS[layout]
    x = rng.integers(-3, 4, size=shape).astype(dtype)  # many ties
    y = rng.integers(0, C, size=pos_shape(shape, axis))
    y.reshape(-1)[::5] = -100
    ks = (1, 2, 3)
    ref, valid = ref_eval(x, y, axis, ks)
    got = lm.evaluate_logits(x, y, axis, k=ks, reduction=reduction)
    assert got["count"] == valid.sum()
    for name, val in ref.items():
        if reduction == "none":
            if val.dtype == bool:
                np.testing.assert_array_equal(got[name], val & valid, err_msg=name)
            else:
                np.testing.assert_allclose(got[name][valid], val[valid],
                                           **tol(dtype, 9), err_msg=name)
                assert np.all(np.isnan(got[name][~valid]))
        else:
            v = val[valid].astype(np.float64)
            expected = v.mean() if reduction == "mean" else v.sum()
            np.testing.assert_allclose(got[name], expected, **tol(dtype, 9 * v.size),
                                       err_msg=name)


def test_evaluate_logits_vs_torch_topk(torch, rng):
    x = rng.standard_normal((20, 10))  # no ties
    y = rng.integers(0, 10, 20)
    top = torch.topk(torch.tensor(x), 3, dim=-1).indices.numpy()
    expected = np.mean(np.any(top == y[:, None], axis=-1))
    got = lm.evaluate_logits(x, y, k=3)
    assert got["top3_accuracy"] == expected
    ce = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(y)).item()
    assert got["nll"] == pytest.approx(ce, rel=1e-13)


def test_evaluate_logits_nan_row_counts_wrong():
    x = np.array([[np.nan, 1.0], [2.0, 1.0]])
    got = lm.evaluate_logits(x, [1, 0], k=1, reduction="none")
    assert not got["accuracy"][0] and got["accuracy"][1]
    assert np.isnan(got["nll"][0]) and np.isnan(got["entropy"][0])


# ---------------------------------------------------------------------------
# Bad input and no mutation
# ---------------------------------------------------------------------------
def test_bad_input_messages(rng):
    x = rng.standard_normal((3, C))
    y = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="reduction"):
        lm.kl_divergence_from_logits(x, x, reduction="avg")
    with pytest.raises(ValueError, match="temperature"):
        lm.kl_divergence_from_logits(x, x, temperature=0.0)
    with pytest.raises(TypeError, match="temperature"):
        lm.entropy_from_logits(x, temperature="hot")
    with pytest.raises(ValueError, match="logit_softcap"):
        lm.cross_entropy(x, y, logit_softcap=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        lm.kl_divergence_from_logits(x, x[:2])
    with pytest.raises(ValueError, match="base"):
        lm.entropy_from_logits(x, base=1)
    with pytest.raises(ValueError, match="target"):
        lm.binary_cross_entropy_with_logits(x, x[:, :2])
    with pytest.raises(ValueError, match="pos_weight"):
        lm.binary_cross_entropy_with_logits(x, x, pos_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight"):
        lm.cross_entropy(x, y, sample_weight=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="sample_weight"):
        lm.cross_entropy(x, y, sample_weight=[1.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="sample_weight"):
        lm.nll_loss(x, y, sample_weight=np.ones(4))
    with pytest.raises(TypeError, match="where"):
        lm.softmax(x, where=np.ones(x.shape))
    with pytest.raises(ValueError, match="where"):
        lm.logsumexp(x, where=np.ones((2, 2), bool))
    with pytest.raises(IndexError, match="class index 7"):
        lm.cross_entropy(x, np.array([0, 7, 1]))
    with pytest.raises(TypeError, match="target"):
        lm.evaluate_logits(x, y.astype(float))
    with pytest.raises(ValueError, match="k must be positive"):
        lm.evaluate_logits(x, y, k=0)
    with pytest.raises(ValueError, match="no classes"):
        lm.entropy_from_logits(np.empty((3, 0)))
    with pytest.raises(ValueError, match="p_grad_out"):
        lm.kl_divergence_from_logits_with_grad(x, x, p_grad_out=np.empty_like(x))


def test_bad_grad_out(rng):
    x = rng.standard_normal((3, C))
    y = np.array([0, 1, 2])
    f = lm.cross_entropy_with_grad
    with pytest.raises(TypeError, match="grad_out.*dtype"):
        f(x, y, grad_out=np.empty((3, C), np.float32))
    with pytest.raises(ValueError, match="grad_out.*shape"):
        f(x, y, grad_out=np.empty((C, 3)))
    ro = np.empty((3, C))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        f(x, y, grad_out=ro)
    with pytest.raises(TypeError, match="grad_out"):
        f(x, y, grad_out=[[0.0] * C] * 3)
    big = np.concatenate([x, x[:1]])
    with pytest.raises(ValueError, match="overlaps"):
        f(big[:3], y, grad_out=big[1:])
    with pytest.raises(ValueError, match="overlaps"):
        lm.softmax_backward(big[:3], big[:3], out=big[1:])


def test_inputs_not_mutated(rng):
    x = rng.standard_normal((4, C))
    q = rng.standard_normal((4, C))
    y = np.array([0, 1, 2, 3])
    sw = np.ones(4)
    mask = np.ones((4, C), bool)
    copies = [a.copy() for a in (x, q, y, sw, mask)]
    lm.kl_divergence_from_logits_with_grad(x, q, p_grad=True)
    lm.cross_entropy_with_grad(x, y, sample_weight=sw, where=mask)
    lm.evaluate_logits(x, y)
    lm.softmax_backward(x, q)
    for a, c in zip((x, q, y, sw, mask), copies):
        np.testing.assert_array_equal(a, c)


CALLS = {
    "kl": lambda d, n: lm.kl_divergence_from_logits_with_grad(
        d["x"], d["q"], p_grad=True, reduction="none", n_threads=n),
    "js": lambda d, n: lm.js_divergence_from_logits(d["x"], d["q"], reduction="none",
                                                   n_threads=n),
    "entropy": lambda d, n: lm.entropy_from_logits(d["x"], n_threads=n),
    "bce": lambda d, n: lm.binary_cross_entropy_with_logits_with_grad(
        d["x"], d["t"], reduction="none", n_threads=n),
    "softmax_backward": lambda d, n: lm.softmax_backward(d["x"], d["q"], n_threads=n),
    "log_softmax_backward": lambda d, n: lm.log_softmax_backward(d["x"], d["q"],
                                                                n_threads=n),
    "masked_lse": lambda d, n: lm.logsumexp(d["x"], -1, where=d["m"], n_threads=n),
    "masked_softmax": lambda d, n: lm.softmax(d["x"], -1, where=d["m"],
                                                     n_threads=n),
    "wce": lambda d, n: lm.cross_entropy_with_grad(
        d["x"], d["y"], sample_weight=d["sw"], where=d["m"], label_smoothing=0.1,
        reduction="none", n_threads=n),
    "nll": lambda d, n: lm.nll_loss_with_grad(d["x"], d["y"], sample_weight=d["sw"],
                                              reduction="none", n_threads=n),
    "evaluate": lambda d, n: lm.evaluate_logits(d["x"], d["y"], k=3, reduction="none",
                                                n_threads=n),
}


@pytest.mark.parametrize("shape", [(30000, 6), (2000, 100), (300, 1000)],
                         ids=["short-rows", "mid-rows", "long-rows"])
@pytest.mark.parametrize("name", CALLS)
def test_threads_give_the_single_thread_result(rng, name, shape):
    """Above the parallel threshold, per-row state must be private to each
    thread: a shared accumulator shows up as rows that differ from the
    single-thread run (seen with a struct that prange did not privatise)."""
    n_cls = shape[1]
    d = dict(x=rng.standard_normal(shape), q=rng.standard_normal(shape),
             t=rng.random(shape), m=rng.random(shape) > 0.2,
             y=rng.integers(0, n_cls, shape[0]), sw=rng.random(shape[0]))
    d["m"][:, 0] = True
    d["m"][np.arange(shape[0]), d["y"]] = True
    one = CALLS[name](d, 1)
    for _ in range(3):
        two = CALLS[name](d, 2)
        if isinstance(one, dict):
            for key in one:
                np.testing.assert_array_equal(one[key], two[key], err_msg=key)
        else:
            for a, b in zip(one if isinstance(one, tuple) else (one,),
                            two if isinstance(two, tuple) else (two,)):
                np.testing.assert_array_equal(a, b)
