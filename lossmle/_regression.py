"""SoftmaxRegression: multinomial logistic regression fitted by maximum likelihood.

The objective is the seed's: the mean cross-entropy (negative log-likelihood
per sample) of the labels under ``softmax(X W^T + b)``, plus an optional L2
penalty, minimised by scipy's L-BFGS-B driven by lossmle's fused
cross-entropy + gradient kernel (GIL released, OpenMP over rows).

scikit-learn compatible without importing scikit-learn: parameters are read
from the ``__init__`` signature (``get_params`` / ``set_params``), fitted
attributes end in ``_``, and ``__sklearn_tags__`` imports sklearn lazily, only
when sklearn itself asks for it.
"""
import inspect
import math
import numbers
import sys
import warnings

import numpy as np

from ._losses import cross_entropy_with_grad
from ._special import log_softmax, softmax
from ._validation import as_float_array

__all__ = ["SoftmaxRegression", "ConvergenceWarning"]


class ConvergenceWarning(UserWarning):
    """The optimiser stopped before meeting its tolerance (raise ``max_iter``)."""


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit`` (as sklearn's)."""


def _check_X(X, name="X"):
    if hasattr(X, "tocsr") or hasattr(X, "toarray"):
        raise TypeError(f"{name} is sparse; sparse input is not supported, "
                        f"convert it with {name}.toarray()")
    Xa = np.asarray(X)
    if Xa.dtype.kind == "c":
        raise ValueError(f"{name}: Complex data not supported")
    if Xa.dtype.kind == "O":
        try:
            Xa = Xa.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must hold real numbers: {exc}") from None
    Xa = as_float_array(Xa, name, np.dtype(np.float64))
    if Xa.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape "
                         f"{Xa.shape}. Reshape your data, e.g. {name}.reshape(-1, 1) "
                         f"for a single feature")
    if Xa.shape[1] == 0 and Xa.shape[0] > 0:
        raise ValueError(f"{name} has 0 feature(s) (shape={Xa.shape}) while a minimum "
                         f"of 1 is required.")
    if not np.all(np.isfinite(Xa)):
        raise ValueError(f"{name} contains nan or inf")
    return Xa


def _check_y(y, n_samples):
    if y is None:
        raise ValueError("SoftmaxRegression requires y to be passed, but the target y "
                         "is None")
    ya = np.asarray(y)
    if ya.ndim == 2 and ya.shape[1] == 1:
        # as sklearn: accepted, with a DataConversionWarning (sklearn's class when
        # the caller has imported sklearn, so its filters apply; never imported here)
        sk = sys.modules.get("sklearn.exceptions")
        warnings.warn("A column-vector y was passed when a 1d array was expected; "
                      "using y.ravel()",
                      getattr(sk, "DataConversionWarning", UserWarning), stacklevel=3)
        ya = ya[:, 0]
    if ya.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {ya.shape}")
    if ya.shape[0] != n_samples:
        raise ValueError(f"y has {ya.shape[0]} labels, but X has {n_samples} samples")
    if ya.dtype.kind == "f" and not np.all(np.isfinite(ya)):
        raise ValueError("y contains nan or inf")
    if ya.dtype.kind not in "biufUSO":
        raise TypeError(f"y must hold class labels, got dtype {ya.dtype}")
    if ya.dtype.kind == "f" and np.any(ya != np.round(ya)):
        raise ValueError("Unknown label type: continuous. y holds non-integer "
                         "floats; a classifier needs discrete class labels")
    return ya


def _check_sample_weight(sample_weight, n_samples):
    if sample_weight is None:
        return None
    sw = as_float_array(sample_weight, "sample_weight", np.dtype(np.float64))
    if sw.ndim == 0:
        sw = np.full(n_samples, float(sw))
    if sw.shape != (n_samples,):
        raise ValueError(
            f"sample_weight must have shape ({n_samples},), got {sw.shape}")
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError("sample_weight must hold finite, non-negative weights")
    return sw


def _positive(value, name, allow_inf=False, allow_zero=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    ok = (v >= 0 if allow_zero else v > 0) and (allow_inf or math.isfinite(v))
    if not ok or math.isnan(v):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}"
                         f"{'' if allow_inf else ' and finite'}, got {value!r}")
    return v


# the ``X`` parameter of the prediction methods, documented once
_X_PARAM = """Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            Samples, with the features seen by ``fit``."""


class SoftmaxRegression:
    r"""Multinomial logistic (softmax) regression fitted by maximum likelihood.

    Models ``p(y = k | x) = softmax(W x + b)_k`` and fits ``W`` (n_classes x
    n_features) and ``b`` by minimising the mean cross-entropy of the labels
    plus an optional L2 penalty, with L-BFGS on lossmle's fused
    cross-entropy + gradient kernel.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength, as scikit-learn's
        ``LogisticRegression``: the objective is
        ``sum_i s_i CE_i / S + ||W||^2 / (2 C S)`` with ``S = sum_i s_i``.
        ``C=np.inf`` gives the unpenalised maximum-likelihood estimate.
    fit_intercept : bool, default=True
        Fit the (unpenalised) intercept ``b``.
    class_weight : dict, 'balanced' or None, default=None
        Weights ``{label: weight}`` multiplied into the sample weights;
        'balanced' uses ``S / (n_classes * S_k)`` with ``S_k`` the summed
        sample weight of class ``k`` (as scikit-learn).
    label_smoothing : float in [0, 1], default=0.0
        Fit the targets ``(1 - eps) onehot(y) + eps / n_classes``.
    tol : float, default=1e-4
        L-BFGS stops when the largest gradient component is <= ``tol``.
    max_iter : int, default=100
        Maximum number of L-BFGS iterations.
    warm_start : bool, default=False
        Start from the previous fit's coefficients (same classes and features).
    n_threads : int or None, default=None
        Threads of the cross-entropy kernel (None: :func:`lossmle.get_num_threads`).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The sorted class labels.
    coef_ : ndarray of shape (n_classes, n_features)
        ``W``.  Two classes keep two rows (the softmax parameterisation).
    intercept_ : ndarray of shape (n_classes,)
        ``b`` (zeros when ``fit_intercept=False``).
    n_features_in_ : int
        Number of features seen by ``fit``.
    n_iter_ : int
        L-BFGS iterations of the last fit.
    objective_ : float
        The objective at the solution.

    Notes
    -----
    The loss and its gradient with respect to the logits come from one call
    of :func:`lossmle.cross_entropy_with_grad` (max-shifted log-sum-exp, the
    softmax never stored); the chain rule gives ``dW = G^T X + W / (C S)`` and
    ``db = sum_i G_i``.  Sample weights use per-row losses ``L_i`` and
    gradient rows ``G_i``: loss ``sum s_i L_i / S``, gradient rows
    ``s_i G_i / S``.  The L-BFGS options are scikit-learn's (``gtol=tol``,
    ``ftol=64 eps``, ``maxls=50``), so with the same ``C`` and three or more
    classes the optimum is ``LogisticRegression``'s.  With two classes
    scikit-learn fits one binomial vector ``v = w_1 - w_0``, penalised as
    ``||v||^2`` where the softmax's penalty is ``||w_0||^2 + ||w_1||^2 =
    ||v||^2 / 2`` at the optimum: ``SoftmaxRegression(C=C)`` then equals
    ``LogisticRegression(C=2 * C)``.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import SoftmaxRegression
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> y = np.array([0, 0, 1, 1])
    >>> model = SoftmaxRegression(C=10.0).fit(X, y)
    >>> model.predict([[0.5], [2.5]]).tolist()
    [0, 1]
    >>> bool(np.allclose(model.predict_proba(X).sum(axis=1), 1.0))
    True
    """

    _estimator_type = "classifier"  # scikit-learn < 1.6 reads this

    def __init__(self, C=1.0, *, fit_intercept=True, class_weight=None,
                 label_smoothing=0.0, tol=1e-4, max_iter=100, warm_start=False,
                 n_threads=None):
        self.C = C
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.n_threads = n_threads

    # ------------------------------------------------------------------
    # scikit-learn estimator protocol
    # ------------------------------------------------------------------
    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(name for name, p in sig.parameters.items()
                      if name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep=True):
        """The constructor parameters as a dict (nested ones as ``name__key`` if deep).

        Parameters
        ----------
        deep : bool, default=True
            Also list the parameters of parameters that are estimators.

        Returns
        -------
        params : dict
            Parameter names mapped to their values, as scikit-learn's.
        """
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        """Set constructor parameters; returns ``self``.

        Parameters
        ----------
        **params : dict
            Parameter names (``name__key`` for a nested one) and new values.

        Returns
        -------
        self : SoftmaxRegression
        """
        valid = self._get_param_names()
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {valid!r}.")
            if sub:
                getattr(self, name).set_params(**{sub: value})
            else:
                setattr(self, name, value)
        return self

    def __repr__(self):
        sig = inspect.signature(type(self).__init__)
        changed = []
        for name in self._get_param_names():
            default = sig.parameters[name].default
            value = getattr(self, name)
            same = value is default or (type(value) is type(default) and value == default)
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so scikit-learn is importable here.
        from sklearn.utils import ClassifierTags, Tags, TargetTags
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    def _more_tags(self):  # scikit-learn < 1.6
        return {"requires_y": True}

    # ------------------------------------------------------------------
    # fitting
    # ------------------------------------------------------------------
    def _validate_params(self):
        C = _positive(self.C, "C", allow_inf=True)
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise TypeError(f"fit_intercept must be a bool, got {self.fit_intercept!r}")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise TypeError(f"warm_start must be a bool, got {self.warm_start!r}")
        eps = _positive(self.label_smoothing, "label_smoothing", allow_zero=True)
        if eps > 1:
            raise ValueError(f"label_smoothing must be in [0, 1], got {self.label_smoothing!r}")
        tol = _positive(self.tol, "tol", allow_zero=True)
        mi = self.max_iter
        if isinstance(mi, (bool, np.bool_)) or not isinstance(mi, numbers.Integral):
            raise TypeError(f"max_iter must be an int, got {mi!r}")
        if mi < 1:
            raise ValueError(f"max_iter must be >= 1, got {mi!r}")
        cw = self.class_weight
        if not (cw is None or isinstance(cw, dict) or
                (isinstance(cw, str) and cw == "balanced")):
            raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {cw!r}")
        return C, eps, tol, int(mi)

    def _class_weights(self, y_enc, sw):
        """Per-class weights (n_classes,) or None, from ``class_weight``."""
        cw, K = self.class_weight, len(self.classes_)
        if cw is None:
            return None
        if isinstance(cw, str):  # 'balanced'
            counts = np.bincount(y_enc, weights=sw, minlength=K)
            return counts.sum() / (K * counts)
        weights = np.ones(K)
        index = {c: k for k, c in enumerate(self.classes_.tolist())}
        for label, w in cw.items():
            key = label.item() if isinstance(label, np.generic) else label
            if key not in index:
                raise ValueError(f"class_weight has label {label!r}, which is not "
                                 f"among the classes {self.classes_.tolist()!r}")
            weights[index[key]] = _positive(w, f"class_weight[{label!r}]", allow_zero=True)
        return weights

    def fit(self, X, y, sample_weight=None):
        """Fit ``W`` and ``b`` by (penalised) maximum likelihood.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            Features (computed in float64).
        y : array_like of shape (n_samples,)
            Class labels (any sortable labels; at least two classes).
        sample_weight : array_like of shape (n_samples,), optional
            Non-negative per-sample weights.

        Returns
        -------
        self
        """
        try:
            from scipy.optimize import minimize
        except ImportError:  # pragma: no cover - scipy is in the test extra
            raise ImportError("SoftmaxRegression.fit needs scipy "
                              "(pip install 'lossmle[mle]' or pip install scipy)") from None
        C, eps, tol, max_iter = self._validate_params()
        X = _check_X(X)
        n, d = X.shape
        if n == 0:
            raise ValueError("X has 0 samples; fit needs at least one")
        y = _check_y(y, n)
        sw = _check_sample_weight(sample_weight, n)
        classes, y_enc = np.unique(y, return_inverse=True)
        y_enc = y_enc.reshape(-1).astype(np.int64)
        if len(classes) < 2:
            raise ValueError(f"y must hold at least 2 classes, got 1 class: "
                             f"{classes.tolist()!r}")
        K = len(classes)
        warm = (self.warm_start and hasattr(self, "coef_") and
                self.coef_.shape == (K, d) and np.array_equal(self.classes_, classes))
        self.classes_ = classes
        cw = self._class_weights(y_enc, sw)
        if cw is not None:
            sw = (np.ones(n) if sw is None else sw) * cw[y_enc]
        if sw is not None:
            total = float(np.sum(sw))
            if not total > 0:
                raise ValueError("sample weights (times class_weight) sum to zero; "
                                 "nothing to fit")
            row_scale = sw / total  # s_i / S
        else:
            total, row_scale = float(n), None
        l2 = 0.0 if math.isinf(C) else 1.0 / (C * total)
        fit_b = bool(self.fit_intercept)
        kd = K * d
        n_threads = self.n_threads

        def objective(theta):
            W = theta[:kd].reshape(K, d)
            logits = X @ W.T
            if fit_b:
                logits += theta[kd:]
            if row_scale is None:
                loss, G = cross_entropy_with_grad(
                    logits, y_enc, reduction="mean", label_smoothing=eps,
                    n_threads=n_threads)
                loss = float(loss)
            else:
                # per-row losses L_i and rows G_i of the gradient of their sum
                L, G = cross_entropy_with_grad(
                    logits, y_enc, reduction="none", label_smoothing=eps,
                    n_threads=n_threads)
                loss = float(L @ row_scale)
                G *= row_scale[:, None]
            grad = np.empty_like(theta)
            gW = grad[:kd].reshape(K, d)
            np.matmul(G.T, X, out=gW)
            if l2:
                loss += 0.5 * l2 * float(theta[:kd] @ theta[:kd])
                gW += l2 * W
            if fit_b:
                grad[kd:] = G.sum(axis=0)
            return loss, grad

        theta0 = np.zeros(kd + (K if fit_b else 0))
        if warm:
            theta0[:kd] = self.coef_.ravel()
            if fit_b:
                theta0[kd:] = self.intercept_
        res = minimize(objective, theta0, method="L-BFGS-B", jac=True,
                       options={"maxiter": max_iter, "maxls": 50, "gtol": tol,
                                "ftol": 64 * np.finfo(float).eps})
        if not res.success:
            warnings.warn(
                f"SoftmaxRegression: L-BFGS did not converge ({res.message}); "
                f"increase max_iter (now {max_iter}) or scale the features",
                ConvergenceWarning, stacklevel=2)
        self.coef_ = res.x[:kd].reshape(K, d).copy()
        self.intercept_ = res.x[kd:].copy() if fit_b else np.zeros(K)
        self.n_features_in_ = d
        self.n_iter_ = int(res.nit)
        self.objective_ = float(res.fun)
        return self

    # ------------------------------------------------------------------
    # prediction
    # ------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            # Under sklearn (already imported by the caller) raise its class, which
            # is also a ValueError and AttributeError; never import sklearn here.
            sk = sys.modules.get("sklearn.exceptions")
            cls = getattr(sk, "NotFittedError", NotFittedError)
            raise cls(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' first")

    def _logits(self, X):
        self._check_fitted()
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} "
                             f"is expecting {self.n_features_in_} features as input")
        return X @ self.coef_.T + self.intercept_

    def decision_function(self, X):
        """Class scores: the logits ``X W^T + b``, shape (n_samples, n_classes).

        For two classes, scikit-learn's convention: the log-odds of
        ``classes_[1]``, ``z_1 - z_0``, shape (n_samples,).

        {X}

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
        """
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        """Class probabilities ``softmax(X W^T + b)``, shape (n_samples, n_classes).

        {X}

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``; rows sum to 1.
        """
        return softmax(self._logits(X), axis=1)

    def predict_log_proba(self, X):
        """Log class probabilities (``log_softmax``, precise for tiny probabilities).

        {X}

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        return log_softmax(self._logits(X), axis=1)

    def predict(self, X):
        """The most probable class label of each row of ``X``.

        {X}

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Labels from ``classes_`` (ties go to the first class).
        """
        best = np.argmax(self._logits(X), axis=1)  # checks fitted before classes_
        return self.classes_[best]

    def score(self, X, y, sample_weight=None):
        """(Weighted) accuracy of ``predict(X)`` against ``y``.

        {X}
        y : array_like of shape (n_samples,)
            True labels.
        sample_weight : array_like of shape (n_samples,), optional
            Non-negative per-sample weights.

        Returns
        -------
        score : float
            The (weighted) share of rows predicted right.
        """
        pred = self.predict(X)
        y = _check_y(y, pred.shape[0])
        sw = _check_sample_weight(sample_weight, pred.shape[0])
        return float(np.average(pred == y, weights=sw))


for _method in (SoftmaxRegression.decision_function, SoftmaxRegression.predict_proba,
                SoftmaxRegression.predict_log_proba, SoftmaxRegression.predict,
                SoftmaxRegression.score):
    _method.__doc__ = (_method.__doc__ or "").replace("{X}", _X_PARAM)
del _method
