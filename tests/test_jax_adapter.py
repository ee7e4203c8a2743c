"""lossmle.jax: pure_callback + custom_vjp over lossmle's kernels.

Oracles: hand-written JAX losses (jax.nn.log_softmax, jax.nn.logsumexp, ...)
differentiated by JAX itself, and jax.test_util.check_grads (finite
differences, float64), under jax.jit, with jax_enable_x64 off and on.
"""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
lj = pytest.importorskip("lossmle.jax")
from jax.test_util import check_grads  # noqa: E402

from oracles import jax_cross_entropy as _ce_ref  # noqa: E402
from oracles import jax_kl_div_from_logits as _kl_logits_ref  # noqa: E402


@pytest.fixture(params=["f32", "f64"])
def dtype(request):
    """float32 with x64 off; float64 with x64 on (restored afterwards)."""
    if request.param == "f32":
        with jax.enable_x64(False):
            yield jnp.float32
    else:
        with jax.enable_x64(True):
            yield jnp.float64


def _tol(dtype):
    return dict(rtol=3e-5, atol=3e-6) if dtype == jnp.float32 else dict(rtol=1e-11,
                                                                        atol=1e-13)


def _close(a, b, dtype):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **_tol(dtype))


def _rng(seed=0):
    return np.random.default_rng(seed)


def _value_and_vjp(fn, args, ct):
    """jit'ed value and the vjp with cotangent ``ct`` w.r.t. every arg."""
    out, vjp = jax.vjp(jax.jit(fn), *args)
    return out, vjp(ct)


def _compare(ours, ref, args, dtype, ct_seed=1):
    out_ref = ref(*args)
    ct = jnp.asarray(_rng(ct_seed).normal(size=np.shape(out_ref)), dtype=dtype)
    o1, g1 = _value_and_vjp(ours, args, ct)
    o2, g2 = _value_and_vjp(ref, args, ct)
    _close(o1, o2, dtype)
    for a, b in zip(g1, g2):
        _close(a, b, dtype)


# ---------------------------------------------------------------------------
# hand-written references (torch's semantics)
# ---------------------------------------------------------------------------
# ---------------------------------------------------------------------------
# parity under jit, value and vjp
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant,reduction", [
    ("plain", "mean"), ("plain", "sum"), ("weight-smooth-ignore", "none"),
    ("weight-smooth-ignore", "mean"), ("prob", "none"), ("prob", "mean"), ("axis1", "none")])
def test_cross_entropy_matches_jax(dtype, reduction, variant):
    r = _rng(2)
    shape = (3, 5, 4) if variant == "axis1" else (6, 5)
    axis = 1 if variant == "axis1" else -1
    x = jnp.asarray(r.normal(size=shape) * 3, dtype)
    kw = {}
    if variant == "prob":
        t = jax.nn.softmax(jnp.asarray(r.normal(size=shape), dtype))
    else:
        tshape = (3, 4) if variant == "axis1" else (6,)
        tn = r.integers(0, 5, size=tshape)
        if variant.endswith("ignore"):
            tn.reshape(-1)[0] = -100
            kw = dict(weight=jnp.asarray(r.random(5) + 0.5, dtype), label_smoothing=0.2)
        t = jnp.asarray(tn)
    eps = kw.get("label_smoothing", 0.0)
    _compare(lambda z: lj.cross_entropy(z, t, axis, reduction=reduction, **kw),
             lambda z: _ce_ref(z, t, axis, kw.get("weight"), -100, reduction, eps),
             (x,), dtype)


def test_cross_entropy_probability_target_gradient(dtype):
    r = _rng(3)
    x = jnp.asarray(r.normal(size=(4, 3)), dtype)
    t = jax.nn.softmax(jnp.asarray(r.normal(size=(4, 3)), dtype))
    w = jnp.asarray([1.0, 2.0, 0.5], dtype)
    _compare(lambda a, b: lj.cross_entropy(a, b, weight=w, label_smoothing=0.1),
             lambda a, b: _ce_ref(a, b, weight=w, eps=0.1), (x, t), dtype)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_nll_loss_matches_jax(dtype, reduction):
    r = _rng(4)
    lp = jax.nn.log_softmax(jnp.asarray(r.normal(size=(5, 4)), dtype))
    t = jnp.asarray([0, 3, -100, 1, 2])
    w = jnp.asarray(r.random(4) + 0.1, dtype)

    def ref(z):
        kept = t != -100
        ts = jnp.where(kept, t, 0)
        wy = jnp.where(kept, w[ts], 0.0)
        rows = -wy * z[jnp.arange(5), ts]
        return {"none": rows, "sum": rows.sum(), "mean": rows.sum() / wy.sum()}[reduction]
    _compare(lambda z: lj.nll_loss(z, t, weight=w, reduction=reduction), ref, (lp,), dtype)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bce_with_logits_matches_jax(dtype, reduction):
    r = _rng(5)
    x = jnp.asarray(r.normal(size=(4, 3)) * 4, dtype)
    t = jnp.asarray(r.random((4, 3)), dtype)
    w = jnp.asarray(r.random((4, 1)), dtype)
    pw = jnp.asarray(r.random(3) * 3, dtype)

    def ref(z, tt):
        rows = w * (pw * tt * jax.nn.softplus(-z) + (1 - tt) * jax.nn.softplus(z))
        return {"none": rows, "sum": rows.sum(), "mean": rows.mean()}[reduction]
    _compare(lambda z, tt: lj.binary_cross_entropy_with_logits(
        z, tt, weight=w, pos_weight=pw, reduction=reduction), ref, (x, t), dtype)


@pytest.mark.parametrize("reduction", ["batchmean", "none"])
def test_kl_divergence_from_logits_matches_jax(dtype, reduction):
    r = _rng(6)
    p = jnp.asarray(r.normal(size=(2, 5, 3)) * 2, dtype)
    q = jnp.asarray(r.normal(size=(2, 5, 3)) * 2, dtype)
    kw = dict(axis=1, temperature=2.0, reduction=reduction)
    _compare(lambda a, b: lj.kl_divergence_from_logits(a, b, **kw),
             lambda a, b: _kl_logits_ref(a, b, **kw), (p, q), dtype)


@pytest.mark.parametrize("reduction,log_target", [
    ("batchmean", False), ("none", False), ("mean", True), ("sum", True)])
def test_kl_div_matches_jax(dtype, reduction, log_target):
    r = _rng(7)
    x = jax.nn.log_softmax(jnp.asarray(r.normal(size=(4, 5)), dtype))
    t = jax.nn.softmax(jnp.asarray(r.normal(size=(4, 5)), dtype))
    if log_target:
        t = jnp.log(t)

    def ref(a, b):
        terms = jnp.exp(b) * (b - a) if log_target else b * jnp.log(b) - b * a
        return {"none": terms, "sum": terms.sum(), "batchmean": terms.sum() / 4,
                "mean": terms.mean()}[reduction]
    _compare(lambda a, b: lj.kl_div(a, b, reduction=reduction, log_target=log_target),
             ref, (x, t), dtype)


@pytest.mark.parametrize("axis,keepdims", [(None, False), ((0, 2), True)])
def test_logsumexp_matches_jax(dtype, axis, keepdims):
    x = jnp.asarray(_rng(8).normal(size=(3, 4, 5)) * 5, dtype)
    _compare(lambda z: lj.logsumexp(z, axis, keepdims),
             lambda z: jax.nn.logsumexp(z, axis=axis, keepdims=keepdims), (x,), dtype)


@pytest.mark.parametrize("name,axis", [("softmax", 1), ("log_softmax", 0)])
def test_softmax_matches_jax(dtype, name, axis):
    x = jnp.asarray(_rng(9).normal(size=(3, 4, 5)) * 4, dtype)
    _compare(lambda z: getattr(lj, name)(z, axis),
             lambda z: getattr(jax.nn, name)(z, axis=axis), (x,), dtype)


@pytest.mark.parametrize("reduction,bias", [("mean", True), ("sum", False),
                                            ("none", True)])
def test_linear_cross_entropy_matches_jax(dtype, reduction, bias):
    r = _rng(10)
    h = jnp.asarray(r.normal(size=(2, 3, 4)), dtype)
    w = jnp.asarray(r.normal(size=(9, 4)), dtype)
    b = jnp.asarray(r.normal(size=9), dtype) if bias else None
    t = jnp.asarray([[0, 8, -100], [3, 3, 1]])

    def ours(hh, ww, *bb):
        return lj.linear_cross_entropy(hh, ww, t, bias=bb[0] if bb else None,
                                       reduction=reduction, chunk_size=4)

    def ref(hh, ww, *bb):
        logits = hh @ ww.T + (bb[0] if bb else 0)
        return _ce_ref(logits, t, reduction=reduction)
    _compare(ours, ref, (h, w) + ((b,) if bias else ()), dtype)


# ---------------------------------------------------------------------------
# check_grads (float64 finite differences) for every adapter
# ---------------------------------------------------------------------------
def _f64(*shape, seed=0, scale=1.0):
    return jnp.asarray(_rng(seed).normal(size=shape) * scale, jnp.float64)


CHECKS = {
    "cross_entropy": lambda: (lambda x: lj.cross_entropy(
        x, jnp.asarray([0, 2, 1]), weight=jnp.asarray([1.0, 2.0, 0.5, 1.0]),
        label_smoothing=0.1), (_f64(3, 4),)),
    "cross_entropy_prob": lambda: (lambda x, t: lj.cross_entropy(x, t, reduction="none"),
                                   (_f64(3, 4), jax.nn.softmax(_f64(3, 4, seed=1)))),
    "nll_loss": lambda: (lambda x: lj.nll_loss(x, jnp.asarray([0, 3, 1]), reduction="sum"),
                         (_f64(3, 4),)),
    "bce": lambda: (lambda x, t: lj.binary_cross_entropy_with_logits(x, t, reduction="none"),
                    (_f64(3, 4), jax.nn.sigmoid(_f64(3, 4, seed=2)))),
    "kl_logits": lambda: (lambda p, q: lj.kl_divergence_from_logits(p, q, temperature=1.5),
                          (_f64(3, 4, seed=1), _f64(3, 4, seed=2))),
    "kl_div": lambda: (lambda x, t: lj.kl_div(x, t, reduction="batchmean"),
                       (_f64(3, 4), jax.nn.softmax(_f64(3, 4, seed=3)))),
    "logsumexp": lambda: (lambda x: lj.logsumexp(x, (0, 2)), (_f64(2, 3, 4),)),
    "softmax": lambda: (lambda x: lj.softmax(x, 1), (_f64(2, 3, 4),)),
    "log_softmax": lambda: (lambda x: lj.log_softmax(x, 0), (_f64(2, 3),)),
    "linear_ce": lambda: (lambda h, w, b: lj.linear_cross_entropy(
        h, w, jnp.asarray([0, 4, -100, 2]), bias=b, chunk_size=2),
        (_f64(4, 3), _f64(5, 3, seed=1), _f64(5, seed=2))),
    "linear_ce_none": lambda: (lambda h, w: lj.linear_cross_entropy(
        h, w, jnp.asarray([0, 4, -100, 2]), reduction="none", chunk_size=3),
        (_f64(4, 3), _f64(5, 3, seed=1))),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_grads(name):
    with jax.enable_x64(True):
        fn, args = CHECKS[name]()
        check_grads(fn, args, order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


def test_check_grads_under_jit():
    with jax.enable_x64(True):
        fn, args = CHECKS["cross_entropy"]()
        check_grads(jax.jit(fn), args, order=1, modes=["rev"], eps=1e-6, atol=1e-6,
                    rtol=1e-6)


# ---------------------------------------------------------------------------
# transformations and bad input
# ---------------------------------------------------------------------------
def test_vmap_over_a_batch_of_problems():
    with jax.enable_x64(True):
        x = _f64(3, 4, 5)
        t = jnp.asarray(_rng(1).integers(0, 5, size=(3, 4)))
        ours = jax.vmap(lj.cross_entropy)(x, t)
        ref = jax.vmap(_ce_ref)(x, t)
        _close(ours, ref, jnp.float64)
        g1 = jax.grad(lambda z: jax.vmap(lj.cross_entropy)(z, t).sum())(x)
        g2 = jax.grad(lambda z: jax.vmap(_ce_ref)(z, t).sum())(x)
        _close(g1, g2, jnp.float64)


def test_x64_off_keeps_float32():
    with jax.enable_x64(False):
        x = jnp.asarray(_rng(0).normal(size=(3, 4)))
        assert x.dtype == jnp.float32
        out = jax.jit(lj.cross_entropy)(x, jnp.asarray([0, 1, 2]))
        assert out.dtype == jnp.float32
        assert jax.grad(lj.cross_entropy)(x, jnp.asarray([0, 1, 2])).dtype == jnp.float32


def test_bad_input():
    x = jnp.zeros((3, 4))
    with pytest.raises(TypeError, match="dtype"):
        lj.cross_entropy(x.astype(jnp.float16), jnp.asarray([0, 1, 2]))
    with pytest.raises(TypeError, match="dtype"):
        lj.softmax(jnp.zeros((3, 4), jnp.int32))
    with pytest.raises(ValueError, match="reduction"):
        lj.cross_entropy(x, jnp.asarray([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="shape"):
        lj.cross_entropy(x, jnp.asarray([0, 1]))
    with pytest.raises(ValueError, match="out of bounds"):
        lj.log_softmax(x, 2)
    with pytest.raises(IndexError, match="class index 9"):
        lj.cross_entropy(x, jnp.asarray([0, 9, 2]))
    with pytest.raises(IndexError, match="class index 5"):
        lj.linear_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((5, 3)), jnp.asarray([0, 5]))


def test_docstring_examples():
    import doctest
    with jax.enable_x64(False):
        res = doctest.testmod(lj)
    assert res.attempted > 10 and res.failed == 0
