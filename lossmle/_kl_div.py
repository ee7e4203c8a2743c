"""kl_div: torch.nn.functional.kl_div (input in log space) and its gradient.

The terms, their total and the gradient come from one pass of
``_kernels.divergence.kl_div_flat`` over 2-D views of the (broadcast)
operands.  Only the gradient of an ``input`` that is itself broadcast (a sum
over the broadcast axes) is formed here with NumPy, from the weights.
"""
import math

import numpy as np

from ._kernels import divergence as _k
from ._reduce import to_dtype
from ._threads import resolve_threads
from ._validation import (
    as_float_array, check_output, check_reduction, common_float_dtype, finish_output,
    output_view,
)

__all__ = ["kl_div", "kl_div_with_grad"]

_KL_DIV_REDUCTIONS = ("none", "mean", "batchmean", "sum")

_PARAMS = """Parameters
    ----------
    input : array_like
        Log-probabilities ``log q`` (torch's ``input``).
    target : array_like
        Probabilities ``p`` (or ``log p`` with ``log_target=True``),
        broadcast against ``input``.
    reduction : {'mean', 'batchmean', 'sum', 'none'}, optional
        'none': the pointwise terms; 'sum': their sum; 'mean': their sum
        over the number of terms (torch's default, which is not the KL
        divergence); 'batchmean': their sum over ``input.shape[0]`` (the
        KL divergence per sample; the sum for a 0-d input).
    log_target : bool, optional
        ``target`` holds log-probabilities.
    n_threads : int or None, optional
        Threads for large inputs (None: the package's policy, see
        :func:`lossmle.set_num_threads`); the result is the same for any
        count."""


def _prepare(input, target, reduction, log_target):
    check_reduction(reduction, _KL_DIV_REDUCTIONS)
    if not isinstance(log_target, (bool, np.bool_)):
        raise TypeError(f"log_target must be a bool, got {log_target!r}")
    dtype = common_float_dtype((input, "input"), (target, "target"))
    x = as_float_array(input, "input", dtype)
    t = as_float_array(target, "target", dtype)
    try:
        shape = np.broadcast_shapes(x.shape, t.shape)
    except ValueError:
        raise ValueError(f"input with shape {x.shape} and target with shape {t.shape} "
                         f"cannot be broadcast together") from None
    return x, t, shape, dtype


def _weights(t, log_target):
    """d term / d input is minus these (in double): ``t`` or ``exp(t)``."""
    td = t.astype(np.float64, copy=False)
    if not log_target:
        return td
    with np.errstate(all="ignore"):
        return np.exp(td)


def _scale(reduction, x, n_terms):
    """d reduced / d term: 1, 1 / numel ('mean') or 1 / input.shape[0] ('batchmean')."""
    if reduction == "mean":
        return 1.0 / n_terms if n_terms else math.nan
    if reduction == "batchmean" and x.ndim > 0:
        return 1.0 / x.shape[0] if x.shape[0] else math.nan
    return 1.0


def _view2(a, shape, shape2):
    """``a`` broadcast to ``shape`` as a 2-D view (a copy only when the
    broadcast or strided axes cannot be merged)."""
    return np.broadcast_to(a, shape).reshape(shape2)


def _run(input, target, reduction, log_target, n_threads, want_grad, grad_out):
    x, t, shape, dtype = _prepare(input, target, reduction, log_target)
    size = math.prod(shape)
    n_threads = resolve_threads(n_threads, size)
    shape2 = (size // shape[-1], shape[-1]) if len(shape) and size else (size, 1)
    scale = _scale(reduction, x, size)
    grad = grad2 = scratch = None
    kernel_grad = want_grad and x.shape == shape
    if want_grad:
        # the kernel reads each element before it writes its gradient, so
        # grad_out may be input or target itself (exactly)
        check_output(grad_out, "grad_out", x.shape, dtype,
                     [(input, "input"), (x, "input"), (target, "target"), (t, "target")],
                     ("input", "target"))
        if kernel_grad:
            grad, grad2, scratch = output_view(grad_out, x.shape, dtype, shape2)
    terms = np.empty(shape, dtype) if reduction == "none" else None
    total = 0.0
    if size:
        total = _k.kl_div_flat(_view2(x, shape, shape2), _view2(t, shape, shape2),
                               None if terms is None else terms.reshape(shape2), grad2, scale,
                               bool(log_target), terms is None, n_threads)
    if reduction == "none":
        loss = terms
    else:
        if reduction == "mean":
            total = total / size if size else math.nan
        elif reduction == "batchmean" and x.ndim > 0:
            total = total / x.shape[0] if x.shape[0] else math.nan
        loss = to_dtype(total, dtype)
    if not want_grad:
        return loss
    if kernel_grad:
        return loss, finish_output(grad, scratch)
    # input broadcast against target: its gradient sums over the broadcast axes
    grad = np.empty(x.shape, dtype) if grad_out is None else grad_out
    with np.errstate(all="ignore"):
        g = np.broadcast_to(-scale * _weights(t, log_target), shape)
        lead = len(shape) - x.ndim
        g = g.sum(axis=tuple(range(lead))) if lead else g
        g = g.sum(axis=tuple(i for i, n in enumerate(x.shape) if n == 1 and g.shape[i] != 1),
                  keepdims=True)
        np.copyto(grad, g, casting="unsafe")
    return loss, grad


def kl_div(input, target, reduction="mean", log_target=False, *, n_threads=None):
    """``torch.nn.functional.kl_div``: KL terms with the input in log space.

    Pointwise ``target * (log(target) - input)`` (0 where ``target == 0``:
    torch's ``xlogy(target, target) - target * input``), or with
    ``log_target=True`` ``exp(target) * (target - input)``, then reduced.
    The result of ``reduction='batchmean'`` on ``input = log q`` and
    ``target = p`` of shape ``(N, C)`` is the mean of ``D_KL(p || q)`` over
    the N rows.

    {params}

    Returns
    -------
    numpy scalar or ndarray
        The reduced loss (the pointwise terms for 'none'), in the common
        float dtype of ``input`` and ``target``.

    Notes
    -----
    As torch: a negative or nan target gives nan, ``target == 0`` with
    ``input = -inf`` gives nan (``0 * -inf``), and nothing is validated.
    Terms and sums are computed in double.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import kl_div
    >>> p, q = np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]])
    >>> round(float(kl_div(np.log(q), p, reduction="batchmean")), 10)
    0.1438410362
    """
    return _run(input, target, reduction, log_target, n_threads, False, None)


def kl_div_with_grad(input, target, reduction="mean", log_target=False, *, grad_out=None,
                     n_threads=None):
    """:func:`kl_div` and its gradient with respect to ``input``.

    {params}
    grad_out : ndarray, optional
        Buffer for the gradient (``input``'s shape, the computation
        dtype); it may be ``input`` or
        ``target`` itself, but must not partly overlap either.

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`kl_div`.
    grad : ndarray
        ``d loss / d input`` (for 'none': of ``loss.sum()``): ``-target``
        (``-exp(target)`` with ``log_target``) times the reduction's scale,
        summed over the axes ``input`` is broadcast along: ``input``'s
        shape, as torch's.

    Examples
    --------
    >>> import numpy as np
    >>> from lossmle import kl_div_with_grad
    >>> loss, g = kl_div_with_grad(np.log([[0.25, 0.75]]), [[0.5, 0.5]], reduction="sum")
    >>> g
    array([[-0.5, -0.5]])
    """
    return _run(input, target, reduction, log_target, n_threads, True, grad_out)


kl_div.__doc__ = (kl_div.__doc__ or "").replace("{params}", _PARAMS)
kl_div_with_grad.__doc__ = (kl_div_with_grad.__doc__ or "").replace("{params}", _PARAMS)
