"""Leaks: tracemalloc and RSS stay flat over repeated calls of every public
function (and of the error paths).  A modest count here; the 1e5-call run is
``python tools/leak_check.py`` (same call list)."""
import gc
import importlib.util
import pathlib

import numpy as np
import pytest

import lossmle as lm

_path = pathlib.Path(__file__).resolve().parent.parent / "tools" / "leak_check.py"
if not _path.exists():   # tests copied out of the source tree
    pytest.skip(f"needs the checkout's {_path.parent.name}/leak_check.py",
                allow_module_level=True)
_spec = importlib.util.spec_from_file_location("leak_check", _path)
leak_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(leak_check)

N_CALLS = 400
# the growth counted is the smallest of ROUNDS back-to-back runs of N_CALLS calls: a one-off
# allocation (once measured at 4867 B under load) falls in one round, a leak grows in each
ROUNDS = 3


@pytest.fixture(scope="module")
def inputs():
    return leak_check._inputs()


@pytest.mark.parametrize("name", list(leak_check.CALLS))
def test_flat_over_repeated_calls(inputs, name):
    rss, traced = leak_check.measure(name, N_CALLS, inputs, ROUNDS)
    # one leaked small object per call would be >= 400 * 32 B = 12.8 KB traced
    assert traced <= leak_check.TRACED_SLACK, f"{name}: tracemalloc grew {traced} B"
    assert rss <= leak_check.RSS_SLACK, f"{name}: RSS grew {rss} B"


def test_detector_sees_a_leak(inputs):
    # the measurement can fail: a call that keeps one small array per call is caught
    kept = []
    leak_check.CALLS["_leaky"] = lambda d: kept.append(lm.logsumexp(d["x"], axis=1))
    try:
        _, traced = leak_check.measure("_leaky", N_CALLS, inputs, ROUNDS)
    finally:
        del leak_check.CALLS["_leaky"]
    assert traced > leak_check.TRACED_SLACK


def test_detector_ignores_a_one_off(inputs):
    # 8 KB kept once, mid-measurement (a cache filled late, say), is not a leak
    kept, count = [], [0]

    def once(d):
        count[0] += 1
        if count[0] == 200 + 100 + N_CALLS // 2:  # warm-up, settle, half a round
            kept.append(np.ones(1024))
        return lm.logsumexp(d["x"], axis=1)
    leak_check.CALLS["_once"] = once
    try:
        _, traced = leak_check.measure("_once", N_CALLS, inputs, ROUNDS)
    finally:
        del leak_check.CALLS["_once"]
    assert len(kept) == 1 and traced <= leak_check.TRACED_SLACK


@pytest.mark.parametrize("fn", ["softmax", "cross_entropy_with_grad", "kl_divergence"])
def test_rss_flat_with_large_buffers(fn):
    # 4 MB inputs/outputs: any retained buffer (Python- or C-allocated) shows in RSS at once
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1000, 500))
    t = rng.integers(0, 500, size=1000)
    p = np.abs(x) / np.abs(x).sum(1, keepdims=True)
    call = {"softmax": lambda: lm.softmax(x, axis=1),
            "cross_entropy_with_grad": lambda: lm.cross_entropy_with_grad(x, t),
            "kl_divergence": lambda: lm.kl_divergence(p, p[::-1])}[fn]
    for _ in range(5):
        call()
    gc.collect()
    before = leak_check.rss_bytes()
    for _ in range(100):
        call()
    gc.collect()
    grown = leak_check.rss_bytes() - before
    assert grown < 8 * x.nbytes, f"{fn}: RSS grew {grown / 2**20:.1f} MiB over 100 calls"
