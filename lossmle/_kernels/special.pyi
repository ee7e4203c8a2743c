# Stub for the compiled module lossmle/_kernels/special.pyx (private kernels).
# Arrays are float32 or float64 (one dtype per call), already validated and
# viewed as (n_outer, n, n_inner) rows by the Python layer; outputs are written.
from typing import Any

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.floating[Any]]

def logsumexp_rows(a: _Floats, out: _Floats, n_threads: int) -> None: ...
def logsumexp_signed_rows(
    a: _Floats, b: _Floats, out: _Floats, sign: _Floats, return_sign: bool,
    n_threads: int,
) -> None: ...
def softmax_rows(x: _Floats, out: _Floats, n_threads: int) -> None: ...
def log_softmax_rows(x: _Floats, out: _Floats, n_threads: int) -> None: ...

SIMD_PATH: str
