"""The one compiled copy of lossmle's SIMD variants (see lm_simd.h).

Built with LM_SIMD_IMPLEMENT: this module instantiates the AVX-512, AVX2 and
baseline row primitives and selects one for this CPU; every kernel module
binds to its table through the capsule ``TABLE_REF`` (``simd_init()`` in
rowops.pxd), so the heavy code is compiled once.
"""
from cpython.pycapsule cimport PyCapsule_New

cdef extern from "lm_simd.h":
    const char* lm_simd_select()
    const void* lm_simd_table_ref()


# what lm_simd_select understands (scalar: baseline's other name)
SIMD_NAMES = ("avx512", "avx2", "baseline", "scalar")


def select():
    """(Re)select the variant from the CPU and LOSSMLE_SIMD; returns its name.

    A value it does not know (a typo, another case) selects as if unset: the
    warning says so, rather than leaving a test run on the wrong path."""
    import os
    want = os.environ.get("LOSSMLE_SIMD", "")
    name = lm_simd_select().decode()
    if want and want not in SIMD_NAMES:
        import warnings
        warnings.warn(f"LOSSMLE_SIMD={want!r} is not one of {', '.join(SIMD_NAMES)}: "
                      f"ignored, using {name}", RuntimeWarning, stacklevel=2)
    return name


TABLE_REF = PyCapsule_New(<void*>lm_simd_table_ref(), b"lossmle._kernels.simd.table_ref", NULL)
select()
