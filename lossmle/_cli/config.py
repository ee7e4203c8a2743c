"""Build and run-time configuration: ``lossmle.show_config()`` and ``lossmle config``."""
import platform
import sys

import numpy as np

from .._kernels import parallel as _parallel
from .._threads import get_num_threads
from .._version import __version__


def config():
    """The configuration as a dict (version, OpenMP, threads, SIMD path, platform)."""
    return {
        "lossmle": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "openmp": _parallel.openmp_enabled(),
        "max_threads": _parallel.max_threads(),
        "num_threads": get_num_threads(),
        "simd": simd_path(),
    }


_KERNEL_MODULES = ("special", "losses", "divergence")


def _kernel_modules():
    import importlib
    return [importlib.import_module(f"lossmle._kernels.{name}") for name in _KERNEL_MODULES]


def simd_path():
    """The SIMD code path the kernels use: 'avx512', 'avx2' or 'baseline'.

    Chosen at import from what the CPU supports; the environment variable
    ``LOSSMLE_SIMD`` (avx512, avx2, baseline) can lower it.
    """
    return _kernel_modules()[0].SIMD_PATH


def reselect_simd():
    """Re-read ``LOSSMLE_SIMD`` and re-select every kernel module's SIMD path.

    For tests and benchmarks that compare paths in one process; returns the
    path now in use.
    """
    paths = {module._simd_init() for module in _kernel_modules()}
    assert len(paths) == 1, paths
    return paths.pop()


def show_config():
    """Print lossmle's build and run-time configuration.

    The version of lossmle, Python and NumPy, the platform, whether the
    kernels were built with OpenMP, the thread counts and the SIMD path in
    use ('avx512', 'avx2' or 'baseline'; ``LOSSMLE_SIMD`` can lower it).
    ``lossmle config`` prints the same.

    Examples
    --------
    >>> import lossmle
    >>> lossmle.show_config()  # doctest: +ELLIPSIS
         lossmle: ...
          python: ...
           numpy: ...
    ...
            simd: ...
    """
    for key, value in config().items():
        print(f"{key:>12}: {value}")


def main(argv):
    if argv and argv[0] in ("-h", "--help"):
        print("usage: lossmle config\n\nPrint build and run-time configuration.")
        return 0
    if argv:
        print(f"lossmle config: unexpected arguments {argv}", file=sys.stderr)
        return 2
    show_config()
    return 0
