"""Benchmark: logsumexp over the last axis.

lossmle.logsumexp against scipy.special.logsumexp, stable in-place NumPy, torch.logsumexp
(where installed).  Grid, agreement check and groups: see conftest.py.
"""
FUNCTION = "logsumexp"


def bench_logsumexp(case, run_case):
    run_case(case)
