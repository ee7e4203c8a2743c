"""Reliability probes, each in its own process: a crash or a hang fails one
test, never the run.

* every output buffer (``out=``, ``grad_out=``, ``p_grad_out=``) partly
  overlapping every input the call reads: a ValueError naming both, and the
  input's bytes untouched;
* every output buffer with byte strides that are not a multiple of its item
  size (a field of a structured array): the fresh result, and the
  neighbouring fields untouched;
* crafted ``LogSumExpState`` pickles: a ValueError / TypeError, never a
  kernel reading memory the state does not own;
* ``os.fork`` and ``multiprocessing``'s fork pool after the parent has run
  parallel kernels: the child answers (on one thread), never hangs.

Expected values come from SciPy or from the same call on fresh buffers, which
the parametrised parity suites check against SciPy and torch.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import same_package_cwd

TIMEOUT = 180


def run_isolated(code, tmp_path, env=None):
    """Run ``code`` in a fresh interpreter importing this lossmle; return stdout."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(code))
    full_env = dict(os.environ, PYTHONPATH=same_package_cwd(), **(env or {}))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (
        f"probe died with exit code {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
        f"stderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


# ---------------------------------------------------------------------------
# Output buffers: aliasing and odd strides
# ---------------------------------------------------------------------------
# Each probe: the public function, its arguments (array inputs by name), the
# output keyword, the output's shape and dtype.  The probe runner places the
# named input and the output in one byte buffer, 8 bytes apart.
_PROBE_LIB = r'''
import json, sys, warnings
import numpy as np
import lossmle as lm

warnings.simplefilter("error")
rng = np.random.default_rng(0)
N, C = 6, 5
X = rng.standard_normal((N, C))
T = np.arange(N, dtype=np.int64) % C
P = np.exp(X) / np.exp(X).sum(1, keepdims=True)
Q = np.exp(-X) / np.exp(-X).sum(1, keepdims=True)
LP = np.log(P)
W = np.linspace(0.5, 2.0, C)
SW = np.linspace(1.0, 2.0, N)
M = np.ones((N, C), bool); M[:, 0] = False
B01 = (X > 0).astype(np.float64)
G = rng.standard_normal((N, C))

def probes():
    """name -> (function, args, kwargs, output keyword, output shape, dtype)."""
    f64 = np.float64
    return {
        "logsumexp": (lm.logsumexp, dict(a=X), dict(axis=-1), "out", (N,), f64),
        "logsumexp-b": (lm.logsumexp, dict(a=X, b=W), dict(axis=-1), "out", (N,), f64),
        "logsumexp-where": (lm.logsumexp, dict(a=X, where=M), dict(axis=-1), "out", (N,), f64),
        "softmax": (lm.softmax, dict(x=X), dict(axis=-1), "out", (N, C), f64),
        "softmax-where": (lm.softmax, dict(x=X, where=M), dict(axis=-1), "out", (N, C), f64),
        "log_softmax": (lm.log_softmax, dict(x=X), dict(axis=-1), "out", (N, C), f64),
        "log_softmax-where": (lm.log_softmax, dict(x=X, where=M), dict(axis=-1), "out",
                              (N, C), f64),
        "cross_entropy": (lm.cross_entropy, dict(logits=X, target=T, weight=W),
                          dict(reduction="none"), "out", (N,), f64),
        "cross_entropy-prob": (lm.cross_entropy, dict(logits=X, target=P, weight=W),
                               dict(reduction="none"), "out", (N,), f64),
        "cross_entropy-sample_weight": (
            lm.cross_entropy, dict(logits=X, target=T, weight=W, sample_weight=SW, where=M),
            dict(reduction="none"), "out", (N,), f64),
        "nll_loss": (lm.nll_loss, dict(log_probs=LP, target=T, weight=W),
                     dict(reduction="none"), "out", (N,), f64),
        "nll_loss-sample_weight": (lm.nll_loss, dict(log_probs=LP, target=T, weight=W,
                                                     sample_weight=SW),
                                   dict(reduction="none"), "out", (N,), f64),
        "cross_entropy_with_grad": (lm.cross_entropy_with_grad,
                                    dict(logits=X, target=T, weight=W), {}, "grad_out",
                                    (N, C), f64),
        "cross_entropy_with_grad-prob": (lm.cross_entropy_with_grad,
                                         dict(logits=X, target=P, weight=W),
                                         dict(label_smoothing=0.1), "grad_out", (N, C), f64),
        "cross_entropy_with_grad-sample_weight": (
            lm.cross_entropy_with_grad,
            dict(logits=X, target=T, weight=W, sample_weight=SW, where=M), {}, "grad_out",
            (N, C), f64),
        "cross_entropy_with_grad-softcap": (
            lm.cross_entropy_with_grad, dict(logits=X, target=T, weight=W),
            dict(logit_softcap=3.0), "grad_out", (N, C), f64),
        "weighted_cross_entropy_with_grad": (
            lm.cross_entropy_with_grad,
            dict(logits=X, target=T, weight=W, sample_weight=SW, where=M), {}, "grad_out",
            (N, C), f64),
        "nll_loss_with_grad": (lm.nll_loss_with_grad,
                               dict(log_probs=LP, target=T, weight=W, sample_weight=SW), {},
                               "grad_out", (N, C), f64),
        "bce_with_grad": (lm.binary_cross_entropy_with_logits_with_grad,
                          dict(logits=X, target=B01, weight=G ** 2, pos_weight=W,
                               sample_weight=P), {}, "grad_out", (N, C), f64),
        "kl_from_logits_with_grad": (lm.kl_divergence_from_logits_with_grad,
                                     dict(p_logits=X, q_logits=G), dict(p_grad=True),
                                     "grad_out", (N, C), f64),
        "kl_from_logits_with_grad-p": (lm.kl_divergence_from_logits_with_grad,
                                       dict(p_logits=X, q_logits=G), dict(p_grad=True),
                                       "p_grad_out", (N, C), f64),
        "softmax_backward": (lm.softmax_backward, dict(grad_output=G, softmax_output=P), {},
                             "out", (N, C), f64),
        "log_softmax_backward": (lm.log_softmax_backward,
                                 dict(grad_output=G, log_softmax_output=LP), {}, "out",
                                 (N, C), f64),
        "kl_divergence": (lm.kl_divergence, dict(p=P, q=Q), {}, "out", (N,), f64),
        "entropy": (lm.entropy, dict(pk=P, qk=Q), dict(axis=1), "out", (N,), f64),
        "kl_div_with_grad": (lm.kl_div_with_grad, dict(input=LP, target=Q),
                             dict(reduction="batchmean"), "grad_out", (N, C), f64),
    }


def call(fn, arrays, kwargs, out_kw=None, out=None):
    kw = dict(arrays, **kwargs)
    if out_kw is not None:
        kw[out_kw] = out
    with np.errstate(all="ignore"):
        return fn(**kw)


def first_array(res):
    if isinstance(res, tuple):
        return res
    return (res,)
'''


def _probe_names():
    # the names are fixed in _PROBE_LIB; listed here so pytest ids read well
    return ["logsumexp", "logsumexp-b", "logsumexp-where", "softmax", "softmax-where",
            "log_softmax", "log_softmax-where", "cross_entropy", "cross_entropy-prob",
            "cross_entropy-sample_weight", "nll_loss", "nll_loss-sample_weight",
            "cross_entropy_with_grad", "cross_entropy_with_grad-prob",
            "cross_entropy_with_grad-sample_weight", "cross_entropy_with_grad-softcap",
            "weighted_cross_entropy_with_grad", "nll_loss_with_grad", "bce_with_grad",
            "kl_from_logits_with_grad", "kl_from_logits_with_grad-p", "softmax_backward",
            "log_softmax_backward", "kl_divergence", "entropy", "kl_div_with_grad"]


@pytest.mark.parametrize("probe", _probe_names())
def test_output_partly_overlapping_any_input_is_refused(probe, tmp_path):
    """The output shares memory with one input at a time (8 bytes apart in one
    buffer): ValueError "<output> overlaps <input>", the input unchanged."""
    out = run_isolated(_PROBE_LIB + f'''
fn, arrays, kwargs, out_kw, shape, dtype = probes()[{probe!r}]
report = []
names = list(arrays) + (["grad_out"] if out_kw == "p_grad_out" else [])
for name in names:
    itemsize = np.dtype(dtype).itemsize
    if name == "grad_out":
        src = np.zeros(shape, dtype)
        extra = dict(grad_out=None)
    else:
        src = np.asarray(arrays[name])
        extra = {{}}
    n_out = int(np.prod(shape)) * itemsize
    raw = np.zeros(src.nbytes + n_out + 64, np.uint8)
    given = raw[:src.nbytes].view(src.dtype).reshape(src.shape)
    given[...] = src
    buf = raw[8:8 + n_out].view(dtype).reshape(shape)
    before = given.copy()
    args = dict(arrays)
    if name == "grad_out":
        extra = dict(grad_out=given)
    else:
        args[name] = given
    try:
        call(fn, args, dict(kwargs, **extra), out_kw, buf)
        verdict = "no error"
    except ValueError as e:
        verdict = "ok" if (out_kw in str(e) and name in str(e)) else "message: " + str(e)
    except Exception as e:
        verdict = f"{{type(e).__name__}}: {{e}}"
    if not np.array_equal(given, before, equal_nan=True):
        verdict += " (input changed)"
    report.append((name, verdict))
print(json.dumps(report))
''', tmp_path)
    report = json.loads(out.strip().splitlines()[-1])
    bad = [(name, v) for name, v in report if v != "ok"]
    assert not bad, bad
    assert len(report) >= 1


@pytest.mark.parametrize("probe", _probe_names())
def test_output_with_odd_byte_strides(probe, tmp_path):
    """The output is one field of a structured array (byte stride not a
    multiple of the item size): the result equals a fresh one and the other
    field is untouched."""
    out = run_isolated(_PROBE_LIB + f'''
fn, arrays, kwargs, out_kw, shape, dtype = probes()[{probe!r}]
fresh = first_array(call(fn, arrays, kwargs))
rec = np.zeros(shape, [("v", dtype), ("tag", "i4")])
rec["tag"] = 7
res = first_array(call(fn, arrays, kwargs, out_kw, rec["v"]))
k = {{"out": 0, "grad_out": 1, "p_grad_out": 2}}[out_kw]
if out_kw == "out":
    k = 0
ok_tag = bool((rec["tag"] == 7).all())
same = bool(np.array_equal(rec["v"], np.asarray(fresh[k]), equal_nan=True))
is_buf = res[k] is not None and np.shares_memory(res[k], rec)
print(json.dumps([ok_tag, same, bool(is_buf)]))
''', tmp_path)
    ok_tag, same, is_buf = json.loads(out.strip().splitlines()[-1])
    assert ok_tag, "the neighbouring field was overwritten"
    assert same, "the result differs from a fresh call's"
    assert is_buf, "the returned array is not the caller's buffer"


# ---------------------------------------------------------------------------
# Crafted LogSumExpState pickles
# ---------------------------------------------------------------------------
def test_crafted_states_raise_and_never_touch_foreign_memory(tmp_path):
    out = run_isolated('''
import json, pickle
import numpy as np
import lossmle as lm

x = np.random.default_rng(1).standard_normal((5, 7))
good = lm.LogSumExpState().update(x[:, :3]).__getstate__()
crafted = {
    "rows beyond the arrays": dict(shape=(10**6,)),
    "arrays of other lengths": dict(m=np.zeros(1), c=np.ones(1), s=np.zeros(1)),
    "negative counts": dict(c=-np.ones(5)),
    "nan counts": dict(c=np.full(5, np.nan)),
    "zero count at a finite max": dict(c=np.zeros(5)),
    "negative sums": dict(s=-np.ones(5)),
    "inf sums": dict(s=np.full(5, np.inf)),
    "negative shape": dict(shape=(-5,)),
    "shape of strings": dict(shape="abcde"),
    "float32 arrays": dict(m=good["m"].astype(np.float32)),
    "2-D arrays": dict(m=good["m"].reshape(5, 1)),
    "a list for m": dict(m=list(good["m"])),
    "negative n_classes": dict(n_classes=-3),
    "float n_classes": dict(n_classes=3.5),
    "axis of a string": dict(axis="-1"),
    "no shape but rows": dict(shape=None),
    "missing key": "drop m",
    "extra key": dict(evil=1),
    "keys of mixed types": "mixed keys",
    "counts beyond 2**53": dict(c=np.full(5, 1e308), s=np.full(5, 1e308)),
    "fractional counts": dict(c=np.full(5, 1.5)),
    "n_classes without rows": dict(shape=None, m=np.empty(0), c=np.empty(0), s=np.empty(0)),
    "rows beyond int64": dict(shape=(2**62 + 1, 4)),
}
report = {}
for name, change in crafted.items():
    state = dict(good)
    if change == "drop m":
        del state["m"]
    elif change == "mixed keys":
        state = {1: 2, "a": 3}
    else:
        state.update(change)
    st = lm.LogSumExpState()
    try:
        st.__setstate__(state)
        report[name] = "accepted"
    except (TypeError, ValueError):
        report[name] = "ok"
# a refused state leaves a usable state behind, and a good one round-trips
st = pickle.loads(pickle.dumps(lm.LogSumExpState().update(x[:, :3])))
st.update(x[:, 3:])
report["round trip"] = "ok" if np.allclose(st.result(), np.log(np.exp(x).sum(1)),
                                           rtol=1e-14) else "wrong"
# the arrays are the state's own: changing the pickled dict later changes nothing
state = lm.LogSumExpState().update(x).__getstate__()
st = lm.LogSumExpState()
st.__setstate__(state)
state["m"][:] = 1e300
report["own copies"] = "ok" if np.allclose(st.result(), np.log(np.exp(x).sum(1)),
                                           rtol=1e-14) else "aliased"
print(json.dumps(report))
''', tmp_path)
    report = json.loads(out.strip().splitlines()[-1])
    bad = {k: v for k, v in report.items() if v != "ok"}
    assert not bad, bad


# ---------------------------------------------------------------------------
# fork after parallel kernels
# ---------------------------------------------------------------------------
_FORK_SETUP = '''
import os, sys, json
import numpy as np
import scipy.special as sc
import lossmle as lm
from lossmle._validation import PARALLEL_MIN_ELEMENTS

x = np.random.default_rng(3).standard_normal((PARALLEL_MIN_ELEMENTS // 100 + 8, 100))
t = np.arange(x.shape[0]) % 100
expected = sc.logsumexp(x, axis=-1)
# the parent runs parallel kernels first: GNU OpenMP's pool now exists
assert np.allclose(lm.logsumexp(x, axis=-1, n_threads=2), expected, rtol=1e-14)
lm.cross_entropy_with_grad(x, t, n_threads=2)
'''


def test_os_fork_child_after_parallel_kernels(tmp_path):
    pytest.importorskip("scipy")
    out = run_isolated(_FORK_SETUP + '''
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    ok = True
    for n in (None, 2, 1):
        ok &= bool(np.allclose(lm.logsumexp(x, axis=-1, n_threads=n), expected, rtol=1e-14))
        loss, grad = lm.cross_entropy_with_grad(x, t, n_threads=n)
        ok &= bool(np.isfinite(loss))
    os.write(w, json.dumps([ok, lm.get_num_threads()]).encode())
    os._exit(0)
os.close(w)
_, status = os.waitpid(pid, 0)
child = json.loads(os.read(r, 1000).decode())
# the parent keeps its threads
assert np.allclose(lm.logsumexp(x, axis=-1), expected, rtol=1e-14)
print(json.dumps([status, child, lm.get_num_threads()]))
''', tmp_path)
    status, (ok, child_threads), parent_threads = json.loads(out.strip().splitlines()[-1])
    assert status == 0 and ok
    assert child_threads == 1            # what a forked child gets (documented)
    assert parent_threads >= 1


def test_multiprocessing_fork_pool_after_parallel_kernels(tmp_path):
    pytest.importorskip("scipy")
    out = run_isolated(_FORK_SETUP + '''
import multiprocessing as mp

def work(k):
    y = x * (1 + k)
    return bool(np.allclose(lm.logsumexp(y, axis=-1), sc.logsumexp(y, axis=-1), rtol=1e-14))

if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        print(json.dumps(pool.map(work, range(4))))
''', tmp_path)
    assert json.loads(out.strip().splitlines()[-1]) == [True] * 4


def test_fork_before_any_parallel_kernel_keeps_threads(tmp_path):
    """A child of a process that never ran a parallel region may use OpenMP."""
    out = run_isolated('''
import os, json
import lossmle as lm
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, str(lm.get_num_threads()).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps([int(os.read(r, 100)), lm.get_num_threads()]))
''', tmp_path)
    child, parent = json.loads(out.strip().splitlines()[-1])
    assert child == parent


def test_row_shapes_beyond_any_array_are_refused(tmp_path):
    """np.prod wrapped around int64: shape=(2**62 + 1, 4) made a state of 4 rows."""
    import lossmle as lm
    for shape in [(2**62 + 1, 4), (2**32, 2**32)]:
        with pytest.raises(ValueError, match="more than an array can hold"):
            lm.LogSumExpState(shape=shape)
    assert lm.LogSumExpState(shape=(0, 2**70)).shape == (0, 2**70)


def test_an_output_overlapping_itself_is_refused():
    """A writable zero-stride view as out= / grad_out=: every element would hold
    several results (and the kernel read what it had just written)."""
    import numpy as np
    import lossmle as lm
    from numpy.lib.stride_tricks import as_strided
    b = np.array([1.0, 2.0, 3.0, 4.0])
    x = as_strided(b, (3, 4), (0, 8), writeable=True)
    with pytest.raises(ValueError, match="grad_out overlaps itself"):
        lm.cross_entropy_with_grad(x.copy(), [0, 1, 2], grad_out=x)
    out = as_strided(np.zeros(1), (6,), (0,), writeable=True)
    with pytest.raises(ValueError, match="out overlaps itself"):
        lm.logsumexp(np.ones((6, 2)), axis=1, out=out)
    with pytest.raises(ValueError, match="out overlaps itself"):
        lm.softmax(np.ones((2, 3)), axis=1, out=as_strided(np.zeros(3), (2, 3), (0, 8),
                                                           writeable=True))
