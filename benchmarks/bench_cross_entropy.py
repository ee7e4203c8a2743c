"""Benchmark: mean cross-entropy from logits and class indices.

lossmle.cross_entropy against -take_along_axis(scipy.special.log_softmax(x), y).mean(), stable
in-place NumPy, torch.nn.functional.cross_entropy, sklearn.metrics.log_loss(y, softmax(x))
(where installed).  Grid, agreement check and groups: see conftest.py.
"""
FUNCTION = "cross_entropy"


def bench_cross_entropy(case, run_case):
    run_case(case)
