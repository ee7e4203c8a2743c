"""Deprecated public names, to be removed in lossmle 0.3.

Each was a second entry point to an operation that a core function performs
with a keyword; they now call that function.  ``lossmle.__getattr__`` hands
them out with a ``DeprecationWarning`` naming the replacement, and they are
not in ``lossmle.__all__``.
"""
from ._losses import cross_entropy, cross_entropy_with_grad, nll_loss
from ._special import log_softmax, logsumexp, softmax

__all__ = ["REPLACEMENTS", "message"]

#: deprecated name -> the call that replaces it
REPLACEMENTS = {
    "weighted_cross_entropy": "cross_entropy(logits, target, sample_weight=...)",
    "weighted_cross_entropy_with_grad":
        "cross_entropy_with_grad(logits, target, sample_weight=...)",
    "weighted_nll_loss": "nll_loss(log_probs, target, sample_weight=...)",
    "masked_logsumexp": "logsumexp(a, axis, keepdims=..., where=...)",
    "masked_softmax": "softmax(x, axis, where=...)",
    "masked_log_softmax": "log_softmax(x, axis, where=...)",
}


def message(name):
    return (f"lossmle.{name} is deprecated and will be removed in lossmle 0.3; "
            f"use lossmle.{REPLACEMENTS[name]} (same keywords, same results)")


def _check_mask_given(where):
    # the masked_* functions required a mask; the core functions read None as "no mask"
    if where is None:
        raise TypeError("where must be a boolean array, got None")


def weighted_cross_entropy(logits, target, axis=-1, *, sample_weight=None, weight=None,
                           ignore_index=-100, reduction="mean", label_smoothing=0.0,
                           where=None, logit_softcap=None, n_threads=None):
    """Deprecated: :func:`lossmle.cross_entropy` with ``sample_weight=``."""
    return cross_entropy(logits, target, axis, sample_weight=sample_weight, weight=weight,
                         ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing, where=where,
                         logit_softcap=logit_softcap, n_threads=n_threads)


def weighted_cross_entropy_with_grad(logits, target, axis=-1, *, sample_weight=None,
                                     weight=None, ignore_index=-100, reduction="mean",
                                     label_smoothing=0.0, where=None, logit_softcap=None,
                                     grad_out=None, n_threads=None):
    """Deprecated: :func:`lossmle.cross_entropy_with_grad` with ``sample_weight=``."""
    return cross_entropy_with_grad(
        logits, target, axis, sample_weight=sample_weight, weight=weight,
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        where=where, logit_softcap=logit_softcap, grad_out=grad_out, n_threads=n_threads)


def weighted_nll_loss(log_probs, target, axis=-1, *, sample_weight=None, weight=None,
                      ignore_index=-100, reduction="mean", n_threads=None):
    """Deprecated: :func:`lossmle.nll_loss` with ``sample_weight=``."""
    return nll_loss(log_probs, target, axis, sample_weight=sample_weight, weight=weight,
                    ignore_index=ignore_index, reduction=reduction, n_threads=n_threads)


def masked_logsumexp(a, axis=None, keepdims=False, *, where, n_threads=None):
    """Deprecated: :func:`lossmle.logsumexp` with ``where=``."""
    _check_mask_given(where)
    return logsumexp(a, axis, keepdims=keepdims, where=where, n_threads=n_threads)


def masked_softmax(x, axis=None, *, where, n_threads=None):
    """Deprecated: :func:`lossmle.softmax` with ``where=``."""
    _check_mask_given(where)
    return softmax(x, axis, where=where, n_threads=n_threads)


def masked_log_softmax(x, axis=None, *, where, n_threads=None):
    """Deprecated: :func:`lossmle.log_softmax` with ``where=``."""
    _check_mask_given(where)
    return log_softmax(x, axis, where=where, n_threads=n_threads)
