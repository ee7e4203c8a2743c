"""out= on logsumexp, softmax, log_softmax, kl_divergence, entropy and the
losses with reduction='none': the result lands in the caller's buffer (the
same object is returned), equals the call without out= and scipy's answer,
and bad buffers are refused before anything is written."""
import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as sst

import lossmle as lm


@pytest.fixture
def x():
    x = np.random.default_rng(5).normal(size=(40, 7)) * 3
    x[3, 2] = np.nan          # special rows take the exact path
    x[4, :] = -np.inf
    x[5, 1] = np.inf
    return x


def _check_into(result, out, expected):
    assert result is out
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-300, equal_nan=True)


@pytest.mark.parametrize("fn, oracle", [(lm.softmax, sps.softmax),
                                        (lm.log_softmax, sps.log_softmax)],
                         ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, (0, 1)], ids=["ax-1", "ax0", "ax01"])
def test_transform_into_fresh_buffer(fn, oracle, x, axis):
    out = np.full_like(x, 123.0)
    with np.errstate(invalid="ignore"):
        expected = oracle(x, axis=axis)
    _check_into(fn(x, axis=axis, out=out), out, expected)
    assert not np.shares_memory(out, x)


@pytest.mark.parametrize("fn, oracle", [(lm.softmax, sps.softmax),
                                        (lm.log_softmax, sps.log_softmax)],
                         ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(40, 7), (6, 3000), (500, 4)], ids=str)
@pytest.mark.parametrize("order", ["C", "F"])
def test_transform_in_place(fn, oracle, shape, order):
    rng = np.random.default_rng(sum(shape))
    x = np.asarray(rng.normal(size=shape) * 3, order=order)
    x[1, 0] = np.nan          # a nan row must not lose its input to the exp pass
    x[2, :] = -np.inf
    with np.errstate(invalid="ignore"):
        expected = oracle(x, axis=-1)
    res = fn(x, axis=-1, out=x)
    assert res is x
    # atol: scipy's log_softmax loses ~1e-16 absolute near the row max (scipy#19521)
    np.testing.assert_allclose(x, expected, rtol=1e-13, atol=1e-15, equal_nan=True)


def test_reductions_into_buffers(x):
    p = np.random.default_rng(1).random((4, 9))
    q = np.random.default_rng(2).random((4, 9))
    out = np.empty(40)
    with np.errstate(invalid="ignore"):
        _check_into(lm.logsumexp(x, axis=1, out=out), out, sps.logsumexp(x, axis=1))
    out = np.empty((40, 1))
    with np.errstate(invalid="ignore"):
        _check_into(lm.logsumexp(x, axis=1, keepdims=True, out=out), out,
                    sps.logsumexp(x, axis=1, keepdims=True))
    out = np.empty(4)
    _check_into(lm.kl_divergence(p, q, out=out), out, sps.rel_entr(p, q).sum(-1))
    out = np.empty(9)
    _check_into(lm.entropy(p, q, out=out), out, sst.entropy(p, q))
    out = np.empty(())
    _check_into(lm.entropy(p.ravel(), out=out), out, sst.entropy(p.ravel()))


def test_losses_reduction_none_into_buffer():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 5, 4))
    target = rng.integers(0, 5, (3, 4))
    out = np.empty((3, 4))
    res = lm.cross_entropy(logits, target, axis=1, reduction="none", out=out)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits),
                                                 torch.from_numpy(target),
                                                 reduction="none").numpy()
    _check_into(res, out, expected)
    logp = sps.log_softmax(logits, axis=1)
    out2 = np.empty((3, 4))
    res = lm.nll_loss(logp, target, axis=1, reduction="none", out=out2)
    _check_into(res, out2, -np.take_along_axis(logp, target[:, None], 1)[:, 0])


@pytest.mark.parametrize("make, exc, match", [
    (lambda x: np.empty((40, 6)), ValueError, "shape"),
    (lambda x: np.empty((40, 7), np.float32), TypeError, "dtype"),
    (lambda x: [[0.0] * 7] * 40, TypeError, "ndarray"),
    (lambda x: np.broadcast_to(np.empty(7), (40, 7)), ValueError, "read-only"),
    (lambda x: np.ascontiguousarray(np.vstack([x[1:], x[:1]])), None, None),
    (lambda x: x[::-1], ValueError, "overlaps x"),
], ids=["shape", "dtype", "list", "readonly", "distinct-ok", "partial-overlap"])
def test_bad_out_buffers(make, exc, match):
    x = np.random.default_rng(9).normal(size=(40, 7))
    keep = x.copy()
    out = make(x)
    if exc is None:
        lm.softmax(x, axis=-1, out=out)
        np.testing.assert_allclose(out, sps.softmax(keep, axis=-1), rtol=1e-13)
        return
    with pytest.raises(exc, match=match):
        lm.softmax(x, axis=-1, out=out)
    np.testing.assert_array_equal(x, keep)     # nothing written


def test_reduction_out_may_not_overlap_input_and_losses_need_none():
    x = np.random.default_rng(4).normal(size=(8, 8))
    with pytest.raises(ValueError, match="overlaps a"):
        lm.logsumexp(x, axis=1, out=x[:, 0])
    with pytest.raises(ValueError, match="reduction='none'"):
        lm.cross_entropy(x, np.zeros(8, np.int64), out=np.empty(8))
    p = np.full((2, 4), 0.25)
    with pytest.raises(ValueError, match="overlaps p"):
        lm.kl_divergence(p, p[::-1].copy(), out=p[:, 0])


# ---------------------------------------------------------------------------
# grad_out= on cross_entropy_with_grad: the same path, the same bits
# ---------------------------------------------------------------------------
def _ce_case(rng, kind, dtype):
    """(logits, target, kwargs) of one cross_entropy_with_grad call, with a
    nan, an inf and an ignored target where they apply (the kernels' redo)."""
    shape, axis = {"short": ((700, 4), -1), "two": ((300, 2), -1),
                   "long": ((40, 300), -1), "axis1": ((6, 5, 7), 1),
                   "prob": ((200, 6), -1), "prob_long": ((30, 200), -1)}[kind]
    n_classes = shape[axis]
    pos_shape = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    rows = rng.normal(size=pos_shape + (n_classes,)) * 3   # class axis last
    rows.reshape(-1, n_classes)[3, 1] = np.inf
    rows.reshape(-1, n_classes)[7, 0] = np.nan
    x = np.ascontiguousarray(np.moveaxis(rows, -1, axis), dtype=dtype)
    if kind.startswith("prob"):
        target = sps.softmax(rng.normal(size=shape), axis=axis).astype(dtype)
    else:
        target = rng.integers(0, n_classes, pos_shape)
        target.reshape(-1)[5] = -100
    return x, target, dict(axis=axis)


GRAD_OUT_KINDS = ["short", "two", "long", "axis1", "prob", "prob_long"]
GRAD_OUT_OPTIONS = [dict(), dict(reduction="sum"), dict(reduction="none"),
                    dict(label_smoothing=0.1), dict(weight="w")]


def _options(opts, n_classes):
    opts = dict(opts)
    if opts.get("weight") == "w":
        opts["weight"] = np.linspace(0.5, 2.0, n_classes)
    return opts


@pytest.mark.parametrize("kind", GRAD_OUT_KINDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("opts", GRAD_OUT_OPTIONS, ids=lambda o: str(o) or "default")
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_ce_grad_out_equals_the_fresh_gradient_bitwise(rng, kind, dtype, opts, layout):
    x, target, kw = _ce_case(rng, kind, dtype)
    kw.update(_options(opts, x.shape[kw["axis"]]))
    with np.errstate(invalid="ignore"):
        loss, grad = lm.cross_entropy_with_grad(x, target, **kw)
        if layout == "strided":
            buf = np.full(x.shape[:-1] + (2 * x.shape[-1],), 7.0, dtype)[..., ::2]
        else:
            buf = np.full(x.shape, 7.0, dtype, order=layout)
        loss2, grad2 = lm.cross_entropy_with_grad(x, target, grad_out=buf, **kw)
    assert grad2 is buf
    assert np.array_equal(np.asarray(loss2), np.asarray(loss), equal_nan=True)
    assert np.asarray(loss2).dtype == np.asarray(loss).dtype
    np.testing.assert_array_equal(buf, grad)   # nan where nan, bits elsewhere


@pytest.mark.parametrize("kind", GRAD_OUT_KINDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_ce_grad_out_in_place(rng, kind, dtype):
    # the rows the kernels flag (nan / inf) are redone from the input, so an
    # in-place gradient must not be written before they are read
    x, target, kw = _ce_case(rng, kind, dtype)
    with np.errstate(invalid="ignore"):
        loss, grad = lm.cross_entropy_with_grad(x, target, **kw)
        x_buf = x.copy()
        loss2, grad2 = lm.cross_entropy_with_grad(x_buf, target, grad_out=x_buf, **kw)
        assert grad2 is x_buf
        np.testing.assert_array_equal(x_buf, grad)
        assert np.array_equal(loss2, loss, equal_nan=True)
        if kind.startswith("prob"):   # the target's buffer may take it too
            t_buf = target.astype(dtype)
            loss3, grad3 = lm.cross_entropy_with_grad(x, t_buf, grad_out=t_buf, **kw)
            assert grad3 is t_buf
            np.testing.assert_array_equal(t_buf, grad)
            assert np.array_equal(loss3, loss, equal_nan=True)


@pytest.mark.parametrize("kind", ["short", "long", "prob"])
def test_ce_grad_out_against_torch(rng, torch, kind):
    x, target, kw = _ce_case(rng, kind, np.float64)
    finite = np.isfinite(np.moveaxis(x, kw["axis"], -1)).all(axis=-1)
    x = x[finite]
    target = target[finite]
    if not kind.startswith("prob"):
        target = np.where(target < 0, 0, target)
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(target)
    torch.nn.functional.cross_entropy(xt, tt, label_smoothing=0.05).backward()
    buf = np.empty_like(x)
    lm.cross_entropy_with_grad(x, target, label_smoothing=0.05, grad_out=buf)
    expected = xt.grad.numpy()
    # entries near 0 carry the smoothing's cancellation: an absolute floor
    np.testing.assert_allclose(buf, expected, rtol=1e-12,
                               atol=1e-14 * np.abs(expected).max())


def test_ce_grad_out_bad_buffers(rng):
    x = rng.normal(size=(6, 5))
    y = np.arange(6) % 5
    p = sps.softmax(rng.normal(size=(6, 5)), axis=1)
    f = lm.cross_entropy_with_grad
    with pytest.raises(TypeError, match="grad_out.*dtype.*float32"):
        f(x.astype(np.float32), y, grad_out=np.empty((6, 5)))
    with pytest.raises(ValueError, match="grad_out.*shape"):
        f(x, p, grad_out=np.empty((5, 6)))
    big = np.concatenate([x, x[:1]])
    with pytest.raises(ValueError, match="grad_out overlaps logits"):
        f(big[:6], y, grad_out=big[1:])
    tbig = np.concatenate([p, p[:1]])
    with pytest.raises(ValueError, match="grad_out overlaps target"):
        f(x, tbig[:6], grad_out=tbig[1:])
    ro = np.zeros((6, 5))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        f(x, y, grad_out=ro)
    assert not ro.any()


def test_grad_out_may_not_overlap_the_weights(rng):
    # the kernels read the class (and sample) weights while they write the
    # gradient: a grad_out sharing their memory is refused, never half-written
    x = rng.normal(size=(6, 5))
    y = np.array([1, 2, 3, 4, 0, 1])
    p = sps.softmax(rng.normal(size=(6, 5)), axis=1)
    buf = np.zeros((6, 5))
    buf[0] = np.linspace(0.5, 2.0, 5)
    saved = buf.copy()
    for target, kw in [(y, {}), (p, dict(label_smoothing=0.1)), (y, dict(reduction="none"))]:
        with pytest.raises(ValueError, match="grad_out overlaps weight"):
            lm.cross_entropy_with_grad(x, target, weight=buf[0], grad_out=buf, **kw)
        np.testing.assert_array_equal(buf, saved)
    sw = np.ones((6, 5))
    saved = sw.copy()
    with pytest.raises(ValueError, match="grad_out overlaps sample_weight"):
        lm.cross_entropy_with_grad(x, y, sample_weight=sw.reshape(-1)[:6],
                                            grad_out=sw)
    with pytest.raises(ValueError, match="grad_out overlaps weight"):
        lm.cross_entropy_with_grad(x, y, sample_weight=np.ones(6), weight=buf[0],
                                            grad_out=buf)
    np.testing.assert_array_equal(sw, saved)
    # a weight elsewhere is fine, and the answer that of a fresh gradient
    w = buf[0].copy()
    loss, grad = lm.cross_entropy_with_grad(x, y, weight=w)
    out = np.empty_like(x)
    loss2, grad2 = lm.cross_entropy_with_grad(x, y, weight=w, grad_out=out)
    assert grad2 is out and loss2 == loss
    np.testing.assert_array_equal(out, grad)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_loss_out_may_not_overlap_a_narrow_int_target(dtype):
    # int32 targets are widened to int64 for the fast path only: the overlap
    # check of out= still sees the caller's target
    x = np.zeros((4, 3), np.float32)
    t = np.array([0, 1, 2, 0], dtype)
    before = t.copy()
    view = t.view(np.float32)   # the losses' dtype, the target's memory
    with pytest.raises(ValueError, match="out overlaps target"):
        lm.cross_entropy(x, t, reduction="none", out=view)
    with pytest.raises(ValueError, match="out overlaps target"):
        lm.nll_loss(x, t, reduction="none", out=view)
    np.testing.assert_array_equal(t, before)
