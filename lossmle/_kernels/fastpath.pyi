# Stub for the compiled module lossmle/_kernels/fastpath.pyx (private fast paths).
# Each function takes the public function's raw arguments, positionally, and
# returns its result for a small plain input, or None when the call is not one
# it handles (the public function then runs its general path).
from typing import Any

def logsumexp(
    a: Any, axis: Any, b: Any, keepdims: Any, return_sign: Any, where: Any, out: Any,
    n_threads: Any,
) -> Any: ...
def softmax(x: Any, axis: Any, where: Any, out: Any, n_threads: Any) -> Any: ...
def log_softmax(x: Any, axis: Any, where: Any, out: Any, n_threads: Any) -> Any: ...
def cross_entropy(
    logits: Any, target: Any, axis: Any, weight: Any, ignore_index: Any, reduction: Any,
    label_smoothing: Any, sample_weight: Any, where: Any, logit_softcap: Any, out: Any,
    n_threads: Any,
) -> Any: ...
def cross_entropy_with_grad(
    logits: Any, target: Any, axis: Any, weight: Any, ignore_index: Any, reduction: Any,
    label_smoothing: Any, sample_weight: Any, where: Any, logit_softcap: Any, grad_out: Any,
    n_threads: Any,
) -> Any: ...
def nll_loss(
    log_probs: Any, target: Any, axis: Any, weight: Any, ignore_index: Any, reduction: Any,
    sample_weight: Any, out: Any, n_threads: Any,
) -> Any: ...
def kl_divergence(
    p: Any, q: Any, axis: Any, base: Any, keepdims: Any, validate: Any, out: Any,
    n_threads: Any,
) -> Any: ...
def entropy(
    pk: Any, qk: Any, base: Any, axis: Any, keepdims: Any, out: Any, n_threads: Any,
) -> Any: ...
