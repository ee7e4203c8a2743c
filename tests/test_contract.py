"""One contract over every public name: each shared keyword a function takes
is checked the same way everywhere (same exception type, a message naming
the argument), and a new public function is covered as soon as it is added.

The keywords each function takes are read from its signature, so a function
that gains ``temperature=`` is probed for it without a change here; a public
name missing from ``CALLS`` (and not exempt) fails ``test_every_public_name``.
"""
import inspect
import math

import numpy as np
import pytest

import lossmle as lm

rng = np.random.default_rng(2024)
X = rng.standard_normal((4, 3))
T = np.array([0, 1, 2, 0])
P = np.exp(X) / np.exp(X).sum(axis=1, keepdims=True)
G = rng.standard_normal((4, 3))
B01 = (X > 0).astype(np.float64)
M = np.ones((4, 3), bool)
H = rng.standard_normal((4, 5))      # hidden states of linear_cross_entropy
WL = rng.standard_normal((3, 5))     # its (n_classes, d) weight
XR = rng.standard_normal((30, 3))    # SoftmaxRegression data
YR = np.arange(30) % 3


def _fit(**kw):
    return lm.SoftmaxRegression(**kw).fit(XR, YR)


def _update(**kw):
    return lm.LogSumExpState().update(X, **kw)


#: a valid call per public name: (callable, positional args, keyword args)
CALLS = {
    "logsumexp": (lm.logsumexp, (X,), {}),
    "softmax": (lm.softmax, (X,), {}),
    "log_softmax": (lm.log_softmax, (X,), {}),
    "cross_entropy": (lm.cross_entropy, (X, T), {}),
    # the extended paths (sample weights, class masks, soft-capping) as entries of their own
    "cross_entropy[sample_weight]": (lm.cross_entropy, (X, T),
                                     {"sample_weight": np.ones(4), "where": M}),
    "cross_entropy_with_grad[sample_weight]": (lm.cross_entropy_with_grad, (X, T),
                                               {"sample_weight": np.ones(4), "where": M}),
    "nll_loss[sample_weight]": (lm.nll_loss, (np.log(P), T), {"sample_weight": np.ones(4)}),
    "logsumexp[where]": (lm.logsumexp, (X,), {"where": M}),
    "softmax[where]": (lm.softmax, (X,), {"where": M}),
    "log_softmax[where]": (lm.log_softmax, (X,), {"where": M}),
    "cross_entropy_with_grad": (lm.cross_entropy_with_grad, (X, T), {}),
    "nll_loss": (lm.nll_loss, (np.log(P), T), {}),
    "kl_divergence": (lm.kl_divergence, (P, P[::-1].copy()), {}),
    "entropy": (lm.entropy, (P,), {}),
    "kl_div": (lm.kl_div, (np.log(P), P[::-1].copy()), {}),
    "kl_div_with_grad": (lm.kl_div_with_grad, (np.log(P), P[::-1].copy()), {}),
    "linear_cross_entropy": (lm.linear_cross_entropy, (H, WL, T), {}),
    "linear_cross_entropy_with_grad": (lm.linear_cross_entropy_with_grad, (H, WL, T), {}),
    "LogSumExpState": (_update, (), {}),
    "log_likelihood": (lm.log_likelihood, (P, T), {}),
    "negative_log_likelihood": (lm.negative_log_likelihood, (P, T), {}),
    "empirical_kl": (lm.empirical_kl, (T, P[0], P[1]), {}),
    "SoftmaxRegression": (_fit, (), {}),
    "kl_divergence_from_logits": (lm.kl_divergence_from_logits, (X, G), {}),
    "kl_divergence_from_logits_with_grad": (lm.kl_divergence_from_logits_with_grad,
                                            (X, G), {}),
    "js_divergence_from_logits": (lm.js_divergence_from_logits, (X, G), {}),
    "entropy_from_logits": (lm.entropy_from_logits, (X,), {}),
    "binary_cross_entropy_with_logits": (lm.binary_cross_entropy_with_logits, (X, B01), {}),
    "binary_cross_entropy_with_logits_with_grad": (
        lm.binary_cross_entropy_with_logits_with_grad, (X, B01), {}),
    "softmax_backward": (lm.softmax_backward, (G, P), {}),
    "log_softmax_backward": (lm.log_softmax_backward, (G, np.log(P)), {}),
    "nll_loss_with_grad": (lm.nll_loss_with_grad, (np.log(P), T), {}),
    "evaluate_logits": (lm.evaluate_logits, (X, T), {"k": 2}),
    "set_num_threads": (lm.set_num_threads, (None,), {}),
}
#: public names that take no argument a caller could get wrong
EXEMPT = {"ConvergenceWarning", "get_num_threads", "show_config", "__version__"}

NAN, INF = math.nan, math.inf
#: keyword -> [(bad value, exception type)]; the message must name the keyword
BAD = {
    "n_threads": [(0, ValueError), (-1, ValueError), (10**9, ValueError), ("2", TypeError),
                  (2.5, TypeError), (True, TypeError)],
    "label_smoothing": [("0.1", TypeError), (None, TypeError), (-0.1, ValueError),
                        (1.5, ValueError), (NAN, ValueError), (10**400, ValueError)],
    "temperature": [("1", TypeError), (None, TypeError), (0.0, ValueError), (-1.0, ValueError),
                    (INF, ValueError), (NAN, ValueError), (1e-310, ValueError),
                    (10**400, ValueError)],
    "logit_softcap": [("5", TypeError), (0.0, ValueError), (-1.0, ValueError),
                      (NAN, ValueError), (INF, ValueError), (10**400, ValueError)],
    "base": [("2", TypeError), (0, ValueError), (-2.0, ValueError), (1, ValueError),
             (NAN, ValueError), (INF, ValueError), (10**400, ValueError)],
    "reduction": [("avg", ValueError), (None, ValueError), (1, ValueError)],
    "ignore_index": [("1", TypeError), (1.5, TypeError), (True, TypeError),
                     (2**70, ValueError)],
    "axis": [("0", TypeError), (1.5, TypeError), (7, np.exceptions.AxisError)],
    "out": [([[0.0]], TypeError)],
    "grad_out": [([[0.0]], TypeError)],
    "p_grad_out": [([[0.0]], TypeError)],
    "k": [(0, ValueError), ("1", TypeError)],
}
#: (name, keyword) pairs whose keyword means something else there
NOT_SHARED = {
    ("set_num_threads", "n_threads"),      # probed positionally below
    ("SoftmaxRegression", "label_smoothing"),
}


def _keywords(name):
    name = name.split("[")[0]
    fn = {"LogSumExpState": lm.LogSumExpState.update,
          "SoftmaxRegression": lm.SoftmaxRegression}.get(name, getattr(lm, name))
    return set(inspect.signature(fn).parameters)


def _matrix():
    for name in sorted(CALLS):
        for kw in sorted(_keywords(name) & set(BAD)):
            if (name, kw) in NOT_SHARED:
                continue
            for value, exc in BAD[kw]:
                yield pytest.param(name, kw, value, exc, id=f"{name}-{kw}-{value!r}")


def test_every_public_name_is_in_the_contract():
    missing = set(lm.__all__) - {n.split("[")[0] for n in CALLS} - EXEMPT
    assert not missing, f"public names without a contract entry: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_valid_call_runs(name):
    fn, args, kwargs = CALLS[name]
    fn(*args, **kwargs)


@pytest.mark.parametrize("name, kw, value, exc", list(_matrix()))
def test_bad_shared_keyword(name, kw, value, exc):
    fn, args, kwargs = CALLS[name]
    if kw == "p_grad_out":
        kwargs = dict(kwargs, p_grad=True)
    with pytest.raises(exc, match=kw):
        fn(*args, **dict(kwargs, **{kw: value}))


@pytest.mark.parametrize("value, exc", BAD["n_threads"], ids=repr)
def test_set_num_threads_bad_values(value, exc):
    before = lm.get_num_threads()
    with pytest.raises(exc, match="n_threads"):
        lm.set_num_threads(value)
    assert lm.get_num_threads() == before


@pytest.mark.parametrize("name", lm.__deprecated__)
def test_deprecated_names_warn_and_call_the_core_function(name):
    """Each deprecated alias warns (naming its replacement), is not public, and
    gives the core function's bits."""
    assert name not in lm.__all__
    with pytest.warns(DeprecationWarning, match=r"lossmle\.\w+\(.*same keywords"):
        fn = getattr(lm, name)
    if name.startswith("masked_"):
        core = getattr(lm, name.replace("masked_", ""))
        got, expected = fn(X, 1, where=M), core(X, 1, where=M)
    else:
        core = getattr(lm, name.replace("weighted_", ""))
        x = np.log(P) if "nll" in name else X
        got, expected = fn(x, T, sample_weight=np.arange(4.0)), core(x, T,
                                                                     sample_weight=np.arange(4.0))
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'weighted_softmax'"):
        lm.weighted_softmax


E = np.empty((0, 3))
#: calls on empty input: no kernel runs, and n_threads is checked all the same
EMPTY_CALLS = {
    "logsumexp": lambda **kw: lm.logsumexp(E, axis=1, **kw),
    "logsumexp[b]": lambda **kw: lm.logsumexp(E, axis=1, b=E, **kw),
    "logsumexp[where]": lambda **kw: lm.logsumexp(E, axis=1, where=E > 0, **kw),
    "softmax": lambda **kw: lm.softmax(E, axis=1, **kw),
    "softmax[where]": lambda **kw: lm.softmax(E, axis=1, where=E > 0, **kw),
    "log_softmax": lambda **kw: lm.log_softmax(E, axis=1, **kw),
    "cross_entropy": lambda **kw: lm.cross_entropy(E, np.empty(0, np.int64), **kw),
    "kl_divergence": lambda **kw: lm.kl_divergence(E, E, **kw),
    "entropy": lambda **kw: lm.entropy(E, **kw),
    "entropy[qk]": lambda **kw: lm.entropy(E, E, **kw),
    "entropy_from_logits": lambda **kw: lm.entropy_from_logits(E, **kw),
    "kl_divergence_from_logits": lambda **kw: lm.kl_divergence_from_logits(E, E, **kw),
    "kl_divergence_from_logits_with_grad":
        lambda **kw: lm.kl_divergence_from_logits_with_grad(E, E, **kw),
    "js_divergence_from_logits": lambda **kw: lm.js_divergence_from_logits(E, E, **kw),
    "binary_cross_entropy_with_logits":
        lambda **kw: lm.binary_cross_entropy_with_logits(E, E, **kw),
    "binary_cross_entropy_with_logits_with_grad":
        lambda **kw: lm.binary_cross_entropy_with_logits_with_grad(E, E, **kw),
    "softmax_backward": lambda **kw: lm.softmax_backward(E, E, **kw),
    "log_softmax_backward": lambda **kw: lm.log_softmax_backward(E, E, **kw),
    "evaluate_logits": lambda **kw: lm.evaluate_logits(E, np.empty(0, np.int64), **kw),
    "LogSumExpState": lambda **kw: lm.LogSumExpState().update(E, **kw),
}


@pytest.mark.parametrize("name", sorted(EMPTY_CALLS))
@pytest.mark.parametrize("value, exc", [("2", TypeError), (0, ValueError), (2.5, TypeError)],
                         ids=repr)
def test_n_threads_is_checked_on_empty_input(name, value, exc):
    EMPTY_CALLS[name]()    # valid without it
    with pytest.raises(exc, match="n_threads"):
        EMPTY_CALLS[name](n_threads=value)


def test_from_import_of_a_deprecated_name_warns_once():
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from lossmle import weighted_nll_loss  # noqa: F401
    assert [w.category for w in caught] == [DeprecationWarning]


@pytest.mark.parametrize("name", ["masked_logsumexp", "masked_softmax", "masked_log_softmax"])
def test_deprecated_masked_functions_still_require_a_mask(name):
    with pytest.warns(DeprecationWarning):
        fn = getattr(lm, name)
    with pytest.raises(TypeError, match="where"):
        fn(X, 1, where=None)


def test_softmax_over_an_empty_axis_raises_with_where_too():
    for kw in ({}, {"where": np.ones((3, 0), bool)}):
        with pytest.raises(ValueError, match="empty axis"):
            lm.softmax(np.empty((3, 0)), axis=1, **kw)
