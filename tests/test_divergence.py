"""kl_divergence against scipy.special.rel_entr, entropy against
scipy.stats.entropy, the seed's coin example in closed form, and mpmath."""
import numpy as np
import pytest
import scipy.stats as sst

import lossmle as lm
from conftest import as_f64, make_layout, quiet, rtol_for, tol
from oracles import np_kl_divergence as kl_oracle

SHAPES = {"1d": (6,), "2d": (4, 6), "3d": (3, 4, 5), "4d": (2, 3, 4, 5)}
BASES = {"base_e": None, "base2": 2.0, "base10": 10.0, "base_e_explicit": np.e}
DTYPES = {"f64": np.float64, "f32": np.float32}


def _axis_grid(with_tuple=False):
    out = []
    for name, shape in SHAPES.items():
        nd = len(shape)
        axes = [None] + list(range(nd)) + list(range(-nd, 0))
        if with_tuple and nd >= 2:
            axes.append((0, nd - 1))
        for axis in axes:
            aid = "axisNone" if axis is None else f"axis{axis}"
            if isinstance(axis, tuple):
                aid = "axis(" + ",".join(map(str, axis)) + ")"
            out.append(pytest.param(shape, axis, id=f"{name}-{aid}"))
    return out


def _dist(rng, shape, axis, zeros=False):
    p = rng.uniform(0.05, 1.0, size=shape)
    if zeros:
        p[rng.random(shape) < 0.25] = 0.0  # exercise 0 * log(0 / q) = 0
        # keep at least one positive entry per distribution
        p = p + (p.sum(axis=axis, keepdims=True) == 0)
    return p / p.sum(axis=axis, keepdims=True)


def _check_shape_kind(got, expected, dtype):
    assert np.shape(got) == np.shape(expected)
    if np.ndim(expected) == 0 and not isinstance(expected, np.ndarray):
        assert isinstance(got, np.generic), type(got)
    assert np.asarray(got).dtype == np.dtype(dtype)


# ---------------------------------------------------------------------------
# KL divergence
# ---------------------------------------------------------------------------
class TestKLDivergenceVsRelEntr:
    @pytest.mark.parametrize("base", list(BASES))
    @pytest.mark.parametrize("keepdims", [False, True], ids=["nokeep", "keepdims"])
    @pytest.mark.parametrize("dtype", list(DTYPES))
    @pytest.mark.parametrize("shape,axis", _axis_grid())
    def test_grid(self, rng, shape, axis, dtype, keepdims, base):
        dtype = DTYPES[dtype]
        p = _dist(rng, shape, axis, zeros=True).astype(dtype)
        q = _dist(rng, shape, axis).astype(dtype)
        p_copy, q_copy = p.copy(), q.copy()
        expected = kl_oracle(p, q, axis=axis, base=BASES[base], keepdims=keepdims)
        got = lm.kl_divergence(p, q, axis=axis, base=BASES[base], keepdims=keepdims)
        _check_shape_kind(got, expected, dtype)
        np.testing.assert_allclose(got, expected, **tol(dtype, 10))
        np.testing.assert_array_equal(p, p_copy)
        np.testing.assert_array_equal(q, q_copy)

    def test_default_axis_is_last(self, rng):
        p = _dist(rng, (3, 4), -1)
        q = _dist(rng, (3, 4), -1)
        np.testing.assert_allclose(lm.kl_divergence(p, q), kl_oracle(p, q, axis=-1),
                                   rtol=rtol_for(np.float64))

    def test_no_renormalisation(self, rng):
        p = rng.uniform(0.1, 2.0, size=(3, 5))  # rows do not sum to 1
        q = rng.uniform(0.1, 2.0, size=(3, 5))
        np.testing.assert_allclose(lm.kl_divergence(p, q), kl_oracle(p, q),
                                   rtol=rtol_for(np.float64))

    @pytest.mark.parametrize(
        "p_shape,q_shape,axis",
        [
            pytest.param((4, 6), (6,), -1, id="q_row_bcast"),
            pytest.param((6,), (4, 6), -1, id="p_row_bcast"),
            pytest.param((4, 1), (4, 6), -1, id="p_col_bcast"),
            pytest.param((4, 6), (1, 6), 0, id="q_bcast_axis0"),
            pytest.param((3, 1, 5), (1, 4, 5), -1, id="3d_outer"),
            pytest.param((3, 1, 5), (1, 4, 5), 1, id="3d_outer_axis1"),
            pytest.param((3, 1, 5), (1, 4, 5), None, id="3d_outer_axisNone"),
        ],
    )
    def test_broadcasting(self, rng, p_shape, q_shape, axis):
        p = rng.uniform(0.0, 1.0, size=p_shape)
        q = rng.uniform(0.1, 1.0, size=q_shape)
        expected = kl_oracle(p, q, axis=axis)
        got = lm.kl_divergence(p, q, axis=axis)
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_allclose(got, expected, **tol(np.float64, 10))

    @pytest.mark.parametrize("layout", ["F", "transposed", "strided", "negstride", "readonly", "list"])
    @pytest.mark.parametrize("axis", [0, -1, None], ids=lambda a: f"axis{a}")
    def test_layouts(self, rng, layout, axis):
        p = _dist(rng, (5, 4, 3), axis)
        q = _dist(rng, (5, 4, 3), axis)
        pin, qin = make_layout(p, layout), make_layout(q, layout)
        np.testing.assert_allclose(lm.kl_divergence(pin, qin, axis=axis), kl_oracle(p, q, axis=axis),
                                   **tol(np.float64, 10))
        np.testing.assert_array_equal(np.asarray(pin), p)

    def test_zero_times_log_zero_is_zero(self):
        p = np.array([0.0, 0.5, 0.5])
        q = np.array([0.0, 0.5, 0.5])
        assert lm.kl_divergence(p, q) == 0.0
        p = np.array([0.0, 1.0])
        q = np.array([0.5, 0.5])
        assert lm.kl_divergence(p, q) == pytest.approx(np.log(2.0), rel=rtol_for(np.float64))

    def test_positive_p_zero_q_is_inf(self):
        p = np.array([[0.5, 0.5], [0.5, 0.5]])
        q = np.array([[1.0, 0.0], [0.25, 0.75]])
        got = lm.kl_divergence(p, q)
        assert got[0] == np.inf
        assert np.isfinite(got[1])
        np.testing.assert_allclose(got, kl_oracle(p, q), rtol=rtol_for(np.float64))

    def test_inf_q(self):
        # p * log(p / inf) = -inf; scipy's rel_entr agrees
        p = np.array([0.5, 0.5])
        q = np.array([np.inf, 0.5])
        np.testing.assert_allclose(lm.kl_divergence(p, q), kl_oracle(p, q), rtol=rtol_for(np.float64))


class TestKLClosedForms:
    COIN = 0.5 * np.log(0.5 / (1 / 3)) + 0.5 * np.log(0.5 / (2 / 3))

    def test_seed_coin_example(self):
        got = lm.kl_divergence(np.array([0.5, 0.5]), np.array([1 / 3, 2 / 3]))
        assert got == pytest.approx(self.COIN, rel=rtol_for(np.float64))
        assert got == pytest.approx(0.0588915178, abs=1e-10)

    def test_seed_coin_example_bits(self):
        got = lm.kl_divergence([0.5, 0.5], [1 / 3, 2 / 3], base=2)
        assert got == pytest.approx(self.COIN / np.log(2), rel=rtol_for(np.float64))

    def test_seed_coin_float32(self):
        got = lm.kl_divergence(np.array([0.5, 0.5], np.float32), np.array([1 / 3, 2 / 3], np.float32))
        assert got.dtype == np.float32
        assert got == pytest.approx(self.COIN, rel=1e-6)

    def test_asymmetric(self):
        p, q = np.array([0.5, 0.5]), np.array([1 / 3, 2 / 3])
        pq = lm.kl_divergence(p, q)
        qp = lm.kl_divergence(q, p)
        closed_qp = (1 / 3) * np.log((1 / 3) / 0.5) + (2 / 3) * np.log((2 / 3) / 0.5)
        assert qp == pytest.approx(closed_qp, rel=rtol_for(np.float64))
        assert abs(pq - qp) > 1e-3

    def test_identical_is_zero(self, rng):
        p = _dist(rng, (5, 7), -1)
        np.testing.assert_array_equal(lm.kl_divergence(p, p.copy()), np.zeros(5))

    def test_against_mpmath(self, mpmath, rng):
        p = _dist(rng, (9,), -1, zeros=True)
        q = _dist(rng, (9,), -1) * (1 - 1e-3)
        with mpmath.workdps(50):
            expected = float(mpmath.fsum(
                mpmath.mpf(float(a)) * mpmath.log(mpmath.mpf(float(a)) / mpmath.mpf(float(b)))
                for a, b in zip(p, q) if a > 0))
        assert lm.kl_divergence(p, q) == pytest.approx(expected, rel=16 * np.finfo(float).eps)

    def test_nearly_equal_against_mpmath(self, mpmath):
        # tiny divergences: relative accuracy matters, not just absolute
        p = np.array([0.5 + 1e-6, 0.5 - 1e-6])
        q = np.array([0.5, 0.5])
        with mpmath.workdps(50):
            expected = float(mpmath.fsum(
                mpmath.mpf(float(a)) * mpmath.log(mpmath.mpf(float(a)) / mpmath.mpf(float(b)))
                for a, b in zip(p, q)))
        assert lm.kl_divergence(p, q) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------
# entropy
# ---------------------------------------------------------------------------
class TestEntropyVsScipy:
    @pytest.mark.parametrize("base", list(BASES))
    @pytest.mark.parametrize("with_qk", ["pk_only", "pk_qk"])
    @pytest.mark.parametrize("dtype", list(DTYPES))
    @pytest.mark.parametrize("shape,axis", _axis_grid())
    def test_grid(self, rng, shape, axis, dtype, with_qk, base):
        dtype = DTYPES[dtype]
        # unnormalised on purpose: entropy normalises pk and qk
        pk = rng.uniform(0.0, 3.0, size=shape).astype(dtype)
        qk = rng.uniform(0.1, 3.0, size=shape).astype(dtype) if with_qk == "pk_qk" else None
        pk_copy = pk.copy()
        expected = quiet(sst.entropy, as_f64(pk), None if qk is None else as_f64(qk),
                         base=BASES[base], axis=axis)
        got = lm.entropy(pk, qk, base=BASES[base], axis=axis)
        _check_shape_kind(got, expected, dtype)
        np.testing.assert_allclose(got, expected, **tol(dtype, 10))
        np.testing.assert_array_equal(pk, pk_copy)

    @pytest.mark.parametrize("axis", [0, 1, -1, None], ids=lambda a: f"axis{a}")
    def test_keepdims(self, rng, axis):
        pk = rng.uniform(0.0, 3.0, size=(3, 4))
        qk = rng.uniform(0.1, 3.0, size=(3, 4))
        expected = sst.entropy(pk, qk, axis=axis, keepdims=True)
        got = lm.entropy(pk, qk, axis=axis, keepdims=True)
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_allclose(got, expected, rtol=rtol_for(np.float64))

    def test_default_axis_is_zero(self, rng):
        pk = rng.uniform(0.0, 3.0, size=(3, 4))
        got = lm.entropy(pk)
        assert got.shape == (4,)
        np.testing.assert_allclose(got, sst.entropy(pk), rtol=rtol_for(np.float64))

    @pytest.mark.parametrize(
        "pk_shape,qk_shape,axis",
        [
            pytest.param((3, 1), (3, 4), 1, id="pk_col_bcast_axis1"),
            pytest.param((3, 1), (3, 4), 0, id="pk_col_bcast_axis0"),
            pytest.param((4,), (3, 4), -1, id="pk_row_bcast"),
            pytest.param((3, 4), (4,), 1, id="qk_row_bcast"),
            pytest.param((2, 1, 5), (1, 3, 5), -1, id="3d_outer"),
        ],
    )
    def test_broadcasting(self, rng, pk_shape, qk_shape, axis):
        pk = rng.uniform(0.1, 2.0, size=pk_shape)
        qk = rng.uniform(0.1, 2.0, size=qk_shape)
        expected = sst.entropy(pk, qk, axis=axis)
        got = lm.entropy(pk, qk, axis=axis)
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_allclose(got, expected, **tol(np.float64, 10))

    @pytest.mark.parametrize("layout", ["F", "transposed", "strided", "negstride", "readonly", "list"])
    def test_layouts(self, rng, layout):
        pk = rng.uniform(0.0, 3.0, size=(5, 4))
        qk = rng.uniform(0.1, 3.0, size=(5, 4))
        for axis in (0, 1):
            np.testing.assert_allclose(
                lm.entropy(make_layout(pk, layout), make_layout(qk, layout), axis=axis),
                sst.entropy(pk, qk, axis=axis), **tol(np.float64, 10))

    @pytest.mark.parametrize(
        "pk,qk",
        [
            pytest.param([1, 1], None, id="uniform2"),
            pytest.param([1, 0, 0], None, id="certain"),
            pytest.param([0.5, 0.5], [1 / 3, 2 / 3], id="coin"),
            pytest.param([1, 1], [1, 0], id="q_zero_inf"),
            pytest.param([0, 1], [1, 0], id="p_zero_q_zero"),
            pytest.param([3, 7, 0, 5], [1, 1, 1, 1], id="unnormalised"),
            pytest.param([True, False, True], None, id="bool"),
            pytest.param([2, 5, 1], None, id="int"),
        ],
    )
    def test_small_cases(self, pk, qk):
        expected = quiet(sst.entropy, pk, qk)
        got = lm.entropy(pk, qk)
        assert np.ndim(got) == 0
        np.testing.assert_allclose(got, expected, rtol=rtol_for(np.float64))

    def test_closed_forms(self):
        assert lm.entropy(np.ones(8), base=2) == pytest.approx(3.0, rel=rtol_for(np.float64))
        assert lm.entropy([0.5, 0.5], [1 / 3, 2 / 3]) == pytest.approx(
            TestKLClosedForms.COIN, rel=rtol_for(np.float64))
        assert lm.entropy([1.0, 0.0]) == 0.0


def test_kl_terms_with_ratio_out_of_range_match_mpmath():
    """p/q overflowing (q subnormal) or underflowing: the logs are taken apart."""
    mpmath = pytest.importorskip("mpmath")
    for p_val, q_val in [(1.0, 2.22507386e-311), (5e-324, 7.5), (1e-310, 1e300)]:
        want = float(mpmath.mpf(p_val) * (mpmath.log(mpmath.mpf(p_val))
                                          - mpmath.log(mpmath.mpf(q_val))))
        got = lm.kl_divergence(np.array([p_val]), np.array([q_val]))
        assert got == pytest.approx(want, rel=1e-13, abs=1e-320)


def test_kl_base_change_overflows_quietly():
    # the pyproject turns warnings into errors: an escaping RuntimeWarning fails here
    got = lm.kl_divergence([1e306], [1e306 * np.exp(-100)], base=1.5)
    assert got == np.inf     # 1e306 * 100 / log(1.5) > DBL_MAX
