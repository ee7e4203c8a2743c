# The public Cython (C-level) API of lossmle:
#
#     from lossmle cimport row_logsumexp, row_softmax
#     cimport lossmle            # then lossmle.row_logsumexp(...)
#
# Everything here is a ``cdef inline`` row helper re-exported from
# ``lossmle/_kernels/rowops.pxd`` (the helpers lossmle's own kernels use), so calling
# one costs no Python call, no import of lossmle at run time and no link step:
# the code is compiled into the caller's extension.  Build the caller with
# lossmle's parent directory on Cython's include path (it is site-packages for
# an installed lossmle); see the README section "Cython API".
#
# Contract, shared by every helper:
# * A "row" is ``n`` values at ``x[0], x[stride], ..., x[(n - 1) * stride]``:
#   ``x`` points at the row's first element and ``stride`` counts elements,
#   not bytes (a memoryview's ``strides[k] // sizeof(floating)``); it may be
#   negative or 0.  n >= 1.
# * ``floating`` is Cython's fused float/double: pass ``float*`` or
#   ``double*`` and the matching specialisation is compiled.  Inputs are
#   ``const``; every sum is accumulated in double; the reductions return a
#   double.
# * ``noexcept nogil``, no global state, nothing allocated: safe to call
#   without the GIL from any number of threads at once (e.g. inside
#   ``prange``), provided the threads do not write to one output row.
# * nan propagates (a row holding a nan gives nan), +inf gives +inf, a row of
#   only -inf has log-sum-exp -inf, as scipy.special.logsumexp.
# * Contiguous rows (stride 1) take a vectorised path (lossmle/_kernels/lm_simd.h, which
#   the .pxd includes; it is installed with the package and cythonize puts
#   its directory on the C include path).  Call ``simd_init()`` once, at the
#   import of your module (it needs the GIL and returns the variant's name:
#   "avx512", "avx2" or "baseline"), to select the CPU's best variant; without
#   it the portable baseline runs.  The variants agree to rounding; float32
#   rows on the fast path are accurate to (well beyond) float32 precision,
#   not bit for bit the scalar double code.
#
# Helpers (all ``noexcept nogil``):
#   double row_max(const floating* x, Py_ssize_t n, Py_ssize_t stride)
#       max of the row; nan if it holds a nan.
#   double row_logsumexp(const floating* x, Py_ssize_t n, Py_ssize_t stride)
#       log(sum(exp(x))), two reads of the row (max, then the shifted sum with
#       the maximal terms kept out: log1p(s / c) + log(c) + max).
#   double row_logsumexp_online(const floating* x, Py_ssize_t n, Py_ssize_t stride)
#       the same value in ONE read (running max, rescaled sum); a few ulps
#       less precise when one term dominates.
#   double row_logsumexp_signed(const floating* x, Py_ssize_t x_stride,
#                               const floating* b, Py_ssize_t b_stride,
#                               Py_ssize_t n, double* sign)
#       log|sum(b * exp(x))|; OUT *sign = its sign (+1, 0, -1 or nan);
#       entries with b == 0 take no part (scipy.special.logsumexp(b=...)).
#   void row_softmax(const floating* x, Py_ssize_t x_stride,
#                    floating* out, Py_ssize_t out_stride, Py_ssize_t n)
#       OUT out = exp(x - max) / sum(exp(x - max)); ``out`` may be ``x``
#       itself (same stride) for an in-place softmax, but must not partially
#       overlap it.
#   void row_log_softmax(const floating* x, Py_ssize_t x_stride,
#                        floating* out, Py_ssize_t out_stride, Py_ssize_t n)
#       OUT out = x - logsumexp(x), precise at the maximum; in place allowed
#       as for row_softmax.
#
#   str simd_init()                           (needs the GIL; call at import)
#       select this extension's SIMD variant (the LOSSMLE_SIMD environment
#       variable may lower it); returns its name.
#
# The private path ``from lossmle._kernels.rowops cimport ...`` reaches the same
# functions; this file is the stable, documented surface.

from lossmle._kernels.rowops cimport (
    row_max,
    row_logsumexp,
    row_logsumexp_online,
    row_logsumexp_signed,
    row_softmax,
    row_log_softmax,
    simd_init,
)
