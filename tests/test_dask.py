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
from oracles import np_cross_entropy

da = pytest.importorskip("dask.array")
special = pytest.importorskip("scipy.special")
lmd = pytest.importorskip("lossmle.dask")

EPS = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps

CHUNKS = {
    "one-block": (60, 45),
    "rows": (7, 45),
    "classes": (60, 4),
    "both": (13, 10),
    "uneven": ((1, 20, 39), (2, 1, 30, 12)),
}


def close(got, want, scale=100.0, n=8):
    np.testing.assert_allclose(got, want, rtol=n * EPS, atol=n * EPS * scale)


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
    close(got, np_cross_entropy(x, y, reduction=reduction), scale=2000)


def test_cross_entropy_class_axis_first(data):
    x, y = data
    X = da.from_array(np.ascontiguousarray(x.T), chunks=(8, 25))
    got = lmd.cross_entropy(X, y, axis=0, reduction="none").compute()
    close(got, np_cross_entropy(x, y, reduction="none"), scale=2000)


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
    close(out["ce"], np_cross_entropy(x, y, reduction="mean"), scale=1000)
    close(out["kl"], special.rel_entr(p, q).sum(axis=-1), scale=1)


def test_docstring_examples_run():
    import doctest

    res = doctest.testmod(lmd)
    assert res.attempted > 0 and res.failed == 0


# ---------------------------------------------------------------------------
# from_npy: a .npy file by reference (issue 27)
# ---------------------------------------------------------------------------
def _graph_bytes(arr):
    """Size of ``arr``'s task graph as it is shipped (cloudpickle, as distributed)."""
    cloudpickle = pytest.importorskip("cloudpickle")
    return len(cloudpickle.dumps(dict(arr.__dask_graph__())))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize("order", ["C", "F"])
def test_from_npy_reads_the_file(tmp_path, rng, dtype, order):
    x = (rng.normal(scale=5, size=(37, 29)) * 10).astype(dtype)
    x = np.asfortranarray(x) if order == "F" else x
    np.save(tmp_path / "x.npy", x)
    X = lmd.from_npy(tmp_path / "x.npy", chunks=(10, 7))
    assert X.shape == x.shape and X.dtype == x.dtype
    assert X.chunks == ((10, 10, 10, 7), (7, 7, 7, 7, 1))
    np.testing.assert_array_equal(X.compute(), x)
    np.testing.assert_array_equal(X[5:20, 3:9].compute(scheduler="sync"), x[5:20, 3:9])
    got = lmd.logsumexp(X, axis=0).compute()
    x64 = x.astype(np.float64)
    rtol = 8 * np.finfo(np.float32 if dtype == np.float32 else np.float64).eps
    np.testing.assert_allclose(got, special.logsumexp(x64, axis=0), rtol=rtol, atol=0)


def test_from_npy_graph_holds_the_path_not_the_data(tmp_path, rng):
    n_rows, n_classes = 2048, 1024  # 8 MiB of float32
    np.save(tmp_path / "logits.npy",
            rng.normal(size=(n_rows, n_classes)).astype(np.float32))
    np.save(tmp_path / "labels.npy", rng.integers(0, n_classes, size=n_rows))
    size = os.path.getsize(tmp_path / "logits.npy")
    X = lmd.from_npy(tmp_path / "logits.npy", chunks=(256, 512))
    y = lmd.from_npy(tmp_path / "labels.npy", chunks=256)
    for arr in (X, lmd.logsumexp(X), lmd.cross_entropy(X, y),
                lmd.kl_divergence(X, X, validate=False)):
        # the whole graph (dozens of tasks) in far less than one 512 KiB block
        assert _graph_bytes(arr) < size / 200, _graph_bytes(arr)


def test_from_npy_names_follow_the_file(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 4)))
    a = lmd.from_npy(path, chunks=2)
    assert lmd.from_npy(str(path), chunks=2).name == a.name  # same file, same chunks
    assert lmd.from_npy(path, chunks=4).name != a.name
    np.save(path, np.ones((4, 4)))
    os.utime(path, ns=(0, 0))  # a rewrite with another mtime is another array
    b = lmd.from_npy(path, chunks=2)
    assert b.name != a.name
    np.testing.assert_array_equal(b.compute(), np.ones((4, 4)))


def test_from_npy_bad_files(tmp_path):
    np.savez(tmp_path / "z.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a .npy file"):
        lmd.from_npy(tmp_path / "z.npz")
    np.save(tmp_path / "c.npy", np.zeros(3, dtype=complex))
    with pytest.raises(TypeError, match="complex128"):
        lmd.from_npy(tmp_path / "c.npy")
    np.save(tmp_path / "o.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        lmd.from_npy(tmp_path / "o.npy")
    (tmp_path / "t.npy").write_text("not numpy")
    with pytest.raises(ValueError):
        lmd.from_npy(tmp_path / "t.npy")
    with pytest.raises(FileNotFoundError):
        lmd.from_npy(tmp_path / "missing.npy")


# ---------------------------------------------------------------------------
# dtypes as the in-memory functions (float32 stays float32) - issue 27
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,want", [(np.float32, np.float32), (np.float16, np.float32),
                                        (np.float64, np.float64), (np.int32, np.float64)])
def test_result_dtypes_as_in_memory(rng, dtype, want):
    x = rng.normal(scale=3, size=(40, 30)).astype(dtype)
    y = rng.integers(0, 30, size=40)
    p = rng.random((40, 30)).astype(dtype) + 1
    X, P = da.from_array(x, chunks=(16, 7)), da.from_array(p, chunks=(16, 7))
    x64, p64 = x.astype(np.float64), p.astype(np.float64)
    rtol = 16 * np.finfo(want).eps
    lse = lmd.logsumexp(X, axis=-1)
    assert lse.dtype == want
    got = lse.compute()
    assert got.dtype == want
    np.testing.assert_allclose(got, special.logsumexp(x64, axis=-1), rtol=rtol)
    for red in ("mean", "sum", "none"):
        ce = lmd.cross_entropy(X, y, reduction=red)
        got = np.asarray(ce.compute())
        assert ce.dtype == want and got.dtype == want
        np.testing.assert_allclose(got, np_cross_entropy(x64, y, reduction=red), rtol=rtol,
                                   atol=rtol * 100)
    q = np.roll(p, 1, axis=1)
    kl = lmd.kl_divergence(P, q)
    got = kl.compute()
    assert kl.dtype == want and got.dtype == want
    want_kl = special.rel_entr(p64, np.roll(p64, 1, axis=1)).sum(axis=-1)
    np.testing.assert_allclose(got, want_kl, rtol=rtol, atol=rtol)


def test_mixed_precision_kl_is_float64(rng):
    p = rng.random((6, 5))
    got = lmd.kl_divergence(da.from_array(p.astype(np.float32)), p).compute()
    assert got.dtype == np.float64


# ---------------------------------------------------------------------------
# Threads: one per block by default, so Dask's and OpenMP's do not multiply
# ---------------------------------------------------------------------------
@pytest.fixture
def kernel_threads(monkeypatch):
    """The n_threads every block's kernel call receives."""
    import lossmle._streaming as streaming
    seen = []
    real_update = streaming.LogSumExpState.update
    real_kl = lmd._kl_divergence

    def update(self, chunk, *, n_threads=None):
        seen.append(n_threads)
        return real_update(self, chunk, n_threads=n_threads)

    def kl(*args, n_threads=None, **kwargs):
        seen.append(n_threads)
        return real_kl(*args, n_threads=n_threads, **kwargs)

    monkeypatch.setattr(streaming.LogSumExpState, "update", update)
    monkeypatch.setattr(lmd, "_kl_divergence", kl)
    return seen


@pytest.mark.parametrize("n_threads", ["default", None, 3])
def test_block_threads(rng, kernel_threads, n_threads):
    x = rng.random((20, 12))
    X = da.from_array(x, chunks=(5, 4))
    kw = {} if n_threads == "default" else {"n_threads": n_threads}
    want = 1 if n_threads == "default" else n_threads
    lmd.logsumexp(X, **kw).compute(scheduler="threads")
    lmd.cross_entropy(X, np.zeros(20, dtype=int), **kw).compute(scheduler="threads")
    lmd.kl_divergence(X, X, **kw).compute(scheduler="threads")
    # 12 blocks each: logsumexp, cross_entropy's logsumexp, kl
    assert len(kernel_threads) == 36
    assert set(kernel_threads) == {want}


def test_block_threads_checked():
    x = da.zeros((4, 4), chunks=2)
    for fn in (lmd.logsumexp, lambda a, **k: lmd.cross_entropy(a, np.zeros(4, int), **k),
               lambda a, **k: lmd.kl_divergence(a, a, **k)):
        with pytest.raises(ValueError, match="n_threads"):
            fn(x, n_threads=0)
        with pytest.raises(TypeError, match="n_threads"):
            fn(x, n_threads=1.5)


# ---------------------------------------------------------------------------
# examples/dask_out_of_core.py, as written, on a file larger than a worker's
# memory limit: 2 worker processes of 160 MiB and a 192 MiB file
# ---------------------------------------------------------------------------
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "examples", "dask_out_of_core.py")


@pytest.mark.skipif(not os.path.exists(EXAMPLE), reason="needs the checkout's examples/")
def test_out_of_core_example_runs_as_a_script(tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.utils import parse_bytes
    n_rows, n_classes, limit = 49152, 1024, "160MiB"
    rng = np.random.default_rng(11)
    logits = np.lib.format.open_memmap(tmp_path / "logits.npy", mode="w+",
                                       dtype=np.float32, shape=(n_rows, n_classes))
    want_lse = np.empty(n_rows)
    labels = rng.integers(0, n_classes, size=n_rows)
    for s in range(0, n_rows, 8192):
        block = rng.normal(scale=4.0, size=(8192, n_classes)).astype(np.float32)
        logits[s:s + 8192] = block
        want_lse[s:s + 8192] = special.logsumexp(block.astype(np.float64), axis=-1)
    target_logit = logits[np.arange(n_rows), labels].astype(np.float64)
    logits.flush()
    del logits
    np.save(tmp_path / "labels.npy", labels)
    assert os.path.getsize(tmp_path / "logits.npy") > parse_bytes(limit)
    env = dict(os.environ, PYTHONPATH=same_package_cwd())
    res = subprocess.run(
        [sys.executable, EXAMPLE, str(tmp_path / "logits.npy"), str(tmp_path / "labels.npy"),
         "--memory-limit", limit, "--out", str(tmp_path / "out.npz")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "mean cross-entropy" in res.stdout
    assert "Sending large graph" not in res.stderr
    out = np.load(tmp_path / "out.npz")
    assert out["lse"].dtype == np.float32 and out["loss"].dtype == np.float32
    np.testing.assert_allclose(out["lse"], want_lse, rtol=4 * EPS32, atol=0)
    np.testing.assert_allclose(out["loss"], np.mean(want_lse - target_logit),
                               rtol=64 * EPS32)
