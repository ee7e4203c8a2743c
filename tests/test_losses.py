"""cross_entropy / nll_loss / cross_entropy_with_grad against torch, a NumPy
reference written here, and central finite differences.

Torch tests take the ``torch`` fixture (``pytest.importorskip``), so without
torch only they are skipped. Torch always runs in float64 on the exact input
values; float32 results are compared with a float32 tolerance.
"""
import numpy as np
import pytest
import scipy.special as sps

import lossmle as lm
from conftest import as_f64, make_layout, rtol_for, tol
from oracles import (central_fd, ld_softmax_rows, np_cross_entropy, np_nll_loss, torch_loss,
                     torch_loss_rows)

C = 5
LAYOUT_CASES = {
    # id: (logits shape, class axis)
    "1d": ((C,), -1),
    "2d": ((6, C), -1),
    "2d-axis0": ((C, 6), 0),
    "3d-axis1": ((3, C, 4), 1),
    "3d-axis-1": ((3, 4, C), -1),
    "4d-axis1": ((2, C, 3, 2), 1),
    "4d-axis-1": ((2, 3, 2, C), -1),
}
DTYPES = {"f64": np.float64, "f32": np.float32}
REDUCTIONS = ["none", "sum", "mean"]
IGNORE_MODES = {
    # id: (ignore_index passed (None = keyword omitted), value written into some targets)
    "noignore": (None, None),
    "ignore_default": (None, -100),
    "ignore_custom_collides": (2, 2),  # a valid class index used as ignore_index
}
WEIGHTS = ["noweight", "weight"]
SMOOTHING = {"ls0": 0.0, "ls0.1": 0.1, "ls1": 1.0}


# ---------------------------------------------------------------------------
# Data and oracles
# ---------------------------------------------------------------------------
def _target_shape(shape, axis):
    ax = axis % len(shape)
    return shape[:ax] + shape[ax + 1:]


def make_case(rng, layout, dtype, kind, ignore_mode="noignore", weighted=False):
    shape, axis = LAYOUT_CASES[layout]
    logits = (2.0 * rng.standard_normal(shape)).astype(dtype)
    kwargs = {}
    if kind == "index":
        tshape = _target_shape(shape, axis)
        target = rng.integers(0, C, size=tshape).astype(np.int64)
        ii, fill = IGNORE_MODES[ignore_mode]
        if ii is not None:
            kwargs["ignore_index"] = ii
        if fill is not None:
            if target.ndim == 0:
                target = np.array(fill, dtype=np.int64)
            else:
                flat = target.reshape(-1)
                flat[:: 3] = fill  # every third target ignored (some stay valid)
                flat[1] = 0 if fill != 0 else 1
    else:
        raw = rng.uniform(0.05, 1.0, size=shape)
        target = (raw / raw.sum(axis=axis, keepdims=True)).astype(dtype)
    if weighted:
        kwargs["weight"] = rng.uniform(0.2, 2.0, size=C).astype(dtype)
    return logits, target, axis, kwargs


def check_kind(got, reduction, logits, axis):
    dtype = np.asarray(logits).dtype
    if reduction == "none":
        shape = _target_shape(np.shape(logits), axis)
        assert np.shape(got) == shape
        if shape:
            assert isinstance(got, np.ndarray)
    else:
        assert isinstance(got, np.generic), type(got)
    assert np.asarray(got).dtype == dtype


def loss_tol(dtype, logits):
    return tol(dtype, scale=np.abs(as_f64(logits)).max() * 10)


def _kw(kwargs, **extra):
    out = dict(kwargs)
    out.update(extra)
    return out


def _params(kinds=("index", "prob")):
    """(kind, ignore_mode) combinations: ignore_index only applies to indices."""
    out = []
    for kind in kinds:
        modes = IGNORE_MODES if kind == "index" else ["noignore"]
        for mode in modes:
            out.append(pytest.param(kind, mode, id=f"{kind}-{mode}"))
    return out


GRID_DECORATORS = [
    pytest.mark.parametrize("smoothing", list(SMOOTHING), ids=list(SMOOTHING)),
    pytest.mark.parametrize("reduction", REDUCTIONS),
    pytest.mark.parametrize("weighted", WEIGHTS),
    pytest.mark.parametrize("kind,ignore_mode", _params()),
    pytest.mark.parametrize("dtype", list(DTYPES)),
    pytest.mark.parametrize("layout", list(LAYOUT_CASES)),
]


def full_grid(fn):
    for deco in GRID_DECORATORS:
        fn = deco(fn)
    return fn


# ---------------------------------------------------------------------------
# torch parity: the full grid
# ---------------------------------------------------------------------------
class TestCrossEntropyVsTorch:
    @full_grid
    def test_loss(self, torch, rng, layout, dtype, kind, ignore_mode, weighted, reduction, smoothing):
        dtype = DTYPES[dtype]
        logits, target, axis, kw = make_case(rng, layout, dtype, kind, ignore_mode, weighted == "weight")
        kw = _kw(kw, reduction=reduction, label_smoothing=SMOOTHING[smoothing])
        logits_copy, target_copy = logits.copy(), target.copy()
        expected = torch_loss(torch, "cross_entropy", logits, target, axis, **kw)
        got = lm.cross_entropy(logits, target, axis=axis, **kw)
        check_kind(got, reduction, logits, axis)
        np.testing.assert_allclose(got, expected, equal_nan=True, **loss_tol(dtype, logits))
        np.testing.assert_array_equal(logits, logits_copy)
        np.testing.assert_array_equal(target, target_copy)

    @full_grid
    def test_loss_and_grad(self, torch, rng, layout, dtype, kind, ignore_mode, weighted, reduction,
                           smoothing):
        dtype = DTYPES[dtype]
        logits, target, axis, kw = make_case(rng, layout, dtype, kind, ignore_mode, weighted == "weight")
        kw = _kw(kw, reduction=reduction, label_smoothing=SMOOTHING[smoothing])
        logits_copy = logits.copy()
        e_loss, e_grad = torch_loss(torch, "cross_entropy", logits, target, axis, with_grad=True, **kw)
        loss, grad = lm.cross_entropy_with_grad(logits, target, axis=axis, **kw)
        check_kind(loss, reduction, logits, axis)
        assert isinstance(grad, np.ndarray)
        assert grad.shape == logits.shape
        assert grad.dtype == logits.dtype
        np.testing.assert_allclose(loss, e_loss, equal_nan=True, **loss_tol(dtype, logits))
        # gradient entries are O(1) (or O(1/N) for mean): absolute tolerance of the dtype
        np.testing.assert_allclose(grad, e_grad, rtol=rtol_for(dtype), atol=4 * rtol_for(dtype),
                                   equal_nan=True)
        np.testing.assert_array_equal(logits, logits_copy)


class TestLongRowsWithGradVsTorch:
    """Rows longer than the across-rows kernels' reach with the gradient: the
    one-exp row (exps kept in the gradient, then scaled by 1 / sum), against
    torch in float64, with the rows that row must hand back to the exact
    code (nan, inf, all -inf) and the ones it must keep exact (the target
    at the max, ties there, masked classes, exps in the subnormals)."""

    @staticmethod
    def _rows(rng, n, dtype):
        x = rng.normal(size=(12, n)) * 4
        x[1, 5] = x[1].max() + 3.0            # the target (below) alone at the max
        x[2, [0, 7, n - 1]] = x[2].max() + 1  # ties at the max, the target one of them
        x[3, : n // 2] = -np.inf              # masked classes
        x[4, 1::2] = -1e4                     # exps below the subnormals / at zero
        x[5, 3] = x[5].max() - (700 if dtype == np.float64 else 95)  # a subnormal exp
        x[6, 2] = np.nan
        x[7, 4] = np.inf
        x[8] = -np.inf
        x[9] = 2.5                            # every value at the max
        y = rng.integers(0, n, 12)
        y[1], y[2], y[3], y[9] = 5, 7, n - 1, 0
        return x.astype(dtype), y

    @pytest.mark.parametrize("n", [65, 301, 2049, 4099])
    @pytest.mark.parametrize("dtype", list(DTYPES))
    @pytest.mark.parametrize("opts", ["plain", "weight", "smoothing", "weight+smoothing",
                                      "ignore", "sum", "none"])
    def test_loss_and_grad(self, torch, rng, n, dtype, opts):
        dtype = DTYPES[dtype]
        x, y = self._rows(rng, n, dtype)
        kw = dict(axis=-1, reduction={"sum": "sum", "none": "none"}.get(opts, "mean"),
                  ignore_index=-100)
        if "weight" in opts:
            kw["weight"] = rng.uniform(0.5, 2.0, n)
        if "smoothing" in opts:
            kw["label_smoothing"] = 0.2
        if opts == "ignore":
            y[[0, 10]] = -100
        x_copy = x.copy()
        e_loss, e_grad = torch_loss_rows(torch, "cross_entropy", x, y, kw)
        loss, grad = lm.cross_entropy_with_grad(x, y, **kw)
        grad_out = np.full_like(x, 7.0)
        loss2, grad2 = lm.cross_entropy_with_grad(x, y, grad_out=grad_out, **kw)
        np.testing.assert_array_equal(x, x_copy)
        assert grad2 is grad_out
        np.testing.assert_array_equal(grad2, grad)
        np.testing.assert_array_equal(loss2, loss)
        rtol = rtol_for(dtype)
        np.testing.assert_allclose(loss, e_loss, rtol=rtol, atol=0, equal_nan=True)
        scale = np.nanmax(np.abs(e_grad[np.isfinite(e_grad)]))
        np.testing.assert_allclose(grad, e_grad, rtol=rtol, atol=4 * rtol * scale,
                                   equal_nan=True)

    @pytest.mark.parametrize("dtype", list(DTYPES))
    def test_probabilities_entrywise(self, rng, dtype):
        # without weights or smoothing every entry but the target's is p_k
        # (reduction 'sum'): each within the rounding of d = x - max (|d| / 2
        # ulp of exp(d)) and a few ulp of the long-double softmax's - not
        # only within the largest entry's.  (exp((x - max) - log_s) adds
        # log_s's rounding on top: ~7.5e-15 here in float64.)
        if np.finfo(np.longdouble).nmant < 63:
            pytest.skip("no 80-bit long double on this platform")
        dtype = DTYPES[dtype]
        x = (rng.normal(size=(16, 3001)) * 6).astype(dtype)
        y = rng.integers(0, 3001, 16)
        e_grad = ld_softmax_rows(x)
        _, grad = lm.cross_entropy_with_grad(x, y, reduction="sum")
        others = np.ones(x.shape, bool)
        others[np.arange(16), y] = False
        big = others & (np.abs(e_grad) > np.finfo(dtype).tiny * 1e3)
        d = np.abs(x - x.max(axis=-1, keepdims=True)).astype(np.float64)[big]
        rel = np.abs(grad[big] - e_grad[big]) / np.abs(e_grad[big])
        bound = (d / 2 + 6) * np.finfo(dtype).eps
        assert (rel <= bound).all(), (rel / bound).max()

    @pytest.mark.parametrize("n", [301, 4099])
    @pytest.mark.parametrize("dtype", list(DTYPES))
    def test_probability_targets(self, torch, rng, n, dtype):
        # long rows with a probability target: the target row is fetched while
        # the exps run, then read with the logits
        dtype = DTYPES[dtype]
        x = (rng.normal(size=(9, n)) * 4).astype(dtype)
        t = sps.softmax(rng.normal(size=(9, n)), axis=-1).astype(dtype)
        kw = dict(axis=-1, reduction="none", ignore_index=-100)
        e_loss, e_grad = torch_loss_rows(torch, "cross_entropy", x, t, kw)
        np.testing.assert_allclose(lm.cross_entropy(x, t, reduction="none"), e_loss,
                                   rtol=rtol_for(dtype), atol=0)
        loss, grad = lm.cross_entropy_with_grad(x, t, reduction="none")
        np.testing.assert_allclose(loss, e_loss, rtol=rtol_for(dtype), atol=0)
        np.testing.assert_allclose(grad, e_grad, rtol=rtol_for(dtype),
                                   atol=4 * rtol_for(dtype) * np.abs(e_grad).max())


class TestNllLossVsTorch:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("weighted", WEIGHTS)
    @pytest.mark.parametrize("ignore_mode", list(IGNORE_MODES))
    @pytest.mark.parametrize("dtype", list(DTYPES))
    @pytest.mark.parametrize("layout", list(LAYOUT_CASES))
    def test_loss(self, torch, rng, layout, dtype, ignore_mode, weighted, reduction):
        dtype = DTYPES[dtype]
        logits, target, axis, kw = make_case(rng, layout, dtype, "index", ignore_mode, weighted == "weight")
        log_probs = sps.log_softmax(as_f64(logits), axis=axis).astype(dtype)
        kw = _kw(kw, reduction=reduction)
        expected = torch_loss(torch, "nll_loss", log_probs, target, axis, **kw)
        got = lm.nll_loss(log_probs, target, axis=axis, **kw)
        check_kind(got, reduction, log_probs, axis)
        np.testing.assert_allclose(got, expected, equal_nan=True, **loss_tol(dtype, log_probs))

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_arbitrary_scores_not_normalised(self, torch, rng, reduction):
        # nll_loss just gathers -x[target]; it must not renormalise its input
        x = 5.0 * rng.standard_normal((7, 4))
        t = rng.integers(0, 4, size=7)
        np.testing.assert_allclose(
            lm.nll_loss(x, t, reduction=reduction),
            torch_loss(torch, "nll_loss", x, t, -1, reduction=reduction),
            rtol=rtol_for(np.float64),
        )

    def test_overflowing_products_near_float_max(self, torch):
        # fuzz case: nll_loss([1e308], 0, weight=[2]) is -w x = -inf, torch's too;
        # a negative (or -inf) nll_loss is right for scores that are not log-probs
        x = np.array([[1e308, -1e308, 5.0]])
        w = np.array([2.0, 2.0, 1.0])
        for t in ([0], [1], [2]):
            t = np.array(t)
            np.testing.assert_array_equal(
                lm.nll_loss(x, t, weight=w, reduction="none"),
                torch_loss(torch, "nll_loss", x, t, -1, reduction="none", weight=w))

    def test_zero_target_on_overflowed_log_prob_is_torch_nan(self, torch):
        # fuzz case: logits [1e308, -1e308] overflow log_softmax[1] to -inf; a
        # probability target 0 there gives torch's 0 * -inf = nan, lossmle's too
        x = np.array([[1e308, -1e308]])
        t = np.array([[0.0, 0.0]])
        expected = torch_loss(torch, "cross_entropy", x, t, -1, reduction="none")
        assert np.isnan(expected[0])
        np.testing.assert_array_equal(lm.cross_entropy(x, t, reduction="none"), expected)
        np.testing.assert_array_equal(lm.cross_entropy_with_grad(x, t, reduction="none")[0],
                                      expected)


# ---------------------------------------------------------------------------
# torch-independent: the NumPy reference above and finite differences
# ---------------------------------------------------------------------------
class TestCrossEntropyVsNumpyReference:
    @full_grid
    def test_loss(self, rng, layout, dtype, kind, ignore_mode, weighted, reduction, smoothing):
        dtype = DTYPES[dtype]
        logits, target, axis, kw = make_case(rng, layout, dtype, kind, ignore_mode, weighted == "weight")
        kw = _kw(kw, reduction=reduction, label_smoothing=SMOOTHING[smoothing])
        expected = np_cross_entropy(logits, target, axis=axis, **kw)
        got = lm.cross_entropy(logits, target, axis=axis, **kw)
        check_kind(got, reduction, logits, axis)
        np.testing.assert_allclose(got, expected, equal_nan=True, **loss_tol(dtype, logits))
        loss, _ = lm.cross_entropy_with_grad(logits, target, axis=axis, **kw)
        np.testing.assert_allclose(loss, expected, equal_nan=True, **loss_tol(dtype, logits))

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("weighted", WEIGHTS)
    @pytest.mark.parametrize("ignore_mode", list(IGNORE_MODES))
    @pytest.mark.parametrize("dtype", list(DTYPES))
    @pytest.mark.parametrize("layout", list(LAYOUT_CASES))
    def test_nll_loss(self, rng, layout, dtype, ignore_mode, weighted, reduction):
        dtype = DTYPES[dtype]
        logits, target, axis, kw = make_case(rng, layout, dtype, "index", ignore_mode, weighted == "weight")
        kw = _kw(kw, reduction=reduction)
        got = lm.nll_loss(logits, target, axis=axis, **kw)
        check_kind(got, reduction, logits, axis)
        np.testing.assert_allclose(got, np_nll_loss(logits, target, axis=axis, **kw),
                                   equal_nan=True, **loss_tol(dtype, logits))

    def test_hand_computed_two_class(self):
        # logits [0, log 3] -> p = [1/4, 3/4]; target 1 -> -log(3/4)
        got = lm.cross_entropy(np.array([[0.0, np.log(3.0)]]), np.array([1]))
        assert got == pytest.approx(-np.log(0.75), rel=rtol_for(np.float64))
        got = lm.cross_entropy(np.array([[0.0, np.log(3.0)]]), np.array([[0.5, 0.5]]))
        assert got == pytest.approx(-0.5 * np.log(0.25) - 0.5 * np.log(0.75), rel=rtol_for(np.float64))


class TestGradientFiniteDifferences:
    @pytest.mark.parametrize("smoothing", [0.0, 0.2], ids=["ls0", "ls0.2"])
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("weighted", WEIGHTS)
    @pytest.mark.parametrize("kind,ignore_mode", _params())
    @pytest.mark.parametrize("layout", ["1d", "2d", "3d-axis1", "4d-axis-1"])
    def test_grad_matches_fd(self, rng, layout, kind, ignore_mode, weighted, reduction, smoothing):
        logits, target, axis, kw = make_case(rng, layout, np.float64, kind, ignore_mode,
                                             weighted == "weight")
        kw = _kw(kw, reduction=reduction, label_smoothing=smoothing)
        x = logits.copy()
        if np.isnan(np_cross_entropy(x, target, axis=axis, **kw)).any():
            # every target ignored under "mean": the loss is 0/0 = nan, no finite
            # differences exist; torch's autograd (the contract) gives a zero gradient
            expected = np.zeros_like(x)
        else:
            expected = central_fd(lambda z: np_cross_entropy(z, target, axis=axis, **kw), x)
        _, grad = lm.cross_entropy_with_grad(logits, target, axis=axis, **kw)
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------
# Layouts, dtypes of targets, read-only inputs
# ---------------------------------------------------------------------------
class TestLayoutsAndTargets:
    @pytest.mark.parametrize("layout", ["F", "transposed", "strided", "negstride", "readonly"])
    @pytest.mark.parametrize("axis", [0, 1, -1], ids=lambda a: f"axis{a}")
    @pytest.mark.parametrize("kind", ["index", "prob"])
    def test_logits_layouts(self, rng, layout, axis, kind):
        shape = (4, 3, 5)
        logits = rng.standard_normal(shape)
        n_classes = shape[axis]
        if kind == "index":
            target = rng.integers(0, n_classes, size=_target_shape(shape, axis))
        else:
            target = sps.softmax(rng.standard_normal(shape), axis=axis)
        lg = make_layout(logits, layout)
        tg = make_layout(target, layout)
        for reduction in REDUCTIONS:
            expected = np_cross_entropy(logits, target, axis=axis, reduction=reduction)
            got = lm.cross_entropy(lg, tg, axis=axis, reduction=reduction)
            np.testing.assert_allclose(got, expected, **tol(np.float64, 10))
            loss, grad = lm.cross_entropy_with_grad(lg, tg, axis=axis, reduction=reduction)
            fd = central_fd(
                lambda z: np_cross_entropy(z, target, axis=axis, reduction=reduction), logits.copy()
            )
            np.testing.assert_allclose(loss, expected, **tol(np.float64, 10))
            np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(lm.nll_loss(lg, tg if kind == "index" else target.argmax(axis),
                                                   axis=axis, reduction=reduction),
                                       np_nll_loss(logits, target if kind == "index"
                                                   else target.argmax(axis),
                                                   axis=axis, reduction=reduction),
                                       **tol(np.float64, 10))
        np.testing.assert_array_equal(np.asarray(lg), logits)

    @pytest.mark.parametrize("tdtype", [np.int8, np.int16, np.int32, np.int64, np.uint8,
                                        np.uint16, np.intp], ids=lambda d: np.dtype(d).name)
    def test_target_integer_dtypes(self, rng, tdtype):
        logits = rng.standard_normal((6, 4))
        target = rng.integers(0, 4, size=6)
        expected = np_cross_entropy(logits, target, reduction="none")
        got = lm.cross_entropy(logits, target.astype(tdtype), reduction="none")
        np.testing.assert_allclose(got, expected, rtol=rtol_for(np.float64))
        np.testing.assert_allclose(lm.nll_loss(logits, target.astype(tdtype), reduction="none"),
                                   np_nll_loss(logits, target, reduction="none"),
                                   rtol=rtol_for(np.float64))

    def test_target_as_list_and_python_int(self, rng):
        logits = rng.standard_normal((3, 4))
        target = [0, 3, 1]
        np.testing.assert_allclose(lm.cross_entropy(logits.tolist(), target, reduction="none"),
                                   np_cross_entropy(logits, np.array(target), reduction="none"),
                                   rtol=rtol_for(np.float64))
        row = logits[1]
        assert lm.cross_entropy(row, 3, reduction="sum") == pytest.approx(
            -sps.log_softmax(row)[3], rel=rtol_for(np.float64))

    def test_weight_as_list(self, rng):
        logits = rng.standard_normal((5, 3))
        t = np.array([0, 1, 2, 2, 1])
        w = [0.5, 1.5, 3.0]
        np.testing.assert_allclose(lm.cross_entropy(logits, t, weight=w),
                                   np_cross_entropy(logits, t, weight=np.array(w)),
                                   rtol=rtol_for(np.float64))

    def test_float32_logits_int_target_weight_f64(self, rng):
        # weight dtype need not match; result dtype follows logits
        logits = rng.standard_normal((5, 3)).astype(np.float32)
        t = np.array([0, 1, 2, 2, 1])
        w = np.array([0.5, 1.5, 3.0])
        got = lm.cross_entropy(logits, t, weight=w)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, np_cross_entropy(logits, t, weight=w), **tol(np.float32, 10))

    def test_integer_logits_promote_to_float64(self, rng):
        logits = rng.integers(-3, 4, size=(5, 3))
        t = np.array([0, 1, 2, 2, 1])
        got = lm.cross_entropy(logits, t, reduction="none")
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, np_cross_entropy(logits, t, reduction="none"),
                                   rtol=rtol_for(np.float64))

    def test_float16_logits_compute_in_float32(self, rng):
        logits = rng.standard_normal((5, 3)).astype(np.float16)
        t = np.array([0, 1, 2, 2, 1])
        got = lm.cross_entropy(logits, t, reduction="none")
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, np_cross_entropy(logits, t, reduction="none"),
                                   **tol(np.float32, 10))


class TestReductionsConsistent:
    """mean / sum / none relations that hold independently of any oracle."""

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_ignore_index_does_not_apply_to_probability_targets(self, rng, reduction):
        # torch: ignore_index only concerns class-index targets
        logits = rng.standard_normal((5, 3))
        p = sps.softmax(rng.standard_normal((5, 3)), axis=1)
        expected = np_cross_entropy(logits, p, reduction=reduction)
        for ii in (0, 1, -100):
            np.testing.assert_allclose(
                lm.cross_entropy(logits, p, ignore_index=ii, reduction=reduction), expected,
                rtol=rtol_for(np.float64))

    @pytest.mark.parametrize("weighted", WEIGHTS)
    def test_mean_is_weighted_average(self, rng, weighted):
        logits = rng.standard_normal((8, 4))
        t = rng.integers(0, 4, size=8)
        t[2] = -100
        w = rng.uniform(0.5, 2, size=4) if weighted == "weight" else np.ones(4)
        kw = {"weight": w} if weighted == "weight" else {}
        none = lm.cross_entropy(logits, t, reduction="none", **kw)
        assert none[2] == 0.0
        total = lm.cross_entropy(logits, t, reduction="sum", **kw)
        mean = lm.cross_entropy(logits, t, reduction="mean", **kw)
        valid = t != -100
        denom = w[np.where(valid, t, 0)][valid].sum()
        np.testing.assert_allclose(total, np.sum(none), rtol=rtol_for(np.float64))
        np.testing.assert_allclose(mean, np.sum(none) / denom, rtol=rtol_for(np.float64))
