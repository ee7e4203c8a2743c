# Type stub for lossmle/_kl_div.py (the public kl_div, kl_div_with_grad).
# Keep in step with the .py: tests/test_packaging_typing.py runs mypy's stubtest on it.
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import TypeAlias

_Result: TypeAlias = NDArray[np.floating[Any]] | np.floating[Any]
_Reduction: TypeAlias = Literal["mean", "batchmean", "sum", "none"]

__all__ = ["kl_div", "kl_div_with_grad"]

def kl_div(
    input: ArrayLike, target: ArrayLike, reduction: _Reduction = "mean",
    log_target: bool = False, *, n_threads: int | None = None,
) -> _Result: ...
def kl_div_with_grad(
    input: ArrayLike, target: ArrayLike, reduction: _Reduction = "mean",
    log_target: bool = False, *, grad_out: NDArray[Any] | None = None,
    n_threads: int | None = None,
) -> tuple[_Result, NDArray[np.floating[Any]]]: ...
