"""Shared fixtures and helpers for the lossmle test suite.

Tolerances, input layouts, fixtures.  The written-out references (NumPy,
torch, JAX, mpmath) are in oracles.py; nothing here or there calls lossmle
to produce an expected value.
"""
import warnings
import zlib

import numpy as np
import pytest

# ---------------------------------------------------------------------------
# Tolerances, derived from np.finfo
# ---------------------------------------------------------------------------
EPS64 = np.finfo(np.float64).eps  # 2.2e-16
EPS32 = np.finfo(np.float32).eps  # 1.2e-7

#: relative tolerance per *result* dtype: a handful of ulps of accumulated error
RTOL = {
    np.dtype(np.float64): 5000 * EPS64,  # ~1.1e-12
    np.dtype(np.float32): 16 * EPS32,  # ~1.9e-6
}


def rtol_for(dtype):
    return RTOL[np.dtype(dtype)]


def tol(dtype, scale=1.0):
    """``dict(rtol=..., atol=...)`` for results of ``dtype``.

    ``scale`` is the magnitude of the quantities that get cancelled (e.g. the
    largest |logit|); results near 0 are then compared with an absolute
    tolerance of a few ulps of that magnitude.
    """
    r = rtol_for(dtype)
    return dict(rtol=r, atol=r * max(1.0, float(scale)))


def result_dtype(dtype):
    """Dtype lossmle returns for an input of ``dtype`` (spec: float32 stays,
    float16 computes in float32, integers/bool become float64)."""
    dtype = np.dtype(dtype)
    if dtype in (np.dtype(np.float32), np.dtype(np.float16)):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def quiet(fn, *args, **kwargs):
    """Call an *oracle* with floating-point warnings silenced (scipy warns on
    inf/-inf rows; the pytest config turns warnings into errors)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def as_f64(x):
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------
# Memory layouts with identical values
# ---------------------------------------------------------------------------
LAYOUTS = ["C", "F", "transposed", "strided", "negstride", "readonly", "list"]


def make_layout(arr, layout):
    """Return an array-like holding the same values as ``arr`` but with a
    different memory layout. ``arr`` itself is never returned (so the caller
    can keep it as the oracle's input)."""
    arr = np.asarray(arr)
    if layout == "C":
        return np.ascontiguousarray(arr).copy()
    if layout == "F":
        out = np.asfortranarray(arr).copy(order="F")
        assert arr.ndim < 2 or not out.flags.c_contiguous
        return out
    if layout == "transposed":
        # a C-contiguous array of the transposed shape, viewed transposed
        base = np.ascontiguousarray(arr.T)
        return base.T
    if layout == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in arr.shape), dtype=arr.dtype)
        sl = tuple(slice(1, None, 2) for _ in arr.shape)
        big[sl] = arr
        out = big[sl]
        assert arr.size <= 1 or not out.flags.c_contiguous
        return out
    if layout == "negstride":
        rev = tuple(slice(None, None, -1) for _ in arr.shape)
        base = np.ascontiguousarray(arr[rev])
        return base[rev]
    if layout == "readonly":
        out = np.array(arr, copy=True)
        out.setflags(write=False)
        return out
    if layout == "list":
        return arr.tolist()
    raise ValueError(layout)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------
@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so each test is reproducible."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture
def torch():
    """The torch module, or skip the test cleanly when torch is absent."""
    return pytest.importorskip("torch")


@pytest.fixture
def mpmath():
    return pytest.importorskip("mpmath")


def same_package_cwd():
    """A working directory from which ``python -m lossmle`` in a subprocess
    imports the very lossmle these tests import (installed or built in place),
    never an unbuilt source tree that happens to be the current directory."""
    import os
    import lossmle
    return os.path.dirname(os.path.dirname(os.path.abspath(lossmle.__file__)))


def _hypothesis_profile():
    """CI (CI=true) runs hypothesis derandomized: the same seeded examples every
    run, so CI's verdict does not depend on a draw; local runs keep exploring."""
    import os
    try:
        from hypothesis import settings
    except ImportError:
        return
    settings.register_profile("ci", derandomize=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_hypothesis_profile()


# ---------------------------------------------------------------------------
# Every SIMD dispatch path this CPU has (LOSSMLE_SIMD lowers the choice)
# ---------------------------------------------------------------------------
SIMD_PATHS = ["avx512", "avx2", "baseline"]


@pytest.fixture(params=SIMD_PATHS)
def simd_path(request, monkeypatch):
    """Run the test on one SIMD path (skipped where the CPU lacks it), then
    restore the default selection."""
    from lossmle._cli import config as _config
    monkeypatch.setenv("LOSSMLE_SIMD", request.param)
    got = _config.reselect_simd()
    try:
        if got != request.param:
            pytest.skip(f"this CPU has no {request.param} (best: {got})")
        yield got
    finally:
        monkeypatch.delenv("LOSSMLE_SIMD")
        _config.reselect_simd()


# ---------------------------------------------------------------------------
# One closing line naming the optional oracles whose tests skipped, and the
# command that adds them (without torch alone, some 2,800 tests skip).
# ---------------------------------------------------------------------------
#: importable name -> what to pip install for it
_OPTIONAL = {
    "torch": "torch==2.13.0", "sklearn": "scikit-learn", "mpmath": "mpmath",
    "scipy": "scipy", "hypothesis": "hypothesis", "dask": "'dask[array,distributed]'",
    "distributed": "'dask[array,distributed]'", "mypy": "mypy", "Cython": "Cython",
    "setuptools": "setuptools", "matplotlib": "matplotlib", "threadpoolctl": "threadpoolctl",
}


def missing_oracles(skipped_reports):
    """{top-level module: number of skips} for skips by ``pytest.importorskip``."""
    import re
    counts = {}
    for rep in skipped_reports:
        longrepr = getattr(rep, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 \
            else str(longrepr)
        m = re.search(r"could not import '([\w.]+)'", reason)
        if m:
            top = m.group(1).split(".")[0]
            counts[top] = counts.get(top, 0) + 1
    return counts


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter):
    # around the terminal reporter's own summary: after `-ra`'s list of skips,
    # just above the closing "N passed" line
    yield
    counts = missing_oracles(terminalreporter.stats.get("skipped", []))
    counts.pop("lossmle", None)  # lossmle.dask: reported as dask
    if not counts:
        return
    names = sorted(counts, key=lambda k: (-counts[k], k))
    adds = list(dict.fromkeys(_OPTIONAL.get(n, n) for n in names))
    terminalreporter.write_line(
        f"lossmle: {sum(counts.values())} skipped for a missing oracle or tool ("
        + ", ".join(f"{n}: {counts[n]}" for n in names)
        + f"); for the full suite: pip install {' '.join(adds)}", yellow=True, bold=True)
