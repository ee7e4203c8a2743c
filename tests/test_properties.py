"""Hypothesis properties: softmax is a distribution and shift-invariant, KL is
non-negative and zero only at p == q, CE(p, logits) = H(p) + KL(p || softmax),
and the fused gradient matches finite differences / softmax - onehot."""
import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as sst
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossmle as lm
from conftest import EPS64, rtol_for
from oracles import central_fd, np_cross_entropy

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)
shapes_2d = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8)
shapes_nd = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)


@st.composite
def logits_and_axis(draw, shapes=shapes_nd, dtype=np.float64):
    x = draw(hnp.arrays(dtype, shapes, elements=finite))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    return x, axis


@st.composite
def exact_logits(draw):
    """Multiples of 1/8 in [-64, 64] so that x + c is exact for integer |c| <= 2**20."""
    ints = draw(hnp.arrays(np.int64, shapes_2d, elements=st.integers(-512, 512)))
    return ints / 8.0


@st.composite
def distributions(draw, min_size=1, max_size=10, zeros=True):
    n = draw(st.integers(min_size, max_size))
    lo = 0.0 if zeros else 1e-3
    w = np.array(draw(st.lists(st.floats(lo, 1.0), min_size=n, max_size=n)))
    assume(w.sum() > 1e-6)
    return w / w.sum()


# ---------------------------------------------------------------------------
# softmax / log_softmax / logsumexp
# ---------------------------------------------------------------------------
class TestSoftmaxProperties:
    @SETTINGS
    @given(logits_and_axis())
    def test_softmax_sums_to_one(self, xa):
        x, axis = xa
        s = lm.softmax(x, axis=axis)
        assert s.shape == x.shape
        assert np.all(s >= 0) and np.all(s <= 1)
        np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=0, atol=4 * x.shape[axis] * EPS64)

    @SETTINGS
    @given(logits_and_axis(dtype=np.float32))
    def test_softmax_sums_to_one_float32(self, xa):
        x, axis = xa
        s = lm.softmax(x, axis=axis)
        assert s.dtype == np.float32
        eps32 = np.finfo(np.float32).eps
        np.testing.assert_allclose(s.astype(np.float64).sum(axis=axis), 1.0, rtol=0,
                                   atol=2 * x.shape[axis] * eps32)

    @SETTINGS
    @given(exact_logits(), st.integers(-(2**20), 2**20), st.sampled_from([0, 1, -1]))
    def test_shift_invariance(self, x, c, axis):
        # x + c is exact, so the only error is the kernels' own rounding
        tol = dict(rtol=16 * EPS64, atol=16 * EPS64)
        np.testing.assert_allclose(lm.softmax(x + c, axis=axis), lm.softmax(x, axis=axis), **tol)
        np.testing.assert_allclose(lm.softmax(x + c, axis=axis), sps.softmax(x, axis=axis), **tol)
        np.testing.assert_allclose(lm.log_softmax(x + c, axis=axis), sps.log_softmax(x, axis=axis),
                                   rtol=16 * EPS64, atol=128 * EPS64)
        np.testing.assert_allclose(lm.logsumexp(x + c, axis=axis),
                                   sps.logsumexp(x, axis=axis) + c,
                                   rtol=16 * EPS64, atol=(abs(c) + 128) * 4 * EPS64)

    @SETTINGS
    @given(logits_and_axis())
    def test_log_softmax_consistent(self, xa):
        x, axis = xa
        lsm = lm.log_softmax(x, axis=axis)
        assert np.all(lsm <= 0)
        np.testing.assert_allclose(lsm, x - sps.logsumexp(x, axis=axis, keepdims=True),
                                   rtol=rtol_for(np.float64), atol=128 * EPS64)
        np.testing.assert_allclose(np.exp(lsm), sps.softmax(x, axis=axis),
                                   rtol=rtol_for(np.float64), atol=1e-300)

    @SETTINGS
    @given(logits_and_axis(), st.booleans())
    def test_logsumexp_matches_scipy(self, xa, keepdims):
        x, axis = xa
        np.testing.assert_allclose(lm.logsumexp(x, axis=axis, keepdims=keepdims),
                                   sps.logsumexp(x, axis=axis, keepdims=keepdims),
                                   rtol=rtol_for(np.float64), atol=128 * EPS64)


# ---------------------------------------------------------------------------
# KL divergence
# ---------------------------------------------------------------------------
class TestKLProperties:
    @SETTINGS
    @given(st.data())
    def test_nonnegative(self, data):
        p = data.draw(distributions())
        q = data.draw(distributions(min_size=p.size, max_size=p.size, zeros=False))
        kl = lm.kl_divergence(p, q)
        assert kl >= -8 * EPS64
        np.testing.assert_allclose(kl, sps.rel_entr(p, q).sum(), rtol=rtol_for(np.float64),
                                   atol=16 * EPS64)

    @SETTINGS
    @given(distributions())
    def test_zero_iff_equal(self, p):
        assert lm.kl_divergence(p, p.copy()) == 0.0

    @SETTINGS
    @given(st.data())
    def test_positive_when_different(self, data):
        p = data.draw(distributions(zeros=False, min_size=2))
        q = data.draw(distributions(min_size=p.size, max_size=p.size, zeros=False))
        assume(np.max(np.abs(p - q)) > 1e-3)
        assert lm.kl_divergence(p, q) > 0.0

    @SETTINGS
    @given(st.data())
    def test_base_rescales(self, data):
        p = data.draw(distributions())
        q = data.draw(distributions(min_size=p.size, max_size=p.size, zeros=False))
        base = data.draw(st.sampled_from([2.0, 10.0, 3.5]))
        np.testing.assert_allclose(lm.kl_divergence(p, q, base=base),
                                   sps.rel_entr(p, q).sum() / np.log(base),
                                   rtol=rtol_for(np.float64), atol=16 * EPS64)


# ---------------------------------------------------------------------------
# Cross-entropy identities and gradients
# ---------------------------------------------------------------------------
class TestCrossEntropyProperties:
    @SETTINGS
    @given(st.data())
    def test_prob_target_is_entropy_plus_kl(self, data):
        x = data.draw(hnp.arrays(np.float64, shapes_2d, elements=finite))
        n, c = x.shape
        raw = data.draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0.0, 1.0)))
        raw[:, 0] += 1e-3  # every row has mass
        p = raw / raw.sum(axis=1, keepdims=True)
        ce = lm.cross_entropy(x, p, reduction="none")
        q = sps.softmax(x, axis=1)
        expected = sst.entropy(p, axis=1) + sps.rel_entr(p, q).sum(axis=1)
        scale = np.abs(x).max() + np.log(c) + 1
        np.testing.assert_allclose(ce, expected, rtol=rtol_for(np.float64),
                                   atol=64 * scale * EPS64)
        # the same identity with lossmle's own entropy / KL / softmax, cross-checked
        own = lm.entropy(p, axis=1) + lm.kl_divergence(p, lm.softmax(x, axis=1), axis=1)
        np.testing.assert_allclose(ce, own, rtol=rtol_for(np.float64), atol=64 * scale * EPS64)

    @SETTINGS
    @given(st.data())
    def test_onehot_prob_target_equals_index_target(self, data):
        x = data.draw(hnp.arrays(np.float64, shapes_2d, elements=finite))
        n, c = x.shape
        t = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
        onehot = np.eye(c)[t]
        ls = data.draw(st.sampled_from([0.0, 0.25]))
        for reduction in ("none", "sum"):
            np.testing.assert_allclose(
                lm.cross_entropy(x, onehot, reduction=reduction, label_smoothing=ls),
                lm.cross_entropy(x, t, reduction=reduction, label_smoothing=ls),
                rtol=rtol_for(np.float64), atol=1e-12)
        expected = np_cross_entropy(x, t, reduction="none", label_smoothing=ls)
        np.testing.assert_allclose(lm.cross_entropy(x, t, reduction="none", label_smoothing=ls),
                                   expected, rtol=rtol_for(np.float64), atol=1e-12)

    @SETTINGS
    @given(st.data())
    def test_grad_is_softmax_minus_onehot(self, data):
        x = data.draw(hnp.arrays(np.float64, shapes_2d, elements=finite))
        n, c = x.shape
        t = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
        _, grad = lm.cross_entropy_with_grad(x, t, reduction="sum")
        expected = sps.softmax(x, axis=1) - np.eye(c)[t]
        # softmax - 1 cancels: absolute tolerance of a few ulps of 1
        np.testing.assert_allclose(grad, expected, rtol=rtol_for(np.float64), atol=16 * EPS64)
        _, grad_mean = lm.cross_entropy_with_grad(x, t, reduction="mean")
        np.testing.assert_allclose(grad_mean, expected / n, rtol=rtol_for(np.float64),
                                   atol=16 * EPS64)

    @settings(max_examples=40, deadline=None)
    @given(st.data())
    def test_grad_matches_finite_differences(self, data):
        x = data.draw(hnp.arrays(np.float64,
                                 hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
                                 elements=st.floats(-5.0, 5.0)))
        axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
        c = x.shape[axis]
        kind = data.draw(st.sampled_from(["index", "prob"]))
        if kind == "index":
            tshape = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
            target = data.draw(hnp.arrays(np.int64, tshape, elements=st.integers(0, c - 1)))
        else:
            raw = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(0.01, 1.0)))
            target = raw / raw.sum(axis=axis, keepdims=True)
        kw = dict(
            reduction=data.draw(st.sampled_from(["none", "sum", "mean"])),
            label_smoothing=data.draw(st.sampled_from([0.0, 0.1, 0.5])),
        )
        if data.draw(st.booleans()):
            kw["weight"] = np.array(data.draw(st.lists(st.floats(0.1, 3.0), min_size=c,
                                                        max_size=c)))
        _, grad = lm.cross_entropy_with_grad(x, target, axis=axis, **kw)
        fd = central_fd(lambda z: np_cross_entropy(z, target, axis=axis, **kw), x.copy())
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("n_classes", [2, 7])
def test_uniform_logits_closed_form(n_classes):
    # equal logits: p = 1/C, CE = log C, grad = (1/C - onehot) / N for mean
    x = np.full((3, n_classes), 1.25)
    t = np.array([0, n_classes - 1, 1])
    loss, grad = lm.cross_entropy_with_grad(x, t)
    assert loss == pytest.approx(np.log(n_classes), rel=rtol_for(np.float64))
    np.testing.assert_allclose(grad, (1.0 / n_classes - np.eye(n_classes)[t]) / 3,
                               rtol=rtol_for(np.float64), atol=4 * EPS64)
