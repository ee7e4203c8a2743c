"""kl_div: torch.nn.functional.kl_div (input in log space) and its gradient."""
import math

import numpy as np

from ._validation import as_float_array, check_output, check_reduction, common_float_dtype

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
        ``target`` holds log-probabilities."""


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


def _terms(x, t, log_target):
    """torch's pointwise terms in double: xlogy(t, t) - t x, or exp(t) (t - x)."""
    xd = x.astype(np.float64, copy=False)
    td = t.astype(np.float64, copy=False)
    with np.errstate(all="ignore"):  # nan / inf terms are torch's, quietly
        if log_target:
            weight = np.exp(td)
            terms = weight * (td - xd)
        else:
            weight = td
            tlogt = np.where(td == 0, 0.0, td * np.log(np.where(td == 0, 1.0, td)))
            tlogt = np.where(np.isnan(td), np.nan, tlogt)   # xlogy(nan, nan) = nan
            terms = tlogt - td * xd
    return terms, weight


def _scale(reduction, x, n_terms):
    """d reduced / d term: 1, 1 / numel ('mean') or 1 / input.shape[0] ('batchmean')."""
    if reduction == "mean":
        return 1.0 / n_terms if n_terms else math.nan
    if reduction == "batchmean" and x.ndim > 0:
        return 1.0 / x.shape[0] if x.shape[0] else math.nan
    return 1.0


def _reduce(terms, reduction, x, dtype):
    if reduction == "none":
        with np.errstate(over="ignore"):
            return terms.astype(dtype)
    total = float(np.sum(terms))
    if reduction == "mean":
        total = total / terms.size if terms.size else math.nan
    elif reduction == "batchmean" and x.ndim > 0:
        total = total / x.shape[0] if x.shape[0] else math.nan
    with np.errstate(over="ignore"):
        return dtype.type(total)


def kl_div(input, target, reduction="mean", log_target=False):
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
    x, t, shape, dtype = _prepare(input, target, reduction, log_target)
    terms, _ = _terms(x, t, log_target)
    return _reduce(terms, reduction, x, dtype)


def kl_div_with_grad(input, target, reduction="mean", log_target=False, *, grad_out=None):
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
    x, t, shape, dtype = _prepare(input, target, reduction, log_target)
    terms, weight = _terms(x, t, log_target)
    loss = _reduce(terms, reduction, x, dtype)
    scale = _scale(reduction, x, terms.size)
    # the gradient is computed whole before it is written, so grad_out may be
    # input or target itself (exactly)
    check_output(grad_out, "grad_out", x.shape, dtype,
                 [(input, "input"), (x, "input"), (target, "target"), (t, "target")],
                 ("input", "target"))
    grad = np.empty(x.shape, dtype) if grad_out is None else grad_out
    with np.errstate(all="ignore"):
        g = np.broadcast_to(-scale * weight, shape)
        if shape != x.shape:   # input broadcast against target: its gradient sums
            lead = len(shape) - x.ndim
            g = g.sum(axis=tuple(range(lead))) if lead else g
            g = g.sum(axis=tuple(i for i, n in enumerate(x.shape) if n == 1 and g.shape[i] != 1),
                      keepdims=True)
        np.copyto(grad, g, casting="unsafe")
    return loss, grad


kl_div.__doc__ = kl_div.__doc__.replace("{params}", _PARAMS)
kl_div_with_grad.__doc__ = kl_div_with_grad.__doc__.replace("{params}", _PARAMS)
