# Stub for the compiled module lossmle/_kernels/streaming.pyx (private kernels).
# The state (m, c, s) is three flat float64 arrays, one entry per row.
from typing import Any

import numpy as np
from numpy.typing import NDArray

_F64 = NDArray[np.float64]

def update_rows(
    x: NDArray[np.floating[Any]], m: _F64, c: _F64, s: _F64, n_threads: int,
) -> None: ...
def merge_rows(m: _F64, c: _F64, s: _F64, m2: _F64, c2: _F64, s2: _F64) -> None: ...
def result_rows(m: _F64, c: _F64, s: _F64, out: _F64) -> None: ...
