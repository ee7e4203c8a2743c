"""The ``lossmle`` command: ``lossmle <command> [options]`` (also ``python -m lossmle``).

Each command lives in its own module, imported only when it runs, exposing
``main(argv) -> int``.
"""
import importlib
import sys

COMMANDS = {
    "bench": ("lossmle._cli.bench", "benchmark lossmle against SciPy, NumPy, torch, jax, numba"),
    "bench-frameworks": ("lossmle._cli.bench_frameworks",
                         "one training step inside torch / JAX autograd: lossmle.torch / "
                         "lossmle.jax against the frameworks' own losses (time, peak memory)"),
    "demo": ("lossmle._cli.demo", "the seed's KL / cross-entropy / MLE lessons, step by step"),
    "config": ("lossmle._cli.config", "show build and run-time configuration"),
}


def _usage():
    lines = ["usage: lossmle <command> [options]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'lossmle <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lossmle: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)
