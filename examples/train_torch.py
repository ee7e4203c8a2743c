"""Train a small classifier on CPU with lossmle.torch and with torch's own losses.

Three runs from the same initialisation, in float64, each twice (lossmle's
loss, then torch's): a softmax classifier (MLP + cross_entropy), the same
with the output layer fused into the loss (linear_cross_entropy), and a
distillation of the trained classifier into a smaller student
(kl_divergence_from_logits at temperature 2 against torch's
kl_div(log_softmax, log_softmax)).  The loss curves must agree to 1e-6.

    python examples/train_torch.py [--steps 200]
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

try:
    import lossmle
except ImportError:  # run from a source tree built in place
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import lossmle
import lossmle.torch as lt


def data(n=512, d=10, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, y


def mlp(d, hidden, classes, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, classes)).double()


def train(loss_fn, x, y, steps, seed=1, lr=0.2):
    """Full-batch SGD; ``loss_fn(model, x, y)``; returns the loss curve."""
    model = mlp(x.shape[1], 32, int(y.max()) + 1, seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    curve = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        curve.append(loss.item())
    return model, curve


def ce_lossmle(model, x, y):
    return lt.cross_entropy(model(x), y, label_smoothing=0.05)


def ce_torch(model, x, y):
    return F.cross_entropy(model(x), y, label_smoothing=0.05)


def head_lossmle(model, x, y):
    body, head = model[:-1], model[-1]
    return lt.linear_cross_entropy(body(x), head.weight, y, linear_bias=head.bias,
                                   chunk_size=2)


def head_torch(model, x, y):
    return F.cross_entropy(model(x), y)


def distill(teacher, x, steps, kl, seed=2, lr=0.5, temperature=2.0):
    with torch.no_grad():
        t_logits = teacher(x)
    torch.manual_seed(seed)
    student = torch.nn.Linear(x.shape[1], t_logits.shape[1]).double()
    opt = torch.optim.SGD(student.parameters(), lr=lr)
    curve = []
    for _ in range(steps):
        opt.zero_grad()
        loss = kl(t_logits, student(x), temperature) * temperature ** 2
        loss.backward()
        opt.step()
        curve.append(loss.item())
    return curve


def kl_lossmle(p, q, t):
    return lt.kl_divergence_from_logits(p, q, temperature=t)


def kl_torch(p, q, t):
    return F.kl_div(F.log_softmax(q / t, 1), F.log_softmax(p / t, 1), log_target=True,
                    reduction="batchmean")


def main(steps=200, verbose=True):
    # a tiny problem: one thread each (threads only add synchronisation here)
    torch.set_num_threads(1)
    lossmle.set_num_threads(1)
    x, y = data()
    runs = {}
    teacher, runs["classifier (cross_entropy)"] = train(ce_lossmle, x, y, steps)
    _, ref = train(ce_torch, x, y, steps)
    runs["classifier (cross_entropy)"] = (runs["classifier (cross_entropy)"], ref)
    runs["fused head (linear_cross_entropy)"] = (train(head_lossmle, x, y, steps)[1],
                                                 train(head_torch, x, y, steps)[1])
    runs["distillation (kl_divergence_from_logits, T=2)"] = (
        distill(teacher, x, steps, kl_lossmle), distill(teacher, x, steps, kl_torch))
    worst = 0.0
    for name, (ours, theirs) in runs.items():
        diff = max(abs(a - b) for a, b in zip(ours, theirs))
        worst = max(worst, diff)
        if verbose:
            print(f"{name}: loss {ours[0]:.6f} -> {ours[-1]:.6f} (torch {theirs[-1]:.6f}), "
                  f"max |curve difference| {diff:.2e} over {steps} steps")
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    worst = main(parser.parse_args().steps)
    print("curves agree to 1e-6" if worst <= 1e-6 else "CURVES DIFFER")
    sys.exit(0 if worst <= 1e-6 else 1)
