"""lossmle: fast, numerically stable loss kernels.

log-sum-exp, softmax, log-softmax, cross-entropy (the negative log-likelihood
of class labels: the maximum-likelihood objective), NLL, KL divergence and
entropy, as typed Cython kernels (float32/float64, GIL released, OpenMP over
rows) behind a scipy/torch-compatible Python API.
"""
from ._divergence import entropy, kl_divergence
from ._kl_div import kl_div, kl_div_with_grad
from ._losses import cross_entropy, cross_entropy_with_grad, nll_loss
from ._mle import empirical_kl, log_likelihood, negative_log_likelihood
from ._regression import ConvergenceWarning, SoftmaxRegression
from ._special import log_softmax, logsumexp, softmax
from ._linear_ce import linear_cross_entropy, linear_cross_entropy_with_grad
from ._streaming import LogSumExpState
from ._training import (
    binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_with_grad,
    entropy_from_logits, evaluate_logits, js_divergence_from_logits,
    kl_divergence_from_logits, kl_divergence_from_logits_with_grad,
    log_softmax_backward, masked_log_softmax, masked_logsumexp, masked_softmax,
    nll_loss_with_grad, softmax_backward, weighted_cross_entropy,
    weighted_cross_entropy_with_grad, weighted_nll_loss,
)
from ._validation import get_num_threads, set_num_threads

__version__ = "0.1.0"

from ._config import show_config  # noqa: E402  (needs __version__)

__all__ = [
    "logsumexp", "softmax", "log_softmax",
    "cross_entropy", "cross_entropy_with_grad", "nll_loss",
    "kl_divergence", "entropy", "kl_div", "kl_div_with_grad",
    "linear_cross_entropy", "linear_cross_entropy_with_grad",
    "LogSumExpState",
    "log_likelihood", "negative_log_likelihood", "empirical_kl",
    "SoftmaxRegression", "ConvergenceWarning",
    "kl_divergence_from_logits", "kl_divergence_from_logits_with_grad",
    "js_divergence_from_logits", "entropy_from_logits",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_with_grad",
    "softmax_backward", "log_softmax_backward",
    "weighted_cross_entropy", "weighted_cross_entropy_with_grad",
    "weighted_nll_loss", "nll_loss_with_grad",
    "masked_logsumexp", "masked_softmax", "masked_log_softmax", "evaluate_logits",
    "set_num_threads", "get_num_threads", "show_config",
    "__version__",
]
