"""The framework adapters are optional: ``import lossmle`` loads neither torch nor jax."""
import subprocess
import sys


def test_import_lossmle_does_not_import_frameworks():
    from conftest import same_package_cwd
    code = ("import sys, lossmle; "
            "print(sorted(m for m in ('torch', 'jax', 'jaxlib') if m in sys.modules))")
    # from the folder holding the lossmle under test: in a clone's root, "import
    # lossmle" would find the unbuilt source tree instead of the installed package
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=same_package_cwd()).stdout.strip()
    assert out == "[]"


def test_the_framework_benchmark_is_a_lossmle_command():
    """`lossmle bench-frameworks` runs lossmle._cli.bench_frameworks (issue 28's step benchmark)."""
    import pytest
    from lossmle._cli import main as _cli
    assert _cli.COMMANDS["bench-frameworks"][0] == "lossmle._cli.bench_frameworks"
    with pytest.raises(SystemExit) as exc:
        _cli.main(["bench-frameworks", "--help"])
    assert exc.value.code == 0
