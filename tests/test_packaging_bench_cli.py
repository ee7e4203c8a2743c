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

from lossmle._cli import bench as _bench
from lossmle._cli import bench_impls
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
    (["--impls", "tensorflow"], "tensorflow"),
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
            scipy = set() if function in _bench.OUT_FUNCTIONS else {"scipy"}  # no out=
            assert {"lossmle", "numpy"} | scipy <= set(r["times"])


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


# ---------------------------------------------------------------------------
# CLI edges (issue 27, item 5)
# ---------------------------------------------------------------------------
def test_impls_lossmle_alone_runs_and_is_still_checked(capsys, tmp_path, monkeypatch):
    path = tmp_path / "b.json"
    rc, out, err = run(capsys, "--functions", "logsumexp,softmax_out", "--shapes", "4x5",
                       "--dtypes", "f64", "--impls", "lossmle", "--json", str(path), *FAST)
    assert rc == 0, err
    assert "Traceback" not in out + err
    for r in json.loads(path.read_text())["results"]:
        assert r["status"] == {"lossmle": "ok"}
        assert set(r["times"]) == {"lossmle"}
        assert (r["reference"], r["reference_timed"]) == ("numpy", False)
    header = next(line for line in out.splitlines() if line.startswith("function"))
    assert header.split()[:4] == ["function", "shape", "dtype", "lossmle"]
    assert "numpy" not in header

    # the untimed reference still catches a wrong lossmle
    def wrong_lossmle(function, inputs, threads):
        return lambda: np.zeros(inputs[0].shape[0])
    monkeypatch.setitem(_bench._BUILDERS, "lossmle", wrong_lossmle)
    rc, out, _ = run(capsys, "--functions", "logsumexp", "--shapes", "4x5", "--dtypes", "f64",
                     "--impls", "lossmle", *FAST)
    assert rc == 1
    assert "lossmle at logsumexp 4x5 float64: mismatch with numpy" in out


def test_importing_dunder_main_runs_nothing():
    # pytest --doctest-modules imports every module: lossmle.__main__ must not exit
    code = "import lossmle.__main__; print('imported')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=same_package_cwd())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "imported"


def table_header(out):
    return next(line for line in out.splitlines() if line.startswith("function")).split()


def test_table_drops_empty_columns_and_explains_its_symbols(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # torch: not installed
    rc, out, _ = run(capsys, "--functions", "logsumexp,cross_entropy", "--shapes", "4x5",
                     "--dtypes", "f64", "--impls", "numpy,torch,sklearn", *FAST)
    assert rc == 0
    header = table_header(out)
    assert "torch" not in header  # nothing to show: said in the notes instead
    assert "skipped torch: not installed" in out
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    assert "sklearn" in header  # it has cross_entropy
    row = next(line for line in out.splitlines() if line.startswith("logsumexp"))
    assert "n/a" in row  # no sklearn logsumexp
    assert '"n/a" = no counterpart' in out


def test_table_without_symbols_has_no_legend(capsys):
    rc, out, _ = run(capsys, "--functions", "logsumexp", "--shapes", "4x5", "--dtypes", "f64",
                     "--impls", "numpy", *FAST)
    assert rc == 0
    assert table_header(out)[:5] == ["function", "shape", "dtype", "lossmle", "numpy"]
    assert '" = ' not in out


def test_busy_machine_warning_reaches_the_report_and_the_json(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(_bench.os, "getloadavg", lambda: (99.0, 99.0, 99.0), raising=False)
    path = tmp_path / "b.json"
    rc, out, err = run(capsys, "--functions", "logsumexp", "--shapes", "4x5", "--dtypes",
                       "f64", "--impls", "numpy", "--json", str(path), *FAST)
    assert rc == 0
    assert "machine is busy (load average 99.00" in err
    assert "machine is busy (load average 99.00" in out
    assert any("machine is busy" in n for n in json.loads(path.read_text())["notes"])


def test_plot_reads_at_a_glance(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    path = tmp_path / "b.json"
    rc, _, _ = run(capsys, "--functions", "logsumexp,softmax,entropy", "--shapes", "2x3,40x50",
                   "--dtypes", "f64", "--impls", "scipy,numpy", "--json", str(path), *FAST)
    assert rc == 0
    doc = json.loads(path.read_text())
    fig = _bench.make_figure(doc["results"], doc["info"])
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert [t.split("\n")[0] for t in titles] == ["vs scipy", "vs numpy", "floor / lossmle"]
        scipy_ax, numpy_ax, floor_ax = fig.axes
        # one shared, labelled speed-up axis for the competitors
        assert scipy_ax.get_xscale() == numpy_ax.get_xscale() == "log"
        assert scipy_ax.get_xlim() == numpy_ax.get_xlim()
        fig.canvas.draw()
        ticks = [t.get_text() for t in scipy_ax.get_xticklabels() if t.get_text()]
        assert ticks and all(t.endswith("x") and "^" not in t and "times" not in t
                             for t in ticks)
        # the values on the bars (one per case, top to bottom), recomputed from
        # the JSON's raw medians
        for ax, impl in ((scipy_ax, "scipy"), (numpy_ax, "numpy")):
            texts = sorted(ax.texts, key=lambda t: -t.get_position()[1])
            assert len(texts) == len(doc["results"])
            for t, r in zip(texts, doc["results"]):
                ratio = r["times"][impl]["median_s"] / r["times"]["lossmle"]["median_s"]
                label = t.get_text().strip()
                assert label.endswith("x") and "e" not in label
                assert float(label[:-1]) == pytest.approx(ratio, rel=5e-3)
        floor_texts = {t.get_text().strip() for t in floor_ax.texts}
        for r in doc["results"]:
            ratio = r["floor"]["median_s"] / r["times"]["lossmle"]["median_s"]
            assert f"{ratio:.2f}" in floor_texts
        # a caption: machine, threads, versions and date
        caption = " ".join(t.get_text() for t in fig.texts)
        info = doc["info"]
        for needle in (info["cpu"], f"{info['threads']} threads",
                       f"numpy {np.__version__}", info["date"][:10]):
            assert needle in caption
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------
# floors (issue 26)
# ---------------------------------------------------------------------------
def test_floor_kernels_read_and_copy_everything():
    from lossmle._kernels import parallel as _parallel
    rng = np.random.default_rng(0)
    for n in (1, 7, 1000, 4099):
        x = rng.standard_normal(n)
        for threads in (1, 2, 3):
            src = x.view(np.uint8)
            dst = np.zeros_like(src)
            _parallel.copy_floor(src, dst, threads)
            assert np.array_equal(dst, src)
        assert _parallel.read_floor(x, 1) == x.max()
        xf = x.astype(np.float32)
        assert _parallel.read_floor_f(xf, 1) == float(xf.max())
        # two chunks, one per thread: their maxima added
        half = (n + 1) // 2
        expected = x[:half].max() + (x[half:].max() if n > half else 0.0)
        assert _parallel.read_floor(x, 2) == pytest.approx(expected, rel=1e-15)
    with pytest.raises(ValueError, match="dst"):
        _parallel.copy_floor(np.zeros(8, np.uint8), np.zeros(7, np.uint8), 1)


def test_compute_floor_kernels_compute_what_they_say():
    # n values in blocks of 1024: exp of the shifted logits -8 j / 1024; the
    # entropy and KL terms of p_j ~ j + 1 and q_j ~ 1024 - j (each summing to one)
    special = pytest.importorskip("scipy.special")
    from lossmle._kernels import parallel as _parallel
    j = np.arange(1024)
    block_exp = np.exp(-8.0 * j / 1024).sum()
    p, q = (j + 1) / (1024 * 1025 / 2), (1024 - j) / (1024 * 1025 / 2)
    block_entr, block_kl = special.entr(p).sum(), special.rel_entr(p, q).sum()
    for threads in (1, 2):  # 4 blocks: whole blocks per thread
        n = 4 * 1024
        assert _parallel.exp_floor(n, threads) == pytest.approx(4 * block_exp, rel=1e-13)
        assert _parallel.exp_floor(n, threads, True) == pytest.approx(4 * block_exp,
                                                                      rel=1e-5)
        assert _parallel.log_floor(n, threads) == pytest.approx(4 * block_entr, rel=1e-13)
        assert _parallel.log_floor(n, threads, False, True) == pytest.approx(
            4 * block_kl, rel=1e-12)
    assert _parallel.exp_floor(0, 2) == 0.0


@pytest.mark.parametrize("function, kind", [
    ("logsumexp", "read"), ("cross_entropy", "read"), ("kl_divergence", "read"),
    ("entropy", "read"), ("cross_entropy_prob", "read"), ("softmax", "fresh copy"),
    ("log_softmax", "fresh copy"), ("softmax_out", "copy"), ("log_softmax_out", "copy"),
    ("cross_entropy_with_grad", "fresh copy"),
])
def test_floor_column_json_and_header(capsys, tmp_path, function, kind):
    path = tmp_path / "b.json"
    rc, out, _ = run(capsys, "--functions", function, "--shapes", "3x5", "--dtypes", "f32",
                     "--impls", "numpy", "--json", str(path), *FAST)
    assert rc == 0
    (r,) = json.loads(path.read_text())["results"]
    floors = r["floors"]
    # the memory floor, and the compute floor: exp, or log for KL and entropy
    assert set(floors) == ({kind, "exp"} if function not in ("kl_divergence", "entropy")
                           else {kind, "log"})
    for name, f in floors.items():
        assert f["kind"] == name
        assert len(f["samples_s"]) == r["rounds"] == 2
        assert f["median_s"] == pytest.approx(float(np.median(f["samples_s"])))
    floor = r["floor"]  # the binding one: the larger
    assert floor == max(floors.values(), key=lambda f: f["median_s"])
    assert r["floor_ratio"] == pytest.approx(
        floor["median_s"] / r["times"]["lossmle"]["median_s"])
    kind = floor["kind"]
    assert table_header(out)[-2:] == ["floor", "floor/lossmle"]
    row = next(line for line in out.splitlines() if line.startswith(function + " "))
    assert row.split()[-1] == f"{r['floor_ratio']:.2f}"
    assert kind + " " in row
    # the header says how each floor is measured
    assert "a parallel read of the inputs at full vector width" in out
    assert "into a preallocated array" in out and "into a new array" in out
    assert "vectorised exp of one value per element" in out
    assert "entropy / KL terms (a vectorised log each) of one value per element" in out


@pytest.fixture
def jax_x64_restored():
    jax = pytest.importorskip("jax")
    before = jax.config.jax_enable_x64
    yield jax
    jax.config.update("jax_enable_x64", before)


@pytest.mark.parametrize("impl", ["jax", "numba"])
def test_optional_competitors_agree_with_scipy(impl, request):
    if impl == "jax":
        request.getfixturevalue("jax_x64_restored")
    else:
        pytest.importorskip("numba")
    for function in _bench.FUNCTIONS:
        for dtype in (_bench.DTYPES if impl == "jax" else ["float64"]):
            r = _bench.run_case(function, (6, 7), dtype, ["lossmle", "scipy", "numpy", impl],
                                rounds=1, threads=2, sample_seconds=0, floor=False)
            status = r["status"][impl]
            if function in _bench.OUT_FUNCTIONS and impl == "jax":
                assert status.startswith("skipped")
            else:
                assert status == "ok", (function, dtype, status)
                assert impl in r["times"]


def test_missing_optional_competitors_are_skipped_and_said(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.setattr(bench_impls, "_NUMBA_KERNELS", None)
    rc, out, _ = run(capsys, "--functions", "softmax", "--shapes", "2x3", "--dtypes", "f64",
                     "--impls", "numpy,jax,numba", *FAST)
    assert rc == 0
    assert "skipped jax: not installed" in out and "skipped numba: not installed" in out
    assert "jax" not in table_header(out) and "numba" not in table_header(out)
