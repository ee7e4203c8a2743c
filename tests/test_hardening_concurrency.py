"""8 Python threads x 1000 mixed calls of every core function (and the training
helpers) give results bit-identical to a serial run; a caller is unaffected by
another thread mutating an unrelated array, or by set_num_threads changing
under it.  (tests/test_concurrency.py covers 1 vs 2 OpenMP threads.)"""
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.special as sps

import lossmle as lm

N_THREADS, CALLS_PER_THREAD = 8, 1000


def _bits(a):
    if isinstance(a, tuple):
        return tuple(_bits(x) for x in a)
    a = np.asarray(a)
    return (a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes())


def _workload():
    rng = np.random.default_rng(2024)
    x = 4 * rng.standard_normal((64, 33))
    x32 = x.astype(np.float32)
    t = rng.integers(0, 33, size=64)
    t[::5] = -100
    raw = rng.uniform(0.0, 1.0, size=(64, 33))
    raw[:, 3] = 0.0
    p = raw / raw.sum(1, keepdims=True)
    q = np.roll(p, 1, axis=1) * 0.5 + 0.5 / 33
    w = rng.uniform(0.1, 3.0, size=33)
    x_big = rng.standard_normal((600, 300))  # above the OpenMP threshold
    t_big = rng.integers(0, 300, size=600)
    mask = rng.random((64, 33)) > 0.3
    x_special = x.copy()
    x_special[0] = -np.inf
    x_special[1, 2] = np.nan
    x_special[2, 5] = np.inf
    work = [
        (lm.logsumexp, (x,), dict(axis=1)),
        (lm.logsumexp, (x32,), dict(axis=None)),
        (lm.logsumexp, (x,), dict(axis=0, b=p - 0.01, return_sign=True)),
        (lm.softmax, (x.T,), dict(axis=0)),
        (lm.softmax, (x_special,), dict(axis=1)),
        (lm.log_softmax, (x32,), dict(axis=-1)),
        (lm.log_softmax, (x_big,), dict(axis=1, n_threads=2)),
        (lm.cross_entropy, (x, t), dict(weight=w, label_smoothing=0.1)),
        (lm.cross_entropy, (x_special, t), dict(reduction="none")),
        (lm.cross_entropy, (x32, p.astype(np.float32)), dict(reduction="sum")),
        (lm.cross_entropy, (x_big, t_big), dict(n_threads=2)),
        (lm.cross_entropy_with_grad, (x, np.where(t == -100, 3, t)), dict(ignore_index=3)),
        (lm.cross_entropy_with_grad, (x_big, t_big), dict(reduction="sum", n_threads=2)),
        (lm.nll_loss, (sps.log_softmax(x, axis=1), t), dict(weight=w)),
        (lm.kl_divergence, (p, q), dict()),
        (lm.kl_divergence, (p.astype(np.float32), q.astype(np.float32)), dict(axis=None)),
        (lm.entropy, (p,), dict(axis=1, base=2)),
        (lm.entropy, (p, q), dict()),
        (lm.logsumexp, (x,), dict(axis=1, where=mask)),
        (lm.softmax, (x,), dict(axis=1, where=mask)),
        (lm.entropy_from_logits, (x,), dict()),
        (lm.kl_divergence_from_logits, (x, x[::-1]), dict()),
        (lm.softmax_backward, (x, sps.softmax(x, axis=1)), dict()),
        (lm.binary_cross_entropy_with_logits, (x, p), dict()),
    ]
    inputs = [x, x32, t, p, q, w, x_big, t_big, mask, x_special]
    return work, inputs


def test_8_threads_x_1000_mixed_calls_bit_identical_to_serial():
    work, inputs = _workload()
    before = [a.tobytes() for a in inputs]
    serial = [_bits(fn(*a, **k)) for fn, a, k in work]
    # the serial results are right, not merely reproducible (spot check vs scipy)
    np.testing.assert_allclose(lm.logsumexp(*work[0][1], **work[0][2]),
                               sps.logsumexp(inputs[0], axis=1), rtol=1e-13)
    barrier = threading.Barrier(N_THREADS)

    def worker(seed):
        order = random.Random(seed).choices(range(len(work)), k=CALLS_PER_THREAD)
        barrier.wait()  # start together: maximal overlap
        mismatches = []
        for i in order:
            fn, a, k = work[i]
            if _bits(fn(*a, **k)) != serial[i]:
                mismatches.append(i)
        return len(order), mismatches

    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        results = list(pool.map(worker, range(N_THREADS)))
    assert sum(n for n, _ in results) == N_THREADS * CALLS_PER_THREAD
    bad = sorted({work[i][0].__name__ for _, m in results for i in m})
    assert not bad, f"results differing from the serial run: {bad}"
    assert [a.tobytes() for a in inputs] == before


def test_caller_unaffected_by_unrelated_mutation_and_thread_setting():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((700, 200))  # threaded path
    t = rng.integers(0, 200, size=700)
    expected_lsm = lm.log_softmax(x, axis=1, n_threads=1)
    expected_ce = lm.cross_entropy_with_grad(x, t, n_threads=1)
    scratch = np.zeros_like(x)
    stop = threading.Event()
    from lossmle import _threads
    saved = _threads._State.default  # None (OpenMP's default) unless a test set it

    def mutate():
        k = 0
        while not stop.is_set():
            scratch[k % 700] = k  # unrelated array
            lm.set_num_threads(1 + k % 2)  # the process-wide default flips under the caller
            k += 1

    th = threading.Thread(target=mutate)
    th.start()
    try:
        for _ in range(40):
            assert _bits(lm.log_softmax(x, axis=1)) == _bits(expected_lsm)
            assert _bits(lm.cross_entropy_with_grad(x, t)) == _bits(expected_ce)
    finally:
        stop.set()
        th.join()
        lm.set_num_threads(saved)
    np.testing.assert_allclose(expected_lsm, sps.log_softmax(x, axis=1), rtol=1e-12, atol=1e-13)
