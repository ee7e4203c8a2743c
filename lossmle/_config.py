"""Build and run-time configuration: ``lossmle.show_config()`` and ``lossmle config``."""
import platform
import sys

import numpy as np

from . import __version__, _parallel
from ._validation import get_num_threads


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


def simd_path():
    """The SIMD code path the kernels use on this CPU."""
    getter = getattr(_parallel, "simd_path", None)
    return getter() if getter is not None else "scalar"


def show_config():
    """Print lossmle's build and run-time configuration."""
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
