"""LogSumExpState: a mergeable log-sum-exp over a class axis that arrives in chunks."""
from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels import streaming as _k
from ._validation import as_float_array, normalize_axes, resolve_threads, rows_view

__all__ = ["LogSumExpState"]


class LogSumExpState:
    """Running log-sum-exp per row, fed with chunks of the class axis.

    Equal, up to rounding of a few ulps, to the one-shot
    :func:`lossmle.logsumexp` (and :func:`scipy.special.logsumexp`) of the
    concatenated chunks, without ever holding them together: for a
    vocabulary split into shards, logits spread over files, or partial
    results computed on different workers and merged in a tree.

    Parameters
    ----------
    axis : int, optional
        The class axis of every chunk (default -1, the last).  A chunk's
        other axes are the rows: their shape, the *row shape*, must be the
        same for every chunk.
    shape : tuple of ints, optional
        The row shape, when known before the first chunk (then ``result()``
        of a state that saw no chunk is ``-inf``, the log of an empty sum).
        Otherwise the first chunk sets it.

    Attributes
    ----------
    axis : int
        As given.
    shape : tuple of ints or None
        The row shape (None until known).
    n_classes : int
        How many class values each row has seen (over chunks and merges).

    Notes
    -----
    Per row the state holds, in float64, a running maximum ``m`` of its
    terms, the number ``c`` of terms equal to it and ``s``, the sum of
    ``exp(t - m)`` over the other terms ``t``;
    ``result() = log1p(s / c) + log(c) + m``, the one-shot formula with the
    maximal terms kept out of the sum.  Each chunk row enters as one term,
    its own log-sum-exp (the compiled one-shot kernel), so one chunk gives
    exactly the one-shot value.  A term above ``m`` rescales the others,
    ``s <- s_new + (s + c) * exp(m - M)`` (a factor never above 1, so
    nothing overflows); :meth:`merge` combines two states the same way, so
    partial states can be merged in any order (a tree reduction).  Special
    values follow scipy: a nan makes the row nan, +inf gives +inf, only -inf
    gives -inf.

    The state is three float64 arrays of the row shape: it pickles (to send
    it to another process) and ``copy()`` is cheap.

    Examples
    --------
    A class axis of 10 values arriving in chunks of 3, 3 and 4:

    >>> import numpy as np
    >>> from lossmle import LogSumExpState, logsumexp
    >>> x = np.linspace(-5.0, 5.0, 20).reshape(2, 10)
    >>> state = LogSumExpState()
    >>> for chunk in (x[:, :3], x[:, 3:6], x[:, 6:]):
    ...     _ = state.update(chunk)
    >>> bool(np.allclose(state.result(), logsumexp(x, axis=-1), rtol=1e-15))
    True

    Two workers' partial states merge into one:

    >>> left = LogSumExpState().update(x[:, :5])
    >>> right = LogSumExpState().update(x[:, 5:])
    >>> bool(np.allclose(left.merge(right).result(), logsumexp(x, axis=-1), rtol=1e-15))
    True
    """

    __slots__ = ("_axis", "_shape", "_m", "_c", "_s", "_n_classes")

    def __init__(self, axis: int = -1, shape: tuple[int, ...] | None = None) -> None:
        if isinstance(axis, (bool, np.bool_)):
            raise TypeError(f"axis must be an int, got {axis!r}")
        try:
            self._axis = operator.index(axis)
        except TypeError:
            raise TypeError(f"axis must be an int, got {axis!r}") from None
        self._shape: tuple[int, ...] | None = None
        # (m, c, s) per row, flat in the C order of the row shape; empty
        # until the row shape is known
        self._m: NDArray[np.float64] = np.empty(0)
        self._c: NDArray[np.float64] = np.empty(0)
        self._s: NDArray[np.float64] = np.empty(0)
        self._n_classes = 0
        if shape is not None:
            self._init_rows(_check_shape(shape))

    # -- state ------------------------------------------------------------
    def _init_rows(self, shape: tuple[int, ...]) -> None:
        n_rows = _row_count(shape, "shape")
        self._shape = shape
        self._m = np.full(n_rows, -np.inf)
        self._c = np.zeros(n_rows)
        self._s = np.zeros(n_rows)

    @property
    def axis(self) -> int:
        return self._axis

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self._shape

    @property
    def n_classes(self) -> int:
        return self._n_classes

    def _check_rows(self, shape: tuple[int, ...], what: str) -> None:
        if self._shape is None:
            self._init_rows(shape)
        elif shape != self._shape:
            raise ValueError(
                f"{what} has rows of shape {shape}, but this state holds rows of "
                f"shape {self._shape}")

    # -- operations -------------------------------------------------------
    def update(self, chunk: ArrayLike, *, n_threads: int | None = None) -> LogSumExpState:
        """Add the values of ``chunk`` (some classes of every row) to the state.

        Parameters
        ----------
        chunk : array_like
            Values with the class axis at ``axis``; its other axes (the row
            shape) must match earlier chunks.  float32 and float64 are read
            as they are (a float32 chunk's own log-sum-exp is as precise as
            the float32 one-shot function's, a float64 one's to an ulp or
            two), integers as float64; the state is float64.  A chunk with no
            classes (length 0 along ``axis``) changes nothing.
        n_threads : int or None, optional
            Threads for large chunks (None: :func:`lossmle.get_num_threads`).

        Returns
        -------
        LogSumExpState
            ``self``, updated in place.
        """
        x = as_float_array(chunk, "chunk")
        if x.ndim == 0:
            raise ValueError("chunk must have at least one dimension (the class axis)")
        (ax,) = normalize_axes(self._axis, x.ndim, allow_tuple=False)
        rows = x.shape[:ax] + x.shape[ax + 1:]
        n_threads = resolve_threads(n_threads, x.size)   # checked on empty chunks too
        self._check_rows(rows, "chunk")
        if x.shape[ax] == 0 or x.size == 0:
            return self
        x3, _ = rows_view(x, (ax,))
        _k.update_rows(x3, self._m, self._c, self._s, n_threads)
        self._n_classes += x.shape[ax]
        return self

    def merge(self, other: LogSumExpState) -> LogSumExpState:
        """Merge another state (over other classes of the same rows) into this one.

        Parameters
        ----------
        other : LogSumExpState
            A state with the same row shape (or none yet); it is not changed.

        Returns
        -------
        LogSumExpState
            ``self``, now the state of the classes of both.
        """
        if not isinstance(other, LogSumExpState):
            raise TypeError(
                f"other must be a LogSumExpState, got {type(other).__name__}")
        if other._shape is None:
            return self
        self._check_rows(other._shape, "other")
        if other is self:
            other = other.copy()
        _k.merge_rows(self._m, self._c, self._s, other._m, other._c, other._s)
        self._n_classes += other._n_classes
        return self

    def result(self) -> NDArray[np.float64] | np.float64:
        """The log-sum-exp of every row over all classes seen so far.

        Returns
        -------
        ndarray or numpy.float64
            float64, shaped like the rows (a scalar for rows of shape ``()``);
            ``-inf`` for rows that saw no class.

        Raises
        ------
        ValueError
            If the row shape is not known yet (no chunk, no ``shape``).
        """
        if self._shape is None:
            raise ValueError(
                "this LogSumExpState has seen no chunk and was given no shape, "
                "so its row shape is unknown")
        out = np.empty(self._m.shape[0])
        _k.result_rows(self._m, self._c, self._s, out)
        res = out.reshape(self._shape)
        return res[()] if res.ndim == 0 else res

    def copy(self) -> LogSumExpState:
        """An independent copy of the state.

        Returns
        -------
        LogSumExpState
            A new state with the same rows, classes seen and values.
        """
        new = LogSumExpState(self._axis)
        new.__setstate__(self.__getstate__())
        return new

    # -- pickling (slots) ---------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "axis": self._axis, "shape": self._shape, "n_classes": self._n_classes,
            "m": self._m.copy(), "c": self._c.copy(), "s": self._s.copy(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A state crosses process boundaries (pickle, Dask): the kernels
        # trust its arrays, so everything is checked here, where it is
        # rebuilt, and the arrays are the state's own copies.
        axis, shape, n_classes, m, c, s = _check_state(state)
        self._axis, self._shape, self._n_classes = axis, shape, n_classes
        self._m, self._c, self._s = m, c, s

    def __repr__(self) -> str:
        return (f"LogSumExpState(axis={self._axis}, shape={self._shape}, "
                f"n_classes={self._n_classes})")


_STATE_KEYS = ("axis", "shape", "n_classes", "m", "c", "s")


def _check_state(state: Any) -> tuple[int, tuple[int, ...] | None, int,
                                      NDArray[np.float64], NDArray[np.float64],
                                      NDArray[np.float64]]:
    """A pickled LogSumExpState's fields, checked, with arrays of its own.

    Raises TypeError / ValueError for anything ``__getstate__`` would not
    have produced: a state is data from outside, never trusted.
    """
    if not isinstance(state, dict):
        raise TypeError(f"a LogSumExpState's state must be a dict, got {type(state).__name__}")
    if set(state) != set(_STATE_KEYS):
        raise ValueError(f"a LogSumExpState's state has the keys {sorted(_STATE_KEYS)}, "
                         f"got {sorted(map(repr, state))}")
    axis = state["axis"]
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"state axis must be an int, got {axis!r}")
    shape = None if state["shape"] is None else _check_shape(state["shape"], "state shape")
    n_classes = state["n_classes"]
    if (isinstance(n_classes, (bool, np.bool_))
            or not isinstance(n_classes, (int, np.integer)) or n_classes < 0):
        raise ValueError(f"state n_classes must be a non-negative int, got {n_classes!r}")
    if shape is None and n_classes != 0:
        raise ValueError(f"state n_classes must be 0 for a state without rows, got "
                         f"{n_classes!r}")
    n_rows = 0 if shape is None else _row_count(shape, "state shape")
    arrays = []
    for name in ("m", "c", "s"):
        a = state[name]
        if not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.shape != (n_rows,):
            got = (f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray)
                   else type(a).__name__)
            raise ValueError(f"state {name} must be a float64 array of shape ({n_rows},) "
                             f"(the rows of shape {shape}), got {got}")
        arrays.append(np.array(a, dtype=np.float64, order="C", copy=True))
    m, c, s = arrays
    # counts and rescaled sums are finite and >= 0; a row with a finite
    # maximum has counted it at least once (nan would compare False: refused)
    # c counts terms and s sums terms below 1, so both are at most the number
    # of terms merged: beyond 2**53 (where counts stop being exact) a state is
    # not one __getstate__ made, and s + c could overflow in a merge
    if not (np.all(c >= 0) and np.all(c <= _MAX_TERMS) and np.all(c == np.floor(c))):
        raise ValueError("state c (counts of the maximal terms) must hold whole numbers "
                         "from 0 to 2**53")
    if not (np.all(s >= 0) and np.all(s <= _MAX_TERMS)):
        raise ValueError("state s (rescaled sums) must be finite, from 0 to 2**53")
    if np.any(np.isfinite(m) & (c < 1)):
        raise ValueError("state c must be >= 1 where the maximum m is finite")
    return int(axis), shape, int(n_classes), m, c, s


_MAX_TERMS = float(2**53)


def _row_count(shape: tuple[int, ...], name: str) -> int:
    """The number of rows of a row shape, refused when no array could hold them."""
    n_rows = math.prod(shape)
    if n_rows > np.iinfo(np.intp).max // 8:
        raise ValueError(f"{name} {shape} has {n_rows} rows, more than an array can hold")
    return n_rows


def _check_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)):
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}")
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"{name} must hold non-negative ints, got {shape!r}")
    if any(isinstance(d, (bool, np.bool_)) for d in shape):
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}")
    return dims
