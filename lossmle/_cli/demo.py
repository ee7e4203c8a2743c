"""``lossmle demo``: the seed's lessons, step by step, with lossmle doing the work.

1. the fair and the biased coin, and D_KL both ways (a divergence, not symmetric);
2. the seed's ten flips: likelihoods, their ratio, and (1/N) log ratio = D_KL;
3. the empirical KL ``(1/N) sum log p(x_i)/q(x_i)`` converging as N grows;
4. cross-entropy = entropy + KL, checked numerically;
5. maximum likelihood: a softmax model fitted to data from a known p*(x, y),
   whose KL to p* shrinks with N.

:func:`run` computes every number (a dict, deterministic for a seed),
:func:`format_report` prints them, :func:`plot` draws the convergence curve.
The tests recompute each printed number from closed forms or with SciPy.
"""
import argparse
import math
import sys
import time

import numpy as np

from .._divergence import entropy, kl_divergence
from .._losses import cross_entropy
from .._mle import empirical_kl, log_likelihood

#: index 0 is tails, 1 is heads (the seed's x = 1)
P_COIN = np.array([1 / 2, 1 / 2])
Q_COIN = np.array([2 / 3, 1 / 3])
FLIPS = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
KL_SIZES = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
MLE_SIZES = (100, 1_000, 10_000, 100_000)
N_TEST = 100_000
#: the true model p*(y | x) = softmax(W* x + b*), x ~ N(0, I_2)
W_STAR = np.array([[2.0, -1.0], [-1.0, 1.5], [0.0, -1.0]])
B_STAR = np.array([0.5, 0.0, -0.5])


def _coins():
    p, q = P_COIN, Q_COIN
    out = {"p": p.tolist(), "q": q.tolist(),
           "kl_pq": float(kl_divergence(p, q)), "kl_qp": float(kl_divergence(q, p))}
    out["kl_asymmetry"] = out["kl_pq"] - out["kl_qp"]
    return out


def _ten_flips():
    n = FLIPS.size
    llp = float(log_likelihood(P_COIN, FLIPS))
    llq = float(log_likelihood(Q_COIN, FLIPS))
    return {"flips": FLIPS.tolist(), "n0": int(np.sum(FLIPS == 0)),
            "n1": int(np.sum(FLIPS == 1)), "loglik_p": llp, "loglik_q": llq,
            "lik_p": math.exp(llp), "lik_q": math.exp(llq),
            "ratio": math.exp(llp - llq), "log_ratio_per_n": (llp - llq) / n,
            "empirical_kl": float(empirical_kl(FLIPS, P_COIN, Q_COIN))}


def _std_error(a, b, n):
    """Standard error of the mean of log(a/b)(x) over n draws from a (2 outcomes)."""
    lr = np.log(a) - np.log(b)
    return abs(lr[1] - lr[0]) * math.sqrt(a[0] * a[1]) / math.sqrt(n)


def _convergence(rng, sizes):
    """Nested samples (prefixes of one stream) from p and from q."""
    n_max = max(sizes)
    from_p = (rng.random(n_max) < P_COIN[1]).astype(np.int64)
    from_q = (rng.random(n_max) < Q_COIN[1]).astype(np.int64)
    kl_pq, kl_qp = float(kl_divergence(P_COIN, Q_COIN)), float(kl_divergence(Q_COIN, P_COIN))
    rows = []
    for n in sizes:
        sp, sq = from_p[:n], from_q[:n]
        ep, eq = float(empirical_kl(sp, P_COIN, Q_COIN)), float(empirical_kl(sq, Q_COIN, P_COIN))
        rows.append({"n": n, "heads_p": int(sp.sum()), "kl_hat_pq": ep,
                     "err_pq": abs(ep - kl_pq), "se_pq": _std_error(P_COIN, Q_COIN, n),
                     "heads_q": int(sq.sum()), "kl_hat_qp": eq,
                     "err_qp": abs(eq - kl_qp), "se_qp": _std_error(Q_COIN, P_COIN, n)})
    return rows, from_p


def _decomposition():
    out = {}
    for name, a, b in (("pq", P_COIN, Q_COIN), ("qp", Q_COIN, P_COIN)):
        h = float(entropy(a))
        kl = float(kl_divergence(a, b))
        # H(a, b) from the cross-entropy kernel: probability target a, logits log b
        ce = float(cross_entropy(np.log(b)[None, :], a[None, :]))
        out[name] = {"entropy": h, "kl": kl, "cross_entropy": ce,
                     "entropy_plus_kl": h + kl, "residual": ce - (h + kl)}
    return out


def _sample_pstar(rng, n):
    x = rng.standard_normal((n, W_STAR.shape[1]))
    z = x @ W_STAR.T + B_STAR
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    u = rng.random((n, 1))
    y = np.minimum((np.cumsum(probs, axis=1) < u).sum(axis=1), W_STAR.shape[0] - 1)
    return x, y


def _mle(rng, sizes, n_test):
    from .._regression import SoftmaxRegression
    x_train, y_train = _sample_pstar(rng, max(sizes))
    x_test = rng.standard_normal((n_test, W_STAR.shape[1]))
    z_star = x_test @ W_STAR.T + B_STAR
    from .._special import softmax
    p_star = softmax(z_star, axis=1)
    h_star = float(np.mean(entropy(p_star, axis=1)))
    rows = []
    for n in sizes:
        model = SoftmaxRegression(C=np.inf, tol=1e-9, max_iter=1000)
        model.fit(x_train[:n], y_train[:n])
        z_w = x_test @ model.coef_.T + model.intercept_
        ce = float(cross_entropy(z_w, p_star))  # H(p*, p_w), mean over test x
        kl = float(np.mean(kl_divergence(p_star, softmax(z_w, axis=1), axis=1)))
        k, d = W_STAR.shape
        rows.append({"n": n, "train_nll": model.objective_, "test_ce": ce,
                     "entropy": h_star, "kl": kl, "ce_minus_entropy": ce - h_star,
                     "asymptotic_kl": (k - 1) * (d + 1) / (2 * n),
                     "coef": model.coef_, "intercept": model.intercept_})
    return {"rows": rows, "x_train": x_train, "y_train": y_train, "x_test": x_test,
            "w_star": W_STAR, "b_star": B_STAR}


def run(seed=0, *, kl_sizes=KL_SIZES, mle_sizes=MLE_SIZES, n_test=N_TEST, mle=True):
    """Compute every number of the demo.

    Parameters
    ----------
    seed : int, optional
        Seed of ``numpy.random.default_rng`` for the sampled sections.
    kl_sizes, mle_sizes : sequence of int, optional
        Sample sizes of the convergence table and of the MLE fits.
    n_test : int, optional
        Fresh ``x`` over which the fitted model's KL to p* is averaged.
    mle : bool, optional
        Include the MLE section (needs scipy).

    Returns
    -------
    dict
        Keys ``coins``, ``flips``, ``convergence``, ``decomposition``,
        ``mle`` (None when skipped) and ``seed``.

    Examples
    --------
    >>> from lossmle._cli.demo import run
    >>> r = run(0, kl_sizes=(10,), mle=False)
    >>> round(r["flips"]["ratio"], 10)  # 3^10 / 2^15
    1.8020324707
    """
    rng = np.random.default_rng(seed)
    conv_rows, stream = _convergence(rng, kl_sizes)
    out = {"seed": seed, "coins": _coins(), "flips": _ten_flips(),
           "convergence": conv_rows, "stream_p": stream,
           "decomposition": _decomposition(), "mle": None}
    if mle:
        out["mle"] = _mle(rng, mle_sizes, n_test)
    return out


def _f(v):
    return f"{v:.10f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.10e}"


def format_report(r):
    """The demo's text: one ``label = value`` line per number, and two tables."""
    c, fl, dec = r["coins"], r["flips"], r["decomposition"]
    L = [f"lossmle demo: the seed's KL / cross-entropy / MLE lessons (seed {r['seed']})",
         "",
         "1. Two coins (x = 1 is heads, x = 0 is tails)",
         f"  p(0) = {_f(c['p'][0])}", f"  p(1) = {_f(c['p'][1])}",
         f"  q(0) = {_f(c['q'][0])}", f"  q(1) = {_f(c['q'][1])}",
         f"  D_KL(p || q) = {_f(c['kl_pq'])}",
         f"  D_KL(q || p) = {_f(c['kl_qp'])}",
         f"  D_KL(p || q) - D_KL(q || p) = {_f(c['kl_asymmetry'])}",
         "  (not zero: KL is a divergence, not a metric)",
         "",
         "2. The seed's ten flips: " + " ".join(map(str, fl["flips"])),
         f"  n0 = {fl['n0']}", f"  n1 = {fl['n1']}",
         f"  log p(observations | p) = {_f(fl['loglik_p'])}",
         f"  log p(observations | q) = {_f(fl['loglik_q'])}",
         f"  p(observations | p) = {_f(fl['lik_p'])}",
         f"  p(observations | q) = {_f(fl['lik_q'])}",
         f"  likelihood ratio p/q = {_f(fl['ratio'])}",
         f"  (1/N) log(ratio) = {_f(fl['log_ratio_per_n'])}",
         f"  empirical_kl(flips, p, q) = {_f(fl['empirical_kl'])}",
         "  (n0/N = p(0) and n1/N = p(1) exactly, so this is D_KL(p || q) itself)",
         "",
         "3. The empirical KL converges to D_KL as N grows "
         "(x_i drawn from p, resp. q; nested samples)",
         f"  {'N':>8} {'heads~p':>8} {'KLhat(p||q)':>13} {'|error|':>13} {'std.err':>13}"
         f" {'heads~q':>8} {'KLhat(q||p)':>13} {'|error|':>13} {'std.err':>13}"]
    for row in r["convergence"]:
        L.append(f"  {row['n']:>8d} {row['heads_p']:>8d} {row['kl_hat_pq']:>13.10f} "
                 f"{row['err_pq']:>13.10f} {row['se_pq']:>13.10f} {row['heads_q']:>8d} "
                 f"{row['kl_hat_qp']:>13.10f} {row['err_qp']:>13.10f} {row['se_qp']:>13.10f}")
    L += ["  (|error| stays within a few std.err = sd(log p/q) / sqrt(N))", "",
          "4. Cross-entropy = entropy + KL"]
    for name, (a, b) in (("pq", ("p", "q")), ("qp", ("q", "p"))):
        d = dec[name]
        L += [f"  H({a}) = {_f(d['entropy'])}",
              f"  D_KL({a} || {b}) = {_f(d['kl'])}",
              f"  H({a}, {b}) = {_f(d['cross_entropy'])}",
              f"  H({a}) + D_KL({a} || {b}) = {_f(d['entropy_plus_kl'])}",
              f"  H({a}, {b}) - H({a}) - D_KL({a} || {b}) = {d['residual']:.3e}"]
    L.append("")
    m = r["mle"]
    if m is None:
        L.append("5. (MLE section skipped)")
        return "\n".join(L)
    k, dim = m["w_star"].shape
    L += ["5. Maximum likelihood: softmax regression on data from a known p*(x, y)",
          f"  p*: x ~ N(0, I_{dim}), y | x ~ softmax(W* x + b*), {k} classes; "
          f"fitted by SoftmaxRegression(C=inf): pure MLE",
          f"  test averages over {m['x_test'].shape[0]} fresh x; "
          f"KL = E_x D_KL(p*(.|x) || p_w(.|x)); CE = H(p*, p_w) = H(p*) + KL",
          f"  {'N':>8} {'train NLL':>13} {'test CE':>13} {'H(p*)':>13} "
          f"{'CE - H(p*)':>13} {'KL(p*||p_w)':>13} {'(K-1)(d+1)/2N':>13}"]
    for row in m["rows"]:
        L.append(f"  {row['n']:>8d} {row['train_nll']:>13.10f} {row['test_ce']:>13.10f} "
                 f"{row['entropy']:>13.10f} {row['ce_minus_entropy']:>13.10f} "
                 f"{row['kl']:>13.10f} {row['asymptotic_kl']:>13.10f}")
    L.append("  (minimising the NLL on the sample minimises the KL to p*: it shrinks "
             "like the number of parameters / 2N)")
    return "\n".join(L)


def plot(r, path):
    """Draw the empirical KL against N (log axis), with D_KL and +-2 std.err."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib (pip install matplotlib)") from None
    stream = r["stream_p"]
    ns = np.unique(np.logspace(1, math.log10(stream.size), 200).astype(np.int64))
    heads = np.cumsum(stream)[ns - 1]
    lr = np.log(P_COIN) - np.log(Q_COIN)
    est = ((ns - heads) * lr[0] + heads * lr[1]) / ns
    kl = r["coins"]["kl_pq"]
    se = np.array([_std_error(P_COIN, Q_COIN, n) for n in ns])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.fill_between(ns, kl - 2 * se, kl + 2 * se, alpha=0.2, label="D_KL ± 2 std.err")
    ax.plot(ns, est, lw=1.2, label="(1/N) Σ log p(x_i)/q(x_i), x_i ~ p")
    ax.axhline(kl, color="k", ls="--", lw=1, label=f"D_KL(p || q) = {kl:.6f}")
    ax.set_xscale("log")
    ax.set_xlabel("N (coin flips)")
    ax.set_ylabel("nats")
    ax.set_title("The empirical KL converges to D_KL(p || q)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    parser = argparse.ArgumentParser(
        prog="lossmle demo",
        description="The seed's lessons step by step: KL both ways, the ten flips, "
                    "the empirical KL converging, cross-entropy = entropy + KL, and "
                    "an MLE fit whose KL to the true distribution shrinks with N.")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the sampled sections (default 0)")
    parser.add_argument("--plot", metavar="PATH.png",
                        help="also draw the empirical KL against N (needs matplotlib)")
    parser.add_argument("--no-mle", action="store_true",
                        help="skip the MLE section (which needs scipy)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    mle = not args.no_mle
    if mle:
        try:
            import scipy.optimize  # noqa: F401
        except ImportError:
            print("lossmle demo: scipy is not installed; skipping the MLE section",
                  file=sys.stderr)
            mle = False
    start = time.perf_counter()
    r = run(args.seed, mle=mle)
    print(format_report(r))
    if args.plot:
        try:
            plot(r, args.plot)
        except ImportError as exc:
            print(f"lossmle demo: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"lossmle demo: cannot write {args.plot!r}: {exc}", file=sys.stderr)
            return 1
        print(f"\nplot written to {args.plot}")
    print(f"\n(done in {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0
