"""The bad-input matrix: every case raises TypeError / ValueError / IndexError
with a message that names the offending argument."""
import numpy as np
import pytest

import lossmle as lm

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
