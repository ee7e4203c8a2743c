"""``lossmle bench``: time lossmle against SciPy, NumPy, torch, scikit-learn, jax and numba.

Design
------
* ``FUNCTIONS`` names the benchmarked operations; ``make_inputs`` builds their
  inputs (fixed seed, outside any timed call); ``build`` returns, for one
  (function, implementation), a zero-argument callable over prepared inputs
  (torch tensors are made here too, so conversion is never timed).
* Every implementation's first result is checked against a reference (SciPy's
  result, NumPy's when SciPy is absent) with dtype-appropriate tolerances
  before it is timed: a fast wrong answer is reported, never timed.
* Timing is interleaved: each round calls every implementation once (the order
  rotates from round to round), so a noisy machine shifts all of them alike;
  the table shows medians.  Calls shorter than ``--sample-ms`` are repeated
  inside one sample and the sample divided by the repeat count.
* The same building blocks drive the pytest-benchmark suite in benchmarks/.
* Each case also times its *floor*, in the same rounds: what the machine's
  memory allows for the case's bytes (`floor_kind`): a parallel read of the
  inputs at full vector width for the reductions, a parallel copy into a
  preallocated output for ``out=`` cases, into a fresh array otherwise; and
  what its arithmetic allows (`build_compute_floor`): lossmle's own exp, or
  its KL / entropy terms, over as many values from L1.  The larger is the
  binding floor; ``floor / lossmle`` (1.0 = at the limit) says how far
  lossmle is from it on this machine, whatever its bandwidth.

The implementations are written to be the best version of each competitor a
careful user would write: SciPy's public functions as documented; NumPy with
the max-shift and in-place operations (one full-size temporary where the
result needs it); torch's functional API on tensors sharing the NumPy buffers,
with ``torch.set_num_threads`` matching ``--threads``; ``jax.jit`` of jax.nn /
jax.scipy (XLA fuses the steps), and a fused parallel numba kernel per function
(one pass per row statistic, ``prange`` over rows, ``fastmath``), the code a
performance-minded user writes by hand.  jax and numba are optional: used
where installed, never required.
"""
import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._validation import MAX_THREADS

FUNCTIONS = (
    "logsumexp", "softmax", "log_softmax", "softmax_out", "log_softmax_out", "cross_entropy",
    "cross_entropy_prob", "cross_entropy_with_grad", "kl_divergence", "entropy",
)
FUNCTION_HELP = {
    "logsumexp": "logsumexp over the last axis",
    "softmax": "softmax over the last axis",
    "log_softmax": "log_softmax over the last axis",
    "softmax_out": "softmax over the last axis into a preallocated out=",
    "log_softmax_out": "log_softmax over the last axis into a preallocated out=",
    "cross_entropy": "mean cross-entropy from logits and class indices",
    "cross_entropy_prob": "mean cross-entropy from logits and probability targets",
    "cross_entropy_with_grad": "mean cross-entropy and its gradient w.r.t. the logits",
    "kl_divergence": "KL(p || q) of each row",
    "entropy": "entropy of each row (scipy.stats.entropy: rows normalised)",
}
IMPLEMENTATIONS = ("lossmle", "scipy", "numpy", "torch", "sklearn", "jax", "numba")
#: the functions whose implementations write into a preallocated ``out``
OUT_FUNCTIONS = {"softmax_out": "softmax", "log_softmax_out": "log_softmax"}
#: rows x classes; the reduction is over the last axis
SHAPES = ((8, 10), (1024, 1000), (4096, 4096), (256, 50257), (1_000_000, 4))
DTYPES = ("float64", "float32")

QUICK_SHAPES = ((1024, 1000), (256, 50257))
QUICK_DTYPES = ("float64",)
QUICK_ROUNDS = 5
#: quick mode: a case whose rounds would take longer gets fewer rounds (at least
#: 3 while the run is on schedule for QUICK_TARGET_S, at least 1 when it is not,
#: e.g. on a machine busy with other work)
QUICK_CASE_BUDGET_S = 2.0
QUICK_TARGET_S = 40.0
FULL_ROUNDS = 11
SEED = 20240607

#: relative tolerance of the agreement check, per dtype (results of different,
#: equally valid algorithms: max-shift, pairwise or double accumulation)
CHECK_RTOL = {"float64": 1e-9, "float32": 2e-4}

BANDWIDTH_MIB = 256


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------
def shape_str(shape):
    return "x".join(str(int(d)) for d in shape)


def _softmax64(z):
    z = z - z.max(-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(-1, keepdims=True)
    return z


def make_inputs(function, shape, dtype, seed=SEED):
    """The inputs of ``function`` for a ``shape`` (rows, classes) and ``dtype``.

    Logits are standard normal; probability rows are softmaxes of standard
    normal rows (strictly positive, summing to one); ``entropy`` gets positive
    unnormalised rows; class targets are uniform int64.
    """
    rows, classes = shape
    rng = np.random.default_rng([seed, rows, classes])
    dtype = np.dtype(dtype)

    def normal():
        return rng.standard_normal(shape, dtype=np.float64)

    if function in ("logsumexp", "softmax", "log_softmax", "softmax_out", "log_softmax_out"):
        return (normal().astype(dtype, copy=False),)
    if function in ("cross_entropy", "cross_entropy_with_grad"):
        return (normal().astype(dtype, copy=False),
                rng.integers(0, classes, size=rows, dtype=np.int64))
    if function == "cross_entropy_prob":
        return (normal().astype(dtype, copy=False),
                _softmax64(normal()).astype(dtype, copy=False))
    if function == "kl_divergence":
        return (_softmax64(normal()).astype(dtype, copy=False),
                _softmax64(normal()).astype(dtype, copy=False))
    if function == "entropy":
        return ((rng.random(shape) + 1e-3).astype(dtype, copy=False),)
    raise ValueError(f"function must be one of {', '.join(FUNCTIONS)}, got {function!r}")


# ---------------------------------------------------------------------------
# Best hand-written NumPy: max shift, in place, one full-size temporary
# ---------------------------------------------------------------------------
def _shifted(x):
    """``(m, t)``: the row maxima (keepdims) and ``t = x - m`` (the one temporary)."""
    m = x.max(-1, keepdims=True)
    return m, np.subtract(x, m)


def np_logsumexp(x):
    m, t = _shifted(x)
    np.exp(t, out=t)
    s = t.sum(-1)
    np.log(s, out=s)
    s += m[:, 0]
    return s


def np_softmax(x):
    _, t = _shifted(x)
    np.exp(t, out=t)
    t /= t.sum(-1, keepdims=True)
    return t


def np_log_softmax(x):
    _, t = _shifted(x)
    s = np.exp(t).sum(-1, keepdims=True)  # t is the result: exp needs a second buffer
    np.log(s, out=s)
    t -= s
    return t


def np_softmax_out(x, out):
    m = x.max(-1, keepdims=True)
    np.subtract(x, m, out=out)
    np.exp(out, out=out)
    out /= out.sum(-1, keepdims=True)
    return out


def np_log_softmax_out(x, out):
    m = x.max(-1, keepdims=True)
    np.subtract(x, m, out=out)
    s = np.exp(out).sum(-1, keepdims=True)  # exp needs a buffer of its own
    np.log(s, out=s)
    out -= s
    return out


def np_cross_entropy(x, y):
    _, t = _shifted(x)
    picked = np.take_along_axis(t, y[:, None], -1)[:, 0]  # a copy, before t is overwritten
    np.exp(t, out=t)
    lse = t.sum(-1)
    np.log(lse, out=lse)
    lse -= picked
    return lse.mean()


def np_cross_entropy_prob(x, p):
    # -sum_j p_j log_softmax(x)_j = lse * sum_j p_j - sum_j p_j t_j  (t = x - max)
    _, t = _shifted(x)
    dot = np.einsum("ij,ij->i", p, t)  # row dot products, no temporary
    psum = p.sum(-1)
    np.exp(t, out=t)
    lse = t.sum(-1)
    np.log(lse, out=lse)
    lse *= psum
    lse -= dot
    return lse.mean()


def np_cross_entropy_with_grad(x, y):
    n = x.shape[0]
    rows = np.arange(n)
    _, t = _shifted(x)
    picked = t[rows, y]
    np.exp(t, out=t)
    s = t.sum(-1)
    loss = (np.log(s) - picked).mean()
    t *= (1.0 / (s * n))[:, None].astype(t.dtype, copy=False)  # softmax / n, in place
    t[rows, y] -= t.dtype.type(1.0 / n)
    return loss, t


def np_kl_divergence(p, q):
    # rel_entr without its 0 * log(0) branch: valid for strictly positive p (as here)
    r = np.divide(p, q)
    np.log(r, out=r)
    return np.einsum("ij,ij->i", p, r)


def np_entropy(p):
    # H(p / s) = log s - sum_j p_j log p_j / s, s = sum_j p_j (scipy.stats.entropy normalises)
    s = p.sum(-1)
    lp = np.log(p)
    h = np.einsum("ij,ij->i", p, lp)
    h /= s
    return np.log(s) - h


# ---------------------------------------------------------------------------
# Implementations
# ---------------------------------------------------------------------------
class Unavailable(Exception):
    """An implementation that cannot run here (not installed, not applicable)."""


def _import(name):
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise Unavailable(f"{name.split('.')[0]} not installed ({exc.__class__.__name__})") \
            from None


def library_versions():
    """Versions of the competitors that are installed, without importing torch twice."""
    import importlib
    versions = {}
    for name, module in (("numpy", "numpy"), ("scipy", "scipy"), ("torch", "torch"),
                         ("sklearn", "sklearn"), ("jax", "jax"), ("numba", "numba")):
        try:
            versions[name] = importlib.import_module(module).__version__
        except ImportError:
            versions[name] = None
    return versions


def _out_buffer(x):
    """A preallocated output like ``x``, its pages already touched (not timed)."""
    out = np.empty_like(x)
    out.fill(0)
    return out


def _build_lossmle(function, inputs, threads):
    import lossmle
    kw = {"n_threads": threads}
    if function in OUT_FUNCTIONS:
        f = getattr(lossmle, OUT_FUNCTIONS[function])
        (x,) = inputs
        out = _out_buffer(x)
        return lambda: f(x, axis=-1, out=out, **kw)
    if function in ("logsumexp", "softmax", "log_softmax"):
        f = getattr(lossmle, function)
        (x,) = inputs
        return lambda: f(x, axis=-1, **kw)
    if function in ("cross_entropy", "cross_entropy_prob"):
        x, t = inputs
        return lambda: lossmle.cross_entropy(x, t, **kw)
    if function == "cross_entropy_with_grad":
        x, y = inputs
        return lambda: lossmle.cross_entropy_with_grad(x, y, **kw)
    if function == "kl_divergence":
        p, q = inputs
        return lambda: lossmle.kl_divergence(p, q, axis=-1, **kw)
    (p,) = inputs
    return lambda: lossmle.entropy(p, axis=-1, **kw)


def _build_scipy(function, inputs, threads):
    if function in OUT_FUNCTIONS:
        raise Unavailable(f"scipy.special.{OUT_FUNCTIONS[function]} has no out=")
    special = _import("scipy.special")
    if function in ("logsumexp", "softmax", "log_softmax"):
        f = getattr(special, function)
        (x,) = inputs
        return lambda: f(x, axis=-1)
    if function == "cross_entropy":
        x, y = inputs
        yy = y[:, None]
        return lambda: -np.take_along_axis(special.log_softmax(x, axis=-1), yy, -1).mean()
    if function == "cross_entropy_prob":
        x, p = inputs
        return lambda: -(p * special.log_softmax(x, axis=-1)).sum(-1).mean()
    if function == "cross_entropy_with_grad":
        x, y = inputs
        n = x.shape[0]
        rows = np.arange(n)

        def run():
            ls = special.log_softmax(x, axis=-1)
            loss = -ls[rows, y].mean()
            g = np.exp(ls, out=ls)
            g[rows, y] -= 1
            g /= n
            return loss, g
        return run
    if function == "kl_divergence":
        p, q = inputs
        return lambda: special.rel_entr(p, q).sum(-1)
    stats = _import("scipy.stats")
    (p,) = inputs
    return lambda: stats.entropy(p, axis=-1)


_NUMPY = {
    "logsumexp": np_logsumexp, "softmax": np_softmax, "log_softmax": np_log_softmax,
    "cross_entropy": np_cross_entropy, "cross_entropy_prob": np_cross_entropy_prob,
    "cross_entropy_with_grad": np_cross_entropy_with_grad,
    "kl_divergence": np_kl_divergence, "entropy": np_entropy,
    "softmax_out": np_softmax_out, "log_softmax_out": np_log_softmax_out,
}


def _build_numpy(function, inputs, threads):
    f = _NUMPY[function]
    if function in OUT_FUNCTIONS:
        out = _out_buffer(inputs[0])
        return lambda: f(*inputs, out)
    return lambda: f(*inputs)


def _build_torch(function, inputs, threads):
    torch = _import("torch")
    F = torch.nn.functional
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    tensors = [torch.from_numpy(a) for a in inputs]  # share memory: no copy, not timed
    if function == "logsumexp":
        (x,) = tensors
        return lambda: torch.logsumexp(x, -1)
    if function == "softmax":
        (x,) = tensors
        return lambda: torch.softmax(x, -1)
    if function == "log_softmax":
        (x,) = tensors
        return lambda: torch.log_softmax(x, -1)
    if function in OUT_FUNCTIONS:
        (x,) = tensors
        f = getattr(torch, OUT_FUNCTIONS[function])
        out = torch.from_numpy(_out_buffer(inputs[0]))
        return lambda: f(x, -1, out=out)
    if function in ("cross_entropy", "cross_entropy_prob"):
        x, t = tensors

        def run():
            with torch.no_grad():
                return F.cross_entropy(x, t)
        return run
    if function == "cross_entropy_with_grad":
        x, y = tensors
        leaf = x.detach().requires_grad_(True)

        def run():
            leaf.grad = None
            loss = F.cross_entropy(leaf, y)
            loss.backward()
            return loss.detach(), leaf.grad
        return run
    if function == "kl_divergence":
        p, q = tensors
        return lambda: F.kl_div(q.log(), p, reduction="none").sum(-1)
    (p,) = tensors

    def run_entropy():
        return torch.special.entr(p / p.sum(-1, keepdim=True)).sum(-1)
    return run_entropy


def _build_sklearn(function, inputs, threads):
    if function != "cross_entropy":
        raise Unavailable("scikit-learn has no counterpart")
    metrics = _import("sklearn.metrics")
    x, y = inputs
    labels = np.arange(x.shape[1])
    # log_loss takes probabilities: the softmax (best NumPy) is part of the timed job
    return lambda: metrics.log_loss(y, np_softmax(x), labels=labels)


def _build_jax(function, inputs, threads):
    if function in OUT_FUNCTIONS:
        raise Unavailable("jax arrays are immutable: no out=")
    jax = _import("jax")
    import jax.numpy as jnp
    import jax.scipy.special as jsp
    if any(a.dtype == np.float64 for a in inputs) and not jax.config.jax_enable_x64:
        # without it jax computes float64 input in float32; this process only
        jax.config.update("jax_enable_x64", True)
    nn = jax.nn
    if function in ("logsumexp", "softmax", "log_softmax"):
        g = {"logsumexp": jsp.logsumexp, "softmax": nn.softmax,
             "log_softmax": nn.log_softmax}[function]

        def f(x):
            return g(x, axis=-1)
    elif function == "cross_entropy":
        def f(x, y):
            ls = nn.log_softmax(x, axis=-1)
            return -jnp.mean(jnp.take_along_axis(ls, y[:, None], -1))
    elif function == "cross_entropy_prob":
        def f(x, p):
            return -jnp.mean(jnp.sum(p * nn.log_softmax(x, axis=-1), -1))
    elif function == "cross_entropy_with_grad":
        def loss(x, y):
            ls = nn.log_softmax(x, axis=-1)
            return -jnp.mean(jnp.take_along_axis(ls, y[:, None], -1))
        f = jax.value_and_grad(loss)
    elif function == "kl_divergence":
        def f(p, q):
            return jnp.sum(jsp.rel_entr(p, q), -1)
    else:
        def f(p):
            return jnp.sum(jsp.entr(p / jnp.sum(p, -1, keepdims=True)), -1)
    jitted = jax.jit(f)
    args = [jax.device_put(a) for a in inputs]  # not timed

    def run():
        return jax.block_until_ready(jitted(*args))
    run()  # compile now, not in the first timed call
    return run


_NUMBA_KERNELS = None


def _numba_kernels():
    """Fused parallel numba kernels, compiled on first use (one per dtype)."""
    global _NUMBA_KERNELS
    if _NUMBA_KERNELS is not None:
        return _NUMBA_KERNELS
    numba = _import("numba")
    jit = numba.njit(parallel=True, fastmath=True, cache=False, nogil=True)
    prange = numba.prange
    inline = numba.njit(fastmath=True, nogil=True, inline="always")

    @inline
    def row_max(x, i):
        m = x[i, 0]
        for j in range(1, x.shape[1]):
            m = max(m, x[i, j])
        return m

    @inline
    def row_lse(x, i):  # logsumexp(x[i])
        m = row_max(x, i)
        s = 0.0
        for j in range(x.shape[1]):
            s += np.exp(x[i, j] - m)
        return m + np.log(s)

    @jit
    def lse(x, out):
        for i in prange(x.shape[0]):
            out[i] = row_lse(x, i)

    @jit
    def softmax(x, out):
        for i in prange(x.shape[0]):
            m = row_max(x, i)
            s = 0.0
            for j in range(x.shape[1]):
                e = np.exp(x[i, j] - m)
                out[i, j] = e
                s += e
            r = 1.0 / s
            for j in range(x.shape[1]):
                out[i, j] *= r

    @jit
    def log_softmax(x, out):
        for i in prange(x.shape[0]):
            c = row_lse(x, i)
            for j in range(x.shape[1]):
                out[i, j] = x[i, j] - c

    @jit
    def ce(x, y, loss):
        for i in prange(x.shape[0]):
            loss[i] = row_lse(x, i) - x[i, y[i]]

    @jit
    def ce_prob(x, p, loss):
        for i in prange(x.shape[0]):
            m = row_max(x, i)
            s = 0.0
            ps = 0.0
            dot = 0.0
            for j in range(x.shape[1]):
                s += np.exp(x[i, j] - m)
                ps += p[i, j]
                dot += p[i, j] * x[i, j]
            loss[i] = (m + np.log(s)) * ps - dot

    @jit
    def ce_grad(x, y, loss, grad):
        n = x.shape[0]
        for i in prange(n):
            c = row_lse(x, i)
            loss[i] = c - x[i, y[i]]
            for j in range(x.shape[1]):
                grad[i, j] = np.exp(x[i, j] - c) / n
            grad[i, y[i]] -= 1.0 / n

    @jit
    def kl(p, q, out):
        for i in prange(p.shape[0]):
            s = 0.0
            for j in range(p.shape[1]):
                if p[i, j] > 0:
                    s += p[i, j] * np.log(p[i, j] / q[i, j])
            out[i] = s

    @jit
    def entropy(p, out):
        for i in prange(p.shape[0]):
            t = 0.0
            h = 0.0
            for j in range(p.shape[1]):
                t += p[i, j]
                if p[i, j] > 0:
                    h += p[i, j] * np.log(p[i, j])
            out[i] = np.log(t) - h / t

    _NUMBA_KERNELS = {"numba": numba, "lse": lse, "softmax": softmax,
                      "log_softmax": log_softmax, "ce": ce, "ce_prob": ce_prob,
                      "ce_grad": ce_grad, "kl": kl, "entropy": entropy}
    return _NUMBA_KERNELS


def _build_numba(function, inputs, threads):
    k = _numba_kernels()
    if threads is not None:
        k["numba"].set_num_threads(min(threads, k["numba"].config.NUMBA_NUM_THREADS))
    x = inputs[0]
    rows = np.empty(x.shape[0], dtype=np.float64)
    if function in ("softmax", "log_softmax"):
        f = k[function]

        def run():
            out = np.empty_like(x)
            f(x, out)
            return out
    elif function in OUT_FUNCTIONS:
        f, out = k[OUT_FUNCTIONS[function]], _out_buffer(x)

        def run():
            f(x, out)
            return out
    elif function == "logsumexp":
        def run():
            out = np.empty(x.shape[0], dtype=x.dtype)
            k["lse"](x, out)
            return out
    elif function in ("cross_entropy", "cross_entropy_prob"):
        f = k["ce" if function == "cross_entropy" else "ce_prob"]

        def run():
            f(x, inputs[1], rows)
            return rows.mean()
    elif function == "cross_entropy_with_grad":
        def run():
            grad = np.empty_like(x)
            k["ce_grad"](x, inputs[1], rows, grad)
            return rows.mean(), grad
    elif function == "kl_divergence":
        def run():
            out = np.empty(x.shape[0], dtype=x.dtype)
            k["kl"](x, inputs[1], out)
            return out
    else:
        def run():
            out = np.empty(x.shape[0], dtype=x.dtype)
            k["entropy"](x, out)
            return out
    run()  # compile now, not in the first timed call
    return run


_BUILDERS = {
    "lossmle": _build_lossmle, "scipy": _build_scipy, "numpy": _build_numpy,
    "torch": _build_torch, "sklearn": _build_sklearn, "jax": _build_jax,
    "numba": _build_numba,
}


def build(function, implementation, inputs, threads=None):
    """A zero-argument callable computing ``function`` with ``implementation``.

    Raises `Unavailable` when the implementation is not installed or has no
    counterpart of ``function``.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"function must be one of {', '.join(FUNCTIONS)}, got {function!r}")
    if implementation not in _BUILDERS:
        raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, "
                         f"got {implementation!r}")
    return _BUILDERS[implementation](function, inputs, threads)


def applicable(function, implementation):
    """Whether ``implementation`` has a counterpart of ``function`` at all."""
    return implementation != "sklearn" or function == "cross_entropy"


# ---------------------------------------------------------------------------
# Agreement check
# ---------------------------------------------------------------------------
def as_numpy_parts(result):
    """A result as a tuple of float64 ndarrays (torch tensors and scalars converted)."""
    parts = result if isinstance(result, tuple) else (result,)
    out = []
    for part in parts:
        if hasattr(part, "detach"):  # torch
            part = part.detach().cpu().numpy()
        out.append(np.asarray(part, dtype=np.float64))
    return tuple(out)


def check_agreement(result, reference, dtype):
    """Raise AssertionError unless ``result`` agrees with ``reference``.

    ``rtol`` is ``CHECK_RTOL[dtype]``; ``atol`` is ``rtol`` times the largest
    reference magnitude, so tiny entries of a softmax are checked relative to
    the row's scale.
    """
    rtol = CHECK_RTOL[np.dtype(dtype).name]
    got, want = as_numpy_parts(result), as_numpy_parts(reference)
    if len(got) != len(want):
        raise AssertionError(f"returns {len(got)} values, the reference {len(want)}")
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise AssertionError(f"shape {g.shape}, the reference has {w.shape}")
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)


def reference_implementation(available):
    """The implementation whose result the others are checked against."""
    for name in ("scipy", "numpy"):
        if name in available:
            return name
    raise ValueError("the agreement check needs scipy or numpy among the implementations")


# ---------------------------------------------------------------------------
# Machine facts
# ---------------------------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def measure_read_bandwidth(threads=1, mib=BANDWIDTH_MIB, repeats=7):
    """This machine's read bandwidth in GB/s: ``np.sum`` of ``mib`` MiB of float64.

    The array is split into ``threads`` chunks summed concurrently (NumPy's
    reductions release the GIL); NumPy's sum is vectorised with several
    accumulators, close to the limit of a hand-written 4-accumulator loop.
    Returns the best of ``repeats`` (the limit, not a typical time).
    """
    n = mib * (1 << 20) // 8
    a = np.ones(n)  # written once: pages are faulted in before timing
    threads = max(1, int(threads))
    chunks = np.array_split(a, threads)
    best = math.inf
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.sum, chunks))
        for _ in range(repeats):
            t0 = time.perf_counter()
            total = sum(pool.map(np.sum, chunks))
            best = min(best, time.perf_counter() - t0)
    if total != n:  # the sum must really have been computed
        raise RuntimeError(f"bandwidth probe summed to {total}, expected {n}")
    return a.nbytes / best / 1e9


# ---------------------------------------------------------------------------
# Floors: what the machine allows for a case's bytes
# ---------------------------------------------------------------------------
#: how each floor is measured (the table's header names them)
FLOOR_KINDS = {
    "read": "a parallel read of the inputs at full vector width",
    "copy": "a parallel copy of the input into a preallocated array",
    "fresh copy": "a parallel copy of the input into a new array (np.empty: its page "
                  "faults included)",
    "exp": "lossmle's vectorised exp of one value per element, from L1 (the compute "
           "floor of the exp-bound functions)",
    "log": "lossmle's own entropy / KL terms (a vectorised log each) of one value per "
           "element, from L1 (the compute floor of KL and entropy)",
}
#: functions needing (at least) one exp per input element
EXP_BOUND = ("logsumexp", "softmax", "log_softmax", "softmax_out", "log_softmax_out",
             "cross_entropy", "cross_entropy_prob", "cross_entropy_with_grad")


def floor_kind(function):
    """Which floor bounds ``function``: "read", "copy" or "fresh copy"."""
    if function in OUT_FUNCTIONS:
        return "copy"
    if function in ("softmax", "log_softmax", "cross_entropy_with_grad"):
        return "fresh copy"  # a full-size result in a new array
    return "read"


def floor_threads(inputs, threads):
    """The floors' thread count: ``threads``, or 1 below the size where lossmle's
    kernels start threads (a thread team costs more than it saves there)."""
    from .._validation import PARALLEL_MIN_ELEMENTS
    return 1 if inputs[0].size < PARALLEL_MIN_ELEMENTS else max(1, int(threads or 1))


def _read_threads(a, threads):
    """Threads reading one array of a read floor: 1 for a small one (the class
    targets), whose second thread team would cost more than the read."""
    from .._validation import PARALLEL_MIN_ELEMENTS
    return 1 if a.size < PARALLEL_MIN_ELEMENTS else threads


def build_compute_floor(function, inputs, threads):
    """``(kind, callable)``: the compute floor of ``function`` ("exp" or "log")."""
    from .._kernels import parallel as _parallel
    x = inputs[0]
    n, single, threads = int(x.size), x.dtype == np.float32, floor_threads(inputs, threads)
    if function in EXP_BOUND:
        return "exp", lambda: _parallel.exp_floor(n, threads, single)
    kl = function == "kl_divergence"
    return "log", lambda: _parallel.log_floor(n, threads, single, kl)


def build_floor(function, inputs, threads):
    """A zero-argument callable doing the floor of ``function`` on ``inputs``.

    The read floor reads every input array (targets too), split into
    ``threads`` contiguous chunks like the kernels' static schedules; the copy
    floors copy the first input (the logits) with as many threads (one below
    lossmle's threading threshold: `floor_threads`).
    """
    from .._kernels import parallel as _parallel
    threads = floor_threads(inputs, threads)
    kind = floor_kind(function)
    if kind == "read":
        reads = []
        for a in inputs:
            flat = np.ascontiguousarray(a).reshape(-1)
            if flat.dtype == np.float32:
                reads.append((_parallel.read_floor_f, flat, _read_threads(flat, threads)))
            elif flat.nbytes % 8 == 0:
                reads.append((_parallel.read_floor, flat.view(np.float64),
                              _read_threads(flat, threads)))
            else:
                raise ValueError(f"no read floor for {flat.dtype} of {flat.size} items")

        def run():
            for read, v, t in reads:
                read(v, t)
        return run
    x = np.ascontiguousarray(inputs[0])
    src = x.reshape(-1).view(np.uint8)
    if kind == "copy":
        dst = _out_buffer(src)

        def run():
            _parallel.copy_floor(src, dst, threads)
            return dst
        return run

    def run_fresh():
        out = np.empty_like(x)
        _parallel.copy_floor(src, out.reshape(-1).view(np.uint8), threads)
        return out
    return run_fresh


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def time_interleaved(callables, rounds, sample_seconds=0.005, first_call_s=None,
                     budget_seconds=None, min_rounds=3):
    """Samples (seconds per call) of each callable, interleaved.

    Calls shorter than ``sample_seconds`` are repeated within one sample; the
    repeat count comes from ``first_call_s[name]`` (the duration of a call
    already made, e.g. the agreement check's) or from one calibration call.
    Each round takes one sample of every callable, in an order rotated by one
    each round.  With ``budget_seconds``, the round count is lowered (not
    below ``min_rounds``) so that the rounds should fit the budget.
    Returns ``({name: {"samples": [...], "repeat": k}}, rounds_run)``.
    """
    names = list(callables)
    first_call_s = dict(first_call_s or {})
    repeat = {}
    for name in names:
        dt = first_call_s.get(name)
        if dt is None:
            t0 = time.perf_counter()
            callables[name]()
            dt = time.perf_counter() - t0
        repeat[name] = 1 if dt >= sample_seconds else min(
            100_000, max(1, int(sample_seconds / max(dt, 1e-7))))
        first_call_s[name] = dt
    if budget_seconds is not None and names:
        per_round = sum(max(first_call_s[n], 1e-9) * repeat[n] for n in names)
        rounds = max(min(rounds, min_rounds), min(rounds, int(budget_seconds / per_round)))
    samples = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            for i in range(len(names)):
                name = names[(i + r) % len(names)]
                fn, k = callables[name], repeat[name]
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                samples[name].append((time.perf_counter() - t0) / k)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: {"samples": samples[name], "repeat": repeat[name]} for name in names}, rounds


FLOOR = "(floor)"  # the floors' keys among the timed callables: not implementations
COMPUTE_FLOOR = "(compute floor)"


def run_case(function, shape, dtype, implementations, rounds, threads, seed=SEED,
             sample_seconds=0.005, budget_seconds=None, min_rounds=3, floor=True):
    """Build, check and time one case; returns its JSON-ready result dict.

    With ``floor``, the case's floors are timed in the same rounds: the memory
    floor (`build_floor`) and the compute floor (`build_compute_floor`), both
    under ``floors``; ``floor`` is the larger (the
    binding limit) and ``floor_ratio`` its median over lossmle's (1.0 = at
    the limit).
    """
    inputs = make_inputs(function, shape, dtype, seed)
    input_bytes = int(sum(a.nbytes for a in inputs))
    status, callables = {}, {}
    for impl in implementations:
        if not applicable(function, impl):
            continue
        try:
            callables[impl] = build(function, impl, inputs, threads)
        except Unavailable as exc:
            status[impl] = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001  (e.g. a jit compiling the call fails)
            status[impl] = f"error: {exc.__class__.__name__}: {exc}"
    results, first_call_s = {}, {}
    for impl in list(callables):
        try:
            t0 = time.perf_counter()
            results[impl] = callables[impl]()
            first_call_s[impl] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001  (a competitor failing is reported)
            status[impl] = f"error: {exc.__class__.__name__}: {exc}"
            del callables[impl]
    reference_timed = True
    if not any(name in results for name in ("scipy", "numpy")):
        # e.g. --impls lossmle: the check still needs a reference; NumPy's
        # result serves, computed once and not timed
        results["numpy"] = build(function, "numpy", inputs, threads)()
        reference_timed = False
    ref_name = reference_implementation(results)
    for impl in list(callables):
        if impl == ref_name:
            status[impl] = "ok (reference)"
            continue
        try:
            check_agreement(results[impl], results[ref_name], dtype)
            status[impl] = "ok"
        except AssertionError as exc:
            first = " ".join(str(exc).split())[:300]
            status[impl] = f"mismatch with {ref_name}: {first}"
            del callables[impl]
    del results
    floor_name = compute_kind = None
    if floor and "lossmle" in callables:
        floor_name = floor_kind(function)
        callables[FLOOR] = build_floor(function, inputs, threads)
        compute_kind, callables[COMPUTE_FLOOR] = build_compute_floor(function, inputs,
                                                                     threads)
    timing, rounds_run = time_interleaved(callables, rounds, sample_seconds, first_call_s,
                                          budget_seconds, min_rounds) if callables else ({}, 0)
    floor_timings = {}
    for key, kind in ((FLOOR, floor_name), (COMPUTE_FLOOR, compute_kind)):
        if key in timing:
            floor_timings[kind] = timing.pop(key)
    times = {}
    for impl, t in timing.items():
        times[impl] = {
            "median_s": statistics.median(t["samples"]),
            "min_s": min(t["samples"]),
            "samples_s": t["samples"],
            "calls_per_sample": t["repeat"],
        }
    out = {
        "function": function,
        "shape": [int(d) for d in shape],
        "dtype": np.dtype(dtype).name,
        "input_bytes": input_bytes,
        "reference": ref_name,
        "reference_timed": reference_timed,
        "rounds": rounds_run,
        "status": status,
        "times": times,
        "speedup": {},
        "gbps": None,
        "floors": {},
        "floor": None,
        "floor_ratio": None,
    }
    if "lossmle" in times:
        base = times["lossmle"]["median_s"]
        out["gbps"] = input_bytes / base / 1e9
        out["speedup"] = {impl: t["median_s"] / base for impl, t in times.items()
                          if impl != "lossmle"}
    for kind, t in floor_timings.items():
        fs = t["samples"]
        out["floors"][kind] = {"kind": kind, "median_s": statistics.median(fs),
                               "min_s": min(fs), "samples_s": fs,
                               "calls_per_sample": t["repeat"]}
    if out["floors"]:
        out["floor"] = max(out["floors"].values(), key=lambda f: f["median_s"])
        out["floor_ratio"] = out["floor"]["median_s"] / times["lossmle"]["median_s"]
    return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def fmt_time(seconds):
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            break
    return f"{seconds / scale:.3g} {unit}"


def shown_implementations(results, implementations):
    """The table's columns: lossmle, and each competitor with something to show
    in at least one case (a time, or a WRONG / error); an all-empty column is
    left out (the notes say what was skipped)."""
    def informative(r, impl):
        return impl in r["times"] or r["status"].get(impl, "").startswith(
            ("mismatch", "error"))
    return ["lossmle"] + [i for i in implementations if i != "lossmle"
                          and any(informative(r, i) for r in results)]


def format_table(results, implementations, bandwidth_gbps=None, legend=True):
    """The results as a text table; ``implementations`` are its columns.

    With ``legend``, lines explaining the non-time cells that occur follow it.
    ``bandwidth_gbps`` is accepted for compatibility and not used: the floor
    column measures the limit per case.
    """
    competitors = [i for i in implementations if i != "lossmle"]
    head = (["function", "shape", "dtype", "lossmle"] + competitors
            + ["GB/s", "floor", "floor/lossmle"])
    rows = []
    for r in results:
        row = [r["function"], shape_str(r["shape"]), r["dtype"].replace("float", "f")]
        lm = r["times"].get("lossmle")
        row.append(fmt_time(lm["median_s"]) if lm else _status_cell(r, "lossmle"))
        for impl in competitors:
            t = r["times"].get(impl)
            if t is None:
                row.append(_status_cell(r, impl))
            elif lm:
                row.append(f"{fmt_time(t['median_s'])} ({r['speedup'][impl]:.3g}x)")
            else:
                row.append(fmt_time(t["median_s"]))
        row.append(f"{r['gbps']:.3g}" if r["gbps"] else "n/a")
        fl = r.get("floor")
        row.append(f"{fl['kind']} {fmt_time(fl['median_s'])}" if fl else "n/a")
        row.append(f"{r['floor_ratio']:.2f}" if r.get("floor_ratio") else "n/a")
        rows.append(row)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(c).ljust(w) if j < 3 else str(c).rjust(w)
                       for j, (c, w) in enumerate(zip(line, widths)))
             for line in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if legend:
        cells = {c for row in rows for c in row}
        lines += [""] + [f'"{sym}" = {text}' for sym, text in CELL_LEGEND.items()
                         if sym in cells]
    return "\n".join(lines).rstrip()


#: what the table's non-time cells mean (printed under it, for those that occur)
CELL_LEGEND = {
    "n/a": "no counterpart (e.g. scikit-learn has only cross-entropy; SciPy and jax "
           "have no out=)",
    "-": "not measured (not installed)",
    "WRONG": "disagrees with the reference: reported, not timed",
    "error": "raised an exception: reported, not timed",
}


def _status_cell(result, impl):
    s = result["status"].get(impl)
    if s is None:
        return "n/a"
    if s.startswith("mismatch"):
        return "WRONG"
    if s.startswith("error"):
        return "error"
    if s.startswith("skipped") and "not installed" not in s:
        return "n/a"
    return "-"



def header_lines(info):
    v = info["versions"]
    lines = [
        f"lossmle bench: lossmle {info['lossmle']} (SIMD path: {info['simd']}, "
        f"OpenMP: {'yes' if info['openmp'] else 'no'})",
        "versions: " + ", ".join(f"{k} {v.get(k) or 'not installed'}"
                                 for k in ("numpy", "scipy", "torch", "sklearn", "jax",
                                           "numba")),
        f"python {info['python']} on {info['platform']}"
        + (f"; load average {info['load_average_1min']:.2f} at start"
           if info.get("load_average_1min") is not None else ""),
        f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs)",
        f"threads: lossmle {info['threads']}, torch "
        f"{info['threads'] if v['torch'] else '-'}, numba "
        f"{info['threads'] if v.get('numba') else '-'}, jax: XLA's own pool, NumPy/SciPy 1 "
        f"(their element-wise code is single-threaded)",
    ]
    if info.get("date"):
        lines.insert(2, f"date: {info['date']}")
    bw = info.get("bandwidth")
    if bw:
        lines.append(f"read bandwidth: {bw['gbps']:.1f} GB/s (np.sum of {bw['mib']} MiB float64, "
                     f"{bw['threads']} thread(s), best of {bw['repeats']})")
    lines.append(f"{info['rounds']} interleaved rounds per case (order rotated each round); "
                 f"times are medians; (Nx) = that implementation's median / lossmle's, "
                 f">1 means lossmle is faster")
    lines.append("GB/s = input bytes read by lossmle / its median time")
    lines.append(f"floor = the machine's limit for the case's bytes, timed in the same rounds "
                 f"with the threads lossmle uses at that size ({info['threads']}, or 1 below "
                 f"its threading threshold): "
                 + "; ".join(f"{k} = {v}" for k, v in FLOOR_KINDS.items()
                             if k not in ("exp", "log"))
                 + " (read: logsumexp, cross-entropy, KL, entropy; copy: softmax and "
                   "log_softmax with out=; fresh copy: without out=, and the gradient)")
    lines.append(f"compute floors: exp = {FLOOR_KINDS['exp']}; log = {FLOOR_KINDS['log']}; "
                 f"the floor shown is the larger of the memory and compute floors, the "
                 f"binding limit")
    lines.append("floor/lossmle = the floor's median / lossmle's: 1.0 = at the limit")
    return lines


def plot_caption(info):
    """The plot's caption: machine, threads, versions and date of the run."""
    v = info.get("versions", {})
    versions = ", ".join(f"{k} {v[k]}" for k in ("numpy", "scipy", "torch", "sklearn", "jax",
                                                 "numba") if v.get(k))
    return (f"lossmle {info.get('lossmle')} (SIMD {info.get('simd')}) on {info.get('cpu')}, "
            f"{info.get('logical_cpus')} logical CPUs, {info.get('threads')} threads; "
            f"{versions}; {info.get('date')}; medians of {info.get('rounds')} interleaved "
            f"rounds. Bars: the competitor's time / lossmle's (> 1: lossmle is faster); "
            f"floor / lossmle: 1 = at the machine's limit.")


def _speedup_ticks(lo, hi):
    """1-2-5 ticks over a narrow range, decades over a wide one (at most ~8)."""
    steps = (1, 2, 5) if hi / lo <= 1e3 else (1,)
    ticks = [m * 10.0 ** e for e in range(-3, 7) for m in steps]
    return [t for t in ticks if lo <= t <= hi]


def fmt_ratio(v):
    """A speed-up as the plot writes it on a bar: 3 significant digits, no exponent."""
    return f"{v:.3g}x" if v < 1000 else f"{v:.0f}x"


#: the floor panel's axis ends here (values beyond it are written, their bars clipped)
FLOOR_AXIS_MAX = 1.5


def make_figure(results, info):
    """The bench's figure: one panel per competitor on one shared speed-up axis,
    one for floor / lossmle, values on the bars and a caption."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    cases = [r for r in results if "lossmle" in r["times"]]
    versus = [i for i in IMPLEMENTATIONS if i != "lossmle"
              and any(i in r["speedup"] for r in cases)]
    floors = any(r.get("floor_ratio") for r in cases)
    panels = versus + (["(floor)"] if floors else [])
    npan = max(1, len(panels))
    height = 0.24 * max(1, len(cases)) + 1.6
    fig, axes = plt.subplots(1, npan, figsize=(2.9 * npan + 2.2, height), sharey=True,
                             squeeze=False)
    axes = list(axes.flat)
    ys = list(range(len(cases)))[::-1]  # first case on top
    labels = [f"{r['function']} {shape_str(r['shape'])} {r['dtype'].replace('float', 'f')}"
              for r in cases]
    speedups = [r["speedup"][i] for r in cases for i in versus if i in r["speedup"]]
    lo = min(speedups + [1.0]) / 1.6
    hi = max(speedups + [1.0]) * 2.5  # room for the values
    first = None
    for ax, impl in zip(axes, panels):
        if impl == "(floor)":
            vals = [r.get("floor_ratio") for r in cases]
            ax.barh([y for y, v in zip(ys, vals) if v],
                    [min(v, FLOOR_AXIS_MAX) for v in vals if v], color="tab:gray")
            for y, v in zip(ys, vals):
                if v:
                    ax.text(min(v, FLOOR_AXIS_MAX), y, f" {v:.2f}", va="center", fontsize=7)
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_xlim(0, FLOOR_AXIS_MAX * 1.35)
            ax.set_xticks([0, 0.5, 0.8, 1.0, 1.5])
            ax.set_title("floor / lossmle\n(1 = at the limit)", fontsize=9)
            continue
        vals = [r["speedup"].get(impl) for r in cases]
        ax.barh([y for y, v in zip(ys, vals) if v], [v for v in vals if v])
        for y, v in zip(ys, vals):
            ax.text(v if v else lo, y, f" {fmt_ratio(v)}" if v else " n/a", va="center",
                    fontsize=7)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        if first is None:
            first = ax
            ax.set_xlim(lo, hi)
        else:
            ax.sharex(first)
        ax.xaxis.set_major_locator(FixedLocator(_speedup_ticks(lo, hi)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"vs {impl}\n(its time / lossmle's)", fontsize=9)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(labels, fontsize=7)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", linewidth=0.3)
    fig.text(0.01, 0.005, plot_caption(info), fontsize=7, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    return fig


def write_plot(path, results, info=None):
    """Draw `make_figure` into ``path`` (PNG)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Unavailable("--plot needs matplotlib: pip install 'lossmle[plot]' "
                          "(or pip install matplotlib)") from None
    import matplotlib.pyplot as plt
    fig = make_figure(results, info or {})
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def _csv_choice(choices, what, aliases=None):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {what} list")
        if items == ["all"]:
            return list(choices)
        out = []
        for item in items:
            item = (aliases or {}).get(item, item)
            if item not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {item!r}; choose from {', '.join(choices)} or 'all'")
            if item not in out:
                out.append(item)
        return out
    return parse


def parse_shapes(text):
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("empty shape list")
    if items == ["all"]:
        return list(SHAPES)
    shapes = []
    for item in items:
        parts = item.lower().replace("_", "").split("x")
        try:
            if len(parts) != 2:
                raise ValueError
            shape = (int(parts[0]), int(parts[1]))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"shape {item!r} is not ROWSxCLASSES (e.g. 1024x1000)") from None
        if min(shape) < 1:
            raise argparse.ArgumentTypeError(f"shape {item!r} must have positive sizes")
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def _positive_int(what, most=None):
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, "
                                             f"got {text!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {n}")
        if most is not None and n > most:
            raise argparse.ArgumentTypeError(f"{what} must be at most {most}, got {n}")
        return n
    return parse


def _non_negative_float(what):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not v >= 0 or math.isinf(v):
            raise argparse.ArgumentTypeError(f"{what} must be >= 0, got {text!r}")
        return v
    return parse


def make_parser():
    quick = ", ".join(shape_str(s) for s in QUICK_SHAPES)
    p = argparse.ArgumentParser(
        prog="lossmle bench",
        description="Time lossmle against SciPy, NumPy, torch, scikit-learn, jax and numba "
                    "(where installed) with interleaved rounds, after checking that all "
                    "agree, next to the machine's own floor for each case.",
        epilog=f"Quick default: every function at {quick}, {', '.join(QUICK_DTYPES)}, "
               f"{QUICK_ROUNDS} rounds. --full: shapes {', '.join(shape_str(s) for s in SHAPES)}, "
               f"dtypes {', '.join(DTYPES)}, {FULL_ROUNDS} rounds. Options given explicitly "
               f"override either. Functions: " + "; ".join(
                   f"{k}: {v}" for k, v in FUNCTION_HELP.items()))
    p.add_argument("--full", action="store_true",
                   help="every shape and dtype, more rounds (several minutes)")
    p.add_argument("--functions", type=_csv_choice(FUNCTIONS, "function"),
                   help="comma-separated functions (default: all)")
    p.add_argument("--shapes", type=parse_shapes,
                   help="comma-separated ROWSxCLASSES shapes, or 'all'")
    p.add_argument("--dtypes", type=_csv_choice(DTYPES, "dtype",
                                                {"f64": "float64", "f32": "float32"}),
                   help="comma-separated dtypes: float64, float32 (or 'all')")
    p.add_argument("--impls", type=_csv_choice(IMPLEMENTATIONS, "implementation"),
                   help="comma-separated implementations to include (lossmle is always "
                        "included, and checked against NumPy even when NumPy is not "
                        "listed; default: all that are installed)")
    p.add_argument("--threads", type=_positive_int("--threads", MAX_THREADS),
                   help="threads for lossmle and torch (default: lossmle.get_num_threads())")
    p.add_argument("--rounds", type=_positive_int("--rounds"),
                   help=f"interleaved rounds per case (default {QUICK_ROUNDS}, "
                        f"--full {FULL_ROUNDS})")
    p.add_argument("--sample-ms", type=_non_negative_float("--sample-ms"), default=5.0,
                   help="repeat calls shorter than this within one sample (default 5)")
    p.add_argument("--bandwidth-mib", type=int, default=BANDWIDTH_MIB,
                   help=f"size of the read-bandwidth probe (default {BANDWIDTH_MIB}; "
                        f"0 skips it)")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the inputs")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--plot", metavar="PATH.png",
                   help="also draw lossmle's speed-ups as a bar chart (needs matplotlib)")
    return p


def resolve_settings(args):
    """``(functions, shapes, dtypes, implementations, rounds, threads)`` from parsed args.

    Quick defaults, or ``--full``'s; options given explicitly override either.
    """
    import lossmle
    functions = args.functions or list(FUNCTIONS)
    shapes = args.shapes or list(SHAPES if args.full else QUICK_SHAPES)
    dtypes = args.dtypes or list(DTYPES if args.full else QUICK_DTYPES)
    rounds = args.rounds or (FULL_ROUNDS if args.full else QUICK_ROUNDS)
    threads = args.threads or lossmle.get_num_threads()
    impls = ["lossmle"] + [i for i in (args.impls or IMPLEMENTATIONS) if i != "lossmle"]
    return functions, shapes, dtypes, impls, rounds, threads


def _progress(text, final=False):
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text + ("\n" if final else ""))
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on errors, 0 on --help
        return int(exc.code or 0)
    if args.bandwidth_mib < 0:
        parser.print_usage(sys.stderr)
        print("lossmle bench: error: --bandwidth-mib must be >= 0", file=sys.stderr)
        return 2
    for path, what in ((args.json, "--json"), (args.plot, "--plot")):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder is not None and not os.path.isdir(folder):
            # fail before the benchmark, not after it
            parser.print_usage(sys.stderr)
            print(f"lossmle bench: error: {what}: no such directory: {folder}",
                  file=sys.stderr)
            return 2
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401  (fail before the benchmark, not after)
        except ImportError:
            print("lossmle bench: --plot needs matplotlib: pip install 'lossmle[plot]' "
                  "(or pip install matplotlib)", file=sys.stderr)
            return 2

    import lossmle
    from . import config as _config

    functions, shapes, dtypes, impls, rounds, threads = resolve_settings(args)

    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"lossmle bench: WARNING: {var}={os.environ[var]} is set; it can slow NumPy "
                  f"and SciPy (their results here may be pessimistic). Unset it for a fair "
                  f"comparison: env -u {var} lossmle bench ...", file=sys.stderr)

    notes = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        busy = (f"WARNING: the machine is busy (load average {load:.2f} on "
                f"{os.cpu_count()} CPUs): timings will be noisy, threaded code suffers most")
        print(f"lossmle bench: {busy}", file=sys.stderr)
        notes.append(busy)  # and in the report and the JSON, which outlive the terminal
    versions = library_versions()
    cfg = _config.config()
    if not args.full:
        notes.append(
            "this run: shapes " + ", ".join(shape_str(s) for s in shapes)
            + "; dtypes " + ", ".join(dtypes)
            + (f"; not run: shapes {', '.join(shape_str(s) for s in SHAPES if s not in shapes)}"
               if any(s not in shapes for s in SHAPES) else "")
            + (f"; dtypes {', '.join(d for d in DTYPES if d not in dtypes)}"
               if any(d not in dtypes for d in DTYPES) else "")
            + " (use --full for everything, several minutes)")
    for impl in impls:
        if impl != "lossmle" and impl != "numpy" and versions.get(impl) is None:
            notes.append(f"skipped {impl}: not installed")
    info = {
        "lossmle": lossmle.__version__, "simd": cfg["simd"], "openmp": cfg["openmp"],
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads,
        "versions": versions, "rounds": rounds,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "load_average_1min": load,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if args.bandwidth_mib:
        _progress(f"measuring read bandwidth ({args.bandwidth_mib} MiB, {threads} thread(s))")
        info["bandwidth"] = {
            "gbps": measure_read_bandwidth(threads, args.bandwidth_mib),
            "mib": args.bandwidth_mib, "threads": threads, "repeats": 7}
    if "torch" in impls and versions["torch"]:
        import torch
        torch.set_num_threads(threads)

    # quick mode keeps to its time budget by giving slow cases fewer rounds
    budget = None if (args.full or args.rounds) else QUICK_CASE_BUDGET_S
    cases = [(f, s, d) for s in shapes for d in dtypes for f in functions]
    results = []
    t_start = time.perf_counter()
    for i, (function, shape, dtype) in enumerate(cases, 1):
        _progress(f"[{i}/{len(cases)}] {function} {shape_str(shape)} {dtype} "
                  f"({len(cases) - i} left, {time.perf_counter() - t_start:.0f} s so far)")
        min_rounds = 3
        if budget is not None:
            left = QUICK_TARGET_S - (time.perf_counter() - t_start)
            per_case = left / (len(cases) - i + 1)
            budget = min(QUICK_CASE_BUDGET_S, max(0.0, per_case))
            min_rounds = 3 if per_case >= 1.0 else 1
        results.append(run_case(function, shape, dtype, impls, rounds, threads, args.seed,
                                args.sample_ms / 1000, budget, min_rounds))
    _progress(f"done: {len(cases)} cases in {time.perf_counter() - t_start:.1f} s", final=True)

    bw = info.get("bandwidth", {}).get("gbps")
    shown = shown_implementations(results, impls)
    print("\n".join(header_lines(info)))
    fewer = [r for r in results if r["times"] and r["rounds"] < rounds]
    if fewer:
        notes.append(f"fewer rounds (quick mode: at most {QUICK_CASE_BUDGET_S:g} s per case, "
                     f"{QUICK_TARGET_S:g} s in all): " + ", ".join(
            f"{r['function']} {shape_str(r['shape'])} {r['dtype']}: {r['rounds']}"
            for r in fewer))
    for note in notes:
        print(note)
    print()
    print(format_table(results, shown, bw))
    problems = [(r, impl, s) for r in results for impl, s in r["status"].items()
                if s.startswith(("mismatch", "error"))]
    for r, impl, s in problems:
        print(f"\n{impl} at {r['function']} {shape_str(r['shape'])} {r['dtype']}: {s}")
    slower = [(r, impl) for r in results for impl, x in r["speedup"].items() if x < 1]
    if slower:
        print("\nlossmle is slower than: " + "; ".join(
            f"{impl} at {r['function']} {shape_str(r['shape'])} {r['dtype']} "
            f"({r['speedup'][impl]:.2f}x)" for r, impl in slower))
    print("\nA ratio snapshot of this machine and moment, not a promise: "
          "rerun on yours (lossmle bench --full for every shape and dtype).")

    if args.json:
        doc = {
            "schema": "lossmle-bench/1",
            "info": info,
            "settings": {"functions": functions, "shapes": [list(s) for s in shapes],
                         "dtypes": dtypes, "implementations": impls, "rounds": rounds,
                         "threads": threads, "full": bool(args.full), "seed": args.seed,
                         "sample_ms": args.sample_ms},
            "notes": notes,
            "results": results,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        write_plot(args.plot, results, info)
        print(f"plot written to {args.plot}")
    lossmle_wrong = any(impl == "lossmle" for _, impl, _ in problems)
    return 1 if lossmle_wrong else 0
