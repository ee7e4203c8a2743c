"""torch's own sample inputs for the losses lossmle mirrors, run against lossmle.

Every OpInfo ``sample_inputs`` and ``reference_inputs`` sample of torch's
cross_entropy, nll_loss, binary_cross_entropy_with_logits, softmax,
log_softmax, logsumexp and kl_div (float64 and float32), and the ModuleInfo
samples of the matching modules, is run through torch and through lossmle
(the numpy arrays of the same values); values, and the gradient with respect
to the input where lossmle has a ``_with_grad``, must agree.  A sample torch
itself rejects is skipped; one lossmle rejects or answers differently must be
listed in ``deviations.TORCH_DEVIATIONS``.
"""
import fnmatch
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")   # torch's testing internals need it

import lossmle as lm  # noqa: E402

from deviations import TORCH_DEVIATIONS  # noqa: E402

F = torch.nn.functional

OPS = ["nn.functional.cross_entropy", "nn.functional.nll_loss",
       "nn.functional.binary_cross_entropy_with_logits", "softmax", "log_softmax",
       "logsumexp", "nn.functional.kl_div"]
MODULES = {"CrossEntropyLoss": "nn.functional.cross_entropy",
           "NLLLoss": "nn.functional.nll_loss",
           "BCEWithLogitsLoss": "nn.functional.binary_cross_entropy_with_logits",
           "Softmax": "softmax", "LogSoftmax": "log_softmax", "KLDivLoss": "nn.functional.kl_div"}
DTYPES = {"f64": torch.float64, "f32": torch.float32}


def np_(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t


def _reduction(kw):
    """torch's legacy size_average / reduce pair folded into reduction."""
    size_average = kw.pop("size_average", None)
    reduce = kw.pop("reduce", None)
    if size_average is None and reduce is None:
        return kw.pop("reduction", "mean")
    kw.pop("reduction", None)
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


def _class_axis(x):
    return 1 if x.ndim >= 2 else 0


def lossmle_call(op, x, args, kwargs):
    """lossmle's (value, d value.sum() / d x or None) for a torch sample."""
    kw = dict(kwargs)
    xn = np_(x)
    if op in ("nn.functional.cross_entropy", "nn.functional.nll_loss"):
        target = np_(args[0]) if args else np_(kw.pop("target"))
        args = args[1:]
        weight = np_(args[0]) if args else np_(kw.pop("weight", None))
        reduction = _reduction(kw)
        common = dict(axis=_class_axis(xn), weight=weight,
                      ignore_index=kw.pop("ignore_index", -100), reduction=reduction)
        if op == "nn.functional.cross_entropy":
            return lm.cross_entropy_with_grad(xn, target, **common,
                                              label_smoothing=kw.pop("label_smoothing", 0.0))
        if target.dtype.kind == "f":
            raise NotImplementedError("nll_loss takes class indices")
        return lm.nll_loss_with_grad(xn, target, **common)
    if op == "nn.functional.binary_cross_entropy_with_logits":
        target = np_(args[0]) if args else np_(kw.pop("target"))
        weight = np_(args[1]) if len(args) > 1 else np_(kw.pop("weight", None))
        reduction = _reduction(kw)
        return lm.binary_cross_entropy_with_logits_with_grad(
            xn, target, weight=weight, pos_weight=np_(kw.pop("pos_weight", None)),
            reduction=reduction)
    if op in ("softmax", "log_softmax"):
        dim = args[0] if args else kw.pop("dim")
        dtype = kw.pop("dtype", None)
        if dtype is not None:
            xn = xn.astype(np_(torch.empty(0, dtype=dtype)).dtype)
        fn = lm.softmax if op == "softmax" else lm.log_softmax
        if xn.ndim == 0:
            return fn(xn.reshape(1), axis=0).reshape(()), None
        return fn(xn, axis=dim), None
    if op == "logsumexp":
        dim = args[0] if args else kw.pop("dim")
        keepdim = args[1] if len(args) > 1 else kw.pop("keepdim", False)
        dim = tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
        if xn.ndim == 0:
            return lm.logsumexp(xn, axis=None, keepdims=False), None
        return lm.logsumexp(xn, axis=dim, keepdims=keepdim), None
    if op == "nn.functional.kl_div":
        target = np_(args[0]) if args else np_(kw.pop("target"))
        reduction = _reduction(kw)
        return lm.kl_div_with_grad(xn, target, reduction=reduction,
                                   log_target=kw.pop("log_target", False))
    raise AssertionError(op)


def torch_call(op, x, args, kwargs):
    """torch's value and d value.sum() / d x (None where lossmle has no gradient)."""
    x = x.detach().clone().requires_grad_(op not in ("softmax", "log_softmax", "logsumexp"))
    fn = {"nn.functional.cross_entropy": F.cross_entropy,
          "nn.functional.nll_loss": F.nll_loss,
          "nn.functional.binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits,
          "softmax": F.softmax, "log_softmax": F.log_softmax, "logsumexp": torch.logsumexp,
          "nn.functional.kl_div": F.kl_div}[op]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch's deprecation notes ('mean' kl_div, ...)
        y = fn(x, *args, **kwargs)
        if not x.requires_grad:
            return y.detach().numpy(), None
        (g,) = torch.autograd.grad(y.sum(), x, allow_unused=True)
    return y.detach().numpy(), (np.zeros(x.shape, x.detach().numpy().dtype) if g is None
                                else g.numpy())


def _samples():
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.testing._internal.common_modules import module_db
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for op in op_db:
            if op.name not in OPS:
                continue
            for dname, dtype in DTYPES.items():
                for kind, gen in (("sample", op.sample_inputs),
                                  ("reference", op.reference_inputs)):
                    for i, s in enumerate(gen("cpu", dtype, requires_grad=False)):
                        name = f"{op.name}{'.' + op.variant_test_name if op.variant_test_name else ''}" \
                               f"-{kind}{i}-{dname}"
                        out.append((name, op.name, s.input, tuple(s.args), dict(s.kwargs)))
        for mi in module_db:
            mname = mi.module_cls.__name__
            if mname not in MODULES:
                continue
            for dname, dtype in DTYPES.items():
                for i, m in enumerate(mi.module_inputs_func(mi, device="cpu", dtype=dtype,
                                                            requires_grad=False,
                                                            training=True)):
                    if m.forward_input is None:
                        continue
                    ctor = m.constructor_input
                    fa, fk = list(m.forward_input.args), dict(m.forward_input.kwargs)
                    kw = dict(ctor.kwargs)
                    if ctor.args:
                        continue   # positional constructor arguments: not mapped
                    if "dim" in kw or mname in ("Softmax", "LogSoftmax"):
                        args = (kw.pop("dim", None),)
                        if args[0] is None:
                            continue  # torch's implicit dim choice (deprecated)
                    else:
                        args = tuple(fa[1:])
                    kw.update(fk)
                    out.append((f"module.{mname}-{i}-{dname}", MODULES[mname], fa[0], args, kw))
    return out


try:
    SAMPLES = _samples()
except Exception as exc:  # torch's internals moved: say so rather than pass silently
    SAMPLES = [("collection-error", repr(exc), None, (), {})]


def deviation(name):
    return next((r for pat, r in TORCH_DEVIATIONS.items() if fnmatch.fnmatchcase(name, pat)),
                None)


def _compare(name, op, x, args, kwargs):
    try:
        e_val, e_grad = torch_call(op, x, args, kwargs)
    except Exception:
        return None        # torch rejects the sample: not a conformance case
    with np.errstate(all="ignore"):
        got_val, got_grad = lossmle_call(op, x, args, kwargs)
    dtype = np.asarray(e_val).dtype
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    atol = 1e-13 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(np.asarray(got_val, dtype=np.float64),
                               np.asarray(e_val, dtype=np.float64), rtol=rtol, atol=atol,
                               err_msg=f"{name}: value")
    assert np.asarray(got_val).shape == np.asarray(e_val).shape, name
    if got_grad is not None and e_grad is not None:
        np.testing.assert_allclose(np.asarray(got_grad, dtype=np.float64),
                                   e_grad.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"{name}: gradient")
    return True


@pytest.mark.parametrize("name,op,x,args,kwargs", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_torch_sample(name, op, x, args, kwargs):
    assert x is not None, f"torch's OpInfo / ModuleInfo samples could not be collected: {op}"
    reason = deviation(name)
    if reason is None:
        if _compare(name, op, x, args, kwargs) is None:
            pytest.skip("torch rejects this sample")
        return
    # a listed deviation must still deviate (the list stays exact)
    try:
        ok = _compare(name, op, x, args, kwargs)
    except (AssertionError, ValueError, TypeError, NotImplementedError, IndexError):
        pytest.skip(f"documented deviation: {reason}")
    raise AssertionError(f"{name} is listed as a deviation ({reason}) but "
                         f"{'passes' if ok else 'is rejected by torch'}: remove it")


def test_layer_really_calls_lossmle(monkeypatch):
    """A lossmle whose functions are off fails the samples."""
    picked = [s for s in SAMPLES if s[1] == "nn.functional.cross_entropy"][:3] \
        + [s for s in SAMPLES if s[1] == "nn.functional.kl_div"][:3]
    assert picked

    def off(f):
        def wrong(*a, **k):
            v, g = f(*a, **k)
            return v + 1e-3, g
        return wrong
    monkeypatch.setattr(lm, "cross_entropy_with_grad", off(lm.cross_entropy_with_grad))
    monkeypatch.setattr(lm, "kl_div_with_grad", off(lm.kl_div_with_grad))
    for name, op, x, args, kwargs in picked:
        with pytest.raises(AssertionError):
            _compare(name, op, x, args, kwargs)
