# Stub for the compiled module lossmle/_kernels/losses.pyx (private kernels).
# logits are (n_outer, n_classes, n_inner) float32/float64 views; class
# targets int64 (n_outer, n_inner); losses and row weights float64.
from typing import Any

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.floating[Any]]

def check_class_indices(
    target: NDArray[np.int64], n_classes: int, ignore_index: int, n_threads: int = ...,
) -> int: ...
def cross_entropy_class_total(
    logits: _Floats, target: NDArray[np.int64], weight: NDArray[np.float64] | None,
    ignore_index: int, label_smoothing: float, n_threads: int,
) -> tuple[float, float] | None: ...
def cross_entropy_class_rows(
    logits: _Floats, target: NDArray[np.int64], weight: NDArray[np.float64] | None,
    ignore_index: int, label_smoothing: float, loss: NDArray[np.float64],
    row_weight: NDArray[np.float64], grad: _Floats | None, grad_scale: float,
    n_threads: int,
) -> None: ...
def cross_entropy_prob_rows(
    logits: _Floats, target: _Floats, weight: NDArray[np.float64] | None,
    label_smoothing: float, loss: NDArray[np.float64], grad: _Floats | None,
    grad_scale: float, n_threads: int,
) -> None: ...
def nll_rows(
    log_probs: _Floats, target: NDArray[np.int64], weight: NDArray[np.float64] | None,
    ignore_index: int, loss: NDArray[np.float64], row_weight: NDArray[np.float64],
    n_threads: int,
) -> None: ...
def pairwise_total(a: NDArray[np.float64]) -> float: ...

SIMD_PATH: str
