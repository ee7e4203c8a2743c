"""Build the Cython kernels. Metadata lives in pyproject.toml.

Environment switches:
  LOSSMLE_DEBUG=1    bounds/initialisation checks back on (the debug build)
  LOSSMLE_NO_OPENMP=1  build without OpenMP even where the compiler has it
"""
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("LOSSMLE_DEBUG", "0") not in ("", "0")


def openmp_flags():
    """Return (compile, link) flags for OpenMP, or None if a test program fails."""
    if os.environ.get("LOSSMLE_NO_OPENMP", "0") not in ("", "0"):
        return None
    cc = os.environ.get("CC", "cc")
    flags = ["/openmp"] if sys.platform == "win32" else ["-fopenmp"]
    code = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(code)
        res = subprocess.run([cc, *flags, src, "-o", os.path.join(tmp, "t")],
                             capture_output=True)
        return (flags, flags) if res.returncode == 0 else None
    except OSError:
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


omp = openmp_flags()
if omp is None:
    warnings.warn("lossmle: OpenMP not available; building serial kernels", stacklevel=1)
    omp = ([], [])

extra_compile = list(omp[0])
if sys.platform != "win32":
    # -fno-math-errno and -fno-trapping-math let exp/log and their selects
    # vectorise; -fopenmp-simd honours `omp simd` even in a serial build.
    # Never -ffast-math: inf and nan must keep their meaning.  No -march:
    # _kernels/lm_simd.h carries per-ISA variants chosen at run time.
    extra_compile += ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
if DEBUG:
    extra_compile += ["-O0", "-g"]
elif sys.platform != "win32":
    # Python's own CFLAGS carry -g: a release build drops the debug info
    # (it was most of the wheel's size).
    extra_compile += ["-g0"]

extensions = [
    Extension(
        f"lossmle._kernels.{name}",
        [f"lossmle/_kernels/{name}.pyx"],
        include_dirs=[np.get_include(), "lossmle/_kernels"],
        depends=["lossmle/_kernels/lm_simd.h", "lossmle/_kernels/lm_simd_impl.h",
                 "lossmle/_kernels/lm_omp_compat.h", "lossmle/_kernels/rowops.pxd",
                 "lossmle/_kernels/rows.pxd", "lossmle/_kernels/loss_rows.pxd",
                 "lossmle/_kernels/divergence_rows.pxd", "lossmle/_kernels/logit_rows.pxd"],
        # only lossmle._kernels.simd instantiates the per-ISA SIMD variants (see lm_simd.h)
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
        + ([("LM_SIMD_IMPLEMENT", "1")] if name == "simd" else []),
        extra_compile_args=extra_compile,
        extra_link_args=list(omp[1]),
    )
    for name in ("simd", "special", "losses", "divergence", "logit_divergence", "parallel",
                 "training", "streaming", "fastpath")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,  # kernels are noexcept nogil: no ZeroDivisionError path
            "initializedcheck": DEBUG,
            "embedsignature": True,
        },
    ),
)
