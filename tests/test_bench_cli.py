"""``lossmle bench``: argument handling, the agreement check and the JSON schema.

Timings are never asserted (they are measurements, not behaviour); the runs
here use tiny shapes, one or two rounds and no calibration so the file stays
fast.  Expected values (input sizes, ratios) are recomputed here from the
JSON's own raw fields or from the arguments, never taken from the code's
summary.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from lossmle import _bench
from conftest import same_package_cwd

# tiny and fast: no bandwidth probe beyond 1 MiB, no repeated calls per sample
FAST = ["--rounds", "2", "--sample-ms", "0", "--bandwidth-mib", "1"]


def run(capsys, *argv):
    rc = _bench.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------
# argument handling
# ---------------------------------------------------------------------------
def test_help_exits_zero_and_lists_options(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    for option in ("--full", "--functions", "--shapes", "--dtypes", "--threads", "--json",
                   "--plot", "--rounds", "--impls"):
        assert option in out


@pytest.mark.parametrize("argv, needle", [
    (["--functions", "logsumexpp"], "logsumexpp"),
    (["--functions", ""], "function"),
    (["--shapes", "10by3"], "10by3"),
    (["--shapes", "0x5"], "0x5"),
    (["--shapes", "4x5x6"], "4x5x6"),
    (["--dtypes", "float16"], "float16"),
    (["--impls", "jax"], "jax"),
    (["--threads", "0"], "--threads"),
    (["--threads", "two"], "--threads"),
    (["--threads", "1025"], "at most 1024"),   # n_threads' ceiling, before any timing
    (["--json", "/nonexistent-dir/r.json"], "no such directory"),   # not after the run
    (["--plot", "/nonexistent-dir/r.png"], "no such directory"),
    (["--rounds", "-1"], "--rounds"),
    (["--sample-ms", "nan"], "--sample-ms"),
    (["--bandwidth-mib", "-1"], "--bandwidth-mib"),
    (["--no-such-option"], "--no-such-option"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_arguments_exit_2_naming_the_problem(capsys, argv, needle):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert needle in err
    assert out == ""  # nothing was benchmarked


def parsed(*argv):
    return _bench.resolve_settings(_bench.make_parser().parse_args(list(argv)))


def test_quick_defaults_are_a_subset_and_full_is_everything():
    functions, shapes, dtypes, impls, rounds, threads = parsed()
    assert functions == list(_bench.FUNCTIONS)
    assert shapes == [(1024, 1000), (256, 50257)]
    assert dtypes == ["float64"]
    assert rounds == _bench.QUICK_ROUNDS
    assert impls[0] == "lossmle" and set(impls) == set(_bench.IMPLEMENTATIONS)
    assert threads >= 1

    _, shapes, dtypes, _, rounds, _ = parsed("--full")
    assert shapes == [(8, 10), (1024, 1000), (4096, 4096), (256, 50257), (1_000_000, 4)]
    assert dtypes == ["float64", "float32"]
    assert rounds == _bench.FULL_ROUNDS > _bench.QUICK_ROUNDS


def test_explicit_options_override_full():
    functions, shapes, dtypes, impls, rounds, threads = parsed(
        "--full", "--functions", "entropy,softmax,entropy", "--shapes", "3x4, 1_000x2",
        "--dtypes", "f32", "--impls", "numpy", "--rounds", "2", "--threads", "1")
    assert functions == ["entropy", "softmax"]  # order kept, duplicates dropped
    assert shapes == [(3, 4), (1000, 2)]
    assert dtypes == ["float32"]
    assert impls == ["lossmle", "numpy"]  # lossmle is always measured
    assert (rounds, threads) == (2, 1)
    assert parsed("--shapes", "all")[1] == list(_bench.SHAPES)
    assert parsed("--functions", "all")[0] == list(_bench.FUNCTIONS)


# ---------------------------------------------------------------------------
# a run: table, progress, JSON
# ---------------------------------------------------------------------------
def test_json_schema_and_consistency(capsys, tmp_path):
    path = tmp_path / "bench.json"
    rc, out, err = run(capsys, "--functions", "logsumexp,cross_entropy",
                       "--shapes", "8x10,3x5", "--dtypes", "float32",
                       "--impls", "scipy,numpy", "--json", str(path), *FAST)
    assert rc == 0
    doc = json.loads(path.read_text())
    assert doc["schema"] == "lossmle-bench/1"
    assert set(doc) >= {"info", "settings", "notes", "results"}
    info = doc["info"]
    for key in ("lossmle", "simd", "cpu", "threads", "versions", "rounds", "bandwidth"):
        assert key in info
    assert info["bandwidth"]["mib"] == 1 and info["bandwidth"]["gbps"] > 0
    assert doc["settings"]["shapes"] == [[8, 10], [3, 5]]
    assert doc["settings"]["implementations"] == ["lossmle", "scipy", "numpy"]

    results = doc["results"]
    assert [(r["function"], r["shape"], r["dtype"]) for r in results] == [
        ("logsumexp", [8, 10], "float32"), ("cross_entropy", [8, 10], "float32"),
        ("logsumexp", [3, 5], "float32"), ("cross_entropy", [3, 5], "float32")]
    for r in results:
        rows, classes = r["shape"]
        expected_bytes = rows * classes * 4 + (rows * 8 if r["function"] == "cross_entropy"
                                               else 0)
        assert r["input_bytes"] == expected_bytes
        assert r["reference"] == "scipy"
        assert r["status"] == {"lossmle": "ok", "scipy": "ok (reference)", "numpy": "ok"}
        assert set(r["times"]) == {"lossmle", "scipy", "numpy"}
        for t in r["times"].values():
            assert len(t["samples_s"]) == 2 == r["rounds"]
            assert t["median_s"] == pytest.approx(float(np.median(t["samples_s"])))
            assert t["min_s"] == min(t["samples_s"]) > 0
        base = r["times"]["lossmle"]["median_s"]
        assert r["speedup"] == pytest.approx(
            {k: r["times"][k]["median_s"] / base for k in ("scipy", "numpy")})
        assert r["gbps"] == pytest.approx(expected_bytes / base / 1e9)

    # the table: a header naming the CPU and SIMD path, one row per case
    assert "CPU:" in out and "SIMD path:" in out and "read bandwidth:" in out
    rows = [line for line in out.splitlines() if line.startswith(("logsumexp", "cross_entropy"))]
    assert len(rows) == 4
    assert "ratio snapshot" in out
    # progress on stderr, one line per case with the count
    assert "[1/4]" in err and "[4/4]" in err


def test_every_competitor_agrees_with_scipy_on_every_function():
    # the competitor code itself (NumPy, torch, sklearn where installed) against
    # SciPy's result: all must pass the agreement check, or nothing is timed
    impls = ["lossmle", "scipy", "numpy", "torch", "sklearn"]
    for function in _bench.FUNCTIONS:
        for dtype in _bench.DTYPES:
            r = _bench.run_case(function, (6, 7), dtype, impls, rounds=1, threads=1,
                                sample_seconds=0)
            for impl, status in r["status"].items():
                assert status.startswith(("ok", "skipped")), (function, dtype, impl, status)
            assert {"lossmle", "scipy", "numpy"} <= set(r["times"])


def test_a_wrong_competitor_is_reported_and_not_timed(capsys, monkeypatch):
    def wrong_numpy_logsumexp(x):
        out = _bench.np_logsumexp(x)
        out[0] += 1e-6  # well above float64's tolerance
        return out
    monkeypatch.setitem(_bench._NUMPY, "logsumexp", wrong_numpy_logsumexp)
    rc, out, _ = run(capsys, "--functions", "logsumexp", "--shapes", "4x5",
                     "--dtypes", "float64", "--impls", "scipy,numpy", *FAST)
    assert rc == 0  # a wrong competitor is its problem, reported, not ours
    assert "WRONG" in out
    assert "numpy at logsumexp 4x5 float64: mismatch with scipy" in out


def test_a_wrong_lossmle_fails_the_run(capsys, monkeypatch, tmp_path):
    def wrong_lossmle(function, inputs, threads):
        return lambda: np.zeros(inputs[0].shape[0])  # fast and wrong
    monkeypatch.setitem(_bench._BUILDERS, "lossmle", wrong_lossmle)
    path = tmp_path / "b.json"
    rc, out, _ = run(capsys, "--functions", "logsumexp", "--shapes", "4x5",
                     "--dtypes", "float64", "--impls", "numpy", "--json", str(path), *FAST)
    assert rc == 1
    r = json.loads(path.read_text())["results"][0]
    assert r["status"]["lossmle"].startswith("mismatch with numpy")
    assert "lossmle" not in r["times"] and r["speedup"] == {} and r["gbps"] is None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_agreement_check_tolerance(dtype):
    ref = np.array([1.0, 2.0, 3.0])
    rtol = _bench.CHECK_RTOL[dtype]
    _bench.check_agreement(ref * (1 + rtol / 10), ref, dtype)
    with pytest.raises(AssertionError):
        _bench.check_agreement(ref * (1 + rtol * 10), ref, dtype)
    with pytest.raises(AssertionError):
        _bench.check_agreement((ref, ref), ref, dtype)  # a (loss, grad) pair vs one value
    with pytest.raises(AssertionError):
        _bench.check_agreement(ref[:2], ref, dtype)


def test_openblas_coretype_warns(capsys, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    rc, _, err = run(capsys, "--functions", "softmax", "--shapes", "2x3", "--dtypes", "f64",
                     "--impls", "numpy", *FAST)
    assert rc == 0
    assert "WARNING: OPENBLAS_CORETYPE=Haswell" in err


def test_missing_torch_is_skipped_and_said(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    path = tmp_path / "b.json"
    rc, out, _ = run(capsys, "--functions", "softmax", "--shapes", "2x3", "--dtypes", "f64",
                     "--impls", "numpy,torch", "--json", str(path), *FAST)
    assert rc == 0
    assert "skipped torch: not installed" in out
    r = json.loads(path.read_text())["results"][0]
    assert r["status"]["torch"].startswith("skipped: torch not installed")
    assert "torch" not in r["times"]


def test_plot_without_matplotlib_fails_fast_with_a_message(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc, out, err = run(capsys, "--plot", str(tmp_path / "p.png"), *FAST)
    assert rc == 2
    assert "matplotlib" in err and "lossmle[plot]" in err
    assert out == ""  # failed before benchmarking anything


def test_plot_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "p.png"
    rc, _, _ = run(capsys, "--functions", "logsumexp,softmax,entropy", "--shapes", "2x3,4x5",
                   "--dtypes", "f64", "--impls", "scipy,numpy", "--plot", str(path), *FAST)
    assert rc == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_dash_m_dispatches_to_bench():
    proc = subprocess.run([sys.executable, "-m", "lossmle", "bench", "--help"],
                          capture_output=True, text=True, timeout=120,
                          cwd=same_package_cwd())
    assert proc.returncode == 0, proc.stderr
    assert "usage: lossmle bench" in proc.stdout
