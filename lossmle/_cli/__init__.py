"""The ``lossmle`` command-line tools: ``main`` dispatches to ``bench``, ``bench_frameworks``,
``demo`` and ``config``, each a module with ``main(argv) -> int``."""
