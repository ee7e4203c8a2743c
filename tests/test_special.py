"""logsumexp / softmax / log_softmax against scipy.special (and mpmath).

Float32 inputs are compared with the scipy result computed on the same values
in float64 (a strictly better oracle), with a float32 tolerance; the result
must also *be* float32.
"""
import itertools

import numpy as np
import pytest
import scipy.special as sps

import lossmle as lm
from conftest import LAYOUTS, as_f64, make_layout, quiet, result_dtype, rtol_for, tol

# ---------------------------------------------------------------------------
# The grid: 1-D..4-D, every axis (positive and negative), pairs, all, None
# ---------------------------------------------------------------------------
SHAPES = {"1d": (7,), "2d": (4, 5), "3d": (3, 4, 5), "4d": (2, 3, 4, 5)}


def _axes(ndim):
    axes = [None]
    axes += list(range(ndim))
    axes += list(range(-ndim, 0))
    if ndim >= 2:
        axes += list(itertools.combinations(range(ndim), 2))
        axes.append((-1, 0))
    if ndim >= 3:
        axes.append(tuple(range(ndim)))
        axes.append((0, -1, 1))
    return axes


def _axis_id(axis):
    if axis is None:
        return "axisNone"
    if isinstance(axis, tuple):
        return "axis(" + ",".join(map(str, axis)) + ")"
    return f"axis{axis}"


GRID = [
    pytest.param(shape, axis, id=f"{name}-{_axis_id(axis)}")
    for name, shape in SHAPES.items()
    for axis in _axes(len(shape))
]

DTYPES = [
    pytest.param(np.float64, id="f64"),
    pytest.param(np.float32, id="f32"),
    pytest.param(np.int64, id="i64"),
]


def _random(rng, shape, dtype, scale=3.0):
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-6, 7, size=shape).astype(dtype)
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _check_kind(got, expected, in_dtype):
    """Arrays stay arrays, full reductions are numpy scalars (as scipy)."""
    exp_dtype = result_dtype(in_dtype)
    if np.ndim(expected) == 0 and not isinstance(expected, np.ndarray):
        assert isinstance(got, np.generic), type(got)
    else:
        assert isinstance(got, np.ndarray), type(got)
    assert np.shape(got) == np.shape(expected)
    assert np.asarray(got).dtype == exp_dtype


# ---------------------------------------------------------------------------
# logsumexp
# ---------------------------------------------------------------------------
class TestLogsumexpGrid:
    @pytest.mark.parametrize("keepdims", [False, True], ids=["nokeep", "keepdims"])
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape,axis", GRID)
    def test_matches_scipy(self, rng, shape, axis, keepdims, dtype):
        a = _random(rng, shape, dtype)
        a_copy = a.copy()
        expected = sps.logsumexp(as_f64(a), axis=axis, keepdims=keepdims)
        got = lm.logsumexp(a, axis=axis, keepdims=keepdims)
        _check_kind(got, expected, dtype)
        np.testing.assert_allclose(got, expected, **tol(result_dtype(dtype)))
        np.testing.assert_array_equal(a, a_copy)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape,axis", GRID)
    def test_return_sign_positive(self, rng, shape, axis, dtype):
        a = _random(rng, shape, dtype)
        val, sign = lm.logsumexp(a, axis=axis, return_sign=True)
        e_val, e_sign = sps.logsumexp(as_f64(a), axis=axis, return_sign=True)
        np.testing.assert_allclose(val, e_val, **tol(result_dtype(dtype)))
        np.testing.assert_array_equal(sign, e_sign)
        assert np.shape(sign) == np.shape(e_sign)


B_CASES = {
    # id: (a_shape, b_shape or 'scalar', axis, signed)
    "same_shape-axis-1": ((4, 5), (4, 5), -1, False),
    "same_shape-axis0": ((4, 5), (4, 5), 0, False),
    "same_shape-axisNone": ((4, 5), (4, 5), None, False),
    "bcast_row-axis-1": ((4, 5), (5,), -1, False),
    "bcast_row-axis0": ((4, 5), (5,), 0, False),
    "bcast_col-axis-1": ((4, 5), (4, 1), -1, False),
    "scalar_b-axis1": ((4, 5), "scalar", 1, False),
    "b_larger_than_a-axis-1": ((5,), (3, 5), -1, False),
    "3d-tuple_axis": ((3, 4, 5), (3, 4, 5), (0, 2), False),
    "3d-bcast_mid": ((3, 4, 5), (1, 4, 1), 1, False),
    "signed-axis-1": ((6, 5), (6, 5), -1, True),
    "signed-axis0": ((6, 5), (6, 5), 0, True),
    "signed-axisNone": ((6, 5), (6, 5), None, True),
    "signed-bcast_row": ((6, 5), (5,), -1, True),
    "signed-3d-tuple": ((3, 4, 5), (3, 4, 5), (1, 2), True),
}


def _make_b(rng, a_shape, b_shape, signed):
    if b_shape == "scalar":
        return 2.5
    b = rng.uniform(0.1, 2.0, size=b_shape)
    if signed:
        b *= rng.choice([-1.0, 1.0], size=b_shape)
    return b


class TestLogsumexpWeights:
    @pytest.mark.parametrize("keepdims", [False, True], ids=["nokeep", "keepdims"])
    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
    @pytest.mark.parametrize("case", list(B_CASES), ids=list(B_CASES))
    def test_return_sign(self, rng, case, dtype, keepdims):
        a_shape, b_shape, axis, signed = B_CASES[case]
        a = _random(rng, a_shape, dtype)
        b = _make_b(rng, a_shape, b_shape, signed)
        b_in = b if np.isscalar(b) else b.astype(dtype)
        e_val, e_sign = sps.logsumexp(
            as_f64(a), axis=axis, b=as_f64(b_in), keepdims=keepdims, return_sign=True
        )
        b_copy = np.copy(b_in)
        val, sign = lm.logsumexp(a, axis=axis, b=b_in, keepdims=keepdims, return_sign=True)
        assert np.shape(val) == np.shape(e_val)
        np.testing.assert_array_equal(sign, e_sign)
        # sums of signed terms may cancel: absolute tolerance on the log
        np.testing.assert_allclose(val, e_val, **tol(result_dtype(dtype), scale=1e3))
        np.testing.assert_array_equal(b_in, b_copy)

    @pytest.mark.parametrize("case", list(B_CASES), ids=list(B_CASES))
    def test_without_sign_negative_sum_is_nan(self, rng, case):
        a_shape, b_shape, axis, signed = B_CASES[case]
        a = _random(rng, a_shape, np.float64)
        b = _make_b(rng, a_shape, b_shape, signed)
        expected = quiet(sps.logsumexp, a, axis=axis, b=b)
        got = lm.logsumexp(a, axis=axis, b=b)
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_allclose(got, expected, equal_nan=True, **tol(np.float64, 1e3))

    def test_zero_weights_give_minus_inf_and_sign_zero(self):
        a = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
        b = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]])
        e_val, e_sign = quiet(sps.logsumexp, a, b=b, axis=-1, return_sign=True)
        val, sign = lm.logsumexp(a, b=b, axis=-1, return_sign=True)
        np.testing.assert_array_equal(val[0], -np.inf)
        np.testing.assert_array_equal(sign, e_sign)
        np.testing.assert_allclose(val, e_val, rtol=rtol_for(np.float64))

    def test_weights_cancel_exactly(self):
        # b = [1, -1] on equal terms: the sum is exactly 0
        val, sign = lm.logsumexp(np.array([3.0, 3.0]), b=np.array([1.0, -1.0]), return_sign=True)
        assert val == -np.inf
        assert sign == 0.0


# ---------------------------------------------------------------------------
# softmax / log_softmax
# ---------------------------------------------------------------------------
class TestSoftmaxGrid:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape,axis", GRID)
    def test_softmax_matches_scipy(self, rng, shape, axis, dtype):
        x = _random(rng, shape, dtype)
        x_copy = x.copy()
        expected = sps.softmax(as_f64(x), axis=axis)
        got = lm.softmax(x, axis=axis)
        assert isinstance(got, np.ndarray)
        assert got.shape == x.shape
        assert got.dtype == result_dtype(dtype)
        np.testing.assert_allclose(got, expected, rtol=rtol_for(got.dtype), atol=0)
        np.testing.assert_array_equal(x, x_copy)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape,axis", GRID)
    def test_log_softmax_matches_scipy(self, rng, shape, axis, dtype):
        x = _random(rng, shape, dtype)
        x_copy = x.copy()
        expected = sps.log_softmax(as_f64(x), axis=axis)
        got = lm.log_softmax(x, axis=axis)
        assert isinstance(got, np.ndarray)
        assert got.shape == x.shape
        assert got.dtype == result_dtype(dtype)
        # x - lse cancels: absolute tolerance scaled by the input magnitude
        scale = np.abs(as_f64(x)).max() + np.log(x.size)
        np.testing.assert_allclose(got, expected, **tol(got.dtype, scale))
        np.testing.assert_array_equal(x, x_copy)


# ---------------------------------------------------------------------------
# Layouts: Fortran, transposed, strided, negative strides, read-only, lists
# ---------------------------------------------------------------------------
LAYOUT_AXES = [None, 0, 1, -1, (0, 2)]
FUNCS = {
    "logsumexp": (lm.logsumexp, sps.logsumexp),
    "softmax": (lm.softmax, sps.softmax),
    "log_softmax": (lm.log_softmax, sps.log_softmax),
}


class TestLayouts:
    @pytest.mark.parametrize("axis", LAYOUT_AXES, ids=_axis_id)
    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("func", list(FUNCS))
    def test_layout_matches_scipy(self, rng, func, layout, dtype, axis):
        ours, oracle = FUNCS[func]
        x = _random(rng, (6, 5, 4), dtype)
        x_in = make_layout(x, layout)
        before = np.array(x_in, copy=True)
        expected = oracle(as_f64(x), axis=axis)
        got = ours(x_in, axis=axis)
        out_dtype = np.float64 if layout == "list" else result_dtype(dtype)
        assert np.asarray(got).dtype == out_dtype
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_allclose(got, expected, **tol(out_dtype, 20.0))
        np.testing.assert_array_equal(np.asarray(x_in), before)

    @pytest.mark.parametrize("func", list(FUNCS))
    def test_broadcast_zero_stride_view(self, rng, func):
        ours, oracle = FUNCS[func]
        row = rng.standard_normal(5)
        x = np.broadcast_to(row, (4, 5))  # read-only, stride 0 on axis 0
        for axis in (0, -1, None):
            np.testing.assert_allclose(
                ours(x, axis=axis), oracle(np.array(x), axis=axis), **tol(np.float64, 5)
            )

    @pytest.mark.parametrize("b_layout", ["F", "transposed", "strided", "negstride", "readonly"])
    def test_logsumexp_weights_layouts(self, rng, b_layout):
        a = rng.standard_normal((5, 6))
        b = rng.uniform(-1, 1, size=(5, 6))
        b_in = make_layout(b, b_layout)
        e_val, e_sign = sps.logsumexp(a, b=b, axis=1, return_sign=True)
        val, sign = lm.logsumexp(make_layout(a, "F"), b=b_in, axis=1, return_sign=True)
        np.testing.assert_array_equal(sign, e_sign)
        np.testing.assert_allclose(val, e_val, **tol(np.float64, 1e3))
        np.testing.assert_array_equal(b_in, b)


# ---------------------------------------------------------------------------
# Input dtypes: integer / bool promote to float64, float16 computes in float32
# ---------------------------------------------------------------------------
IN_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_, np.float16]


class TestInputDtypes:
    @pytest.mark.parametrize("dtype", IN_DTYPES, ids=lambda d: np.dtype(d).name)
    @pytest.mark.parametrize("func", list(FUNCS))
    def test_promotion(self, rng, func, dtype):
        ours, oracle = FUNCS[func]
        if dtype is np.bool_:
            x = rng.integers(0, 2, size=(3, 4)).astype(bool)
        elif dtype is np.float16:
            x = rng.standard_normal((3, 4)).astype(np.float16)
        else:
            x = rng.integers(0, 5, size=(3, 4)).astype(dtype)
        expected = oracle(as_f64(x), axis=-1)
        got = ours(x, axis=-1)
        out_dtype = result_dtype(dtype)
        assert got.dtype == out_dtype
        np.testing.assert_allclose(got, expected, **tol(out_dtype, 5))

    def test_big_endian_input(self, rng):
        x = rng.standard_normal((3, 4))
        xb = x.astype(">f8")
        np.testing.assert_allclose(lm.logsumexp(xb, axis=1), sps.logsumexp(x, axis=1),
                                   rtol=rtol_for(np.float64))
        np.testing.assert_allclose(lm.softmax(xb, axis=0), sps.softmax(x, axis=0),
                                   rtol=rtol_for(np.float64))


# ---------------------------------------------------------------------------
# Special values: +-1e308, f32 +-3e38, rows of -inf, +inf, nan
# ---------------------------------------------------------------------------
INF, NAN = np.inf, np.nan
SPECIAL_ROWS = {
    "f64_pos_1e308": ([1e308, 1e308, 1.0], np.float64),
    "f64_neg_1e308": ([-1e308, -1e308, -1e308], np.float64),
    "f64_mixed_1e308": ([1e308, -1e308, 0.0], np.float64),
    "f64_max": ([np.finfo(np.float64).max] * 3, np.float64),
    "f32_pos_3e38": ([3e38, 3e38, -3e38], np.float32),
    "f32_neg_3e38": ([-3e38, -3e38, -3e38], np.float32),
    "f32_max": ([np.finfo(np.float32).max] * 3, np.float32),
    "all_neg_inf": ([-INF, -INF, -INF], np.float64),
    "all_neg_inf_f32": ([-INF, -INF, -INF], np.float32),
    "some_neg_inf": ([-INF, 0.0, 1.0], np.float64),
    "pos_inf": ([INF, 0.0, 1.0], np.float64),
    "two_pos_inf": ([INF, INF, 0.0], np.float64),
    "pos_and_neg_inf": ([INF, -INF, 0.0], np.float64),
    "nan": ([NAN, 0.0, 1.0], np.float64),
    "nan_f32": ([0.0, NAN, 1.0], np.float32),
    "nan_and_inf": ([NAN, INF, -INF], np.float64),
    "underflow_spread": ([0.0, -1000.0, -745.5], np.float64),
    "tiny": ([1e-300, -1e-300, 5e-324], np.float64),
}


class TestSpecialValues:
    @pytest.mark.parametrize("axis", [-1, 0, None], ids=_axis_id)
    @pytest.mark.parametrize("func", list(FUNCS))
    @pytest.mark.parametrize("case", list(SPECIAL_ROWS))
    def test_matches_scipy(self, rng, case, func, axis):
        ours, oracle = FUNCS[func]
        row, dtype = SPECIAL_ROWS[case]
        x = np.stack([np.asarray(row, dtype=dtype),
                      rng.standard_normal(3).astype(dtype)])
        expected = quiet(oracle, as_f64(x), axis=axis)
        got = ours(x, axis=axis)
        assert np.asarray(got).dtype == np.dtype(dtype)
        assert np.shape(got) == np.shape(expected)
        # expected is computed in float64; cast to the result dtype (e.g. inf for >f32 max)
        expected = quiet(np.asarray(expected).astype, dtype)
        np.testing.assert_allclose(got, expected, equal_nan=True, **tol(dtype, 5))

    @pytest.mark.parametrize("case", list(SPECIAL_ROWS))
    def test_logsumexp_return_sign_special(self, case):
        row, dtype = SPECIAL_ROWS[case]
        x = np.asarray(row, dtype=dtype)
        e_val, e_sign = quiet(sps.logsumexp, as_f64(x), return_sign=True)
        val, sign = lm.logsumexp(x, return_sign=True)
        np.testing.assert_allclose(val, quiet(np.asarray(e_val).astype, dtype),
                                   equal_nan=True, rtol=rtol_for(dtype))
        np.testing.assert_array_equal(sign, e_sign)


# ---------------------------------------------------------------------------
# Precision beyond scipy: log_softmax at the row maximum (scipy#19521)
# ---------------------------------------------------------------------------
class TestLogSoftmaxPrecision:
    def test_documented_value(self):
        got = lm.log_softmax(np.array([0.0, -40.0]))
        assert got[0] == pytest.approx(-4.248354255291589e-18, rel=8 * np.finfo(float).eps,
                                       abs=0)
        assert got[0] < 0.0
        assert got[1] == pytest.approx(-40.0, rel=8 * np.finfo(float).eps)

    @pytest.mark.parametrize(
        "row,dtype",
        [
            pytest.param([0.0, -40.0], np.float64, id="f64-0_-40"),
            pytest.param([3.0, -37.0, -50.0, -36.5], np.float64, id="f64-dominant"),
            pytest.param([0.0, -17.0], np.float32, id="f32-0_-17"),
            pytest.param([10.0, -8.0, -9.0], np.float32, id="f32-dominant"),
            pytest.param([1.0, 1.0 - 1e-12, -3.0], np.float64, id="f64-near_tie"),
            pytest.param(list(np.linspace(-5, 5, 11)), np.float64, id="f64-linspace"),
        ],
    )
    def test_against_mpmath(self, mpmath, row, dtype):
        x = np.asarray(row, dtype=dtype)
        with mpmath.workdps(60):
            xs = [mpmath.mpf(float(v)) for v in x]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
            expected = np.array([float(v - lse) for v in xs])
            exp_lse = float(lse)
        got = lm.log_softmax(x)
        assert got.dtype == np.dtype(dtype)
        # element-wise *relative* accuracy, including the element at the max
        np.testing.assert_allclose(got, expected.astype(dtype), rtol=8 * np.finfo(dtype).eps, atol=0)
        np.testing.assert_allclose(lm.logsumexp(x), exp_lse, rtol=8 * np.finfo(dtype).eps)
        np.testing.assert_allclose(lm.softmax(x), np.exp(expected), rtol=8 * np.finfo(dtype).eps)

    def test_logsumexp_against_mpmath_random(self, mpmath, rng):
        x = rng.standard_normal(50) * 30
        with mpmath.workdps(50):
            expected = float(mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in x)))
        assert lm.logsumexp(x) == pytest.approx(expected, rel=4 * np.finfo(float).eps)


# ---------------------------------------------------------------------------
# Empty inputs and 0-d inputs, as scipy
# ---------------------------------------------------------------------------
class TestEmptyAndScalar:
    @pytest.mark.parametrize(
        "shape,axis,keepdims",
        [
            pytest.param((0,), None, False, id="1d-axisNone"),
            pytest.param((0,), 0, False, id="1d-axis0"),
            pytest.param((0,), -1, True, id="1d-axis-1-keepdims"),
            pytest.param((0, 3), 0, False, id="0x3-axis0"),
            pytest.param((0, 3), 0, True, id="0x3-axis0-keepdims"),
            pytest.param((0, 3), 1, False, id="0x3-axis1"),
            pytest.param((3, 0), 1, False, id="3x0-axis1"),
        ],
    )
    def test_logsumexp_empty_as_scipy(self, shape, axis, keepdims):
        x = np.zeros(shape)
        expected = sps.logsumexp(x, axis=axis, keepdims=keepdims)
        got = lm.logsumexp(x, axis=axis, keepdims=keepdims)
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_array_equal(got, expected)

    @pytest.mark.parametrize("shape", [(0, 3), (2, 0, 3), (0,)], ids=str)
    def test_logsumexp_empty_full_reduction_is_minus_inf(self, shape):
        # closed form (scipy itself raises IndexError for some of these)
        got = lm.logsumexp(np.zeros(shape))
        assert np.ndim(got) == 0
        assert got == -np.inf

    def test_logsumexp_empty_tuple_axis_is_minus_inf(self):
        # closed form: summing over an empty axis gives log(0) = -inf per output
        got = lm.logsumexp(np.zeros((2, 0, 3)), axis=(0, 1))
        np.testing.assert_array_equal(got, np.full(3, -np.inf))
        got = lm.logsumexp(np.zeros((2, 0, 3)), axis=(0, 1), keepdims=True)
        np.testing.assert_array_equal(got, np.full((1, 1, 3), -np.inf))

    def test_logsumexp_empty_float32_keeps_dtype(self):
        got = lm.logsumexp(np.zeros((0, 4), dtype=np.float32), axis=0)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, np.full(4, -np.inf, dtype=np.float32))

    @pytest.mark.parametrize("func", ["softmax", "log_softmax"])
    def test_softmax_empty_rows(self, func):
        ours, oracle = FUNCS[func]
        x = np.zeros((0, 3))
        got = ours(x, axis=1)
        expected = oracle(x, axis=1)
        assert got.shape == expected.shape == (0, 3)

    @pytest.mark.parametrize("axis", [None, 0, -1], ids=_axis_id)
    @pytest.mark.parametrize("func", list(FUNCS))
    def test_zero_dim(self, func, axis):
        ours, oracle = FUNCS[func]
        x = np.float64(2.5)
        expected = oracle(x, axis=axis)
        got = ours(np.array(2.5), axis=axis)
        assert np.ndim(got) == 0
        np.testing.assert_allclose(got, expected, rtol=rtol_for(np.float64))
        # and a plain Python float
        np.testing.assert_allclose(ours(2.5, axis=axis), expected, rtol=rtol_for(np.float64))
