"""lossmle.dask: chunked (rows and/or classes) dask arrays against in-memory oracles.

Oracles: scipy.special.logsumexp / rel_entr and the cross-entropy written in
NumPy here, on the whole array.  The threaded and synchronous schedulers run
the grid; one module-scoped dask.distributed.LocalCluster (2 worker
processes) runs the same computations across processes (states pickled
between them).  Skips cleanly without dask (the optional extra).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import same_package_cwd

da = pytest.importorskip("dask.array")
special = pytest.importorskip("scipy.special")
lmd = pytest.importorskip("lossmle.dask")

EPS = np.finfo(np.float64).eps

CHUNKS = {
    "one-block": (60, 45),
    "rows": (7, 45),
    "classes": (60, 4),
    "both": (13, 10),
    "uneven": ((1, 20, 39), (2, 1, 30, 12)),
}


def close(got, want, scale=100.0, n=8):
    np.testing.assert_allclose(got, want, rtol=n * EPS, atol=n * EPS * scale)


def ce_oracle(x, y, reduction, ignore_index=-100):
    kept = y != ignore_index
    lse = special.logsumexp(x, axis=-1)
    rows = np.where(kept, lse - x[np.arange(len(y)), np.where(kept, y, 0)], 0.0)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / kept.sum()


@pytest.fixture
def data(rng):
    x = rng.normal(scale=20, size=(60, 45))
    y = rng.integers(0, 45, size=60)
    y[::7] = -100
    return x, y


@pytest.mark.parametrize("chunks", list(CHUNKS), ids=list(CHUNKS))
@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_logsumexp(data, chunks, scheduler):
    x, _ = data
    X = da.from_array(x, chunks=CHUNKS[chunks])
    for axis in (-1, 0):
        got = lmd.logsumexp(X, axis=axis, split_every=2).compute(scheduler=scheduler)
        close(got, special.logsumexp(x, axis=axis))
    kept = lmd.logsumexp(X, axis=1, keepdims=True).compute(scheduler=scheduler)
    assert kept.shape == (60, 1)
    close(kept, special.logsumexp(x, axis=1, keepdims=True))


@pytest.mark.parametrize("chunks", list(CHUNKS), ids=list(CHUNKS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(data, chunks, reduction):
    x, y = data
    X = da.from_array(x, chunks=CHUNKS[chunks])
    Y = da.from_array(y, chunks=17)  # rechunked to the logits' rows inside
    got = lmd.cross_entropy(X, Y, reduction=reduction).compute(scheduler="threads")
    close(got, ce_oracle(x, y, reduction), scale=2000)


def test_cross_entropy_class_axis_first(data):
    x, y = data
    X = da.from_array(np.ascontiguousarray(x.T), chunks=(8, 25))
    got = lmd.cross_entropy(X, y, axis=0, reduction="none").compute()
    close(got, ce_oracle(x, y, "none"), scale=2000)


@pytest.mark.parametrize("chunks", list(CHUNKS), ids=list(CHUNKS))
def test_kl_divergence(rng, chunks):
    p = rng.random((60, 45))
    q = rng.random((60, 45))
    p[3, :5] = 0.0  # 0 * log(0 / q) = 0
    p /= p.sum(axis=1, keepdims=True)
    q /= q.sum(axis=1, keepdims=True)
    got = lmd.kl_divergence(da.from_array(p, chunks=CHUNKS[chunks]), q).compute()
    close(got, special.rel_entr(p, q).sum(axis=-1), scale=1)
    got2 = lmd.kl_divergence(da.from_array(p, chunks=CHUNKS[chunks]), q, base=2).compute()
    close(got2, special.rel_entr(p, q).sum(axis=-1) / np.log(2), scale=1)


def test_special_values_across_chunks():
    x = np.array([[0.0, -np.inf, 1.0, 2.0],
                  [-np.inf] * 4,
                  [1.0, 2.0, np.inf, 3.0],
                  [1.0, np.nan, 2.0, 3.0]])
    got = lmd.logsumexp(da.from_array(x, chunks=(1, 1)), axis=-1).compute()
    with np.errstate(all="ignore"):
        want = special.logsumexp(x, axis=-1)
    np.testing.assert_array_equal(got, want)


def test_float32_and_numpy_input(rng):
    x = rng.normal(size=(10, 30)).astype(np.float32)
    got = lmd.logsumexp(x, axis=-1).compute()  # a NumPy array is wrapped
    np.testing.assert_allclose(got, special.logsumexp(x.astype(np.float64), axis=-1),
                               rtol=8 * np.finfo(np.float32).eps)


def test_bad_input():
    x = da.zeros((4, 5), chunks=2)
    with pytest.raises(ValueError, match="target has shape"):
        lmd.cross_entropy(x, np.zeros(3, dtype=int))
    with pytest.raises(TypeError, match="target must hold integer"):
        lmd.cross_entropy(x, np.zeros(4))
    with pytest.raises(ValueError, match="reduction"):
        lmd.cross_entropy(x, np.zeros(4, dtype=int), reduction="avg")
    with pytest.raises(IndexError, match="class index 5"):
        lmd.cross_entropy(x, np.array([0, 1, 5, 2])).compute()
    with pytest.raises(TypeError, match="axis"):
        lmd.logsumexp(x, axis=(0, 1))
    with pytest.raises(np.exceptions.AxisError):
        lmd.logsumexp(x, axis=2)
    with pytest.raises(ValueError, match="same shape"):
        lmd.kl_divergence(x, da.zeros((4, 4)))
    with pytest.raises(ValueError, match="negative or nan"):
        lmd.kl_divergence(x - 1, x).compute()
    with pytest.raises(TypeError, match="x must be a real numeric"):
        lmd.logsumexp(np.array(["a"]))


# ---------------------------------------------------------------------------
# across processes: dask.distributed.LocalCluster, 2 workers
# ---------------------------------------------------------------------------
_CLUSTER_SCRIPT = """
import sys
import numpy as np
import dask.array as da
import dask.distributed as dd
import lossmle.dask as lmd

if __name__ == "__main__":
    data = np.load(sys.argv[1])
    x, y, p, q = data["x"], data["y"], data["p"], data["q"]
    # loopback only, and a free port for the dashboard (8787 may be taken)
    with dd.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         host="127.0.0.1", dashboard_address="127.0.0.1:0",
                         silence_logs=50) as cluster, dd.Client(cluster) as client:
        X = da.from_array(x, chunks=(50, 60))
        futures = client.compute([
            lmd.logsumexp(X, axis=-1),
            lmd.cross_entropy(X, y, reduction="mean"),
            lmd.kl_divergence(da.from_array(p, chunks=(70, 80)), q),
        ])
        dd.wait(futures, timeout=120)
        lse, ce, kl = client.gather(futures)
    np.savez(sys.argv[2], lse=lse, ce=ce, kl=kl)
"""


def test_on_local_cluster(tmp_path):
    """2 worker processes (states and chunks pickled between them).

    The cluster runs in a script of its own: its worker processes are spawned
    from a plain __main__ (not pytest's), started in a directory where only
    the tested lossmle can be imported, and the whole run is time-bounded.
    """
    pytest.importorskip("dask.distributed")
    rng = np.random.default_rng(7)
    x = rng.normal(scale=10, size=(200, 300))
    y = rng.integers(0, 300, size=200)
    p = rng.random((200, 300))
    p /= p.sum(axis=1, keepdims=True)
    q = np.roll(p, 1, axis=1)
    np.savez(tmp_path / "in.npz", x=x, y=y, p=p, q=q)
    script = tmp_path / "cluster_run.py"
    script.write_text(_CLUSTER_SCRIPT)
    env = dict(os.environ, PYTHONPATH=same_package_cwd())
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "in.npz"),
                          str(tmp_path / "out.npz")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    close(out["lse"], special.logsumexp(x, axis=-1))
    close(out["ce"], ce_oracle(x, y, "mean"), scale=1000)
    close(out["kl"], special.rel_entr(p, q).sum(axis=-1), scale=1)


def test_docstring_examples_run():
    import doctest

    res = doctest.testmod(lmd)
    assert res.attempted > 0 and res.failed == 0
