"""Thread counts of lossmle's kernels: the process default, the per-call
resolution, and what a forked child or a busy machine gets.

Every public function passes its ``n_threads`` argument through
:func:`resolve_threads`, the one place that turns it into the count a kernel
runs on.  Results never depend on that count (rows are computed
independently and reduced afterwards), so the rules below change speed only:

* Small inputs (fewer than ``PARALLEL_MIN_ELEMENTS`` values) run on one
  thread: starting an OpenMP region costs more than the work it would share.
* ``n_threads=None`` runs on ``get_num_threads()`` threads, but never on more
  than the CPUs that are free right now.  A static OpenMP loop waits for its
  slowest thread, and on a busy machine a thread can wait a whole scheduler
  time slice for a core: with two CPU-bound processes on two cores a
  two-thread call took 15-75x its one-thread time.  The number of runnable
  tasks is read from ``/proc/loadavg`` at most once every ``_LOAD_PERIOD``
  seconds; where that file does not exist (not Linux) no cap applies.
  An explicit ``n_threads=k`` is run on ``k`` threads as asked.
* After ``os.fork()`` in a process that has run a parallel region, the child
  runs every kernel on one thread: GNU OpenMP's thread pool does not survive
  fork, and a parallel region in the child would wait forever for threads
  that no longer exist.
"""
import operator
import os
import time

import numpy as np

# GNU OpenMP reads its settings once, when the first of lossmle's extension
# modules loads it (the import of _kernels.parallel below, as this module is the
# package's first import).  Its default wait policy lets an idle worker spin
# for milliseconds after a parallel region: on a busy machine the spinning
# worker takes the core the calling thread needs, and it also counts as a
# runnable task in the load reading below.  PASSIVE makes idle workers sleep
# at once.  A value the user set is kept; the variable is removed again so
# that child processes and other libraries see the environment they had.
_SET_WAIT_POLICY = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
if _SET_WAIT_POLICY:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
try:
    from ._kernels import parallel as _parallel
finally:
    if _SET_WAIT_POLICY:
        del os.environ["OMP_WAIT_POLICY"]

__all__ = ["MAX_THREADS", "PARALLEL_MIN_ELEMENTS", "set_num_threads", "get_num_threads",
           "resolve_threads", "check_n_threads"]

# The thread policy's two constants live with the kernels (the fast path reads
# them too): see lossmle/_kernels/parallel.pyx for why each has its value.
PARALLEL_MIN_ELEMENTS = _parallel.PARALLEL_MIN_ELEMENTS
MAX_THREADS = _parallel.MAX_THREADS

# How long one reading of the machine's load is trusted (seconds): reading
# /proc/loadavg costs a few microseconds, a kernel call at the parallel
# threshold ~100 us.
_LOAD_PERIOD = 0.005


class _State:
    """Process-wide thread state (module globals, grouped)."""
    default = None            # set_num_threads' value; None: OpenMP's default
    parallel_used = False     # this process has entered an OpenMP region of 2+ threads
    forked_serial = False     # a forked child of such a process: one thread only
    load_fd = -1              # /proc/loadavg, opened once (-2: not available)
    load_time = -1.0
    runnable = 1


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_N_CPUS = _cpu_count()


def check_n_threads(n_threads, name="n_threads"):
    """A thread count: an int in 1 .. MAX_THREADS (bool and float are TypeErrors)."""
    if isinstance(n_threads, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive int or None, got {n_threads!r}")
    try:
        n = operator.index(n_threads)
    except TypeError:
        raise TypeError(f"{name} must be a positive int or None, got {n_threads!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive int or None, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"{name} must be at most {MAX_THREADS}, got {n}")
    return n


def set_num_threads(n_threads):
    """Set the process-wide default thread count of lossmle's kernels.

    Parameters
    ----------
    n_threads : int or None
        A number of threads from 1 to ``MAX_THREADS`` (1024), or None to go
        back to OpenMP's default (all cores, honouring ``OMP_NUM_THREADS`` and
        threadpoolctl limits).

    Notes
    -----
    A call with ``n_threads=None`` runs on at most this many threads, and on
    fewer when fewer CPUs are free (see :func:`get_num_threads`).

    Examples
    --------
    >>> import lossmle
    >>> lossmle.set_num_threads(1)
    >>> lossmle.get_num_threads()
    1
    >>> lossmle.set_num_threads(None)   # back to OpenMP's default
    """
    _State.default = None if n_threads is None else check_n_threads(n_threads)


def get_num_threads():
    """The most threads a kernel uses when ``n_threads=None``.

    ``set_num_threads``' value if set, else OpenMP's default
    (``OMP_NUM_THREADS``, threadpoolctl limits) capped at ``MAX_THREADS``:
    libgomp cannot start 100,000 threads and ends the process when asked to.

    Returns
    -------
    n_threads : int
        From 1 to ``MAX_THREADS`` (1024).

    Notes
    -----
    A call with ``n_threads=None`` runs small inputs on one thread, and large
    ones on this many threads or on the number of CPUs free at the time of
    the call (Linux: read from ``/proc/loadavg``), whichever is smaller, so a
    busy machine does not make a parallel call slower than a serial one.  In
    a child forked (``os.fork``, ``multiprocessing``'s "fork" start method)
    from a process that had run a parallel kernel, this is 1: GNU OpenMP's
    threads do not survive fork.

    Examples
    --------
    >>> import lossmle
    >>> 1 <= lossmle.get_num_threads() <= 1024
    True
    """
    if _State.forked_serial:
        return 1
    if _State.default is not None:
        return _State.default
    return min(_parallel.max_threads(), MAX_THREADS)


def _runnable_tasks():
    """Runnable tasks on the machine now (this thread included), or 0 if unknown."""
    now = time.monotonic()
    if now - _State.load_time < _LOAD_PERIOD:
        return _State.runnable
    if _State.load_fd == -1:
        try:
            _State.load_fd = os.open("/proc/loadavg", os.O_RDONLY)
        except OSError:
            _State.load_fd = -2
    if _State.load_fd < 0:
        return 0
    try:
        # "0.50 0.40 0.30 3/166 7251": the fourth field is running/total
        running = int(os.pread(_State.load_fd, 128, 0).split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    _State.load_time = now
    _State.runnable = running
    return running


def _free_cpus(n):
    """``n`` capped at the CPUs not taken by other runnable tasks (at least 1)."""
    runnable = _runnable_tasks()
    if runnable <= 0:
        return n
    return max(1, min(n, _N_CPUS - (runnable - 1)))


def resolve_threads(n_threads, n_elements):
    """The thread count of a kernel call over ``n_elements`` values.

    ``n_threads`` is the caller's argument (None or an int, checked here).
    """
    if n_threads is None:
        if n_elements < PARALLEL_MIN_ELEMENTS:
            return 1
        n = get_num_threads()
        if n > 1:
            n = _free_cpus(n)
    else:
        n = check_n_threads(n_threads)
        if n_elements < PARALLEL_MIN_ELEMENTS:
            return 1
    if n > 1:
        if _State.forked_serial:
            return 1
        _State.parallel_used = True
    return n


def _after_fork_in_child():
    # the parent's OpenMP pool is gone in the child; its load reading is stale
    if _State.parallel_used:
        _State.forked_serial = True
    _State.load_time = -1.0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
