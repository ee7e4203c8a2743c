"""The compiled layer: Cython kernels over memoryviews (fused float32/float64, nogil, OpenMP).

Each kernel trusts its input: the public modules above check every argument
(``lossmle._validation``) and reduce the rows (``lossmle._reduce``) first.
``rows.pxd`` / ``rowops.pxd`` hold the per-row inline helpers and ``simd.h`` the
vectorised row loops (one variant per instruction set, chosen at import).
"""
