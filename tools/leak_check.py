#!/usr/bin/env python
"""Long-run leak check: every public function called many times; RSS and
tracemalloc must stay flat.

Usage::

    python tools/leak_check.py [--calls 100000] [--only NAME ...]

For each function: warm up, record RSS (from /proc/self/statm) and
tracemalloc's current size, make ``--calls`` calls (successful ones and, for
the core functions, ones that raise on bad input), and record again.  The
growth must stay below a fixed slack (1 MiB RSS, 4 KiB traced: page
granularity, the measurement's own objects) plus 0.5 B/call RSS and
0.05 B/call traced -- a leak of one small object per call is 30+ B/call.
Exit status 1 if any function grows.  tests/test_packaging_leaks.py imports CALLS and
``measure`` from here and runs a modest count in the suite.
"""
import argparse
import gc
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lossmle as lm  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")
# fixed noise independent of the call count: the measurement's own objects (~200 B traced)
# and RSS moving by whole pages / allocator arenas
TRACED_SLACK = 4096
RSS_SLACK = 1 << 20


def rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 10))
    x32 = x.astype(np.float32)
    t = rng.integers(0, 10, size=16)
    t[3] = -100
    raw = rng.uniform(0.01, 1, size=(16, 10))
    p = raw / raw.sum(1, keepdims=True)
    q = np.roll(p, 1, axis=1)
    mask = rng.random((16, 10)) > 0.2
    h = rng.standard_normal((16, 4))
    wl = rng.standard_normal((10, 4))
    y = (x > 0).astype(np.float64)
    return dict(x=x, x32=x32, t=t, p=p, q=q, mask=mask, h=h, wl=wl, y=y,
                sw=rng.uniform(0.5, 2.0, size=16),
                sm=lm.softmax(x, axis=1), lsm=lm.log_softmax(x, axis=1),
                bad=x.astype(np.complex128), t_bad=np.full(16, 99))


def _raises(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except (TypeError, ValueError, IndexError):
        return
    raise AssertionError(f"{fn.__name__} accepted bad input")


# name -> callable(d); each public function, plus the error paths of the core ones
CALLS = {
    "logsumexp": lambda d: lm.logsumexp(d["x"], axis=1),
    "logsumexp_b_sign": lambda d: lm.logsumexp(d["x"], axis=1, b=d["p"] - 0.05, return_sign=True),
    "logsumexp_axis_none_f32": lambda d: lm.logsumexp(d["x32"]),
    "softmax": lambda d: lm.softmax(d["x"], axis=1),
    "log_softmax_T": lambda d: lm.log_softmax(d["x"].T, axis=0),
    "cross_entropy": lambda d: lm.cross_entropy(d["x"], d["t"], label_smoothing=0.1),
    "cross_entropy_prob": lambda d: lm.cross_entropy(d["x32"], d["p"].astype(np.float32)),
    "cross_entropy_with_grad": lambda d: lm.cross_entropy_with_grad(d["x"], d["t"]),
    "nll_loss": lambda d: lm.nll_loss(d["lsm"], d["t"], reduction="none"),
    "kl_divergence": lambda d: lm.kl_divergence(d["p"], d["q"]),
    "entropy": lambda d: lm.entropy(d["p"], d["q"], axis=1),
    "entropy_from_logits": lambda d: lm.entropy_from_logits(d["x"]),
    "kl_divergence_from_logits": lambda d: lm.kl_divergence_from_logits(d["x"], d["x32"]),
    "kl_divergence_from_logits_with_grad":
        lambda d: lm.kl_divergence_from_logits_with_grad(d["x"], d["x"][::-1]),
    "js_divergence_from_logits": lambda d: lm.js_divergence_from_logits(d["x"], d["x"][::-1]),
    "binary_cross_entropy_with_logits": lambda d: lm.binary_cross_entropy_with_logits(d["x"],
                                                                                      d["y"]),
    "binary_cross_entropy_with_logits_with_grad":
        lambda d: lm.binary_cross_entropy_with_logits_with_grad(d["x"], d["y"]),
    "softmax_backward": lambda d: lm.softmax_backward(d["x"], d["sm"]),
    "log_softmax_backward": lambda d: lm.log_softmax_backward(d["x"], d["lsm"]),
    "cross_entropy[sample_weight]": lambda d: lm.cross_entropy(d["x"], d["t"],
                                                                sample_weight=d["sw"]),
    "cross_entropy_with_grad[sample_weight]": lambda d: lm.cross_entropy_with_grad(
        d["x"], d["t"], sample_weight=d["sw"]),
    "nll_loss[sample_weight]": lambda d: lm.nll_loss(d["lsm"], d["t"], sample_weight=d["sw"]),
    "nll_loss_with_grad": lambda d: lm.nll_loss_with_grad(d["lsm"], d["t"]),
    "logsumexp[where]": lambda d: lm.logsumexp(d["x"], axis=1, where=d["mask"]),
    "softmax[where]": lambda d: lm.softmax(d["x"], axis=1, where=d["mask"]),
    "log_softmax[where]": lambda d: lm.log_softmax(d["x"], axis=1, where=d["mask"]),
    "evaluate_logits": lambda d: lm.evaluate_logits(d["x"], d["t"], k=3),
    "linear_cross_entropy": lambda d: lm.linear_cross_entropy(d["h"], d["wl"], d["t"]),
    "linear_cross_entropy_with_grad": lambda d: lm.linear_cross_entropy_with_grad(d["h"], d["wl"],
                                                                                  d["t"]),
    "log_likelihood": lambda d: lm.log_likelihood(d["p"], d["t"].clip(0)),
    "negative_log_likelihood": lambda d: lm.negative_log_likelihood(d["x"], d["t"].clip(0),
                                                                    logits=True),
    "empirical_kl": lambda d: lm.empirical_kl(d["t"].clip(0), d["p"][0], d["q"][0]),
    "LogSumExpState": lambda d: lm.LogSumExpState.__name__,  # placeholder, replaced below
    # error paths: the exception (and its message, traceback) must not leak either
    "error_dtype": lambda d: _raises(lm.softmax, d["bad"]),
    "error_label": lambda d: _raises(lm.cross_entropy_with_grad, d["x"], d["t_bad"]),
    "error_kl_validate": lambda d: _raises(lm.kl_divergence, -d["p"], d["q"]),
    "error_axis": lambda d: _raises(lm.logsumexp, d["x"], axis=(0, 0)),
}


def _streaming(d):
    try:
        s = lm.LogSumExpState()
        s.update(d["x"][0])
        return s
    except TypeError:  # other constructor signature: exercised elsewhere
        return None


CALLS["LogSumExpState"] = _streaming


def measure(name, n_calls, d=None, rounds=1):
    """(rss growth, traced growth) in bytes over ``n_calls`` calls of CALLS[name].

    With ``rounds`` > 1 the ``n_calls`` calls are repeated that many times,
    back to back, and the smallest growth of a round is returned: a one-off
    allocation (a cache filled once, a dict resized, another thread's objects
    alive at one reading) lands in one round only, while a leak grows every
    round by the same amount.
    """
    d = _inputs() if d is None else d
    fn = CALLS[name]
    for _ in range(max(200, n_calls // 20)):  # warm-up: caches, lazily built objects
        fn(d)
    gc.collect()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    rss_grown, traced_grown = [], []
    try:
        for _ in range(100):
            fn(d)
        gc.collect()
        rss0, tr0 = rss_bytes(), tracemalloc.get_traced_memory()[0]
        for _ in range(rounds):
            for _ in range(n_calls):
                fn(d)
            gc.collect()
            rss1, tr1 = rss_bytes(), tracemalloc.get_traced_memory()[0]
            rss_grown.append(rss1 - rss0)
            traced_grown.append(tr1 - tr0)
            rss0, tr0 = rss1, tr1
    finally:
        if not tracing:
            tracemalloc.stop()
    return min(rss_grown), min(traced_grown)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--max-rss-per-call", type=float, default=0.5)
    ap.add_argument("--max-traced-per-call", type=float, default=0.05)
    ap.add_argument("--rss-slack", type=int, default=RSS_SLACK)
    ap.add_argument("--traced-slack", type=int, default=TRACED_SLACK)
    ns = ap.parse_args()
    names = ns.only or list(CALLS)
    d = _inputs()
    failed = []
    print(f"{'function':45s} {'calls':>8s} {'RSS growth':>12s} {'traced growth':>14s} {'s':>6s}")
    for name in names:
        t0 = time.perf_counter()
        rss, traced = measure(name, ns.calls, d)
        ok = (rss <= ns.rss_slack + ns.max_rss_per_call * ns.calls
              and traced <= ns.traced_slack + ns.max_traced_per_call * ns.calls)
        if not ok:
            failed.append(name)
        print(f"{name:45s} {ns.calls:8d} {rss:12d} {traced:14d} "
              f"{time.perf_counter() - t0:6.1f} {'' if ok else 'LEAK?'}", flush=True)
    print(f"final RSS {rss_bytes() / 2**20:.1f} MiB; {len(failed)} function(s) grew: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
