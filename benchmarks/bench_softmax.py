"""Benchmark: softmax over the last axis.

lossmle.softmax against scipy.special.softmax, stable in-place NumPy, torch.softmax
(where installed).  Grid, agreement check and groups: see conftest.py.
"""
FUNCTION = "softmax"


def bench_softmax(case, run_case):
    run_case(case)
