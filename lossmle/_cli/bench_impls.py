"""``lossmle bench``'s cases: the benchmarked functions, their inputs, the
NumPy references and one builder per implementation (lossmle, SciPy, NumPy,
torch, scikit-learn, jax, numba), and the agreement check every result
passes before it is timed.  ``lossmle/_cli/bench.py`` times them; its
docstring says how each competitor is written and why.
"""
import numpy as np

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
