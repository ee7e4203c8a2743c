"""Edge cases: numerical extremes, masked (-inf) rows, nan/inf propagation,
a single class, a single row, 0-d and empty inputs, aliasing and mutation."""
import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as sst

import lossmle as lm
from conftest import as_f64, quiet, rtol_for, tol
from oracles import np_cross_entropy, torch_loss

INF, NAN = np.inf, np.nan

# ---------------------------------------------------------------------------
# Losses on extreme / special logits, against torch
# ---------------------------------------------------------------------------
SPECIAL_LOGIT_ROWS = {
    # id: (row, target class)
    "fully_masked": ([-INF, -INF, -INF], 0),
    "masked_other_class": ([0.0, -INF, 1.0], 0),
    "masked_target_class": ([0.0, -INF, 1.0], 1),
    "nan_logit": ([NAN, 0.0, 1.0], 0),
    "nan_other_class": ([0.0, NAN, 1.0], 2),
    "pos_inf_logit": ([INF, 0.0, 1.0], 1),
    "huge_spread_1e308": ([1e308, -1e308, 0.0], 1),
    "huge_equal_1e308": ([1e308, 1e308, 1e308], 2),
    "wide_finite_spread": ([1000.0, 0.0, -1000.0], 2),
    "tiny_values": ([1e-300, -1e-300, 0.0], 0),
}


class TestLossSpecialValuesVsTorch:
    @pytest.mark.parametrize("smoothing", [0.0, 0.1], ids=["ls0", "ls0.1"])
    @pytest.mark.parametrize("case", list(SPECIAL_LOGIT_ROWS))
    def test_cross_entropy_rows(self, torch, case, smoothing):
        row, cls = SPECIAL_LOGIT_ROWS[case]
        # the special row among ordinary rows, so one row's nan/inf must stay in its row
        logits = np.array([[0.3, -1.2, 2.0], row, [1.5, 0.5, -0.5]])
        target = np.array([2, cls, 0])
        kw = dict(reduction="none", label_smoothing=smoothing)
        e_loss, e_grad = quiet(torch_loss, torch, "cross_entropy", logits, target, -1,
                               with_grad=True, **kw)
        got = lm.cross_entropy(logits, target, **kw)
        np.testing.assert_allclose(got, e_loss, equal_nan=True, rtol=rtol_for(np.float64))
        loss, grad = lm.cross_entropy_with_grad(logits, target, **kw)
        np.testing.assert_allclose(loss, e_loss, equal_nan=True, rtol=rtol_for(np.float64))
        np.testing.assert_allclose(grad, e_grad, equal_nan=True, rtol=rtol_for(np.float64),
                                   atol=1e-15)

    @pytest.mark.parametrize("reduction", ["sum", "mean"])
    def test_masked_row_poisons_reduction_like_torch(self, torch, reduction):
        logits = np.array([[0.3, -1.2, 2.0], [-INF, -INF, -INF]])
        target = np.array([2, 0])
        expected = quiet(torch_loss, torch, "cross_entropy", logits, target, -1, reduction=reduction)
        np.testing.assert_array_equal(lm.cross_entropy(logits, target, reduction=reduction), expected)

    def test_masked_row_ignored_is_harmless(self, torch):
        # a fully masked row whose target is ignore_index contributes nothing (torch: 0)
        logits = np.array([[0.3, -1.2, 2.0], [-INF, -INF, -INF]])
        target = np.array([2, -100])
        for reduction in ("none", "sum", "mean"):
            expected = quiet(torch_loss, torch, "cross_entropy", logits, target, -1,
                             reduction=reduction)
            np.testing.assert_allclose(lm.cross_entropy(logits, target, reduction=reduction),
                                       expected, rtol=rtol_for(np.float64))

    @pytest.mark.parametrize("row", [[3e38, -3e38, 0.0], [-3e38, -3e38, -3e38], [3e38] * 3,
                                     [np.finfo(np.float32).max, 0, 1]],
                             ids=["spread", "all_neg", "all_pos", "f32max"])
    def test_cross_entropy_float32_extremes(self, torch, row):
        logits = np.array([row, [0.5, 1.0, -1.0]], dtype=np.float32)
        target = np.array([1, 0])
        expected = quiet(torch_loss, torch, "cross_entropy", logits, target, -1, reduction="none")
        got = lm.cross_entropy(logits, target, reduction="none")
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, quiet(expected.astype, np.float32), equal_nan=True,
                                   rtol=rtol_for(np.float32))

    @pytest.mark.parametrize("smoothing", [0.0, 0.1], ids=["ls0", "ls0.1"])
    @pytest.mark.parametrize("offset", [1e4, 1e8, 1e12, 1e15],
                             ids=["1e4", "1e8", "1e12", "1e15"])
    def test_cross_entropy_large_offset_closed_form(self, offset, smoothing):
        # offset + {0, 1, -2} is exact in float64; the loss is shift-invariant, so it must
        # equal the loss of [0, 1, -2] to a few ulps (log_softmax = (x - max) - log(sum))
        base = np.array([[0.0, 1.0, -2.0]])
        t = np.array([2])
        expected = np_cross_entropy(base, t, label_smoothing=smoothing)
        got = lm.cross_entropy(base + offset, t, label_smoothing=smoothing)
        assert got == pytest.approx(expected, rel=rtol_for(np.float64))
        loss, grad = lm.cross_entropy_with_grad(base + offset, t, label_smoothing=smoothing)
        assert loss == pytest.approx(expected, rel=rtol_for(np.float64))
        _, grad0 = lm.cross_entropy_with_grad(base, t, label_smoothing=smoothing)
        np.testing.assert_allclose(grad, grad0, rtol=rtol_for(np.float64), atol=1e-15)

    def test_nll_loss_with_minus_inf_log_prob(self, torch):
        lp = np.array([[0.0, -INF], [-INF, 0.0]])
        t = np.array([1, 1])
        expected = torch_loss(torch, "nll_loss", lp, t, -1, reduction="none")
        np.testing.assert_array_equal(lm.nll_loss(lp, t, reduction="none"), expected)

    def test_probability_target_with_masked_logit(self, torch):
        # zero probability on a masked class: torch gives 0 * -inf = nan
        logits = np.array([[0.0, -INF, 1.0]])
        target = np.array([[0.5, 0.0, 0.5]])
        expected = quiet(torch_loss, torch, "cross_entropy", logits, target, -1, reduction="none")
        np.testing.assert_allclose(lm.cross_entropy(logits, target, reduction="none"), expected,
                                   equal_nan=True, rtol=rtol_for(np.float64))


# ---------------------------------------------------------------------------
# Special functions: closed forms for special rows
# ---------------------------------------------------------------------------
class TestSpecialClosedForms:
    def test_all_minus_inf_row(self):
        x = np.array([[-INF, -INF], [0.0, 0.0]])
        np.testing.assert_array_equal(lm.logsumexp(x, axis=1), [-INF, np.log(2.0)])
        sm = lm.softmax(x, axis=1)
        lsm = lm.log_softmax(x, axis=1)
        # as scipy: nan for the fully masked row, ordinary values for the other
        assert np.isnan(sm[0]).all() and np.isnan(lsm[0]).all()
        np.testing.assert_array_equal(sm[1], [0.5, 0.5])
        np.testing.assert_allclose(lsm[1], [-np.log(2.0)] * 2, rtol=rtol_for(np.float64))

    def test_nan_stays_in_its_row(self):
        x = np.array([[NAN, 0.0], [1.0, 2.0]])
        lse = lm.logsumexp(x, axis=1)
        assert np.isnan(lse[0])
        assert lse[1] == pytest.approx(np.logaddexp(1.0, 2.0), rel=rtol_for(np.float64))
        sm = lm.softmax(x, axis=1)
        assert np.isnan(sm[0]).all()
        np.testing.assert_allclose(sm[1], sps.softmax([1.0, 2.0]), rtol=rtol_for(np.float64))

    def test_no_overflow_at_1e308(self):
        assert lm.logsumexp(np.array([1e308, 1e308])) == 1e308
        np.testing.assert_array_equal(lm.softmax(np.array([1e308, 1e308])), [0.5, 0.5])
        np.testing.assert_array_equal(lm.softmax(np.array([1e308, -1e308])), [1.0, 0.0])

    def test_no_underflow_to_minus_inf(self):
        # all terms underflow exp() without the max shift
        got = lm.logsumexp(np.array([-1000.0, -1000.0]))
        assert got == pytest.approx(-1000.0 + np.log(2.0), rel=rtol_for(np.float64))
        got = lm.log_softmax(np.array([-1e4, -1e4 - 1.0]))
        np.testing.assert_allclose(got, sps.log_softmax([0.0, -1.0]), rtol=rtol_for(np.float64))

    def test_float32_no_overflow(self):
        x = np.array([3e38, 3e38], dtype=np.float32)
        got = lm.logsumexp(x)
        assert got.dtype == np.float32
        assert got == np.float32(3e38)
        np.testing.assert_array_equal(lm.softmax(x), np.array([0.5, 0.5], np.float32))


# ---------------------------------------------------------------------------
# Single class, single row, 0-d
# ---------------------------------------------------------------------------
class TestDegenerateShapes:
    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
    def test_single_class_special(self, rng, dtype):
        x = rng.standard_normal((4, 1)).astype(dtype)
        np.testing.assert_allclose(lm.logsumexp(x, axis=1), x[:, 0], rtol=rtol_for(dtype))
        np.testing.assert_array_equal(lm.softmax(x, axis=1), np.ones((4, 1), dtype))
        np.testing.assert_array_equal(lm.log_softmax(x, axis=1), np.zeros((4, 1), dtype))

    @pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
    @pytest.mark.parametrize("kind", ["index", "prob"])
    def test_single_class_losses(self, torch, rng, kind, reduction):
        x = rng.standard_normal((4, 1))
        target = np.zeros(4, dtype=np.int64) if kind == "index" else np.ones((4, 1))
        e_loss, e_grad = torch_loss(torch, "cross_entropy", x, target, -1, with_grad=True,
                                    reduction=reduction)
        loss, grad = lm.cross_entropy_with_grad(x, target, reduction=reduction)
        np.testing.assert_array_equal(loss, e_loss)  # exactly 0
        np.testing.assert_allclose(grad, e_grad, atol=1e-15)
        np.testing.assert_array_equal(lm.cross_entropy(x, target, reduction=reduction), e_loss)

    def test_single_class_out_of_range(self, rng):
        with pytest.raises(IndexError, match="target"):
            lm.cross_entropy(rng.standard_normal((3, 1)), np.array([0, 1, 0]))

    def test_single_row(self, torch, rng):
        x = rng.standard_normal((1, 6))
        t = np.array([4])
        e_loss, e_grad = torch_loss(torch, "cross_entropy", x, t, -1, with_grad=True)
        loss, grad = lm.cross_entropy_with_grad(x, t)
        assert loss == pytest.approx(e_loss, rel=rtol_for(np.float64))
        np.testing.assert_allclose(grad, e_grad, rtol=rtol_for(np.float64), atol=1e-15)

    def test_single_sample_1d(self, torch, rng):
        x = rng.standard_normal(6)
        for t in (np.array(3), 3, np.int32(3)):
            got = lm.cross_entropy(x, t, reduction="none")
            assert np.shape(got) == ()
            assert got == pytest.approx(-sps.log_softmax(x)[3], rel=rtol_for(np.float64))

    @pytest.mark.parametrize("axis", [None, 0, -1], ids=lambda a: f"axis{a}")
    def test_zero_dim_logsumexp_b(self, axis):
        got = lm.logsumexp(np.array(1.5), axis=axis, b=np.array(2.0))
        expected = sps.logsumexp(np.array(1.5), axis=axis, b=np.array(2.0))
        assert np.ndim(got) == 0
        assert got == pytest.approx(expected, rel=rtol_for(np.float64))

    def test_keepdims_zero_dim(self):
        got = lm.logsumexp(np.array(1.5), keepdims=True)
        expected = sps.logsumexp(np.array(1.5), keepdims=True)
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_allclose(got, expected, rtol=rtol_for(np.float64))


# ---------------------------------------------------------------------------
# Empty arrays
# ---------------------------------------------------------------------------
class TestEmpty:
    @pytest.mark.parametrize("kind", ["index", "prob"])
    def test_cross_entropy_empty_batch(self, torch, kind):
        x = np.zeros((0, 3))
        target = np.zeros(0, dtype=np.int64) if kind == "index" else np.zeros((0, 3))
        for reduction in ("none", "sum", "mean"):
            expected = torch_loss(torch, "cross_entropy", x, target, -1, reduction=reduction)
            got = lm.cross_entropy(x, target, reduction=reduction)
            assert np.shape(got) == np.shape(expected)
            np.testing.assert_array_equal(got, expected)  # [], 0.0, nan as torch
            loss, grad = lm.cross_entropy_with_grad(x, target, reduction=reduction)
            np.testing.assert_array_equal(loss, expected)
            assert grad.shape == (0, 3)

    def test_nll_loss_empty_batch(self, torch):
        x = np.zeros((0, 3))
        target = np.zeros(0, dtype=np.int64)
        for reduction in ("none", "sum", "mean"):
            expected = torch_loss(torch, "nll_loss", x, target, -1, reduction=reduction)
            np.testing.assert_array_equal(lm.nll_loss(x, target, reduction=reduction), expected)

    def test_kl_empty_batch(self):
        got = lm.kl_divergence(np.zeros((0, 3)), np.zeros((0, 3)))
        assert got.shape == (0,)

    def test_kl_empty_class_axis_is_empty_sum(self):
        # sum over an empty axis is 0 (rel_entr(...).sum() agrees); a clear ValueError is
        # also acceptable by the hardening policy
        p = np.zeros((3, 0))
        try:
            got = lm.kl_divergence(p, p)
        except ValueError as exc:
            assert "p" in str(exc) or "axis" in str(exc)
        else:
            np.testing.assert_array_equal(got, sps.rel_entr(p, p).sum(-1))

    @pytest.mark.parametrize("pk", [[], np.zeros((0, 3))], ids=["1d", "0x3"])
    def test_entropy_empty_as_scipy(self, pk):
        expected = quiet(sst.entropy, pk)
        got = lm.entropy(pk)
        assert np.shape(got) == np.shape(expected)
        np.testing.assert_array_equal(got, expected)

    def test_entropy_zero_sum_is_nan_as_scipy(self):
        expected = quiet(sst.entropy, [0.0, 0.0])
        assert np.isnan(expected)
        assert np.isnan(lm.entropy([0.0, 0.0]))


# ---------------------------------------------------------------------------
# KL validation switch
# ---------------------------------------------------------------------------
class TestKLValidation:
    @pytest.mark.parametrize("bad", ["p_negative", "q_negative", "p_nan", "q_nan"])
    def test_validate_default_rejects(self, bad):
        p = np.array([0.5, 0.5])
        q = np.array([0.25, 0.75])
        which, what = bad.split("_")
        arr = p if which == "p" else q
        arr[0] = -0.1 if what == "negative" else NAN
        with pytest.raises(ValueError, match=rf"\b{which}\b"):
            lm.kl_divergence(p, q)

    def test_validate_false_skips_the_check(self):
        p = np.array([0.5, 0.5])
        q = np.array([0.25, 0.75])
        q2 = q.copy()
        q2[0] = NAN
        got = lm.kl_divergence(p, q2, validate=False)
        assert np.isnan(got)  # nan propagates once the check is off
        assert lm.kl_divergence(p, q, validate=False) == pytest.approx(
            sps.rel_entr(p, q).sum(), rel=rtol_for(np.float64))


# ---------------------------------------------------------------------------
# Outputs are fresh arrays; inputs are never touched
# ---------------------------------------------------------------------------
class TestNoAliasing:
    def test_grad_is_new_array(self, rng):
        x = rng.standard_normal((4, 3))
        t = np.array([0, 1, 2, 0])
        x_copy = x.copy()
        _, grad = lm.cross_entropy_with_grad(x, t)
        assert not np.shares_memory(grad, x)
        np.testing.assert_array_equal(x, x_copy)
        grad[...] = 123.0  # writable, and writing to it does not touch x
        np.testing.assert_array_equal(x, x_copy)

    @pytest.mark.parametrize("func", ["softmax", "log_softmax"])
    def test_softmax_output_is_new_array(self, rng, func):
        x = rng.standard_normal((4, 3))
        out = getattr(lm, func)(x, axis=1)
        assert not np.shares_memory(out, x)
        assert out.flags.writeable

    def test_reduction_none_matches_rows(self, rng):
        # each row's loss only depends on its row
        x = rng.standard_normal((5, 4))
        t = rng.integers(0, 4, size=5)
        full = lm.cross_entropy(x, t, reduction="none")
        for i in range(5):
            np.testing.assert_allclose(full[i], np_cross_entropy(x[i], t[i], reduction="none"),
                                       **tol(np.float64, 4))


def test_label_smoothing_near_the_float_maximum_closed_form():
    """logits (1e308, 0), target 0, eps = 0.25: per row the smoothing term is
    eps/C * sum_c (lse - x_c) = 0.125 * 1e308 and the NLL term (lse - x_0) is 0,
    so the mean is 1.25e307 exactly; torch's -sum(log_softmax) overflows to inf."""
    x = np.array([[1e308, 0.0], [1e308, 0.0]])
    got = lm.cross_entropy(x, np.array([0, 0]), label_smoothing=0.25)
    assert got == pytest.approx(0.125 * 1e308, rel=1e-15)


# ---------------------------------------------------------------------------
# Long rows read block by block (logsumexp, log_softmax: over 2048 values)
# ---------------------------------------------------------------------------
def _long_row_cases(n, rng):
    """Rows of n > 2048 values that exercise the running max between
    blocks: max in a later block, ties across blocks, nan / +inf in a later
    block (first and not first in it), a first block of only -inf (alone
    and with a nan), all -inf, a dominant max with terms ~e^-40."""
    base = rng.normal(size=n)
    b1, b2 = 2048, min(2060, n - 1)   # the second block's first value, one inside it
    rows = {}
    r = base.copy(); r[n - 5] = 9.0; rows["max_in_last_block"] = r
    r = base.copy(); r[3] = r[b2] = 7.5; rows["tie_across_blocks"] = r
    r = base.copy(); r[3] = 7.5; r[b1] = 9.0; r[n - 1] = 9.0; rows["max_rises_then_ties"] = r
    r = base.copy(); r[b1] = np.nan; rows["nan_first_of_block"] = r
    r = base.copy(); r[b2] = np.nan; rows["nan_inside_block"] = r
    r = base.copy(); r[b2] = np.inf; rows["inf_later_block"] = r
    r = base.copy(); r[:2048] = -np.inf; rows["first_block_minus_inf"] = r
    r = base.copy(); r[:2048] = -np.inf; r[7] = np.nan; rows["minus_inf_block_with_nan"] = r
    rows["all_minus_inf"] = np.full(n, -np.inf)
    r = -40.0 + rng.normal(size=n); r[b2] = 0.0; rows["dominant_max"] = r
    return rows


@pytest.mark.parametrize("n", [2049, 4096, 6200])
def test_long_rows_read_in_blocks_match_scipy(simd_path, n):
    """logsumexp and log_softmax of rows longer than one block equal
    SciPy's, special values included, on every SIMD path and for float32."""
    cases = _long_row_cases(n, np.random.default_rng(n))
    x = np.array(list(cases.values()))
    with np.errstate(invalid="ignore", over="ignore"):
        want_lse = sps.logsumexp(x, axis=-1)
        want_lsm = sps.log_softmax(x, axis=-1)
    for dtype, rtol in ((np.float64, 1e-14), (np.float32, 3e-6)):
        xd = x.astype(dtype)
        got_lse = lm.logsumexp(xd, axis=-1, n_threads=1)
        got_lsm = lm.log_softmax(xd, axis=-1, n_threads=1)
        for name, gl, wl, gs, ws in zip(cases, got_lse, want_lse, got_lsm, want_lsm):
            np.testing.assert_allclose(gl, wl.astype(dtype), rtol=rtol, atol=0,
                                       err_msg=f"logsumexp {name} {np.dtype(dtype)}")
            np.testing.assert_allclose(gs, ws.astype(dtype), rtol=rtol, atol=1e-12,
                                       err_msg=f"log_softmax {name} {np.dtype(dtype)}")
        np.testing.assert_array_equal(lm.logsumexp(xd, axis=-1, n_threads=2), got_lse)


def test_long_row_dominant_max_keeps_log1p_precision(mpmath):
    """Across blocks the terms at the max stay out of the sum: a 6200-value
    row of one 0 and the rest ~e^-40 has logsumexp ~1e-14 to a few ulps."""
    rng = np.random.default_rng(3)
    x = -40.0 + rng.normal(size=(3, 6200))
    x[0, 2100] = 0.0                       # in the second block
    x[1, 6199] = 0.0                       # in the last
    x[2, 5] = x[2, 4000] = 0.0             # two maxima, two blocks
    with mpmath.workprec(200):
        want = [float(mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in row)))
                for row in x]
    np.testing.assert_allclose(lm.logsumexp(x, axis=-1), want, rtol=4e-16, atol=0)


@pytest.mark.parametrize("n", [32, 33, 39, 64, 100, 1000])
def test_row_max_at_every_lane_and_tail(simd_path, n):
    """The row max (four running maxima on AVX-512 float64, a masked tail)
    wherever it sits, and nan first, at a lane boundary or last: logsumexp,
    softmax and log_softmax as SciPy's, cross-entropy as the closed form."""
    rng = np.random.default_rng(n)
    spots = sorted({0, 7, 8, 23, 24, 31, min(32, n - 1), n - 2, n - 1})
    rows = []
    for j in spots:
        # a dominant max: a max taken too low (the exps still sum right)
        # would show as lost digits of the ~1e-17 logsumexp
        r = -40.0 + rng.normal(size=n)
        r[j] = 0.0
        rows.append(r)
    for j in (0, 31, n - 1):
        r = rng.normal(size=n)
        r[j] = np.nan
        rows.append(r)
    x = np.array(rows)
    with np.errstate(invalid="ignore"):
        want_lse = sps.logsumexp(x, axis=-1)
        want_sm = sps.softmax(x, axis=-1)
        want_lsm = sps.log_softmax(x, axis=-1)
    np.testing.assert_allclose(lm.logsumexp(x, axis=-1), want_lse, rtol=1e-14)
    exact = [np.log1p(np.exp(np.delete(x[i], j)).sum()) for i, j in enumerate(spots)]
    np.testing.assert_allclose(lm.logsumexp(x[:len(spots)], axis=-1), exact, rtol=4e-15, atol=0)
    np.testing.assert_allclose(lm.softmax(x, axis=-1), want_sm, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(lm.log_softmax(x, axis=-1), want_lsm, rtol=1e-13, atol=1e-14)
    target = np.array([j for j in spots] + [1, 1, 1])
    want_ce = want_lse - x[np.arange(len(x)), target]
    np.testing.assert_allclose(lm.cross_entropy(x, target, reduction="none"), want_ce,
                               rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("n_masked", [2048, 4096, 4100])
def test_long_rows_with_masked_front_stay_within_two_ulp(simd_path, mpmath, n_masked):
    """Rows whose first block(s) are only -inf (a masked or padded front)
    stay on the vectorised blocks: logsumexp within 2 ulps of mpmath, as
    unmasked rows.  817ce26 sent them to the scalar code (6.9x the time at
    256x50257, and 3.1 ulps on a 10000-value row; found in review)."""
    rng = np.random.default_rng(n_masked)
    x = rng.normal(size=(16, 10000)) * rng.uniform(0.5, 4.0, size=(16, 1))
    x[:, :n_masked] = -np.inf
    got = lm.logsumexp(x, axis=-1, n_threads=1)
    with mpmath.workprec(120):
        exact = [mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)))
                                        for v in row[n_masked:])) for row in x]
    ulps = [float(abs(mpmath.mpf(float(g)) - e)) / np.spacing(abs(float(e)))
            for g, e in zip(got, exact)]
    assert max(ulps) <= 2.0, max(ulps)
