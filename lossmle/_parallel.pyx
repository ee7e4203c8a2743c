"""What the compiled kernels know about threads: OpenMP present, and its pool size."""

cdef extern from "_omp_compat.h":
    int omp_get_max_threads() noexcept nogil
    int LOSSMLE_HAVE_OPENMP


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(LOSSMLE_HAVE_OPENMP)


def max_threads():
    """omp_get_max_threads(): honours OMP_NUM_THREADS and threadpoolctl limits."""
    return omp_get_max_threads()
