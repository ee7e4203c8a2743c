"""The framework adapters are optional: ``import lossmle`` loads neither torch nor jax."""
import subprocess
import sys


def test_import_lossmle_does_not_import_frameworks():
    code = ("import sys, lossmle; "
            "print(sorted(m for m in ('torch', 'jax', 'jaxlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
