#!/usr/bin/env python
"""Coverage-guided fuzzing of lossmle's Python API with atheris.

Every input the fuzzer produces is decoded into one call of a public function
(arbitrary shapes including 0-d and empty, dtypes including float16, ints,
bool, big-endian, complex, object and str, memory layouts including
transposed, negative-stride, strided, 0-stride broadcast and read-only views,
and arbitrary values including +-inf, nan and huge numbers) with arbitrary
keyword arguments.  A call passes when it either

* raises TypeError / ValueError / IndexError (numpy's AxisError is both), or
* returns a result that agrees with an independent oracle (scipy.special,
  scipy.stats, or torch in float64 for the losses) -- same shape, dtype
  lossmle promises, and values within a tolerance scaled by the input's
  magnitude -- and has not mutated any input.

Anything else (another exception type, a warning escaping from lossmle, a
wrong number, a mutated input) is a *finding*: it is recorded (deduplicated
by kind and location) in a JSON report, with the decoded call as a
reproducer, and fuzzing continues.  A hard crash (segfault, abort) stops
libFuzzer, which writes the crashing input to ``crash-*``.

Usage::

    python tools/fuzz_api.py --time 600 [--report fuzz_report.json] [corpus_dir]

``--time`` is the budget in seconds (libFuzzer's -max_total_time).  Extra
arguments are passed to libFuzzer (e.g. ``-rss_limit_mb=4096``).  Reproduce a
crash file with ``python tools/fuzz_api.py crash-<hash>``.
"""
import argparse
import atexit
import json
import math
import os
import sys
import time
import traceback
import warnings

import atheris

# run from a checkout without installing: the repository root is importable
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

with atheris.instrument_imports():
    import lossmle as lm

import numpy as np  # noqa: E402  (oracles: not instrumented)
import scipy.special as sps  # noqa: E402
import scipy.stats as sst  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
    torch.set_num_threads(1)
except ImportError:  # the loss oracle is then skipped
    torch = None

OK_EXC = (TypeError, ValueError, IndexError)
FLOAT_DTYPES = [np.float64, np.float32, np.float16]
ODD_DTYPES = [np.int8, np.int64, np.uint8, np.bool_, ">f8", "<f4", np.complex128, object, "U3",
              "datetime64[s]"]
SPECIALS = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e308, -1e308, 3e38, -3e38,
            1e-300, 5e-324, 88.0, -745.0, 710.0]
LAYOUTS = ["C", "C", "C", "F", "T", "neg", "strided", "bcast", "readonly", "list", "scalar"]

STATE = {"execs": 0, "ok": 0, "raised": 0, "compared": 0, "findings": {}, "start": time.time(),
         "by_func": {}}
REPORT_PATH = "fuzz_report.json"


# ---------------------------------------------------------------------------
# Decoding fuzz bytes into arrays and keyword arguments
# ---------------------------------------------------------------------------
def _shape(fdp, ndim=None):
    if ndim is None:
        ndim = fdp.ConsumeIntInRange(0, 4)
    return tuple(fdp.PickValueInList([0, 1, 1, 2, 3, 4, 5, 7]) for _ in range(ndim))


def _values(fdp, n):
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:  # small finite floats
        raw = [fdp.ConsumeIntInRange(-64, 64) / 8.0 for _ in range(n)]
    elif mode == 1:  # mix of specials and ordinary values
        raw = [fdp.PickValueInList(SPECIALS) if fdp.ConsumeBool()
               else fdp.ConsumeIntInRange(-1000, 1000) / 16.0 for _ in range(n)]
    elif mode == 2:  # arbitrary doubles (any bit pattern)
        raw = [fdp.ConsumeFloat() for _ in range(n)]
    else:  # probabilities (mostly valid, sometimes zero)
        raw = [fdp.ConsumeIntInRange(0, 16) / 16.0 for _ in range(n)]
    return np.array(raw, dtype=np.float64)


def _array(fdp, shape, kind="float"):
    """An array-like of ``shape``: (value passed to lossmle, float64 oracle copy or None)."""
    n = math.prod(shape)
    if kind == "float":
        dtype = fdp.PickValueInList(FLOAT_DTYPES) if fdp.ConsumeIntInRange(0, 9) else \
            fdp.PickValueInList(ODD_DTYPES)
        vals = _values(fdp, n).reshape(shape)
        with np.errstate(all="ignore"):
            try:
                arr = vals.astype(dtype)
            except (TypeError, ValueError):
                arr = np.zeros(shape, dtype=dtype)
    else:  # integer labels
        dtype = fdp.PickValueInList([np.int64, np.int32, np.int8, np.uint8, np.int16, np.float64,
                                     np.bool_])
        raw = [fdp.PickValueInList([-100, -1, 0, 1, 2, 3, 5, 255, 2**31, -2**40])
               if fdp.ConsumeIntInRange(0, 7) == 0 else fdp.ConsumeIntInRange(0, 4)
               for _ in range(n)]
        with np.errstate(all="ignore"):
            arr = np.array(raw, dtype=np.int64).reshape(shape).astype(dtype)
    layout = fdp.PickValueInList(LAYOUTS)
    if layout == "F":
        arr = np.asfortranarray(arr)
    elif layout == "T" and arr.ndim >= 2:
        arr = np.ascontiguousarray(arr.T).T
    elif layout == "neg" and arr.ndim >= 1:
        arr = np.ascontiguousarray(arr[::-1])[::-1]
    elif layout == "strided" and arr.ndim >= 1:
        big = np.zeros((arr.shape[0] * 2,) + arr.shape[1:], dtype=arr.dtype)
        big[::2] = arr
        arr = big[::2]
    elif layout == "bcast" and arr.ndim >= 1 and arr.shape[0] >= 1:
        arr = np.broadcast_to(arr[:1], arr.shape)
    elif layout == "readonly":
        arr = arr.copy()
        arr.setflags(write=False)
    if layout == "list":
        value = arr.tolist()  # Python floats/ints: lossmle sees float64/int64
        return value, np.asarray(value)
    if layout == "scalar" and arr.ndim == 0:
        value = arr.item() if arr.dtype.kind in "fiub" else arr[()]
        return value, np.asarray(value) if arr.dtype.kind in "fiub" else arr
    return arr, arr


def _axis(fdp, ndim, allow_tuple=True, allow_none=True):
    k = fdp.ConsumeIntInRange(0, 9)
    if k == 0 and allow_none:
        return None
    if k == 1 and allow_tuple and ndim >= 1:
        return tuple(fdp.ConsumeIntInRange(-ndim - 1, ndim) for _ in range(
            fdp.ConsumeIntInRange(0, ndim + 1)))
    if k == 2:
        return fdp.PickValueInList([1.0, "0", True, 99, -99])
    return fdp.ConsumeIntInRange(-max(ndim, 1), max(ndim, 1) - 1)


def _threads(fdp):
    return fdp.PickValueInList([None, None, None, 1, 2, 0, -1, 1.5])


def _f64(x):
    """Oracle input: a float64 copy of the values lossmle sees (it computes in >= float32)."""
    a = np.asarray(x)
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    return a.astype(np.float64)


def _result_dtype(*arrays):
    kinds = [np.asarray(a).dtype for a in arrays]
    if all(d.kind == "f" and d.itemsize <= 4 for d in kinds):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


# ---------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------
class Mismatch(AssertionError):
    pass


def _close(got, expected, dtype, scale, what, *, shape=True):
    got = np.asarray(got)
    expected = np.asarray(expected)
    if shape and got.shape != expected.shape:
        raise Mismatch(f"{what}: shape {got.shape} != oracle {expected.shape}")
    if got.dtype != dtype:
        raise Mismatch(f"{what}: dtype {got.dtype} != {dtype}")
    with np.errstate(all="ignore"):
        exp = expected.astype(dtype).astype(np.float64)  # the oracle rounded to the result dtype
        g = got.astype(np.float64)
        eps = np.finfo(dtype).eps
        scale = float(scale) if np.isfinite(scale) else 0.0
        atol = 64 * eps * max(1.0, scale)
        same_nan = np.isnan(g) == np.isnan(exp)
        both_inf = (g == exp)
        diff = np.abs(g - exp)
        ok = same_nan & (np.isnan(g) | both_inf | (diff <= atol + 64 * eps * np.abs(exp)))
    if not np.all(ok):
        i = int(np.flatnonzero(~ok.reshape(-1))[0])
        raise Mismatch(f"{what}: value {g.reshape(-1)[i]!r} != oracle {exp.reshape(-1)[i]!r} "
                       f"(scale {scale:g})")


def _finite_scale(*arrays):
    m = 0.0
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        f = a[np.isfinite(a)]
        if f.size:
            m = max(m, float(np.max(np.abs(f))))
    return m


def _quiet(fn, *args, **kwargs):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------
# One fuzz target per public function: (call, oracle check)
# ---------------------------------------------------------------------------
def fuzz_logsumexp(fdp):
    shape = _shape(fdp)
    a, a0 = _array(fdp, shape)
    kw = {"axis": _axis(fdp, len(shape)), "keepdims": fdp.ConsumeBool(),
          "return_sign": fdp.ConsumeBool(), "n_threads": _threads(fdp)}
    b0 = None
    if fdp.ConsumeBool():
        bshape = shape[fdp.ConsumeIntInRange(0, len(shape)):] if fdp.ConsumeBool() else _shape(fdp)
        kw["b"], b0 = _array(fdp, bshape)
        if kw["b"] is None:  # a 0-d NaT's .tolist() is None: lossmle then sees no b
            b0 = None

    def check(got):
        if kw["axis"] == () and (np.size(a0) == 0 or np.size(b0) == 0):
            return  # scipy returns [-inf] for axis=() on empty input; lossmle an empty array
        args = dict(axis=kw["axis"], keepdims=kw["keepdims"], return_sign=kw["return_sign"])
        if b0 is not None:
            args["b"] = _f64(b0)
        exp = _quiet(sps.logsumexp, _f64(a0), **args)
        dtype = _result_dtype(a0) if b0 is None else _result_dtype(a0, b0)
        n = max(1, np.asarray(a0).size)
        if b0 is not None and np.any(_f64(b0) < 0):
            return  # signed weights cancel: tested against scipy in tests/, not fuzzed
        scale = _finite_scale(a0) + math.log(n) + (_finite_scale(np.log(np.abs(_f64(b0)) + 1e-300))
                                                    if b0 is not None else 0)
        if kw["return_sign"]:
            _close(got[0], exp[0], dtype, scale, "logsumexp value")
            _close(got[1], exp[1], dtype, 1, "logsumexp sign")
        else:
            _close(got, exp, dtype, scale, "logsumexp")
    return lm.logsumexp, (a,), kw, [a0, b0], check


def _transform(name, fdp):
    shape = _shape(fdp)
    x, x0 = _array(fdp, shape)
    kw = {"axis": _axis(fdp, len(shape)), "n_threads": _threads(fdp)}

    def check(got):
        exp = _quiet(getattr(sps, name), _f64(x0), axis=kw["axis"])
        scale = 1.0 if name == "softmax" else _finite_scale(x0) + math.log(max(2, np.size(x0)))
        _close(got, exp, _result_dtype(x0), scale, name)
    return getattr(lm, name), (x,), kw, [x0], check


def fuzz_softmax(fdp):
    return _transform("softmax", fdp)


def fuzz_log_softmax(fdp):
    return _transform("log_softmax", fdp)


def fuzz_entropy(fdp):
    shape = _shape(fdp)
    pk, p0 = _array(fdp, shape)
    args, q0 = (pk,), None
    if fdp.ConsumeBool():
        qshape = shape if fdp.ConsumeIntInRange(0, 5) else _shape(fdp)
        qk, q0 = _array(fdp, qshape)
        args = (pk, qk)
    kw = {"base": fdp.PickValueInList([None, None, 2, 10.0, 0.5]),
          "axis": _axis(fdp, len(shape)), "n_threads": _threads(fdp)}

    def check(got):
        if kw["axis"] == () or (kw["axis"] is None and np.size(p0) == 0):
            return  # scipy.stats treats axis=() as a full reduction; lossmle as no reduction
        exp = _quiet(sst.entropy, _f64(p0), None if q0 is None else _f64(q0), base=kw["base"],
                     axis=kw["axis"])
        dtype = _result_dtype(p0) if q0 is None else _result_dtype(p0, q0)
        # after normalisation the terms are O(1) unless a sum under/overflows
        scale = 100.0 * max(1, np.size(p0))
        _close(got, exp, dtype, scale, "entropy")
    return lm.entropy, args, kw, [p0, q0], check


def fuzz_kl_divergence(fdp):
    shape = _shape(fdp)
    p, p0 = _array(fdp, shape)
    qshape = shape if fdp.ConsumeIntInRange(0, 5) else _shape(fdp)
    q, q0 = _array(fdp, qshape)
    kw = {"axis": _axis(fdp, len(shape)), "base": fdp.PickValueInList([None, None, 2, 0.5]),
          "keepdims": fdp.ConsumeBool(), "validate": fdp.ConsumeIntInRange(0, 3) > 0,
          "n_threads": _threads(fdp)}

    def check(got):
        pf, qf = _f64(p0), _f64(q0)
        if kw["validate"]:
            bad = (pf < 0) | np.isnan(pf) | (qf < 0) | np.isnan(qf)
            if np.any(np.broadcast_to(bad, np.broadcast_shapes(pf.shape, qf.shape))) and \
                    np.size(got):
                raise Mismatch("kl_divergence accepted negative/nan probabilities with validate")
        terms = _quiet(sps.rel_entr, pf, qf)
        exp = _quiet(np.sum, terms, axis=kw["axis"] if kw["axis"] != () else (),
                     keepdims=kw["keepdims"])
        if kw["base"] is not None:
            exp = exp / math.log(kw["base"])
        scale = _quiet(lambda: float(np.nansum(np.abs(terms[np.isfinite(terms)])))) + 1
        _close(got, exp, _result_dtype(p0, q0), scale, "kl_divergence")
    def on_error(exc):
        # a probability complaint about valid probabilities is a wrong answer
        if "must hold probabilities" in str(exc):
            with np.errstate(all="ignore"):
                pf, qf = _f64(p0), _f64(q0)
                if not (np.any((pf < 0) | np.isnan(pf)) or np.any((qf < 0) | np.isnan(qf))):
                    raise Mismatch(f"kl_divergence rejected valid probabilities: {exc}")
    check.on_error = on_error
    return lm.kl_divergence, (p, q), kw, [p0, q0], check


def _torch_loss(name, x, target, ax, kw):
    """torch's loss in float64 with the class axis moved to dim 1."""
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(_f64(x), ax, -1)))
    is_prob = np.asarray(target).dtype.kind == "f"
    tt = np.asarray(target)
    if is_prob:
        tt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(_f64(tt), ax, -1)))
    else:
        tt = torch.from_numpy(np.ascontiguousarray(tt.astype(np.int64)))
    # torch wants (N, C, ...) ; flatten to (rows, C)
    c = xt.shape[-1]
    xt = xt.reshape(-1, c)
    tt = tt.reshape(-1, c) if is_prob else tt.reshape(-1)
    tkw = dict(reduction="none")
    if kw.get("weight") is not None:
        tkw["weight"] = torch.from_numpy(_f64(kw["weight"]))
    if not is_prob:
        tkw["ignore_index"] = kw.get("ignore_index", -100)
    if name == "nll_loss":
        loss = F.nll_loss(xt, tt, **tkw)
    else:
        loss = F.cross_entropy(xt, tt, label_smoothing=kw.get("label_smoothing", 0.0), **tkw)
    loss = loss.numpy()
    red = kw.get("reduction", "mean")
    if red == "none":
        return loss.reshape(np.delete(np.asarray(np.shape(x)), ax).tolist())
    if red == "sum":
        return loss.sum()
    # torch's mean: divided by the summed weight of the non-ignored targets
    if is_prob:
        return loss.sum() / loss.size if loss.size else np.nan
    t = np.asarray(target).reshape(-1).astype(np.int64)
    keep = t != tkw["ignore_index"]
    w = np.ones(c) if kw.get("weight") is None else _f64(kw["weight"])
    denom = w[t[keep]].sum()
    with np.errstate(all="ignore"):
        return np.float64(loss.sum()) / denom


def _loss(name, fdp):
    shape = _shape(fdp, fdp.ConsumeIntInRange(0, 3))
    x, x0 = _array(fdp, shape)
    ndim = len(shape)
    ax = fdp.ConsumeIntInRange(-max(ndim, 1), max(ndim, 1) - 1) if fdp.ConsumeIntInRange(0, 9) \
        else _axis(fdp, ndim, allow_tuple=True, allow_none=True)
    if name != "nll_loss" and fdp.ConsumeIntInRange(0, 3) == 0:
        target, t0 = _array(fdp, shape if fdp.ConsumeIntInRange(0, 5) else _shape(fdp))
    else:
        tshape = shape[:ax] + shape[ax + 1:] if isinstance(ax, int) and ndim and \
            -ndim <= ax < ndim and not isinstance(ax, bool) else _shape(fdp)
        if ndim and isinstance(ax, int) and -ndim <= ax < ndim and ax != -1 and ax != ndim - 1:
            tshape = shape[:ax % ndim] + shape[ax % ndim + 1:]
        if fdp.ConsumeIntInRange(0, 9) == 0:
            tshape = _shape(fdp)
        target, t0 = _array(fdp, tshape, kind="int")
        if np.ndim(t0) == 0 and np.asarray(t0).dtype.kind in "iu" and fdp.ConsumeBool():
            target = int(t0)  # a Python int label
    kw = {"axis": ax, "reduction": fdp.PickValueInList(["mean", "mean", "sum", "none", "avg"]),
          "ignore_index": fdp.PickValueInList([-100, -100, 0, 1, 3, -1, 2**63]),
          "n_threads": _threads(fdp)}
    w0 = None
    if fdp.ConsumeIntInRange(0, 3) == 0:
        c = shape[ax] if ndim and isinstance(ax, int) and not isinstance(ax, bool) and \
            -ndim <= ax < ndim else 2
        kw["weight"], w0 = _array(fdp, (c,) if fdp.ConsumeIntInRange(0, 5) else _shape(fdp))
    if name != "nll_loss":
        kw["label_smoothing"] = fdp.PickValueInList([0.0, 0.0, 0.1, 1.0, -0.5, float("nan")])
    fn = getattr(lm, name)

    def check(got):
        if torch is None:
            return
        loss = got[0] if name == "cross_entropy_with_grad" else got
        a = ax % ndim
        okw = dict(kw, weight=w0)
        exp = _quiet(_torch_loss, "nll_loss" if name == "nll_loss" else "ce", x0, t0, a, okw)
        dtype = _result_dtype(x0)
        n_rows = max(1, np.size(x0) // max(1, shape[a]))
        wmax = _finite_scale(w0) if w0 is not None else 1.0
        scale = (_finite_scale(x0) + math.log(max(2, shape[a]))) * max(1.0, wmax) * \
            (n_rows if kw["reduction"] != "none" else 1)
        _close(loss, exp, dtype, scale, name)
        if name == "cross_entropy_with_grad":
            grad = got[1]
            if grad.shape != np.shape(x0) or grad.dtype != dtype:
                raise Mismatch(f"grad shape/dtype {grad.shape} {grad.dtype}")
    return fn, (x, target), kw, [x0, t0, w0], check


def fuzz_cross_entropy(fdp):
    return _loss("cross_entropy", fdp)


def fuzz_cross_entropy_with_grad(fdp):
    return _loss("cross_entropy_with_grad", fdp)


def fuzz_nll_loss(fdp):
    return _loss("nll_loss", fdp)


TARGETS = [fuzz_logsumexp, fuzz_softmax, fuzz_log_softmax, fuzz_entropy, fuzz_kl_divergence,
           fuzz_cross_entropy, fuzz_cross_entropy_with_grad, fuzz_nll_loss]


# ---------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------
def _describe(fn, args, kw):
    def r(v):
        if isinstance(v, np.ndarray):
            return (f"np.array({v.tolist()!r}, dtype={v.dtype.str!r})"
                    f"{'' if v.flags.c_contiguous else '  # strides ' + str(v.strides)}")
        return repr(v)
    return f"lm.{fn.__name__}({', '.join(r(a) for a in args)}, " + \
        ", ".join(f"{k}={r(v)}" for k, v in kw.items()) + ")"


def _record(kind, fn, args, kw, exc):
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{tb[-1].filename.split('/')[-1]}:{tb[-1].lineno}" if tb else "?"
    msg = str(exc).split("\n")[0][:200]
    key = f"{kind}|{fn.__name__}|{type(exc).__name__}|{where}"
    if kind == "mismatch":
        key += "|" + msg.split(":")[0]
    f = STATE["findings"].setdefault(key, {"kind": kind, "function": fn.__name__,
                                           "exception": type(exc).__name__, "where": where,
                                           "message": msg, "count": 0,
                                           "reproducer": _describe(fn, args, kw)[:3000]})
    f["count"] += 1


def test_one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.PickValueInList(TARGETS)
    try:
        fn, args, kw, originals, check = target(fdp)
    except Exception:  # noqa: BLE001 -- a bug in the decoder, not in lossmle
        STATE["decode_errors"] = STATE.get("decode_errors", 0) + 1
        return
    STATE["execs"] += 1
    STATE["by_func"][fn.__name__] = STATE["by_func"].get(fn.__name__, 0) + 1
    snapshots = [np.array(o, copy=True) if o is not None else None for o in originals]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning escaping lossmle is a finding
            got = fn(*args, **kw)
    except OK_EXC as exc:
        STATE["raised"] += 1
        if not str(exc):
            _record("empty-message", fn, args, kw, exc)
        try:
            getattr(check, "on_error", lambda e: None)(exc)
        except Mismatch as mis:
            _record("mismatch", fn, args, kw, mis)
        got = None
    except Exception as exc:  # noqa: BLE001 -- everything else is a finding
        _record("bad-exception", fn, args, kw, exc)
        got = None
    for o, s in zip(originals, snapshots):
        if o is not None and o.dtype.kind != "O" and o.tobytes() != s.tobytes():
            _record("mutated-input", fn, args, kw, AssertionError("input changed"))
    if got is not None:
        STATE["ok"] += 1
        try:
            check(got)
            STATE["compared"] += 1
        except Mismatch as exc:
            _record("mismatch", fn, args, kw, exc)
        except Exception:  # noqa: BLE001 -- the oracle itself refused: no comparison
            pass
    if STATE["execs"] % 2000 == 0:
        _write_report()


def _write_report():
    out = dict(STATE)
    out["elapsed_s"] = round(time.time() - STATE["start"], 1)
    out["findings"] = sorted(STATE["findings"].values(), key=lambda f: -f["count"])
    out["n_findings"] = len(out["findings"])
    tmp = REPORT_PATH + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh, indent=1, default=str)
    os.replace(tmp, REPORT_PATH)


def main():
    global REPORT_PATH
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time", type=int, default=60, help="time budget in seconds")
    ap.add_argument("--report", default="fuzz_report.json", help="JSON report path")
    ns, rest = ap.parse_known_args()
    REPORT_PATH = ns.report
    lm.set_num_threads(1)
    atexit.register(_write_report)
    argv = [sys.argv[0], f"-max_total_time={ns.time}", "-rss_limit_mb=4096",
            "-max_len=4096"] + rest
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
