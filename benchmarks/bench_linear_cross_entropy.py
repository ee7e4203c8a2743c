"""Benchmark: linear_cross_entropy against the naive matmul + cross_entropy.

The case of the issue: N=4096 rows, d=1024 features, V=50257 classes (GPT-2's
vocabulary), float32.  Implementations, forward ("loss") and forward plus the
gradients w.r.t. hidden, weight and bias ("grad"):

* ``lossmle``: ``lossmle.linear_cross_entropy(_with_grad)``, blocked over the
  vocabulary (default chunk_size), never an N x V array;
* ``naive``: ``logits = hidden @ weight.T + bias`` then
  ``lossmle.cross_entropy(_with_grad)`` and, for "grad", ``G @ W``, ``G.T @ h``;
* ``torch``: ``F.cross_entropy(F.linear(h, W, b), y)`` (+ ``backward()``),
  where torch is installed.

Each implementation's loss is checked against the naive one before timing.
The peak memory of one call (tracemalloc: NumPy reports its buffers to it;
torch's CPU allocator does not, so torch gets no figure) lands in
``extra_info["peak_MiB"]``; inputs are built once, outside the timed call.

    pytest benchmarks/bench_linear_cross_entropy.py          # the table
    python benchmarks/bench_linear_cross_entropy.py          # medians, peaks, ratios
                                                              # (interleaved rounds)

``LOSSMLE_BENCH_LCE_SHAPE=NxdxV`` (e.g. ``1024x256x8000``) shrinks the case;
for the script, ``LOSSMLE_BENCH_LCE_IMPLS=lossmle,naive`` and
``LOSSMLE_BENCH_LCE_ROUNDS=3`` shorten it ("naive" is always needed).
"""
import os
import sys
import time
import tracemalloc

import numpy as np
import pytest

try:
    import lossmle
except ImportError:  # run from a source tree built in place
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import lossmle


def _shape():
    text = os.environ.get("LOSSMLE_BENCH_LCE_SHAPE", "").strip() or "4096x1024x50257"
    n, d, v = (int(s) for s in text.lower().split("x"))
    return n, d, v


SHAPE = _shape()
DTYPE = np.float32


def make_inputs(shape=SHAPE, dtype=DTYPE, seed=0):
    n, d, v = shape
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, d), dtype=np.float32).astype(dtype)
    weight = (rng.standard_normal((v, d), dtype=np.float32) / np.sqrt(d)).astype(dtype)
    bias = (0.1 * rng.standard_normal(v, dtype=np.float32)).astype(dtype)
    target = rng.integers(0, v, size=n)
    return hidden, weight, bias, target


# --- implementations: (mode) -> callable(hidden, weight, bias, target) -> loss ---
def lossmle_loss(h, w, b, y):
    return lossmle.linear_cross_entropy(h, w, y, bias=b)


def lossmle_grad(h, w, b, y):
    return lossmle.linear_cross_entropy_with_grad(h, w, y, bias=b)[0]


def naive_loss(h, w, b, y):
    logits = h @ w.T
    logits += b
    return lossmle.cross_entropy(logits, y)


def naive_grad(h, w, b, y):
    logits = h @ w.T
    logits += b
    loss, g = lossmle.cross_entropy_with_grad(logits, y)
    del logits
    grad_h, grad_w, grad_b = g @ w, g.T @ h, g.sum(axis=0)
    return loss


def _torch_impl(mode):
    torch = pytest.importorskip("torch") if "pytest" in sys.modules else __import__("torch")
    F = torch.nn.functional

    def run(h, w, b, y):
        ht = torch.from_numpy(h).requires_grad_(mode == "grad")
        wt = torch.from_numpy(w).requires_grad_(mode == "grad")
        bt = torch.from_numpy(b).requires_grad_(mode == "grad")
        if mode == "grad":
            loss = F.cross_entropy(F.linear(ht, wt, bt), torch.from_numpy(y))
            loss.backward()
            return loss.item()
        with torch.no_grad():
            return F.cross_entropy(F.linear(ht, wt, bt), torch.from_numpy(y)).item()
    return run


IMPLS = {
    ("lossmle", "loss"): lambda: lossmle_loss,
    ("lossmle", "grad"): lambda: lossmle_grad,
    ("naive", "loss"): lambda: naive_loss,
    ("naive", "grad"): lambda: naive_grad,
    ("torch", "loss"): lambda: _torch_impl("loss"),
    ("torch", "grad"): lambda: _torch_impl("grad"),
}


def peak_mib(fn, *args):
    """Peak traced memory of one call, in MiB (inputs excluded)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn(*args)
        return (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def inputs():
    return make_inputs()


@pytest.fixture(scope="module")
def reference(inputs):
    return float(naive_loss(*inputs))


@pytest.mark.parametrize("mode", ["loss", "grad"])
@pytest.mark.parametrize("impl", ["lossmle", "naive", "torch"])
def bench_linear_cross_entropy(benchmark, inputs, reference, impl, mode):
    fn = IMPLS[(impl, mode)]()
    got = float(fn(*inputs))
    np.testing.assert_allclose(got, reference, rtol=1e-4)
    benchmark.group = f"linear_cross_entropy-{mode}-{'x'.join(map(str, SHAPE))}-float32"
    benchmark.extra_info["shape"] = "x".join(map(str, SHAPE))
    if impl != "torch":
        benchmark.extra_info["peak_MiB"] = round(peak_mib(fn, *inputs), 1)
    benchmark.pedantic(fn, args=inputs, rounds=3, iterations=1, warmup_rounds=0)


MAIN_IMPLS = [s for s in os.environ.get("LOSSMLE_BENCH_LCE_IMPLS", "lossmle,naive,torch")
              .split(",") if s]


def main(rounds=int(os.environ.get("LOSSMLE_BENCH_LCE_ROUNDS", "5"))):
    """Median time and peak memory per implementation, with ratios to naive.

    The rounds interleave the implementations (A B C A B C ...), so a change
    in machine load during the run hits all of them alike.
    """
    inputs = make_inputs()
    reference = float(naive_loss(*inputs))
    print(f"linear cross-entropy, N x d x V = {' x '.join(map(str, SHAPE))}, float32, "
          f"lossmle threads {lossmle.get_num_threads()}, {rounds} interleaved rounds")
    for mode in ("loss", "grad"):
        fns = {}
        for impl in MAIN_IMPLS:
            try:
                fns[impl] = IMPLS[(impl, mode)]()
            except ImportError:
                continue
            assert np.isclose(float(fns[impl](*inputs)), reference, rtol=1e-4)  # + warm-up
        times = {impl: [] for impl in fns}
        for _ in range(rounds):
            for impl, fn in fns.items():
                t0 = time.perf_counter()
                fn(*inputs)
                times[impl].append(time.perf_counter() - t0)
        rows = {impl: (float(np.median(times[impl])),
                       peak_mib(fn, *inputs) if impl != "torch" else float("nan"))
                for impl, fn in fns.items()}
        base_t, base_m = rows["naive"]
        for impl, (t, m) in rows.items():
            print(f"  {mode:4} {impl:8} median {t:7.3f} s  ({t / base_t:5.2f} x naive)   "
                  f"peak {m:8.1f} MiB  ({m / base_m:6.3f} x naive)", flush=True)


if __name__ == "__main__":
    main()
