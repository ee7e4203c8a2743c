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
from conftest import quiet
from oracles import mp_cross_entropy_at_max as _at_max_exact
from oracles import mp_entropy_from_logits as _at_max_entropy
from oracles import mp_js_from_logits as _js_exact, torch_loss

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
