"""Cross-entropy and log-sum-exp of logits in a .npy file larger than a worker's memory.

    pip install 'lossmle[dask]'
    python examples/dask_out_of_core.py                       # makes a 192 MiB file first
    python examples/dask_out_of_core.py logits.npy labels.npy # or brings its own

Two worker processes (a ``LocalCluster(processes=True)``), each with a memory
limit smaller than the logits file.  ``lossmle.dask.from_npy`` puts only the
file's path into the task graph: each task opens the file memory-mapped and
copies out its own block, so no more than a few blocks are in a worker's
memory at a time and nothing larger than a block crosses a process boundary.
(``da.from_array(np.load(path, mmap_mode="r"))`` would instead pickle the
whole file into the graph and ship it to the workers.)

The ``if __name__ == "__main__":`` guard is required: worker processes are
started by re-importing this script.
"""
import argparse
import os
import tempfile

import numpy as np
from dask.distributed import Client, LocalCluster

from lossmle import dask as lmd


def make_data(directory, n_rows=49152, n_classes=1024, seed=0):
    """Write float32 logits (n_rows x n_classes) and int64 labels, a slab at a time."""
    logits_path = os.path.join(directory, "logits.npy")
    labels_path = os.path.join(directory, "labels.npy")
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(logits_path, mode="w+", dtype=np.float32,
                                    shape=(n_rows, n_classes))
    for start in range(0, n_rows, 4096):
        stop = min(start + 4096, n_rows)
        out[start:stop] = rng.normal(scale=4.0, size=(stop - start, n_classes))
    out.flush()
    del out
    np.save(labels_path, rng.integers(0, n_classes, size=n_rows))
    return logits_path, labels_path


def main(logits_path, labels_path, memory_limit="160MiB", block_rows=1024, out=None):
    logits = lmd.from_npy(logits_path, chunks=(block_rows, -1))  # (N, V), by reference
    labels = lmd.from_npy(labels_path, chunks=block_rows)        # (N,) int
    print(f"logits {logits.shape} {logits.dtype}: {logits.nbytes / 2**20:.0f} MiB on disk, "
          f"blocks of {logits.nbytes / logits.npartitions / 2**20:.1f} MiB; "
          f"worker memory limit {memory_limit}")

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      memory_limit=memory_limit, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        loss, lse = client.compute([lmd.cross_entropy(logits, labels, reduction="mean"),
                                    lmd.logsumexp(logits, axis=-1)], sync=True)

    print(f"mean cross-entropy {float(loss):.6f} ({loss.dtype}); "
          f"log-sum-exp of {lse.shape[0]} rows, first {float(lse[0]):.6f} ({lse.dtype})")
    if out is not None:
        np.savez(out, loss=loss, lse=lse)
    return loss, lse


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logits", nargs="?", help="(N, V) .npy file of logits")
    parser.add_argument("labels", nargs="?", help="(N,) .npy file of class indices")
    parser.add_argument("--memory-limit", default="160MiB", help="per worker process")
    parser.add_argument("--block-rows", type=int, default=1024)
    parser.add_argument("--out", help="save the results to this .npz file")
    args = parser.parse_args()
    if (args.logits is None) != (args.labels is None):
        parser.error("give both the logits and the labels file, or neither")
    if args.logits is None:
        with tempfile.TemporaryDirectory() as tmp:
            main(*make_data(tmp), args.memory_limit, args.block_rows, args.out)
    else:
        main(args.logits, args.labels, args.memory_limit, args.block_rows, args.out)
