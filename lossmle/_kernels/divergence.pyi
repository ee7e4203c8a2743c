# Stub for the compiled module lossmle/_kernels/divergence.pyx (private kernels).
# Inputs are (n_outer, n, n_inner) float32/float64 views, outputs (n_outer, n_inner).
from typing import Any

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.floating[Any]]

def kl_rows(
    p: _Floats, q: _Floats, out: _Floats, validate: bool, n_threads: int,
) -> int: ...
def entropy_rows(pk: _Floats, out: _Floats, n_threads: int) -> None: ...
def relative_entropy_rows(
    pk: _Floats, qk: _Floats, out: _Floats, n_threads: int,
) -> None: ...
def kl_div_flat(
    x: _Floats, t: _Floats, terms: _Floats | None, grad: _Floats | None,
    grad_scale: float, log_target: bool, want_total: bool, n_threads: int,
) -> float: ...

SIMD_PATH: str
