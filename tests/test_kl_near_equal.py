"""KL of near-equal distributions keeps its digits (scipy gh-20710), on every path.

p log(p/q) with p/q close to 1: log of the rounded ratio is only good to an
ulp of the ratio, i.e. to 1e-16 absolute, which for |p/q - 1| ~ 1e-14 is
1e-2 relative.  The oracle is mpmath on the exact float inputs.
"""
import numpy as np
import pytest

import lossmle as lm
from oracles import mp_kl_rows

mpmath = pytest.importorskip("mpmath")


def near_pairs(n_rows, n, dtype, seed, rel=1e-12):
    """Rows of probabilities p and q = p (1 + rel * noise), as ``dtype``; every
    q differs from its p (at least by an ulp)."""
    rng = np.random.default_rng(seed)
    p = rng.random((n_rows, n)) + 0.05
    p /= p.sum(axis=1, keepdims=True)
    p = p.astype(dtype)
    q = (p.astype(np.float64) * (1 + rel * rng.normal(size=p.shape))).astype(dtype)
    q = np.where(q == p, np.nextafter(p, dtype(1)), q)
    return p, q


def ulps(got, want, dtype):
    """|got - want| in ulps of the result (of ``want`` as ``dtype``)."""
    want = np.asarray(want, dtype=np.float64)
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    return np.abs(np.asarray(got, dtype=np.float64) - want) / spacing


def test_issue_example_single_pair():
    # the issue's case: scipy (since gh-20710) and mpmath give -9.325873406851269e-15;
    # log(p / q) gave -9.34410922520972e-15
    p, q = [0.9456657713430001], [0.9456657713430094]
    got = lm.kl_divergence(p, q)
    want = mp_kl_rows(np.array([p]), np.array([q]))[0]
    assert want == pytest.approx(-9.325873406851269e-15, rel=1e-15, abs=0)
    assert ulps(got, want, np.float64) <= 2


# (n_rows, n): the small-input fast path, the flat short-row kernel, a long
# row (lm_kl), a block of short rows over threads
SHAPES = [(1, 5), (3, 7), (3000, 5), (4, 2000), (700, 64)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_contiguous_paths_within_ulps(simd_path, shape, dtype):
    p, q = near_pairs(*shape, dtype, seed=sum(shape),
                      rel=1e-12 if dtype == np.float64 else 1e-6)
    got = lm.kl_divergence(p, q, n_threads=2)
    want = mp_kl_rows(p, q)
    # terms of both signs: the sum's own rounding is measured against the
    # largest term, so allow that much beside the few ulps of each term
    terms = np.abs(p.astype(np.float64) * np.log(p.astype(np.float64) / q)).max(axis=1)
    tol = 4 * np.spacing(np.abs(want).astype(dtype)).astype(np.float64) \
        + 2 * shape[1] * np.finfo(np.float64).eps * terms
    assert np.all(np.abs(got.astype(np.float64) - want) <= tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_one_term_rows_within_ulps_every_layout(simd_path, dtype):
    """Rows of one value: the result is one term, so a few ulps exactly."""
    p, q = near_pairs(400, 1, dtype, seed=3, rel=1e-13 if dtype == np.float64 else 1e-6)
    p = p * dtype(0.9)
    q = (q * dtype(0.9)).astype(dtype)
    want = mp_kl_rows(p, q)
    layouts = {
        "rows": (p, q, -1),
        "column": (p.T.copy(), q.T.copy(), 0),                  # reduced axis 0
        "middle": (p.reshape(20, 1, 20), q.reshape(20, 1, 20), 1),  # tiles
        "strided": (np.repeat(p, 2, axis=1)[:, ::2], np.repeat(q, 2, axis=1)[:, ::2], -1),
    }
    for name, (pp, qq, axis) in layouts.items():
        got = np.asarray(lm.kl_divergence(pp, qq, axis=axis)).reshape(-1)
        assert ulps(got, want, dtype).max() <= 3, name


def test_scalar_fallback_row_within_ulps():
    # an entry whose ratio is subnormal sends the whole row to the scalar code
    p, q = near_pairs(5, 6, np.float64, seed=11)
    p[:, 0], q[:, 0] = 1e-300, 1e10
    want = mp_kl_rows(p, q)
    got = lm.kl_divergence(p, q)
    terms = np.abs(p * np.log(p / q)).max(axis=1)
    assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want)) + 12 * 2.3e-16 * terms)
    strided = lm.kl_divergence(np.repeat(p, 2, axis=1)[:, ::2], np.repeat(q, 2, axis=1)[:, ::2])
    assert np.all(np.abs(strided - want) <= 4 * np.spacing(np.abs(want)) + 12 * 2.3e-16 * terms)


@pytest.mark.parametrize("axis", [-1, 0])
def test_entropy_relative_within_ulps(axis):
    """entropy(pk, qk) normalises first (as scipy): the oracle takes the same
    normalised floats (5 values: numpy's sum is the plain loop)."""
    p, q = near_pairs(50, 5, np.float64, seed=5)
    p = p * 3.0
    q = q * 3.0
    pn = p / p.sum(axis=1, keepdims=True)
    qn = q / q.sum(axis=1, keepdims=True)
    want = mp_kl_rows(pn, qn)
    got = lm.entropy(p, q, axis=1) if axis == -1 else lm.entropy(p.T.copy(), q.T.copy(), axis=0)
    terms = np.abs(pn * np.log(pn / qn)).max(axis=1)
    assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want)) + 10 * 2.3e-16 * terms)


def test_far_ratios_unchanged():
    """Ratios away from 1 (and across the 1/2 and 2 switch points) still match scipy."""
    sps = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(2)
    p = rng.random((200, 9))
    q = p * np.array([0.4999, 0.5, 0.5001, 0.9, 1.0, 1.1, 1.9999, 2.0, 2.0001])
    for pp, qq in [(p, q), (q, p), (p[:3], q[:3])]:
        np.testing.assert_allclose(lm.kl_divergence(pp, qq),
                                   sps.rel_entr(pp, qq).sum(-1), rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(lm.kl_divergence(pp.T.copy(), qq.T.copy(), axis=0),
                                   sps.rel_entr(pp, qq).sum(-1), rtol=1e-14, atol=1e-15)
