"""log_likelihood / negative_log_likelihood / empirical_kl.

Oracles: the seed's closed forms (the coin and its ten flips), NumPy gathers
written here, scipy.special (log_softmax, rel_entr), math.fsum, and the
binomial standard error of the estimator.
"""
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.special as sps

import lossmle as lm

FLIPS = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])  # the seed's x_1..x_10, 1 = heads
P = np.array([1 / 2, 1 / 2])  # fair coin: [p(0), p(1)]
Q = np.array([2 / 3, 1 / 3])  # the seed's q: q(1) = 1/3, q(0) = 2/3
EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------------------
# The seed's ten flips, in closed form
# ---------------------------------------------------------------------------
def test_seed_flips_log_likelihoods():
    # p(obs | p) = (1/2)^10, p(obs | q) = (2/3)^5 (1/3)^5
    assert lm.log_likelihood(P, FLIPS) == pytest.approx(10 * math.log(0.5), rel=4 * EPS)
    assert lm.log_likelihood(Q, FLIPS) == pytest.approx(
        5 * math.log(2 / 3) + 5 * math.log(1 / 3), rel=4 * EPS)


def test_seed_flips_likelihood_ratio_is_exact_fraction():
    ratio = Fraction(1, 2) ** 10 / (Fraction(2, 3) ** 5 * Fraction(1, 3) ** 5)
    assert ratio == Fraction(59049, 32768)
    log_ratio = float(lm.log_likelihood(P, FLIPS) - lm.log_likelihood(Q, FLIPS))
    assert math.exp(log_ratio) == pytest.approx(float(ratio), rel=16 * EPS)


def test_seed_flips_empirical_kl_is_exactly_kl():
    # five heads, five tails: n_c / N = p(c), so the estimator *is* D_KL(p || q)
    closed = 0.5 * math.log(9 / 8)  # (1/2) log(3/2) + (1/2) log(3/4)
    assert lm.empirical_kl(FLIPS, P, Q) == pytest.approx(closed, rel=8 * EPS)
    assert lm.empirical_kl(FLIPS, P, Q) == pytest.approx(
        sps.rel_entr(P, Q).sum(), rel=8 * EPS)
    # and the other way round: samples in proportion 2:1 from q
    from_q = np.array([0, 0, 1] * 4)
    closed_qp = 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)
    assert lm.empirical_kl(from_q, Q, P) == pytest.approx(closed_qp, rel=8 * EPS)


def test_empirical_kl_base2_is_bits():
    assert lm.empirical_kl(FLIPS, P, Q, base=2) == pytest.approx(
        0.5 * math.log2(9 / 8), rel=8 * EPS)


def test_bool_samples_are_0_1():
    assert lm.log_likelihood(Q, FLIPS.astype(bool)) == lm.log_likelihood(Q, FLIPS)


# ---------------------------------------------------------------------------
# Random cases against NumPy / SciPy written here
# ---------------------------------------------------------------------------
def _random_probs(rng, shape):
    a = rng.gamma(0.7, size=shape) + 1e-3
    return a / a.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_shared_distribution_matches_gather(rng, reduction):
    p = _random_probs(rng, (7,))
    s = rng.integers(0, 7, size=(40, 3))
    per = np.log(p)[s]
    expected = {"sum": math.fsum(per.ravel()), "mean": math.fsum(per.ravel()) / s.size,
                "none": per}[reduction]
    got = lm.log_likelihood(p, s, reduction=reduction)
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    np.testing.assert_allclose(lm.negative_log_likelihood(p, s, reduction=reduction),
                               -np.asarray(expected), rtol=1e-13)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_per_sample_distributions_and_axis0(rng, reduction):
    p = _random_probs(rng, (30, 5))
    s = rng.integers(0, 5, size=30)
    per = np.log(p[np.arange(30), s])
    expected = {"sum": per.sum(), "mean": per.mean(), "none": per}[reduction]
    np.testing.assert_allclose(lm.log_likelihood(p, s, reduction=reduction), expected,
                               rtol=1e-13)
    np.testing.assert_allclose(lm.log_likelihood(p.T, s, axis=0, reduction=reduction),
                               expected, rtol=1e-13)


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-sample"])
def test_logits_match_scipy_log_softmax(rng, shared):
    z = 5 * rng.standard_normal((6,) if shared else (50, 6))
    s = rng.integers(0, 6, size=50)
    lsm = sps.log_softmax(z, axis=-1)
    per = lsm[s] if shared else lsm[np.arange(50), s]
    np.testing.assert_allclose(lm.log_likelihood(z, s, logits=True, reduction="none"),
                               per, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        lm.negative_log_likelihood(z, s, logits=True, reduction="mean"), -per.mean(),
        rtol=1e-12)


def test_logits_extreme_values_stay_finite():
    z = np.array([[1000.0, 0.0], [-1000.0, 0.0]])
    got = lm.log_likelihood(z, [1, 0], logits=True, reduction="none")
    np.testing.assert_allclose(got, [-1000.0, -1000.0], rtol=1e-15)


def test_float32_stays_float32(rng):
    p = _random_probs(rng, (20, 4)).astype(np.float32)
    s = rng.integers(0, 4, size=20)
    got = lm.log_likelihood(p, s)
    assert got.dtype == np.float32
    assert got == pytest.approx(np.log(p[np.arange(20), s].astype(np.float64)).sum(),
                                rel=1e-6)


def test_zero_probability_sample_gives_minus_inf():
    assert lm.log_likelihood([1.0, 0.0], [0, 1]) == -np.inf
    assert lm.log_likelihood([[1.0, 0.0]], [1], reduction="none")[0] == -np.inf


def test_unobserved_zero_probability_class_is_fine():
    # 0 * log 0 = 0: a class that was never observed contributes nothing
    assert lm.log_likelihood([0.5, 0.5, 0.0], [0, 1]) == pytest.approx(2 * math.log(0.5))


def test_empty_samples():
    assert lm.log_likelihood(P, np.array([], dtype=int)) == 0.0
    assert np.isnan(lm.log_likelihood(P, np.array([], dtype=int), reduction="mean"))
    assert np.isnan(lm.empirical_kl(np.array([], dtype=int), P, Q))


# ---------------------------------------------------------------------------
# empirical_kl: the estimator, and its convergence to D_KL
# ---------------------------------------------------------------------------
def test_empirical_kl_equals_count_formula(rng):
    p, q = _random_probs(rng, (6,)), _random_probs(rng, (6,))
    s = rng.choice(6, p=p, size=500)
    n = np.bincount(s, minlength=6)
    expected = math.fsum(n[c] / 500 * math.log(p[c] / q[c]) for c in range(6) if n[c])
    assert lm.empirical_kl(s, p, q) == pytest.approx(expected, rel=1e-13)


def test_empirical_kl_per_sample_rows(rng):
    p, q = _random_probs(rng, (80, 3)), _random_probs(rng, (80, 3))
    s = np.array([rng.choice(3, p=row) for row in p])
    i = np.arange(80)
    expected = np.mean(np.log(p[i, s]) - np.log(q[i, s]))
    assert lm.empirical_kl(s, p, q) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("n", [10**3, 10**5])
def test_empirical_kl_converges_to_kl(rng, n):
    # Var_p[log p/q] for the coin is (log 2 / 2)^2, so the standard error is
    # log(2) / (2 sqrt(n)); 5 standard errors fail with probability < 1e-6.
    s = rng.choice(2, p=P, size=n)
    kl = sps.rel_entr(P, Q).sum()
    assert abs(lm.empirical_kl(s, P, Q) - kl) < 5 * math.log(2) / (2 * math.sqrt(n))


def test_empirical_kl_zero_q_gives_inf():
    assert lm.empirical_kl([0, 1], [0.5, 0.5], [1.0, 0.0]) == np.inf


def test_inputs_not_mutated(rng):
    p, q = _random_probs(rng, (10, 4)), _random_probs(rng, (10, 4))
    s = rng.integers(0, 4, size=10)
    copies = [a.copy() for a in (p, q, s)]
    lm.empirical_kl(s, p, q)
    lm.log_likelihood(np.log(p), s, logits=True)
    for a, c in zip((p, q, s), copies):
        np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("call, exc, match", [
    (lambda: lm.log_likelihood(P, [0.0, 1.0]), TypeError, "samples"),
    (lambda: lm.log_likelihood(P, [0, 2]), IndexError, "samples contains class index 2"),
    (lambda: lm.log_likelihood(P, [-1, 0]), IndexError, "samples contains class index -1"),
    (lambda: lm.log_likelihood([0.5, 0.6], [0]), ValueError, "sum"),
    (lambda: lm.log_likelihood([1.5, -0.5], [0]), ValueError, "non-negative"),
    (lambda: lm.log_likelihood([np.nan, 1.0], [0]), ValueError, "finite"),
    (lambda: lm.log_likelihood(np.full((3, 2), 0.5), [0, 1]), ValueError, "shape"),
    (lambda: lm.log_likelihood(P, [0], reduction="avg"), ValueError, "reduction"),
    (lambda: lm.log_likelihood(0.5, [0]), ValueError, "dist"),
    (lambda: lm.log_likelihood(np.zeros((2, 0)), [0, 0]), ValueError, "no classes"),
    (lambda: lm.log_likelihood(P, [0], axis=2), np.exceptions.AxisError, "axis"),
    (lambda: lm.log_likelihood(["a", "b"], [0]), TypeError, "dist"),
    (lambda: lm.empirical_kl([0, 1], P, [1 / 3, 1 / 3, 1 / 3]), ValueError, "same shape"),
    (lambda: lm.empirical_kl([0, 1], [1.0, 0.0], Q), ValueError, "probability 0 under p"),
    (lambda: lm.empirical_kl([[0, 1]], [[1.0, 0.0], [0.5, 0.5]],
                             [[0.5, 0.5], [0.5, 0.5]]), ValueError, "shape"),
    (lambda: lm.empirical_kl([1], [[1.0, 0.0]], [[0.5, 0.5]]), ValueError,
     "probability 0 under p"),
    (lambda: lm.empirical_kl([0], P, [0.9, 0.2]), ValueError, "q must hold"),
    (lambda: lm.empirical_kl([0], P, Q, base=1), ValueError, "base"),
    (lambda: lm.empirical_kl([0], P, Q, base="e"), TypeError, "base"),
], ids=["float-samples", "index-high", "index-negative", "not-normalised", "negative",
        "nan", "shape", "reduction", "0-d", "no-classes", "axis", "strings",
        "pq-shape", "impossible-sample", "rows-shape", "impossible-row",
        "q-not-normalised", "base-1", "base-str"])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
