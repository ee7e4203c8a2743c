"""lossmle inside PyTorch autograd: torch.nn.functional-style losses on CPU tensors.

Needs the optional extra ``torch`` (``pip install 'lossmle[torch]'``; install
a CPU build of torch first from https://download.pytorch.org/whl/cpu if you do
not want pip to fetch the CUDA one).  ``import lossmle`` never imports torch:
this module is loaded only when you import it.

Every function has the signature of its :mod:`torch.nn.functional` namesake
and is a :class:`torch.autograd.Function` over lossmle's fused kernels:

* **Zero-copy.**  Inputs are read through ``tensor.numpy()`` (a view, any
  strides); results and gradients are numpy arrays handed to torch with
  ``torch.from_numpy`` (no copy).  Nothing is made contiguous here, except by
  ``linear_cross_entropy``, whose BLAS products need contiguous operands (one
  copy of a non-contiguous ``input`` / ``linear_weight``, as in
  :func:`lossmle.linear_cross_entropy`).
* **One pass for value and gradient.**  When an input requires a gradient
  (and grad mode is on) the forward computes the loss and its gradient
  together (``*_with_grad``); the backward only scales the saved gradient by
  the incoming one, in place.  Under :func:`torch.no_grad` /
  :func:`torch.inference_mode`, or when nothing requires a gradient, only the
  value is computed and no graph is recorded.
* **CPU, float32 / float64.**  A CUDA (or other non-CPU) tensor, float16 /
  bfloat16 / complex inputs and sparse tensors are rejected with a
  ``TypeError`` / ``ValueError`` naming the argument: use
  :mod:`torch.nn.functional` there.  Cast with ``.float()`` / ``.double()``.
* **First derivatives only.**  A backward with ``create_graph=True`` (the
  first step of a double backward: gradient penalties, MAML, Hessians)
  raises a ``RuntimeError`` rather than treat the gradient as a constant.  Gradients with respect to targets and class weights are
  not provided (a ``ValueError`` if such a tensor requires a gradient), except
  for :func:`kl_div`, whose target gradient is torch's.
* **torch.compile.**  Every entry point is wrapped in
  :func:`torch.compiler.disable`: under :func:`torch.compile` each call is a
  graph break and runs eagerly, with exactly the eager result and gradient
  (tested with the ``eager`` and ``aot_eager`` backends).  The kernels are
  not traced into the compiled graph.

Threads: lossmle's kernels use :func:`lossmle.set_num_threads`, independent
of :func:`torch.set_num_threads`.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Optional, Sequence, Union

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError(
        "lossmle.torch needs PyTorch: pip install 'lossmle[torch]' (or a CPU "
        "build: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
    ) from exc

from torch.autograd.function import once_differentiable

from ._adapters import (
    check_kl_div_reduction as _check_kl_div_reduction, kl_div_grads as _kl_div_grads,
    kl_div_value as _kl_div, linear_ce_rows_grads as _lce_rows_grads,
)
from . import _adapters as _core

__all__ = [
    "cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
    "kl_divergence_from_logits", "kl_div", "logsumexp", "softmax", "log_softmax",
    "linear_cross_entropy",
    "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss", "KLDivLoss", "Softmax",
    "LogSoftmax", "KLDivergenceFromLogitsLoss",
]

Tensor = torch.Tensor
_FLOATS = (torch.float32, torch.float64)
_disable = torch.compiler.disable


# ---------------------------------------------------------------------------
# tensors <-> numpy, without copies
# ---------------------------------------------------------------------------
def _check_tensor(t: Any, name: str) -> Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(
            f"{name} is on device {t.device}; lossmle.torch computes on CPU tensors "
            f"only (use torch.nn.functional there, or move it with .cpu())")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    return t


def _float_np(t: Any, name: str) -> np.ndarray:
    """A float32/float64 CPU tensor as a numpy view (no copy)."""
    _check_tensor(t, name)
    if t.dtype not in _FLOATS:
        raise TypeError(
            f"{name} has dtype {t.dtype}; lossmle computes in torch.float32 or "
            f"torch.float64 (cast with .float() or .double(), or use "
            f"torch.nn.functional for {t.dtype})")
    return _view(t)


def _view(t: Tensor) -> np.ndarray:
    t = t.detach()
    if t.is_conj() or t.is_neg():  # lazy bits numpy cannot see
        t = t.resolve_conj().resolve_neg()
    return t.numpy()


def _target_np(t: Any, name: str = "target") -> np.ndarray:
    """Class indices (any integer dtype) or class probabilities, as a numpy view."""
    _check_tensor(t, name)
    if t.dtype == torch.bool or t.is_complex() or not (
            t.dtype.is_floating_point or not t.dtype.is_signed or t.dtype in
            (torch.int8, torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold integer class indices or float class "
                        f"probabilities, got dtype {t.dtype}")
    if t.dtype.is_floating_point and t.dtype not in _FLOATS:
        raise TypeError(f"{name} has dtype {t.dtype}; use torch.float32 or torch.float64")
    return _view(t)


def _opt_float_np(t: Any, name: str) -> Optional[np.ndarray]:
    return None if t is None else _float_np(t, name)


def _to_tensor(value: Any) -> Tensor:
    """A lossmle result (numpy scalar or array) as a tensor, without a copy."""
    if isinstance(value, np.ndarray):
        if not value.flags.writeable:  # never the case for lossmle's fresh results
            value = value.copy()
        return torch.from_numpy(value)
    return torch.from_numpy(np.asarray(value))


def _grad_enabled(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)


def _no_grad_for(name: str, t: Optional[Tensor]) -> None:
    if t is not None and torch.is_grad_enabled() and t.requires_grad:
        raise ValueError(
            f"{name} requires a gradient, which lossmle.torch does not compute for "
            f"it; detach it (or use torch.nn.functional)")


def _reduction(size_average: Any, reduce: Any, reduction: str) -> str:
    """torch's legacy size_average / reduce arguments, mapped as torch maps them."""
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction as _red
        return _red.legacy_get_string(size_average, reduce)
    return reduction


def _scaled(grad: Tensor, g: Tensor, unsqueeze: Optional[int] = None) -> Tensor:
    """``grad * g`` in place (``grad`` is ours and used once); ``g`` broadcast
    along the class dimension ``unsqueeze`` for per-position losses."""
    if g.ndim == 0:
        if g.item() != 1.0:
            grad.mul_(g)
        return grad
    if unsqueeze is not None:
        g = g.unsqueeze(unsqueeze)
    return grad.mul_(g)


class _Saved:
    """A gradient computed in the forward, handed out once by the backward.

    A second backward through the same graph (``retain_graph=True``) gets a
    fresh gradient from ``recompute`` instead, so the first one may be
    scaled in place and kept by autograd as ``.grad``.
    """
    __slots__ = ("grads", "recompute")

    def __init__(self, grads: Sequence[Optional[Tensor]], recompute: Any) -> None:
        self.grads: Optional[Sequence[Optional[Tensor]]] = grads
        self.recompute = recompute

    def take(self) -> Sequence[Optional[Tensor]]:
        grads, self.grads = self.grads, None
        if grads is None:
            grads = self.recompute()
        return grads


def _first_order(backward: Any) -> Any:
    """A backward that refuses ``create_graph=True`` (a double backward would
    otherwise see the gradient as a constant and be silently wrong)."""
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx: Any, *grads: Any) -> Any:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "lossmle.torch computes first derivatives only: backward with "
                "create_graph=True (double backward) is not supported; use "
                "torch.nn.functional for higher-order gradients")
        return inner(ctx, *grads)
    return wrapper


def _as_tensors(*arrays: Optional[np.ndarray]) -> list[Optional[Tensor]]:
    return [None if a is None else torch.from_numpy(a) for a in arrays]


# ---------------------------------------------------------------------------
# cross_entropy / nll_loss
# ---------------------------------------------------------------------------
class _ClassLossFn(torch.autograd.Function):
    """cross_entropy or nll_loss: the value and the input gradient in one pass."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, x: np.ndarray, target: np.ndarray,  # type: ignore[override]
                kwargs: dict[str, Any], nll: bool) -> Tensor:
        fn = _core.nll_with_grad if nll else _core.ce_with_grad
        loss, grad = fn(x, target, **kwargs)
        ctx.saved = _Saved(_as_tensors(grad),
                           lambda: _as_tensors(fn(x, target, **kwargs)[1]))
        ctx.axis = kwargs["axis"]
        return _to_tensor(loss)

    @staticmethod
    @_first_order
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (grad,) = ctx.saved.take()
        return _scaled(grad, g, ctx.axis), None, None, None, None


def _class_axis(x: np.ndarray, name: str) -> int:
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the classes); "
                         f"got a 0-d tensor")
    return 0 if x.ndim == 1 else 1


@_disable
def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                  size_average: Optional[bool] = None, ignore_index: int = -100,
                  reduce: Optional[bool] = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits and a target, as :func:`torch.nn.functional.cross_entropy`.

    Parameters
    ----------
    input : Tensor, shape (C,), (N, C) or (N, C, d1, ...)
        Logits, float32 or float64, on the CPU; the classes are dimension 1
        (dimension 0 for a 1-D input).
    target : Tensor
        Class indices (an integer tensor shaped like ``input`` without its
        class dimension) or class probabilities (a float tensor shaped like
        ``input``).
    weight : Tensor of shape (C,), optional
        Class weights (finite, >= 0).
    size_average, reduce : bool, optional
        Deprecated by torch; mapped onto ``reduction`` as torch does.
    ignore_index : int, optional
        Class-index targets equal to it take no part (default -100).
    reduction : {'mean', 'sum', 'none'}, optional
        As torch: 'mean' divides by the summed weight of the kept targets.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution.

    Returns
    -------
    Tensor
        A 0-d tensor for 'mean' / 'sum', else one loss per position; of the
        input's dtype, with a ``grad_fn`` when ``input`` requires a gradient.

    Notes
    -----
    The forward is :func:`lossmle.cross_entropy_with_grad` (value and
    gradient in one pass over the logits) when a gradient is needed, and
    :func:`lossmle.cross_entropy` otherwise.  Class-index targets may be of
    any integer dtype (torch wants int64 or uint8).  No gradient flows to
    ``target`` or ``weight``.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> x = torch.tensor([[2.0, 0.0], [0.0, 0.0]], requires_grad=True)
    >>> loss = lt.cross_entropy(x, torch.tensor([0, 1]))
    >>> round(loss.item(), 6)
    0.410038
    >>> loss.backward()
    >>> x.grad.shape
    torch.Size([2, 2])
    """
    reduction = _reduction(size_average, reduce, reduction)
    x = _float_np(input, "input")
    t = _target_np(target)
    _no_grad_for("target", target)
    _no_grad_for("weight", weight)
    kwargs: dict[str, Any] = dict(axis=_class_axis(x, "input"), weight=_opt_float_np(weight, "weight"),
                  ignore_index=ignore_index, reduction=reduction,
                  label_smoothing=label_smoothing)
    if not _grad_enabled(input):
        return _to_tensor(_core.ce(x, t, **kwargs))
    return _ClassLossFn.apply(input, x, t, kwargs, False)


@_disable
def nll_loss(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
             size_average: Optional[bool] = None, ignore_index: int = -100,
             reduce: Optional[bool] = None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices, as :func:`torch.nn.functional.nll_loss`.

    Parameters
    ----------
    input : Tensor, shape (C,), (N, C) or (N, C, d1, ...)
        Log-probabilities (float32 / float64, CPU); classes on dimension 1.
    target : Tensor of int
        Class indices shaped like ``input`` without its class dimension.
    weight, size_average, ignore_index, reduce, reduction
        As :func:`cross_entropy`.

    Returns
    -------
    Tensor
        ``-weight[y] * input[y]`` per position, reduced as asked.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> lp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]], dtype=torch.float64))
    >>> round(lt.nll_loss(lp, torch.tensor([0, 1])).item(), 10)
    0.4904146265
    """
    reduction = _reduction(size_average, reduce, reduction)
    x = _float_np(input, "input")
    t = _target_np(target)
    if target.dtype.is_floating_point:
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    _no_grad_for("weight", weight)
    kwargs: dict[str, Any] = dict(axis=_class_axis(x, "input"), weight=_opt_float_np(weight, "weight"),
                  ignore_index=ignore_index, reduction=reduction)
    if not _grad_enabled(input):
        return _to_tensor(_core.nll(x, t, **kwargs))
    return _ClassLossFn.apply(input, x, t, kwargs, True)


# ---------------------------------------------------------------------------
# binary_cross_entropy_with_logits
# ---------------------------------------------------------------------------
class _BCEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: Tensor, x: np.ndarray, t: np.ndarray,  # type: ignore[override]
                kwargs: dict[str, Any]) -> Tensor:
        loss, grad = _core.bce_with_grad(x, t, **kwargs)
        ctx.saved = _Saved(_as_tensors(grad),
                           lambda: _as_tensors(_core.bce_with_grad(x, t, **kwargs)[1]))
        ctx.shape = input.shape
        return _to_tensor(loss)

    @staticmethod
    @_first_order
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (grad,) = ctx.saved.take()
        return _scaled(grad, g), None, None, None


@_disable
def binary_cross_entropy_with_logits(
        input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
        size_average: Optional[bool] = None, reduce: Optional[bool] = None,
        reduction: str = "mean", pos_weight: Optional[Tensor] = None) -> Tensor:
    """Binary cross-entropy on logits, as :func:`torch.nn.functional.binary_cross_entropy_with_logits`.

    Parameters
    ----------
    input : Tensor
        Log-odds (float32 / float64, CPU), any shape.
    target : Tensor
        Targets in [0, 1], the shape of ``input`` (float).
    weight : Tensor, optional
        Per-element rescaling broadcast to ``input``.
    size_average, reduce
        Deprecated by torch; mapped onto ``reduction`` as torch does.
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' divides by the number of elements.
    pos_weight : Tensor, optional
        Weight of the positive term, broadcast to ``input``.

    Returns
    -------
    Tensor
        Of the input's dtype; shaped like ``input`` for 'none'.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> x = torch.zeros(2, dtype=torch.float64)
    >>> round(lt.binary_cross_entropy_with_logits(x, torch.tensor([1.0, 0.0],
    ...       dtype=torch.float64)).item(), 10)
    0.6931471806
    """
    reduction = _reduction(size_average, reduce, reduction)
    x = _float_np(input, "input")
    t = _float_np(target, "target")
    if target.shape != input.shape:
        raise ValueError(f"target size ({tuple(target.shape)}) must be the same as "
                         f"input size ({tuple(input.shape)})")
    for name, arg in (("target", target), ("weight", weight), ("pos_weight", pos_weight)):
        _no_grad_for(name, arg)
    kwargs: dict[str, Any] = dict(weight=_opt_float_np(weight, "weight"),
                  pos_weight=_opt_float_np(pos_weight, "pos_weight"), reduction=reduction)
    if not _grad_enabled(input):
        return _to_tensor(_core.bce(x, t, **kwargs))
    return _BCEFn.apply(input, x, t, kwargs)


# ---------------------------------------------------------------------------
# KL divergence between the softmaxes of two logits (distillation)
# ---------------------------------------------------------------------------
class _KLLogitsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, p_logits: Tensor, q_logits: Tensor, p: np.ndarray,  # type: ignore[override]
                q: np.ndarray, kwargs: dict[str, Any], p_grad: bool) -> Tensor:
        res = _core.kl_logits_with_grad(p, q, p_grad=p_grad, **kwargs)

        def recompute() -> list[Optional[Tensor]]:
            r = _core.kl_logits_with_grad(p, q, p_grad=p_grad, **kwargs)
            return _as_tensors(r[1], r[2] if p_grad else None)
        ctx.saved = _Saved(_as_tensors(res[1], res[2] if p_grad else None), recompute)
        ctx.axis = kwargs["axis"] % p.ndim
        ctx.q_grad = ctx.needs_input_grad[1]
        return _to_tensor(res[0])

    @staticmethod
    @_first_order
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        gq, gp = ctx.saved.take()
        gq = _scaled(gq, g, ctx.axis) if ctx.q_grad else None
        gp = _scaled(gp, g, ctx.axis) if gp is not None else None
        return gp, gq, None, None, None, None


@_disable
def kl_divergence_from_logits(p_logits: Tensor, q_logits: Tensor, dim: int = -1, *,
                              temperature: float = 1.0,
                              logit_softcap: Optional[float] = None,
                              reduction: str = "batchmean") -> Tensor:
    r"""``KL(softmax(p_logits / T) || softmax(q_logits / T))`` straight from logits.

    The distillation loss (teacher ``p_logits``, student ``q_logits``), as
    :func:`lossmle.kl_divergence_from_logits`, differentiable in both.

    Parameters
    ----------
    p_logits, q_logits : Tensor, same shape
        Logits of the reference distribution P (e.g. the teacher) and of Q
        (e.g. the student); float32 / float64, CPU.
    dim : int, optional
        The class dimension (default -1).
    temperature : float > 0, optional
        Both logits are divided by it.  Scale the loss by ``T**2`` yourself
        if you follow Hinton et al.
    logit_softcap : float > 0, optional
        Logits become ``cap * tanh(x / cap)`` first.
    reduction : {'batchmean', 'sum', 'mean', 'none'}, optional
        'batchmean' (default) divides the total by the number of positions
        (every dimension but ``dim``), 'mean' by the number of elements.

    Returns
    -------
    Tensor
        Of the inputs' dtype.

    Notes
    -----
    Equal to ``F.kl_div(F.log_softmax(q / T, dim), F.log_softmax(p / T, dim),
    log_target=True, reduction='sum') / n_positions`` for 'batchmean', without
    the two log-softmax tensors; gradients flow to whichever input requires
    one (computed in the same pass as the value).

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> p = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
    >>> q = torch.log(torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
    >>> round(lt.kl_divergence_from_logits(p, q).item(), 10)
    0.0588915178
    """
    p = _float_np(p_logits, "p_logits")
    q = _float_np(q_logits, "q_logits")
    if p_logits.dtype != q_logits.dtype:
        raise TypeError(f"p_logits ({p_logits.dtype}) and q_logits ({q_logits.dtype}) "
                        f"must have the same dtype")
    kwargs: dict[str, Any] = dict(axis=dim, temperature=temperature, logit_softcap=logit_softcap,
                  reduction=reduction)
    if not _grad_enabled(p_logits, q_logits):
        return _to_tensor(_core.kl_logits(p, q, **kwargs))
    p_grad = p_logits.requires_grad
    return _KLLogitsFn.apply(p_logits, q_logits, p, q, kwargs, p_grad)


# ---------------------------------------------------------------------------
# kl_div (torch semantics: input is log Q, target is P or log P)
# ---------------------------------------------------------------------------
class _KLDivFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor, x: np.ndarray,  # type: ignore[override]
                t: np.ndarray, reduction: str, log_target: bool) -> Tensor:
        ctx.save_for_backward(input, target)
        ctx.reduction, ctx.log_target = reduction, log_target
        return _to_tensor(_kl_div(x, t, reduction, log_target))

    @staticmethod
    @_first_order
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        input, target = ctx.saved_tensors
        grads = _kl_div_grads(_view(input), _view(target), ctx.reduction, ctx.log_target,
                              ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        gx, gt = (None if a is None else _scaled(torch.from_numpy(a), g) for a in grads)
        return gx, gt, None, None, None, None


@_disable
def kl_div(input: Tensor, target: Tensor, size_average: Optional[bool] = None,
           reduce: Optional[bool] = None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """KL divergence with torch's conventions, as :func:`torch.nn.functional.kl_div`.

    Parameters
    ----------
    input : Tensor
        Log-probabilities of the model Q (float32 / float64, CPU).
    target : Tensor
        Probabilities P (log-probabilities with ``log_target=True``), the
        shape of ``input``.
    size_average, reduce
        Deprecated by torch; mapped onto ``reduction`` as torch does.
    reduction : {'mean', 'batchmean', 'sum', 'none'}, optional
        'batchmean' divides the total by ``input.size(0)`` (the KL
        divergence), 'mean' by the number of elements (with torch's warning).
    log_target : bool, optional
        Whether ``target`` holds log-probabilities.

    Returns
    -------
    Tensor
        Pointwise ``target * (log(target) - input)`` reduced as asked.

    Notes
    -----
    Computed with NumPy in this module for now (``t = 0`` gives ``0``, as
    torch's ``xlogy``); it will move onto a lossmle kernel.  Gradients flow
    to ``input`` and to ``target`` (torch's, including its ``nan`` at
    ``target == 0`` when ``log_target=False``).  For logits on both sides
    :func:`kl_divergence_from_logits` is the fused kernel.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> q = torch.log(torch.tensor([[1 / 3, 2 / 3]], dtype=torch.float64))
    >>> p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    >>> round(lt.kl_div(q, p, reduction="batchmean").item(), 10)
    0.0588915178
    """
    reduction = _reduction(size_average, reduce, reduction)
    reduction = _check_kl_div_reduction(reduction)
    if reduction == "mean":
        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the "
            "support size.'batchmean' divides only by the batch size, and aligns with "
            "the KL div math definition.'mean' will be changed to behave the same as "
            "'batchmean' in the next major release.", stacklevel=2)
    x = _float_np(input, "input")
    t = _float_np(target, "target")
    if input.dtype != target.dtype:
        raise TypeError(f"input ({input.dtype}) and target ({target.dtype}) must have "
                        f"the same dtype")
    if x.shape != t.shape:
        raise ValueError(f"input with shape {tuple(x.shape)} and target with shape "
                         f"{tuple(t.shape)} must have the same shape")
    if not _grad_enabled(input, target):
        return _to_tensor(_kl_div(x, t, reduction, bool(log_target)))
    return _KLDivFn.apply(input, target, x, t, reduction, bool(log_target))


# ---------------------------------------------------------------------------
# logsumexp, softmax, log_softmax
# ---------------------------------------------------------------------------
def _dims(dim: Any, ndim: int) -> tuple[int, ...]:
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    n = max(ndim, 1)
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"dim must be an int or a tuple of ints, got {dim!r}")
        if not -n <= d < n:
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[{-n}, {n - 1}], but got {d})")
        out.append(int(d) % n)
    return tuple(out)


class _LogSumExpFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: Tensor, x: np.ndarray, dims: tuple[int, ...],  # type: ignore[override]
                keepdim: bool) -> Tensor:
        out = _to_tensor(_core.logsumexp(x, axis=dims, keepdims=keepdim))
        ctx.save_for_backward(input)
        ctx.dims, ctx.keepdim = dims, keepdim
        return out

    @staticmethod
    @_first_order
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (input,) = ctx.saved_tensors
        # d lse / d x = softmax(x) over the reduced dimensions
        grad = torch.from_numpy(_core.softmax(_view(input), axis=ctx.dims))
        if not ctx.keepdim:
            for d in sorted(ctx.dims):
                g = g.unsqueeze(d)
        return grad.mul_(g), None, None, None


@_disable
def logsumexp(input: Tensor, dim: Union[int, Sequence[int]], keepdim: bool = False) -> Tensor:
    """``log(sum(exp(input)))`` over ``dim``, as :func:`torch.logsumexp`.

    Parameters
    ----------
    input : Tensor
        float32 / float64, CPU.
    dim : int or tuple of ints
        Dimension(s) to reduce.
    keepdim : bool, optional
        Keep the reduced dimensions with size one.

    Returns
    -------
    Tensor
        Its gradient is ``softmax(input)`` over ``dim`` times the incoming one.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> round(lt.logsumexp(torch.arange(10, dtype=torch.float64), 0).item(), 10)
    9.4586297444
    """
    x = _float_np(input, "input")
    dims = _dims(dim, x.ndim)
    if x.ndim == 0:  # torch reduces a 0-d tensor over dim 0 or -1 to itself
        return input.clone()
    if not _grad_enabled(input):
        return _to_tensor(_core.logsumexp(x, axis=dims, keepdims=bool(keepdim)))
    return _LogSumExpFn.apply(input, x, dims, bool(keepdim))


class _SoftmaxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: Tensor, x: np.ndarray, dim: int,  # type: ignore[override]
                log: bool) -> Tensor:
        out = torch.from_numpy((_core.log_softmax if log else _core.softmax)(x, axis=dim))
        ctx.dim, ctx.log = dim, log
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @_first_order
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        back = _core.log_softmax_backward if ctx.log else _core.softmax_backward
        return torch.from_numpy(back(_view(g), _view(out), axis=ctx.dim)), None, None, None


def _softmax_dim(dim: Optional[int], ndim: int, name: str) -> int:
    if dim is None:  # torch's legacy implicit choice, with torch's warning
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                      f"Change the call to include dim=X as an argument.", stacklevel=3)
        dim = 0 if ndim in (0, 1, 3) else 1
    return _dims(dim, ndim)[0]


def _softmax_common(input: Tensor, dim: Optional[int], dtype: Optional[torch.dtype],
                    log: bool) -> Tensor:
    name = "log_softmax" if log else "softmax"
    _check_tensor(input, "input")
    if dtype is not None:
        input = input.to(dtype)  # differentiable cast, as torch's dtype=
    x = _float_np(input, "input")
    d = _softmax_dim(dim, x.ndim, name)
    if x.ndim == 0:
        out = (torch.zeros_like if log else torch.ones_like)(input)
        return out + 0 * input if _grad_enabled(input) else out
    if not _grad_enabled(input):
        return torch.from_numpy((_core.log_softmax if log else _core.softmax)(x, axis=d))
    return _SoftmaxFn.apply(input, x, d, log)


@_disable
def softmax(input: Tensor, dim: Optional[int] = None, _stacklevel: int = 3,
            dtype: Optional[torch.dtype] = None) -> Tensor:
    """Softmax along ``dim``, as :func:`torch.nn.functional.softmax`.

    Parameters
    ----------
    input : Tensor
        float32 / float64, CPU.
    dim : int
        The dimension that sums to one (None: torch's deprecated implicit
        choice, with its warning).
    _stacklevel : int, optional
        Accepted for torch compatibility; unused.
    dtype : torch.dtype, optional
        Cast ``input`` to it first (float32 or float64).

    Returns
    -------
    Tensor
        Shaped like ``input``; backward is :func:`lossmle.softmax_backward`.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> lt.softmax(torch.tensor([0.0, 0.0]), dim=0).tolist()
    [0.5, 0.5]
    """
    return _softmax_common(input, dim, dtype, False)


@_disable
def log_softmax(input: Tensor, dim: Optional[int] = None, _stacklevel: int = 3,
                dtype: Optional[torch.dtype] = None) -> Tensor:
    """Log-softmax along ``dim``, as :func:`torch.nn.functional.log_softmax`.

    Parameters
    ----------
    input : Tensor
        float32 / float64, CPU.
    dim : int
        The dimension to normalise over (None: torch's deprecated implicit
        choice, with its warning).
    _stacklevel : int, optional
        Accepted for torch compatibility; unused.
    dtype : torch.dtype, optional
        Cast ``input`` to it first (float32 or float64).

    Returns
    -------
    Tensor
        Shaped like ``input``; backward is :func:`lossmle.log_softmax_backward`.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> lt.log_softmax(torch.tensor([0.0, 0.0], dtype=torch.float64), dim=0).exp().tolist()
    [0.5, 0.5]
    """
    return _softmax_common(input, dim, dtype, True)


# ---------------------------------------------------------------------------
# linear_cross_entropy: the linear head and the loss, without the N x V logits
# ---------------------------------------------------------------------------
class _LinearCEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: Tensor, linear_weight: Tensor,  # type: ignore[override]
                linear_bias: Optional[Tensor], h: np.ndarray, w: np.ndarray,
                b: Optional[np.ndarray], t: np.ndarray, kwargs: dict[str, Any]) -> Tensor:
        ctx.reduction = kwargs["reduction"]
        ctx.batch_dims = h.ndim - 1
        if ctx.reduction == "none":
            # per-row upstream gradients: the backward makes its own pass
            loss = _core.lce(h, w, t, bias=b, **kwargs)
            ctx.arrays = (h, w, b, t, kwargs, loss)
            return _to_tensor(loss)
        loss, gh, gw, gb = _core.lce_with_grad(h, w, t, bias=b, **kwargs)

        def recompute() -> list[Optional[Tensor]]:
            return _as_tensors(*_core.lce_with_grad(h, w, t, bias=b, **kwargs)[1:])
        ctx.saved = _Saved(_as_tensors(gh, gw, gb), recompute)
        return _to_tensor(loss)

    @staticmethod
    @_first_order
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        need = tuple(ctx.needs_input_grad[:3])
        if ctx.reduction == "none":
            h, w, b, t, kwargs, loss = ctx.arrays
            grads = _as_tensors(*_lce_rows_grads(
                h, w, b, t, loss, _view(g), kwargs["ignore_index"], kwargs["chunk_size"],
                need))
        else:
            grads = [None if gr is None else _scaled(gr, g) if n else None
                     for gr, n in zip(ctx.saved.take(), need)]
        return (*grads, None, None, None, None, None)


@_disable
def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *,
                         linear_bias: Optional[Tensor] = None,
                         weight: Optional[Tensor] = None, reduction: str = "mean",
                         ignore_index: Optional[int] = None,
                         label_smoothing: float = 0.0, options: Any = None,
                         chunk_size: Optional[int] = None) -> Tensor:
    """``cross_entropy(linear(input, linear_weight, linear_bias), target)`` without the logits.

    As :func:`torch.nn.functional.linear_cross_entropy` (torch >= 2.13) for
    class-index targets: the vocabulary is processed in blocks
    (:func:`lossmle.linear_cross_entropy`), so neither the N x V logits nor
    their gradient is ever stored.

    Parameters
    ----------
    input : Tensor, shape (..., d)
        Hidden states (float32 / float64, CPU).
    linear_weight : Tensor, shape (V, d)
        The linear layer's weight.
    target : Tensor of int, shape (...)
        Class indices.
    linear_bias : Tensor of shape (V,), optional
        The linear layer's bias.
    weight : None
        Class weights are not supported (a ``ValueError`` if given).
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' divides by the number of non-ignored targets.
    ignore_index : int or None, optional
        Targets equal to it take no part (None: -100, as torch).
    label_smoothing : float, optional
        Only 0 is supported (a ``ValueError`` otherwise).
    options : torch.nn.LinearCrossEntropyOptions, optional
        torch's chunking options; accepted and ignored (they do not change
        the result): use ``chunk_size``.
    chunk_size : int, optional
        Classes per block (lossmle's default: about 8M logits per block).

    Returns
    -------
    Tensor
        Gradients flow to ``input``, ``linear_weight`` and ``linear_bias``.

    Notes
    -----
    For 'mean' and 'sum' the forward is
    :func:`lossmle.linear_cross_entropy_with_grad` (one pass for the value, a
    second for the three gradients) when a gradient is needed; the backward
    scales them.  For 'none' the forward computes the value only and the
    backward makes the gradient pass with the per-row incoming gradients.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> h = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    >>> W = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    >>> loss = lt.linear_cross_entropy(h, W, torch.tensor([0, 1]))
    >>> abs(loss.item() - torch.log(torch.tensor(4.0)).item()) < 1e-7
    True
    >>> loss.backward(); W.grad.shape
    torch.Size([4, 3])
    """
    if weight is not None:
        raise ValueError("linear_cross_entropy: class weights (weight=) are not "
                         "supported by lossmle.torch; use "
                         "torch.nn.functional.linear_cross_entropy")
    if label_smoothing != 0:
        raise ValueError("linear_cross_entropy: label_smoothing is not supported by "
                         "lossmle.torch; use torch.nn.functional.linear_cross_entropy")
    h = _float_np(input, "input")
    w = _float_np(linear_weight, "linear_weight")
    b = _opt_float_np(linear_bias, "linear_bias")
    for name, arg in (("linear_weight", linear_weight), ("linear_bias", linear_bias)):
        if arg is not None and arg.dtype != input.dtype:
            raise TypeError(f"{name} ({arg.dtype}) must have the dtype of input "
                            f"({input.dtype})")
    t = _target_np(target)
    if target.dtype.is_floating_point:
        raise ValueError("linear_cross_entropy: lossmle.torch supports class-index "
                         "targets only (got a float target)")
    kwargs: dict[str, Any] = dict(ignore_index=-100 if ignore_index is None else ignore_index,
                  reduction=reduction, chunk_size=chunk_size)
    if not _grad_enabled(input, linear_weight, linear_bias):
        return _to_tensor(_core.lce(h, w, t, bias=b, **kwargs))
    return _LinearCEFn.apply(input, linear_weight, linear_bias, h, w, b, t, kwargs)


# ---------------------------------------------------------------------------
# nn.Module wrappers: torch's modules (same constructor, buffers, state_dict)
# with lossmle's forward
# ---------------------------------------------------------------------------
class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """:class:`torch.nn.CrossEntropyLoss` computed by :func:`cross_entropy`.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> round(lt.CrossEntropyLoss()(torch.zeros(1, 4), torch.tensor([2])).item(), 6)
    1.386294
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(input, target, weight=self.weight,
                             ignore_index=self.ignore_index, reduction=self.reduction,
                             label_smoothing=self.label_smoothing)


class NLLLoss(torch.nn.NLLLoss):
    """:class:`torch.nn.NLLLoss` computed by :func:`nll_loss`.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> lt.NLLLoss()(torch.tensor([[-1.0, -2.0]]), torch.tensor([1])).item()
    2.0
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                        reduction=self.reduction)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """:class:`torch.nn.BCEWithLogitsLoss` computed by :func:`binary_cross_entropy_with_logits`.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> round(lt.BCEWithLogitsLoss()(torch.zeros(3), torch.ones(3)).item(), 6)
    0.693147
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(input, target, self.weight,
                                                pos_weight=self.pos_weight,
                                                reduction=self.reduction)


class KLDivLoss(torch.nn.KLDivLoss):
    """:class:`torch.nn.KLDivLoss` computed by :func:`kl_div`.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> lt.KLDivLoss(reduction="batchmean")(torch.zeros(1, 2), torch.ones(1, 2)).item()
    0.0
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class KLDivergenceFromLogitsLoss(torch.nn.Module):
    """Distillation loss module: :func:`kl_divergence_from_logits` of (teacher, student).

    Parameters
    ----------
    dim, temperature, logit_softcap, reduction
        As :func:`kl_divergence_from_logits`.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> loss = lt.KLDivergenceFromLogitsLoss(temperature=2.0)
    >>> loss(torch.zeros(2, 3), torch.zeros(2, 3)).item()
    0.0
    """

    def __init__(self, dim: int = -1, *, temperature: float = 1.0,
                 logit_softcap: Optional[float] = None,
                 reduction: str = "batchmean") -> None:
        super().__init__()
        self.dim, self.temperature = dim, temperature
        self.logit_softcap, self.reduction = logit_softcap, reduction

    def forward(self, p_logits: Tensor, q_logits: Tensor) -> Tensor:
        return kl_divergence_from_logits(p_logits, q_logits, self.dim,
                                         temperature=self.temperature,
                                         logit_softcap=self.logit_softcap,
                                         reduction=self.reduction)


class Softmax(torch.nn.Softmax):
    """:class:`torch.nn.Softmax` computed by :func:`softmax`.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> lt.Softmax(dim=-1)(torch.zeros(1, 2)).tolist()
    [[0.5, 0.5]]
    """

    def forward(self, input: Tensor) -> Tensor:
        return softmax(input, self.dim)


class LogSoftmax(torch.nn.LogSoftmax):
    """:class:`torch.nn.LogSoftmax` computed by :func:`log_softmax`.

    Examples
    --------
    >>> import torch
    >>> import lossmle.torch as lt
    >>> lt.LogSoftmax(dim=-1)(torch.zeros(1, 1)).tolist()
    [[0.0]]
    """

    def forward(self, input: Tensor) -> Tensor:
        return log_softmax(input, self.dim)

