"""lossmle: fast, numerically stable loss kernels.

log-sum-exp, softmax, log-softmax, cross-entropy (the negative log-likelihood
of class labels: the maximum-likelihood objective), NLL, KL divergence and
entropy, as typed Cython kernels (float32/float64, GIL released, OpenMP over
rows) behind a scipy/torch-compatible Python API.
"""
from ._divergence import entropy, kl_divergence
from ._losses import cross_entropy, cross_entropy_with_grad, nll_loss
from ._mle import empirical_kl, log_likelihood, negative_log_likelihood
from ._special import log_softmax, logsumexp, softmax
from ._validation import get_num_threads, set_num_threads

__version__ = "0.1.0"

from ._config import show_config  # noqa: E402  (needs __version__)

__all__ = [
    "logsumexp", "softmax", "log_softmax",
    "cross_entropy", "cross_entropy_with_grad", "nll_loss",
    "kl_divergence", "entropy",
    "log_likelihood", "negative_log_likelihood", "empirical_kl",
    "set_num_threads", "get_num_threads", "show_config",
    "__version__",
]
