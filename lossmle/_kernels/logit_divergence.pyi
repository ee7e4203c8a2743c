# Stub for the compiled module lossmle/_kernels/logit_divergence.pyx (private kernels).
# Row views are (n_outer, n, n_inner) float32/float64 arrays, BCE views 2-D;
# class targets int64 (n_outer, n_inner); masks uint8; per-row results float64.
from typing import Any

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.floating[Any]]
_F64 = NDArray[np.float64]
_Mask = NDArray[np.uint8]
_Targets = NDArray[np.int64]

def entropy_logits_rows(
    x: _Floats, inv_t: float, cap: float, out: _F64, n_threads: int,
) -> None: ...
def kl_logits_rows(
    p: _Floats, q: _Floats, inv_t: float, cap: float, out: _F64,
    grad_q: _Floats | None, grad_p: _Floats | None, grad_scale: float, n_threads: int,
) -> None: ...
def js_logits_rows(
    p: _Floats, q: _Floats, inv_t: float, cap: float, out: _F64, n_threads: int,
) -> None: ...
