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
