"""Class weights as torch takes them: any finite value, negative included."""

import numpy as np
import pytest

import lossmle as lm
from oracles import torch_loss_grad

torch = pytest.importorskip("torch")
F = torch.nn.functional


WEIGHTS = {
    "mixed": np.array([1.0, -0.5, 2.0, -3.0]),
    "all_negative": np.array([-1.0, -0.25, -2.0, -0.5]),
    "sum_zero": np.array([1.0, -1.0, 0.5, -0.5]),
}


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("wname", list(WEIGHTS))
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_class_targets(reduction, wname, smoothing):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4))
    y = np.array([0, 1, 2, 3, 1, 2])
    w = WEIGHTS[wname]
    e_loss, e_grad = torch_loss_grad(F.cross_entropy, x, y, weight=w, reduction=reduction,
                                     label_smoothing=smoothing)
    loss, grad = lm.cross_entropy_with_grad(x, y, weight=w, reduction=reduction,
                                            label_smoothing=smoothing)
    np.testing.assert_allclose(lm.cross_entropy(x, y, weight=w, reduction=reduction,
                                                label_smoothing=smoothing), e_loss,
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(loss, e_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, e_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("wname", list(WEIGHTS))
def test_nll_and_probability_targets(reduction, wname):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 4))
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    y = np.array([0, 1, 2, 3, 0])
    w = WEIGHTS[wname]
    e_loss, e_grad = torch_loss_grad(F.nll_loss, logp, y, weight=w, reduction=reduction)
    np.testing.assert_allclose(lm.nll_loss(logp, y, weight=w, reduction=reduction), e_loss,
                               rtol=1e-12, atol=1e-14)
    loss, grad = lm.nll_loss_with_grad(logp, y, weight=w, reduction=reduction)
    np.testing.assert_allclose(loss, e_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, e_grad, rtol=1e-12, atol=1e-14)
    probs = rng.random((5, 4))
    probs /= probs.sum(axis=1, keepdims=True)
    e_loss, e_grad = torch_loss_grad(F.cross_entropy, x, probs, weight=w, reduction=reduction)
    loss, grad = lm.cross_entropy_with_grad(x, probs, weight=w, reduction=reduction)
    np.testing.assert_allclose(loss, e_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, e_grad, rtol=1e-12, atol=1e-14)


def test_float32_and_weighted_variants():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 1, 0, 2])
    w = WEIGHTS["mixed"]
    e_loss, e_grad = torch_loss_grad(F.cross_entropy, x, y, weight=w.astype(np.float32))
    loss, grad = lm.cross_entropy_with_grad(x, y, weight=w)
    np.testing.assert_allclose(loss, e_loss, rtol=2e-6)
    np.testing.assert_allclose(grad, e_grad, rtol=2e-5, atol=1e-7)
    # the sample-weight path (unit weights) takes negative class weights too
    e64 = torch_loss_grad(F.cross_entropy, x.astype(np.float64), y, weight=w)[0]
    np.testing.assert_allclose(lm.cross_entropy(x.astype(np.float64), y, weight=w,
                                                sample_weight=np.ones(7)), e64, rtol=1e-13)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_still_raises(bad):
    w = np.array([1.0, bad, 1.0])
    with pytest.raises(ValueError, match="weight"):
        lm.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), weight=w)
    with pytest.raises(ValueError, match="weight"):
        lm.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), weight=w, sample_weight=np.ones(2))


def test_mean_over_target_weights_summing_to_zero_is_nan():
    # documented deviation: torch divides by the 0 total (-inf here, and an
    # inf/nan gradient pattern from its log_softmax + nll composition);
    # lossmle's mean over no total weight is nan, loss and kept-row gradient
    x = np.array([[0.3, -1.0], [1.2, 0.1]])
    y = np.array([0, 1])
    w = np.array([1.0, -1.0])
    loss, grad = lm.cross_entropy_with_grad(x, y, weight=w)
    assert np.isnan(loss) and np.isnan(grad).all()
    assert np.isnan(lm.nll_loss(x, y, weight=w))
    assert np.isfinite(lm.cross_entropy(x, y, weight=w, reduction="sum"))
