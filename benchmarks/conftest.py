"""pytest-benchmark harness shared by every ``bench_<function>.py``.

Each bench module names its ``FUNCTION`` (one of ``lossmle._cli.bench.FUNCTIONS``)
and one function ``bench_<function>(case, run_case)``; this file parametrises
it over shape x dtype x implementation, one benchmark group per
(function, shape, dtype) so the competitors land in one table.

The competitor implementations live in ``lossmle._cli.bench`` (shared with the
``lossmle bench`` command, which must work from an installed package): SciPy's
public functions, the best stable in-place NumPy, torch CPU and
scikit-learn's ``log_loss`` where installed (skipped cleanly otherwise).

Before it is timed, every implementation's result is checked against the
reference (SciPy's result; NumPy's when SciPy is absent), so a fast wrong
answer fails instead of winning.  Inputs are built once per case, with a fixed
seed, outside the timed call.

Environment (comma-separated, to shrink the grid):
``LOSSMLE_BENCH_SHAPES`` (e.g. ``8x10,1024x1000``; default: all five shapes),
``LOSSMLE_BENCH_DTYPES`` (``float64,float32``), ``LOSSMLE_BENCH_IMPLS``
(``lossmle,scipy,numpy,torch,sklearn``), ``LOSSMLE_BENCH_THREADS`` (threads
for lossmle and torch; default ``lossmle.get_num_threads()``).
"""
import os
import sys

import pytest

try:
    import lossmle
except ImportError:  # `pytest benchmarks/` from a source tree built in place
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import lossmle
from lossmle._cli import bench as _bench  # noqa: E402


def _env_list(name, parse, default):
    text = os.environ.get(name, "").strip()
    return parse(text) if text else list(default)


def _parse_or_fail(parse, name):
    def wrapped(text):
        try:
            return parse(text)
        except Exception as exc:
            raise pytest.UsageError(f"{name}={text!r}: {exc}") from None
    return wrapped


SHAPES = _env_list("LOSSMLE_BENCH_SHAPES",
                   _parse_or_fail(_bench.parse_shapes, "LOSSMLE_BENCH_SHAPES"), _bench.SHAPES)
DTYPES = _env_list("LOSSMLE_BENCH_DTYPES",
                   _parse_or_fail(_bench._csv_choice(_bench.DTYPES, "dtype"),
                                  "LOSSMLE_BENCH_DTYPES"), _bench.DTYPES)
IMPLS = _env_list("LOSSMLE_BENCH_IMPLS",
                  _parse_or_fail(_bench._csv_choice(_bench.IMPLEMENTATIONS, "implementation"),
                                 "LOSSMLE_BENCH_IMPLS"), _bench.IMPLEMENTATIONS)
THREADS = int(os.environ.get("LOSSMLE_BENCH_THREADS") or lossmle.get_num_threads())


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    function = metafunc.module.FUNCTION
    params = [
        pytest.param((function, shape, dtype, impl),
                     id=f"{_bench.shape_str(shape)}-{dtype}-{impl}")
        for shape in SHAPES for dtype in DTYPES for impl in IMPLS
        if _bench.applicable(function, impl)
    ]
    metafunc.parametrize("case", params)


class _CaseCache:
    """Inputs and the reference result of the latest case only (inputs can be 128 MiB)."""

    def __init__(self):
        self.key = None
        self.value = None

    def get(self, function, shape, dtype):
        key = (function, tuple(shape), dtype)
        if key != self.key:
            self.key, self.value = None, None  # free the previous case first
            inputs = _bench.make_inputs(function, shape, dtype)
            ref_impl = "scipy" if _scipy_available() else "numpy"
            reference = _bench.build(function, ref_impl, inputs, THREADS)()
            self.key, self.value = key, (inputs, ref_impl, reference)
        return self.value


def _scipy_available():
    try:
        import scipy.special  # noqa: F401
        import scipy.stats  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def _case_cache():
    return _CaseCache()


@pytest.fixture
def run_case(benchmark, _case_cache):
    """``run_case(case)``: check the implementation against the reference, then time it.

    A wrong answer fails the check and is never timed (pytest.ini silences
    pytest-benchmark's "fixture was not used" warning for that case).
    """
    def run(case):
        function, shape, dtype, impl = case
        inputs, ref_impl, reference = _case_cache.get(function, shape, dtype)
        try:
            fn = _bench.build(function, impl, inputs, THREADS)
        except _bench.Unavailable as exc:
            pytest.skip(str(exc))
        _bench.check_agreement(fn(), reference, dtype)  # a wrong answer fails here
        benchmark.group = f"{function} {_bench.shape_str(shape)} {dtype}"
        benchmark.extra_info.update(
            implementation=impl, reference=ref_impl, threads=THREADS,
            input_bytes=int(sum(a.nbytes for a in inputs)))
        benchmark(fn)
    return run


def pytest_report_header(config):
    from lossmle._cli import config as _config
    cfg = _config.config()
    versions = _bench.library_versions()
    lines = [
        f"lossmle {lossmle.__version__} (SIMD path: {cfg['simd']}), threads {THREADS}; "
        + ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items()),
        f"CPU: {_bench.cpu_model()}; shapes "
        + ", ".join(_bench.shape_str(s) for s in SHAPES) + "; dtypes " + ", ".join(DTYPES),
    ]
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            lines.append(f"WARNING: {var}={os.environ[var]} is set: it can slow NumPy and "
                         f"SciPy; unset it for a fair comparison")
    return lines
