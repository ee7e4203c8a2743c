"""Benchmark: fit time of lossmle.SoftmaxRegression against sklearn's LogisticRegression.

One problem, 100_000 samples x 100 features, 20 classes, labels drawn from a
softmax model; both estimators minimise the same objective (mean
cross-entropy + ||W||^2 / (2 C N), C=1) with the same L-BFGS-B options
(tol=1e-6), from zeros, in float64.  Before timing, both solutions are checked
to agree (predict_proba within 1e-4), so a fast wrong fit fails instead of
winning.  One group: the two competitors land in one table.

Run: ``pytest benchmarks/bench_softmax_regression.py`` (pytest-benchmark;
sklearn is skipped cleanly when absent).
"""
import numpy as np
import pytest

import lossmle

N, D, K = 100_000, 100, 20
PARAMS = dict(C=1.0, tol=1e-6, max_iter=1000)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    W = rng.standard_normal((K, D)) / np.sqrt(D) * 2.0
    y = np.argmax(X @ W.T + rng.gumbel(size=(N, K)), axis=1)
    return X, y


def _make(impl):
    if impl == "lossmle":
        return lossmle.SoftmaxRegression(**PARAMS)
    sklearn_lm = pytest.importorskip("sklearn.linear_model")
    return sklearn_lm.LogisticRegression(**PARAMS)


@pytest.fixture(scope="module")
def reference(data):
    sklearn_lm = pytest.importorskip("sklearn.linear_model")
    X, y = data
    return sklearn_lm.LogisticRegression(**PARAMS).fit(X, y).predict_proba(X[:2000])


@pytest.mark.parametrize("impl", ["lossmle", "sklearn"])
def bench_softmax_regression_fit(benchmark, data, impl, request):
    X, y = data
    model = _make(impl)
    # agreement first (against sklearn when installed), then time
    model.fit(X, y)
    try:
        ref = request.getfixturevalue("reference")
    except pytest.skip.Exception:
        ref = None
    if ref is not None:
        np.testing.assert_allclose(model.predict_proba(X[:2000]), ref, atol=1e-4)
    benchmark.group = f"softmax_regression_fit-{N}x{D}-{K}classes-float64"
    benchmark.extra_info["n_iter"] = int(np.ravel(model.n_iter_)[0])
    benchmark.pedantic(lambda: _make(impl).fit(X, y), rounds=3, iterations=1,
                       warmup_rounds=0)
