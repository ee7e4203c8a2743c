# Type stub for lossmle/_metrics.py (the public evaluate_logits).
# Keep in step with the .py: tests/test_packaging_typing.py runs mypy's stubtest on it.
from typing import Any, Literal, SupportsIndex

from numpy.typing import ArrayLike

__all__ = ["evaluate_logits"]

# The dict maps 'nll', 'accuracy', 'top{k}_accuracy', 'entropy', 'z_loss' to
# numpy scalars (arrays with reduction='none', plus a boolean 'valid'), and
# 'count' to an int.
def evaluate_logits(
    logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
    k: SupportsIndex | tuple[SupportsIndex, ...] | list[SupportsIndex] = 5, ignore_index: SupportsIndex = -100,
    logit_softcap: float | None = None, reduction: Literal["mean", "sum", "none"] = "mean",
    n_threads: SupportsIndex | None = None,
) -> dict[str, Any]: ...
