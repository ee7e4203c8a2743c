"""kl_div / kl_div_with_grad against torch.nn.functional.kl_div."""
import warnings

import numpy as np
import pytest

import lossmle as lm
from oracles import torch_kl_div

torch = pytest.importorskip("torch")


def cases(dtype, seed=0):
    rng = np.random.default_rng(seed)
    logq = np.log(rng.dirichlet(np.ones(5), size=4)).astype(dtype)
    p = rng.dirichlet(np.ones(5), size=4).astype(dtype)
    p[0, 1] = 0            # xlogy(0, 0) = 0
    return logq, p


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_values_and_gradient_as_torch(reduction, log_target, dtype):
    logq, p = cases(dtype)
    t = p.copy()
    if log_target:
        t = np.log(np.where(p == 0, 1e-3, p)).astype(dtype)
    e_val, e_grad = torch_kl_div(logq, t, reduction, log_target)
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    val = lm.kl_div(logq, t, reduction=reduction, log_target=log_target)
    loss, grad = lm.kl_div_with_grad(logq, t, reduction=reduction, log_target=log_target)
    assert np.asarray(val).dtype == dtype and grad.dtype == dtype
    assert np.shape(val) == e_val.shape
    np.testing.assert_allclose(val, e_val, rtol=rtol, atol=1e-7 if dtype == np.float32 else 0)
    np.testing.assert_array_equal(loss, val)
    np.testing.assert_allclose(grad, e_grad, rtol=rtol, atol=0)


def test_batchmean_is_mean_kl_per_row():
    sps = pytest.importorskip("scipy.special")
    logq, p = cases(np.float64, 1)
    want = sps.rel_entr(p, np.exp(logq)).sum(axis=1).mean()
    assert lm.kl_div(logq, p, reduction="batchmean") == pytest.approx(want, rel=1e-13, abs=0)


@pytest.mark.parametrize("xs,ts", [((3, 1), (1, 4)), ((), (3,)), ((2, 0), (2, 0)), ((), ())])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
def test_broadcasting_empty_and_0d_as_torch(xs, ts, reduction):
    rng = np.random.default_rng(4)
    x = np.asarray(rng.normal(size=xs))
    t = np.asarray(rng.random(size=ts))
    e_val, e_grad = torch_kl_div(x, t, reduction, False)
    loss, grad = lm.kl_div_with_grad(x, t, reduction=reduction)
    np.testing.assert_allclose(loss, e_val, rtol=1e-13, atol=0)
    assert np.shape(loss) == e_val.shape
    assert grad.shape == e_grad.shape
    np.testing.assert_allclose(grad, e_grad, rtol=1e-13, atol=0)


@pytest.mark.parametrize("log_target", [False, True])
def test_special_values_as_torch(log_target):
    x = np.array([-np.inf, 0.0, -1.0, np.nan, -2.0, -np.inf])
    t = np.array([0.0, 0.0, -0.5, 0.3, np.nan, 0.5])
    if log_target:
        t = np.array([-np.inf, -np.inf, 0.5, -1.0, np.nan, np.inf])
    e_val, e_grad = torch_kl_div(x, t, "none", log_target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # quiet: no RuntimeWarning for torch's nan/inf
        loss, grad = lm.kl_div_with_grad(x, t, reduction="none", log_target=log_target)
    np.testing.assert_array_equal(loss, e_val)
    np.testing.assert_array_equal(grad, e_grad)


def test_grad_out_and_inputs_untouched():
    logq, p = cases(np.float64, 2)
    x0, t0 = logq.copy(), p.copy()
    buf = np.empty_like(logq)
    loss, grad = lm.kl_div_with_grad(logq, p, reduction="sum", grad_out=buf)
    assert grad is buf
    np.testing.assert_array_equal(grad, -p)
    np.testing.assert_array_equal(logq, x0)
    np.testing.assert_array_equal(p, t0)
    # in place over the input itself
    x = logq.copy()
    _, g = lm.kl_div_with_grad(x, p, reduction="sum", grad_out=x)
    assert g is x
    np.testing.assert_array_equal(x, -p)


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(reduction=None), ValueError, "reduction"),
    (dict(log_target="yes"), TypeError, "log_target"),
    (dict(grad_out=np.empty((2, 2))), ValueError, "grad_out"),
    (dict(grad_out=np.empty((4, 5), np.float32)), TypeError, "grad_out"),
])
def test_bad_arguments_name_themselves(kwargs, exc, word):
    logq, p = cases(np.float64)
    with pytest.raises(exc, match=word):
        lm.kl_div_with_grad(logq, p, **kwargs)


def test_bad_inputs_name_themselves():
    with pytest.raises(ValueError, match="input"):
        lm.kl_div(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="target"):
        lm.kl_div(np.zeros(3), np.array(["a", "b", "c"]))
    with pytest.raises(TypeError, match="input"):
        lm.kl_div(np.zeros(3, complex), np.zeros(3))
