"""The C-level API: a downstream extension that cimports lossmle.

A small ``.pyx`` (the kind another package would write) is compiled in a
temporary directory against the lossmle that ``import lossmle`` finds (the
installed package, or the in-place build), then its results are checked
against scipy.  This is what keeps ``lossmle/__init__.pxd`` and the row
helpers' contract from breaking silently.  Skips cleanly without Cython,
setuptools or a C compiler.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import lossmle

from conftest import quiet, tol

special = pytest.importorskip("scipy.special")

PKG_DIR = os.path.dirname(os.path.abspath(lossmle.__file__))
INCLUDE_DIR = os.path.dirname(PKG_DIR)  # lossmle's parent: site-packages when installed

DOWNSTREAM_PYX = textwrap.dedent('''
    # cython: language_level=3, boundscheck=False, wraparound=False
    """A downstream user of lossmle's Cython API."""
    from cython cimport floating

    # the documented public surface ...
    from lossmle cimport (
        row_max, row_logsumexp, row_logsumexp_online, row_logsumexp_signed,
        row_softmax, row_log_softmax, simd_init,
    )
    # ... also reachable as attributes of the cimported package
    cimport lossmle

    SIMD = simd_init()  # this extension's vectorised variant, once at import


    def reduce_rows(const floating[:, :] x, int which, double[::1] out):
        """which: 0 max, 1 logsumexp, 2 logsumexp_online (via lossmle.)."""
        cdef Py_ssize_t i, n = x.shape[1]
        cdef Py_ssize_t stride = x.strides[1] // <Py_ssize_t>sizeof(floating)
        with nogil:
            for i in range(x.shape[0]):
                if which == 0:
                    out[i] = row_max(&x[i, 0], n, stride)
                elif which == 1:
                    out[i] = row_logsumexp(&x[i, 0], n, stride)
                else:
                    out[i] = lossmle.row_logsumexp_online(&x[i, 0], n, stride)


    def signed_rows(const floating[:, :] x, const floating[:, :] b,
                    double[::1] out, double[::1] sign):
        cdef Py_ssize_t i, n = x.shape[1]
        cdef Py_ssize_t xs = x.strides[1] // <Py_ssize_t>sizeof(floating)
        cdef Py_ssize_t bs = b.strides[1] // <Py_ssize_t>sizeof(floating)
        with nogil:
            for i in range(x.shape[0]):
                out[i] = row_logsumexp_signed(&x[i, 0], xs, &b[i, 0], bs, n, &sign[i])


    def transform_rows(const floating[:, :] x, floating[:, :] out, bint log):
        cdef Py_ssize_t i, n = x.shape[1]
        cdef Py_ssize_t xs = x.strides[1] // <Py_ssize_t>sizeof(floating)
        cdef Py_ssize_t os = out.strides[1] // <Py_ssize_t>sizeof(floating)
        with nogil:
            for i in range(x.shape[0]):
                if log:
                    row_log_softmax(&x[i, 0], xs, &out[i, 0], os, n)
                else:
                    row_softmax(&x[i, 0], xs, &out[i, 0], os, n)


    def softmax_in_place(floating[:, :] x):
        cdef Py_ssize_t i, n = x.shape[1]
        cdef Py_ssize_t xs = x.strides[1] // <Py_ssize_t>sizeof(floating)
        with nogil:
            for i in range(x.shape[0]):
                row_softmax(&x[i, 0], xs, &x[i, 0], xs, n)
''')

SETUP_PY = textwrap.dedent('''
    import sys
    import numpy as np
    from Cython.Build import cythonize
    from setuptools import Extension, setup

    include = sys.argv.pop(1)
    setup(
        name="lossmle_downstream",
        ext_modules=cythonize(
            [Extension("lossmle_downstream", ["lossmle_downstream.pyx"],
                       include_dirs=[np.get_include()])],
            include_path=[include],
            compiler_directives={"language_level": 3},
        ),
        script_args=["build_ext", "--inplace"],
    )
''')


def _have_compiler():
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    return bool(cc) and shutil.which(cc[0]) is not None


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    pytest.importorskip("Cython")
    pytest.importorskip("setuptools")
    if not _have_compiler():
        pytest.skip("no C compiler")
    work = tmp_path_factory.mktemp("downstream")
    (work / "lossmle_downstream.pyx").write_text(DOWNSTREAM_PYX)
    (work / "setup.py").write_text(SETUP_PY)
    # -O1: the test checks results, not speed, and compiles twice as fast
    env = dict(os.environ, CFLAGS=os.environ.get("CFLAGS", "") + " -O1")
    res = subprocess.run([sys.executable, "setup.py", INCLUDE_DIR], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"downstream build failed:\n{res.stdout}\n{res.stderr}"
    (so,) = [p for p in work.iterdir() if p.name.startswith("lossmle_downstream.")
             and p.suffix in (".so", ".pyd")]
    spec = importlib.util.spec_from_file_location("lossmle_downstream", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pxd_files_ship_with_the_package():
    # what a downstream build needs next to the installed package
    for name in ("__init__.pxd", "_kernels/rowops.pxd"):
        assert os.path.isfile(os.path.join(PKG_DIR, name)), name


def test_simd_init_selects_a_variant(downstream):
    assert downstream.SIMD in ("avx512", "avx2", "baseline")


LAYOUTS = {
    "contiguous": lambda a: a,
    "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
    "negstride": lambda a: np.ascontiguousarray(a[:, ::-1])[:, ::-1],
}


def _rows(rng, dtype):
    x = rng.normal(scale=20, size=(7, 33)).astype(dtype)
    x[1, :] = -np.inf                   # empty sum: -inf
    x[2, 5] = np.inf                    # +inf
    x[3, 7] = np.nan                    # nan propagates
    x[4, :] = 3.0                       # all terms maximal
    x[5, 0] = 700.0 if dtype == np.float64 else 80.0   # one dominant term
    return x


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["row_max", "row_logsumexp",
                                                  "row_logsumexp_online"])
def test_reductions_match_scipy(downstream, rng, dtype, layout, which):
    x = _rows(rng, dtype)
    xv = LAYOUTS[layout](x)
    assert np.array_equal(xv, x, equal_nan=True)
    out = np.empty(x.shape[0])
    downstream.reduce_rows(xv, which, out)
    x64 = x.astype(np.float64)
    if which == 0:
        expected = np.max(x64, axis=1)
        np.testing.assert_array_equal(out, expected)
    else:
        expected = quiet(special.logsumexp, x64, axis=1)
        # a double result, at least as precise as the input type
        np.testing.assert_allclose(out, expected, **tol(dtype, 50))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_signed_matches_scipy(downstream, rng, dtype):
    x = rng.normal(size=(6, 9)).astype(dtype)
    b = rng.normal(size=(6, 9)).astype(dtype)
    b[0, :4] = 0.0
    x[0, :4] = np.nan                   # b == 0 hides the nan, as scipy
    out, sign = np.empty(6), np.empty(6)
    downstream.signed_rows(x, b, out, sign)
    exp_out, exp_sign = quiet(special.logsumexp, x.astype(np.float64), axis=1,
                              b=b.astype(np.float64), return_sign=True)
    np.testing.assert_allclose(out, exp_out, **tol(np.float64, 10))
    np.testing.assert_array_equal(sign, exp_sign)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_transforms_match_scipy(downstream, rng, dtype, layout, log):
    x = rng.normal(scale=5, size=(5, 17)).astype(dtype)
    x[1, 3] = np.nan
    x[2, :] = -np.inf
    out = np.empty_like(x)
    outv = LAYOUTS[layout](out)         # write through a strided view too
    downstream.transform_rows(LAYOUTS[layout](x), outv, log)
    oracle = special.log_softmax if log else special.softmax
    expected = quiet(oracle, x.astype(np.float64), axis=1)
    np.testing.assert_allclose(np.asarray(outv), expected, **tol(dtype, 5))


def test_softmax_in_place(downstream, rng):
    x = rng.normal(size=(4, 11))
    expected = special.softmax(x, axis=1)
    y = x.copy()
    downstream.softmax_in_place(y)
    np.testing.assert_allclose(y, expected, **tol(np.float64))


def test_nogil_calls_from_threads(downstream, rng):
    # the helpers hold no state: concurrent nogil calls give the serial answers
    xs = [rng.normal(scale=10, size=(200, 301)) for _ in range(8)]
    expected = [special.logsumexp(x, axis=1) for x in xs]

    def run(x):
        out = np.empty(x.shape[0])
        downstream.reduce_rows(x, 1, out)
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, xs * 3))
    for got, want in zip(results, expected * 3):
        np.testing.assert_allclose(got, want, **tol(np.float64, 50))
