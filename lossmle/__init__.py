"""lossmle: fast, numerically stable loss kernels.

log-sum-exp, softmax, log-softmax, cross-entropy (the negative log-likelihood
of class labels: the maximum-likelihood objective), NLL, KL divergence and
entropy, as typed Cython kernels (float32/float64, GIL released, OpenMP over
rows) behind a scipy/torch-compatible Python API.
"""


def _check_built():
    """Fail with what to do when the compiled kernels are missing (a source tree)."""
    import importlib.machinery
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    kernels = os.path.join(here, "_kernels")
    missing = [name for name in ("simd", "special", "losses", "divergence",
                                 "logit_divergence", "parallel", "training", "streaming",
                                 "fastpath")
               if not any(os.path.exists(os.path.join(kernels, name + suffix))
                          for suffix in importlib.machinery.EXTENSION_SUFFIXES)]
    if missing:
        raise ImportError(
            f"lossmle's compiled extensions ({', '.join(missing)}) are not built for this "
            f"Python in {here}: this is lossmle's source tree. To use the installed "
            f"lossmle (pip install .), run Python from another directory, so that this "
            f"folder does not shadow it; to work in the source tree, build it in place "
            f"with `pip install -e .` or `python setup.py build_ext --inplace`.",
            name="lossmle", path=here) from None


try:
    # first: it configures OpenMP, then loads the first compiled module
    from ._threads import get_num_threads, set_num_threads
except ImportError:
    _check_built()
    raise
from ._divergence import entropy, kl_divergence
from ._kl_div import kl_div, kl_div_with_grad
from ._losses import cross_entropy, cross_entropy_with_grad, nll_loss, nll_loss_with_grad
from ._mle import empirical_kl, log_likelihood, negative_log_likelihood
from ._regression import ConvergenceWarning, SoftmaxRegression
from ._special import log_softmax, log_softmax_backward, logsumexp, softmax, softmax_backward
from ._linear_ce import linear_cross_entropy, linear_cross_entropy_with_grad
from ._streaming import LogSumExpState
from ._bce import binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_with_grad
from ._logit_divergence import (
    entropy_from_logits, js_divergence_from_logits, kl_divergence_from_logits,
    kl_divergence_from_logits_with_grad,
)
from ._metrics import evaluate_logits

from ._cli.config import show_config
from ._version import __version__

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
    "nll_loss_with_grad", "evaluate_logits",
    "set_num_threads", "get_num_threads", "show_config",
    "__version__",
]

#: names kept for compatibility, deprecated (removal planned for 0.3): each is
#: a core function with a keyword, handed out with a DeprecationWarning
__deprecated__ = (
    "weighted_cross_entropy", "weighted_cross_entropy_with_grad", "weighted_nll_loss",
    "masked_logsumexp", "masked_softmax", "masked_log_softmax",
)


def __getattr__(name):
    if name in __deprecated__:
        import sys
        import warnings
        from . import _deprecated
        # `from lossmle import name` first probes with hasattr (importlib's
        # _handle_fromlist), then fetches: warn once, on the fetch
        if sys._getframe(1).f_code.co_name != "_handle_fromlist":
            warnings.warn(_deprecated.message(name), DeprecationWarning, stacklevel=2)
        return getattr(_deprecated, name)
    raise AttributeError(f"module 'lossmle' has no attribute {name!r}")
