"""Inputs users really pass, for every core public function: np.memmap, big-endian,
0-stride broadcast views, negative strides, Fortran order, float16, int/bool,
labels of every integer width and Python ints, very wide rows (1 x 10_000_000)
and very many rows (10_000_000 x 2) -- all against scipy/torch/NumPy oracles --
and a tracemalloc count proving no input is copied more than once."""
import tracemalloc

import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as sst

import lossmle as lm
from conftest import tol
from oracles import np_cross_entropy, np_nll_loss, torch_loss


def _probs(rng, shape):
    raw = rng.uniform(0.05, 1.0, size=shape)
    return raw / raw.sum(axis=-1, keepdims=True)


# name -> (lossmle call on (x, p, q, t), oracle on the float64 copies)
def _calls():
    return {
        "logsumexp": (lambda x, p, q, t: lm.logsumexp(x, axis=1),
                      lambda x, p, q, t: sps.logsumexp(x, axis=1)),
        "logsumexp_b": (lambda x, p, q, t: lm.logsumexp(x, axis=0, b=p),
                        lambda x, p, q, t: sps.logsumexp(x, axis=0, b=p)),
        "softmax": (lambda x, p, q, t: lm.softmax(x, axis=1),
                    lambda x, p, q, t: sps.softmax(x, axis=1)),
        "log_softmax": (lambda x, p, q, t: lm.log_softmax(x, axis=0),
                        lambda x, p, q, t: sps.log_softmax(x, axis=0)),
        "entropy": (lambda x, p, q, t: lm.entropy(p, q, axis=1),
                    lambda x, p, q, t: sst.entropy(p, q, axis=1)),
        "kl_divergence": (lambda x, p, q, t: lm.kl_divergence(p, q),
                          lambda x, p, q, t: sps.rel_entr(p, q).sum(-1)),
        "cross_entropy": (lambda x, p, q, t: lm.cross_entropy(x, t, reduction="none"),
                          lambda x, p, q, t: np_cross_entropy(x, t, reduction="none")),
        "cross_entropy_prob": (lambda x, p, q, t: lm.cross_entropy(x, p, reduction="sum"),
                               lambda x, p, q, t: np_cross_entropy(x, p, reduction="sum")),
        "cross_entropy_with_grad": (
            lambda x, p, q, t: lm.cross_entropy_with_grad(x, t, reduction="sum")[0],
            lambda x, p, q, t: np_cross_entropy(x, t, reduction="sum")),
        "nll_loss": (lambda x, p, q, t: lm.nll_loss(x, t, reduction="none"),
                     lambda x, p, q, t: np_nll_loss(x, t, reduction="none")),
    }


CALLS = list(_calls())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    return dict(x=3 * rng.standard_normal((6, 5)), p=_probs(rng, (6, 5)), q=_probs(rng, (6, 5)),
                t=rng.integers(0, 5, size=6))


def _check(call, args64, args_in, dtype=np.float64):
    ours, oracle = _calls()[call]
    snapshots = [np.array(a, copy=True) for a in args_in]
    got = ours(*args_in)
    expected = oracle(*args64)
    assert np.asarray(got).dtype == dtype
    np.testing.assert_allclose(got, expected, **tol(dtype, 20))
    for a, s in zip(args_in, snapshots):
        np.testing.assert_array_equal(np.asarray(a), s)  # never mutated


# ---------------------------------------------------------------------------
# Layouts and byte orders
# ---------------------------------------------------------------------------
class TestLayouts:
    @pytest.mark.parametrize("call", CALLS)
    def test_memmap(self, tmp_path, data, call):
        maps = {}
        for k in ("x", "p", "q"):
            m = np.memmap(tmp_path / f"{k}.dat", dtype=np.float64, mode="w+", shape=(6, 5))
            m[:] = data[k]
            m.flush()
            maps[k] = np.memmap(tmp_path / f"{k}.dat", dtype=np.float64, mode="r", shape=(6, 5))
        _check(call, [data[k] for k in "xpqt"], [maps["x"], maps["p"], maps["q"], data["t"]])

    @pytest.mark.parametrize("order", [">f8", ">f4", "<f4"])
    @pytest.mark.parametrize("call", CALLS)
    def test_byte_order(self, data, call, order):
        conv = [data[k].astype(order) for k in "xpq"] + [data["t"].astype(">i8")]
        args64 = [c.astype(np.float64) for c in conv[:3]] + [data["t"]]
        _check(call, args64, conv, np.float32 if order.endswith("4") else np.float64)

    @pytest.mark.parametrize("call", CALLS)
    def test_broadcast_zero_stride(self, data, call):
        # every row the same, read-only, stride 0 on the row axis
        rows = {k: np.broadcast_to(data[k][2], (6, 5)) for k in "xpq"}
        t = np.broadcast_to(data["t"][:1], (6,))
        assert rows["x"].strides[0] == 0 and t.strides == (0,)
        _check(call, [np.array(rows[k]) for k in "xpq"] + [np.array(t)],
               [rows["x"], rows["p"], rows["q"], t])

    @pytest.mark.parametrize("call", CALLS)
    def test_negative_stride_fortran_and_strided(self, data, call):
        for make in (lambda a: np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1],
                     np.asfortranarray,
                     lambda a: np.repeat(a, 3, axis=1)[:, ::3]):
            args = [make(data[k]) for k in "xpq"] + [np.ascontiguousarray(data["t"][::-1])[::-1]]
            _check(call, [data[k] for k in "xpqt"], args)

    @pytest.mark.parametrize("call", CALLS)
    def test_lists_and_tuples(self, data, call):
        args = [data["x"].tolist(), tuple(map(tuple, data["p"].tolist())), data["q"].tolist(),
                tuple(data["t"].tolist())]
        _check(call, [data[k] for k in "xpqt"], args)


# ---------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------
class TestDtypes:
    @pytest.mark.parametrize("call", CALLS)
    def test_float16_computes_in_float32(self, data, call):
        conv = [data[k].astype(np.float16) for k in "xpq"] + [data["t"]]
        args64 = [c.astype(np.float64) for c in conv[:3]] + [data["t"]]
        _check(call, args64, conv, np.float32)

    @pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_])
    @pytest.mark.parametrize("call", ["logsumexp", "softmax", "log_softmax", "cross_entropy",
                                      "nll_loss", "cross_entropy_with_grad"])
    def test_integer_and_bool_values_compute_in_float64(self, data, call, dtype):
        xi = (np.round(data["x"]) % 3).astype(dtype) if dtype is not np.bool_ \
            else data["x"] > 0
        _check(call, [xi.astype(np.float64), data["p"], data["q"], data["t"]],
               [xi, data["p"], data["q"], data["t"]])

    @pytest.mark.parametrize("tdtype", [np.int8, np.int16, np.int32, np.int64, np.uint8,
                                        np.uint16, np.uint32, np.uint64])
    @pytest.mark.parametrize("fn", ["cross_entropy", "cross_entropy_with_grad", "nll_loss"])
    def test_label_dtypes(self, torch, data, fn, tdtype):
        x, t = data["x"], data["t"]
        e = torch_loss(torch, "nll_loss" if fn == "nll_loss" else "cross_entropy", x, t,
                       reduction="none")
        got = getattr(lm, fn)(x, t.astype(tdtype), reduction="none")
        np.testing.assert_allclose(got[0] if isinstance(got, tuple) else got, e,
                                   **tol(np.float64, 10))

    @pytest.mark.parametrize("label", [0, 4, np.int8(3), np.uint8(2), np.int64(1), True],
                             ids=["int0", "int4", "np_int8", "np_uint8", "np_int64", "bool"])
    def test_python_and_numpy_scalar_labels(self, data, label):
        row = data["x"][0]
        if isinstance(label, bool):  # a bool is not a class index
            with pytest.raises(TypeError, match="target"):
                lm.cross_entropy(row, label)
            return
        expected = -sps.log_softmax(row)[int(label)]
        assert lm.cross_entropy(row, label) == pytest.approx(expected, rel=1e-13)
        assert lm.nll_loss(sps.log_softmax(row), label) == pytest.approx(expected, rel=1e-13)
        loss, grad = lm.cross_entropy_with_grad(row, label)
        onehot = np.eye(5)[int(label)]
        np.testing.assert_allclose(grad, sps.softmax(row) - onehot, **tol(np.float64))

    def test_labels_as_list_of_python_ints(self, data):
        got = lm.cross_entropy(data["x"], data["t"].tolist(), reduction="none")
        np.testing.assert_allclose(got, np_cross_entropy(data["x"], data["t"], reduction="none"),
                                   **tol(np.float64, 10))


# ---------------------------------------------------------------------------
# Very wide rows and very many rows
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wide():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 10_000_000))
    x[0, 123_456] = 9.0  # a clear maximum
    return x


@pytest.fixture(scope="module")
def tall():
    rng = np.random.default_rng(4)
    return rng.standard_normal((10_000_000, 2)).astype(np.float32)


class TestHugeShapes:
    def test_wide_row_special(self, wide):
        np.testing.assert_allclose(lm.logsumexp(wide, axis=1), sps.logsumexp(wide, axis=1),
                                   rtol=1e-13)
        # log_softmax at the max and at another entry, against a NumPy closed form (fsum)
        lse = sps.logsumexp(wide[0])
        got = lm.log_softmax(wide, axis=1)
        np.testing.assert_allclose(got[0, [0, 123_456, -1]], wide[0, [0, 123_456, -1]] - lse,
                                   rtol=1e-12)
        del got
        s = lm.softmax(wide, axis=-1)
        assert s.shape == wide.shape
        assert abs(np.sum(s, dtype=np.float64) - 1.0) < 1e-9
        np.testing.assert_allclose(s[0, 123_456], np.exp(9.0 - lse), rtol=1e-12)

    def test_wide_row_losses(self, wide):
        t = np.array([123_456])
        expected = sps.logsumexp(wide[0]) - 9.0
        assert lm.cross_entropy(wide, t) == pytest.approx(expected, rel=1e-12)
        loss, grad = lm.cross_entropy_with_grad(wide, t)
        assert loss == pytest.approx(expected, rel=1e-12)
        assert grad.shape == wide.shape
        assert abs(np.sum(grad)) < 1e-9  # softmax - onehot sums to 0
        assert grad[0, 123_456] == pytest.approx(np.exp(-expected) - 1.0, rel=1e-10)

    def test_wide_row_divergences(self, wide):
        p = np.abs(wide[0])
        p /= p.sum()
        q = p[::-1]  # negative stride, no copy
        np.testing.assert_allclose(lm.kl_divergence(p, q), sps.rel_entr(p, q).sum(), rtol=1e-9)
        np.testing.assert_allclose(lm.entropy(p), sst.entropy(p), rtol=1e-12)

    def test_many_rows_losses(self, tall):
        t = (tall[:, 1] > tall[:, 0]).astype(np.int8)  # the larger logit: small losses
        none = lm.cross_entropy(tall, t, reduction="none")
        assert none.dtype == np.float32 and none.shape == (10_000_000,)
        # two classes: closed form softplus(x_other - x_target) = log1p(exp(-|d|))
        d = np.abs(tall[:, 1].astype(np.float64) - tall[:, 0])
        expected = np.log1p(np.exp(-d))
        np.testing.assert_allclose(none, expected, rtol=4e-6, atol=1e-7)
        assert lm.cross_entropy(tall, t) == pytest.approx(expected.mean(), rel=1e-5)

    def test_many_rows_special(self, tall):
        d = tall[:, 1].astype(np.float64) - tall[:, 0]
        got = lm.softmax(tall, axis=1)
        np.testing.assert_allclose(got[:, 1], 1.0 / (1.0 + np.exp(-d)), rtol=4e-6, atol=1e-7)
        del got
        got = lm.logsumexp(tall, axis=1)
        np.testing.assert_allclose(got, np.logaddexp(tall[:, 0].astype(np.float64), tall[:, 1]),
                                   rtol=4e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# No input copied more than once
# ---------------------------------------------------------------------------
def _peak_extra(fn):
    """Peak bytes allocated (NumPy reports its buffers to tracemalloc) during fn()."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    del result
    return peak


N_ROWS, N_COLS = 400, 2500  # 1_000_000 elements: 8 MB in float64
NBYTES = N_ROWS * N_COLS * 8
SLACK = 256 * 1024  # small bookkeeping (row losses are 400 doubles)


@pytest.fixture(scope="module")
def mem_inputs():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((N_ROWS, N_COLS))
    return dict(x=x, t=rng.integers(0, N_COLS, size=N_ROWS), p=np.abs(x) / np.abs(x).sum(1)[:, None])


# (id, make input from float64 x, number of input-sized copies allowed)
MEM_LAYOUTS = [
    ("C_f64", lambda x: x, 0),
    ("readonly", lambda x: _ro(x), 0),
    ("negative_stride", lambda x: x[::-1], 0),
    ("big_endian", lambda x: x.astype(">f8"), 1),
    ("fortran", lambda x: np.asfortranarray(x), 1),
    ("strided", lambda x: np.repeat(x, 2, axis=1)[:, ::2], 1),
    ("broadcast_0_stride", lambda x: np.broadcast_to(x[:1], x.shape), 1),
    ("int64", lambda x: (x * 10).astype(np.int64), 1),
]


def _ro(x):
    y = x.view()
    y.flags.writeable = False
    return y


# (id, call, input-sized outputs it returns)
MEM_CALLS = [
    ("logsumexp", lambda a, d: lm.logsumexp(a, axis=1), 0),
    ("softmax", lambda a, d: lm.softmax(a, axis=1), 1),
    ("log_softmax", lambda a, d: lm.log_softmax(a, axis=-1), 1),
    ("cross_entropy", lambda a, d: lm.cross_entropy(a, d["t"]), 0),
    ("cross_entropy_with_grad", lambda a, d: lm.cross_entropy_with_grad(a, d["t"]), 1),
    ("nll_loss", lambda a, d: lm.nll_loss(a, d["t"], reduction="none"), 0),
    ("kl_divergence", lambda a, d: lm.kl_divergence(np.abs(a), d["p"], validate=False), 1),
    ("entropy", lambda a, d: lm.entropy(d["p"], axis=1), 0),
]


@pytest.mark.parametrize("layout", [m[0] for m in MEM_LAYOUTS])
@pytest.mark.parametrize("call", [c[0] for c in MEM_CALLS])
def test_no_input_copied_more_than_once(mem_inputs, call, layout):
    make, copies = {m[0]: (m[1], m[2]) for m in MEM_LAYOUTS}[layout]
    fn, outputs = {c[0]: (c[1], c[2]) for c in MEM_CALLS}[call]
    if call == "kl_divergence":
        outputs = 1  # np.abs(a) in the test itself
    a = make(mem_inputs["x"])
    peak = _peak_extra(lambda: fn(a, mem_inputs))
    allowed = (copies + outputs) * NBYTES + SLACK
    assert peak <= allowed, (f"{call} on a {layout} input allocated {peak / NBYTES:.2f} x the "
                             f"input's size; allowed {copies} copy + {outputs} output")
