"""Benchmarks: fused value + gradient losses and one-pass evaluation (training and evaluation functions).

Each group (function, shape, dtype) times lossmle against the best NumPy/SciPy
composition and torch CPU forward + autograd backward (where installed).
Inputs are built once per case outside the timed call, and every
implementation's result is checked against the NumPy composition (computed in
float64) before it is timed, so a fast wrong answer fails instead of winning.

Environment: ``LOSSMLE_BENCH_SHAPES`` (e.g. ``1024x1000,128x32000``),
``LOSSMLE_BENCH_DTYPES`` (``float32,float64``), ``LOSSMLE_BENCH_IMPLS``
(``lossmle,numpy,torch``), ``LOSSMLE_BENCH_THREADS``.
"""
import os

import numpy as np
import pytest
import scipy.special as sps

import lossmle as lm

FUNCTIONS = ["kl_from_logits_with_grad", "bce_with_logits_with_grad",
             "weighted_cross_entropy_with_grad", "evaluate_logits", "softmax_backward"]


def _env(name, default):
    text = os.environ.get(name, "").strip()
    return [t.strip() for t in text.split(",") if t.strip()] if text else default


SHAPES = [tuple(int(d) for d in s.split("x"))
          for s in _env("LOSSMLE_BENCH_SHAPES", ["1024x1000", "128x32000"])]
DTYPES = _env("LOSSMLE_BENCH_DTYPES", ["float32", "float64"])
IMPLS = _env("LOSSMLE_BENCH_IMPLS", ["lossmle", "numpy", "torch"])
THREADS = int(os.environ.get("LOSSMLE_BENCH_THREADS") or lm.get_num_threads())


def _inputs(shape, dtype):
    rng = np.random.default_rng(0)
    n, c = shape
    return dict(
        p=(2 * rng.standard_normal(shape)).astype(dtype),
        q=(2 * rng.standard_normal(shape)).astype(dtype),
        t=(rng.random(shape) > 0.5).astype(dtype),
        y=rng.integers(0, c, n),
        sw=rng.random(n),
        g=rng.standard_normal(shape).astype(dtype),
    )


# ---------------------------------------------------------------------------
# NumPy/SciPy compositions (also the agreement reference, run in float64)
# ---------------------------------------------------------------------------
def np_kl(d):
    lp = sps.log_softmax(d["p"], axis=-1)
    lq = sps.log_softmax(d["q"], axis=-1)
    pp = np.exp(lp)
    loss = np.sum(pp * (lp - lq)) / lp.shape[0]
    grad = np.exp(lq)
    grad -= pp
    grad /= lp.shape[0]
    return loss, grad


def np_bce(d):
    x, t = d["p"], d["t"]
    loss = np.mean(np.logaddexp(0, x) - t * x)   # softplus(x) - t x
    grad = sps.expit(x)
    grad -= t
    grad /= x.size
    return loss, grad


def np_wce(d):
    x, y, sw = d["p"], d["y"], d["sw"]
    lse = sps.logsumexp(x, axis=-1)
    rows = np.arange(x.shape[0])
    denom = np.sum(sw)
    loss = np.sum(sw * (lse - x[rows, y])) / denom
    grad = np.exp(x - lse[:, None])
    grad[rows, y] -= 1
    grad *= (sw / denom)[:, None].astype(x.dtype)
    return loss, grad


def np_eval(d):
    x, y = d["p"], d["y"]
    rows = np.arange(x.shape[0])
    lse = sps.logsumexp(x, axis=-1)
    lp = x - lse[:, None]
    nll = np.mean(lse - x[rows, y])
    acc = np.mean(np.argmax(x, axis=-1) == y)
    top5 = np.argpartition(-x, 5, axis=-1)[:, :5]
    top5_acc = np.mean(np.any(top5 == y[:, None], axis=-1))
    ent = np.mean(-np.sum(np.exp(lp) * lp, axis=-1))
    z = np.mean(lse ** 2)
    return np.array([nll, acc, top5_acc, ent, z])


def np_softmax_backward(d):
    g, y = d["g"], d["ysm"]
    out = g * y
    dot = np.sum(out, axis=-1, keepdims=True)
    out -= y * dot
    return out


def lm_eval(d):
    m = lm.evaluate_logits(d["p"], d["y"], k=5, n_threads=THREADS)
    return np.array([m["nll"], m["accuracy"], m["top5_accuracy"], m["entropy"],
                     m["z_loss"]])


LOSSMLE = {
    "kl_from_logits_with_grad": lambda d: lm.kl_divergence_from_logits_with_grad(
        d["p"], d["q"], n_threads=THREADS),
    "bce_with_logits_with_grad": lambda d: lm.binary_cross_entropy_with_logits_with_grad(
        d["p"], d["t"], n_threads=THREADS),
    "weighted_cross_entropy_with_grad": lambda d: lm.cross_entropy_with_grad(
        d["p"], d["y"], sample_weight=d["sw"], n_threads=THREADS),
    "evaluate_logits": lm_eval,
    "softmax_backward": lambda d: lm.softmax_backward(d["g"], d["ysm"], n_threads=THREADS),
}
NUMPY = {
    "kl_from_logits_with_grad": np_kl,
    "bce_with_logits_with_grad": np_bce,
    "weighted_cross_entropy_with_grad": np_wce,
    "evaluate_logits": np_eval,
    "softmax_backward": np_softmax_backward,
}


def torch_impl(function, d):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    F = torch.nn.functional
    T = {k: torch.from_numpy(v) for k, v in d.items()}

    if function == "kl_from_logits_with_grad":
        def run():
            q = T["q"].detach().requires_grad_(True)
            loss = F.kl_div(F.log_softmax(q, -1), F.log_softmax(T["p"], -1),
                            reduction="batchmean", log_target=True)
            loss.backward()
            return loss.item(), q.grad.numpy()
    elif function == "bce_with_logits_with_grad":
        def run():
            x = T["p"].detach().requires_grad_(True)
            loss = F.binary_cross_entropy_with_logits(x, T["t"])
            loss.backward()
            return loss.item(), x.grad.numpy()
    elif function == "weighted_cross_entropy_with_grad":
        sw = T["sw"].to(T["p"].dtype)

        def run():
            x = T["p"].detach().requires_grad_(True)
            loss = (sw * F.cross_entropy(x, T["y"], reduction="none")).sum() / sw.sum()
            loss.backward()
            return loss.item(), x.grad.numpy()
    elif function == "evaluate_logits":
        def run():
            with torch.no_grad():
                x, y = T["p"], T["y"]
                lse = torch.logsumexp(x, -1)
                lp = x - lse[:, None]
                nll = (lse - x.gather(1, y[:, None])[:, 0]).mean().item()
                acc = (x.argmax(-1) == y).double().mean().item()
                top5 = (x.topk(5, -1).indices == y[:, None]).any(-1).double().mean().item()
                ent = (-(lp.exp() * lp).sum(-1)).mean().item()
                z = (lse ** 2).mean().item()
            return np.array([nll, acc, top5, ent, z])
    else:
        def run():
            return torch.ops.aten._softmax_backward_data(T["g"], T["ysm"], -1,
                                                         T["g"].dtype).numpy()
    return run


def _check(got, expected, dtype):
    rtol = 2e-4 if dtype == "float32" else 1e-9
    for a, b in zip(got if isinstance(got, tuple) else (got,),
                    expected if isinstance(expected, tuple) else (expected,)):
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        scale = np.max(np.abs(b)) if b.size else 1.0
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


_CACHE = {}


def _case_inputs(shape, dtype):
    key = (shape, dtype)
    if key not in _CACHE:
        _CACHE.clear()
        d = _inputs(shape, dtype)
        d["ysm"] = sps.softmax(d["q"], axis=-1).astype(dtype)
        d64 = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in d.items()}
        _CACHE[key] = (d, d64)
    return _CACHE[key]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("function", FUNCTIONS)
def bench_training(benchmark, function, shape, dtype, impl):
    d, d64 = _case_inputs(shape, dtype)
    if impl == "lossmle":
        fn = lambda: LOSSMLE[function](d)  # noqa: E731
    elif impl == "numpy":
        fn = lambda: NUMPY[function](d)  # noqa: E731
    else:
        fn = torch_impl(function, d)
    _check(fn(), NUMPY[function](d64), dtype)  # a wrong answer fails before timing
    benchmark.group = f"{function} {'x'.join(map(str, shape))} {dtype}"
    benchmark.extra_info.update(implementation=impl, threads=THREADS)
    benchmark(fn)
