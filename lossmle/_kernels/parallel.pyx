"""What the compiled kernels know about threads: OpenMP present, and its pool size.

Design
------
Two small layers: the Python-facing ``openmp_enabled`` / ``max_threads``
and the thread policy's constants (read by ``lossmle._threads`` to pick a
thread count, and by the fast path), and the benchmark's
floors below, each a nogil ``prange`` with one contiguous chunk per thread,
as the kernels' static schedules take: ``read_floor`` / ``copy_floor`` (what
the memory system allows for a kernel's bytes: a SIMD ``lm_max`` read, a
memcpy) and ``exp_floor`` / ``log_floor`` (the compute bound: lossmle's own
vectorised exp, entropy and KL terms over blocks held in L1).  The floors'
sums are meaningless; nothing here computes a public result.
"""

cdef extern from "lm_omp_compat.h":
    int omp_get_max_threads() noexcept nogil
    int LOSSMLE_HAVE_OPENMP


# Below this many elements a kernel runs on one thread: OpenMP's start-up
# (~2 us) costs more than the work it would share.
PARALLEL_MIN_ELEMENTS = 1 << 17

# The most threads n_threads / set_num_threads accept.  OpenMP starts every
# thread it is asked for, and libgomp ends the process (no Python exception)
# when it cannot allocate or create them: n_threads=2**31-1 exited on
# "libgomp: Out of memory".  Results are the same for any thread count, so the
# ceiling only turns a likely typo into a ValueError.
MAX_THREADS = 1024


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(LOSSMLE_HAVE_OPENMP)


def max_threads():
    """omp_get_max_threads(): honours OMP_NUM_THREADS and threadpoolctl limits."""
    return omp_get_max_threads()


# ---- the benchmark's floors (lossmle bench; private, not public API) ----
# What the memory system allows for a kernel's bytes, measured in the same
# rounds as the kernels: a parallel read of the input at the SIMD variant's
# full vector width (lm_max: a pure read, no conversion, no stores), and a
# parallel copy (memcpy) into an output.  Each thread takes one contiguous
# chunk, as the kernels' static schedules do.

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy
from lossmle._kernels.rowops cimport simd_init, lm_max_d, lm_max_f

cdef bint _simd_bound = False


def read_floor(const double[::1] x, int n_threads):
    """Read ``x`` once with ``n_threads`` threads (one chunk each).

    Returns the sum of the chunks' maxima.

    Integer data (class targets) are read through a float64 view of their
    bytes: the value is meaningless then, the reading is the point.
    """
    return _read_chunks(x, n_threads)


def read_floor_f(const float[::1] x, int n_threads):
    """`read_floor` at float32's vector width (16 values per AVX-512 vector)."""
    return _read_chunks(x, n_threads)


cdef double _read_chunks(const floating[::1] x, int n_threads):
    """The sum of the maxima of ``n_threads`` contiguous chunks of ``x``, one per thread."""
    if not _simd_bound:
        _init_floors()
    cdef Py_ssize_t n = x.shape[0], chunk, lo, hi
    cdef int t, nt = max(1, n_threads)
    cdef double m = 0.0, part
    if n == 0:
        return m
    chunk = (n + nt - 1) // nt
    for t in prange(nt, schedule='static', num_threads=nt, nogil=True):
        lo = t * chunk
        hi = min(n, lo + chunk)
        if hi > lo:
            if floating is double:
                part = lm_max_d(&x[lo], hi - lo)
            else:
                part = lm_max_f(&x[lo], hi - lo)
            m += part
    return m


def copy_floor(const unsigned char[::1] src, unsigned char[::1] dst, int n_threads):
    """Copy ``src`` into ``dst`` (same length) with ``n_threads`` threads, one chunk each."""
    cdef Py_ssize_t n = src.shape[0], chunk, lo, hi
    cdef int t, nt = max(1, n_threads)
    if dst.shape[0] != n:
        raise ValueError(f"dst has {dst.shape[0]} bytes, src {n}")
    if n == 0:
        return
    chunk = (n + nt - 1) // nt
    chunk = (chunk + 63) & ~63  # whole cache lines per thread
    for t in prange(nt, schedule='static', num_threads=nt, nogil=True):
        lo = t * chunk
        hi = min(n, lo + chunk)
        if hi > lo:
            memcpy(&dst[lo], &src[lo], hi - lo)


from lossmle._kernels.rowops cimport lm_sumexp_d, lm_sumexp_f

cdef enum:
    _EXP_BLOCK = 1024
cdef double _exp_block_d[_EXP_BLOCK]
cdef float _exp_block_f[_EXP_BLOCK]


def exp_floor(Py_ssize_t n, int n_threads, bint single=False):
    """Sum ``n`` exponentials with ``n_threads`` threads, from a block in L1.

    The compute floor of an exp-bound kernel: lossmle's own vectorised exp
    (float's when ``single``) at full throughput, with no memory traffic.
    Returns the sum (meaningless; computing it is the point).
    """
    return _compute_floor(n, n_threads, single, _OP_EXP)


from lossmle._kernels.rowops cimport lm_kl_d, lm_kl_f, lm_entr_d, lm_entr_f

cdef double _log_p_d[_EXP_BLOCK]
cdef double _log_q_d[_EXP_BLOCK]
cdef float _log_p_f[_EXP_BLOCK]
cdef float _log_q_f[_EXP_BLOCK]


cdef void _init_floors():
    """Bind the SIMD table and fill the L1 blocks, on first use (not at import:
    every ``import lossmle`` imports this module)."""
    global _simd_bound
    cdef int j
    simd_init()
    for j in range(_EXP_BLOCK):
        # shifted logits in [-8, 0], as after a max shift
        _exp_block_d[j] = -8.0 * j / _EXP_BLOCK
        _exp_block_f[j] = <float>_exp_block_d[j]
        # two probability rows of 1024 values, each summing to one
        _log_p_d[j] = (1.0 + j) / (_EXP_BLOCK * (_EXP_BLOCK + 1) / 2.0)
        _log_q_d[j] = (_EXP_BLOCK - j) / (_EXP_BLOCK * (_EXP_BLOCK + 1) / 2.0)
        _log_p_f[j] = <float>_log_p_d[j]
        _log_q_f[j] = <float>_log_q_d[j]
    _simd_bound = True


def log_floor(Py_ssize_t n, int n_threads, bint single=False, bint kl=False):
    """Entropy (or with ``kl``, KL) terms of ``n`` values with ``n_threads``
    threads, from blocks in L1: the compute floor of the log-bound kernels,
    lossmle's own row kernels at full throughput with no memory traffic.
    Returns the sum (meaningless; computing it is the point).
    """
    return _compute_floor(n, n_threads, single, _OP_KL if kl else _OP_ENTR)


cdef enum:
    _OP_EXP
    _OP_ENTR
    _OP_KL


cdef double _compute_floor(Py_ssize_t n, int n_threads, bint single, int op):
    """The sum of ``op``'s row kernel over ``n`` values from the L1 blocks,
    ``n_threads`` threads with one contiguous chunk each (``exp_floor``,
    ``log_floor``)."""
    if not _simd_bound:
        _init_floors()
    cdef Py_ssize_t chunk, lo, hi, k, take
    cdef int t, nt = max(1, n_threads)
    cdef double s = 0.0, part, bad
    if n <= 0:
        return s
    chunk = (n + nt - 1) // nt
    for t in prange(nt, schedule='static', num_threads=nt, nogil=True):
        lo = t * chunk
        hi = min(n, lo + chunk)
        part = 0.0
        bad = 0.0
        k = hi - lo
        while k > 0:
            take = min(k, <Py_ssize_t>_EXP_BLOCK)
            if op == _OP_EXP:
                if single:
                    part = part + lm_sumexp_f(_exp_block_f, take, 0.0)
                else:
                    part = part + lm_sumexp_d(_exp_block_d, take, 0.0)
            elif op == _OP_KL:
                if single:
                    part = part + lm_kl_f(_log_p_f, _log_q_f, take, &bad)
                else:
                    part = part + lm_kl_d(_log_p_d, _log_q_d, take, &bad)
            elif single:
                part = part + lm_entr_f(_log_p_f, take, 1.0, &bad)
            else:
                part = part + lm_entr_d(_log_p_d, take, 1.0, &bad)
            k = k - take
        s += part
    return s
