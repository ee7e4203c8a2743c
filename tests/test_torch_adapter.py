"""lossmle.torch: torch.autograd.Functions over lossmle's kernels.

Oracle: torch's own functions (torch.nn.functional, torch.logsumexp) on the
same tensors, forward and backward, with a non-trivial upstream gradient;
torch.autograd.gradcheck (float64, finite differences) for every adapter.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
lt = pytest.importorskip("lossmle.torch")

from oracles import torch_kl_div_from_logits as _kl_logits_ref  # noqa: E402
from oracles import torch_linear_cross_entropy as _linear_ce_ref  # noqa: E402

DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-11,
                                                                          atol=1e-13)


def _close(a, b, dtype, equal_nan=False):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), equal_nan=equal_nan,
                               **_tol(dtype))


def _both(fn_ours, fn_ref, inputs, upstream=None):
    """Forward and backward of both implementations on clones of ``inputs``;
    the loss is multiplied by ``upstream`` (scalar or per-position) before
    the backward, so the incoming gradient is not 1."""
    results = []
    for fn in (fn_ours, fn_ref):
        leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
        out = fn(*leaves)
        up = upstream if upstream is not None else torch.full_like(out, 3.0)
        (out * up).sum().backward()
        results.append((out, [x.grad for x in leaves]))
    return results


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------
# cross_entropy
# ---------------------------------------------------------------------------
CE_SHAPES = [(5,), (6, 4), (3, 5, 2), (2, 3, 2, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("variant", ["plain", "weight", "smooth", "ignore", "prob",
                                     "prob-weight-smooth"])
def test_cross_entropy_matches_torch(dtype, shape, reduction, variant):
    g = _gen(1)
    x = torch.randn(shape, generator=g, dtype=dtype) * 3
    c = shape[0] if len(shape) == 1 else shape[1]
    tshape = () if len(shape) == 1 else shape[:1] + shape[2:]
    if variant.startswith("prob"):
        target = torch.softmax(torch.randn(shape, generator=g, dtype=dtype), 0 if len(shape) == 1 else 1)
    else:
        target = torch.randint(0, c, tshape, generator=g)
        if variant == "ignore" and target.ndim:
            target.view(-1)[0] = -100
    kw = dict(reduction=reduction)
    if "weight" in variant:
        kw["weight"] = torch.rand(c, generator=g, dtype=dtype) + 0.5
    if "smooth" in variant:
        kw["label_smoothing"] = 0.2
    up = None
    if reduction == "none":
        up = torch.randn(tshape, generator=g, dtype=dtype)
    (o1, (g1,)), (o2, (g2,)) = _both(lambda z: lt.cross_entropy(z, target, **kw),
                                     lambda z: F.cross_entropy(z, target, **kw), [x], up)
    assert o1.dtype == dtype and o1.shape == o2.shape
    _close(o1, o2, dtype)
    _close(g1, g2, dtype)


def test_cross_entropy_module_and_legacy_arguments():
    g = _gen(2)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (7,), generator=g)
    w = torch.rand(5, generator=g, dtype=torch.float64)
    ours = lt.CrossEntropyLoss(weight=w, label_smoothing=0.1, ignore_index=2)
    ref = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1, ignore_index=2)
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    _close(ours(x, t), ref(x, t), torch.float64)
    with pytest.warns(UserWarning, match="size_average and reduce"):
        legacy = lt.cross_entropy(x, t, reduce=False)
    assert legacy.shape == (7,)


# ---------------------------------------------------------------------------
# nll_loss, binary_cross_entropy_with_logits
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)], ids=lambda s: "x".join(map(str, s)))
def test_nll_loss_matches_torch(dtype, reduction, shape):
    g = _gen(3)
    x = torch.log_softmax(torch.randn(shape, generator=g, dtype=dtype), 1)
    t = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
    t.view(-1)[1] = -100
    w = torch.rand(shape[1], generator=g, dtype=dtype) + 0.1
    up = torch.randn(t.shape, generator=g, dtype=dtype) if reduction == "none" else None
    kw = dict(weight=w, reduction=reduction)
    (o1, (g1,)), (o2, (g2,)) = _both(lambda z: lt.nll_loss(z, t, **kw),
                                     lambda z: F.nll_loss(z, t, **kw), [x], up)
    _close(o1, o2, dtype)
    _close(g1, g2, dtype)
    _close(lt.NLLLoss(weight=w, reduction=reduction)(x, t), o2, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", ["none", "weight", "pos_weight", "both"])
def test_bce_with_logits_matches_torch(dtype, reduction, weights):
    g = _gen(4)
    x = torch.randn(5, 3, generator=g, dtype=dtype) * 4
    t = torch.rand(5, 3, generator=g, dtype=dtype)
    kw = dict(reduction=reduction)
    if weights in ("weight", "both"):
        kw["weight"] = torch.rand(5, 1, generator=g, dtype=dtype)
    if weights in ("pos_weight", "both"):
        kw["pos_weight"] = torch.rand(3, generator=g, dtype=dtype) * 3
    up = torch.randn(5, 3, generator=g, dtype=dtype) if reduction == "none" else None
    (o1, (g1,)), (o2, (g2,)) = _both(
        lambda z: lt.binary_cross_entropy_with_logits(z, t, **kw),
        lambda z: F.binary_cross_entropy_with_logits(z, t, **kw), [x], up)
    _close(o1, o2, dtype)
    _close(g1, g2, dtype)
    mod = lt.BCEWithLogitsLoss(weight=kw.get("weight"), pos_weight=kw.get("pos_weight"),
                               reduction=reduction)
    _close(mod(x, t), o2, dtype)


# ---------------------------------------------------------------------------
# KL divergences
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
@pytest.mark.parametrize("dim,shape", [(-1, (4, 6)), (1, (2, 5, 3))], ids=["last", "middle"])
def test_kl_divergence_from_logits_matches_torch(dtype, reduction, dim, shape):
    g = _gen(5)
    p = torch.randn(shape, generator=g, dtype=dtype) * 2
    q = torch.randn(shape, generator=g, dtype=dtype) * 2
    kw = dict(dim=dim, temperature=2.0, reduction=reduction)
    tshape = _kl_logits_ref(p, q, **kw).shape
    up = torch.randn(tshape, generator=g, dtype=dtype) if reduction == "none" else None
    (o1, g1), (o2, g2) = _both(lambda a, b: lt.kl_divergence_from_logits(a, b, **kw),
                               lambda a, b: _kl_logits_ref(a, b, **kw), [p, q], up)
    _close(o1, o2, dtype)
    for a, b in zip(g1, g2):
        _close(a, b, dtype)


def test_kl_divergence_from_logits_student_only():
    g = _gen(6)
    p = torch.randn(3, 4, generator=g, dtype=torch.float64)
    q = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    lt.kl_divergence_from_logits(p, q).backward()
    q2 = q.detach().clone().requires_grad_(True)
    _kl_logits_ref(p, q2).backward()
    _close(q.grad, q2.grad, torch.float64)
    assert p.grad is None
    loss = lt.KLDivergenceFromLogitsLoss(temperature=3.0)(p, q)
    _close(loss, _kl_logits_ref(p, q, temperature=3.0), torch.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none", "mean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(dtype, reduction, log_target):
    g = _gen(7)
    x = torch.log_softmax(torch.randn(4, 5, generator=g, dtype=dtype), 1)
    t = torch.softmax(torch.randn(4, 5, generator=g, dtype=dtype), 1)
    if log_target:
        t = t.log()
    else:
        t[0, 0] = 0.0   # 0 log 0 = 0; torch's target gradient is nan there
    up = torch.randn(4, 5, generator=g, dtype=dtype) if reduction == "none" else None
    kw = dict(reduction=reduction, log_target=log_target)
    if reduction == "mean":
        with pytest.warns(UserWarning, match="batchmean"):
            res = _both(lambda a, b: lt.kl_div(a, b, **kw), lambda a, b: F.kl_div(a, b, **kw),
                        [x, t], up)
    else:
        res = _both(lambda a, b: lt.kl_div(a, b, **kw), lambda a, b: F.kl_div(a, b, **kw),
                    [x, t], up)
    (o1, g1), (o2, g2) = res
    _close(o1, o2, dtype)
    for a, b in zip(g1, g2):
        _close(a, b, dtype, equal_nan=True)
    if not log_target:
        assert torch.isnan(g1[1][0, 0])


# ---------------------------------------------------------------------------
# logsumexp, softmax, log_softmax
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("dim", [0, -1, 1, (0, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_logsumexp_matches_torch(dtype, dim, keepdim):
    x = torch.randn(3, 4, 5, generator=_gen(8), dtype=dtype) * 5
    up = torch.randn(torch.logsumexp(x, dim, keepdim).shape, generator=_gen(9), dtype=dtype)
    (o1, (g1,)), (o2, (g2,)) = _both(lambda z: lt.logsumexp(z, dim, keepdim),
                                     lambda z: torch.logsumexp(z, dim, keepdim), [x], up)
    _close(o1, o2, dtype)
    _close(g1, g2, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_matches_torch(dtype, dim, name):
    x = torch.randn(3, 4, 5, generator=_gen(10), dtype=dtype) * 4
    up = torch.randn(3, 4, 5, generator=_gen(11), dtype=dtype)
    (o1, (g1,)), (o2, (g2,)) = _both(lambda z: getattr(lt, name)(z, dim),
                                     lambda z: getattr(F, name)(z, dim), [x], up)
    _close(o1, o2, dtype)
    _close(g1, g2, dtype)
    mod = {"softmax": lt.Softmax, "log_softmax": lt.LogSoftmax}[name](dim=dim)
    _close(mod(x), o2, dtype)


def test_softmax_dtype_argument_and_implicit_dim():
    x = torch.randn(2, 3, generator=_gen(12))
    out = lt.softmax(x, 1, dtype=torch.float64)
    assert out.dtype == torch.float64
    _close(out, F.softmax(x, 1, dtype=torch.float64), torch.float64)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        implicit = lt.log_softmax(x)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        _close(implicit, F.log_softmax(x), torch.float32)


# ---------------------------------------------------------------------------
# linear_cross_entropy
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("hshape", [(7, 5), (2, 3, 5)], ids=["2d", "3d"])
def test_linear_cross_entropy_matches_torch(dtype, reduction, bias, hshape):
    g = _gen(13)
    v = 11
    h = torch.randn(hshape, generator=g, dtype=dtype)
    w = torch.randn(v, hshape[-1], generator=g, dtype=dtype)
    t = torch.randint(0, v, hshape[:-1], generator=g)
    t.view(-1)[0] = -100
    inputs = [h, w] + ([torch.randn(v, generator=g, dtype=dtype)] if bias else [])
    up = torch.randn(t.shape, generator=g, dtype=dtype) if reduction == "none" else None
    (o1, g1), (o2, g2) = _both(
        lambda a, b, *c: lt.linear_cross_entropy(a, b, t, linear_bias=c[0] if c else None,
                                                 reduction=reduction, chunk_size=4),
        lambda a, b, *c: _linear_ce_ref(a, b, t, c[0] if c else None, reduction),
        inputs, up)
    _close(o1, o2, dtype)
    for a, b in zip(g1, g2):
        _close(a, b, dtype)


def test_linear_cross_entropy_equals_torchs_own():
    g = _gen(14)
    h = torch.randn(6, 4, generator=g, dtype=torch.float64)
    w = torch.randn(9, 4, generator=g, dtype=torch.float64)
    b = torch.randn(9, generator=g, dtype=torch.float64)
    t = torch.randint(0, 9, (6,), generator=g)
    _close(lt.linear_cross_entropy(h, w, t, linear_bias=b),
           F.linear_cross_entropy(h, w, t, linear_bias=b) if hasattr(F, "linear_cross_entropy")
           else _linear_ce_ref(h, w, t, b), torch.float64)
    with pytest.raises(ValueError, match="label_smoothing"):
        lt.linear_cross_entropy(h, w, t, label_smoothing=0.1)
    with pytest.raises(ValueError, match="class weights"):
        lt.linear_cross_entropy(h, w, t, weight=torch.ones(9, dtype=torch.float64))


# ---------------------------------------------------------------------------
# gradcheck (float64 finite differences) for every adapter
# ---------------------------------------------------------------------------
def _leaf(*shape, seed=0, scale=1.0):
    return (torch.randn(*shape, generator=_gen(seed), dtype=torch.float64) * scale
            ).requires_grad_(True)


GRADCHECKS = {
    "cross_entropy": lambda: (lambda x: lt.cross_entropy(
        x, torch.tensor([0, 2, 1]), weight=torch.tensor([1.0, 2.0, 0.5, 1.0],
                                                         dtype=torch.float64),
        label_smoothing=0.1), [_leaf(3, 4)]),
    "cross_entropy_none_nd": lambda: (lambda x: lt.cross_entropy(
        x, torch.tensor([[0, 2], [1, 0]]), reduction="none"), [_leaf(2, 3, 2)]),
    "cross_entropy_prob": lambda: (lambda x: lt.cross_entropy(
        x, torch.softmax(torch.randn(3, 4, generator=_gen(1), dtype=torch.float64), 1)),
        [_leaf(3, 4)]),
    "nll_loss": lambda: (lambda x: lt.nll_loss(x, torch.tensor([0, 3, 1]), reduction="sum"),
                         [_leaf(3, 4)]),
    "bce": lambda: (lambda x: lt.binary_cross_entropy_with_logits(
        x, torch.rand(3, 4, generator=_gen(2), dtype=torch.float64),
        pos_weight=torch.full((4,), 2.0, dtype=torch.float64), reduction="none"),
        [_leaf(3, 4)]),
    "kl_logits": lambda: (lambda p, q: lt.kl_divergence_from_logits(p, q, temperature=1.5),
                          [_leaf(3, 4, seed=1), _leaf(3, 4, seed=2)]),
    "kl_div": lambda: (lambda x, t: lt.kl_div(x, t, reduction="batchmean"),
                       [_leaf(3, 4), (torch.rand(3, 4, generator=_gen(3),
                                                 dtype=torch.float64) + 0.1).requires_grad_()]),
    "kl_div_log_target": lambda: (lambda x, t: lt.kl_div(x, t, reduction="sum",
                                                         log_target=True),
                                  [_leaf(3, 4), _leaf(3, 4, seed=4)]),
    "logsumexp": lambda: (lambda x: lt.logsumexp(x, (0, 2)), [_leaf(2, 3, 4)]),
    "softmax": lambda: (lambda x: lt.softmax(x, 1), [_leaf(2, 3, 4)]),
    "log_softmax": lambda: (lambda x: lt.log_softmax(x, 0), [_leaf(2, 3)]),
    "linear_ce": lambda: (lambda h, w, b: lt.linear_cross_entropy(
        h, w, torch.tensor([0, 4, -100, 2]), linear_bias=b, chunk_size=2),
        [_leaf(4, 3), _leaf(5, 3, seed=1), _leaf(5, seed=2)]),
    "linear_ce_none": lambda: (lambda h, w: lt.linear_cross_entropy(
        h, w, torch.tensor([0, 4, -100, 2]), reduction="none", chunk_size=3),
        [_leaf(4, 3), _leaf(5, 3, seed=1)]),
}


@pytest.mark.parametrize("name", sorted(GRADCHECKS))
def test_gradcheck(name):
    fn, inputs = GRADCHECKS[name]()
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------
# autograd contract
# ---------------------------------------------------------------------------
def test_no_grad_and_inference_mode_record_nothing():
    x = _leaf(4, 3)
    t = torch.tensor([0, 1, 2, 0])
    ref = F.cross_entropy(x, t)
    with torch.no_grad():
        a = lt.cross_entropy(x, t)
    with torch.inference_mode():
        b = lt.cross_entropy(x, t)
        c = lt.softmax(x, 1)
    assert a.grad_fn is None and not a.requires_grad
    assert b.grad_fn is None and c.grad_fn is None
    _close(a, ref, torch.float64)
    _close(b, ref, torch.float64)
    d = lt.cross_entropy(x.detach(), t)
    assert d.grad_fn is None


def test_inputs_are_read_without_a_copy(monkeypatch):
    seen = {}

    def spy(x, t, **kw):
        seen["x"], seen["t"] = x, t
        return np.float64(0.0)
    monkeypatch.setattr(lt._core, "ce", spy)
    x = torch.randn(8, 4, dtype=torch.float64)[::2]   # a strided view
    t = torch.tensor([0, 1, 2, 3])
    lt.cross_entropy(x, t)
    assert np.shares_memory(seen["x"], x.numpy()) and np.shares_memory(seen["t"], t.numpy())


def test_output_is_not_copied():
    x = torch.randn(3, 4, dtype=torch.float64)
    out = lt.softmax(x, 1)
    assert out.is_contiguous() and out.dtype == torch.float64


def test_double_backward_raises():
    x = _leaf(3, 4)
    loss = lt.cross_entropy(x, torch.tensor([0, 1, 2]))
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(lt.softmax(x, 1).sum(), x, create_graph=True)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_retain_graph_backward_twice(reduction):
    x = _leaf(3, 4)
    loss = lt.cross_entropy(x, torch.tensor([0, 1, 2]), reduction=reduction).sum() * 2
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    x2 = x.detach().clone().requires_grad_(True)
    (F.cross_entropy(x2, torch.tensor([0, 1, 2]), reduction=reduction).sum() * 2).backward()
    _close(first, x2.grad, torch.float64)
    _close(x.grad, 2 * x2.grad, torch.float64)


def test_gradient_through_a_network_accumulates():
    g = _gen(20)
    lin = torch.nn.Linear(5, 3).double()
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 2, 1, 1])
    lt.cross_entropy(lin(x), t).backward()
    ours = lin.weight.grad.clone()
    lin.zero_grad()
    F.cross_entropy(lin(x), t).backward()
    _close(ours, lin.weight.grad, torch.float64)


# dynamo itself reads .grad of the non-leaf it resumes with after the graph
# break (torch's warning, which it means to hide; pytest's "error" filter sees it)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_graph_break_same_answer(backend):
    g = _gen(21)
    x0 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (6,), generator=g)

    def step(fn, x):
        return fn(torch.tanh(x) * 2, t) * 3

    compiled = torch.compile(lambda x: step(lt.cross_entropy, x), backend=backend)
    x1 = x0.clone().requires_grad_(True)
    x2 = x0.clone().requires_grad_(True)
    a = compiled(x1)
    b = step(F.cross_entropy, x2)
    a.backward()
    b.backward()
    _close(a, b, torch.float64)
    _close(x1.grad, x2.grad, torch.float64)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_non_cpu_tensor_is_rejected():
    x = torch.empty(3, 4, device="meta")
    with pytest.raises(ValueError, match="input is on device meta"):
        lt.cross_entropy(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="on device meta"):
        lt.softmax(x, 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64,
                                   torch.complex64])
def test_unsupported_dtype_is_rejected(dtype):
    x = torch.zeros(3, 4, dtype=dtype)
    with pytest.raises(TypeError, match="input has dtype"):
        lt.cross_entropy(x, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="input has dtype"):
        lt.logsumexp(x, 1)


def test_other_bad_input():
    x = _leaf(3, 4)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        lt.cross_entropy(x.detach().numpy(), torch.tensor([0, 1, 2]))
    with pytest.raises(IndexError, match="class index 7"):
        lt.cross_entropy(x, torch.tensor([0, 7, 2]))
    with pytest.raises(ValueError, match="reduction"):
        lt.cross_entropy(x, torch.tensor([0, 1, 2]), reduction="avg")
    soft = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="target requires a gradient"):
        lt.cross_entropy(x, soft)
    with pytest.raises(TypeError, match="target must hold"):
        lt.cross_entropy(x, torch.zeros(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="integer class indices"):
        lt.nll_loss(x, torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least one dimension"):
        lt.cross_entropy(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(IndexError, match="Dimension out of range"):
        lt.softmax(x, 2)
    with pytest.raises(ValueError, match="must be the same as"):
        lt.binary_cross_entropy_with_logits(x, torch.zeros(3, dtype=torch.float64))


def test_docstring_examples():
    import doctest
    res = doctest.testmod(lt)
    assert res.attempted > 20 and res.failed == 0
