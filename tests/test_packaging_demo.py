"""``lossmle demo``: every printed number against closed forms or SciPy.

The printed text (from the CLI entry point) is parsed and each value is
checked against the seed's closed forms (sections 1, 2, 4), against the
estimator's formula applied to the printed head counts and the binomial
standard error (section 3), and against SciPy recomputations from the fitted
parameters the demo returns (section 5).
"""
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.special as sps

from lossmle._cli import demo as _demo
from conftest import same_package_cwd

LOG = math.log
KL_PQ = 0.5 * LOG(9 / 8)  # 1/2 log(1/2 / 2/3) + 1/2 log(1/2 / 1/3)
KL_QP = 2 / 3 * LOG(4 / 3) + 1 / 3 * LOG(2 / 3)
H_P = LOG(2)
H_Q = -(2 / 3 * LOG(2 / 3) + 1 / 3 * LOG(1 / 3))
H_PQ = 0.5 * LOG(3 / 2) + 0.5 * LOG(3)  # -sum p log q
H_QP = LOG(2)
PRINTED = 6e-11  # values are printed with 10 decimals


@pytest.fixture(scope="module")
def result():
    return _demo.run(0)


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """stdout of ``lossmle demo --plot`` (via the CLI dispatcher), parsed."""
    png = tmp_path_factory.mktemp("demo") / "kl.png"
    args = ["demo"] + (["--plot", str(png)] if _has_matplotlib() else [])
    res = subprocess.run([sys.executable, "-m", "lossmle", *args], capture_output=True,
                         text=True, timeout=120, cwd=same_package_cwd())
    assert res.returncode == 0, res.stderr
    return parse(res.stdout), res.stdout, png


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def parse(text):
    """``{label: value}`` from ``  label = value`` lines, and the two tables."""
    values, tables, current = {}, {}, None
    for line in text.splitlines():
        m = re.fullmatch(r"  (.+?) = (\S+)", line)
        if m:
            values.setdefault(m.group(1), []).append(float(m.group(2)))
            continue
        if line.startswith("3. "):
            current = tables.setdefault("kl", [])
        elif line.startswith("5. "):
            current = tables.setdefault("mle", [])
        elif current is not None and re.fullmatch(r"(\s+[-\d.e+]+)+", line):
            current.append([float(v) for v in line.split()])
    return values, tables


def one(values, label):
    (v,) = set(values[label])  # a label printed twice must show the same value
    return v


# ---------------------------------------------------------------------------
# Sections 1, 2, 4: closed forms, in the printed text and in the dict
# ---------------------------------------------------------------------------
CLOSED = {
    "p(0)": 0.5, "p(1)": 0.5, "q(0)": 2 / 3, "q(1)": 1 / 3,
    "D_KL(p || q)": KL_PQ, "D_KL(q || p)": KL_QP,
    "D_KL(p || q) - D_KL(q || p)": KL_PQ - KL_QP,
    "n0": 5, "n1": 5,
    "log p(observations | p)": 10 * LOG(1 / 2),
    "log p(observations | q)": 5 * LOG(2 / 3) + 5 * LOG(1 / 3),
    "p(observations | p)": 1 / 1024,
    "p(observations | q)": 32 / 59049,  # (2/3)^5 (1/3)^5
    "likelihood ratio p/q": 59049 / 32768,
    "(1/N) log(ratio)": LOG(59049 / 32768) / 10,
    "empirical_kl(flips, p, q)": KL_PQ,
    "H(p)": H_P, "H(p, q)": H_PQ, "H(p) + D_KL(p || q)": H_PQ,
    "H(q)": H_Q, "H(q, p)": H_QP, "H(q) + D_KL(q || p)": H_QP,
    "H(p, q) - H(p) - D_KL(p || q)": 0.0, "H(q, p) - H(q) - D_KL(q || p)": 0.0,
}


@pytest.mark.parametrize("label", sorted(CLOSED))
def test_printed_closed_forms(printed, label):
    values, _ = printed[0]
    v = one(values, label)
    expected = CLOSED[label]
    if label.startswith("p(observations"):
        assert v == pytest.approx(expected, rel=1e-10)  # printed in e-notation
    else:
        assert v == pytest.approx(expected, abs=PRINTED)


def test_every_key_value_line_is_checked(printed):
    values, _ = printed[0]
    assert set(values) == set(CLOSED)


def test_dict_closed_forms(result):
    eps = 8 * np.finfo(float).eps
    c, fl = result["coins"], result["flips"]
    assert c["kl_pq"] == pytest.approx(KL_PQ, rel=eps)
    assert c["kl_qp"] == pytest.approx(KL_QP, rel=eps)
    assert fl["flips"] == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]  # the seed's x_1..x_10
    assert fl["ratio"] == pytest.approx(59049 / 32768, rel=16 * np.finfo(float).eps)
    assert fl["lik_q"] == pytest.approx(32 / 59049, rel=16 * np.finfo(float).eps)
    assert fl["empirical_kl"] == pytest.approx(KL_PQ, rel=eps)
    assert fl["log_ratio_per_n"] == pytest.approx(KL_PQ, rel=eps)
    for name, h, ce in (("pq", H_P, H_PQ), ("qp", H_Q, H_QP)):
        d = result["decomposition"][name]
        assert d["entropy"] == pytest.approx(h, rel=eps)
        assert d["cross_entropy"] == pytest.approx(ce, rel=eps)
        assert abs(d["residual"]) < 4 * np.finfo(float).eps


# ---------------------------------------------------------------------------
# Section 3: the convergence table
# ---------------------------------------------------------------------------
def test_convergence_table(printed):
    _, tables = printed[0]
    rows = tables["kl"]
    assert [int(r[0]) for r in rows] == list(_demo.KL_SIZES)
    lr_p = (LOG(1 / 2 / (2 / 3)), LOG(1 / 2 / (1 / 3)))  # log p/q at x = 0, 1
    lr_q = (-lr_p[0], -lr_p[1])
    prev = (0, 0)
    for n, hp, kp, ep, sp, hq, kq, eq, sq in rows:
        # the seed's formula on the printed counts
        kl_hat_p = ((n - hp) * lr_p[0] + hp * lr_p[1]) / n
        kl_hat_q = ((n - hq) * lr_q[0] + hq * lr_q[1]) / n
        assert kp == pytest.approx(kl_hat_p, abs=PRINTED)
        assert kq == pytest.approx(kl_hat_q, abs=PRINTED)
        assert ep == pytest.approx(abs(kl_hat_p - KL_PQ), abs=PRINTED)
        assert eq == pytest.approx(abs(kl_hat_q - KL_QP), abs=PRINTED)
        # sd of log p/q under p: |lr1 - lr0| sqrt(p0 p1)
        assert sp == pytest.approx(LOG(2) * 0.5 / math.sqrt(n), abs=PRINTED)
        assert sq == pytest.approx(LOG(2) * math.sqrt(2 / 9) / math.sqrt(n), abs=PRINTED)
        # the counts are plausible binomial draws (5 sd), nested across rows
        assert abs(hp - n / 2) <= 5 * math.sqrt(n / 4)
        assert abs(hq - n / 3) <= 5 * math.sqrt(n * 2 / 9)
        assert hp >= prev[0] and hq >= prev[1]
        prev = (hp, hq)
        assert ep <= 5 * sp and eq <= 5 * sq
    assert rows[-1][3] < rows[0][3] and rows[-1][7] < rows[0][7]


# ---------------------------------------------------------------------------
# Section 5: the MLE fits, recomputed with SciPy from the returned parameters
# ---------------------------------------------------------------------------
def _recompute(m, row):
    n = row["n"]
    W, b = row["coef"], row["intercept"]
    z_star = m["x_test"] @ _demo.W_STAR.T + _demo.B_STAR
    p_star = sps.softmax(z_star, axis=1)
    logq = sps.log_softmax(m["x_test"] @ W.T + b, axis=1)
    ce = float(np.mean(-(p_star * logq).sum(axis=1)))
    h = float(np.mean(sps.entr(p_star).sum(axis=1)))
    kl = float(np.mean(sps.rel_entr(p_star, np.exp(logq)).sum(axis=1)))
    x, y = m["x_train"][:n], m["y_train"][:n]
    lz = sps.log_softmax(x @ W.T + b, axis=1)
    nll = float(-np.mean(lz[np.arange(n), y]))
    grad_W = (np.exp(lz) - np.eye(3)[y]).T @ x / n
    grad_b = (np.exp(lz) - np.eye(3)[y]).mean(axis=0)
    return dict(test_ce=ce, entropy=h, kl=kl, train_nll=nll,
                ce_minus_entropy=ce - h, asymptotic_kl=2 * 3 / (2 * n)), \
        max(np.abs(grad_W).max(), np.abs(grad_b).max())


def test_mle_table_printed_matches_recomputation(printed, result):
    _, tables = printed[0]
    m = result["mle"]
    assert [int(r[0]) for r in tables["mle"]] == list(_demo.MLE_SIZES)
    cols = ["train_nll", "test_ce", "entropy", "ce_minus_entropy", "kl", "asymptotic_kl"]
    for line, row in zip(tables["mle"], m["rows"]):
        expected, _ = _recompute(m, row)
        for col, v in zip(cols, line[1:]):
            assert v == pytest.approx(expected[col], abs=1e-9), col
            assert row[col] == pytest.approx(expected[col], rel=1e-9, abs=1e-13), col


def test_mle_fits_are_maximum_likelihood(result):
    m = result["mle"]
    for row in m["rows"]:
        _, grad = _recompute(m, row)
        assert grad < 1e-6  # stationary point of the (convex) NLL: the MLE


def test_mle_kl_shrinks_and_recovers_pstar(result):
    m = result["mle"]
    kls = [row["kl"] for row in m["rows"]]
    assert all(a > b for a, b in zip(kls, kls[1:]))
    # well-specified MLE: E[KL] ~ (#params)/(2N); within a factor 5 here
    for row in m["rows"]:
        assert row["asymptotic_kl"] / 5 < row["kl"] < 5 * row["asymptotic_kl"]
    # softmax parameters are identified up to a common shift of the rows
    last = m["rows"][-1]
    centre = lambda a: a - a.mean(axis=0)  # noqa: E731
    np.testing.assert_allclose(centre(last["coef"]), centre(_demo.W_STAR), atol=0.05)
    np.testing.assert_allclose(centre(last["intercept"]), centre(_demo.B_STAR), atol=0.05)


def test_labels_drawn_from_pstar(result):
    # class frequencies of the training labels against E_x p*(y | x) (5 sd)
    m = result["mle"]
    x, y = m["x_train"], m["y_train"]
    p = sps.softmax(x @ _demo.W_STAR.T + _demo.B_STAR, axis=1)
    n = len(y)
    for k in range(3):
        expected = p[:, k].sum()
        assert abs(np.sum(y == k) - expected) < 5 * math.sqrt(n * 0.25)


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------
def test_deterministic(result):
    again = _demo.run(0, mle=False)
    assert _demo.format_report(again).split("\n5.")[0] == \
        _demo.format_report(result).split("\n5.")[0]


def test_seed_changes_samples_only():
    a, b = _demo.run(0, mle=False), _demo.run(1, mle=False)
    assert a["flips"] == b["flips"] and a["coins"] == b["coins"]
    assert [r["heads_p"] for r in a["convergence"]] != [r["heads_p"] for r in b["convergence"]]


def test_plot_written(printed):
    pytest.importorskip("matplotlib")
    _, text, png = printed
    assert f"plot written to {png}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc = _demo.main(["--no-mle", "--plot", str(tmp_path / "x.png")])
    assert rc == 1
    assert "needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plot_unwritable_path(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    rc = _demo.main(["--no-mle", "--plot", str(tmp_path / "missing" / "x.png")])
    assert rc == 1
    assert "cannot write" in capsys.readouterr().err


def test_no_mle_and_help(capsys):
    assert _demo.main(["--no-mle"]) == 0
    out = capsys.readouterr().out
    assert "5. (MLE section skipped)" in out
    with pytest.raises(SystemExit) as exc:
        _demo.main(["--help"])
    assert exc.value.code == 0
    assert "--plot" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--seed", "-1"], ["--seed", "x"], ["--bogus"]])
def test_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _demo.main(argv)
    assert exc.value.code == 2
    assert "lossmle demo" in capsys.readouterr().err
