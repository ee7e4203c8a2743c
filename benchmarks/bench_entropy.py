"""Benchmark: entropy of each row (scipy.stats.entropy: rows normalised).

lossmle.entropy against scipy.stats.entropy(p, axis=-1), NumPy log(s) - sum(p log p) / s,
torch.special.entr(p / s).sum(-1)
(where installed).  Grid, agreement check and groups: see conftest.py.
"""
FUNCTION = "entropy"


def bench_entropy(case, run_case):
    run_case(case)
