"""The reference implementations the tests compare lossmle against.

Every expected value of the suite comes from scipy, NumPy written here,
torch, JAX, mpmath or a closed form; this module holds the ones written out
(one function per quantity), so that a test file states *what* it checks
and imports *how the truth is computed* from here.  Nothing in this module
calls lossmle.  The optional oracles (torch, JAX, mpmath) are imported
inside the functions that use them: a test that needs one skips through
its fixture or ``pytest.importorskip`` before calling in here.

No ``test_`` functions: pytest does not collect this module.
"""
import warnings

import numpy as np
import scipy.special as sps
import scipy.stats

from conftest import as_f64, quiet


# ---------------------------------------------------------------------------
# Finite differences
# ---------------------------------------------------------------------------
def central_fd(f, x, h=1e-6):
    """Central finite differences of ``sum(f(x))`` at x, in float64."""
    x = np.array(x, dtype=np.float64)
    g = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp = x.copy()
        xm = x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (np.sum(f(xp)) - np.sum(f(xm))) / (2 * h)
    return g


# ---------------------------------------------------------------------------
# Cross-entropy and NLL (torch.nn.functional semantics), NumPy in float64
# ---------------------------------------------------------------------------
def np_cross_entropy_rows(logits, target, axis=-1, weight=None, ignore_index=-100,
                          label_smoothing=0.0):
    """torch's cross-entropy per position, and each position's weight in a
    'mean' (``weight[target]``, 0 where ignored; 1 for probability targets).

    Class-index targets: ``(1 - eps) w_y (-log p_y) + eps / C sum_c w_c (-log p_c)``,
    0 where ``target == ignore_index``; the smoothing term is left out when
    ``eps == 0`` (so a -inf logit elsewhere in the row does not make it
    ``0 * inf``).  Probability targets: ``-sum_c w_c t'_c log p_c`` with
    ``t' = (1 - eps) t + eps / C``.  ``log p`` is scipy's log_softmax; a row
    holding nan or +inf has a nan loss, as torch's (scipy's log_softmax gives
    +inf's row -inf for the other classes, not nan).
    """
    x = np.moveaxis(as_f64(logits), axis, -1)
    n_classes = x.shape[-1]
    with np.errstate(all="ignore"):
        lp = sps.log_softmax(x, axis=-1)
    poisoned = np.isnan(x).any(axis=-1) | np.isposinf(x).any(axis=-1)
    w = np.ones(n_classes) if weight is None else as_f64(weight)
    eps = label_smoothing
    t = np.asarray(target)
    if np.issubdtype(t.dtype, np.floating):
        p = np.moveaxis(as_f64(t), axis, -1) * (1.0 - eps) + eps / n_classes
        with np.errstate(invalid="ignore"):
            per = -(p * w * lp).sum(-1)
        return np.where(poisoned, np.nan, per), np.ones(per.shape)
    valid = t != ignore_index
    tt = np.where(valid, t, 0).astype(np.intp)
    picked = np.take_along_axis(lp, tt[..., None], axis=-1)[..., 0]
    wt = w[tt] * valid
    with np.errstate(invalid="ignore"):
        per = -picked * w[tt]
        if eps:
            per = (1.0 - eps) * per + (eps / n_classes) * -(lp * w).sum(-1)
    return np.where(valid, np.where(poisoned, np.nan, per), 0.0), wt


def reduce_loss(per, row_weight, reduction):
    """torch's reductions of per-position losses: 'mean' divides by the summed
    weights of the kept positions (nan when there are none)."""
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return per.sum() / row_weight.sum()


def np_cross_entropy(logits, target, axis=-1, weight=None, ignore_index=-100,
                     reduction="mean", label_smoothing=0.0):
    """Reference implementation: torch.nn.functional.cross_entropy semantics."""
    per, wt = np_cross_entropy_rows(logits, target, axis=axis, weight=weight,
                                    ignore_index=ignore_index, label_smoothing=label_smoothing)
    return reduce_loss(per, wt, reduction)


def np_nll_loss(log_probs, target, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    """Reference implementation: torch.nn.functional.nll_loss semantics."""
    x = np.moveaxis(as_f64(log_probs), axis, -1)
    w = np.ones(x.shape[-1]) if weight is None else as_f64(weight)
    t = np.asarray(target)
    valid = t != ignore_index
    tt = np.where(valid, t, 0).astype(np.intp)
    wt = w[tt] * valid
    per = -np.take_along_axis(x, tt[..., None], axis=-1)[..., 0] * wt
    return reduce_loss(per, wt, reduction)


def ld_softmax_rows(x):
    """softmax over the last axis in NumPy's long double (64-bit significand
    on x86-64: ~2e-19 relative, far below float64's 1.1e-16), as float64."""
    xl = np.asarray(x).astype(np.longdouble)
    e = np.exp(xl - xl.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float64)


def np_cross_entropy_grad(x, y, reduction, ignore_index=-100):
    """Class-index cross-entropy of (N, C) rows and its gradient
    ``softmax(x) - onehot(y)`` (0 on ignored rows), from scipy's float64
    log_softmax; 'mean' divides both by the number of kept rows."""
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        logp = sps.log_softmax(x64, axis=-1)
    keep = y != ignore_index
    rows = np.nonzero(keep)[0]
    losses = np.zeros(len(y))
    losses[rows] = -logp[rows, y[rows]]
    grad = np.exp(logp)
    grad[rows, y[rows]] -= 1.0
    grad[~keep] = 0.0
    if reduction == "mean":
        n_eff = keep.sum()
        return losses.sum() / n_eff, grad / n_eff
    if reduction == "sum":
        return losses.sum(), grad
    return losses, grad


def np_masked_cross_entropy_rows(x, y, axis, weight=None, ignore_index=-100, eps=0.0,
                                 mask=None, cap=None):
    """Explicit per-position loss and mean-weight of the documented definition
    of cross-entropy with ``where=`` (classes outside the mask do not exist
    for the row) and a tanh soft cap ``cap * tanh(x / cap)``, row by row."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    if cap is not None:
        x = cap * np.tanh(x / cap)
    n_cls = x.shape[-1]
    m = np.ones(x.shape, bool) if mask is None else np.moveaxis(
        np.broadcast_to(mask, np.moveaxis(np.empty(x.shape), -1, axis).shape), axis, -1)
    w = np.ones(n_cls) if weight is None else np.asarray(weight, np.float64)
    loss = np.zeros(x.shape[:-1])
    wrow = np.zeros(x.shape[:-1])
    for idx in np.ndindex(x.shape[:-1]):
        yi = int(y[idx])
        row, mr = x[idx], m[idx]
        if yi == ignore_index or not mr.any():
            continue
        xs = row[mr]
        lse = np.log(np.sum(np.exp(xs - xs.max()))) + xs.max()
        K = mr.sum()
        xy = row[yi] if mr[yi] else -np.inf
        val = (1 - eps) * w[yi] * (lse - xy)
        if eps > 0:
            val += eps / K * (np.sum(w[mr]) * lse - np.sum(w[mr] * xs))
        loss[idx] = val
        wrow[idx] = w[yi]
    return loss, wrow


def np_linear_cross_entropy(h, w, b, y, reduction="mean", ignore_index=-100):
    """Cross-entropy of ``h @ w.T + b`` and its gradients in h, w, b, from the
    full float64 logits."""
    h, w = h.astype(np.float64), w.astype(np.float64)
    z = h @ w.T + (0.0 if b is None else b.astype(np.float64))
    kept = y != ignore_index
    yk = np.where(kept, y, 0)
    lse = sps.logsumexp(z, axis=-1)
    rows = lse - z[np.arange(len(y)), yk]
    rows = np.where(kept, rows, 0.0)
    if reduction == "none":
        loss, scale = rows, np.ones(len(y))
    elif reduction == "sum":
        loss, scale = rows.sum(), np.ones(len(y))
    else:
        loss, scale = rows.sum() / kept.sum(), np.full(len(y), 1.0 / kept.sum())
    g = np.exp(z - lse[:, None])
    g[np.arange(len(y)), yk] -= 1.0
    g *= np.where(kept, scale, 0.0)[:, None]
    return loss, g @ w, g.T @ h, g.sum(axis=0)


def np_softmax_regression_objective(theta, X, y, k, C, sw=None, eps=0.0, fit_intercept=True):
    """mean(sw * CE) / mean(sw) + ||W||^2 / (2 C sum(sw)), in NumPy, with gradient."""
    n, d = X.shape
    W = theta[:k * d].reshape(k, d)
    b = theta[k * d:] if fit_intercept else np.zeros(k)
    Z = X @ W.T + b
    logp = sps.log_softmax(Z, axis=1)
    T = np.eye(k)[y] * (1 - eps) + eps / k
    ce = -(T * logp).sum(axis=1)
    sw = np.ones(n) if sw is None else sw
    S = sw.sum()
    f = (sw * ce).sum() / S
    G = (np.exp(logp) - T) * (sw / S)[:, None]
    gW = G.T @ X
    if np.isfinite(C):
        f += (W ** 2).sum() / (2 * C * S)
        gW += W / (C * S)
    g = np.concatenate([gW.ravel(), G.sum(axis=0)]) if fit_intercept else gW.ravel()
    return f, g


def np_bce_with_logits(x, t, w=None, pw=None):
    """Closed form with mpmath-free stable pieces: -pw t log s(x) - (1-t) log(1-s(x))."""
    x = np.asarray(x, np.float64)
    log_sig = -np.logaddexp(0.0, -x)
    log_one_minus = -np.logaddexp(0.0, x)
    pw = 1.0 if pw is None else pw
    loss = -(pw * t * log_sig + (1 - t) * log_one_minus)
    return loss if w is None else w * loss


def np_evaluate_logits(x, y, axis, ks, ignore_index=-100):
    """Per-position nll, accuracy, top-k accuracy, entropy and z-loss of
    logits (ties ranked by class index), and the kept positions."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    lse = sps.logsumexp(x, axis=-1)
    valid = y != ignore_index
    yc = np.where(valid, y, 0)
    xy = np.take_along_axis(x, yc[..., None], -1)[..., 0]
    order = np.argsort(-x, axis=-1, kind="stable")
    rank = np.argmax(order == yc[..., None], axis=-1)
    out = {"nll": lse - xy, "accuracy": np.argmax(x, -1) == yc}
    for k in ks:
        out[f"top{k}_accuracy"] = rank < k
    out["entropy"] = scipy.stats.entropy(sps.softmax(x, axis=-1), axis=-1)
    out["z_loss"] = lse ** 2
    return out, valid


# ---------------------------------------------------------------------------
# KL divergence
# ---------------------------------------------------------------------------
def np_kl_divergence(p, q, axis=-1, base=None, keepdims=False):
    """sum rel_entr(p, q) along axis (scipy), optionally in ``base``."""
    r = sps.rel_entr(as_f64(p), as_f64(q))
    out = np.sum(r, axis=axis, keepdims=keepdims)
    if base is not None:
        out = out / np.log(base)
    return out


def np_kl_from_logits_rows(p, q, axis, T=1.0):
    """KL(softmax(p / T) || softmax(q / T)) per row, from scipy's log_softmax."""
    lp = sps.log_softmax(np.asarray(p, np.float64) / T, axis=axis)
    lq = sps.log_softmax(np.asarray(q, np.float64) / T, axis=axis)
    return np.sum(np.exp(lp) * (lp - lq), axis=axis)


def reduce_kl(rows, reduction, n_classes):
    """The KL reductions: 'batchmean' divides by the rows, 'mean' by the elements."""
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if reduction == "batchmean":
        return rows.sum() / rows.size
    return rows.sum() / (rows.size * n_classes)


def mp_kl_rows(p, q):
    """sum p log(p/q) over the last axis, in 60-digit arithmetic on the exact inputs."""
    import mpmath
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    with mpmath.workdps(60):
        out = [float(mpmath.fsum(mpmath.mpf(a) * mpmath.log(mpmath.mpf(a) / mpmath.mpf(b))
                                 for a, b in zip(pr, qr) if a != 0))
               for pr, qr in zip(p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1]))]
    return np.array(out).reshape(p.shape[:-1])


# ---------------------------------------------------------------------------
# mpmath: rows dominated by their maximum
# ---------------------------------------------------------------------------
def mp_cross_entropy_at_max(mpmath, rows, target, mask=None):
    """-log p_y and p_y - 1 from mpmath, per row (over the mask's classes)."""
    loss, grad_y = [], []
    with mpmath.workprec(200):
        for r, (row, y) in enumerate(zip(rows, target)):
            terms = [mpmath.exp(mpmath.mpf(float(v)) - mpmath.mpf(float(row[y])))
                     for k, v in enumerate(row) if mask is None or mask[r, k]]
            rest = mpmath.fsum(terms) - 1
            loss.append(float(mpmath.log1p(rest)))
            grad_y.append(float(-rest / (1 + rest)))
    return np.array(loss), np.array(grad_y)


def mp_entropy_from_logits(mpmath, rows, inv_t):
    """H(softmax(inv_t * row)) per row from mpmath, with log S = log1p(rest)
    (S = 1 + rest would round the rest away at any working precision)."""
    out = []
    with mpmath.workprec(120):
        for row in rows:
            a = [mpmath.mpf(float(v)) * inv_t for v in row]
            top = max(a)
            d = [v - top for v in a]
            e = [mpmath.exp(v) for v in d]
            i_top = d.index(0)
            rest = mpmath.fsum(ek for k, ek in enumerate(e) if k != i_top)
            log_s = mpmath.log1p(rest)
            out.append(float(mpmath.fsum(ek * (log_s - dk) for ek, dk in zip(e, d))
                             / (1 + rest)))
    return np.array(out)


def mp_js_from_logits(mpmath, p_rows, q_rows):
    """JS(softmax(p) || softmax(q)) per row from mpmath, in nats."""
    def log_softmax(row):
        a = [mpmath.mpf(float(v)) for v in row]
        top = max(a)
        i_top = a.index(top)
        rest = mpmath.fsum(mpmath.exp(v - top) for k, v in enumerate(a) if k != i_top)
        return [v - top - mpmath.log1p(rest) for v in a]
    out = []
    with mpmath.workprec(300):
        for pr, qr in zip(p_rows, q_rows):
            lp, lq = log_softmax(pr), log_softmax(qr)
            total = 0
            for a, b in zip(lp, lq):
                ea, eb = mpmath.exp(a), mpmath.exp(b)
                if ea == 0 and eb == 0:
                    continue   # a class neither row can take: no term
                lmix = mpmath.log((ea + eb) / 2)
                total += (ea * (a - lmix) if ea else 0) + (eb * (b - lmix) if eb else 0)
            out.append(float(total / 2))
    return np.array(out)


MAX0_ROWS = 600


def max0_rows(n_cols):
    """Rows [0, -g_1, ...] with gaps spread so s = sum exp(-g) runs from
    ~1e-16 to n_cols - 1; the returned exact log1p(s) comes from mpmath."""
    import mpmath
    rng = np.random.default_rng(1000 + n_cols)
    x = np.zeros((MAX0_ROWS, n_cols))
    x[:, 1:] = -rng.uniform(0.0, 36.0, size=(MAX0_ROWS, n_cols - 1)) * rng.uniform(
        0.0, 1.0, size=(MAX0_ROWS, 1))
    with mpmath.workprec(160):
        exact = np.array([float(mpmath.log1p(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)))
                                                           for v in row[1:])))
                          for row in x])
    return x, exact


# ---------------------------------------------------------------------------
# torch (the losses' upstream): float64 unless stated
# ---------------------------------------------------------------------------
def _torch_layout(arr, axis):
    """numpy array with the class axis at `axis` -> torch layout (N, C, ...)."""
    arr = np.asarray(arr)
    if arr.ndim <= 1:
        return arr
    return np.moveaxis(arr, axis, 1)


def torch_loss(torch, fn, logits, target, axis=-1, with_grad=False, **kwargs):
    """torch.nn.functional.<fn> (and d loss.sum() / d logits) in float64, on
    logits whose class axis is ``axis``; the gradient in the logits' layout."""
    F = torch.nn.functional
    x = torch.tensor(np.array(_torch_layout(as_f64(logits), axis), copy=True),
                     dtype=torch.float64, requires_grad=with_grad)
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.floating):
        t = torch.tensor(np.array(_torch_layout(as_f64(target), axis), copy=True))
    else:
        t = torch.tensor(np.array(target, dtype=np.int64, copy=True))
    kw = dict(kwargs)
    if kw.get("weight") is not None:
        kw["weight"] = torch.tensor(as_f64(kw["weight"]))
    loss = getattr(F, fn)(x, t, **kw)
    out = loss.detach().numpy()
    if not with_grad:
        return out
    loss.sum().backward()
    g = x.grad.numpy()
    if np.ndim(logits) > 1:
        g = np.moveaxis(g, 1, axis)
    return out, g


def torch_loss_rows(torch, name, x, target, kw):
    """torch's loss (``name`` 'nll_loss', else cross_entropy) and d loss.sum() /
    dx in float64, for lossmle-style keywords ``kw`` (axis, reduction,
    ignore_index, weight, label_smoothing): the class axis moved last and the
    rest flattened, so torch always runs its (N, C) path (its 1-D path's sums
    overflow differently near the float maximum)."""
    def f64(a):
        return quiet(np.asarray(a).astype, np.float64)
    ax = kw["axis"] % x.ndim
    xt = torch.tensor(np.ascontiguousarray(np.moveaxis(f64(x), ax, -1)), requires_grad=True)
    c = xt.shape[-1]
    flat = xt.reshape(-1, c)
    prob = np.asarray(target).dtype.kind == "f"
    t = np.asarray(target)
    tt = torch.tensor(np.ascontiguousarray(np.moveaxis(f64(t), ax, -1)).reshape(-1, c)) \
        if prob else torch.tensor(t.astype(np.int64).reshape(-1))
    tkw = dict(reduction=kw["reduction"])
    if kw.get("weight") is not None:
        tkw["weight"] = torch.tensor(kw["weight"])
    if not prob:
        tkw["ignore_index"] = kw["ignore_index"]
    if name == "nll_loss":
        loss = torch.nn.functional.nll_loss(flat, tt, **tkw)
    else:
        loss = torch.nn.functional.cross_entropy(flat, tt, label_smoothing=kw.get(
            "label_smoothing", 0.0), **tkw)
    if kw["reduction"] == "none":
        out_shape = np.delete(np.asarray(x.shape), ax).tolist()
        loss.sum().backward()
        return loss.detach().numpy().reshape(out_shape), \
            np.moveaxis(xt.grad.numpy(), -1, ax)
    if loss.requires_grad:
        loss.backward()
    return loss.detach().numpy(), np.moveaxis(xt.grad.numpy(), -1, ax)


def torch_loss_grad(fn, x, target, **kw):
    """torch loss ``fn`` (a torch.nn.functional function) and d loss.sum() / dx
    in the arrays' own dtype (float32 stays float32); torch's warnings off."""
    import torch

    def t_(a):
        return torch.from_numpy(np.ascontiguousarray(a))
    xt = t_(x).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = fn(xt, t_(target), **{k: (t_(v) if isinstance(v, np.ndarray) else v)
                                  for k, v in kw.items()})
        (g,) = torch.autograd.grad(y.sum(), xt)
    return y.detach().numpy(), g.numpy()


def torch_kl_div(x, t, reduction, log_target):
    """torch.nn.functional.kl_div and its gradient in x (the arrays' dtype)."""
    import torch
    xt = torch.from_numpy(np.array(x)).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # torch's note on 'mean'
        y = torch.nn.functional.kl_div(xt, torch.from_numpy(np.array(t)), reduction=reduction,
                                       log_target=log_target)
        (g,) = torch.autograd.grad(y.sum(), xt)
    return y.detach().numpy(), g.numpy()


def torch_kl_div_from_logits(p, q, dim=-1, temperature=1.0, reduction="batchmean"):
    """KL(softmax(p / T) || softmax(q / T)) on torch tensors, differentiable."""
    import torch
    F = torch.nn.functional
    terms = F.kl_div(F.log_softmax(q / temperature, dim), F.log_softmax(p / temperature, dim),
                     reduction="none", log_target=True).sum(dim)
    return {"none": terms, "sum": terms.sum(), "batchmean": terms.mean(),
            "mean": terms.sum() / p.numel()}[reduction]


def torch_linear_cross_entropy(h, w, t, b=None, reduction="mean", ignore_index=-100):
    """cross_entropy(F.linear(h, w, b), t) on torch tensors, differentiable."""
    import torch
    F = torch.nn.functional
    logits = F.linear(h, w, b)
    return F.cross_entropy(logits.reshape(-1, w.shape[0]), t.reshape(-1),
                           reduction=reduction, ignore_index=ignore_index).reshape(
        t.shape if reduction == "none" else ())


# ---------------------------------------------------------------------------
# JAX (hand-written with torch's semantics, differentiated by JAX)
# ---------------------------------------------------------------------------
def jax_cross_entropy(x, t, axis=-1, weight=None, ignore_index=-100, reduction="mean",
                      eps=0.0):
    import jax
    import jax.numpy as jnp
    lsm = jax.nn.log_softmax(x, axis=axis)
    c = x.shape[axis]
    w = jnp.ones(c, x.dtype) if weight is None else weight
    wshape = (-1,) + (1,) * (x.ndim - (axis % x.ndim) - 1)
    wb = jnp.reshape(w, wshape)
    if jnp.issubdtype(t.dtype, jnp.integer):
        kept = t != ignore_index
        ts = jnp.where(kept, t, 0)
        picked = jnp.take_along_axis(lsm, jnp.expand_dims(ts, axis), axis).squeeze(axis)
        wy = jnp.where(kept, w[ts], 0.0)
        rows = -(1 - eps) * wy * picked - jnp.where(kept, eps / c * jnp.sum(wb * lsm, axis), 0)
        denom = jnp.sum(wy)
    else:
        tt = (1 - eps) * t + eps / c
        rows = -jnp.sum(wb * tt * lsm, axis)
        denom = rows.size
    return {"none": rows, "sum": jnp.sum(rows), "mean": jnp.sum(rows) / denom}[reduction]


def jax_kl_div_from_logits(p, q, axis=-1, temperature=1.0, reduction="batchmean"):
    import jax
    import jax.numpy as jnp
    a = jax.nn.log_softmax(p / temperature, axis)
    b = jax.nn.log_softmax(q / temperature, axis)
    rows = jnp.sum(jnp.exp(a) * (a - b), axis)
    return {"none": rows, "sum": rows.sum(), "batchmean": rows.mean(),
            "mean": rows.sum() / p.size}[reduction]
