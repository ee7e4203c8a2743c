"""The one compiled copy of lossmle's SIMD variants (see _simd.h).

Built with LM_SIMD_IMPLEMENT: this module instantiates the AVX-512, AVX2 and
baseline row primitives and selects one for this CPU; every kernel module
binds to its table through the capsule ``TABLE_REF`` (``simd_init()`` in
_rowops.pxd), so the heavy code is compiled once.
"""
from cpython.pycapsule cimport PyCapsule_New

cdef extern from "_simd.h":
    const char* lm_simd_select()
    const void* lm_simd_table_ref()


def select():
    """(Re)select the variant from the CPU and LOSSMLE_SIMD; returns its name."""
    return lm_simd_select().decode()


TABLE_REF = PyCapsule_New(<void*>lm_simd_table_ref(), b"lossmle._simd.table_ref", NULL)
select()
