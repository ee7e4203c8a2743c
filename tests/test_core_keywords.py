"""sample_weight=, where= and logit_softcap= on the core functions: the issue-6
keywords reach the training kernels, checked against NumPy/SciPy references
written here."""
import numpy as np
import pytest
import scipy.special as sps

import lossmle as lm
from oracles import np_cross_entropy_rows


@pytest.fixture
def data():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(30, 6)) * 2
    y = rng.integers(0, 6, 30)
    y[3] = -100
    sw = rng.random(30)
    w = rng.random(6) + 0.1
    where = rng.random((30, 6)) > 0.25
    where[np.arange(30), np.where(y >= 0, y, 0)] = True   # targets stay visible
    return x, y, sw, w, where


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sample_weight_on_cross_entropy_and_nll(data, reduction):
    x, y, sw, w, _ = data
    valid = y != -100
    rows = np_cross_entropy_rows(x, y)[0] * w[np.where(valid, y, 0)] * valid
    coef = sw * w[np.where(valid, y, 0)] * valid
    expected = {"none": sw * rows, "sum": np.sum(sw * rows),
                "mean": np.sum(sw * rows) / np.sum(coef)}[reduction]
    got = lm.cross_entropy(x, y, weight=w, sample_weight=sw, reduction=reduction)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    got = lm.nll_loss(sps.log_softmax(x, axis=-1), y, weight=w, sample_weight=sw,
                      reduction=reduction)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    loss, grad = lm.cross_entropy_with_grad(x, y, weight=w, sample_weight=sw,
                                            reduction=reduction)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    assert grad.shape == x.shape


def test_where_on_the_drop_in_functions(data):
    x, _, _, _, where = data
    np.testing.assert_allclose(lm.logsumexp(x, axis=1, where=where),
                               sps.logsumexp(x, axis=1, b=where.astype(float)), rtol=1e-13)
    masked = np.where(where, x, -np.inf)
    np.testing.assert_allclose(lm.softmax(x, axis=1, where=where),
                               sps.softmax(masked, axis=1), rtol=1e-13, atol=0)
    np.testing.assert_allclose(lm.log_softmax(x, axis=1, where=where)[where],
                               sps.log_softmax(masked, axis=1)[where], rtol=1e-13)
    with pytest.raises(ValueError, match="where"):
        lm.logsumexp(x, axis=1, where=where, return_sign=True)


def test_where_and_softcap_on_cross_entropy(data):
    x, y, _, _, where = data
    valid = y != -100
    masked = np.where(where, x, -np.inf)
    expected = np.sum(np_cross_entropy_rows(masked, y)[0] * valid) / valid.sum()
    np.testing.assert_allclose(lm.cross_entropy(x, y, where=where), expected, rtol=1e-12)
    cap = 1.5
    expected = np.sum(np_cross_entropy_rows(cap * np.tanh(x / cap), y)[0] * valid) / valid.sum()
    np.testing.assert_allclose(lm.cross_entropy(x, y, logit_softcap=cap), expected,
                               rtol=1e-12)


def test_grad_out_on_cross_entropy_with_grad(data):
    x, y, *_ = data
    buf = np.empty_like(x)
    loss, grad = lm.cross_entropy_with_grad(x, y, grad_out=buf)
    assert grad is buf
    ref_loss, ref_grad = lm.cross_entropy_with_grad(x, y)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-13, atol=1e-17)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
