"""``lossmle bench``: time lossmle against SciPy, NumPy, torch, scikit-learn, jax and numba.

Design
------
* Three modules: the cases and competitors (``bench_impls``: inputs,
  references, one builder per implementation), the timing (here: floors,
  interleaved rounds, the command line) and the report (``bench_report``:
  table, header, plot).
* ``FUNCTIONS`` names the benchmarked operations; ``make_inputs`` builds their
  inputs (fixed seed, outside any timed call); ``build`` returns, for one
  (function, implementation), a zero-argument callable over prepared inputs
  (torch tensors are made here too, so conversion is never timed).
* Every implementation's first result is checked against a reference (SciPy's
  result, NumPy's when SciPy is absent) with dtype-appropriate tolerances
  before it is timed: a fast wrong answer is reported, never timed.
* Timing is interleaved: each round calls every implementation once (the order
  rotates from round to round), so a noisy machine shifts all of them alike;
  the table shows medians.  Calls shorter than ``--sample-ms`` are repeated
  inside one sample and the sample divided by the repeat count.
* The same building blocks drive the pytest-benchmark suite in benchmarks/.
* Each case also times its *floor*, in the same rounds: what the machine's
  memory allows for the case's bytes (`floor_kind`): a parallel read of the
  inputs at full vector width for the reductions, a parallel copy into a
  preallocated output for ``out=`` cases, into a fresh array otherwise; and
  what its arithmetic allows (`build_compute_floor`): lossmle's own exp, or
  its KL / entropy terms, over as many values from L1.  The larger is the
  binding floor; ``floor / lossmle`` (1.0 = at the limit) says how far
  lossmle is from it on this machine, whatever its bandwidth.

The implementations are written to be the best version of each competitor a
careful user would write: SciPy's public functions as documented; NumPy with
the max-shift and in-place operations (one full-size temporary where the
result needs it); torch's functional API on tensors sharing the NumPy buffers,
with ``torch.set_num_threads`` matching ``--threads``; ``jax.jit`` of jax.nn /
jax.scipy (XLA fuses the steps), and a fused parallel numba kernel per function
(one pass per row statistic, ``prange`` over rows, ``fastmath``), the code a
performance-minded user writes by hand.  jax and numba are optional: used
where installed, never required.
"""
import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._validation import MAX_THREADS

from .bench_impls import (  # noqa: F401  (the cases' names, also for benchmarks/ and tests)
    BANDWIDTH_MIB, CHECK_RTOL, DTYPES, FLOOR_KINDS, FULL_ROUNDS, FUNCTION_HELP, FUNCTIONS,
    IMPLEMENTATIONS, OUT_FUNCTIONS, QUICK_CASE_BUDGET_S, QUICK_DTYPES, QUICK_ROUNDS,
    QUICK_SHAPES, QUICK_TARGET_S, SEED, SHAPES, Unavailable, _BUILDERS, _NUMPY, _out_buffer,
    applicable, build, check_agreement, library_versions, make_inputs, np_logsumexp,
    reference_implementation, shape_str,
)
from .bench_report import (  # noqa: F401
    format_table, header_lines, make_figure, shown_implementations, write_plot,
)


# ---------------------------------------------------------------------------
# Machine facts
# ---------------------------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def measure_read_bandwidth(threads=1, mib=BANDWIDTH_MIB, repeats=7):
    """This machine's read bandwidth in GB/s: ``np.sum`` of ``mib`` MiB of float64.

    The array is split into ``threads`` chunks summed concurrently (NumPy's
    reductions release the GIL); NumPy's sum is vectorised with several
    accumulators, close to the limit of a hand-written 4-accumulator loop.
    Returns the best of ``repeats`` (the limit, not a typical time).
    """
    n = mib * (1 << 20) // 8
    a = np.ones(n)  # written once: pages are faulted in before timing
    threads = max(1, int(threads))
    chunks = np.array_split(a, threads)
    best = math.inf
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.sum, chunks))
        for _ in range(repeats):
            t0 = time.perf_counter()
            total = sum(pool.map(np.sum, chunks))
            best = min(best, time.perf_counter() - t0)
    if total != n:  # the sum must really have been computed
        raise RuntimeError(f"bandwidth probe summed to {total}, expected {n}")
    return a.nbytes / best / 1e9


# ---------------------------------------------------------------------------
# Floors: what the machine allows for a case's bytes
# ---------------------------------------------------------------------------
#: how each floor is measured (the table's header names them)
#: functions needing (at least) one exp per input element
EXP_BOUND = ("logsumexp", "softmax", "log_softmax", "softmax_out", "log_softmax_out",
             "cross_entropy", "cross_entropy_prob", "cross_entropy_with_grad")


def floor_kind(function):
    """Which floor bounds ``function``: "read", "copy" or "fresh copy"."""
    if function in OUT_FUNCTIONS:
        return "copy"
    if function in ("softmax", "log_softmax", "cross_entropy_with_grad"):
        return "fresh copy"  # a full-size result in a new array
    return "read"


def floor_threads(inputs, threads):
    """The floors' thread count: ``threads``, or 1 below the size where lossmle's
    kernels start threads (a thread team costs more than it saves there)."""
    from .._validation import PARALLEL_MIN_ELEMENTS
    return 1 if inputs[0].size < PARALLEL_MIN_ELEMENTS else max(1, int(threads or 1))


def _read_threads(a, threads):
    """Threads reading one array of a read floor: 1 for a small one (the class
    targets), whose second thread team would cost more than the read."""
    from .._validation import PARALLEL_MIN_ELEMENTS
    return 1 if a.size < PARALLEL_MIN_ELEMENTS else threads


def build_compute_floor(function, inputs, threads):
    """``(kind, callable)``: the compute floor of ``function`` ("exp" or "log")."""
    from .._kernels import parallel as _parallel
    x = inputs[0]
    n, single, threads = int(x.size), x.dtype == np.float32, floor_threads(inputs, threads)
    if function in EXP_BOUND:
        return "exp", lambda: _parallel.exp_floor(n, threads, single)
    kl = function == "kl_divergence"
    return "log", lambda: _parallel.log_floor(n, threads, single, kl)


def build_floor(function, inputs, threads):
    """A zero-argument callable doing the floor of ``function`` on ``inputs``.

    The read floor reads every input array (targets too), split into
    ``threads`` contiguous chunks like the kernels' static schedules; the copy
    floors copy the first input (the logits) with as many threads (one below
    lossmle's threading threshold: `floor_threads`).
    """
    from .._kernels import parallel as _parallel
    threads = floor_threads(inputs, threads)
    kind = floor_kind(function)
    if kind == "read":
        reads = []
        for a in inputs:
            flat = np.ascontiguousarray(a).reshape(-1)
            if flat.dtype == np.float32:
                reads.append((_parallel.read_floor_f, flat, _read_threads(flat, threads)))
            elif flat.nbytes % 8 == 0:
                reads.append((_parallel.read_floor, flat.view(np.float64),
                              _read_threads(flat, threads)))
            else:
                raise ValueError(f"no read floor for {flat.dtype} of {flat.size} items")

        def run():
            for read, v, t in reads:
                read(v, t)
        return run
    x = np.ascontiguousarray(inputs[0])
    src = x.reshape(-1).view(np.uint8)
    if kind == "copy":
        dst = _out_buffer(src)

        def run():
            _parallel.copy_floor(src, dst, threads)
            return dst
        return run

    def run_fresh():
        out = np.empty_like(x)
        _parallel.copy_floor(src, out.reshape(-1).view(np.uint8), threads)
        return out
    return run_fresh


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def time_interleaved(callables, rounds, sample_seconds=0.005, first_call_s=None,
                     budget_seconds=None, min_rounds=3):
    """Samples (seconds per call) of each callable, interleaved.

    Calls shorter than ``sample_seconds`` are repeated within one sample; the
    repeat count comes from ``first_call_s[name]`` (the duration of a call
    already made, e.g. the agreement check's) or from one calibration call.
    Each round takes one sample of every callable, in an order rotated by one
    each round.  With ``budget_seconds``, the round count is lowered (not
    below ``min_rounds``) so that the rounds should fit the budget.
    Returns ``({name: {"samples": [...], "repeat": k}}, rounds_run)``.
    """
    names = list(callables)
    first_call_s = dict(first_call_s or {})
    repeat = {}
    for name in names:
        dt = first_call_s.get(name)
        if dt is None:
            t0 = time.perf_counter()
            callables[name]()
            dt = time.perf_counter() - t0
        repeat[name] = 1 if dt >= sample_seconds else min(
            100_000, max(1, int(sample_seconds / max(dt, 1e-7))))
        first_call_s[name] = dt
    if budget_seconds is not None and names:
        per_round = sum(max(first_call_s[n], 1e-9) * repeat[n] for n in names)
        rounds = max(min(rounds, min_rounds), min(rounds, int(budget_seconds / per_round)))
    samples = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            for i in range(len(names)):
                name = names[(i + r) % len(names)]
                fn, k = callables[name], repeat[name]
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                samples[name].append((time.perf_counter() - t0) / k)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: {"samples": samples[name], "repeat": repeat[name]} for name in names}, rounds


FLOOR = "(floor)"  # the floors' keys among the timed callables: not implementations
COMPUTE_FLOOR = "(compute floor)"


def run_case(function, shape, dtype, implementations, rounds, threads, seed=SEED,
             sample_seconds=0.005, budget_seconds=None, min_rounds=3, floor=True):
    """Build, check and time one case; returns its JSON-ready result dict.

    With ``floor``, the case's floors are timed in the same rounds: the memory
    floor (`build_floor`) and the compute floor (`build_compute_floor`), both
    under ``floors``; ``floor`` is the larger (the
    binding limit) and ``floor_ratio`` its median over lossmle's (1.0 = at
    the limit).
    """
    inputs = make_inputs(function, shape, dtype, seed)
    input_bytes = int(sum(a.nbytes for a in inputs))
    status, callables = {}, {}
    for impl in implementations:
        if not applicable(function, impl):
            continue
        try:
            callables[impl] = build(function, impl, inputs, threads)
        except Unavailable as exc:
            status[impl] = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001  (e.g. a jit compiling the call fails)
            status[impl] = f"error: {exc.__class__.__name__}: {exc}"
    results, first_call_s = {}, {}
    for impl in list(callables):
        try:
            t0 = time.perf_counter()
            results[impl] = callables[impl]()
            first_call_s[impl] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001  (a competitor failing is reported)
            status[impl] = f"error: {exc.__class__.__name__}: {exc}"
            del callables[impl]
    reference_timed = True
    if not any(name in results for name in ("scipy", "numpy")):
        # e.g. --impls lossmle: the check still needs a reference; NumPy's
        # result serves, computed once and not timed
        results["numpy"] = build(function, "numpy", inputs, threads)()
        reference_timed = False
    ref_name = reference_implementation(results)
    for impl in list(callables):
        if impl == ref_name:
            status[impl] = "ok (reference)"
            continue
        try:
            check_agreement(results[impl], results[ref_name], dtype)
            status[impl] = "ok"
        except AssertionError as exc:
            first = " ".join(str(exc).split())[:300]
            status[impl] = f"mismatch with {ref_name}: {first}"
            del callables[impl]
    del results
    floor_name = compute_kind = None
    if floor and "lossmle" in callables:
        floor_name = floor_kind(function)
        callables[FLOOR] = build_floor(function, inputs, threads)
        compute_kind, callables[COMPUTE_FLOOR] = build_compute_floor(function, inputs,
                                                                     threads)
    timing, rounds_run = time_interleaved(callables, rounds, sample_seconds, first_call_s,
                                          budget_seconds, min_rounds) if callables else ({}, 0)
    floor_timings = {}
    for key, kind in ((FLOOR, floor_name), (COMPUTE_FLOOR, compute_kind)):
        if key in timing:
            floor_timings[kind] = timing.pop(key)
    times = {}
    for impl, t in timing.items():
        times[impl] = {
            "median_s": statistics.median(t["samples"]),
            "min_s": min(t["samples"]),
            "samples_s": t["samples"],
            "calls_per_sample": t["repeat"],
        }
    out = {
        "function": function,
        "shape": [int(d) for d in shape],
        "dtype": np.dtype(dtype).name,
        "input_bytes": input_bytes,
        "reference": ref_name,
        "reference_timed": reference_timed,
        "rounds": rounds_run,
        "status": status,
        "times": times,
        "speedup": {},
        "gbps": None,
        "floors": {},
        "floor": None,
        "floor_ratio": None,
    }
    if "lossmle" in times:
        base = times["lossmle"]["median_s"]
        out["gbps"] = input_bytes / base / 1e9
        out["speedup"] = {impl: t["median_s"] / base for impl, t in times.items()
                          if impl != "lossmle"}
    for kind, t in floor_timings.items():
        fs = t["samples"]
        out["floors"][kind] = {"kind": kind, "median_s": statistics.median(fs),
                               "min_s": min(fs), "samples_s": fs,
                               "calls_per_sample": t["repeat"]}
    if out["floors"]:
        out["floor"] = max(out["floors"].values(), key=lambda f: f["median_s"])
        out["floor_ratio"] = out["floor"]["median_s"] / times["lossmle"]["median_s"]
    return out


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def _csv_choice(choices, what, aliases=None):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {what} list")
        if items == ["all"]:
            return list(choices)
        out = []
        for item in items:
            item = (aliases or {}).get(item, item)
            if item not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {item!r}; choose from {', '.join(choices)} or 'all'")
            if item not in out:
                out.append(item)
        return out
    return parse


def parse_shapes(text):
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("empty shape list")
    if items == ["all"]:
        return list(SHAPES)
    shapes = []
    for item in items:
        parts = item.lower().replace("_", "").split("x")
        try:
            if len(parts) != 2:
                raise ValueError
            shape = (int(parts[0]), int(parts[1]))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"shape {item!r} is not ROWSxCLASSES (e.g. 1024x1000)") from None
        if min(shape) < 1:
            raise argparse.ArgumentTypeError(f"shape {item!r} must have positive sizes")
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def _positive_int(what, most=None):
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, "
                                             f"got {text!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {n}")
        if most is not None and n > most:
            raise argparse.ArgumentTypeError(f"{what} must be at most {most}, got {n}")
        return n
    return parse


def _non_negative_float(what):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not v >= 0 or math.isinf(v):
            raise argparse.ArgumentTypeError(f"{what} must be >= 0, got {text!r}")
        return v
    return parse


def make_parser():
    quick = ", ".join(shape_str(s) for s in QUICK_SHAPES)
    p = argparse.ArgumentParser(
        prog="lossmle bench",
        description="Time lossmle against SciPy, NumPy, torch, scikit-learn, jax and numba "
                    "(where installed) with interleaved rounds, after checking that all "
                    "agree, next to the machine's own floor for each case.",
        epilog=f"Quick default: every function at {quick}, {', '.join(QUICK_DTYPES)}, "
               f"{QUICK_ROUNDS} rounds. --full: shapes {', '.join(shape_str(s) for s in SHAPES)}, "
               f"dtypes {', '.join(DTYPES)}, {FULL_ROUNDS} rounds. Options given explicitly "
               f"override either. Functions: " + "; ".join(
                   f"{k}: {v}" for k, v in FUNCTION_HELP.items()))
    p.add_argument("--full", action="store_true",
                   help="every shape and dtype, more rounds (several minutes)")
    p.add_argument("--functions", type=_csv_choice(FUNCTIONS, "function"),
                   help="comma-separated functions (default: all)")
    p.add_argument("--shapes", type=parse_shapes,
                   help="comma-separated ROWSxCLASSES shapes, or 'all'")
    p.add_argument("--dtypes", type=_csv_choice(DTYPES, "dtype",
                                                {"f64": "float64", "f32": "float32"}),
                   help="comma-separated dtypes: float64, float32 (or 'all')")
    p.add_argument("--impls", type=_csv_choice(IMPLEMENTATIONS, "implementation"),
                   help="comma-separated implementations to include (lossmle is always "
                        "included, and checked against NumPy even when NumPy is not "
                        "listed; default: all that are installed)")
    p.add_argument("--threads", type=_positive_int("--threads", MAX_THREADS),
                   help="threads for lossmle and torch (default: lossmle.get_num_threads())")
    p.add_argument("--rounds", type=_positive_int("--rounds"),
                   help=f"interleaved rounds per case (default {QUICK_ROUNDS}, "
                        f"--full {FULL_ROUNDS})")
    p.add_argument("--sample-ms", type=_non_negative_float("--sample-ms"), default=5.0,
                   help="repeat calls shorter than this within one sample (default 5)")
    p.add_argument("--bandwidth-mib", type=int, default=BANDWIDTH_MIB,
                   help=f"size of the read-bandwidth probe (default {BANDWIDTH_MIB}; "
                        f"0 skips it)")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the inputs")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--plot", metavar="PATH.png",
                   help="also draw lossmle's speed-ups as a bar chart (needs matplotlib)")
    return p


def resolve_settings(args):
    """``(functions, shapes, dtypes, implementations, rounds, threads)`` from parsed args.

    Quick defaults, or ``--full``'s; options given explicitly override either.
    """
    import lossmle
    functions = args.functions or list(FUNCTIONS)
    shapes = args.shapes or list(SHAPES if args.full else QUICK_SHAPES)
    dtypes = args.dtypes or list(DTYPES if args.full else QUICK_DTYPES)
    rounds = args.rounds or (FULL_ROUNDS if args.full else QUICK_ROUNDS)
    threads = args.threads or lossmle.get_num_threads()
    impls = ["lossmle"] + [i for i in (args.impls or IMPLEMENTATIONS) if i != "lossmle"]
    return functions, shapes, dtypes, impls, rounds, threads


def _progress(text, final=False):
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text + ("\n" if final else ""))
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on errors, 0 on --help
        return int(exc.code or 0)
    if args.bandwidth_mib < 0:
        parser.print_usage(sys.stderr)
        print("lossmle bench: error: --bandwidth-mib must be >= 0", file=sys.stderr)
        return 2
    for path, what in ((args.json, "--json"), (args.plot, "--plot")):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder is not None and not os.path.isdir(folder):
            # fail before the benchmark, not after it
            parser.print_usage(sys.stderr)
            print(f"lossmle bench: error: {what}: no such directory: {folder}",
                  file=sys.stderr)
            return 2
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401  (fail before the benchmark, not after)
        except ImportError:
            print("lossmle bench: --plot needs matplotlib: pip install 'lossmle[plot]' "
                  "(or pip install matplotlib)", file=sys.stderr)
            return 2

    import lossmle
    from . import config as _config

    functions, shapes, dtypes, impls, rounds, threads = resolve_settings(args)

    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"lossmle bench: WARNING: {var}={os.environ[var]} is set; it can slow NumPy "
                  f"and SciPy (their results here may be pessimistic). Unset it for a fair "
                  f"comparison: env -u {var} lossmle bench ...", file=sys.stderr)

    notes = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        busy = (f"WARNING: the machine is busy (load average {load:.2f} on "
                f"{os.cpu_count()} CPUs): timings will be noisy, threaded code suffers most")
        print(f"lossmle bench: {busy}", file=sys.stderr)
        notes.append(busy)  # and in the report and the JSON, which outlive the terminal
    versions = library_versions()
    cfg = _config.config()
    if not args.full:
        notes.append(
            "this run: shapes " + ", ".join(shape_str(s) for s in shapes)
            + "; dtypes " + ", ".join(dtypes)
            + (f"; not run: shapes {', '.join(shape_str(s) for s in SHAPES if s not in shapes)}"
               if any(s not in shapes for s in SHAPES) else "")
            + (f"; dtypes {', '.join(d for d in DTYPES if d not in dtypes)}"
               if any(d not in dtypes for d in DTYPES) else "")
            + " (use --full for everything, several minutes)")
    for impl in impls:
        if impl != "lossmle" and impl != "numpy" and versions.get(impl) is None:
            notes.append(f"skipped {impl}: not installed")
    info = {
        "lossmle": lossmle.__version__, "simd": cfg["simd"], "openmp": cfg["openmp"],
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads,
        "versions": versions, "rounds": rounds,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "load_average_1min": load,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if args.bandwidth_mib:
        _progress(f"measuring read bandwidth ({args.bandwidth_mib} MiB, {threads} thread(s))")
        info["bandwidth"] = {
            "gbps": measure_read_bandwidth(threads, args.bandwidth_mib),
            "mib": args.bandwidth_mib, "threads": threads, "repeats": 7}
    if "torch" in impls and versions["torch"]:
        import torch
        torch.set_num_threads(threads)

    # quick mode keeps to its time budget by giving slow cases fewer rounds
    budget = None if (args.full or args.rounds) else QUICK_CASE_BUDGET_S
    cases = [(f, s, d) for s in shapes for d in dtypes for f in functions]
    results = []
    t_start = time.perf_counter()
    for i, (function, shape, dtype) in enumerate(cases, 1):
        _progress(f"[{i}/{len(cases)}] {function} {shape_str(shape)} {dtype} "
                  f"({len(cases) - i} left, {time.perf_counter() - t_start:.0f} s so far)")
        min_rounds = 3
        if budget is not None:
            left = QUICK_TARGET_S - (time.perf_counter() - t_start)
            per_case = left / (len(cases) - i + 1)
            budget = min(QUICK_CASE_BUDGET_S, max(0.0, per_case))
            min_rounds = 3 if per_case >= 1.0 else 1
        results.append(run_case(function, shape, dtype, impls, rounds, threads, args.seed,
                                args.sample_ms / 1000, budget, min_rounds))
    _progress(f"done: {len(cases)} cases in {time.perf_counter() - t_start:.1f} s", final=True)

    bw = info.get("bandwidth", {}).get("gbps")
    shown = shown_implementations(results, impls)
    print("\n".join(header_lines(info)))
    fewer = [r for r in results if r["times"] and r["rounds"] < rounds]
    if fewer:
        notes.append(f"fewer rounds (quick mode: at most {QUICK_CASE_BUDGET_S:g} s per case, "
                     f"{QUICK_TARGET_S:g} s in all): " + ", ".join(
            f"{r['function']} {shape_str(r['shape'])} {r['dtype']}: {r['rounds']}"
            for r in fewer))
    for note in notes:
        print(note)
    print()
    print(format_table(results, shown, bw))
    problems = [(r, impl, s) for r in results for impl, s in r["status"].items()
                if s.startswith(("mismatch", "error"))]
    for r, impl, s in problems:
        print(f"\n{impl} at {r['function']} {shape_str(r['shape'])} {r['dtype']}: {s}")
    slower = [(r, impl) for r in results for impl, x in r["speedup"].items() if x < 1]
    if slower:
        print("\nlossmle is slower than: " + "; ".join(
            f"{impl} at {r['function']} {shape_str(r['shape'])} {r['dtype']} "
            f"({r['speedup'][impl]:.2f}x)" for r, impl in slower))
    print("\nA ratio snapshot of this machine and moment, not a promise: "
          "rerun on yours (lossmle bench --full for every shape and dtype).")

    if args.json:
        doc = {
            "schema": "lossmle-bench/1",
            "info": info,
            "settings": {"functions": functions, "shapes": [list(s) for s in shapes],
                         "dtypes": dtypes, "implementations": impls, "rounds": rounds,
                         "threads": threads, "full": bool(args.full), "seed": args.seed,
                         "sample_ms": args.sample_ms},
            "notes": notes,
            "results": results,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        write_plot(args.plot, results, info)
        print(f"plot written to {args.plot}")
    lossmle_wrong = any(impl == "lossmle" for _, impl, _ in problems)
    return 1 if lossmle_wrong else 0
