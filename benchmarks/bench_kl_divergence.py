"""Benchmark: KL(p || q) of each row.

lossmle.kl_divergence against scipy.special.rel_entr(p, q).sum(-1), NumPy
einsum(p, log(p / q)), torch.nn.functional.kl_div(log q, p, reduction='none').sum(-1)
(where installed).  Grid, agreement check and groups: see conftest.py.
"""
FUNCTION = "kl_divergence"


def bench_kl_divergence(case, run_case):
    run_case(case)
