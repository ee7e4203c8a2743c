# Stub for the compiled module lossmle/_kernels/simd.pyx: the one compiled copy of the
# SIMD variants; kernel modules bind to TABLE_REF (see lm_simd.h).
from typing import Any

TABLE_REF: Any  # a PyCapsule named "lossmle._kernels.simd.table_ref"
SIMD_NAMES: tuple[str, ...]  # the LOSSMLE_SIMD values select() knows

def select() -> str: ...
