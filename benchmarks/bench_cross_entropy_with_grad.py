"""Benchmark: mean cross-entropy and its gradient w.r.t. the logits.

lossmle.cross_entropy_with_grad against SciPy log_softmax then exp(.) - onehot, NumPy
(softmax - onehot) / N in place, torch cross_entropy forward + autograd backward
(where installed).  Grid, agreement check and groups: see conftest.py.
"""
FUNCTION = "cross_entropy_with_grad"


def bench_cross_entropy_with_grad(case, run_case):
    run_case(case)
