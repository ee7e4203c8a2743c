# Type stub for lossmle/_regression.py (the public SoftmaxRegression estimator
# and ConvergenceWarning).  Keep in step with the .py: tests/test_packaging_typing.py
# runs mypy's stubtest on it.
from typing import Any, Literal, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import Self, TypeAlias

# {label: weight}, 'balanced', or None
_ClassWeight: TypeAlias = dict[Any, float] | Literal["balanced"] | None

__all__ = ["SoftmaxRegression", "ConvergenceWarning"]

class ConvergenceWarning(UserWarning): ...

# Raised by the prediction methods before fit (sklearn's NotFittedError when
# scikit-learn is imported); a ValueError and an AttributeError.
class NotFittedError(ValueError, AttributeError): ...

class SoftmaxRegression:
    # constructor parameters (scikit-learn's get_params / set_params)
    C: float
    fit_intercept: bool
    class_weight: _ClassWeight
    label_smoothing: float
    tol: float
    max_iter: int
    warm_start: bool
    n_threads: SupportsIndex | None
    # set by fit
    classes_: NDArray[Any]
    coef_: NDArray[np.float64]
    intercept_: NDArray[np.float64]
    n_features_in_: int
    n_iter_: int
    objective_: float
    def __init__(
        self, C: float = 1.0, *, fit_intercept: bool = True,
        class_weight: _ClassWeight = None, label_smoothing: float = 0.0,
        tol: float = 1e-4, max_iter: int = 100, warm_start: bool = False,
        n_threads: SupportsIndex | None = None,
    ) -> None: ...
    def get_params(self, deep: bool = True) -> dict[str, Any]: ...
    def set_params(self, **params: Any) -> Self: ...
    def __sklearn_tags__(self) -> Any: ...
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> Self: ...
    # (n_samples, n_classes); for two classes the log-odds, shape (n_samples,)
    def decision_function(self, X: ArrayLike) -> NDArray[np.float64]: ...
    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]: ...
    def predict_log_proba(self, X: ArrayLike) -> NDArray[np.float64]: ...
    # labels from classes_, of their dtype
    def predict(self, X: ArrayLike) -> NDArray[Any]: ...
    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float: ...
