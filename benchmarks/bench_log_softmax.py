"""Benchmark: log_softmax over the last axis.

lossmle.log_softmax against scipy.special.log_softmax, stable NumPy (x - max - log sum exp),
torch.log_softmax
(where installed).  Grid, agreement check and groups: see conftest.py.
"""
FUNCTION = "log_softmax"


def bench_log_softmax(case, run_case):
    run_case(case)
