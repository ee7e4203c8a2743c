"""lossmle on dask arrays: logsumexp, cross_entropy, kl_divergence out of core.

Needs the optional extra ``dask`` (``pip install 'lossmle[dask]'``).  Every
function takes ``dask.array`` inputs chunked along the rows and/or the class
axis and returns a lazy ``dask.array`` (call ``.compute()``) of the in-memory
function's dtype (float32 for float32 or float16 input, else float64):

* :func:`from_npy` builds such an input from a ``.npy`` file *by reference*:
  the graph holds the path and each task reads its own block, so nothing
  larger than a block crosses a process boundary (``da.from_array`` of a
  memmap pickles the whole file into the graph);
* each block runs lossmle's compiled kernels (GIL released, so the threaded
  scheduler scales as well as processes do) on one thread by default: Dask
  already runs one block per worker thread, and OpenMP threads inside each
  block would multiply with them (``n_threads`` overrides this);
* class-axis chunks are combined by a tree reduction: for ``logsumexp``
  through :class:`lossmle.LogSumExpState` (running max, count at it, rescaled
  sum; merged in any order), for ``kl_divergence`` as a plain sum;
* ``cross_entropy`` = the dask ``logsumexp`` minus the target logit, which
  each block contributes where the target class falls in its column range.

Results agree with the in-memory functions to a few ulps (the order of the
merges is the only difference).
"""
from __future__ import annotations

import operator
import os
from functools import partial
from typing import Any, Literal

import numpy as np

try:
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised without dask only
    raise ImportError(
        "lossmle.dask needs dask: pip install 'lossmle[dask]' "
        "(or 'dask[array]')") from exc

from ._divergence import kl_divergence as _kl_divergence
from ._streaming import LogSumExpState
from ._threads import check_n_threads as _check_n_threads
from ._validation import single_axis

__all__ = ["from_npy", "logsumexp", "cross_entropy", "kl_divergence"]


def _result_dtype(*dtypes: Any) -> np.dtype:
    """The in-memory functions' result dtype: float32 stays float32 (float16
    computes in float32), anything else is float64."""
    small = (np.dtype(np.float32), np.dtype(np.float16))
    return np.dtype(np.float32) if all(np.dtype(d) in small for d in dtypes) \
        else np.dtype(np.float64)


def _block_threads(n_threads: Any) -> int | None:
    """Threads for one block's kernel: 1 unless the caller says otherwise."""
    return None if n_threads is None else _check_n_threads(n_threads)


class _NpyFile:
    """A ``.npy`` file by reference, as ``dask.array.from_array`` wants it.

    Pickles to its path, shape and dtype only; indexing opens the file
    memory-mapped (read-only) and copies out just the requested block.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        arr = np.load(path, mmap_mode="r")  # reads the header only
        if not isinstance(arr, np.ndarray):
            arr.close()
            raise ValueError(f"{path!r} is not a .npy file (np.load gave "
                             f"{type(arr).__name__})")
        self.shape: tuple[int, ...] = arr.shape
        self.dtype = arr.dtype
        del arr
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r")[index])

    def __repr__(self) -> str:
        return f"_NpyFile({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def from_npy(path: str | os.PathLike[str], chunks: Any = "auto") -> Any:
    """A dask array reading a ``.npy`` file block by block, by reference.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy`` file (as written by :func:`numpy.save`) of a real numeric
        dtype.  With worker processes on other machines, the same path must
        name the same file there.
    chunks : int, tuple or 'auto', optional
        Block shape, as for :func:`dask.array.from_array`.

    Returns
    -------
    dask.array.Array
        The file's shape and dtype.  Its graph holds the path (and the file's
        size and modification time, in the name), never the data: each task
        opens the file memory-mapped and copies out its own block, so a
        distributed worker reads only the blocks it computes.

    Raises
    ------
    ValueError
        If the file is not a ``.npy`` file.
    TypeError
        If its dtype is not real numeric.

    See Also
    --------
    dask.array.from_zarr : the same, by reference, for a Zarr store.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from lossmle import dask as lmd
    >>> path = os.path.join(tempfile.mkdtemp(), "logits.npy")
    >>> np.save(path, np.arange(12.0, dtype=np.float32).reshape(3, 4))
    >>> x = lmd.from_npy(path, chunks=(2, 2))
    >>> x.chunks, x.dtype
    (((2, 1), (2, 2)), dtype('float32'))
    >>> lse = lmd.logsumexp(x, axis=-1).compute()
    >>> lse.dtype, [round(float(v), 4) for v in lse]
    (dtype('float32'), [3.4402, 7.4402, 11.4402])
    """
    p = os.path.abspath(os.fspath(path))
    src = _NpyFile(p)
    if src.dtype.kind not in "fiub":
        raise TypeError(f"{path!r} holds dtype {src.dtype}; lossmle.dask needs a real "
                        f"numeric array")
    st = os.stat(p)
    from dask.base import tokenize
    name = "from-npy-" + tokenize(p, st.st_size, st.st_mtime_ns, chunks)
    return da.from_array(src, chunks=chunks, name=name, lock=False, asarray=False,
                         fancy=False, meta=np.empty((0,) * src.ndim, dtype=src.dtype))


def _single_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    return single_axis(axis, ndim, name)


def _axis_and_threads(x: Any, name: str, axis: Any, n_threads: Any,
                      what: str = "") -> tuple[int, int | None]:
    """The reduced axis of ``x`` (at least 1-d) and the threads for each block."""
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension{what}")
    return _single_axis(axis, x.ndim), _block_threads(n_threads)


def _as_dask(x: Any, name: str) -> Any:
    if isinstance(x, da.Array):
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
        return x
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return da.from_array(arr)


def _flatten(items: Any) -> list[Any]:
    if isinstance(items, (list, tuple)):
        out: list[Any] = []
        for it in items:
            out.extend(_flatten(it))
        return out
    return [items]


# -- the reduction protocol of dask.array.reduction (concatenate=False) -----
def _lse_chunk(x: Any, axis: tuple[int, ...], keepdims: bool,
               computing_meta: bool = False, n_threads: int | None = 1, **_: Any) -> Any:
    if computing_meta:
        return x
    return LogSumExpState(axis=axis[0]).update(x, n_threads=n_threads)


def _lse_merge(states: Any) -> LogSumExpState:
    states = _flatten(states)
    merged: LogSumExpState = states[0].copy()
    for s in states[1:]:
        merged.merge(s)
    return merged


def _lse_combine(states: Any, axis: tuple[int, ...], keepdims: bool,
                 computing_meta: bool = False, **_: Any) -> Any:
    if computing_meta:
        return states
    return _lse_merge(states)


def _lse_aggregate(states: Any, axis: tuple[int, ...], keepdims: bool,
                   computing_meta: bool = False, out_dtype: Any = np.float64,
                   **_: Any) -> Any:
    if computing_meta:
        return np.empty((0,) * (states.ndim if keepdims else states.ndim - 1),
                        dtype=out_dtype)
    res = np.asarray(_lse_merge(states).result()).astype(out_dtype, copy=False)
    return np.expand_dims(res, axis) if keepdims else res


def logsumexp(x: Any, axis: int = -1, *, keepdims: bool = False,
              split_every: int | None = None, n_threads: int | None = 1) -> Any:
    """Log-sum-exp of a dask array along one axis (lazy).

    Parameters
    ----------
    x : dask.array.Array or array_like
        Chunked any way along any axis.
    axis : int, optional
        The axis to reduce (default -1).  One axis only.
    keepdims : bool, optional
        Keep the reduced axis with length one.
    split_every : int, optional
        Fan-in of the tree reduction over the chunks of ``axis``.
    n_threads : int or None, optional
        Threads for each block's kernel (default 1: Dask runs blocks in
        parallel already; None: :func:`lossmle.get_num_threads`).

    Returns
    -------
    dask.array.Array
        ``x``'s shape without ``axis``; float32 for float32 (and float16)
        input, float64 otherwise, as :func:`lossmle.logsumexp`.

    Notes
    -----
    Each block becomes a :class:`lossmle.LogSumExpState` (per row: running
    max ``m``, count ``c`` at it, ``s = sum exp(x - m)`` over the rest); the
    states of one row's blocks merge in a tree and ``log1p(s / c) + log(c) +
    m`` is taken at the end, so the result is the one-shot log-sum-exp to a
    few ulps, whatever the chunking.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from lossmle import dask as lmd
    >>> x = np.arange(12.0).reshape(3, 4)
    >>> lmd.logsumexp(da.from_array(x, chunks=(2, 2)), axis=-1).compute().round(6).tolist()
    [3.44019, 7.44019, 11.44019]
    """
    x = _as_dask(x, "x")
    ax, n_threads = _axis_and_threads(x, "x", axis, n_threads)
    out_dtype = _result_dtype(x.dtype)
    if x.shape[ax] == 0:
        shape = tuple(1 if d == ax else s for d, s in enumerate(x.shape)) if keepdims \
            else x.shape[:ax] + x.shape[ax + 1:]
        return da.full(shape, -np.inf, dtype=out_dtype)
    return _lse_reduction(x, ax, keepdims, split_every, n_threads, out_dtype)


def _lse_reduction(x: Any, ax: int, keepdims: bool, split_every: int | None,
                   n_threads: int | None, out_dtype: Any) -> Any:
    return da.reduction(
        x, partial(_lse_chunk, n_threads=n_threads),
        partial(_lse_aggregate, out_dtype=out_dtype), combine=_lse_combine, axis=ax,
        keepdims=keepdims, dtype=out_dtype, split_every=split_every,
        concatenate=False,
        meta=np.empty((0,) * (x.ndim - (0 if keepdims else 1)), dtype=out_dtype),
    )


def _target_logit_block(x: np.ndarray, t: np.ndarray, ax: int,
                        block_info: Any = None) -> np.ndarray:
    """x[..., t, ...] where t falls in this block's classes, else 0 (keepdims)."""
    lo, hi = block_info[0]["array-location"][ax]
    here = (t >= lo) & (t < hi)
    idx = np.expand_dims(np.where(here, t - lo, 0), ax)
    picked = np.take_along_axis(x, idx, axis=ax).astype(np.float64)
    return np.where(np.expand_dims(here, ax), picked, 0.0)


def cross_entropy(logits: Any, target: Any, axis: int = -1, *,
                  ignore_index: int = -100,
                  reduction: Literal["mean", "sum", "none"] = "mean",
                  split_every: int | None = None, n_threads: int | None = 1) -> Any:
    """Cross-entropy of class indices on dask logits (torch semantics), lazily.

    Parameters
    ----------
    logits : dask.array.Array or array_like
        Chunked along rows and/or classes.
    target : dask.array.Array or array_like of int
        Class indices shaped like ``logits`` without ``axis``; rechunked to
        match the rows of ``logits``.
    axis : int, optional
        The class axis (default -1).
    ignore_index : int, optional
        Rows with this target contribute neither loss nor count.
    reduction : {'mean', 'sum', 'none'}, optional
        As :func:`lossmle.cross_entropy`.
    split_every : int, optional
        Fan-in of the tree reductions.
    n_threads : int or None, optional
        Threads for each block's kernel, as in :func:`logsumexp`.

    Returns
    -------
    dask.array.Array
        0-d for 'mean'/'sum', the rows' shape for 'none'; float32 for float32
        (and float16) logits, float64 otherwise, as
        :func:`lossmle.cross_entropy`.  Accumulated in float64.

    Notes
    -----
    ``loss = logsumexp(x) - x[y]`` per row: the log-sum-exp is
    :func:`logsumexp` (streaming states merged over the class chunks) and
    ``x[y]`` is the sum over class chunks of the logit each chunk holds for
    its rows' targets (0 when the target is elsewhere).  A target outside
    ``[0, C)`` that is not ``ignore_index`` raises IndexError at compute time.
    """
    if not isinstance(reduction, str) or reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    x = _as_dask(logits, "logits")
    ax, n_threads = _axis_and_threads(x, "logits", axis, n_threads, " (the class axis)")
    out_dtype = _result_dtype(x.dtype)
    n_classes = x.shape[ax]
    if n_classes == 0:
        raise ValueError(f"logits has no classes: axis {axis} has length 0")
    t = target if isinstance(target, da.Array) else da.from_array(np.asarray(target))
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    rows_shape = x.shape[:ax] + x.shape[ax + 1:]
    if t.shape != rows_shape:
        raise ValueError(f"target has shape {t.shape}, but logits of shape {x.shape} "
                         f"need {rows_shape} (logits without axis {axis})")
    ignore = operator.index(ignore_index)
    row_chunks = x.chunks[:ax] + x.chunks[ax + 1:]
    t = t.astype(np.int64).rechunk(row_chunks)

    def check(tb: np.ndarray) -> np.ndarray:
        bad = ((tb < 0) | (tb >= n_classes)) & (tb != ignore)
        if bad.any():
            raise IndexError(
                f"target contains class index {int(tb[bad].flat[0])}, but logits have "
                f"{n_classes} classes along axis {axis}")
        return tb

    t = t.map_blocks(check, dtype=np.int64)
    kept = t != ignore
    safe_t = da.where(kept, t, 0)
    # one (rows..., 1, rows...) block per logits block, then summed over classes
    t_b = da.expand_dims(safe_t, ax)
    picked = da.map_blocks(
        lambda xb, tb, block_info=None: _target_logit_block(
            xb, np.squeeze(tb, ax), ax, block_info),
        x, t_b, dtype=np.float64, meta=np.empty((0,) * x.ndim), chunks=tuple(
            (1,) * len(c) if d == ax else c for d, c in enumerate(x.chunks)))
    target_logit = picked.sum(axis=ax, split_every=split_every)
    lse = _lse_reduction(x, ax, False, split_every, n_threads, np.float64)
    loss = da.where(kept, lse - target_logit, 0.0)
    if reduction == "none":
        return loss.astype(out_dtype)
    total = loss.sum(split_every=split_every)
    if reduction == "sum":
        return total.astype(out_dtype)
    return (total / kept.sum(split_every=split_every)).astype(out_dtype)


def kl_divergence(p: Any, q: Any, axis: int = -1, *, base: float | None = None,
                  validate: bool = True, split_every: int | None = None,
                  n_threads: int | None = 1) -> Any:
    """KL divergence ``sum p log(p / q)`` of dask arrays along one axis, lazily.

    Parameters
    ----------
    p, q : dask.array.Array or array_like
        Same shape; ``q`` is rechunked like ``p``.
    axis : int, optional
        The distribution axis (default -1).
    base : float, optional
        Logarithm base (default e).
    validate : bool, optional
        As :func:`lossmle.kl_divergence`: a negative or nan entry raises
        ValueError (at compute time).
    split_every : int, optional
        Fan-in of the tree sum over the chunks of ``axis``.
    n_threads : int or None, optional
        Threads for each block's kernel, as in :func:`logsumexp`.

    Returns
    -------
    dask.array.Array
        ``p``'s shape without ``axis``; float32 when both ``p`` and ``q`` are
        float32 (or float16), float64 otherwise, as
        :func:`lossmle.kl_divergence`.  Partial sums are float64.

    Notes
    -----
    KL is a sum of elementwise terms, so each block gives its partial sum
    with :func:`lossmle.kl_divergence` (``keepdims=True``) and the partial
    sums add up in a tree.
    """
    pp, qq = _as_dask(p, "p"), _as_dask(q, "q")
    if pp.shape != qq.shape:
        raise ValueError(f"p with shape {pp.shape} and q with shape {qq.shape} must "
                         f"have the same shape")
    ax, n_threads = _axis_and_threads(pp, "p", axis, n_threads)
    out_dtype = _result_dtype(pp.dtype, qq.dtype)
    qq = qq.rechunk(pp.chunks)
    partial_sums = da.map_blocks(
        lambda pb, qb: np.asarray(_kl_divergence(pb, qb, axis=ax, base=base, keepdims=True,
                                                 validate=validate, n_threads=n_threads),
                                  dtype=np.float64),
        pp, qq, dtype=np.float64, meta=np.empty((0,) * pp.ndim),
        chunks=tuple((1,) * len(c) if d == ax else c for d, c in enumerate(pp.chunks)))
    return partial_sums.sum(axis=ax, split_every=split_every).astype(out_dtype)
