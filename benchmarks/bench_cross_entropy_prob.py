"""Benchmark: mean cross-entropy from logits and probability targets.

lossmle.cross_entropy against -(P * scipy.special.log_softmax(x)).sum(-1).mean(), stable
in-place NumPy, torch.nn.functional.cross_entropy with probability targets
(where installed).  Grid, agreement check and groups: see conftest.py.
"""
FUNCTION = "cross_entropy_prob"


def bench_cross_entropy_prob(case, run_case):
    run_case(case)
