"""The compiled layer: Cython kernels over memoryviews (fused float32/float64, nogil, OpenMP).

Each kernel trusts its input: the public modules above check every argument
(``lossmle._validation``) and reduce the rows (``lossmle._reduce``) first.
The per-row inline helpers are in ``rowops.pxd`` (also the public cimport
surface), ``rows.pxd`` (how rows are walked), ``loss_rows.pxd`` and
``divergence_rows.pxd``; ``lm_simd.h`` holds the vectorised row loops, one
variant per instruction set, chosen at import.
"""
