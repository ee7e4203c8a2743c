"""Input normalisation shared by every public function.

Everything a kernel trusts is established here, once: a native-byte-order,
aligned float32/float64 array; axes as a tuple of non-negative ints; a
``(n_outer, n, n_inner)`` view whose middle axis is the one reduced; a thread
count.  Error messages name the argument: ``"<name> ..."``.
"""
import math
import numbers
import operator
from math import prod

import numpy as np

from ._threads import (  # noqa: F401  (re-exported: the argument layer's names)
    MAX_THREADS, PARALLEL_MIN_ELEMENTS, get_num_threads, resolve_threads, set_num_threads,
)

__all__ = [
    "as_float_array", "common_float_dtype", "normalize_axes", "single_axis", "rows_view",
    "alloc_transform_out", "reduced_shape", "resolve_threads",
    "set_num_threads", "get_num_threads", "check_output", "output_view", "finish_output",
    "item_strided", "deliver", "check_real", "check_positive", "check_base",
    "check_temperature", "check_label_smoothing", "check_reduction", "check_int",
    "check_ignore_index", "check_output_kind", "class_axis", "same_shape_pair",
    "check_class_weight", "check_sample_weight", "check_where", "class_targets",
    "checked_output",
]



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


def single_axis(axis, ndim, name="axis"):
    """One axis (an int, never None or a tuple) as an index in [0, ndim)."""
    if axis is None or isinstance(axis, (tuple, list)):
        raise TypeError(f"{name} must be an int, got {axis!r}")
    return _axis_index(axis, ndim, name)


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


def _exact_alias(a, b):
    """Same memory, dtype, shape and strides: element k of one is element k of the other."""
    return (a is b or a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
            and a.ctypes.data == b.ctypes.data)


def _overlaps(buf, arr):
    if not np.may_share_memory(buf, arr):
        return False
    try:
        return np.shares_memory(buf, arr, max_work=10_000)
    except np.exceptions.TooHardError:   # too costly to prove apart: refuse
        return True


def item_strided(a):
    """True when the kernels may index ``a`` in elements: an aligned array whose
    byte strides are whole multiples of its item size (a field of a structured
    array, ``stride 12`` for float64, is not)."""
    item = a.itemsize
    return a.flags.aligned and all(s % item == 0 for s in a.strides)


def _overlaps_itself(buf):
    """True when two elements of ``buf`` share memory: a zero stride on an axis
    longer than 1, or (pigeonhole) fewer bytes spanned than its elements need.
    Other self-overlapping stride patterns (rare, and only from as_strided)
    are not detected."""
    if buf.size <= 1 or buf.flags.c_contiguous or buf.flags.f_contiguous:
        return False
    if any(st == 0 and n > 1 for st, n in zip(buf.strides, buf.shape)):
        return True
    span = sum(abs(st) * (n - 1) for st, n in zip(buf.strides, buf.shape)) + buf.itemsize
    return span < buf.size * buf.itemsize


def check_output_kind(buf, name):
    """An output buffer is None or an ndarray: the first check, before any
    other argument is looked at (so a list is a TypeError on every path)."""
    if buf is not None and not isinstance(buf, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray or None, got {type(buf).__name__}")


def check_output(buf, name, shape, dtype, inputs, inplace=()):
    """The one rule for a caller's output buffer (``out=``, ``grad_out=``, ...).

    ``buf`` (None passes through) must be a writable ndarray of exactly
    ``shape`` and ``dtype`` that shares no memory with any ``(array, name)``
    pair of ``inputs`` (non-arrays and None are skipped); pass every array
    the call reads, as given and as converted, so no input can be forgotten.
    Where an input's name is in ``inplace`` (documented in-place use), ``buf``
    may be that very array (same memory, dtype, shape and strides), never a
    partial overlap.  Odd strides are allowed: see :func:`output_view`.
    """
    if buf is None:
        return None
    check_output_kind(buf, name)
    if buf.shape != tuple(shape):
        raise ValueError(f"{name} has shape {buf.shape}, but the result has shape "
                         f"{tuple(shape)}")
    if buf.dtype != dtype:
        raise TypeError(f"{name} has dtype {buf.dtype}, but the result has dtype {dtype} "
                        f"(the computation dtype)")
    if not buf.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if _overlaps_itself(buf):
        raise ValueError(f"{name} overlaps itself (a zero or overlapping stride): one "
                         f"element would hold several results")
    for arr, arr_name in inputs:
        if not isinstance(arr, np.ndarray) or not np.may_share_memory(buf, arr):
            continue
        if arr_name in inplace and _exact_alias(buf, arr):
            continue
        if _overlaps(buf, arr):
            raise ValueError(
                f"{name} overlaps {arr_name}"
                + (f" without being {arr_name} itself (exactly {arr_name}, i.e. in place, "
                   f"is allowed)" if arr_name in inplace else ""))
    return buf


def output_view(buf, shape, dtype, view_shape):
    """What a kernel writes for a checked output ``buf``: ``(result, view, scratch)``.

    ``buf`` None: a fresh C-ordered array.  Else ``view`` is ``buf`` reshaped
    to ``view_shape`` without a copy when the kernels may index it in
    elements (:func:`item_strided`), or a scratch array that
    :func:`finish_output` copies into ``buf`` (``scratch`` is then not None).
    """
    if buf is None:
        out = np.empty(shape, dtype=dtype)
        return out, out.reshape(view_shape), None
    if item_strided(buf):
        # reshape gives a view where one exists, else a copy (a new allocation,
        # which cannot share memory with buf); copy=False would say the same but
        # needs NumPy >= 2.1, and lossmle supports NumPy >= 1.25
        view = buf.reshape(view_shape)
        if np.may_share_memory(view, buf):
            return buf, view, None
    scratch = np.empty(shape, dtype=dtype)
    return buf, scratch.reshape(view_shape), scratch


def finish_output(buf, scratch):
    """Copy a scratch result into the caller's buffer; return the buffer."""
    if scratch is not None:
        np.copyto(buf, scratch)
    return buf


def deliver(result, out, inputs=None, inplace=()):
    """Return ``result``, or copy it into ``out`` and return ``out``.

    With ``inputs`` (the call's ``(array, name)`` pairs) ``out`` is checked
    first by :func:`check_output` against the result's shape and dtype: for
    paths that know them only once the result is computed.
    """
    if out is None:
        return result
    if inputs is not None:
        result = np.asarray(result)
        check_output(out, "out", result.shape, result.dtype, inputs, inplace)
    np.copyto(out, result, casting="no")
    return out


# ---------------------------------------------------------------------------
# Scalar arguments: one check per shared keyword, one message shape
# ---------------------------------------------------------------------------
_INT64 = np.iinfo(np.int64)


def check_real(value, name, what):
    """``value`` as a Python float: a real number (int, float, NumPy real
    scalar or 0-d array), never a bool or a string (float("0.1") would
    accept one).  ``what`` completes the TypeError: "name must be <what>"."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    try:
        return float(value)
    except OverflowError:   # an int or Fraction beyond the float range
        raise ValueError(f"{name} must be finite in float64, got {value!r}") from None


def check_positive(value, name, allow_none=False):
    """A finite float > 0 (None gives 0.0 where ``allow_none``: "off")."""
    if value is None and allow_none:
        return 0.0
    v = check_real(value, name, "a positive float")
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite float, got {value!r}")
    return v


def check_temperature(temperature):
    """``1 / temperature`` for a finite temperature > 0 whose inverse is finite."""
    t = check_positive(temperature, "temperature")
    inv_t = 1.0 / t
    if not math.isfinite(inv_t):
        smallest = float(1.0 / np.finfo(np.float64).max)
        raise ValueError(f"temperature must be at least {smallest!r} (its inverse "
                         f"scales the logits), got {temperature!r}")
    return inv_t


def check_base(base):
    """None (natural log) or a finite float > 0 other than 1."""
    if base is None:
        return None
    # SciPy's wording ("`base` must be a positive number"), which its tests match
    b = check_real(base, "`base`", "a positive number or None")
    if not (b > 0 and math.isfinite(b)) or b == 1.0:
        raise ValueError(f"`base` must be a positive number, finite and not 1 "
                         f"(log(1) == 0), got {base!r}")
    return b


def check_label_smoothing(label_smoothing):
    """A float in [0, 1], as torch (no strings)."""
    if type(label_smoothing) in (float, int) and label_smoothing == 0.0:
        return 0.0
    eps = check_real(label_smoothing, "label_smoothing", "a float in [0, 1]")
    if not 0.0 <= eps <= 1.0:  # also rejects nan
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return eps


def check_reduction(reduction, allowed):
    """One of the names in ``allowed``."""
    if not isinstance(reduction, str) or reduction not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"reduction must be one of {names}, got {reduction!r}")
    return reduction


def check_int(value, name):
    """An int (operator.index: NumPy integers too), never a bool."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None


def check_ignore_index(ignore_index):
    """An int that fits int64 (the kernels' class-index type)."""
    if type(ignore_index) is int and _INT64.min <= ignore_index <= _INT64.max:
        return ignore_index
    v = check_int(ignore_index, "ignore_index")
    if not _INT64.min <= v <= _INT64.max:
        raise ValueError(f"ignore_index must fit in int64, got {v}")
    return v


# ---------------------------------------------------------------------------
# Array arguments shared by the losses and divergences
# ---------------------------------------------------------------------------
def class_axis(x, axis, name):
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis)")
    (ax,) = normalize_axes(axis, x.ndim, allow_tuple=False)
    if x.shape[ax] == 0:
        raise ValueError(f"{name} has no classes: axis {axis} has length 0")
    return ax


def same_shape_pair(a, b, a_name, b_name):
    dtype = common_float_dtype((a, a_name), (b, b_name))
    a = as_float_array(a, a_name, dtype)
    b = as_float_array(b, b_name, dtype)
    if a.shape != b.shape:
        raise ValueError(f"{a_name} with shape {a.shape} and {b_name} with shape "
                         f"{b.shape} must have the same shape")
    return a, b


def check_class_weight(weight, n_classes):
    if weight is None:
        return None
    w = as_float_array(weight, "weight", np.dtype(np.float64))
    if w.shape != (n_classes,):
        raise ValueError(f"weight must be a 1-D array of length {n_classes} (the number "
                         f"of classes), got shape {w.shape}")
    if not np.all(np.isfinite(w)):  # any finite weight, negative too, as torch
        raise ValueError("weight must hold finite class weights (no nan or inf)")
    return np.ascontiguousarray(w)


def check_sample_weight(sample_weight, shape, name="sample_weight"):
    """Per-position weights as float64, broadcast to ``shape`` (finite, >= 0)."""
    if sample_weight is None:
        return None
    sw = as_float_array(sample_weight, name, np.dtype(np.float64))
    try:
        sw = np.broadcast_to(sw, shape)
    except ValueError:
        raise ValueError(f"{name} with shape {sw.shape} cannot be broadcast to "
                         f"{shape}") from None
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError(f"{name} must hold finite, non-negative weights")
    return sw


def check_where(where, shape):
    """A boolean mask broadcast to ``shape`` (a view when possible)."""
    w = np.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {w.dtype}")
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"where with shape {w.shape} cannot be broadcast to "
                         f"{shape}") from None


def class_targets(target, x_shape, ax, n_classes, ignore_index, x_name):
    """Integer class indices as an int64 (n_outer, n_inner) array, checked."""
    target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    expected = x_shape[:ax] + x_shape[ax + 1:]
    if target.shape != expected:
        raise ValueError(f"target holds class indices with shape {target.shape}, but "
                         f"{x_name} needs shape {expected} ({x_name} without its "
                         f"class axis)")
    if target.dtype.kind == "u" and target.size and target.max() > _INT64.max:
        raise IndexError(f"target contains class index {int(target.max())}, out of range")
    t = target.astype(np.int64, copy=False)
    bad = ((t < 0) | (t >= n_classes)) & (t != ignore_index)
    if bad.any():
        label = int(t[bad].flat[0])
        raise IndexError(f"target contains class index {label}, but {x_name} have "
                         f"{n_classes} classes along axis {ax} (valid: 0..{n_classes - 1} "
                         f"or ignore_index={ignore_index})")
    n_outer = math.prod(x_shape[:ax])
    return t.reshape(n_outer, math.prod(x_shape[ax + 1:]))




def checked_output(buf, name, shape, dtype, view_shape, inputs, inplace=()):
    """check_output then output_view: ``(result, kernel view, scratch)``."""
    check_output(buf, name, shape, dtype, inputs, inplace)
    return output_view(buf, shape, dtype, view_shape)


