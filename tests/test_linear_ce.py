"""linear_cross_entropy(_with_grad): blocked over the vocabulary, against oracles.

Oracles: the naive composition written here in NumPy (full logits in float64,
scipy.special.logsumexp, softmax - onehot for the gradients), and torch's
F.cross_entropy(F.linear(...)) with autograd (skipped cleanly without torch).
Memory: tracemalloc (NumPy reports its buffers to it) shows the peak extra
memory is O(N x chunk), far below one N x V array.
"""
import tracemalloc

import numpy as np
import pytest

import lossmle
from lossmle import linear_cross_entropy, linear_cross_entropy_with_grad

from conftest import tol
from oracles import np_linear_cross_entropy as naive

special = pytest.importorskip("scipy.special")


def make(rng, n=24, d=8, v=300, dtype=np.float64, scale=1.0, ignore=True):
    h = (rng.normal(size=(n, d)) * scale).astype(dtype)
    w = rng.normal(size=(v, d)).astype(dtype)
    b = rng.normal(size=v).astype(dtype)
    y = rng.integers(0, v, size=n)
    if ignore:
        y[::5] = -100
    return h, w, b, y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 300, 1000, None], ids=lambda c: f"chunk{c}")
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_matches_naive_float64(rng, reduction, chunk, with_bias):
    h, w, b, y = make(rng)
    b = b if with_bias else None
    want = naive(h, w, b, y, reduction)
    loss = linear_cross_entropy(h, w, y, bias=b, chunk_size=chunk, reduction=reduction)
    got = linear_cross_entropy_with_grad(h, w, y, bias=b, chunk_size=chunk,
                                         reduction=reduction)
    t = tol(np.float64, 10)
    np.testing.assert_allclose(loss, want[0], **t)
    np.testing.assert_allclose(got[0], want[0], **t)
    for g, wg in zip(got[1:3], want[1:3]):
        np.testing.assert_allclose(g, wg, **t)
    if with_bias:
        np.testing.assert_allclose(got[3], want[3], **t)
    else:
        assert got[3] is None
    assert np.shape(loss) == np.shape(want[0])


def test_float32_in_float32_out(rng):
    h, w, b, y = make(rng, dtype=np.float32)
    want = naive(h, w, b, y)
    loss, gh, gw, gb = linear_cross_entropy_with_grad(h, w, y, bias=b, chunk_size=50)
    assert loss.dtype == gh.dtype == gw.dtype == gb.dtype == np.float32
    scale = float(np.abs(h @ w.T).max())
    np.testing.assert_allclose(loss, want[0], **tol(np.float32, scale))
    for g, wg in zip((gh, gw, gb), want[1:]):
        np.testing.assert_allclose(g, wg, **tol(np.float32, 10))


def test_large_logits_stay_finite(rng):
    # logits ~ +-3000: exp overflows in a naive float64 softmax without the shift
    h, w, b, y = make(rng, scale=1000.0)
    want = naive(h, w, b, y, "none")
    got = linear_cross_entropy_with_grad(h, w, y, bias=b, chunk_size=13, reduction="none")
    assert np.all(np.isfinite(got[0]))
    scale = float(np.abs(h @ w.T).max())
    np.testing.assert_allclose(got[0], want[0], **tol(np.float64, scale))
    np.testing.assert_allclose(got[1], want[1], **tol(np.float64, 1000))


def test_leading_batch_axes(rng):
    h, w, b, y = make(rng, n=24)
    h3, y3 = h.reshape(2, 3, 4, 8), y.reshape(2, 3, 4)
    loss, gh, _, _ = linear_cross_entropy_with_grad(h3, w, y3, bias=b, chunk_size=40,
                                                    reduction="none")
    want = naive(h, w, b, y, "none")
    assert loss.shape == (2, 3, 4) and gh.shape == (2, 3, 4, 8)
    np.testing.assert_allclose(loss.reshape(-1), want[0], **tol(np.float64, 10))
    np.testing.assert_allclose(gh.reshape(24, 8), want[1], **tol(np.float64, 10))


def test_equals_lossmle_cross_entropy_of_full_logits(rng):
    h, w, b, y = make(rng)
    full = lossmle.cross_entropy(h @ w.T + b, y)
    np.testing.assert_allclose(linear_cross_entropy(h, w, y, bias=b, chunk_size=33), full,
                               **tol(np.float64, 10))


def test_all_ignored_mean_is_nan_and_grads_zero(rng):
    h, w, b, y = make(rng)
    y[:] = -100
    loss, gh, gw, gb = linear_cross_entropy_with_grad(h, w, y, bias=b)
    assert np.isnan(loss)  # torch: 0 / 0
    assert not gh.any() and not gw.any() and not gb.any()


def test_inputs_not_modified(rng):
    h, w, b, y = make(rng)
    keep = [a.copy() for a in (h, w, b, y)]
    linear_cross_entropy_with_grad(h, w, y, bias=b, chunk_size=17)
    for a, k in zip((h, w, b, y), keep):
        np.testing.assert_array_equal(a, k)


def test_non_contiguous_and_readonly_inputs(rng):
    h, w, b, y = make(rng)
    want = naive(h, w, b, y)
    hf = np.asfortranarray(h)
    wt = np.ascontiguousarray(w.T).T
    w_ro = w.copy()
    w_ro.setflags(write=False)
    for hh, ww in ((hf, w), (h, wt), (h[::-1][::-1], w_ro)):
        got = linear_cross_entropy_with_grad(hh, ww, y, bias=b, chunk_size=70)
        np.testing.assert_allclose(got[0], want[0], **tol(np.float64, 10))
        np.testing.assert_allclose(got[2], want[2], **tol(np.float64, 10))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch(torch, rng, dtype, reduction):
    F = torch.nn.functional
    h, w, b, y = make(rng, n=40, d=16, v=777, dtype=dtype)
    ht, wt, bt = (torch.tensor(a, requires_grad=True) for a in (h, w, b))
    ref = F.cross_entropy(F.linear(ht, wt, bt), torch.tensor(y), reduction=reduction)
    ref.sum().backward()
    loss, gh, gw, gb = linear_cross_entropy_with_grad(h, w, y, bias=b, chunk_size=100,
                                                      reduction=reduction)
    scale = float(np.abs(h @ w.T).max())
    np.testing.assert_allclose(loss, ref.detach().numpy(), **tol(dtype, scale))
    for g, r in ((gh, ht), (gw, wt), (gb, bt)):
        np.testing.assert_allclose(g, r.grad.numpy(), **tol(dtype, 10))


# ---------------------------------------------------------------------------
# memory: O(N x chunk), never N x V
# ---------------------------------------------------------------------------
def _peak(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        start = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return peak, result


def test_peak_memory_is_o_n_times_chunk(rng):
    n, d, v, chunk = 256, 32, 40_000, 500
    h, w, b, y = make(rng, n=n, d=d, v=v, ignore=False)
    full_logits = n * v * 8                      # 82 MB: what the naive way allocates
    block = n * chunk * 8                        # 1 MB
    small = 64 * n * 8 + 4 * n * d * 8 + 200_000  # O(N) vectors, O(N d) scratch
    peak, _ = _peak(lambda: linear_cross_entropy(h, w, y, bias=b, chunk_size=chunk))
    assert peak < block + small, (peak, block, small)
    assert peak < full_logits / 20
    # the gradient: its outputs (grad_weight is V x d) plus the same O(N x chunk)
    outputs = (v * d + n * d + v) * 8
    peak, _ = _peak(lambda: linear_cross_entropy_with_grad(h, w, y, bias=b,
                                                           chunk_size=chunk))
    assert peak < outputs + block + small, (peak, outputs, block, small)
    # and the naive route really needs the N x V array (the measure sees it)
    peak_naive, _ = _peak(lambda: lossmle.cross_entropy(h @ w.T + b, y))
    assert peak_naive >= full_logits


def test_peak_memory_grows_with_chunk_not_vocabulary(rng):
    n, d, chunk = 128, 16, 256
    peaks = []
    for v in (5_000, 40_000):
        h, w, b, y = make(rng, n=n, d=d, v=v, ignore=False)
        peaks.append(_peak(lambda: linear_cross_entropy(h, w, y, bias=b,
                                                        chunk_size=chunk))[0])
    # 8x the vocabulary, (about) the same peak
    assert peaks[1] < 1.5 * peaks[0] + 100_000, peaks


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_bad_input_names_the_argument(rng):
    h, w, b, y = make(rng, n=6, d=4, v=10, ignore=False)
    with pytest.raises(ValueError, match="weight has 5 features"):
        linear_cross_entropy(h, np.zeros((10, 5)), y)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        linear_cross_entropy(h, np.zeros(4), y)
    with pytest.raises(ValueError, match="bias must have shape"):
        linear_cross_entropy(h, w, y, bias=np.zeros(9))
    with pytest.raises(ValueError, match="target has shape"):
        linear_cross_entropy(h, w, y[:5])
    with pytest.raises(TypeError, match="target must hold integer"):
        linear_cross_entropy(h, w, y.astype(float))
    with pytest.raises(IndexError, match="class index 10, but weight has 10 classes"):
        linear_cross_entropy(h, w, np.full(6, 10))
    with pytest.raises(IndexError, match="class index -1"):
        linear_cross_entropy(h, w, np.full(6, -1))
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        linear_cross_entropy(h, w, y, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        linear_cross_entropy(h, w, y, chunk_size=2.5)
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, w, y, reduction="avg")
    with pytest.raises(TypeError, match="ignore_index"):
        linear_cross_entropy(h, w, y, ignore_index=None)
    with pytest.raises(TypeError, match="hidden"):
        linear_cross_entropy(h.astype(complex), w, y)
    with pytest.raises(ValueError, match="weight has no classes"):
        linear_cross_entropy(h, np.zeros((0, 4)), np.full(6, -100))


def test_docstring_examples_run():
    import doctest

    import lossmle._linear_ce as mod
    res = doctest.testmod(mod)
    assert res.attempted > 0 and res.failed == 0
