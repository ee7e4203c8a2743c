"""entropy's vectorised row paths on every SIMD path.

Contiguous rows without qk take a vectorised sum and a vectorised
-(p/s) log(p/s) (rows of 2..64 values: the across-rows kernel lm_entr_rows,
one SIMD lane per row, through a transposed copy from 9 values; longer rows:
lm_sum + lm_entr); a row with anything outside that fast domain (negative,
nan, inf, a zero or non-finite total, a subnormal p/s) is redone by the
exact scalar code.  A row gets the same bits alone, among many, or with a
gap between rows.
Oracle: scipy.stats.entropy (float64).
"""
import functools

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
# 2..8: the across-rows kernel's unrolled rows; 9..64 its transposed blocks
# (lm_entr_cols); 65+ row by row
@pytest.mark.parametrize("n_cols", [2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 31, 64, 65, 100, 4097])
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
    for r in (0, 3, 6, 39):  # a row alone gets the bits it gets among many
        np.testing.assert_array_equal(lm.entropy(p[r], n_threads=n_threads), got[r])
    # and so do rows with a gap between them (row by row, not a block)
    gapped = np.repeat(p, 2, axis=0)[::2]
    assert gapped.strides[0] == 2 * p.strides[0]
    np.testing.assert_array_equal(lm.entropy(gapped, axis=-1, n_threads=n_threads), got)


@functools.lru_cache(maxsize=None)
def _many_short_rows(n_cols, dtype):
    """40001 rows (157 blocks of 256) with the special rows in two of them,
    and scipy's entropy of each (computed once: it is the slow part)."""
    n_rows = 40001
    rng = np.random.default_rng(n_cols)
    p = rng.random((n_rows, n_cols)) * 3.0
    special = rows(n_cols, dtype, n_cols).astype(np.float64)[:10]
    p[1000:1010] = special
    p[39990:40000] = special
    p[5000, 0] = 0.0
    p = p.astype(dtype)
    with np.errstate(all="ignore"):
        want = sst.entropy(p.astype(np.float64), axis=-1)
    p.flags.writeable = False
    return p, want


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", [2, 3, 4, 5, 6, 7, 8, 9, 20, 64])
def test_entropy_many_short_rows_match_scipy(simd_path, n_cols, dtype, n_threads):
    """The general path's blocks of 256 rows (in parallel with T2): the special
    rows sit in a few blocks, the others are clean."""
    p, want = _many_short_rows(n_cols, dtype)
    n_rows = len(p)
    before = p.copy()
    got = lm.entropy(p, axis=-1, n_threads=n_threads)
    np.testing.assert_array_equal(p, before)
    assert got.dtype == dtype and got.shape == (n_rows,)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite].astype(dtype))
    rtol = 5e-14 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=1e-300)
    # the same bits whatever the thread count
    np.testing.assert_array_equal(lm.entropy(p, axis=-1, n_threads=3 - n_threads), got)


@pytest.mark.parametrize("n_cols", [16, 17, 100, 1000, 4097])
def test_entropy_division_steps_agree_bitwise(simd_path, n_cols):
    """lm_entr forms p / total as p * (1 / total) plus one FMA residual step
    (Markstein) where 2^-1000 <= total <= 2^1000, and divides otherwise.
    Scaling a row by 2^1010 scales every partial sum and p alike, exactly, so
    p / total is the same number both ways: the two must give the same bits
    (without the residual step some quotients are an ulp off, and so is the
    entropy).  And the value itself is scipy's."""
    rng = np.random.default_rng(n_cols)
    p = rng.random((200, n_cols)) ** 4
    scaled = p * 2.0 ** 1010                  # total > 2^1000: the division
    got = lm.entropy(p, axis=-1, n_threads=1)
    np.testing.assert_array_equal(got, lm.entropy(scaled, axis=-1, n_threads=1))
    np.testing.assert_allclose(got, sst.entropy(p, axis=-1), rtol=1e-14)


@pytest.mark.parametrize("n_cols", [4, 9, 33, 64, 1000])
def test_float32_entropy_is_scipys_value_rounded_to_float(simd_path, n_cols):
    """float32 rows take a log with half the polynomial (relative error below
    5e-11, lm_log_normal_for_float): entropy's terms are all of one sign, so
    that error stays far below the float result's half ulp, and the result is
    scipy's float64 value rounded to float, within 0.5 ulp plus a hair: on
    2000 rows per width, on every path (short rows, the across-rows blocks,
    long rows)."""
    rng = np.random.default_rng(n_cols)
    p = (rng.random((2000, n_cols)) ** 3).astype(np.float32)
    got = lm.entropy(p, axis=-1)
    want = sst.entropy(p.astype(np.float64), axis=-1)
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    err = np.abs(got.astype(np.float64) - want) / ulp
    assert err.max() <= 0.501, f"{err.max():.4f} float ulp at row {np.argmax(err)}"
