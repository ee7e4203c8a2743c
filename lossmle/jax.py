"""lossmle inside JAX: differentiable losses on CPU, under ``jax.jit`` and ``jax.grad``.

Needs the optional extra ``jax`` (``pip install 'lossmle[jax]'``).
``import lossmle`` never imports jax: this module is loaded only when you
import it.

Each function runs lossmle's compiled kernels through
:func:`jax.pure_callback` and carries a :func:`jax.custom_vjp`:

* the primal call computes the value only; under :func:`jax.grad` /
  :func:`jax.vjp` the forward computes the value and the gradient in one
  fused pass (``*_with_grad``) and the backward multiplies the saved gradient
  by the cotangent;
* it works under :func:`jax.jit` (shapes and options are static, the kernels
  run on the host), under :func:`jax.vmap` (one callback per batch element)
  and with ``jax_enable_x64`` on or off: float32 stays float32, float64
  (x64 on) stays float64; float16 / bfloat16 and integer inputs are a
  ``TypeError``;
* CPU only: the callback copies device arrays to the host, so on an
  accelerator use JAX's own losses.  On CPU the inputs reach the kernels
  without a copy; the outputs are copied once into XLA's buffers.

Options (``axis``, ``reduction``, ``ignore_index``, ...) must be Python
values (they fix the output's shape); shapes, dtypes and options are checked
when the function is traced.  Class indices are checked in Python when
their values are known (an ``IndexError``, as lossmle's); under ``jit`` only
the kernel sees them, and JAX turns its exception into a runtime error
carrying lossmle's message (its documentation puts exceptions in callbacks
outside ``pure_callback``'s contract), so check indices before a jitted call
if they may be bad.

Gradients: with respect to logits / inputs as the framework's own; also
to probability targets (cross-entropy, BCE, KL) and to both sides of the
KL divergences.  Class weights (``weight``, ``pos_weight``) are constants:
no gradient flows to them (``jax.lax.stop_gradient``).  Only first-order
reverse mode: ``jax.jvp`` / ``jax.jacfwd`` / ``jax.hessian`` raise JAX's
custom_vjp error.
"""
from __future__ import annotations

import operator
from functools import partial
from typing import Any, Optional, Sequence, Union

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # pragma: no cover - exercised without jax only
    raise ImportError("lossmle.jax needs JAX: pip install 'lossmle[jax]' "
                      "(or 'jax')") from exc

from ._validation import single_axis
from ._adapters import (
    check_kl_div_reduction, kl_div_grads, kl_div_value, linear_ce_rows_grads,
)
from . import _adapters as _core

__all__ = [
    "cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
    "kl_divergence_from_logits", "kl_div", "logsumexp", "softmax", "log_softmax",
    "linear_cross_entropy",
]

_REDUCTIONS = ("none", "mean", "sum")


# ---------------------------------------------------------------------------
# plumbing
# ---------------------------------------------------------------------------
def _float(x: Any, name: str) -> jax.Array:
    arr = jnp.asarray(x)
    if arr.dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"{name} has dtype {arr.dtype}; lossmle.jax computes in float32 "
                        f"or float64 (float64 needs jax_enable_x64)")
    return arr


def _opt_const(x: Any, name: str, dtype: Any) -> Optional[jax.Array]:
    """A class-weight-like argument: a constant (no gradient flows to it)."""
    if x is None:
        return None
    arr = jnp.asarray(x)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    return jax.lax.stop_gradient(arr.astype(dtype))


def _axis(axis: Any, ndim: int, name: str = "axis") -> int:
    return single_axis(axis, ndim, name)


def _reduction(reduction: Any, allowed: Sequence[str] = _REDUCTIONS) -> str:
    if not isinstance(reduction, str) or reduction not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"reduction must be one of {names}, got {reduction!r}")
    return reduction


def _check_indices(t: jax.Array, n_classes: int, ignore_index: int, what: str) -> None:
    """Out-of-range class indices, when the values are known (not under jit)."""
    if isinstance(t, jax.core.Tracer):
        return
    tn = np.asarray(t)
    bad = ((tn < 0) | (tn >= n_classes)) & (tn != ignore_index)
    if bad.any():
        raise IndexError(f"target contains class index {int(tn[bad].flat[0])}, but {what} "
                         f"{n_classes} classes (valid: 0..{n_classes - 1} or "
                         f"ignore_index={ignore_index})")


def _struct(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)


def _call(fn: Any, result: Any, *args: Any) -> Any:
    """``fn`` on the host, with NumPy views of the arguments (the callback gets
    CPU jax.Arrays; ``np.asarray`` of one is a view, not a copy)."""
    def host(*arrays: Any) -> Any:
        return fn(*(None if a is None else np.asarray(a) for a in arrays))
    return jax.pure_callback(host, result, *args, vmap_method="sequential")


def _out(value: Any, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(value, dtype=dtype).reshape(shape)


def _expand(ct: jax.Array, axis: Optional[int]) -> jax.Array:
    """The cotangent of a per-position loss, broadcast back along the class axis."""
    return ct if axis is None or ct.ndim == 0 else jnp.expand_dims(ct, axis)


def _freeze(opts: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(opts.items()))


# ---------------------------------------------------------------------------
# cross_entropy / nll_loss
# ---------------------------------------------------------------------------
def _class_shapes(x: jax.Array, opts: dict[str, Any]) -> tuple[int, ...]:
    if opts["reduction"] != "none":
        return ()
    ax = opts["axis"]
    return x.shape[:ax] + x.shape[ax + 1:]


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _class_loss(x: jax.Array, t: jax.Array, w: Optional[jax.Array], frozen: tuple) -> jax.Array:
    opts = dict(frozen)
    nll = opts.pop("nll")
    shape = _class_shapes(x, opts)

    def host(x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray]) -> np.ndarray:
        fn = _core.nll if nll else _core.ce
        return _out(fn(x, t, weight=w, **opts), x.dtype, shape)
    return _call(host, _struct(shape, x.dtype), x, t, w)


def _class_fwd(x: jax.Array, t: jax.Array, w: Optional[jax.Array],
               frozen: tuple) -> tuple[jax.Array, Any]:
    opts = dict(frozen)
    nll = opts.pop("nll")
    shape = _class_shapes(x, opts)

    def host(x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray]) -> tuple:
        fn = _core.nll_with_grad if nll else _core.ce_with_grad
        loss, grad = fn(x, t, weight=w, **opts)
        return _out(loss, x.dtype, shape), grad
    loss, grad = _call(host, (_struct(shape, x.dtype), _struct(x.shape, x.dtype)), x, t, w)
    return loss, (grad, x, t, w)


def _class_bwd(frozen: tuple, res: Any, ct: jax.Array) -> tuple:
    grad, x, t, w = res
    opts = dict(frozen)
    ax = opts["axis"] if opts["reduction"] == "none" else None
    gt = None
    if jnp.issubdtype(t.dtype, jnp.floating):
        gt = _prob_target_grad(x, t, w, opts) * _expand(ct, ax)
    return grad * _expand(ct, ax), gt, None


def _prob_target_grad(x: jax.Array, t: jax.Array, w: Optional[jax.Array],
                      opts: dict[str, Any]) -> jax.Array:
    """d loss / d t for probability targets: ``-(1 - eps) w_c log_softmax(x)_c``,
    divided by the number of rows for 'mean'."""
    ax = opts["axis"]
    lsm = _call(lambda x: _core.log_softmax(x, axis=ax), _struct(x.shape, x.dtype), x)
    g = -(1.0 - opts["label_smoothing"]) * lsm
    if w is not None:
        g = g * jnp.reshape(w, (-1,) + (1,) * (x.ndim - ax - 1))
    if opts["reduction"] == "mean":
        g = g / (x.size // x.shape[ax])
    return g.astype(x.dtype)


_class_loss.defvjp(_class_fwd, _class_bwd)


def _class_call(x: Any, target: Any, axis: int, weight: Any, ignore_index: int,
                reduction: str, label_smoothing: float, nll: bool, x_name: str) -> jax.Array:
    x = _float(x, x_name)
    if x.ndim == 0:
        raise ValueError(f"{x_name} must have at least one dimension (the class axis)")
    t = jnp.asarray(target)
    ax = _axis(axis, x.ndim)
    if jnp.issubdtype(t.dtype, jnp.integer):
        if t.shape != x.shape[:ax] + x.shape[ax + 1:]:
            raise ValueError(f"target holds class indices with shape {t.shape}, but "
                             f"{x_name} needs shape {x.shape[:ax] + x.shape[ax + 1:]}")
    elif jnp.issubdtype(t.dtype, jnp.floating) and not nll:
        if t.shape != x.shape:
            raise ValueError(f"target is floating, so it must hold class probabilities "
                             f"shaped like {x_name} {x.shape}; got shape {t.shape}")
        t = t.astype(x.dtype)
    else:
        kind = "integer class indices" if nll else \
            "integer class indices or floating class probabilities"
        raise TypeError(f"target must hold {kind}, got dtype {t.dtype}")
    opts: dict[str, Any] = dict(axis=ax, ignore_index=operator.index(ignore_index),
                reduction=_reduction(reduction), nll=nll)
    if jnp.issubdtype(t.dtype, jnp.integer):
        _check_indices(t, x.shape[ax], opts["ignore_index"], f"{x_name} have")
    if not nll:
        opts["label_smoothing"] = float(label_smoothing)
    return _class_loss(x, t, _opt_const(weight, "weight", x.dtype), _freeze(opts))


def cross_entropy(logits: Any, target: Any, axis: int = -1, *, weight: Any = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> jax.Array:
    """Cross-entropy of logits and a target (torch's semantics), differentiable.

    Parameters
    ----------
    logits : jax.Array, shape (..., C, ...)
        float32 (float64 with x64).
    target : jax.Array
        Integer class indices shaped like ``logits`` without ``axis``, or
        class probabilities shaped like ``logits``.
    axis : int, optional
        The class axis (default -1; 1 is torch's ``(N, C, d1, ...)``).
    weight : array of shape (C,), optional
        Class weights (constant).
    ignore_index : int, optional
        Class-index targets equal to it take no part (default -100).
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' divides by the summed weight of the kept targets.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution.

    Returns
    -------
    jax.Array
        A scalar for 'mean' / 'sum', one loss per position for 'none'.

    Notes
    -----
    As :func:`lossmle.cross_entropy`; its gradient is
    :func:`lossmle.cross_entropy_with_grad`'s (one pass with the value).  For
    probability targets the target's gradient is
    ``-(1 - eps) w log_softmax(logits)`` (scaled by the reduction).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import lossmle.jax as lj
    >>> x = jnp.array([[2.0, 0.0], [0.0, 0.0]])
    >>> round(float(lj.cross_entropy(x, jnp.array([0, 1]))), 5)
    0.41004
    >>> jax.grad(lj.cross_entropy)(jnp.zeros((1, 2)), jnp.array([0])).tolist()
    [[-0.5, 0.5]]
    """
    return _class_call(logits, target, axis, weight, ignore_index, reduction,
                       label_smoothing, False, "logits")


def nll_loss(log_probs: Any, target: Any, axis: int = -1, *, weight: Any = None,
             ignore_index: int = -100, reduction: str = "mean") -> jax.Array:
    """Negative log-likelihood of class indices given log-probabilities, differentiable.

    Parameters
    ----------
    log_probs : jax.Array, shape (..., C, ...)
        Log-probabilities.
    target : jax.Array of int
        Class indices shaped like ``log_probs`` without ``axis``.
    axis, weight, ignore_index, reduction
        As :func:`cross_entropy`.

    Returns
    -------
    jax.Array
        ``-weight[y] * log_probs[y]`` per position, reduced as asked.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import lossmle.jax as lj
    >>> float(lj.nll_loss(jnp.array([[-1.0, -2.0]]), jnp.array([1])))
    2.0
    """
    return _class_call(log_probs, target, axis, weight, ignore_index, reduction, 0.0,
                       True, "log_probs")


# ---------------------------------------------------------------------------
# binary_cross_entropy_with_logits
# ---------------------------------------------------------------------------
@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _bce_loss(x: jax.Array, t: jax.Array, w: Optional[jax.Array], pw: Optional[jax.Array],
              reduction: str) -> jax.Array:
    shape = x.shape if reduction == "none" else ()

    def host(x: np.ndarray, t: np.ndarray, w: Any, pw: Any) -> np.ndarray:
        return _out(_core.bce(x, t, weight=w, pos_weight=pw, reduction=reduction), x.dtype, shape)
    return _call(host, _struct(shape, x.dtype), x, t, w, pw)


def _bce_fwd(x: jax.Array, t: jax.Array, w: Optional[jax.Array], pw: Optional[jax.Array],
             reduction: str) -> tuple[jax.Array, Any]:
    shape = x.shape if reduction == "none" else ()

    def host(x: np.ndarray, t: np.ndarray, w: Any, pw: Any) -> tuple:
        loss, grad = _core.bce_with_grad(x, t, weight=w, pos_weight=pw, reduction=reduction)
        return _out(loss, x.dtype, shape), grad
    loss, grad = _call(host, (_struct(shape, x.dtype), _struct(x.shape, x.dtype)),
                       x, t, w, pw)
    return loss, (grad, x, w, pw)


def _bce_bwd(reduction: str, res: Any, ct: jax.Array) -> tuple:
    grad, x, w, pw = res
    # d loss / d t = w (pw softplus(-x) - softplus(x)), over the mean's count
    gt = jax.nn.softplus(-x) * (1.0 if pw is None else pw) - jax.nn.softplus(x)
    if w is not None:
        gt = gt * w
    if reduction == "mean":
        gt = gt / max(x.size, 1)
    return grad * ct, (gt * ct).astype(x.dtype), None, None


_bce_loss.defvjp(_bce_fwd, _bce_bwd)


def binary_cross_entropy_with_logits(logits: Any, target: Any, *, weight: Any = None,
                                     pos_weight: Any = None,
                                     reduction: str = "mean") -> jax.Array:
    """Binary cross-entropy on logits (torch's semantics), differentiable.

    Parameters
    ----------
    logits : jax.Array
        Log-odds, any shape.
    target : jax.Array
        Targets in [0, 1], the shape of ``logits``.
    weight : array, optional
        Per-element rescaling broadcast to ``logits`` (constant).
    pos_weight : array, optional
        Weight of the positive term broadcast to ``logits`` (constant).
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' divides by the number of elements.

    Returns
    -------
    jax.Array

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import lossmle.jax as lj
    >>> round(float(lj.binary_cross_entropy_with_logits(jnp.zeros(2),
    ...                                                 jnp.array([1.0, 0.0]))), 6)
    0.693147
    """
    x = _float(logits, "logits")
    t = _float(target, "target").astype(x.dtype)
    if t.shape != x.shape:
        raise ValueError(f"target with shape {t.shape} must have the shape of logits "
                         f"{x.shape}")
    w = _opt_const(weight, "weight", x.dtype)
    pw = _opt_const(pos_weight, "pos_weight", x.dtype)
    for a, name in ((w, "weight"), (pw, "pos_weight")):
        if a is not None:
            try:
                np.broadcast_shapes(a.shape, x.shape)
            except ValueError:
                raise ValueError(f"{name} with shape {a.shape} cannot be broadcast to "
                                 f"logits {x.shape}") from None
    return _bce_loss(x, t, w, pw, _reduction(reduction))


# ---------------------------------------------------------------------------
# KL divergence from logits (distillation)
# ---------------------------------------------------------------------------
def _kl_shape(p: jax.Array, opts: dict[str, Any]) -> tuple[int, ...]:
    ax = opts["axis"]
    return p.shape[:ax] + p.shape[ax + 1:] if opts["reduction"] == "none" else ()


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _kl_logits_loss(p: jax.Array, q: jax.Array, frozen: tuple) -> jax.Array:
    opts = dict(frozen)
    shape = _kl_shape(p, opts)

    def host(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return _out(_core.kl_logits(p, q, **opts), p.dtype, shape)
    return _call(host, _struct(shape, p.dtype), p, q)


def _kl_logits_fwd(p: jax.Array, q: jax.Array, frozen: tuple) -> tuple[jax.Array, Any]:
    opts = dict(frozen)
    shape = _kl_shape(p, opts)

    def host(p: np.ndarray, q: np.ndarray) -> tuple:
        loss, gq, gp = _core.kl_logits_with_grad(p, q, p_grad=True, **opts)
        return _out(loss, p.dtype, shape), gq, gp
    g = _struct(p.shape, p.dtype)
    loss, gq, gp = _call(host, (_struct(shape, p.dtype), g, g), p, q)
    return loss, (gq, gp)


def _kl_logits_bwd(frozen: tuple, res: Any, ct: jax.Array) -> tuple:
    gq, gp = res
    opts = dict(frozen)
    c = _expand(ct, opts["axis"] if opts["reduction"] == "none" else None)
    return gp * c, gq * c


_kl_logits_loss.defvjp(_kl_logits_fwd, _kl_logits_bwd)


def kl_divergence_from_logits(p_logits: Any, q_logits: Any, axis: int = -1, *,
                              temperature: float = 1.0,
                              logit_softcap: Optional[float] = None,
                              reduction: str = "batchmean") -> jax.Array:
    """``KL(softmax(p_logits / T) || softmax(q_logits / T))``, differentiable in both.

    Parameters
    ----------
    p_logits, q_logits : jax.Array, same shape and dtype
        Logits of P (e.g. the teacher) and Q (e.g. the student).
    axis : int, optional
        The class axis (default -1).
    temperature : float > 0, optional
        Both logits are divided by it.
    logit_softcap : float > 0, optional
        Logits become ``cap * tanh(x / cap)`` first.
    reduction : {'batchmean', 'sum', 'mean', 'none'}, optional
        As :func:`lossmle.kl_divergence_from_logits` ('batchmean': over the
        positions, every axis but ``axis``).

    Returns
    -------
    jax.Array

    Notes
    -----
    Under :func:`jax.grad` the forward computes both gradients with the
    value (:func:`lossmle.kl_divergence_from_logits_with_grad`, ``p_grad=True``);
    differentiate with respect to the student only and the teacher's is
    simply dropped (one extra output array).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import lossmle.jax as lj
    >>> p = jnp.log(jnp.array([0.5, 0.5])); q = jnp.log(jnp.array([1 / 3, 2 / 3]))
    >>> round(float(lj.kl_divergence_from_logits(p, q)), 6)
    0.058892
    """
    p = _float(p_logits, "p_logits")
    q = _float(q_logits, "q_logits")
    if p.shape != q.shape or p.dtype != q.dtype:
        raise ValueError(f"p_logits ({p.shape}, {p.dtype}) and q_logits ({q.shape}, "
                         f"{q.dtype}) must have the same shape and dtype")
    if p.ndim == 0:
        raise ValueError("p_logits must have at least one dimension (the class axis)")
    opts: dict[str, Any] = dict(axis=_axis(axis, p.ndim), temperature=float(temperature),
                logit_softcap=None if logit_softcap is None else float(logit_softcap),
                reduction=_reduction(reduction, ("none", "batchmean", "sum", "mean")))
    return _kl_logits_loss(p, q, _freeze(opts))


# ---------------------------------------------------------------------------
# kl_div (torch's conventions)
# ---------------------------------------------------------------------------
@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _kl_div_loss(x: jax.Array, t: jax.Array, reduction: str, log_target: bool) -> jax.Array:
    shape = x.shape if reduction == "none" else ()
    return _call(lambda x, t: _out(kl_div_value(x, t, reduction, log_target), x.dtype, shape),
                 _struct(shape, x.dtype), x, t)


def _kl_div_fwd(x: jax.Array, t: jax.Array, reduction: str,
                log_target: bool) -> tuple[jax.Array, Any]:
    return _kl_div_loss(x, t, reduction, log_target), (x, t)


def _kl_div_bwd(reduction: str, log_target: bool, res: Any, ct: jax.Array) -> tuple:
    x, t = res
    g = _struct(x.shape, x.dtype)
    gx, gt = _call(lambda x, t: kl_div_grads(x, t, reduction, log_target, True, True),
                   (g, g), x, t)
    return gx * ct, gt * ct


_kl_div_loss.defvjp(_kl_div_fwd, _kl_div_bwd)


def kl_div(input: Any, target: Any, *, reduction: str = "mean",
           log_target: bool = False) -> jax.Array:
    """KL divergence with torch's ``kl_div`` conventions, differentiable.

    Parameters
    ----------
    input : jax.Array
        Log-probabilities of the model Q.
    target : jax.Array
        Probabilities P (log-probabilities with ``log_target=True``), the
        shape and dtype of ``input``.
    reduction : {'mean', 'batchmean', 'sum', 'none'}, optional
        'batchmean' divides the total by ``input.shape[0]``, 'mean' by the
        number of elements (torch's default).
    log_target : bool, optional
        Whether ``target`` holds log-probabilities.

    Returns
    -------
    jax.Array
        Pointwise ``target * (log(target) - input)`` (0 where ``target`` is
        0), reduced as asked.

    Notes
    -----
    Computed with NumPy for now (it will move onto a lossmle kernel); the
    target's gradient is torch's (``nan`` at ``target == 0`` unless
    ``log_target``).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import lossmle.jax as lj
    >>> q = jnp.log(jnp.array([[1 / 3, 2 / 3]])); p = jnp.array([[0.5, 0.5]])
    >>> round(float(lj.kl_div(q, p, reduction="batchmean")), 6)
    0.058892
    """
    x = _float(input, "input")
    t = _float(target, "target")
    if x.shape != t.shape or x.dtype != t.dtype:
        raise ValueError(f"input ({x.shape}, {x.dtype}) and target ({t.shape}, "
                         f"{t.dtype}) must have the same shape and dtype")
    return _kl_div_loss(x, t, check_kl_div_reduction(reduction), bool(log_target))


# ---------------------------------------------------------------------------
# logsumexp, softmax, log_softmax
# ---------------------------------------------------------------------------
def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = tuple(_axis(a, ndim) for a in axes)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis!r} repeats an axis")
    return out


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _lse(x: jax.Array, axes: tuple[int, ...], keepdims: bool) -> jax.Array:
    shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape) if keepdims or i not in axes)
    return _call(lambda x: _out(_core.logsumexp(x, axis=axes, keepdims=keepdims), x.dtype, shape),
                 _struct(shape, x.dtype), x)


def _lse_fwd(x: jax.Array, axes: tuple[int, ...], keepdims: bool) -> tuple[jax.Array, Any]:
    return _lse(x, axes, keepdims), x


def _lse_bwd(axes: tuple[int, ...], keepdims: bool, x: jax.Array, ct: jax.Array) -> tuple:
    sm = _call(lambda x: _core.softmax(x, axis=axes), _struct(x.shape, x.dtype), x)
    if not keepdims:
        ct = jnp.expand_dims(ct, axes)
    return (sm * ct,)


_lse.defvjp(_lse_fwd, _lse_bwd)


def logsumexp(a: Any, axis: Union[None, int, Sequence[int]] = None,
              keepdims: bool = False) -> jax.Array:
    """``log(sum(exp(a)))`` over ``axis``, as :func:`jax.nn.logsumexp` (no ``b`` / ``where``).

    Parameters
    ----------
    a : jax.Array
        float32 (float64 with x64).
    axis : None, int or tuple of ints, optional
        Axes to reduce (default: all).
    keepdims : bool, optional
        Keep the reduced axes with size one.

    Returns
    -------
    jax.Array
        Its gradient is ``softmax(a)`` over ``axis`` times the cotangent.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import lossmle.jax as lj
    >>> round(float(lj.logsumexp(jnp.arange(10.0))), 4)
    9.4586
    """
    x = _float(a, "a")
    if x.ndim == 0:
        return x + 0
    return _lse(x, _axes(axis, x.ndim), bool(keepdims))


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _softmax_fn(x: jax.Array, axis: int, log: bool) -> jax.Array:
    fn = _core.log_softmax if log else _core.softmax
    return _call(lambda x: fn(x, axis=axis), _struct(x.shape, x.dtype), x)


def _softmax_fwd(x: jax.Array, axis: int, log: bool) -> tuple[jax.Array, Any]:
    y = _softmax_fn(x, axis, log)
    return y, y


def _softmax_bwd(axis: int, log: bool, y: jax.Array, ct: jax.Array) -> tuple:
    back = _core.log_softmax_backward if log else _core.softmax_backward
    return (_call(lambda g, y: back(g, y, axis=axis), _struct(y.shape, y.dtype), ct, y),)


_softmax_fn.defvjp(_softmax_fwd, _softmax_bwd)


def _softmax_call(x: Any, axis: int, log: bool) -> jax.Array:
    x = _float(x, "x")
    if x.ndim == 0:
        return jnp.zeros_like(x) + 0 * x if log else jnp.ones_like(x) + 0 * x
    return _softmax_fn(x, _axis(axis, x.ndim), log)


def softmax(x: Any, axis: int = -1) -> jax.Array:
    """Softmax along ``axis``, as :func:`jax.nn.softmax` (one axis, no ``where``).

    Parameters
    ----------
    x : jax.Array
        float32 (float64 with x64).
    axis : int, optional
        The axis that sums to one (default -1).

    Returns
    -------
    jax.Array
        Its backward is :func:`lossmle.softmax_backward`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import lossmle.jax as lj
    >>> lj.softmax(jnp.zeros(2)).tolist()
    [0.5, 0.5]
    """
    return _softmax_call(x, axis, False)


def log_softmax(x: Any, axis: int = -1) -> jax.Array:
    """Log-softmax along ``axis``, as :func:`jax.nn.log_softmax` (one axis, no ``where``).

    Parameters
    ----------
    x : jax.Array
        float32 (float64 with x64).
    axis : int, optional
        The axis to normalise over (default -1).

    Returns
    -------
    jax.Array
        Its backward is :func:`lossmle.log_softmax_backward`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import lossmle.jax as lj
    >>> lj.log_softmax(jnp.zeros(1)).tolist()
    [0.0]
    """
    return _softmax_call(x, axis, True)


# ---------------------------------------------------------------------------
# linear_cross_entropy
# ---------------------------------------------------------------------------
@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _lce_loss(h: jax.Array, w: jax.Array, b: Optional[jax.Array], t: jax.Array,
              frozen: tuple) -> jax.Array:
    opts = dict(frozen)
    shape = h.shape[:-1] if opts["reduction"] == "none" else ()
    return _call(lambda h, w, b, t: _out(_core.lce(h, w, t, bias=b, **opts), h.dtype, shape),
                 _struct(shape, h.dtype), h, w, b, t)


def _lce_fwd(h: jax.Array, w: jax.Array, b: Optional[jax.Array], t: jax.Array,
             frozen: tuple) -> tuple[jax.Array, Any]:
    opts = dict(frozen)
    if opts["reduction"] == "none":   # per-row cotangents: the backward makes its pass
        loss = _lce_loss(h, w, b, t, frozen)
        return loss, (h, w, b, t, loss)
    structs = (_struct((), h.dtype), _struct(h.shape, h.dtype), _struct(w.shape, w.dtype),
               None if b is None else _struct(b.shape, b.dtype))

    def host(h: np.ndarray, w: np.ndarray, b: Any, t: np.ndarray) -> tuple:
        loss, gh, gw, gb = _core.lce_with_grad(h, w, t, bias=b, **opts)
        return _out(loss, h.dtype, ()), gh, gw, gb
    loss, gh, gw, gb = _call(host, structs, h, w, b, t)
    return loss, (gh, gw, gb)


def _lce_bwd(frozen: tuple, res: Any, ct: jax.Array) -> tuple:
    opts = dict(frozen)
    if opts["reduction"] != "none":
        gh, gw, gb = res
        return gh * ct, gw * ct, None if gb is None else gb * ct, None
    h, w, b, t, loss = res
    structs = (_struct(h.shape, h.dtype), _struct(w.shape, w.dtype),
               None if b is None else _struct(b.shape, b.dtype))

    def host(h: np.ndarray, w: np.ndarray, b: Any, t: np.ndarray, loss: np.ndarray,
             ct: np.ndarray) -> tuple:
        gh, gw, gb = linear_ce_rows_grads(h, w, b, t, loss, ct, opts["ignore_index"],
                                          opts["chunk_size"], (True, True, True))
        return gh, gw, gb
    gh, gw, gb = _call(host, structs, h, w, b, t, loss, ct)
    return gh, gw, gb, None


_lce_loss.defvjp(_lce_fwd, _lce_bwd)


def linear_cross_entropy(hidden: Any, weight: Any, target: Any, *, bias: Any = None,
                         ignore_index: int = -100, reduction: str = "mean",
                         chunk_size: Optional[int] = None) -> jax.Array:
    """Cross-entropy of ``hidden @ weight.T + bias`` without the N x V logits, differentiable.

    Parameters
    ----------
    hidden : jax.Array, shape (..., d)
        Inputs of the linear layer.
    weight : jax.Array, shape (V, d)
        The layer's weight, one row per class.
    target : jax.Array of int, shape (...)
        Class indices.
    bias : jax.Array of shape (V,), optional
        The layer's bias.
    ignore_index : int, optional
        Targets equal to it take no part (default -100).
    reduction : {'mean', 'sum', 'none'}, optional
        'mean' divides by the number of kept targets.
    chunk_size : int, optional
        Classes per block (see :func:`lossmle.linear_cross_entropy`).

    Returns
    -------
    jax.Array
        Gradients flow to ``hidden``, ``weight`` and ``bias``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import lossmle.jax as lj
    >>> loss = lj.linear_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((4, 3)), jnp.array([0, 1]))
    >>> round(float(loss), 6)
    1.386294
    """
    h = _float(hidden, "hidden")
    w = _float(weight, "weight")
    if h.ndim < 1 or w.ndim != 2 or w.shape[1] != h.shape[-1] or w.dtype != h.dtype:
        raise ValueError(f"hidden (..., d) and weight (V, d) must agree in d and dtype; "
                         f"got {h.shape} {h.dtype} and {w.shape} {w.dtype}")
    b = None if bias is None else _float(bias, "bias")
    if b is not None and (b.shape != (w.shape[0],) or b.dtype != h.dtype):
        raise ValueError(f"bias must have shape ({w.shape[0]},) and dtype {h.dtype}, got "
                         f"{b.shape} {b.dtype}")
    t = jnp.asarray(target)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != h.shape[:-1]:
        raise ValueError(f"target has shape {t.shape}, but hidden of shape {h.shape} "
                         f"needs {h.shape[:-1]}")
    opts: dict[str, Any] = dict(ignore_index=operator.index(ignore_index), reduction=_reduction(reduction),
                chunk_size=None if chunk_size is None else operator.index(chunk_size))
    _check_indices(t, w.shape[0], opts["ignore_index"], "weight has")
    return _lce_loss(h, w, b, t, _freeze(opts))
