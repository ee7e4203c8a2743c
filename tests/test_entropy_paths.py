"""entropy's vectorised row path (lm_sum + lm_entr) on every SIMD path.

Contiguous rows without qk take a vectorised sum and a vectorised
-(p/s) log(p/s); a row with anything outside that fast domain (negative, nan,
inf, a zero or non-finite total, a subnormal p/s) is redone by the exact
scalar code.  Oracle: scipy.stats.entropy (float64).
"""
import numpy as np
import pytest
import scipy.stats as sst

import lossmle as lm


def rows(n_cols, dtype, seed):
    rng = np.random.default_rng(seed)
    p = rng.random((40, n_cols)) * 3.0
    p[1, 0] = 0.0                    # a zero: 0 log 0 = 0, fast path
    p[2, :] = 0.0                    # all zero: total 0 -> nan
    p[3, -1] = -0.5                  # negative: -inf term (scipy: entr(x<0) = -inf)
    p[4, 1] = np.nan
    p[5, 0] = np.inf
    p[6, :] = 1e-310                 # subnormal entries
    p[7, 0] = 1e300 if dtype == np.float64 else 1e38  # the others' p/s underflow
    p[8, :] = 0.0
    p[8, n_cols // 2] = 5.0          # one nonzero: entropy 0
    p[9, :] = 1e-3                   # uniform: log(n)
    with np.errstate(under="ignore"):
        return p.astype(dtype)


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", [9, 100, 4097])
def test_entropy_rows_match_scipy(simd_path, n_cols, dtype, n_threads):
    p = rows(n_cols, dtype, n_cols)
    before = p.copy()
    with np.errstate(all="ignore"):
        want = sst.entropy(p.astype(np.float64), axis=-1)
    got = lm.entropy(p, axis=-1, n_threads=n_threads)
    np.testing.assert_array_equal(p, before)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite].astype(dtype))
    # the exact scalar path (here: the subnormal row) sums its total
    # sequentially, not pairwise as NumPy: over 4097 equal values ~2e-14 off
    rtol = 5e-14 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=1e-300)
    assert got[8] == 0.0
    np.testing.assert_allclose(got[9], np.log(n_cols), rtol=rtol)  # closed form
