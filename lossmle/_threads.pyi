# Type stub for lossmle/_threads.py (thread counts; the public
# set_num_threads / get_num_threads).  tests/test_packaging_typing.py runs stubtest on it.
from typing import SupportsIndex

__all__ = ["MAX_THREADS", "PARALLEL_MIN_ELEMENTS", "set_num_threads", "get_num_threads",
           "resolve_threads", "check_n_threads"]

MAX_THREADS: int
PARALLEL_MIN_ELEMENTS: int

def check_n_threads(n_threads: object, name: str = "n_threads") -> int: ...
def set_num_threads(n_threads: SupportsIndex | None) -> None: ...
def get_num_threads() -> int: ...
def resolve_threads(n_threads: SupportsIndex | None, n_elements: int) -> int: ...
