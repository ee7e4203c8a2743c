# Stub for the compiled module lossmle/_kernels/training.pyx (private kernels).
# Row views are (n_outer, n, n_inner) float32/float64 arrays, BCE views 2-D;
# class targets int64 (n_outer, n_inner); masks uint8; per-row results float64.
from typing import Any

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.floating[Any]]
_F64 = NDArray[np.float64]
_Mask = NDArray[np.uint8]
_Targets = NDArray[np.int64]

def bce_logits_rows(
    x: _Floats, t: _Floats, weight: _Floats | None, pos_weight: _Floats | None,
    sample_weight: _Floats | None, loss: _Floats | None, row_loss: _F64,
    grad: _Floats | None, grad_scale: float, n_threads: int,
) -> None: ...
def softmax_backward_rows(g: _Floats, y: _Floats, out: _Floats, n_threads: int) -> None: ...
def log_softmax_backward_rows(
    g: _Floats, z: _Floats, out: _Floats, n_threads: int,
) -> None: ...
def masked_lse_rows(x: _Floats, mask: _Mask, out: _Floats, n_threads: int) -> None: ...
def masked_softmax_rows(
    x: _Floats, mask: _Mask, out: _Floats, log_space: bool, n_threads: int,
) -> None: ...
def cross_entropy_ex_rows(
    logits: _Floats, target: _Targets, weight: _F64 | None, sample_weight: _F64 | None,
    mask: _Mask | None, ignore_index: int, label_smoothing: float, cap: float,
    loss: _F64, row_weight: _F64, grad: _Floats | None, grad_scale: float,
    n_threads: int,
) -> None: ...
def nll_ex_rows(
    log_probs: _Floats, target: _Targets, weight: _F64 | None,
    sample_weight: _F64 | None, ignore_index: int, loss: _F64, row_weight: _F64,
    grad: _Floats | None, grad_scale: float, n_threads: int,
) -> None: ...
def evaluate_rows(
    logits: _Floats, target: _Targets, ignore_index: int, cap: float, nll: _F64,
    entropy: _F64, lse_out: _F64, rank: _Targets, n_threads: int,
) -> None: ...
