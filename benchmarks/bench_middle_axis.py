"""Benchmark: reductions over a middle axis (torch's (N, C, H, W) layout, axis 1).

A segmentation-shaped float64 input, (16, 21, 128, 128): 21 classes per pixel
(PASCAL VOC), reduced over axis 1 - lossmle against SciPy's functions (which
take ``axis=1``), hand-written stable NumPy over axis 1 and torch (``dim=1``,
where installed).  As in conftest.py: every implementation's result is first
checked against SciPy's, one benchmark group per function.  Not part of the
``case`` grid (that one is (rows, classes) over the last axis).
"""
import numpy as np
import pytest

import lossmle
from lossmle._cli import bench as _bench

SHAPE = (16, 21, 128, 128)
FUNCTIONS = ["logsumexp", "softmax", "log_softmax", "cross_entropy", "kl_divergence"]
IMPLS = ["lossmle", "scipy", "numpy", "torch"]
THREADS = lossmle.get_num_threads()


def _inputs(function):
    rng = np.random.default_rng(_bench.SEED)
    if function == "kl_divergence":
        p, q = rng.random(SHAPE) + 1e-3, rng.random(SHAPE) + 1e-3
        return p / p.sum(axis=1, keepdims=True), q / q.sum(axis=1, keepdims=True)
    x = rng.standard_normal(SHAPE)
    if function == "cross_entropy":
        return x, rng.integers(0, SHAPE[1], size=(SHAPE[0],) + SHAPE[2:])
    return (x,)


def _np_log_softmax(x):
    z = x - x.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def _build(function, impl, inputs):
    if impl == "lossmle":
        fn = getattr(lossmle, function)
        return lambda: fn(*inputs, axis=1, n_threads=THREADS)
    if impl == "scipy":
        import scipy.special as sps
        if function == "cross_entropy":
            x, y = inputs
            return lambda: -np.take_along_axis(sps.log_softmax(x, axis=1),
                                               y[:, None], axis=1).mean()
        if function == "kl_divergence":
            return lambda: sps.rel_entr(*inputs).sum(axis=1)
        fn = getattr(sps, function)
        return lambda: fn(inputs[0], axis=1)
    if impl == "numpy":
        if function == "logsumexp":
            def run():
                x = inputs[0]
                m = x.max(axis=1, keepdims=True)
                return (np.log(np.exp(x - m).sum(axis=1, keepdims=True)) + m)[:, 0]
            return run
        if function == "softmax":
            def run():
                e = np.exp(inputs[0] - inputs[0].max(axis=1, keepdims=True))
                e /= e.sum(axis=1, keepdims=True)
                return e
            return run
        if function == "log_softmax":
            return lambda: _np_log_softmax(inputs[0])
        if function == "cross_entropy":
            x, y = inputs
            return lambda: -np.take_along_axis(_np_log_softmax(x), y[:, None], axis=1).mean()
        p, q = inputs
        return lambda: np.where(p > 0, p * np.log(p / q), 0.0).sum(axis=1)
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    t = [torch.from_numpy(a) for a in inputs]
    if function == "cross_entropy":
        return lambda: torch.nn.functional.cross_entropy(t[0], t[1]).numpy()
    if function == "kl_divergence":
        return lambda: torch.special.xlogy(t[0], t[0] / t[1]).sum(dim=1).numpy()
    fn = getattr(torch, function)
    return lambda: fn(t[0], dim=1).numpy()


_cache = {}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("function", FUNCTIONS)
def bench_middle_axis(benchmark, function, impl):
    if _cache.get("function") != function:   # one function's inputs at a time
        _cache.clear()
        inputs = _inputs(function)
        _cache.update(function=function, inputs=inputs,
                      reference=_build(function, "scipy", inputs)())
    inputs, reference = _cache["inputs"], _cache["reference"]
    fn = _build(function, impl, inputs)
    _bench.check_agreement(fn(), reference, "float64")   # a wrong answer fails here
    benchmark.group = f"{function} {_bench.shape_str(SHAPE)} axis 1 float64"
    benchmark.extra_info.update(implementation=impl, threads=THREADS)
    benchmark(fn)
