"""Input normalisation shared by every public function.

Everything a kernel trusts is established here, once: a native-byte-order,
aligned float32/float64 array; axes as a tuple of non-negative ints; a
``(n_outer, n, n_inner)`` view whose middle axis is the one reduced; a thread
count.  Error messages name the argument: ``"<name> ..."``.
"""
import operator
from math import prod

import numpy as np

from . import _parallel

__all__ = [
    "as_float_array", "common_float_dtype", "normalize_axes", "rows_view",
    "alloc_transform_out", "reduced_shape", "resolve_threads",
    "set_num_threads", "get_num_threads", "check_out", "deliver",
]

# Below this many elements a kernel runs on one thread: OpenMP's start-up
# (~2 us) costs more than the work it would share.
PARALLEL_MIN_ELEMENTS = 1 << 17

# The most threads n_threads / set_num_threads accept.  OpenMP starts every
# thread it is asked for, and libgomp ends the process (no Python exception)
# when it cannot allocate or create them: n_threads=2**31-1 exited on
# "libgomp: Out of memory".  Results are the same for any thread count, so the
# ceiling only turns a likely typo into a ValueError; 1024 threads started in
# ~0.07 s here.
MAX_THREADS = 1024

_num_threads = None  # process-wide default set by set_num_threads


def _float_dtype_for(dtype, name):
    """The dtype lossmle computes in for an input of ``dtype``."""
    kind = dtype.kind
    if kind == "f":
        if dtype.itemsize == 8:
            return np.dtype(np.float64)
        if dtype.itemsize <= 4:
            return np.dtype(np.float32)  # float16 computes in (and returns) float32
        raise TypeError(
            f"{name} has dtype {dtype}; lossmle computes in float32 or float64, "
            f"convert it with .astype(np.float64)")
    if kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(f"{name} must be a real numeric array, got dtype {dtype}")


_NATIVE_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


def as_float_array(x, name, dtype=None):
    """``x`` as an aligned, native float32/float64 ndarray (no copy if it already is).

    ``dtype`` forces the result dtype (after checking that ``x`` is numeric).
    """
    # the common case first: a per-call budget of about a microsecond
    if (dtype is None and type(x) is np.ndarray and x.dtype in _NATIVE_FLOATS
            and x.flags.aligned):
        return x
    arr = np.asarray(x)
    target = _float_dtype_for(arr.dtype, name)
    if dtype is not None:
        target = dtype
    if arr.dtype != target:  # also catches non-native byte order
        return arr.astype(target)
    if not arr.flags.aligned:
        return arr.copy()
    return arr


def common_float_dtype(*arrays_and_names):
    """The float dtype two inputs compute in together (numpy promotion)."""
    dtypes = []
    for x, name in arrays_and_names:
        dtypes.append(_float_dtype_for(np.asarray(x).dtype, name))
    return np.result_type(*dtypes)


def _axis_index(axis, ndim, name):
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, a tuple of ints or None, got {axis!r}")
    try:
        ax = operator.index(axis)
    except TypeError:
        raise TypeError(
            f"{name} must be an int, a tuple of ints or None, got {axis!r}") from None
    if not -ndim <= ax < ndim:
        raise np.exceptions.AxisError(ax, ndim, name)
    return ax % ndim


def normalize_axes(axis, ndim, name="axis", allow_tuple=True):
    """``axis`` (None, int or tuple of ints) as a tuple of axes in [0, ndim)."""
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, fast
        return (axis % ndim,)
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        if not allow_tuple:
            raise TypeError(f"{name} must be an int, got {axis!r}")
        axes = tuple(_axis_index(a, ndim, name) for a in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"{name} contains a repeated axis: {axis!r}")
        return axes
    return (_axis_index(axis, ndim, name),)


def reduced_shape(shape, axes, keepdims):
    """Shape of a reduction of ``shape`` over ``axes``."""
    if len(axes) == 1 and not keepdims:
        return shape[:axes[0]] + shape[axes[0] + 1:]
    if keepdims:
        return tuple(1 if d in axes else s for d, s in enumerate(shape))
    return tuple(s for d, s in enumerate(shape) if d not in axes)


def rows_view(x, axes):
    """View ``x`` as ``(n_outer, n, n_inner)`` rows reduced over the middle axis.

    Returns ``(x3, perm)``.  One axis: a reshape, a view for any C-ordered
    array (perm is None).  Several axes: they are moved last (``perm`` is the
    transpose used) and flattened, which copies unless they already are last.
    """
    shape = x.shape
    if len(axes) == 1:
        ax = axes[0]
        return x.reshape(prod(shape[:ax]), shape[ax], prod(shape[ax + 1:])), None
    rest = [d for d in range(x.ndim) if d not in axes]
    perm = rest + sorted(axes)
    moved = x.transpose(perm)
    n_rest = len(rest)
    return moved.reshape(prod(moved.shape[:n_rest]), prod(moved.shape[n_rest:]), 1), perm


def alloc_transform_out(shape, x3_shape, perm, dtype):
    """Output for a same-shape transform: ``(out, out3)`` with out3 a view of out."""
    if perm is None:
        out = np.empty(shape, dtype=dtype)
        return out, out.reshape(x3_shape)
    moved = np.empty([shape[p] for p in perm], dtype=dtype)
    return moved.transpose(np.argsort(perm)), moved.reshape(x3_shape)


def set_num_threads(n_threads):
    """Set the process-wide default thread count of lossmle's kernels.

    Parameters
    ----------
    n_threads : int or None
        A number of threads from 1 to ``MAX_THREADS`` (1024), or None to go
        back to OpenMP's default (all cores, honouring ``OMP_NUM_THREADS`` and
        threadpoolctl limits).

    Examples
    --------
    >>> import lossmle
    >>> lossmle.set_num_threads(1)
    >>> lossmle.get_num_threads()
    1
    >>> lossmle.set_num_threads(None)   # back to OpenMP's default
    """
    global _num_threads
    _num_threads = None if n_threads is None else _check_n_threads(n_threads)


def get_num_threads():
    """The thread count a kernel uses when ``n_threads=None`` (above its size threshold).

    ``set_num_threads``' value if set, else OpenMP's default (``OMP_NUM_THREADS``,
    threadpoolctl limits) capped at ``MAX_THREADS``: libgomp cannot start
    100,000 threads and ends the process when asked to.

    Returns
    -------
    n_threads : int
        From 1 to ``MAX_THREADS`` (1024).

    Examples
    --------
    >>> import lossmle
    >>> 1 <= lossmle.get_num_threads() <= 1024
    True
    """
    if _num_threads is not None:
        return _num_threads
    return min(_parallel.max_threads(), MAX_THREADS)


def _check_n_threads(n_threads):
    if isinstance(n_threads, (bool, np.bool_)):
        raise TypeError(f"n_threads must be a positive int or None, got {n_threads!r}")
    try:
        n = operator.index(n_threads)
    except TypeError:
        raise TypeError(
            f"n_threads must be a positive int or None, got {n_threads!r}") from None
    if n < 1:
        raise ValueError(f"n_threads must be a positive int or None, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"n_threads must be at most {MAX_THREADS}, got {n}")
    return n


def resolve_threads(n_threads, n_elements):
    """Threads for a kernel over ``n_elements`` values (1 below the threshold)."""
    if n_threads is None:
        return 1 if n_elements < PARALLEL_MIN_ELEMENTS else get_num_threads()
    n = _check_n_threads(n_threads)
    return 1 if n_elements < PARALLEL_MIN_ELEMENTS else n


def check_out(out, shape, dtype, inputs, inplace_ok=False):
    """Validate a caller's ``out=`` buffer (None passes through).

    It must be a writable ndarray of exactly ``shape`` and ``dtype``, and share
    no memory with the ``(array, name)`` pairs in ``inputs`` - except, where
    ``inplace_ok``, by being that very array (same memory, shape and strides).
    """
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, but the result has shape {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, but the result has dtype {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    for x, name in inputs:
        if not isinstance(x, np.ndarray) or not np.may_share_memory(out, x):
            continue
        same = (inplace_ok and out.shape == x.shape and out.strides == x.strides
                and out.__array_interface__["data"][0] == x.__array_interface__["data"][0])
        if not same and np.shares_memory(out, x):
            raise ValueError(
                f"out overlaps {name} without being {name} itself"
                + (" (exact overlap, i.e. in place, is allowed)" if inplace_ok else ""))
    return out


def deliver(result, out):
    """Return ``result``, or copy it into ``out`` and return ``out``."""
    if out is None:
        return result
    np.copyto(out, result, casting="no")
    return out
