"""The reduction layer: per-position float64 values -> a result of the input dtype.

Every loss and divergence computes one float64 value per position (a row of
the class axis) and reduces them here, so that one operation gives the same
bits whatever entry point computed it:

* ``total``: the sum of the values, NumPy's pairwise summation in blocks of
  256 then over the block totals (``_kernels.losses.pairwise_total``; the fast
  path and the blocked cross-entropy kernels run the same definition);
* ``to_dtype``: a float as a NumPy scalar of the result dtype; float32
  overflows to inf quietly, as torch's losses do;
* ``reduce_rows``: 'none' (the values, shaped and cast), 'sum', or a mean over
  a denominator the caller defines ('mean', 'batchmean').
"""
import math

import numpy as np

from ._kernels import losses as _loss_kernels

__all__ = ["total", "to_dtype", "reduce_rows"]

# float32 overflows at FLT_MAX + half an ulp
_F32_OVERFLOW = 3.4028235677973366e38


def total(values):
    """The pairwise sum of float64 ``values`` (any shape) as a Python float."""
    return _loss_kernels.pairwise_total(
        np.ascontiguousarray(values, dtype=np.float64).reshape(-1))


def to_dtype(value, dtype):
    """A Python float as a NumPy scalar of ``dtype``; float32 overflow gives inf quietly."""
    if dtype == np.float32 and abs(value) >= _F32_OVERFLOW:
        return np.float32(math.copysign(math.inf, value))
    return dtype.type(value)


def reduce_rows(rows, dtype, shape, reduction, denom):
    """'none': ``rows`` shaped ``shape`` in ``dtype``; 'sum': their total;
    otherwise the total divided by ``denom`` (a 0 / 0 mean is nan)."""
    if reduction == "none":
        # values near the float range overflow to inf quietly, as torch's do
        with np.errstate(over="ignore"):
            out = rows.reshape(shape).astype(dtype)
        return out[()] if out.ndim == 0 else out
    value = total(rows)
    if reduction != "sum":
        with np.errstate(invalid="ignore", divide="ignore"):
            value = value / denom if denom != 0 else (
                math.nan if value == 0 or value != value else math.copysign(math.inf, value))
    return to_dtype(value, dtype)
