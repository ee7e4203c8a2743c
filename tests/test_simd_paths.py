"""Every SIMD dispatch path and thread count gives the oracle's answers.

The kernels carry AVX-512, AVX2 and baseline variants chosen at run time;
LOSSMLE_SIMD lowers the choice, so each path available on this CPU runs here.
Oracles: scipy.special and NumPy written in the tests.
"""
import os
import re

import numpy as np
import pytest
import scipy.special as sps

import lossmle as lm
from lossmle import _config

from conftest import SIMD_PATHS as PATHS


def np_cross_entropy_rows(x, y):
    logp = sps.log_softmax(x.astype(np.float64), axis=-1)
    return -np.take_along_axis(logp, y[:, None], axis=-1)[:, 0]


SHAPES = [(64, 3000), (5000, 4), (300, 2), (33, 17), (2, 5000)]
IDS = [f"{r}x{c}" for r, c in SHAPES]


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_every_path_matches_oracles(simd_path, shape, dtype, n_threads):
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 4).astype(dtype)
    x[0, : shape[1] // 2] = -np.inf          # a partly masked row takes the fast path too
    y = rng.integers(0, shape[1], shape[0])
    x64 = x.astype(np.float64)
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    kw = {"n_threads": n_threads}
    np.testing.assert_allclose(lm.logsumexp(x, axis=-1, **kw),
                               sps.logsumexp(x64, axis=-1), rtol=rtol)
    np.testing.assert_allclose(lm.softmax(x, axis=-1, **kw), sps.softmax(x64, axis=-1),
                               rtol=rtol * 8, atol=1e-300)
    np.testing.assert_allclose(lm.log_softmax(x, axis=-1, **kw),
                               sps.log_softmax(x64, axis=-1), rtol=rtol, atol=rtol)
    rows = np_cross_entropy_rows(x, y)
    np.testing.assert_allclose(lm.cross_entropy(x, y, reduction="none", **kw), rows,
                               rtol=rtol, atol=rtol)
    loss, grad = lm.cross_entropy_with_grad(x, y, reduction="sum", **kw)
    onehot = np.zeros_like(x64)
    onehot[np.arange(shape[0]), y] = 1
    # softmax - onehot in the output dtype: entries near 0 carry its eps absolutely
    np.testing.assert_allclose(grad, sps.softmax(x64, axis=-1) - onehot, rtol=rtol * 8,
                               atol=np.finfo(dtype).eps)
    p = rng.random(shape).astype(dtype)
    q = rng.random(shape).astype(dtype)
    p[1, ::3] = 0                              # 0 * log(0 / q) = 0 stays on the fast path
    np.testing.assert_allclose(lm.kl_divergence(p, q, **kw),
                               sps.rel_entr(p.astype(np.float64), q.astype(np.float64)).sum(-1),
                               rtol=rtol * 10)


def test_paths_agree_with_each_other():
    """The same call on every available path: equal to a few ulps."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 1000)) * 10
    results = {}
    try:
        for path in PATHS:
            os.environ["LOSSMLE_SIMD"] = path
            if _config.reselect_simd() == path:
                results[path] = (lm.logsumexp(x, axis=-1), lm.softmax(x, axis=-1))
    finally:
        os.environ.pop("LOSSMLE_SIMD", None)
        _config.reselect_simd()
    assert "baseline" in results
    ref_lse, ref_sm = results["baseline"]
    for lse, sm in results.values():
        np.testing.assert_allclose(lse, ref_lse, rtol=4e-16 * 4)
        np.testing.assert_allclose(sm, ref_sm, rtol=1e-14)


def test_show_config_names_the_path(capsys):
    lm.show_config()
    out = capsys.readouterr().out
    assert _config.simd_path() in PATHS
    assert re.search(rf"^\s*simd: {_config.simd_path()}$", out, flags=re.M), out


def test_threadpoolctl_sees_and_limits_the_pool():
    """The kernels' OpenMP pool is the one threadpoolctl reports and limits."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    apis = {info["user_api"] for info in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
    before = lm.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert lm.get_num_threads() == 1
    assert lm.get_num_threads() == before


def test_set_num_threads_is_process_wide_and_validated():
    before = lm.get_num_threads()
    try:
        lm.set_num_threads(1)
        assert lm.get_num_threads() == 1
        x = np.random.default_rng(3).normal(size=(600, 500))   # above the threading threshold
        np.testing.assert_array_equal(lm.logsumexp(x, axis=-1),
                                      lm.logsumexp(x, axis=-1, n_threads=2))
        with pytest.raises(ValueError, match="n_threads"):
            lm.set_num_threads(0)
        with pytest.raises(TypeError, match="n_threads"):
            lm.set_num_threads(1.5)
    finally:
        lm.set_num_threads(None)
    assert lm.get_num_threads() == before
