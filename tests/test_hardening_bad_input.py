"""Bad-input matrix, part 2 (extends tests/test_bad_input.py without repeating it).

Each case must raise TypeError / ValueError / IndexError with a message naming
the argument and what was expected -- never a crash, a hang, a MemoryError, a
wrong answer or a mutated input.  Covers: every wrong dtype (complex, object,
str, datetime, timedelta, bool targets) in every argument of every core
function, shape mismatches in every argument pair and class-axis layout,
extreme labels (int64/uint64 limits), ignore_index / base / reduction /
label_smoothing / n_threads / out= of the wrong kind or value, axis duplicates
and tuples where one axis is needed.
"""
import os

import numpy as np
import pytest

import lossmle as lm
from conftest import same_package_cwd

X = np.linspace(-2.0, 2.0, 12).reshape(4, 3)  # logits: 4 rows x 3 classes
T = np.array([0, 2, 1, 0])
P = np.full((4, 3), 1.0 / 3.0)
W = np.array([1.0, 2.0, 0.5])
V = np.array([0.2, 0.3, 0.5])
AXIS_ERR = (ValueError, IndexError)  # numpy's AxisError subclasses both

WRONG = {
    "complex": lambda a: np.asarray(a).astype(np.complex64),
    "object": lambda a: np.asarray(a).astype(object),
    "str": lambda a: np.asarray(a).astype("U4"),
    "bytes": lambda a: np.asarray(a).astype("S4"),
    "datetime": lambda a: np.asarray(a).astype(np.int64).astype("datetime64[s]"),
    "timedelta": lambda a: np.asarray(a).astype(np.int64).astype("timedelta64[ms]"),
    "void": lambda a: np.zeros(np.shape(a), dtype="V8"),
}

CASES = []


def case(cid, fn, args, kwargs, exc, match):
    CASES.append(pytest.param(fn, args, kwargs, exc, match, id=cid))


# --- wrong dtypes in every argument of every function -----------------------------
for kind, conv in WRONG.items():
    if kind != "complex":   # a complex b is accepted (scipy's complex logsumexp)
        case(f"logsumexp-b_{kind}", lm.logsumexp, (X,), {"b": conv(X)}, TypeError, r"\bb\b")
    case(f"kl-p_{kind}", lm.kl_divergence, (conv(P), P), {}, TypeError, r"\bp\b")
    case(f"kl-q_{kind}", lm.kl_divergence, (P, conv(P)), {}, TypeError, r"\bq\b")
    case(f"entropy-qk_{kind}", lm.entropy, (P, conv(P)), {}, TypeError, r"\bqk\b")
    for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad),
                     ("nll", lm.nll_loss)]:
        case(f"{name}-weight_{kind}", fn, (X, T), {"weight": conv(W)}, TypeError, "weight")
        case(f"{name}-target_{kind}", fn, (X, conv(T)), {}, TypeError, "target")
case("softmax-timedelta", lm.softmax, (WRONG["timedelta"](X),), {}, TypeError, r"\bx\b")
case("log_softmax-bytes", lm.log_softmax, (WRONG["bytes"](X),), {}, TypeError, r"\bx\b")
case("logsumexp-void", lm.logsumexp, (WRONG["void"](X),), {}, TypeError, r"\ba\b")
case("logsumexp-ragged_list", lm.logsumexp, ([[1.0, 2.0], [3.0]],), {}, (TypeError, ValueError),
     r"\ba\b|inhomogeneous|sequence")
case("entropy-float128", lm.entropy, (V.astype(np.longdouble),), {}, TypeError, "pk") \
    if np.dtype(np.longdouble).itemsize > 8 else None
for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad),
                 ("nll", lm.nll_loss)]:
    case(f"{name}-target_bool", fn, (X, T > 0), {}, TypeError, "target")
    case(f"{name}-target_python_bool", fn, (X[0], True), {}, TypeError, "target")
    case(f"{name}-target_float32_indices", fn, (X, T.astype(np.float32)),
         {} if name != "nll" else {}, (TypeError, ValueError), "target")

# --- shapes: every argument pair ---------------------------------------------------
for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad),
                 ("nll", lm.nll_loss)]:
    case(f"{name}-target_0d_for_2d_logits", fn, (X, 1), {}, ValueError, "target")
    case(f"{name}-target_for_other_axis", fn, (X, np.array([0, 1, 2, 0])), {"axis": 0},
         ValueError, "target")  # axis=0: 3 rows of 4 classes, target must have shape (3,)
    case(f"{name}-target_batch_transposed", fn, (np.zeros((2, 3, 5)), np.zeros((5, 2), int)),
         {"axis": 1}, ValueError, "target")
    case(f"{name}-weight_for_other_axis", fn, (X, np.array([0, 1, 2])), {"axis": 0,
                                                                         "weight": W},
         ValueError, "weight")  # 4 classes along axis 0, weight has 3
    case(f"{name}-weight_0d", fn, (X, T), {"weight": 1.0}, ValueError, "weight")
    case(f"{name}-weight_inf", fn, (X, T), {"weight": np.array([1.0, np.inf, 1.0])},
         ValueError, "weight")
    case(f"{name}-axis_tuple", fn, (X, T), {"axis": (0, 1)}, TypeError, "axis")
    case(f"{name}-axis_none", fn, (X, T), {"axis": None}, TypeError, "axis")
    case(f"{name}-axis_bool", fn, (X, T), {"axis": True}, TypeError, "axis")
    case(f"{name}-logits_0d", fn, (np.float64(1.0), 0), {}, ValueError, "dimension")
    case(f"{name}-zero_classes", fn, (np.zeros((4, 0)), T), {}, ValueError, "classes")
case("ce-prob_target_broadcastable_but_not_equal", lm.cross_entropy, (X, P[:1]), {}, ValueError,
     "target")
case("ce-prob_target_3d", lm.cross_entropy, (X, P[None]), {}, ValueError, "target")
case("logsumexp-b_wrong_rows", lm.logsumexp, (X,), {"b": np.ones((3, 3))}, ValueError, r"\bb\b")
case("kl-3d_incompatible", lm.kl_divergence, (np.ones((2, 3, 4)), np.ones((2, 4, 3))), {},
     ValueError, r"\bp\b.*\bq\b")
case("entropy-qk_longer", lm.entropy, (V, np.ones(4)), {}, ValueError, r"pk|qk")

# --- labels: extremes ----------------------------------------------------------------
INT64 = np.iinfo(np.int64)
for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad),
                 ("nll", lm.nll_loss)]:
    case(f"{name}-target_int64_max", fn, (X, np.array([0, INT64.max, 1, 0])), {}, IndexError,
         "target")
    case(f"{name}-target_int64_min", fn, (X, np.array([0, INT64.min, 1, 0])), {}, IndexError,
         "target")
    case(f"{name}-target_uint64_above_int64", fn, (X, np.array([0, 2**63 + 5, 1, 0], np.uint64)),
         {}, IndexError, "target")
    case(f"{name}-target_int8_negative", fn, (X, np.array([0, -1, 1, 0], np.int8)), {},
         IndexError, "target")
    case(f"{name}-target_python_int_huge", fn, (X[0], 2**70), {}, (IndexError, ValueError,
                                                                   OverflowError, TypeError),
         "target|int|bound")
    case(f"{name}-target_ignore_index_as_other_value", fn, (X, np.array([0, -100, 1, 0])),
         {"ignore_index": -1}, IndexError, r"target.*ignore_index=-1")
    # ignore_index of the wrong kind or range
    case(f"{name}-ignore_index_float", fn, (X, T), {"ignore_index": 1.0}, TypeError,
         "ignore_index")
    case(f"{name}-ignore_index_str", fn, (X, T), {"ignore_index": "-100"}, TypeError,
         "ignore_index")
    case(f"{name}-ignore_index_none", fn, (X, T), {"ignore_index": None}, TypeError,
         "ignore_index")
    case(f"{name}-ignore_index_bool", fn, (X, T), {"ignore_index": True}, TypeError,
         "ignore_index")
    case(f"{name}-ignore_index_beyond_int64", fn, (X, T), {"ignore_index": 2**64}, ValueError,
         "ignore_index")
    case(f"{name}-reduction_int", fn, (X, T), {"reduction": 1}, (TypeError, ValueError),
         "reduction")
    case(f"{name}-reduction_bytes", fn, (X, T), {"reduction": b"mean"}, (TypeError, ValueError),
         "reduction")
    case(f"{name}-n_threads_bool", fn, (X, T), {"n_threads": True}, TypeError, "n_threads")
    case(f"{name}-n_threads_list", fn, (X, T), {"n_threads": [2]}, TypeError, "n_threads")
    # libgomp ended the process for 2**31 - 1 threads on a large input; small
    # ones ignored it (one thread)
    case(f"{name}-n_threads_too_many", fn, (X, T), {"n_threads": 2**31 - 1}, ValueError,
         "n_threads")
    case(f"{name}-n_threads_beyond_c_int", fn, (X, T), {"n_threads": 2**31}, ValueError,
         "n_threads")
for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad)]:
    case(f"{name}-label_smoothing_none", fn, (X, T), {"label_smoothing": None}, TypeError,
         "label_smoothing")
    case(f"{name}-label_smoothing_array", fn, (X, T), {"label_smoothing": np.array([0.1, 0.2])},
         (TypeError, ValueError), "label_smoothing")
    case(f"{name}-label_smoothing_np_nan", fn, (X, T), {"label_smoothing": np.float32("nan")},
         ValueError, "label_smoothing")
    case(f"{name}-label_smoothing_complex", fn, (X, T), {"label_smoothing": 0.1j}, TypeError,
         "label_smoothing")

# --- special functions: axes, threads ---------------------------------------------
for name, fn, first in [("logsumexp", lm.logsumexp, X), ("softmax", lm.softmax, X),
                        ("log_softmax", lm.log_softmax, X), ("entropy", lm.entropy, P)]:
    case(f"{name}-axis_duplicate_after_normalising", fn, (np.zeros((2, 3, 4)),),
         {"axis": (0, 2, -1)}, ValueError, "axis")
    case(f"{name}-axis_tuple_of_float", fn, (first,), {"axis": (0, 1.0)}, TypeError, "axis")
    case(f"{name}-axis_str", fn, (first,), {"axis": "0"}, TypeError, "axis")
    case(f"{name}-axis_on_0d", fn, (np.float64(1.0),), {"axis": 1}, AXIS_ERR, "axis")
    case(f"{name}-n_threads_bool", fn, (first,), {"n_threads": False}, TypeError, "n_threads")
    case(f"{name}-n_threads_negative", fn, (first,), {"n_threads": -1}, ValueError, "n_threads")
    case(f"{name}-n_threads_too_many", fn, (first,), {"n_threads": 1025}, ValueError,
         "n_threads")
case("kl-axis_duplicate", lm.kl_divergence, (P, P), {"axis": (1, -1)}, ValueError, "axis")
case("kl-axis_str", lm.kl_divergence, (P, P), {"axis": "last"}, TypeError, "axis")
case("kl-n_threads_bool", lm.kl_divergence, (P, P), {"n_threads": True}, TypeError, "n_threads")
case("kl-n_threads_too_many", lm.kl_divergence, (P, P), {"n_threads": 10**9}, ValueError,
     "n_threads")
case("kl-p_minus_inf", lm.kl_divergence, (np.array([-np.inf, 1.0]), np.array([0.5, 0.5])), {},
     ValueError, r"\bp\b")
case("kl-q_nan_f32", lm.kl_divergence, (np.float32([0.5, 0.5]), np.float32([np.nan, 1])), {},
     ValueError, r"\bq\b")
case("kl-q_negative_in_later_row", lm.kl_divergence,
     (np.full((3, 2), 0.5), np.array([[0.5, 0.5], [0.5, 0.5], [1.5, -0.5]])), {}, ValueError,
     r"\bq\b")
for bname, base, exc in [("zero", 0, ValueError), ("negative", -2.0, ValueError),
                         ("nan", float("nan"), ValueError), ("str", "e", TypeError),
                         ("none_list", [2], TypeError)]:
    case(f"kl-base_{bname}", lm.kl_divergence, (V, V), {"base": base}, exc, "base")
    case(f"entropy-base_{bname}", lm.entropy, (V,), {"base": base}, exc, "base")

# --- out= buffers and thread settings of the wrong kind -----------------------------
SM = np.full((4, 3), 1.0 / 3.0)
G = np.ones((4, 3))
for bname, fn in [("softmax_backward", lm.softmax_backward),
                  ("log_softmax_backward", lm.log_softmax_backward)]:
    case(f"{bname}-out_list", fn, (G, SM), {"out": [[0.0] * 3] * 4}, TypeError, "out")
    case(f"{bname}-out_wrong_dtype", fn, (G, SM), {"out": np.empty((4, 3), np.float32)},
         TypeError, "out")
    case(f"{bname}-out_wrong_shape", fn, (G, SM), {"out": np.empty((3, 4))}, ValueError, "out")
    case(f"{bname}-out_readonly", fn, (G, SM), {"out": np.broadcast_to(np.empty(3), (4, 3))},
         ValueError, "out")
    case(f"{bname}-out_scalar", fn, (G, SM), {"out": 0.0}, TypeError, "out")
case("set_num_threads-zero", lm.set_num_threads, (0,), {}, ValueError, "n_threads")
case("set_num_threads-float", lm.set_num_threads, (2.5,), {}, TypeError, "n_threads")
case("set_num_threads-str", lm.set_num_threads, ("4",), {}, TypeError, "n_threads")
case("set_num_threads-bool", lm.set_num_threads, (True,), {}, TypeError, "n_threads")
case("set_num_threads-too_many", lm.set_num_threads, (10**9,), {}, ValueError, "n_threads")

CASES = [c for c in CASES if c is not None]


@pytest.mark.parametrize("fn,args,kwargs,exc,match", CASES)
def test_bad_input_matrix_part2(fn, args, kwargs, exc, match):
    arrays = [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]
    snapshots = [a.copy() for a in arrays]
    threads_before = lm.get_num_threads()
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert len(str(info.value)) > 10  # says what was expected, not just the name
    for a, s in zip(arrays, snapshots):
        assert a.tobytes() == s.tobytes()  # untouched, bit for bit
    assert lm.get_num_threads() == threads_before  # a failed set_num_threads changes nothing


def test_matrix_is_large_and_ids_unique():
    ids = [c.id for c in CASES]
    assert len(ids) >= 30
    assert len(ids) == len(set(ids))


def test_overlapping_out_buffer_rejected():
    # out that partly overlaps an input (not the same array) would read what it wrote
    buf = np.ones((5, 3))
    g, s = buf[:4], np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="out"):
        lm.softmax_backward(g, s, out=buf[1:])



def test_thread_ceiling_on_a_threaded_input():
    """Above the threading threshold the count reaches OpenMP: 1024 threads
    run (and give the one-thread bits), one more is a ValueError, never a
    process that libgomp ends."""
    from lossmle._validation import MAX_THREADS, PARALLEL_MIN_ELEMENTS
    x = np.random.default_rng(0).normal(size=(PARALLEL_MIN_ELEMENTS // 64, 128))
    np.testing.assert_array_equal(lm.logsumexp(x, axis=-1, n_threads=MAX_THREADS),
                                  lm.logsumexp(x, axis=-1, n_threads=1))
    with pytest.raises(ValueError, match="n_threads must be at most"):
        lm.logsumexp(x, axis=-1, n_threads=MAX_THREADS + 1)


def test_omp_num_threads_above_the_ceiling_is_capped(tmp_path):
    """OMP_NUM_THREADS=100000 used to reach prange as is: libgomp failed to
    start the threads and the process died (SIGSEGV).  n_threads=None now
    caps OpenMP's default at MAX_THREADS, and the answer is SciPy's."""
    import subprocess
    import sys
    pytest.importorskip("scipy")
    script = tmp_path / "omp_env.py"
    script.write_text(
        "import numpy as np, scipy.special as sc, lossmle as lm\n"
        "from lossmle._validation import MAX_THREADS, PARALLEL_MIN_ELEMENTS\n"
        "x = np.random.default_rng(1).normal(size=(PARALLEL_MIN_ELEMENTS // 64, 128))\n"
        "assert lm.get_num_threads() == MAX_THREADS, lm.get_num_threads()\n"
        "np.testing.assert_allclose(lm.logsumexp(x, axis=-1), sc.logsumexp(x, axis=-1),\n"
        "                           rtol=1e-14)\n"
        "print('ok')\n")
    env = dict(os.environ, OMP_NUM_THREADS="100000", PYTHONPATH=same_package_cwd())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
