"""The bad-input matrix: every case raises TypeError / ValueError / IndexError
with a message that names the offending argument (part 1: the core cases;
part 2, below: every wrong dtype, shape pair, extreme label and keyword value)."""
import os

import numpy as np
import pytest

import lossmle as lm
from conftest import same_package_cwd

X = np.arange(12, dtype=np.float64).reshape(4, 3) / 7.0  # logits, 4 rows x 3 classes
T = np.array([0, 2, 1, 0])  # class indices
P = np.full((4, 3), 1.0 / 3.0)  # probability target
W = np.array([1.0, 2.0, 0.5])
PROB = np.array([0.2, 0.3, 0.5])

AXIS_ERR = (ValueError, IndexError)  # numpy's AxisError subclasses both
THREAD_ERR = (TypeError, ValueError)
COMPLEX = X.astype(np.complex128)
OBJECT = X.astype(object)
STRINGS = np.array([["a", "b", "c"]] * 4)
DATES = np.array(["2020-01-01"] * 12, dtype="datetime64[D]").reshape(4, 3)
TIMEDELTAS = np.arange(12).astype("timedelta64[s]").reshape(4, 3)

LOSSES = {
    "ce": lm.cross_entropy,
    "ce_grad": lm.cross_entropy_with_grad,
}
LOSSES_ALL = dict(LOSSES, nll=lm.nll_loss)


# (id, function, args, kwargs, exception type(s), regex the message must match)
CASES = []


def case(cid, fn, args, kwargs, exc, match):
    CASES.append(pytest.param(fn, args, kwargs, exc, match, id=cid))


# --- losses: target ------------------------------------------------------------
for name, fn in LOSSES_ALL.items():
    first = "log_probs" if name == "nll" else "logits"
    case(f"{name}-target_too_short", fn, (X, T[:3]), {}, ValueError, "target")
    case(f"{name}-target_too_long", fn, (X, np.array([0, 1, 2, 0, 1])), {}, ValueError, "target")
    case(f"{name}-target_extra_dim", fn, (X, T[:, None]), {}, ValueError, "target")
    case(f"{name}-target_wrong_nd", fn, (X, np.zeros((4, 2), dtype=np.int64)), {}, ValueError,
         "target")
    case(f"{name}-target_class_eq_C", fn, (X, np.array([0, 1, 3, 0])), {}, IndexError, "target")
    case(f"{name}-target_negative", fn, (X, np.array([0, -1, 1, 0])), {}, IndexError, "target")
    case(f"{name}-target_huge", fn, (X, np.array([0, 2**40, 1, 0])), {}, IndexError, "target")
    case(f"{name}-target_huge_negative", fn, (X, np.array([0, -(2**40), 1, 0])), {}, IndexError,
         "target")
    case(f"{name}-target_uint8_out_of_range", fn, (X, np.array([0, 255, 1, 0], np.uint8)), {},
         IndexError, "target")
    case(f"{name}-target_python_int_out_of_range", fn, (X[0], 7), {}, IndexError, "target")
    case(f"{name}-target_default_ignore_index_with_custom", fn, (X, np.array([0, -100, 1, 0])),
         {"ignore_index": 1}, IndexError, "target")
    case(f"{name}-target_complex", fn, (X, T.astype(np.complex128)), {}, TypeError, "target")
    case(f"{name}-target_str", fn, (X, np.array(["0", "1", "2", "0"])), {}, TypeError, "target")
    case(f"{name}-target_object", fn, (X, T.astype(object)), {}, TypeError, "target")
    case(f"{name}-{first}_complex", fn, (COMPLEX, T), {}, TypeError, first)
    case(f"{name}-{first}_object", fn, (OBJECT, T), {}, TypeError, first)
    case(f"{name}-{first}_str", fn, (STRINGS, T), {}, TypeError, first)
    case(f"{name}-{first}_datetime", fn, (DATES, T), {}, TypeError, first)
    case(f"{name}-{first}_timedelta", fn, (TIMEDELTAS, T), {}, TypeError, first)
    case(f"{name}-axis_too_big", fn, (X, T), {"axis": 2}, AXIS_ERR, "axis")
    case(f"{name}-axis_too_negative", fn, (X, T), {"axis": -3}, AXIS_ERR, "axis")
    case(f"{name}-axis_float", fn, (X, T), {"axis": 1.0}, TypeError, "axis")
    case(f"{name}-reduction_unknown", fn, (X, T), {"reduction": "avg"}, ValueError, "reduction")
    case(f"{name}-reduction_none_object", fn, (X, T), {"reduction": None}, (TypeError, ValueError),
         "reduction")
    case(f"{name}-reduction_case", fn, (X, T), {"reduction": "MEAN"}, ValueError, "reduction")
    case(f"{name}-weight_too_short", fn, (X, T), {"weight": W[:2]}, ValueError, "weight")
    case(f"{name}-weight_too_long", fn, (X, T), {"weight": np.ones(4)}, ValueError, "weight")
    case(f"{name}-weight_2d", fn, (X, T), {"weight": np.ones((1, 3))}, ValueError, "weight")
    case(f"{name}-weight_nan", fn, (X, T), {"weight": np.array([1.0, np.nan, 1.0])}, ValueError,
         "weight")
    case(f"{name}-weight_inf", fn, (X, T), {"weight": np.array([1.0, np.inf, 1.0])},
         ValueError, "weight")
    case(f"{name}-weight_complex", fn, (X, T), {"weight": W.astype(complex)}, TypeError, "weight")
    case(f"{name}-n_threads_zero", fn, (X, T), {"n_threads": 0}, THREAD_ERR, "n_threads")
    case(f"{name}-n_threads_negative", fn, (X, T), {"n_threads": -2}, THREAD_ERR, "n_threads")
    case(f"{name}-n_threads_float", fn, (X, T), {"n_threads": 1.5}, THREAD_ERR, "n_threads")
    case(f"{name}-n_threads_str", fn, (X, T), {"n_threads": "2"}, THREAD_ERR, "n_threads")

for name, fn in LOSSES.items():
    case(f"{name}-float_target_of_class_indices", fn, (X, T.astype(np.float64)), {}, ValueError,
         "target")
    case(f"{name}-prob_target_wrong_classes", fn, (X, np.full((4, 2), 0.5)), {}, ValueError,
         "target")
    case(f"{name}-prob_target_wrong_rows", fn, (X, np.full((5, 3), 1 / 3)), {}, ValueError,
         "target")
    case(f"{name}-prob_target_transposed", fn, (X, P.T.copy()), {}, ValueError, "target")
    case(f"{name}-label_smoothing_negative", fn, (X, T), {"label_smoothing": -0.1}, ValueError,
         "label_smoothing")
    case(f"{name}-label_smoothing_above_one", fn, (X, T), {"label_smoothing": 1.5}, ValueError,
         "label_smoothing")
    case(f"{name}-label_smoothing_nan", fn, (X, T), {"label_smoothing": float("nan")}, ValueError,
         "label_smoothing")
    case(f"{name}-label_smoothing_inf", fn, (X, T), {"label_smoothing": float("inf")}, ValueError,
         "label_smoothing")
    case(f"{name}-label_smoothing_str", fn, (X, T), {"label_smoothing": "0.1"},
         (TypeError, ValueError), "label_smoothing")
    case(f"{name}-prob_target_weight_wrong_length", fn, (X, P), {"weight": np.ones(2)}, ValueError,
         "weight")

case("nll-float_target", lm.nll_loss, (X, T.astype(np.float64)), {}, (TypeError, ValueError),
     "target")

# --- logsumexp / softmax / log_softmax -----------------------------------------
for name, fn, first in [("logsumexp", lm.logsumexp, "a"), ("softmax", lm.softmax, "x"),
                        ("log_softmax", lm.log_softmax, "x")]:
    arg = rf"\b{first}\b"
    if name != "logsumexp":   # complex logsumexp is scipy's (tests/test_logsumexp_complex.py)
        case(f"{name}-complex", fn, (COMPLEX,), {}, TypeError, arg)
    case(f"{name}-object", fn, (OBJECT,), {}, TypeError, arg)
    case(f"{name}-str", fn, (STRINGS,), {}, TypeError, arg)
    case(f"{name}-datetime", fn, (DATES,), {}, TypeError, arg)
    case(f"{name}-axis_too_big", fn, (X,), {"axis": 2}, AXIS_ERR, "axis")
    case(f"{name}-axis_too_negative", fn, (X,), {"axis": -3}, AXIS_ERR, "axis")
    case(f"{name}-axis_tuple_out_of_range", fn, (X,), {"axis": (0, 5)}, AXIS_ERR, "axis")
    case(f"{name}-axis_duplicate", fn, (X,), {"axis": (0, 0)}, ValueError, "axis")
    case(f"{name}-axis_duplicate_negative", fn, (X,), {"axis": (1, -1)}, ValueError, "axis")
    case(f"{name}-axis_float", fn, (X,), {"axis": 0.5}, TypeError, "axis")
    case(f"{name}-n_threads_zero", fn, (X,), {"n_threads": 0}, THREAD_ERR, "n_threads")
    case(f"{name}-n_threads_float", fn, (X,), {"n_threads": 2.0}, THREAD_ERR, "n_threads")
    case(f"{name}-n_threads_str", fn, (X,), {"n_threads": "many"}, THREAD_ERR, "n_threads")

case("logsumexp-b_not_broadcastable", lm.logsumexp, (X,), {"b": np.ones(4)}, ValueError, r"\bb\b")
case("logsumexp-b_clongdouble", lm.logsumexp, (X,), {"b": np.ones(3, np.clongdouble)},
     TypeError, r"\bb\b")
case("logsumexp-b_str", lm.logsumexp, (X,), {"b": np.array(["1", "2", "3"])}, TypeError,
     r"\bb\b")

# --- kl_divergence --------------------------------------------------------------
case("kl-shape_mismatch", lm.kl_divergence, (PROB, np.array([0.5, 0.5])), {}, ValueError,
     r"\bp\b|\bq\b")
case("kl-shape_mismatch_2d", lm.kl_divergence, (np.full((4, 3), 1 / 3), np.full((3, 3), 1 / 3)),
     {}, ValueError, r"\bp\b|\bq\b")
case("kl-p_negative", lm.kl_divergence, (np.array([1.2, -0.2]), np.array([0.5, 0.5])), {},
     ValueError, r"\bp\b")
case("kl-q_negative", lm.kl_divergence, (np.array([0.5, 0.5]), np.array([1.2, -0.2])), {},
     ValueError, r"\bq\b")
case("kl-p_nan", lm.kl_divergence, (np.array([np.nan, 0.5]), np.array([0.5, 0.5])), {},
     ValueError, r"\bp\b")
case("kl-q_nan", lm.kl_divergence, (np.array([0.5, 0.5]), np.array([0.5, np.nan])), {},
     ValueError, r"\bq\b")
case("kl-q_negative_f32", lm.kl_divergence,
     (np.array([0.5, 0.5], np.float32), np.array([1.5, -0.5], np.float32)), {}, ValueError,
     r"\bq\b")
case("kl-p_complex", lm.kl_divergence, (PROB.astype(complex), PROB), {}, TypeError, r"\bp\b")
case("kl-q_object", lm.kl_divergence, (PROB, PROB.astype(object)), {}, TypeError, r"\bq\b")
case("kl-q_str", lm.kl_divergence, (PROB, np.array(["a", "b", "c"])), {}, TypeError, r"\bq\b")
case("kl-axis_too_big", lm.kl_divergence, (PROB, PROB), {"axis": 1}, AXIS_ERR, "axis")
case("kl-axis_too_negative", lm.kl_divergence, (PROB, PROB), {"axis": -2}, AXIS_ERR, "axis")
case("kl-n_threads_zero", lm.kl_divergence, (PROB, PROB), {"n_threads": 0}, THREAD_ERR,
     "n_threads")

# --- entropy --------------------------------------------------------------------
case("entropy-shape_mismatch", lm.entropy, (np.ones((4, 3)), np.ones((3, 3))), {}, ValueError,
     "pk|qk")
case("entropy-pk_complex", lm.entropy, (PROB.astype(complex),), {}, TypeError, "pk")
case("entropy-qk_complex", lm.entropy, (PROB, PROB.astype(complex)), {}, TypeError, "qk")
case("entropy-pk_str", lm.entropy, (np.array(["a", "b"]),), {}, TypeError, "pk")
case("entropy-pk_datetime", lm.entropy, (DATES,), {}, TypeError, "pk")
case("entropy-axis_too_big", lm.entropy, (PROB,), {"axis": 1}, AXIS_ERR, "axis")
case("entropy-axis_too_negative", lm.entropy, (np.ones((2, 2)),), {"axis": -3}, AXIS_ERR, "axis")
case("entropy-n_threads_zero", lm.entropy, (PROB,), {"n_threads": 0}, THREAD_ERR, "n_threads")


@pytest.mark.parametrize("fn,args,kwargs,exc,match", CASES)
def test_bad_input_raises_and_names_argument(fn, args, kwargs, exc, match):
    snapshots = [np.array(a, copy=True) for a in args if isinstance(a, np.ndarray)]
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)
    # a failed call must not have touched its inputs either
    for before, a in zip(snapshots, [a for a in args if isinstance(a, np.ndarray)]):
        np.testing.assert_array_equal(a, before)


# ---------------------------------------------------------------------------
# Valid edge values that must NOT raise (guards against over-eager validation)
# ---------------------------------------------------------------------------
GOOD = [
    pytest.param(lm.cross_entropy, (X, T), {"label_smoothing": 0.0}, id="ce-label_smoothing_0"),
    pytest.param(lm.cross_entropy, (X, T), {"label_smoothing": 1.0}, id="ce-label_smoothing_1"),
    pytest.param(lm.cross_entropy, (X, T), {"weight": np.zeros(3)}, id="ce-weight_all_zero"),
    pytest.param(lm.cross_entropy, (X, np.array([0, 1, 2, 1])), {"ignore_index": 1},
                 id="ce-ignore_index_collides_with_class"),
    pytest.param(lm.cross_entropy, (X, np.array([0, 7, 2, 1])), {"ignore_index": 7},
                 id="ce-ignore_index_out_of_range_value"),
    pytest.param(lm.cross_entropy, (X, T), {"axis": -1, "n_threads": 1}, id="ce-n_threads_1"),
    pytest.param(lm.cross_entropy, (X, T), {"n_threads": np.int64(2)}, id="ce-n_threads_np_int"),
    pytest.param(lm.cross_entropy, (X, T), {"n_threads": None}, id="ce-n_threads_None"),
    pytest.param(lm.nll_loss, (X, np.array([0, -100, 1, -100])), {}, id="nll-default_ignore"),
    pytest.param(lm.logsumexp, (X,), {"axis": (0, 1)}, id="logsumexp-axis_all"),
    pytest.param(lm.softmax, (X,), {"axis": (1, 0)}, id="softmax-axis_unsorted"),
    pytest.param(lm.kl_divergence, (np.zeros(3), PROB), {}, id="kl-p_all_zero"),
    pytest.param(lm.kl_divergence, (PROB, np.zeros(3)), {}, id="kl-q_all_zero"),
    pytest.param(lm.entropy, (np.zeros(3),), {}, id="entropy-all_zero"),
]


@pytest.mark.parametrize("fn,args,kwargs", GOOD)
def test_valid_edge_values_accepted(fn, args, kwargs):
    fn(*args, **kwargs)


# ===========================================================================
# Part 2: every wrong dtype, shape pair, extreme label and keyword value
# (was test_hardening_bad_input.py)
# Bad-input matrix, part 2 (extends part 1 above without repeating it).
#
# Each case must raise TypeError / ValueError / IndexError with a message naming
# the argument and what was expected -- never a crash, a hang, a MemoryError, a
# wrong answer or a mutated input.  Covers: every wrong dtype (complex, object,
# str, datetime, timedelta, bool targets) in every argument of every core
# function, shape mismatches in every argument pair and class-axis layout,
# extreme labels (int64/uint64 limits), ignore_index / base / reduction /
# label_smoothing / n_threads / out= of the wrong kind or value, axis duplicates
# and tuples where one axis is needed.
# ===========================================================================
X2 = np.linspace(-2.0, 2.0, 12).reshape(4, 3)  # logits: 4 rows x 3 classes
V = np.array([0.2, 0.3, 0.5])

WRONG = {
    "complex": lambda a: np.asarray(a).astype(np.complex64),
    "object": lambda a: np.asarray(a).astype(object),
    "str": lambda a: np.asarray(a).astype("U4"),
    "bytes": lambda a: np.asarray(a).astype("S4"),
    "datetime": lambda a: np.asarray(a).astype(np.int64).astype("datetime64[s]"),
    "timedelta": lambda a: np.asarray(a).astype(np.int64).astype("timedelta64[ms]"),
    "void": lambda a: np.zeros(np.shape(a), dtype="V8"),
}

CASES2 = []


def case2(cid, fn, args, kwargs, exc, match):
    CASES2.append(pytest.param(fn, args, kwargs, exc, match, id=cid))


# --- wrong dtypes in every argument of every function -----------------------------
for kind, conv in WRONG.items():
    if kind != "complex":   # a complex b is accepted (scipy's complex logsumexp)
        case2(f"logsumexp-b_{kind}", lm.logsumexp, (X2,), {"b": conv(X2)}, TypeError, r"\bb\b")
    case2(f"kl-p_{kind}", lm.kl_divergence, (conv(P), P), {}, TypeError, r"\bp\b")
    case2(f"kl-q_{kind}", lm.kl_divergence, (P, conv(P)), {}, TypeError, r"\bq\b")
    case2(f"entropy-qk_{kind}", lm.entropy, (P, conv(P)), {}, TypeError, r"\bqk\b")
    for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad),
                     ("nll", lm.nll_loss)]:
        case2(f"{name}-weight_{kind}", fn, (X2, T), {"weight": conv(W)}, TypeError, "weight")
        case2(f"{name}-target_{kind}", fn, (X2, conv(T)), {}, TypeError, "target")
case2("softmax-timedelta", lm.softmax, (WRONG["timedelta"](X2),), {}, TypeError, r"\bx\b")
case2("log_softmax-bytes", lm.log_softmax, (WRONG["bytes"](X2),), {}, TypeError, r"\bx\b")
case2("logsumexp-void", lm.logsumexp, (WRONG["void"](X2),), {}, TypeError, r"\ba\b")
case2("logsumexp-ragged_list", lm.logsumexp, ([[1.0, 2.0], [3.0]],), {}, (TypeError, ValueError),
     r"\ba\b|inhomogeneous|sequence")
case2("entropy-float128", lm.entropy, (V.astype(np.longdouble),), {}, TypeError, "pk") \
    if np.dtype(np.longdouble).itemsize > 8 else None
for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad),
                 ("nll", lm.nll_loss)]:
    case2(f"{name}-target_bool", fn, (X2, T > 0), {}, TypeError, "target")
    case2(f"{name}-target_python_bool", fn, (X2[0], True), {}, TypeError, "target")
    case2(f"{name}-target_float32_indices", fn, (X2, T.astype(np.float32)),
         {} if name != "nll" else {}, (TypeError, ValueError), "target")

# --- shapes: every argument pair ---------------------------------------------------
for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad),
                 ("nll", lm.nll_loss)]:
    case2(f"{name}-target_0d_for_2d_logits", fn, (X2, 1), {}, ValueError, "target")
    case2(f"{name}-target_for_other_axis", fn, (X2, np.array([0, 1, 2, 0])), {"axis": 0},
         ValueError, "target")  # axis=0: 3 rows of 4 classes, target must have shape (3,)
    case2(f"{name}-target_batch_transposed", fn, (np.zeros((2, 3, 5)), np.zeros((5, 2), int)),
         {"axis": 1}, ValueError, "target")
    case2(f"{name}-weight_for_other_axis", fn, (X2, np.array([0, 1, 2])), {"axis": 0,
                                                                         "weight": W},
         ValueError, "weight")  # 4 classes along axis 0, weight has 3
    case2(f"{name}-weight_0d", fn, (X2, T), {"weight": 1.0}, ValueError, "weight")
    case2(f"{name}-weight_inf", fn, (X2, T), {"weight": np.array([1.0, np.inf, 1.0])},
         ValueError, "weight")
    case2(f"{name}-axis_tuple", fn, (X2, T), {"axis": (0, 1)}, TypeError, "axis")
    case2(f"{name}-axis_none", fn, (X2, T), {"axis": None}, TypeError, "axis")
    case2(f"{name}-axis_bool", fn, (X2, T), {"axis": True}, TypeError, "axis")
    case2(f"{name}-logits_0d", fn, (np.float64(1.0), 0), {}, ValueError, "dimension")
    case2(f"{name}-zero_classes", fn, (np.zeros((4, 0)), T), {}, ValueError, "classes")
case2("ce-prob_target_broadcastable_but_not_equal", lm.cross_entropy, (X2, P[:1]), {}, ValueError,
     "target")
case2("ce-prob_target_3d", lm.cross_entropy, (X2, P[None]), {}, ValueError, "target")
case2("logsumexp-b_wrong_rows", lm.logsumexp, (X2,), {"b": np.ones((3, 3))}, ValueError, r"\bb\b")
case2("kl-3d_incompatible", lm.kl_divergence, (np.ones((2, 3, 4)), np.ones((2, 4, 3))), {},
     ValueError, r"\bp\b.*\bq\b")
case2("entropy-qk_longer", lm.entropy, (V, np.ones(4)), {}, ValueError, r"pk|qk")

# --- labels: extremes ----------------------------------------------------------------
INT64 = np.iinfo(np.int64)
for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad),
                 ("nll", lm.nll_loss)]:
    case2(f"{name}-target_int64_max", fn, (X2, np.array([0, INT64.max, 1, 0])), {}, IndexError,
         "target")
    case2(f"{name}-target_int64_min", fn, (X2, np.array([0, INT64.min, 1, 0])), {}, IndexError,
         "target")
    case2(f"{name}-target_uint64_above_int64", fn, (X2, np.array([0, 2**63 + 5, 1, 0], np.uint64)),
         {}, IndexError, "target")
    case2(f"{name}-target_int8_negative", fn, (X2, np.array([0, -1, 1, 0], np.int8)), {},
         IndexError, "target")
    case2(f"{name}-target_python_int_huge", fn, (X2[0], 2**70), {}, (IndexError, ValueError,
                                                                   OverflowError, TypeError),
         "target|int|bound")
    case2(f"{name}-target_ignore_index_as_other_value", fn, (X2, np.array([0, -100, 1, 0])),
         {"ignore_index": -1}, IndexError, r"target.*ignore_index=-1")
    # ignore_index of the wrong kind or range
    case2(f"{name}-ignore_index_float", fn, (X2, T), {"ignore_index": 1.0}, TypeError,
         "ignore_index")
    case2(f"{name}-ignore_index_str", fn, (X2, T), {"ignore_index": "-100"}, TypeError,
         "ignore_index")
    case2(f"{name}-ignore_index_none", fn, (X2, T), {"ignore_index": None}, TypeError,
         "ignore_index")
    case2(f"{name}-ignore_index_bool", fn, (X2, T), {"ignore_index": True}, TypeError,
         "ignore_index")
    case2(f"{name}-ignore_index_beyond_int64", fn, (X2, T), {"ignore_index": 2**64}, ValueError,
         "ignore_index")
    case2(f"{name}-reduction_int", fn, (X2, T), {"reduction": 1}, (TypeError, ValueError),
         "reduction")
    case2(f"{name}-reduction_bytes", fn, (X2, T), {"reduction": b"mean"}, (TypeError, ValueError),
         "reduction")
    case2(f"{name}-n_threads_bool", fn, (X2, T), {"n_threads": True}, TypeError, "n_threads")
    case2(f"{name}-n_threads_list", fn, (X2, T), {"n_threads": [2]}, TypeError, "n_threads")
    # libgomp ended the process for 2**31 - 1 threads on a large input; small
    # ones ignored it (one thread)
    case2(f"{name}-n_threads_too_many", fn, (X2, T), {"n_threads": 2**31 - 1}, ValueError,
         "n_threads")
    case2(f"{name}-n_threads_beyond_c_int", fn, (X2, T), {"n_threads": 2**31}, ValueError,
         "n_threads")
for name, fn in [("ce", lm.cross_entropy), ("ce_grad", lm.cross_entropy_with_grad)]:
    case2(f"{name}-label_smoothing_none", fn, (X2, T), {"label_smoothing": None}, TypeError,
         "label_smoothing")
    case2(f"{name}-label_smoothing_array", fn, (X2, T), {"label_smoothing": np.array([0.1, 0.2])},
         (TypeError, ValueError), "label_smoothing")
    case2(f"{name}-label_smoothing_np_nan", fn, (X2, T), {"label_smoothing": np.float32("nan")},
         ValueError, "label_smoothing")
    case2(f"{name}-label_smoothing_complex", fn, (X2, T), {"label_smoothing": 0.1j}, TypeError,
         "label_smoothing")

# --- special functions: axes, threads ---------------------------------------------
for name, fn, first in [("logsumexp", lm.logsumexp, X2), ("softmax", lm.softmax, X2),
                        ("log_softmax", lm.log_softmax, X2), ("entropy", lm.entropy, P)]:
    case2(f"{name}-axis_duplicate_after_normalising", fn, (np.zeros((2, 3, 4)),),
         {"axis": (0, 2, -1)}, ValueError, "axis")
    case2(f"{name}-axis_tuple_of_float", fn, (first,), {"axis": (0, 1.0)}, TypeError, "axis")
    case2(f"{name}-axis_str", fn, (first,), {"axis": "0"}, TypeError, "axis")
    case2(f"{name}-axis_on_0d", fn, (np.float64(1.0),), {"axis": 1}, AXIS_ERR, "axis")
    case2(f"{name}-n_threads_bool", fn, (first,), {"n_threads": False}, TypeError, "n_threads")
    case2(f"{name}-n_threads_negative", fn, (first,), {"n_threads": -1}, ValueError, "n_threads")
    case2(f"{name}-n_threads_too_many", fn, (first,), {"n_threads": 1025}, ValueError,
         "n_threads")
case2("kl-axis_duplicate", lm.kl_divergence, (P, P), {"axis": (1, -1)}, ValueError, "axis")
case2("kl-axis_str", lm.kl_divergence, (P, P), {"axis": "last"}, TypeError, "axis")
case2("kl-n_threads_bool", lm.kl_divergence, (P, P), {"n_threads": True}, TypeError, "n_threads")
case2("kl-n_threads_too_many", lm.kl_divergence, (P, P), {"n_threads": 10**9}, ValueError,
     "n_threads")
case2("kl-p_minus_inf", lm.kl_divergence, (np.array([-np.inf, 1.0]), np.array([0.5, 0.5])), {},
     ValueError, r"\bp\b")
case2("kl-q_nan_f32", lm.kl_divergence, (np.float32([0.5, 0.5]), np.float32([np.nan, 1])), {},
     ValueError, r"\bq\b")
case2("kl-q_negative_in_later_row", lm.kl_divergence,
     (np.full((3, 2), 0.5), np.array([[0.5, 0.5], [0.5, 0.5], [1.5, -0.5]])), {}, ValueError,
     r"\bq\b")
for bname, base, exc in [("zero", 0, ValueError), ("negative", -2.0, ValueError),
                         ("nan", float("nan"), ValueError), ("str", "e", TypeError),
                         ("none_list", [2], TypeError)]:
    case2(f"kl-base_{bname}", lm.kl_divergence, (V, V), {"base": base}, exc, "base")
    case2(f"entropy-base_{bname}", lm.entropy, (V,), {"base": base}, exc, "base")

# --- out= buffers and thread settings of the wrong kind -----------------------------
SM = np.full((4, 3), 1.0 / 3.0)
G = np.ones((4, 3))
for bname, fn in [("softmax_backward", lm.softmax_backward),
                  ("log_softmax_backward", lm.log_softmax_backward)]:
    case2(f"{bname}-out_list", fn, (G, SM), {"out": [[0.0] * 3] * 4}, TypeError, "out")
    case2(f"{bname}-out_wrong_dtype", fn, (G, SM), {"out": np.empty((4, 3), np.float32)},
         TypeError, "out")
    case2(f"{bname}-out_wrong_shape", fn, (G, SM), {"out": np.empty((3, 4))}, ValueError, "out")
    case2(f"{bname}-out_readonly", fn, (G, SM), {"out": np.broadcast_to(np.empty(3), (4, 3))},
         ValueError, "out")
    case2(f"{bname}-out_scalar", fn, (G, SM), {"out": 0.0}, TypeError, "out")
case2("set_num_threads-zero", lm.set_num_threads, (0,), {}, ValueError, "n_threads")
case2("set_num_threads-float", lm.set_num_threads, (2.5,), {}, TypeError, "n_threads")
case2("set_num_threads-str", lm.set_num_threads, ("4",), {}, TypeError, "n_threads")
case2("set_num_threads-bool", lm.set_num_threads, (True,), {}, TypeError, "n_threads")
case2("set_num_threads-too_many", lm.set_num_threads, (10**9,), {}, ValueError, "n_threads")

CASES2 = [c for c in CASES2 if c is not None]


@pytest.mark.parametrize("fn,args,kwargs,exc,match", CASES2)
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
    ids = [c.id for c in CASES2]
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
