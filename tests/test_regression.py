"""SoftmaxRegression: maximum-likelihood softmax regression.

Oracles: scikit-learn's LogisticRegression (same objective; skipped cleanly
without sklearn), a NumPy objective and gradient written here (optimality of
the fitted parameters; scipy.optimize on that objective), scipy.special for
the probability functions.  Nothing compares lossmle with itself.
"""
import math
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.optimize as so
import scipy.special as sps

import lossmle as lm
from lossmle import ConvergenceWarning, SoftmaxRegression
from conftest import same_package_cwd
from oracles import np_softmax_regression_objective as np_objective

TIGHT = dict(tol=1e-10, max_iter=2000)


def make_data(rng, n=400, d=4, k=3, scale=1.0):
    X = rng.standard_normal((n, d)) * scale
    W = rng.standard_normal((k, d))
    b = rng.standard_normal(k)
    y = np.argmax(X @ W.T + b + rng.gumbel(size=(n, k)), axis=1)  # y ~ softmax(Wx+b)
    return X, y


def theta_of(model):
    return np.concatenate([model.coef_.ravel(), model.intercept_])


@pytest.fixture
def sklearn():
    return pytest.importorskip("sklearn")


# ---------------------------------------------------------------------------
# Optimality against a NumPy objective (no sklearn needed)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("C", [0.05, 1.0, np.inf], ids=["C0.05", "C1", "Cinf"])
@pytest.mark.parametrize("eps", [0.0, 0.2], ids=["ls0", "ls0.2"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sw"])
def test_fit_is_stationary_point_of_numpy_objective(rng, C, eps, weighted):
    X, y = make_data(rng)
    sw = rng.uniform(0.1, 3.0, size=len(y)) if weighted else None
    m = SoftmaxRegression(C=C, label_smoothing=eps, **TIGHT).fit(X, y, sample_weight=sw)
    f, g = np_objective(theta_of(m), X, y, 3, C, sw, eps)
    assert np.max(np.abs(g)) < 1e-7
    assert m.objective_ == pytest.approx(f, rel=1e-12)
    # and scipy's L-BFGS on the NumPy objective finds no lower value
    ref = so.minimize(np_objective, np.zeros(15), args=(X, y, 3, C, sw, eps), jac=True,
                      method="L-BFGS-B",
                      options=dict(gtol=1e-10, ftol=1e-15, maxiter=5000))
    assert f <= ref.fun + 1e-12
    if np.isfinite(C):  # strictly convex: a unique optimum
        np.testing.assert_allclose(theta_of(m), ref.x, atol=1e-6)


def test_no_intercept(rng):
    X, y = make_data(rng)
    m = SoftmaxRegression(C=0.5, fit_intercept=False, **TIGHT).fit(X, y)
    np.testing.assert_array_equal(m.intercept_, np.zeros(3))
    _, g = np_objective(m.coef_.ravel(), X, y, 3, 0.5, fit_intercept=False)
    assert np.max(np.abs(g)) < 1e-7


def test_class_weight_equals_sample_weight(rng):
    X, y = make_data(rng)
    cw = {0: 2.0, 1: 0.5, 2: 1.0}
    a = SoftmaxRegression(class_weight=cw, **TIGHT).fit(X, y)
    sw = np.array([cw[c] for c in y])
    _, g = np_objective(theta_of(a), X, y, 3, 1.0, sw)
    assert np.max(np.abs(g)) < 1e-7


def test_balanced_class_weight(rng):
    X, y = make_data(rng)
    y[:300] = 0  # unbalanced
    counts = np.bincount(y, minlength=3)
    sw = (len(y) / (3 * counts))[y]  # sklearn's 'balanced' formula
    m = SoftmaxRegression(class_weight="balanced", **TIGHT).fit(X, y)
    _, g = np_objective(theta_of(m), X, y, 3, 1.0, sw)
    assert np.max(np.abs(g)) < 1e-7


def test_scalar_sample_weight_is_uniform(rng):
    X, y = make_data(rng)
    # (as sklearn: S = sum(sample_weight) = 3 N also scales the penalty)
    a = SoftmaxRegression(**TIGHT).fit(X, y, sample_weight=3.0)
    _, g = np_objective(theta_of(a), X, y, 3, 1.0, np.full(len(y), 3.0))
    assert np.max(np.abs(g)) < 1e-7


def test_probabilities_against_scipy(rng):
    X, y = make_data(rng)
    m = SoftmaxRegression().fit(X, y)
    Z = X @ m.coef_.T + m.intercept_
    np.testing.assert_allclose(m.decision_function(X), Z, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(m.predict_proba(X), sps.softmax(Z, axis=1), rtol=1e-12)
    np.testing.assert_allclose(m.predict_log_proba(X), sps.log_softmax(Z, axis=1),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(m.predict(X), np.argmax(Z, axis=1))
    sw = rng.uniform(size=len(y))
    assert m.score(X, y, sample_weight=sw) == pytest.approx(
        np.sum(sw * (np.argmax(Z, axis=1) == y)) / sw.sum(), rel=1e-13)


def test_string_labels_and_column_vector_y(rng):
    X, y = make_data(rng)
    names = np.array(["cat", "dog", "emu"])
    with pytest.warns(UserWarning, match="column-vector y"):
        m = SoftmaxRegression().fit(X, names[y][:, None])
    np.testing.assert_array_equal(m.classes_, names)
    assert set(m.predict(X)) <= set(names)


def test_warm_start_resumes_at_optimum(rng):
    X, y = make_data(rng)
    m = SoftmaxRegression(warm_start=True, **TIGHT).fit(X, y)
    first = theta_of(m).copy()
    m.fit(X, y)
    assert m.n_iter_ <= 2
    np.testing.assert_allclose(theta_of(m), first, atol=1e-6)
    cold = SoftmaxRegression(**TIGHT).fit(X, y)
    assert cold.n_iter_ > 5


def test_convergence_warning(rng):
    X, y = make_data(rng)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        SoftmaxRegression(max_iter=1).fit(X, y)


def test_inputs_not_mutated(rng):
    X, y = make_data(rng)
    sw = rng.uniform(size=len(y))
    Xc, yc, swc = X.copy(), y.copy(), sw.copy()
    SoftmaxRegression(class_weight="balanced").fit(X, y, sample_weight=sw)
    for a, c in ((X, Xc), (y, yc), (sw, swc)):
        np.testing.assert_array_equal(a, c)


def test_pickle_roundtrip(rng):
    X, y = make_data(rng)
    m = SoftmaxRegression(C=0.3).fit(X, y)
    m2 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m2.predict_proba(X), m.predict_proba(X))


# ---------------------------------------------------------------------------
# Estimator protocol without sklearn
# ---------------------------------------------------------------------------
def test_get_set_params_and_repr():
    m = SoftmaxRegression(C=0.5, label_smoothing=0.1)
    params = m.get_params()
    assert params == dict(C=0.5, fit_intercept=True, class_weight=None,
                          label_smoothing=0.1, tol=1e-4, max_iter=100,
                          warm_start=False, n_threads=None)
    assert m.set_params(C=2.0, max_iter=7) is m
    assert (m.C, m.max_iter) == (2.0, 7)
    assert repr(m) == "SoftmaxRegression(C=2.0, label_smoothing=0.1, max_iter=7)"
    with pytest.raises(ValueError, match="Invalid parameter 'alpha'"):
        m.set_params(alpha=1.0)


def test_not_fitted():
    with pytest.raises(ValueError, match="not fitted"):
        SoftmaxRegression().predict(np.zeros((1, 2)))
    with pytest.raises(AttributeError, match="not fitted"):
        SoftmaxRegression().predict_proba(np.zeros((1, 2)))


def test_works_without_sklearn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import numpy as np, lossmle\n"
        "X = np.array([[0.], [1.], [2.], [3.]]); y = [0, 0, 1, 1]\n"
        "m = lossmle.SoftmaxRegression().fit(X, y)\n"
        "assert m.predict(X).tolist() == [0, 0, 1, 1], m.predict(X)\n"
        "assert not any(k.startswith('sklearn') and sys.modules[k] is not None"
        " for k in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=same_package_cwd())
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("kwargs, fit_args, exc, match", [
    (dict(C=0), None, ValueError, "C must be > 0"),
    (dict(C=-1.0), None, ValueError, "C must be > 0"),
    (dict(C="1"), None, TypeError, "C must be a real number"),
    (dict(C=np.nan), None, ValueError, "C must be"),
    (dict(label_smoothing=1.5), None, ValueError, "label_smoothing"),
    (dict(tol=-1.0), None, ValueError, "tol"),
    (dict(max_iter=0), None, ValueError, "max_iter"),
    (dict(max_iter=2.5), None, TypeError, "max_iter"),
    (dict(fit_intercept="yes"), None, TypeError, "fit_intercept"),
    (dict(class_weight="auto"), None, ValueError, "class_weight"),
    (dict(class_weight={7: 1.0}), None, ValueError, "class_weight has label 7"),
    (dict(class_weight={0: -1.0}), None, ValueError, r"class_weight\[0\]"),
    ({}, dict(X=np.zeros(4)), ValueError, "X must be 2-D"),
    ({}, dict(X=np.full((4, 1), np.nan)), ValueError, "X contains nan"),
    ({}, dict(X=np.zeros((0, 1)), y=np.zeros(0, int)), ValueError, "0 samples"),
    ({}, dict(y=[0, 1, 1]), ValueError, "y has 3 labels"),
    ({}, dict(y=[1, 1, 1, 1]), ValueError, "at least 2 classes"),
    ({}, dict(y=[0.0, np.nan, 1.0, 1.0]), ValueError, "y contains nan"),
    ({}, dict(sample_weight=[1, -1, 1, 1]), ValueError, "sample_weight"),
    ({}, dict(sample_weight=[1, 1]), ValueError, "sample_weight must have shape"),
    ({}, dict(sample_weight=[0, 0, 0, 0]), ValueError, "sum to zero"),
    ({}, dict(X=[["a"], ["b"], ["c"], ["d"]]), TypeError, "X"),
], ids=lambda v: None)
def test_bad_input(kwargs, fit_args, exc, match):
    args = dict(X=np.arange(4.0)[:, None], y=[0, 0, 1, 1])
    args.update(fit_args or {})
    with pytest.raises(exc, match=match):
        SoftmaxRegression(**kwargs).fit(**args)


def test_predict_wrong_feature_count(rng):
    X, y = make_data(rng)
    m = SoftmaxRegression().fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features"):
        m.predict(X[:, :3])


# ---------------------------------------------------------------------------
# Against scikit-learn
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("k", [3, 6])
def test_same_optimum_as_sklearn(sklearn, rng, C, k):
    from sklearn.linear_model import LogisticRegression
    X, y = make_data(rng, n=600, d=5, k=k, scale=2.0)
    ours = SoftmaxRegression(C=C, **TIGHT).fit(X, y)
    ref = LogisticRegression(C=C, **TIGHT).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-7)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-6 * max(1, np.abs(ref.coef_).max()))
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-6 * max(1, np.abs(ref.intercept_).max()))
    f_ours = np_objective(theta_of(ours), X, y, k, C)[0]
    f_ref = np_objective(np.concatenate([ref.coef_.ravel(), ref.intercept_]), X, y, k, C)[0]
    assert f_ours == pytest.approx(f_ref, rel=1e-10)


@pytest.mark.parametrize("class_weight", [None, "balanced", {0: 3.0, 2: 0.5}])
def test_weights_match_sklearn(sklearn, rng, class_weight):
    from sklearn.linear_model import LogisticRegression
    X, y = make_data(rng, n=500)
    sw = rng.uniform(0.0, 2.0, size=len(y))
    ours = SoftmaxRegression(class_weight=class_weight, **TIGHT).fit(X, y, sample_weight=sw)
    ref = LogisticRegression(class_weight=class_weight, **TIGHT).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-7)


def test_binary_equals_sklearn_with_doubled_C(sklearn, rng):
    # sklearn's binomial vector v = w1 - w0 is penalised as ||v||^2; the
    # softmax pair's ||w0||^2 + ||w1||^2 = ||v||^2 / 2 at the optimum.
    from sklearn.linear_model import LogisticRegression
    X, y = make_data(rng, k=2)
    ours = SoftmaxRegression(C=0.7, **TIGHT).fit(X, y)
    ref = LogisticRegression(C=1.4, **TIGHT).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-7)
    np.testing.assert_allclose(ours.coef_[1] - ours.coef_[0], ref.coef_[0], atol=1e-6)


def test_pipeline_with_scaler(sklearn, rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = make_data(rng, scale=5.0)
    X = X + 10.0
    ours = make_pipeline(StandardScaler(), SoftmaxRegression(C=0.5, **TIGHT)).fit(X, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, **TIGHT)).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-7)
    assert ours.score(X, y) == ref.score(X, y)


def test_cross_val_score_and_clone(sklearn, rng):
    from sklearn.base import clone, is_classifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    X, y = make_data(rng, n=300)
    est = SoftmaxRegression(C=0.3, **TIGHT)
    assert is_classifier(est)  # so cross_val_score stratifies
    c = clone(est)
    assert c is not est and c.get_params() == est.get_params()
    ours = cross_val_score(est, X, y, cv=5)
    ref = cross_val_score(LogisticRegression(C=0.3, **TIGHT), X, y, cv=5)
    np.testing.assert_array_equal(ours, ref)
    assert not hasattr(est, "coef_")  # cross_val_score fits clones


def test_grid_search_over_C(sklearn, rng):
    from sklearn.model_selection import GridSearchCV
    X, y = make_data(rng, n=200)
    gs = GridSearchCV(SoftmaxRegression(), {"C": [0.01, 1.0]}, cv=3).fit(X, y)
    assert gs.best_params_["C"] in (0.01, 1.0)


def test_sklearn_check_is_fitted(sklearn, rng):
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted
    m = SoftmaxRegression()
    with pytest.raises(NotFittedError):
        check_is_fitted(m)
    X, y = make_data(rng, n=50)
    check_is_fitted(m.fit(X, y))


def test_sklearn_check_estimator(sklearn):
    from sklearn.exceptions import SkipTestWarning
    from sklearn.utils.estimator_checks import check_estimator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipTestWarning)  # e.g. pandas absent
        # the checks fit tiny/unscaled problems with the default max_iter
        warnings.simplefilter("ignore", ConvergenceWarning)
        # by design: sklearn-compatible without importing sklearn
        warnings.filterwarnings("ignore", "Estimator SoftmaxRegression does not inherit")
        results = check_estimator(SoftmaxRegression(), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200])
              for r in results if r["status"] == "failed"]
    assert failed == []
