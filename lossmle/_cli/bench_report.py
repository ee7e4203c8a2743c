"""``lossmle bench``'s report: the table, the header lines and the plot of one
run's results (the JSON is the results themselves)."""
from .bench_impls import FLOOR_KINDS, IMPLEMENTATIONS, Unavailable, shape_str


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def fmt_time(seconds):
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            break
    return f"{seconds / scale:.3g} {unit}"


def shown_implementations(results, implementations):
    """The table's columns: lossmle, and each competitor with something to show
    in at least one case (a time, or a WRONG / error); an all-empty column is
    left out (the notes say what was skipped)."""
    def informative(r, impl):
        return impl in r["times"] or r["status"].get(impl, "").startswith(
            ("mismatch", "error"))
    return ["lossmle"] + [i for i in implementations if i != "lossmle"
                          and any(informative(r, i) for r in results)]


def format_table(results, implementations, bandwidth_gbps=None, legend=True):
    """The results as a text table; ``implementations`` are its columns.

    With ``legend``, lines explaining the non-time cells that occur follow it.
    ``bandwidth_gbps`` is accepted for compatibility and not used: the floor
    column measures the limit per case.
    """
    competitors = [i for i in implementations if i != "lossmle"]
    head = (["function", "shape", "dtype", "lossmle"] + competitors
            + ["GB/s", "floor", "floor/lossmle"])
    rows = []
    for r in results:
        row = [r["function"], shape_str(r["shape"]), r["dtype"].replace("float", "f")]
        lm = r["times"].get("lossmle")
        row.append(fmt_time(lm["median_s"]) if lm else _status_cell(r, "lossmle"))
        for impl in competitors:
            t = r["times"].get(impl)
            if t is None:
                row.append(_status_cell(r, impl))
            elif lm:
                row.append(f"{fmt_time(t['median_s'])} ({r['speedup'][impl]:.3g}x)")
            else:
                row.append(fmt_time(t["median_s"]))
        row.append(f"{r['gbps']:.3g}" if r["gbps"] else "n/a")
        fl = r.get("floor")
        row.append(f"{fl['kind']} {fmt_time(fl['median_s'])}" if fl else "n/a")
        row.append(f"{r['floor_ratio']:.2f}" if r.get("floor_ratio") else "n/a")
        rows.append(row)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(c).ljust(w) if j < 3 else str(c).rjust(w)
                       for j, (c, w) in enumerate(zip(line, widths)))
             for line in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if legend:
        cells = {c for row in rows for c in row}
        lines += [""] + [f'"{sym}" = {text}' for sym, text in CELL_LEGEND.items()
                         if sym in cells]
    return "\n".join(lines).rstrip()


#: what the table's non-time cells mean (printed under it, for those that occur)
CELL_LEGEND = {
    "n/a": "no counterpart (e.g. scikit-learn has only cross-entropy; SciPy and jax "
           "have no out=)",
    "-": "not measured (not installed)",
    "WRONG": "disagrees with the reference: reported, not timed",
    "error": "raised an exception: reported, not timed",
}


def _status_cell(result, impl):
    s = result["status"].get(impl)
    if s is None:
        return "n/a"
    if s.startswith("mismatch"):
        return "WRONG"
    if s.startswith("error"):
        return "error"
    if s.startswith("skipped") and "not installed" not in s:
        return "n/a"
    return "-"



def header_lines(info):
    v = info["versions"]
    lines = [
        f"lossmle bench: lossmle {info['lossmle']} (SIMD path: {info['simd']}, "
        f"OpenMP: {'yes' if info['openmp'] else 'no'})",
        "versions: " + ", ".join(f"{k} {v.get(k) or 'not installed'}"
                                 for k in ("numpy", "scipy", "torch", "sklearn", "jax",
                                           "numba")),
        f"python {info['python']} on {info['platform']}"
        + (f"; load average {info['load_average_1min']:.2f} at start"
           if info.get("load_average_1min") is not None else ""),
        f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs)",
        f"threads: lossmle {info['threads']}, torch "
        f"{info['threads'] if v['torch'] else '-'}, numba "
        f"{info['threads'] if v.get('numba') else '-'}, jax: XLA's own pool, NumPy/SciPy 1 "
        f"(their element-wise code is single-threaded)",
    ]
    if info.get("date"):
        lines.insert(2, f"date: {info['date']}")
    bw = info.get("bandwidth")
    if bw:
        lines.append(f"read bandwidth: {bw['gbps']:.1f} GB/s (np.sum of {bw['mib']} MiB float64, "
                     f"{bw['threads']} thread(s), best of {bw['repeats']})")
    lines.append(f"{info['rounds']} interleaved rounds per case (order rotated each round); "
                 f"times are medians; (Nx) = that implementation's median / lossmle's, "
                 f">1 means lossmle is faster")
    lines.append("GB/s = input bytes read by lossmle / its median time")
    lines.append(f"floor = the machine's limit for the case's bytes, timed in the same rounds "
                 f"with the threads lossmle uses at that size ({info['threads']}, or 1 below "
                 f"its threading threshold): "
                 + "; ".join(f"{k} = {v}" for k, v in FLOOR_KINDS.items()
                             if k not in ("exp", "log"))
                 + " (read: logsumexp, cross-entropy, KL, entropy; copy: softmax and "
                   "log_softmax with out=; fresh copy: without out=, and the gradient)")
    lines.append(f"compute floors: exp = {FLOOR_KINDS['exp']}; log = {FLOOR_KINDS['log']}; "
                 f"the floor shown is the larger of the memory and compute floors, the "
                 f"binding limit")
    lines.append("floor/lossmle = the floor's median / lossmle's: 1.0 = at the limit")
    return lines


def plot_caption(info):
    """The plot's caption: machine, threads, versions and date of the run."""
    v = info.get("versions", {})
    versions = ", ".join(f"{k} {v[k]}" for k in ("numpy", "scipy", "torch", "sklearn", "jax",
                                                 "numba") if v.get(k))
    return (f"lossmle {info.get('lossmle')} (SIMD {info.get('simd')}) on {info.get('cpu')}, "
            f"{info.get('logical_cpus')} logical CPUs, {info.get('threads')} threads; "
            f"{versions}; {info.get('date')}; medians of {info.get('rounds')} interleaved "
            f"rounds. Bars: the competitor's time / lossmle's (> 1: lossmle is faster); "
            f"floor / lossmle: 1 = at the machine's limit.")


def _speedup_ticks(lo, hi):
    """1-2-5 ticks over a narrow range, decades over a wide one (at most ~8)."""
    steps = (1, 2, 5) if hi / lo <= 1e3 else (1,)
    ticks = [m * 10.0 ** e for e in range(-3, 7) for m in steps]
    return [t for t in ticks if lo <= t <= hi]


def fmt_ratio(v):
    """A speed-up as the plot writes it on a bar: 3 significant digits, no exponent."""
    return f"{v:.3g}x" if v < 1000 else f"{v:.0f}x"


#: the floor panel's axis ends here (values beyond it are written, their bars clipped)
FLOOR_AXIS_MAX = 1.5


def make_figure(results, info):
    """The bench's figure: one panel per competitor on one shared speed-up axis,
    one for floor / lossmle, values on the bars and a caption."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    cases = [r for r in results if "lossmle" in r["times"]]
    versus = [i for i in IMPLEMENTATIONS if i != "lossmle"
              and any(i in r["speedup"] for r in cases)]
    floors = any(r.get("floor_ratio") for r in cases)
    panels = versus + (["(floor)"] if floors else [])
    npan = max(1, len(panels))
    height = 0.24 * max(1, len(cases)) + 1.6
    fig, axes = plt.subplots(1, npan, figsize=(2.9 * npan + 2.2, height), sharey=True,
                             squeeze=False)
    axes = list(axes.flat)
    ys = list(range(len(cases)))[::-1]  # first case on top
    labels = [f"{r['function']} {shape_str(r['shape'])} {r['dtype'].replace('float', 'f')}"
              for r in cases]
    speedups = [r["speedup"][i] for r in cases for i in versus if i in r["speedup"]]
    lo = min(speedups + [1.0]) / 1.6
    hi = max(speedups + [1.0]) * 2.5  # room for the values
    first = None
    for ax, impl in zip(axes, panels):
        if impl == "(floor)":
            vals = [r.get("floor_ratio") for r in cases]
            ax.barh([y for y, v in zip(ys, vals) if v],
                    [min(v, FLOOR_AXIS_MAX) for v in vals if v], color="tab:gray")
            for y, v in zip(ys, vals):
                if v:
                    ax.text(min(v, FLOOR_AXIS_MAX), y, f" {v:.2f}", va="center", fontsize=7)
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_xlim(0, FLOOR_AXIS_MAX * 1.35)
            ax.set_xticks([0, 0.5, 0.8, 1.0, 1.5])
            ax.set_title("floor / lossmle\n(1 = at the limit)", fontsize=9)
            continue
        vals = [r["speedup"].get(impl) for r in cases]
        ax.barh([y for y, v in zip(ys, vals) if v], [v for v in vals if v])
        for y, v in zip(ys, vals):
            ax.text(v if v else lo, y, f" {fmt_ratio(v)}" if v else " n/a", va="center",
                    fontsize=7)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        if first is None:
            first = ax
            ax.set_xlim(lo, hi)
        else:
            ax.sharex(first)
        ax.xaxis.set_major_locator(FixedLocator(_speedup_ticks(lo, hi)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"vs {impl}\n(its time / lossmle's)", fontsize=9)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(labels, fontsize=7)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", linewidth=0.3)
    fig.text(0.01, 0.005, plot_caption(info), fontsize=7, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    return fig


def write_plot(path, results, info=None):
    """Draw `make_figure` into ``path`` (PNG)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Unavailable("--plot needs matplotlib: pip install 'lossmle[plot]' "
                          "(or pip install matplotlib)") from None
    import matplotlib.pyplot as plt
    fig = make_figure(results, info or {})
    fig.savefig(path, dpi=110)
    plt.close(fig)
