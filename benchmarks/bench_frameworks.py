"""Benchmark: one forward + backward step of the loss inside torch / JAX.

lossmle's adapters (``lossmle.torch``, ``lossmle.jax``) against the
frameworks' own losses: ``F.cross_entropy`` (and ``F.linear`` +
``F.cross_entropy``, torch's ``F.linear_cross_entropy``) on CPU tensors, and
``jax.jit(jax.value_and_grad(...))`` of the loss written with ``jax.nn``.
The step bodies are those of ``lossmle._cli.bench_frameworks`` (shared with
``python -m lossmle._cli.bench_frameworks``, which adds the peak memory of a
step, measured in a subprocess per case); each implementation's loss is
checked against the framework's own before timing.

    pytest benchmarks/bench_frameworks.py
    python -m lossmle._cli.bench_frameworks            # ratios and peak memory

``LOSSMLE_BENCH_FW_QUICK=1`` uses the small shapes.
"""
import os
import sys

import numpy as np
import pytest

try:
    import lossmle
except ImportError:  # run from a source tree built in place
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import lossmle
from lossmle._cli import bench_frameworks as fw  # noqa: E402

CASES = fw.QUICK_CASES if os.environ.get("LOSSMLE_BENCH_FW_QUICK") else fw.CASES
PARAMS = [pytest.param((framework, name, kind, shape, impl),
                       id=f"{name.replace(' ', '-')}-{impl.replace(' ', '-')}")
          for framework in ("torch", "jax") for name, kind, shape in CASES
          for impl in fw.IMPLS[framework][kind]]

_steps = {}


def _step(framework, kind, shape, impl):
    key = (framework, kind, shape, impl)
    if key not in _steps:
        arrays = fw._inputs(kind, shape, "float32")
        make = fw._torch_step if framework == "torch" else fw._jax_step
        _steps.clear()
        _steps[key] = make(impl, kind, arrays)
    return _steps[key]


@pytest.mark.parametrize("fw_case", PARAMS)
def bench_step(fw_case, benchmark):
    framework, name, kind, shape, impl = fw_case
    pytest.importorskip(framework)
    lossmle.set_num_threads(lossmle.get_num_threads())
    if framework == "torch":
        import torch
        torch.set_num_threads(lossmle.get_num_threads())
    step = _step(framework, kind, shape, impl)
    own = fw.IMPLS[framework][kind][1]
    reference = fw._torch_step if framework == "torch" else fw._jax_step
    expected = reference(own, kind, fw._inputs(kind, shape, "float32"))()
    np.testing.assert_allclose(step(), expected, rtol=1e-4)
    benchmark.group = f"{framework} {name} (forward + backward)"
    benchmark(step)
