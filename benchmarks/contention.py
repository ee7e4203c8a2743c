"""Thread-count speed-up under CPU contention (issue 22).

Starts ``--busy`` CPU-bound processes (default: one per core), then times each
function on 1 thread and on the default thread count, alternating, and prints
the ratio of medians T_default / T_1.  Run it quiet (``--busy 0``) too: there
the ratio is the parallel speed-up (~0.5 on two cores).

    python benchmarks/contention.py [--busy N] [--repeat R]
"""
import argparse
import multiprocessing as mp
import os
import time

import numpy as np


def _spin(stop):
    x = 0
    while not stop.is_set():
        for _ in range(10000):
            x += 1


def cases(lm, rng):
    x = rng.standard_normal((1024, 1000))
    xs = x.astype(np.float32)
    t = rng.integers(0, 1000, 1024)
    p = lm.softmax(x, axis=-1)
    q = lm.softmax(rng.standard_normal((1024, 1000)), axis=-1)
    out = np.empty_like(x)
    return {
        "logsumexp": lambda n: lm.logsumexp(x, axis=-1, n_threads=n),
        "softmax": lambda n: lm.softmax(x, axis=-1, n_threads=n),
        "softmax out=": lambda n: lm.softmax(x, axis=-1, out=out, n_threads=n),
        "log_softmax": lambda n: lm.log_softmax(x, axis=-1, n_threads=n),
        "log_softmax f32": lambda n: lm.log_softmax(xs, axis=-1, n_threads=n),
        "cross_entropy": lambda n: lm.cross_entropy(x, t, n_threads=n),
        "cross_entropy f32": lambda n: lm.cross_entropy(xs, t, n_threads=n),
        "cross_entropy_with_grad": lambda n: lm.cross_entropy_with_grad(x, t, n_threads=n),
        "nll_loss": lambda n: lm.nll_loss(x, t, n_threads=n),
        "kl_divergence": lambda n: lm.kl_divergence(p, q, n_threads=n),
        "entropy": lambda n: lm.entropy(p, axis=-1, n_threads=n),
        "kl_from_logits": lambda n: lm.kl_divergence_from_logits(x, x[::-1], n_threads=n),
        "evaluate_logits": lambda n: lm.evaluate_logits(x, t, n_threads=n),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--only", default=None, help="comma-separated case names")
    args = ap.parse_args()
    import lossmle as lm
    rng = np.random.default_rng(0)
    todo = cases(lm, rng)
    if args.only:
        todo = {k: v for k, v in todo.items() if k in args.only.split(",")}
    stop = mp.Event()
    procs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in procs:
        p.start()
    try:
        time.sleep(0.2)
        n_default = lm.get_num_threads()
        print(f"busy processes: {args.busy}; default threads: {n_default}; "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
        print(f"{'case':26s} {'T1 ms':>8s} {'Tdef ms':>8s} {'Tdef/T1':>8s} "
              f"{'mean ratio':>10s}")
        for name, f in todo.items():
            t1, t2 = [], []
            f(1), f(None)
            for _ in range(args.repeat):
                for n, acc in ((1, t1), (None, t2)):
                    s = time.perf_counter()
                    f(n)
                    acc.append(time.perf_counter() - s)
            m1, m2 = np.median(t1) * 1e3, np.median(t2) * 1e3
            # on a busy machine the times are bimodal (a call that loses its
            # core waits a scheduler slice): the ratio of means as well
            r_mean = np.mean(t2) / np.mean(t1)
            print(f"{name:26s} {m1:8.3f} {m2:8.3f} {m2 / m1:8.2f} {r_mean:10.2f}",
                  flush=True)
    finally:
        stop.set()
        for p in procs:
            p.join()


if __name__ == "__main__":
    main()
