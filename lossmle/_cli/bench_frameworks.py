"""Benchmark of the framework adapters: one training step of the loss.

One forward + backward of the loss (``cross_entropy`` on given logits; a
linear head + loss for ``linear_cross_entropy``), with:

* ``lossmle.torch`` against torch's own (``F.cross_entropy``;
  ``F.cross_entropy(F.linear(...))`` and torch's ``F.linear_cross_entropy``
  where it exists) on CPU tensors;
* ``lossmle.jax`` against ``jax.jit`` of the same loss written with
  ``jax.nn`` (``jax.jit(jax.value_and_grad(loss))`` for both).

Each (case, implementation) runs in a fresh subprocess: inputs built, one
warm-up step (jit compilation, allocator caches), then the peak memory of one
step (``VmHWM`` of ``/proc/self/status`` after resetting it through
``/proc/self/clear_refs``, minus the resident size just before the step:
what the step allocates on top of its inputs, the gradients it leaves
included, whichever allocator; glibc's
mmap threshold is pinned at 128 KiB so freed buffers leave the resident set),
then the median time of ``rounds`` steps.  Linux only for the memory figure
(``?`` elsewhere).  Ratios are taken within one run.

    python -m lossmle._cli.bench_frameworks [--frameworks torch,jax] [--quick]
        [--rounds N] [--threads N]

The command ``lossmle bench`` can call :func:`main` (same options) when
torch or jax is installed; frameworks that are not installed are skipped.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

#: (name, kind, shape): kind "ce" takes logits (N, C); "lce" hidden (N, d) and
#: a (V, d) head
CASES = [
    ("ce 4096x1000", "ce", (4096, 1000)),
    ("ce 256x50257", "ce", (256, 50257)),
    ("linear+ce 1024x256x16000", "lce", (1024, 256, 16000)),
]
QUICK_CASES = [
    ("ce 1024x1000", "ce", (1024, 1000)),
    ("linear+ce 256x128x4000", "lce", (256, 128, 4000)),
]

IMPLS = {
    "torch": {"ce": ["lossmle.torch", "torch"],
              "lce": ["lossmle.torch", "torch", "torch linear_cross_entropy"]},
    "jax": {"ce": ["lossmle.jax", "jax.jit"], "lce": ["lossmle.jax", "jax.jit"]},
}


def _inputs(kind: str, shape: tuple[int, ...], dtype: str, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    normal: Any = rng.standard_normal
    if kind == "ce":
        n, c = shape
        return {"x": normal((n, c), dtype=dtype),
                "t": rng.integers(0, c, n)}
    n, d, v = shape
    return {"h": normal((n, d), dtype=dtype),
            "w": (normal((v, d), dtype=dtype) / np.sqrt(d)).astype(dtype),
            "b": normal(v, dtype=dtype),
            "t": rng.integers(0, v, n)}


def _torch_step(impl: str, kind: str, arrays: dict[str, Any]) -> Callable[[], float]:
    import torch
    import torch.nn.functional as F

    import lossmle.torch as lt
    t = torch.from_numpy(arrays["t"])
    if kind == "ce":
        x = torch.from_numpy(arrays["x"]).requires_grad_(True)
        fn = lt.cross_entropy if impl == "lossmle.torch" else F.cross_entropy

        def ce_step() -> float:
            x.grad = None
            loss = fn(x, t)
            loss.backward()
            return float(loss.detach())
        ce_step.clear = lambda: setattr(x, "grad", None)  # type: ignore[attr-defined]
        return ce_step
    h = torch.from_numpy(arrays["h"]).requires_grad_(True)
    w = torch.from_numpy(arrays["w"]).requires_grad_(True)
    b = torch.from_numpy(arrays["b"]).requires_grad_(True)
    if impl == "lossmle.torch":
        def loss_fn() -> Any:
            return lt.linear_cross_entropy(h, w, t, linear_bias=b)
    elif impl == "torch":
        def loss_fn() -> Any:
            return F.cross_entropy(F.linear(h, w, b), t)
    else:
        if not hasattr(F, "linear_cross_entropy"):
            raise RuntimeError("this torch has no F.linear_cross_entropy")

        def loss_fn() -> Any:
            return F.linear_cross_entropy(h, w, t, linear_bias=b)

    def clear() -> None:
        h.grad = w.grad = b.grad = None

    def step() -> float:
        clear()
        loss = loss_fn()
        loss.backward()
        return float(loss.detach())
    step.clear = clear  # type: ignore[attr-defined]
    return step


def _jax_step(impl: str, kind: str, arrays: dict[str, Any]) -> Callable[[], float]:
    import jax
    if (arrays["x"] if kind == "ce" else arrays["h"]).dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import lossmle.jax as lj

    def ref_ce(z: Any, t: Any) -> Any:
        lsm = jax.nn.log_softmax(z)
        return -jnp.mean(jnp.take_along_axis(lsm, t[:, None], 1))
    t = jnp.asarray(arrays["t"])
    if kind == "ce":
        x = jnp.asarray(arrays["x"])
        fn = lj.cross_entropy if impl == "lossmle.jax" else ref_ce
        vg = jax.jit(jax.value_and_grad(fn))

        def ce_step() -> float:
            loss, g = vg(x, t)
            g.block_until_ready()
            return float(loss)
        return ce_step
    h, w, b = (jnp.asarray(arrays[k]) for k in "hwb")
    if impl == "lossmle.jax":
        def loss_fn(h: Any, w: Any, b: Any) -> Any:
            return lj.linear_cross_entropy(h, w, t, bias=b)
    else:
        def loss_fn(h: Any, w: Any, b: Any) -> Any:
            return ref_ce(h @ w.T + b, t)
    vg = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))

    def step() -> float:
        loss, grads = vg(h, w, b)
        jax.block_until_ready(grads)
        return float(loss)
    return step


def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_one(framework: str, impl: str, kind: str, shape: tuple[int, ...], dtype: str,
                rounds: int, threads: int) -> dict[str, Any]:
    """Time and peak memory of one step, in this process (call it in a fresh one)."""
    import lossmle
    lossmle.set_num_threads(threads)
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
    arrays = _inputs(kind, shape, dtype)
    make = _torch_step if framework == "torch" else _jax_step
    step = make(impl, kind, arrays)
    loss = step()                      # warm-up: compilation, allocator caches
    getattr(step, "clear", lambda: None)()  # the warm-up's gradients, freed
    import gc
    gc.collect()
    rss0 = _status_kib("VmRSS")
    peak_mib = None
    if rss0 is not None and _reset_peak():
        step()
        hwm = _status_kib("VmHWM")
        if hwm is not None:
            peak_mib = max(hwm - rss0, 0) / 1024
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"framework": framework, "impl": impl, "kind": kind, "shape": list(shape),
            "dtype": dtype, "loss": loss, "median_s": float(np.median(times)),
            "min_s": float(np.min(times)), "peak_mib": peak_mib}


def _run_subprocess(args: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    code = ("import json, sys; from lossmle._cli.bench_frameworks import measure_one; "
            "print(json.dumps(measure_one(**json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {**args, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available(framework: str) -> bool:
    return importlib.util.find_spec(framework) is not None


def run(frameworks: tuple[str, ...] = ("torch", "jax"), quick: bool = False,
        rounds: int = 5, threads: Optional[int] = None, dtype: str = "float32",
        verbose: bool = True) -> list[dict[str, Any]]:
    """Every (case, implementation) of the installed frameworks; rows as dicts."""
    import lossmle
    threads = threads or lossmle.get_num_threads()
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(lossmle.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", str(threads))
    # a fixed mmap threshold (glibc): large buffers are mapped and unmapped, so
    # one freed in the warm-up step is not still resident, uncounted, when the
    # measured step reuses it; the same for every implementation
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    env.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true "
                                f"intra_op_parallelism_threads={threads}")
    rows = []
    for fw in frameworks:
        if not available(fw):
            if verbose:
                print(f"{fw}: not installed, skipped")
            continue
        for name, kind, shape in (QUICK_CASES if quick else CASES):
            for impl in IMPLS[fw][kind]:
                row = _run_subprocess(dict(framework=fw, impl=impl, kind=kind,
                                           shape=list(shape), dtype=dtype, rounds=rounds,
                                           threads=threads), env)
                row["case"] = name
                rows.append(row)
                if verbose:
                    print(_format_row(row, rows), flush=True)
    return rows


def _format_row(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    head = f"{row['framework']:<6} {row['case']:<26} {row['impl']:<27}"
    if "error" in row:
        return head + " error: " + " ".join(row["error"])
    base = next((r for r in rows if r["case"] == row["case"] and r["framework"] ==
                 row["framework"] and r["impl"].startswith("lossmle") and "error" not in r),
                None)
    ratio = f"{row['median_s'] / base['median_s']:6.2f}x" if base else "      "
    peak = f"{row['peak_mib']:9.1f} MiB" if row.get("peak_mib") is not None else "        ?"
    return f"{head} {row['median_s'] * 1e3:10.2f} ms {ratio} {peak}"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="lossmle bench-frameworks",
        description="one forward + backward step of the loss: lossmle's adapters "
                    "against torch's and jax.jit's own (time ratio to lossmle, extra "
                    "peak memory of the step)")
    p.add_argument("--frameworks", default="torch,jax",
                   help="comma-separated: torch, jax (default both, where installed)")
    p.add_argument("--quick", action="store_true", help="small shapes only")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--json", help="also write the rows to this file")
    a = p.parse_args(argv)
    frameworks = tuple(f.strip() for f in a.frameworks.split(",") if f.strip())
    bad = [f for f in frameworks if f not in IMPLS]
    if bad:
        p.error(f"unknown framework(s) {bad}; choose from torch, jax")
    if a.rounds < 1:
        p.error("--rounds must be positive")
    print(f"{'fw':<6} {'case':<26} {'implementation':<27} {'median':>13} "
          f"{'/lossmle':>7} {'peak extra':>13}")
    rows = run(frameworks, a.quick, a.rounds, a.threads, a.dtype)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
