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


def numpy_terms(x, t, log_target):
    """The pointwise terms in double, by NumPy (the oracle for the fused kernel)."""
    xd, td = np.asarray(x, np.float64), np.asarray(t, np.float64)
    with np.errstate(all="ignore"):
        if log_target:
            return np.exp(td) * (td - xd)
        safe = np.where(td == 0, 1.0, td)
        return np.where(td == 0, 0.0, td * np.log(safe)) - td * xd


def big_case(dtype, seed=5):
    # > 2**17 elements, rows not a multiple of the 256-term block
    rng = np.random.default_rng(seed)
    x = np.log(rng.dirichlet(np.ones(509), size=300)).astype(dtype)
    t = rng.dirichlet(np.ones(509), size=300).astype(dtype)
    t[::7, ::5] = 0
    return x, t


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_thread_count_gives_the_same_bits(reduction, log_target, dtype):
    x, t = big_case(dtype)
    assert x.size > 2 ** 17
    if log_target:
        t = np.log(t + 1e-3).astype(dtype)
    one = lm.kl_div_with_grad(x, t, reduction, log_target, n_threads=1)
    two = lm.kl_div_with_grad(x, t, reduction, log_target, n_threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert np.asarray(one[0]).tobytes() == np.asarray(two[0]).tobytes()
    e_val, e_grad = torch_kl_div(x.astype(np.float64), t.astype(np.float64), reduction,
                                 log_target)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(one[0], e_val.astype(dtype), rtol=rtol, atol=0)
    np.testing.assert_allclose(one[1], e_grad.astype(dtype), rtol=rtol, atol=0)


def test_sum_is_the_reduction_layers_total_of_the_terms():
    # the fused total is _reduce.total (blocked pairwise) of the float64 terms
    x, t = big_case(np.float64, 6)
    terms = lm.kl_div(x, t, reduction="none", n_threads=2)
    np.testing.assert_allclose(terms, numpy_terms(x, t, False), rtol=1e-13, atol=1e-300)
    total = lm._reduce.total(terms)
    assert lm.kl_div(x, t, reduction="sum", n_threads=2) == total
    assert lm.kl_div(x, t, reduction="batchmean", n_threads=1) == total / x.shape[0]


@pytest.mark.parametrize("log_target", [False, True])
def test_float32_terms_are_computed_in_double(log_target):
    # t log t - t x nearly cancels (x ~ log t): float32 arithmetic would lose
    # every digit; the double terms rounded once to float32 keep them
    rng = np.random.default_rng(7)
    t = rng.uniform(0.05, 1.0, size=(64, 33)).astype(np.float32)
    x = np.nextafter(np.log(t), np.float32(0)).astype(np.float32)
    tt = np.log(t).astype(np.float32) if log_target else t
    want = numpy_terms(x, tt, log_target)
    got = lm.kl_div(x, tt, reduction="none", log_target=log_target)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=2 ** -23, atol=0)
    s = lm.kl_div(x, tt, reduction="sum", log_target=log_target)
    assert type(s) is np.float32
    assert s == pytest.approx(float(np.sum(want)), rel=2 ** -23, abs=0)


def strided_views(a):
    return {
        "contiguous": a,
        "every_other_column": np.repeat(a, 2, axis=1)[:, ::2],
        "fortran": np.asfortranarray(a),
        "transposed": np.ascontiguousarray(a.T).T,
        "reversed": a[::-1, ::-1].copy()[::-1, ::-1],
    }


@pytest.mark.parametrize("layout", ["every_other_column", "fortran", "transposed", "reversed"])
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_strided_inputs_as_contiguous_and_torch(layout, reduction, dtype):
    x, t = big_case(dtype, 8)
    x, t = x[:40, :300], t[:40, :300]
    xs, ts = strided_views(x)[layout], strided_views(t)[layout]
    assert not xs.flags.c_contiguous or layout == "reversed"
    want = lm.kl_div_with_grad(np.ascontiguousarray(x), np.ascontiguousarray(t), reduction)
    got = lm.kl_div_with_grad(xs, ts, reduction)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    e_val, e_grad = torch_kl_div(x, t, reduction, False)
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got[0], e_val, rtol=rtol, atol=1e-7 if dtype == np.float32 else 0)
    np.testing.assert_allclose(got[1], e_grad, rtol=rtol, atol=0)
    # a strided grad_out is written in place
    buf = np.zeros((x.shape[0], 2 * x.shape[1]), dtype)[:, ::2]
    _, g = lm.kl_div_with_grad(xs, ts, reduction, grad_out=buf)
    assert g is buf
    np.testing.assert_array_equal(buf, want[1])


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_every_special_pair_as_torch(reduction, log_target):
    vals_x = [-np.inf, -1.0, 0.0, 2.0, np.inf, np.nan]
    vals_t = ([-np.inf, -1.0, 0.0, 0.5, np.inf, np.nan] if log_target
              else [0.0, -0.0, 0.5, -0.5, 2.0, np.inf, np.nan])
    x, t = (a.ravel() for a in np.meshgrid(vals_x, vals_t))
    e_val, e_grad = torch_kl_div(x, t, reduction, log_target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = lm.kl_div_with_grad(x, t, reduction, log_target)
    np.testing.assert_array_equal(loss, e_val)
    np.testing.assert_array_equal(grad, e_grad)
    if reduction == "none":   # one pair at a time: a reduced nan / inf is torch's too
        for k in range(x.size):
            for red in ("sum", "mean"):
                e1, _ = torch_kl_div(x[k:k + 1], t[k:k + 1], red, log_target)
                np.testing.assert_array_equal(lm.kl_div(x[k:k + 1], t[k:k + 1], red,
                                                        log_target), e1)


@pytest.mark.parametrize("log_target", [False, True])
def test_zero_target_with_minus_inf_input_is_torchs_nan(log_target):
    # torch: xlogy(0, 0) - 0 * (-inf) = 0 - nan = nan (0 * -inf, not the limit 0);
    # with log_target, exp(-inf) * (-inf - (-inf)) = 0 * nan = nan
    x = np.array([-np.inf, -np.inf, -3.0])
    t = np.array([-np.inf, 0.0, -np.inf]) if log_target else np.array([0.0, -0.0, 0.0])
    e_val, e_grad = torch_kl_div(x, t, "none", log_target)
    loss, grad = lm.kl_div_with_grad(x, t, "none", log_target)
    np.testing.assert_array_equal(loss, e_val)
    np.testing.assert_array_equal(np.signbit(grad), np.signbit(e_grad))
    np.testing.assert_array_equal(grad, e_grad)
    assert np.isnan(lm.kl_div(x, t, "batchmean", log_target)) == np.isnan(
        torch_kl_div(x, t, "batchmean", log_target)[0])


@pytest.mark.parametrize("alias", ["input", "target"])
@pytest.mark.parametrize("reduction", ["none", "mean", "batchmean"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_grad_out_aliasing_an_operand_on_many_threads(alias, reduction, dtype):
    x, t = big_case(dtype, 9)
    e_val, e_grad = torch_kl_div(x, t, reduction, False)
    want = lm.kl_div_with_grad(x, t, reduction, n_threads=2)
    xa, ta = x.copy(), t.copy()
    buf = xa if alias == "input" else ta
    loss, grad = lm.kl_div_with_grad(xa, ta, reduction, grad_out=buf, n_threads=2)
    assert grad is buf
    np.testing.assert_array_equal(loss, want[0])
    np.testing.assert_array_equal(grad, want[1])
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(grad, e_grad, rtol=rtol, atol=0)


def test_n_threads_is_checked():
    with pytest.raises((TypeError, ValueError), match="n_threads"):
        lm.kl_div(np.zeros(3), np.zeros(3), n_threads=0)
    with pytest.raises(TypeError, match="n_threads"):
        lm.kl_div_with_grad(np.zeros(3), np.zeros(3), n_threads="2")
