"""The numerical policy (docs/guide/numerics.md), one test (or class) per line.

Every expected value comes from scipy (drop-in functions), torch (losses;
skipped cleanly without it), mpmath, or a closed form.  The policy table names
these tests next to each line, so keep the names stable.
"""

import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as sst

import lossmle as lm
from conftest import quiet, rtol_for, tol
from oracles import mp_cross_entropy_at_max as _at_max_exact
from oracles import mp_entropy_from_logits as _at_max_entropy
from oracles import mp_js_from_logits as _js_exact, np_cross_entropy, torch_loss

INF, NAN = np.inf, np.nan
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]


def torch_ce(torch, logits, target, fn="cross_entropy", grad=False, **kw):
    """torch's loss (and d loss.sum() / d logits) on (N, C) float64 logits."""
    return torch_loss(torch, fn, logits, target, -1, with_grad=grad, **kw)


def same(got, expected):
    """Same shape, and equal values with nan in exactly the same places."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=2e-6 if got.dtype == np.float32 else 1e-13,
                               atol=1e-15, equal_nan=True)


# Rows holding the special values of the policy: (id, row)
SPECIAL_ROWS = [
    ("all_minus_inf", [-INF, -INF, -INF]),
    ("one_minus_inf", [-INF, 0.0, 1.0]),
    ("plus_inf", [INF, 0.0, 1.0]),
    ("two_plus_inf", [INF, INF, 0.0]),
    ("plus_and_minus_inf", [INF, -INF, 0.0]),
    ("nan", [NAN, 0.0, 1.0]),
    ("nan_and_inf", [NAN, INF, -INF]),
]
ROW_IDS = [r[0] for r in SPECIAL_ROWS]
ROWS = dict(SPECIAL_ROWS)


# ---------------------------------------------------------------------------
# 1. fully masked rows and +-inf / nan in the drop-in functions: as scipy
# ---------------------------------------------------------------------------
class TestSpecialValuesAsScipy:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("row_id", ROW_IDS)
    @pytest.mark.parametrize("func", ["logsumexp", "softmax", "log_softmax"])
    def test_drop_in_special_rows(self, func, row_id, dtype):
        # the special row between two ordinary rows: nothing leaks into its neighbours
        x = np.array([[0.5, -1.0, 2.0], ROWS[row_id], [3.0, 3.0, -3.0]], dtype=dtype)
        expected = quiet(getattr(sps, func), x, axis=1)
        got = getattr(lm, func)(x, axis=1)  # no warning may escape (pytest: warnings = errors)
        assert got.dtype == dtype
        same(got, expected)

    def test_fully_masked_row(self):
        x = np.full((2, 4), -INF)
        assert np.all(lm.logsumexp(x, axis=1) == -INF)
        assert np.isnan(lm.softmax(x, axis=1)).all()
        assert np.isnan(lm.log_softmax(x, axis=1)).all()
        same(lm.softmax(x, axis=1), quiet(sps.softmax, x, axis=1))

    @pytest.mark.parametrize("row_id", ROW_IDS)
    def test_logsumexp_weights_and_sign_special_rows(self, row_id):
        x = np.array([ROWS[row_id], [0.0, 1.0, 2.0]])
        b = np.array([[1.0, -2.0, 0.5], [1.0, 1.0, -3.0]])
        e_val, e_sgn = quiet(sps.logsumexp, x, axis=1, b=b, return_sign=True)
        val, sgn = lm.logsumexp(x, axis=1, b=b, return_sign=True)
        same(val, e_val)
        same(sgn, e_sgn)

    def test_zero_weight_hides_inf_and_nan(self):
        # b == 0 removes the entry, even an inf or nan one (scipy)
        x = np.array([INF, NAN, 1.0])
        b = np.array([0.0, 0.0, 1.0])
        same(lm.logsumexp(x, b=b), quiet(sps.logsumexp, x, b=b))

    @pytest.mark.parametrize("row_id", ROW_IDS)
    def test_entropy_special_values_as_scipy(self, row_id):
        pk = np.abs(np.array(ROWS[row_id]))  # inf / nan probabilities
        pk2 = np.stack([pk, [0.2, 0.3, 0.5]], axis=1)
        same(lm.entropy(pk2), quiet(sst.entropy, pk2))
        same(lm.entropy(pk2, pk2[::-1]), quiet(sst.entropy, pk2, pk2[::-1]))

    def test_entropy_negative_entry_as_scipy(self):
        pk = np.array([[0.5, -0.1, 0.6], [0.2, 0.3, 0.5]])
        same(lm.entropy(pk, axis=1), quiet(sst.entropy, pk, axis=1))


# ---------------------------------------------------------------------------
# 2. losses: masked rows, +-inf and nan as torch
# ---------------------------------------------------------------------------
class TestLossSpecialValuesAsTorch:
    @pytest.mark.parametrize("target", [0, 1, 2])
    @pytest.mark.parametrize("row_id", ROW_IDS)
    def test_cross_entropy_and_grad(self, torch, row_id, target):
        logits = np.array([[0.5, -1.0, 2.0], ROWS[row_id]])
        t = np.array([1, target])
        e_loss, e_grad = quiet(torch_ce, torch, logits, t, grad=True, reduction="none")
        loss, grad = lm.cross_entropy_with_grad(logits, t, reduction="none")
        same(loss, e_loss)
        same(grad, e_grad)
        same(lm.cross_entropy(logits, t, reduction="none"), e_loss)

    @pytest.mark.parametrize("target", [0, 1, 2])
    @pytest.mark.parametrize("row_id", ROW_IDS)
    def test_nll_loss(self, torch, row_id, target):
        lp = np.array([[-0.5, -1.0, -2.0], ROWS[row_id]])
        t = np.array([1, target])
        same(lm.nll_loss(lp, t, reduction="none"),
             torch_ce(torch, lp, t, fn="nll_loss", reduction="none"))

    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    def test_fully_masked_row_poisons_the_reduction(self, torch, reduction):
        logits = np.array([[0.5, -1.0, 2.0], [-INF, -INF, -INF]])
        t = np.array([1, 0])
        e_loss, e_grad = quiet(torch_ce, torch, logits, t, grad=True, reduction=reduction)
        loss, grad = lm.cross_entropy_with_grad(logits, t, reduction=reduction)
        assert np.isnan(loss) and np.isnan(e_loss)
        same(grad, e_grad)

    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    @pytest.mark.parametrize("row_id", ["all_minus_inf", "plus_inf", "nan"])
    def test_ignored_row_contributes_nothing(self, torch, row_id, reduction):
        # the loss is torch's (the row adds 0); the gradient of an ignored row is exactly 0
        # whatever its logits -- a deliberate difference: torch's backward gives nan there
        # (0 * nan in log_softmax's backward), which would poison a training step
        logits = np.array([[0.5, -1.0, 2.0], ROWS[row_id]])
        t = np.array([1, -100])
        e_loss, e_grad = quiet(torch_ce, torch, logits, t, grad=True, reduction=reduction)
        loss, grad = lm.cross_entropy_with_grad(logits, t, reduction=reduction)
        same(loss, e_loss)
        same(lm.cross_entropy(logits, t, reduction=reduction), e_loss)
        assert np.all(np.isfinite(loss))
        same(grad[0], e_grad[0])
        np.testing.assert_array_equal(grad[1], 0.0)
        assert np.isnan(e_grad[1]).all()  # torch's artefact, documented in the README

    @pytest.mark.parametrize("smoothing", [0.0, 0.2])
    def test_masked_class_with_label_smoothing(self, torch, smoothing):
        # -inf on a non-target class with label smoothing: eps/C * (-inf) -> inf in torch
        logits = np.array([[0.5, -INF, 2.0]])
        t = np.array([0])
        e_loss, e_grad = quiet(torch_ce, torch, logits, t, grad=True, reduction="none",
                               label_smoothing=smoothing)
        loss, grad = lm.cross_entropy_with_grad(logits, t, reduction="none",
                                                label_smoothing=smoothing)
        same(loss, e_loss)
        same(grad, e_grad)

    @pytest.mark.parametrize("bad", [NAN, INF, -1.0], ids=["nan", "inf", "negative"])
    def test_probability_target_not_checked_result_non_finite_or_torch(self, torch, bad):
        # probability targets are not validated (torch does not either): a nan/inf entry gives a
        # non-finite loss; a negative entry gives torch's number
        logits = np.array([[0.5, -1.0, 2.0]])
        t = np.array([[0.5, bad, 0.5]])
        loss = lm.cross_entropy(logits, t, reduction="none")
        e_loss = quiet(torch_ce, torch, logits, t, reduction="none")
        if np.isfinite(bad):
            same(loss, e_loss)
        else:
            assert not np.isfinite(loss).any() and not np.isfinite(e_loss).any()


# ---------------------------------------------------------------------------
# 3. log_softmax precise at the row maximum (scipy#19521)
# ---------------------------------------------------------------------------
class TestLogSoftmaxAtMaximum:
    @pytest.mark.parametrize("row,dtype", [([0.0, -40.0], np.float64),
                                           ([0.0, -17.0], np.float32),
                                           ([5.0, -30.0, -35.0], np.float64),
                                           ([1.0, -15.0, -16.0], np.float32)],
                             ids=["f64_0_-40", "f32_0_-17", "f64_3terms", "f32_3terms"])
    def test_relative_error_at_max_vs_mpmath(self, mpmath, row, dtype):
        x = np.array(row, dtype=dtype)
        with mpmath.workdps(50):
            xs = [mpmath.mpf(float(v)) for v in x]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
            exact = [float(v - lse) for v in xs]
        got = lm.log_softmax(x)
        assert got.dtype == dtype
        eps = np.finfo(dtype).eps
        np.testing.assert_allclose(got, np.array(exact, dtype=dtype), rtol=2 * eps, atol=0)
        assert got[0] < 0  # scipy returns exactly 0 here

    def test_scipy_loses_it(self):
        # documents why: the oracle itself rounds the maximum to 0
        assert sps.log_softmax(np.array([0.0, -40.0]))[0] == 0.0

    def test_cross_entropy_at_max_is_as_precise(self, mpmath):
        # the loss of the most likely class: log1p(exp(-40)) = 4.25e-18, not 0
        with mpmath.workdps(50):
            exact = float(mpmath.log1p(mpmath.exp(-40)))
        got = lm.cross_entropy(np.array([[0.0, -40.0]]), np.array([0]))
        assert got == pytest.approx(exact, rel=4 * np.finfo(float).eps, abs=0)


# rows the across-rows kernels do not take: long ones (one block of 2048
# values and more), the column kernel's neighbours, and every layout the
# row-by-row code reads in place
AT_MAX_COLS = [9, 41, 65, 300, 2049, 5000]
AT_MAX_LAYOUTS = ["C", "fortran", "step2", "reversed", "middle_axis"]


def _at_max_case(n_cols, dtype, layout, rng):
    """Rows whose target is the (only) max and whose other terms are 2e-20 to
    5e-11 of it (float32: 4e-18 to 1e-11), so the loss is the sum of those
    (far below an ulp of 1); the target sits first, last, mid-row and (past
    2048 values) in a later block.  Returns logits laid out as asked (for
    'middle_axis': (1, C, N), the class axis 1), target, and the rows."""
    n_rows = 6
    lo, hi = (23.0, 45.0) if dtype == np.float64 else (25.0, 40.0)
    rows = -rng.uniform(lo, hi, size=(n_rows, n_cols))
    target = np.array([0, n_cols - 1, n_cols // 2, min(n_cols - 1, 2048), 1, n_cols - 2])
    rows[np.arange(n_rows), target] = rng.uniform(-3.0, 3.0, n_rows)   # the max
    for r in range(n_rows):   # the others relative to their row's max
        others = np.arange(n_cols) != target[r]
        rows[r, others] += rows[r, target[r]]
    rows = rows.astype(dtype)
    if layout == "C":
        x = rows
    elif layout == "fortran":
        x = np.asfortranarray(rows)
    elif layout == "step2":
        x = np.repeat(rows, 2, axis=1)[:, ::2]
    elif layout == "reversed":
        x = rows[:, ::-1].copy()[:, ::-1]
    else:
        x = np.ascontiguousarray(rows.T)[None]
    return x, target, rows


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("target", [0, 5, 2047], ids=["first", "inside", "last"])
@pytest.mark.parametrize("n_cols", [2049, 4096])
def test_cross_entropy_target_in_an_all_minus_inf_first_block(torch, n_cols, target, dtype):
    """A target in a first block (2048 classes) of only -inf, before the
    finite ones: loss +inf and the gradient as torch's.  Counting that
    block's values "at the max" (-inf) as ties of the target left 2047 in
    the row's sum, and the other classes' gradient entries 1/2048 of
    torch's (a regression found in review)."""
    x = np.full((2, n_cols), -np.inf)
    x[:, 2048:] = np.random.default_rng(n_cols).normal(size=(2, n_cols - 2048))
    t = np.array([target, target])
    e_loss, e_grad = torch_ce(torch, x, t, grad=True, reduction="sum")
    for kw in ({}, {"sample_weight": np.ones(2)}):
        loss, grad = lm.cross_entropy_with_grad(x.astype(dtype), t, reduction="sum", **kw)
        assert loss == e_loss == np.inf
        np.testing.assert_allclose(grad, e_grad, rtol=1e-5 if dtype == np.float32 else 1e-13,
                                   atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", AT_MAX_LAYOUTS)
@pytest.mark.parametrize("n_cols", AT_MAX_COLS)
def test_cross_entropy_at_max_keeps_relative_precision(mpmath, n_cols, layout, dtype):
    """The README's "cross-entropy of the most likely class is as precise"
    on every row length and layout, with the gradient's target entry
    (-(1 - p_y), the other classes' share), through sample_weight and
    where=.  With
    the target's exp(0) = 1 inside the row's sum, these losses (1e-20..1e-9)
    came out 0 or with no correct digit (up to 1e16 ulp off)."""
    rng = np.random.default_rng([n_cols, len(layout), np.dtype(dtype).itemsize])
    x, target, rows = _at_max_case(n_cols, dtype, layout, rng)
    want, want_grad_y = _at_max_exact(mpmath, rows, target)
    axis = 1 if layout == "middle_axis" else -1
    t = target[None] if layout == "middle_axis" else target
    # float64: a few ulp, but the row-by-row code (fortran, step2, reversed)
    # sums thousands of tiny terms in order: 23 ulp seen at 5000 values;
    # float32: its exps are float's (~1 ulp each), 4.1 ulp seen
    rtol = 64 * np.finfo(np.float64).eps if dtype == np.float64 else 8 * np.finfo(np.float32).eps
    got = lm.cross_entropy(x, t, axis=axis, reduction="none").reshape(-1)
    np.testing.assert_allclose(got, want.astype(dtype), rtol=rtol, atol=0)
    loss, grad = lm.cross_entropy_with_grad(x, t, axis=axis, reduction="sum")
    np.testing.assert_allclose(loss, want.sum(), rtol=rtol)
    grad = np.moveaxis(grad, 1, -1)[0] if layout == "middle_axis" else grad
    grad_y = grad[np.arange(len(target)), target]
    # float32 gradients of the short-row kernels carry their float exps'
    # error twice (9 ulp seen on avx2): twice the loss's bound
    np.testing.assert_allclose(grad_y, want_grad_y.astype(dtype),
                               rtol=rtol * (2 if dtype == np.float32 else 1), atol=0)
    if layout == "middle_axis":
        return
    # the extended path: sample_weight (the vectorised rows on C order, the
    # row-by-row code on the others), and where= (always row by row) with a
    # few classes other than the target masked out
    weighted = lm.cross_entropy(x, t, reduction="none", sample_weight=np.full(len(t), 2.0))
    np.testing.assert_allclose(weighted, (2 * want).astype(dtype), rtol=rtol, atol=0)
    mask = rng.random(rows.shape) > 0.2
    mask[np.arange(len(target)), target] = True
    want_m, want_grad_m = _at_max_exact(mpmath, rows, target, mask)
    np.testing.assert_allclose(lm.cross_entropy(x, t, reduction="none", where=mask),
                               want_m.astype(dtype), rtol=rtol, atol=0)
    _, grad = lm.cross_entropy_with_grad(x, t, reduction="sum", where=mask)
    np.testing.assert_allclose(grad[np.arange(len(target)), target], want_grad_m.astype(dtype),
                               rtol=rtol * (2 if dtype == np.float32 else 1), atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", AT_MAX_LAYOUTS)
@pytest.mark.parametrize("n_cols", AT_MAX_COLS)
def test_evaluate_and_entropy_from_logits_at_max_keep_relative_precision(
        mpmath, n_cols, layout, dtype):
    """evaluate_logits' nll of a top class and the entropy of a near one-hot
    row are the rest's share, far below an ulp of 1: computed as lse - x_y
    and log(1 + rest) - u / S, the nll came out 0 and the entropy without
    its log1p(rest) term (2.2% low); the count at the max keeps them to a few
    ulp on every layout (the vectorised blocks and the row-by-row code)."""
    rng = np.random.default_rng([n_cols, len(layout), np.dtype(dtype).itemsize, 7])
    x, target, rows = _at_max_case(n_cols, dtype, layout, rng)
    axis = 1 if layout == "middle_axis" else -1
    t = target[None] if layout == "middle_axis" else target
    # as the cross-entropy test: sequential sums of thousands of tiny terms
    # on the row-by-row layouts; float results are rounded to float
    rtol = 64 * np.finfo(np.float64).eps if dtype == np.float64 else 2 * np.finfo(np.float32).eps
    want_nll, _ = _at_max_exact(mpmath, rows, target)
    got = lm.evaluate_logits(x, t, axis=axis, k=1, reduction="none")
    np.testing.assert_allclose(got["nll"].reshape(-1), want_nll.astype(dtype), rtol=rtol, atol=0)
    assert got["accuracy"].all()
    # 0.5: inv_t = 2, exact; 0.7: x inv_t rounds (the difference to the max
    # must still be exactly 0 at it, FMA contraction or not)
    for temperature in (1.0, 0.5, 0.7):
        want_h = _at_max_entropy(mpmath, rows, 1.0 / temperature)
        got_h = lm.entropy_from_logits(x, axis=axis, temperature=temperature)
        np.testing.assert_allclose(got_h.reshape(-1), want_h.astype(dtype), rtol=rtol, atol=0)
        if temperature == 1.0:
            np.testing.assert_allclose(got["entropy"].reshape(-1), want_h.astype(dtype),
                                       rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", [41, 2049])
def test_near_one_hot_metrics_on_every_simd_path(simd_path, mpmath, n_cols, dtype):
    """The vectorised blocks' count at the max (lm_ent_sums_below) on each
    dispatch path: C-ordered rows, as the test above."""
    rng = np.random.default_rng([n_cols, np.dtype(dtype).itemsize, 11])
    x, target, rows = _at_max_case(n_cols, dtype, "C", rng)
    rtol = 64 * np.finfo(np.float64).eps if dtype == np.float64 else 2 * np.finfo(np.float32).eps
    got = lm.evaluate_logits(x, target, k=1, reduction="none")
    np.testing.assert_allclose(got["nll"], _at_max_exact(mpmath, rows, target)[0].astype(dtype),
                               rtol=rtol, atol=0)
    want_h = _at_max_entropy(mpmath, rows, 1.0).astype(dtype)
    np.testing.assert_allclose(got["entropy"], want_h, rtol=rtol, atol=0)
    np.testing.assert_allclose(lm.entropy_from_logits(x), want_h, rtol=rtol, atol=0)
    # inv_t = 1 / 0.7 rounds: formed as x inv_t - m, FMA-contracted on the
    # avx2 / AVX-512 variants, the max's own term was the product's rounding
    # error and a one-value row's entropy -5.6e-17 (found in review)
    want_t = _at_max_entropy(mpmath, rows, 1.0 / 0.7).astype(dtype)
    np.testing.assert_allclose(lm.entropy_from_logits(x, temperature=0.7), want_t,
                               rtol=rtol, atol=0)
    assert (lm.entropy_from_logits(x[:, :1], temperature=0.7) == 0).all()


@pytest.mark.parametrize("layout", ["C", "fortran", "with_minus_inf", "softcap"])
def test_js_from_logits_near_one_hot_stays_precise(mpmath, layout):
    """A JS of 1e-17 between two near one-hot rows: the row-by-row code
    took log1p's lse (m + 4e-18) for a while, and the mixture's log at the
    max then left ulp(log 2) errors: -1.2e-17 (found in review).  Every
    layout agrees with mpmath, none is negative, and JS(p || p) is 0."""
    rng = np.random.default_rng(len(layout))
    p = np.array([[0.0, -40.0], [0.0, -40.0], [1.0, -35.0]])
    q = np.array([[0.0, -38.0], [0.0, -20.0], [1.0, -36.5]])
    p = np.concatenate([p, np.full((3, 3), -45.0) + rng.normal(size=(3, 3))], axis=1)
    q = np.concatenate([q, np.full((3, 3), -44.0) + rng.normal(size=(3, 3))], axis=1)
    kw, rtol = {}, 1e-13
    if layout == "fortran":
        p, q = np.asfortranarray(p), np.asfortranarray(q)
    elif layout == "with_minus_inf":   # a C row the vectorised code hands back
        p = np.concatenate([p, np.full((3, 1), -np.inf)], axis=1)
        q = np.concatenate([q, np.full((3, 1), -np.inf)], axis=1)
    elif layout == "softcap":
        kw, rtol = {"logit_softcap": 100.0}, 1e-12
    p_eff = 100.0 * np.tanh(p / 100.0) if kw else p
    q_eff = 100.0 * np.tanh(q / 100.0) if kw else q
    want = _js_exact(mpmath, p_eff, q_eff)
    got = lm.js_divergence_from_logits(p, q, reduction="none", **kw)
    # the middle row's 7e-10 is a difference of terms ~1e-9 whose own
    # rounding (~1e-18 absolute, as before the change) bounds it at ~2e-9
    np.testing.assert_allclose(got[[0, 2]], want[[0, 2]], rtol=rtol, atol=0)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-8, atol=0)
    assert (got > 0).all()
    assert (lm.js_divergence_from_logits(p, p, reduction="none", **kw) == 0).all()


# ---------------------------------------------------------------------------
# 4. KL: limits and validation
# ---------------------------------------------------------------------------
class TestKLPolicy:
    def test_zero_p_term_is_zero(self):
        p = np.array([0.0, 1.0, 0.0])
        for q in ([0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]):
            got = lm.kl_divergence(p, q)
            assert got == sps.rel_entr(p, np.array(q)).sum()
            assert np.isfinite(got)

    def test_positive_p_with_zero_q_is_inf(self):
        assert lm.kl_divergence([0.5, 0.5], [1.0, 0.0]) == INF
        assert lm.kl_divergence(np.float32([0.5, 0.5]), np.float32([1.0, 0.0])) == INF

    @pytest.mark.parametrize("which", ["p", "q"])
    @pytest.mark.parametrize("bad", [-0.25, NAN, -INF], ids=["negative", "nan", "minus_inf"])
    def test_default_validates(self, which, bad):
        p, q = np.array([[0.5, 0.5], [0.25, 0.75]]), np.array([[0.5, 0.5], [0.5, 0.5]])
        (p if which == "p" else q)[1, 0] = bad
        with pytest.raises(ValueError, match=rf"\b{which}\b.*validate=False"):
            lm.kl_divergence(p, q)

    @pytest.mark.parametrize("bad", [-0.25, NAN], ids=["negative", "nan"])
    def test_validate_false_follows_rel_entr(self, bad):
        p, q = np.array([[0.5, 0.5], [0.25, 0.75]]), np.array([[0.5, 0.5], [0.5, 0.5]])
        q[1, 0] = bad
        same(lm.kl_divergence(p, q, validate=False), quiet(sps.rel_entr, p, q).sum(-1))
        p[0, 0] = bad
        same(lm.kl_divergence(p, q, validate=False), quiet(sps.rel_entr, p, q).sum(-1))

    def test_plus_inf_is_not_rejected(self):
        # +inf is a (non-normalised) non-negative value: rel_entr semantics, no error
        p, q = np.array([INF, 1.0]), np.array([1.0, INF])
        same(lm.kl_divergence(p, q), quiet(lambda: sps.rel_entr(p, q).sum()))
        same(lm.kl_divergence(p[:1], q[:1]), sps.rel_entr(p[:1], q[:1]).sum())  # inf


# ---------------------------------------------------------------------------
# 5. empty arrays and zero-size axes
# ---------------------------------------------------------------------------
EMPTY_CASES = [((0,), None), ((0,), 0), ((2, 0), 1), ((2, 0), 0), ((0, 3), 1), ((0, 3), 0),
               ((2, 0, 3), (0, 1)), ((0, 0), None)]


def _eid(c):
    return f"{'x'.join(map(str, c[0]))}-axis{c[1]}"


class TestEmpty:
    @pytest.mark.parametrize("case", EMPTY_CASES, ids=_eid)
    @pytest.mark.parametrize("func", ["logsumexp", "softmax", "log_softmax"])
    def test_drop_in_as_scipy(self, func, case):
        shape, axis = case
        x = np.zeros(shape)
        if func == "logsumexp":
            # closed form: the log of an empty sum is -inf (scipy raises IndexError on some of
            # these empty tuple-axis cases, a scipy bug)
            expected = quiet(lambda: np.log(np.exp(x).sum(axis=axis)))
            got = lm.logsumexp(x, axis=axis)
            assert np.shape(got) == np.shape(expected)
            same(got, expected)
            return
        try:
            expected = quiet(getattr(sps, func), x, axis=axis)
        except ValueError:  # scipy: softmax over an empty axis is undefined
            with pytest.raises(ValueError, match=r"\bx\b.*empty axis"):
                getattr(lm, func)(x, axis=axis)
            return
        got = getattr(lm, func)(x, axis=axis)
        assert np.shape(got) == np.shape(expected)
        same(got, expected)

    @pytest.mark.parametrize("func", ["softmax", "log_softmax"])
    def test_empty_axis_with_nothing_to_compute_returns_empty(self, func):
        # (0, 0) over axis 0: no row at all, so nothing is undefined -> an empty result
        # (scipy raises from inside np.max here, yet returns [] for its (2, 0) twin)
        for shape, axis in [((0, 0), 0), ((0, 0), 1), ((3, 0, 0), 1)]:
            got = getattr(lm, func)(np.zeros(shape), axis=axis)
            assert got.shape == shape and got.dtype == np.float64
        with pytest.raises(ValueError, match="empty axis"):  # rows exist: undefined
            getattr(lm, func)(np.zeros((3, 0)), axis=1)

    @pytest.mark.parametrize("case", EMPTY_CASES[:6], ids=_eid)
    def test_entropy_and_kl_as_scipy(self, case):
        shape, axis = case
        x = np.zeros(shape)
        same(lm.entropy(x, axis=axis), quiet(sst.entropy, x, axis=axis))
        same(lm.entropy(x, x, axis=axis), quiet(sst.entropy, x, x, axis=axis))
        # kl: an empty sum is 0 (numpy's sum of rel_entr)
        same(lm.kl_divergence(x, x, axis=axis), sps.rel_entr(x, x).sum(axis=axis))

    @pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
    def test_losses_empty_batch_as_torch(self, torch, reduction):
        x = np.zeros((0, 3))
        t = np.zeros(0, dtype=np.int64)
        expected = torch_ce(torch, x, t, reduction=reduction)
        same(lm.cross_entropy(x, t, reduction=reduction), expected)
        same(lm.nll_loss(x, t, reduction=reduction),
             torch_ce(torch, x, t, fn="nll_loss", reduction=reduction))
        loss, grad = lm.cross_entropy_with_grad(x, t, reduction=reduction)
        same(loss, expected)
        assert grad.shape == (0, 3)

    @pytest.mark.parametrize("fn", [lm.cross_entropy, lm.cross_entropy_with_grad, lm.nll_loss])
    def test_losses_zero_classes_value_error(self, fn):
        with pytest.raises(ValueError, match="no classes"):
            fn(np.zeros((2, 0)), np.zeros(2, dtype=np.int64))


# ---------------------------------------------------------------------------
# 6. C = 1, one row, 0-d input
# ---------------------------------------------------------------------------
class TestDegenerate:
    @pytest.mark.parametrize("dtype", DTYPES)
    def test_single_class(self, torch, dtype):
        x = np.array([[3.0], [-2.0], [INF]], dtype=dtype)
        same(lm.logsumexp(x, axis=1), quiet(sps.logsumexp, x, axis=1))
        same(lm.softmax(x, axis=1), quiet(sps.softmax, x, axis=1))
        same(lm.log_softmax(x, axis=1), quiet(sps.log_softmax, x, axis=1))
        t = np.zeros(3, dtype=np.int64)
        e_loss, e_grad = quiet(torch_ce, torch, x, t, grad=True, reduction="none")
        loss, grad = lm.cross_entropy_with_grad(x, t, reduction="none")
        same(loss, e_loss.astype(dtype))
        same(grad, e_grad.astype(dtype))

    def test_single_row(self, torch):
        x = np.array([[1.0, -2.0, 0.5]])
        for red in ("none", "sum", "mean"):
            same(lm.cross_entropy(x, np.array([2]), reduction=red),
                 torch_ce(torch, x, np.array([2]), reduction=red))
        same(lm.softmax(x, axis=1), sps.softmax(x, axis=1))

    @pytest.mark.parametrize("value", [2.5, -INF, INF, NAN], ids=["finite", "-inf", "inf", "nan"])
    @pytest.mark.parametrize("func", ["logsumexp", "softmax", "log_softmax"])
    def test_zero_dim_drop_in(self, func, value):
        expected = quiet(getattr(sps, func), np.float64(value))
        got = getattr(lm, func)(np.float64(value))
        assert np.ndim(got) == 0 and isinstance(got, np.floating)
        same(got, expected)

    def test_zero_dim_entropy_and_kl(self):
        same(lm.entropy(np.float64(0.3)), quiet(sst.entropy, np.float64(0.3)))
        same(lm.kl_divergence(0.5, 0.25), sps.rel_entr(0.5, 0.25))
        assert np.ndim(lm.kl_divergence(0.5, 0.25)) == 0

    @pytest.mark.parametrize("fn", [lm.cross_entropy, lm.cross_entropy_with_grad, lm.nll_loss])
    def test_zero_dim_losses_need_a_class_axis(self, fn):
        # torch rejects a 0-d input too; here a ValueError naming the argument
        with pytest.raises(ValueError, match="class axis"):
            fn(np.float64(1.0), 0)


# ---------------------------------------------------------------------------
# 7. ignore_index may equal a valid class (torch), dtype promotion
# ---------------------------------------------------------------------------
class TestIgnoreIndexValidClass:
    @pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
    @pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
    def test_that_class_is_ignored(self, torch, reduction, weighted):
        rng = np.random.default_rng(5)
        x = rng.standard_normal((6, 3))
        t = np.array([0, 1, 2, 1, 0, 2])
        kw = dict(reduction=reduction, ignore_index=1)
        tkw = dict(kw)
        if weighted:
            kw["weight"] = np.array([0.5, 2.0, 1.5])
            tkw["weight"] = torch.tensor(kw["weight"])
        e_loss, e_grad = torch_ce(torch, x, t, grad=True, **tkw)
        loss, grad = lm.cross_entropy_with_grad(x, t, **kw)
        same(loss, e_loss)
        same(grad, e_grad)
        same(lm.nll_loss(x, t, **kw), torch_ce(torch, x, t, fn="nll_loss", **tkw))
        assert np.all(grad[t == 1] == 0)

    def test_all_targets_ignored_mean_is_nan(self, torch):
        x = np.array([[1.0, 2.0], [0.0, 1.0]])
        t = np.array([1, 1])
        expected = torch_ce(torch, x, t, ignore_index=1)
        assert np.isnan(expected)
        assert np.isnan(lm.cross_entropy(x, t, ignore_index=1))
        loss, grad = lm.cross_entropy_with_grad(x, t, ignore_index=1)
        assert np.isnan(loss) and np.all(grad == 0)

    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
    @pytest.mark.parametrize("sample_weight", [False, True], ids=["plain", "sample_weight"])
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
    @pytest.mark.parametrize("n_cols", [2, 9, 65])
    def test_zero_summed_target_weight_is_nan_as_torch(self, torch, n_cols, label_smoothing,
                                                       sample_weight, dtype):
        """'mean' over kept targets whose class weights are all 0 (half the
        rows ignored): torch divides the target term by that 0, so the loss
        is nan - with label smoothing too, whose own term alone would be
        x/0 = inf (lossmle gave inf) - and the kept rows' gradients are nan
        (lossmle gave 0), the ignored rows' exactly 0."""
        rng = np.random.default_rng(n_cols)
        x = rng.standard_normal((6, n_cols)).astype(dtype)
        t = rng.integers(0, n_cols, 6)
        w = rng.uniform(0.5, 2.0, n_cols)
        w[t] = 0.0
        t[::2] = -100
        kw = dict(weight=w, label_smoothing=label_smoothing)
        e_loss, e_grad = torch_ce(torch, x, t, grad=True, weight=torch.tensor(w),
                                  label_smoothing=label_smoothing)
        assert np.isnan(e_loss)
        if sample_weight:
            kw["sample_weight"] = np.ones(6)
        assert np.isnan(lm.cross_entropy(x, t, **kw))
        loss, grad = lm.cross_entropy_with_grad(x, t, **kw)
        assert np.isnan(loss)
        np.testing.assert_array_equal(np.isnan(grad), np.isnan(e_grad))
        assert np.isnan(grad[1::2]).all() and np.all(grad[::2] == 0)


class TestDtypePolicy:
    @pytest.mark.parametrize("func", ["logsumexp", "softmax", "log_softmax"])
    def test_float16_computes_and_returns_float32(self, func):
        x16 = np.array([[1.5, -2.0, 60000.0], [0.1, 0.2, 0.3]], dtype=np.float16)
        got = getattr(lm, func)(x16, axis=1)
        assert got.dtype == np.float32  # scipy would return float16
        # the float32 answer on the float16 values (60000 is exact in both)
        expected = getattr(sps, func)(x16.astype(np.float64), axis=1).astype(np.float32)
        np.testing.assert_allclose(got, expected, rtol=2e-6)

    def test_float16_losses_return_float32(self, torch):
        x16 = np.array([[1.5, -2.0, 3.0], [0.1, 0.2, 0.3]], dtype=np.float16)
        t = np.array([2, 0])
        loss, grad = lm.cross_entropy_with_grad(x16, t, reduction="none")
        assert loss.dtype == np.float32 and grad.dtype == np.float32
        e_loss, e_grad = torch_ce(torch, x16.astype(np.float64), t, grad=True, reduction="none")
        np.testing.assert_allclose(loss, e_loss, rtol=2e-6)
        np.testing.assert_allclose(grad, e_grad, rtol=2e-6, atol=1e-7)
        assert lm.entropy(x16.T).dtype == np.float32
        assert lm.kl_divergence(np.abs(x16), np.abs(x16)).dtype == np.float32

    @pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint8, np.bool_, np.int64])
    def test_integers_and_bool_compute_in_float64(self, dtype):
        x = np.array([[1, 0, 1], [0, 0, 1]]).astype(dtype)
        for func in ("logsumexp", "softmax", "log_softmax"):
            got = getattr(lm, func)(x, axis=1)
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, getattr(sps, func)(x.astype(float), axis=1),
                                       rtol=1e-15)

    def test_float32_with_float64_promotes_like_numpy(self):
        p32 = np.float32([0.5, 0.5])
        q64 = np.array([0.25, 0.75])
        assert lm.kl_divergence(p32, p32).dtype == np.float32
        assert lm.kl_divergence(p32, q64).dtype == np.float64
        assert lm.logsumexp(p32, b=q64).dtype == np.float64


# ===========================================================================
# Edge cases: special values, degenerate and empty shapes, aliasing (was test_edge_cases.py)
# Edge cases: numerical extremes, masked (-inf) rows, nan/inf propagation,
# a single class, a single row, 0-d and empty inputs, aliasing and mutation.
# ===========================================================================
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
class TestEmptyShapes:
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
