"""Train a small classifier on CPU with lossmle.jax and with a plain-JAX loss.

float64 (jax_enable_x64), a jit-compiled full-batch gradient step: an MLP
with cross_entropy (label smoothing), the same with the output layer fused
into linear_cross_entropy, and a distillation of it into a linear student
with kl_divergence_from_logits at temperature 2.  Each run once with
lossmle's loss and once with the same loss written with jax.nn; the loss
curves must agree to 1e-6.

    python examples/train_jax.py [--steps 200]
"""
import argparse
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

try:
    import lossmle  # noqa: F401
except ImportError:  # run from a source tree built in place
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lossmle.jax as lj  # noqa: E402


def data(n=512, d=10, classes=5, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    centers = jax.random.normal(k1, (classes, d), jnp.float64) * 2
    y = jax.random.randint(k2, (n,), 0, classes)
    return centers[y] + jax.random.normal(k3, (n, d), jnp.float64), y


def init(d, hidden, classes, seed):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"w1": jax.random.normal(k1, (hidden, d), jnp.float64) / jnp.sqrt(d),
            "b1": jnp.zeros(hidden, jnp.float64),
            "w2": jax.random.normal(k2, (classes, hidden), jnp.float64) / jnp.sqrt(hidden),
            "b2": jnp.zeros(classes, jnp.float64)}


def features(p, x):
    return jnp.tanh(x @ p["w1"].T + p["b1"])


def logits(p, x):
    return features(p, x) @ p["w2"].T + p["b2"]


def ce_ref(z, y, eps=0.0):
    lsm = jax.nn.log_softmax(z)
    picked = jnp.take_along_axis(lsm, y[:, None], 1)[:, 0]
    return jnp.mean(-(1 - eps) * picked - eps * jnp.mean(lsm, 1))


LOSSES = {
    "classifier (cross_entropy)": (
        lambda p, x, y: lj.cross_entropy(logits(p, x), y, label_smoothing=0.05),
        lambda p, x, y: ce_ref(logits(p, x), y, 0.05)),
    "fused head (linear_cross_entropy)": (
        lambda p, x, y: lj.linear_cross_entropy(features(p, x), p["w2"], y, bias=p["b2"],
                                                chunk_size=2),
        lambda p, x, y: ce_ref(logits(p, x), y)),
}


def train(loss_fn, x, y, steps, lr=0.2):
    params = init(x.shape[1], 32, int(y.max()) + 1, 1)
    step = jax.jit(lambda p: (loss_fn(p, x, y), jax.grad(loss_fn)(p, x, y)))
    curve = []
    for _ in range(steps):
        loss, g = step(params)
        params = jax.tree_util.tree_map(lambda a, b: a - lr * b, params, g)
        curve.append(float(loss))
    return params, curve


def kl_ref(p, q, t):
    a, b = jax.nn.log_softmax(p / t), jax.nn.log_softmax(q / t)
    return jnp.mean(jnp.sum(jnp.exp(a) * (a - b), 1))


def distill(teacher, x, steps, kl, lr=0.5, t=2.0):
    t_logits = logits(teacher, x)
    w = jnp.zeros((t_logits.shape[1], x.shape[1]), jnp.float64)

    def loss_fn(w):
        return kl(t_logits, x @ w.T, t) * t ** 2
    step = jax.jit(jax.value_and_grad(loss_fn))
    curve = []
    for _ in range(steps):
        loss, g = step(w)
        w = w - lr * g
        curve.append(float(loss))
    return curve


def main(steps=200, verbose=True):
    x, y = data()
    runs = {}
    teacher = None
    for name, (ours, ref) in LOSSES.items():
        p, a = train(ours, x, y, steps)
        teacher = teacher or p
        runs[name] = (a, train(ref, x, y, steps)[1])
    runs["distillation (kl_divergence_from_logits, T=2)"] = (
        distill(teacher, x, steps, lambda p, q, t: lj.kl_divergence_from_logits(
            p, q, temperature=t)),
        distill(teacher, x, steps, kl_ref))
    worst = 0.0
    for name, (ours, theirs) in runs.items():
        diff = max(abs(a - b) for a, b in zip(ours, theirs))
        worst = max(worst, diff)
        if verbose:
            print(f"{name}: loss {ours[0]:.6f} -> {ours[-1]:.6f} (jax {theirs[-1]:.6f}), "
                  f"max |curve difference| {diff:.2e} over {steps} steps")
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    worst = main(parser.parse_args().steps)
    print("curves agree to 1e-6" if worst <= 1e-6 else "CURVES DIFFER")
    sys.exit(0 if worst <= 1e-6 else 1)
