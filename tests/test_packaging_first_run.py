"""What a new user meets first (issue 27): importing lossmle from a source tree
whose extensions are not built, and the test run's line about skipped oracles.

Both run in subprocesses on copies in a temporary directory: no compiled
module and no oracle of this process is involved.
"""
import math
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_unbuilt_source_tree_says_what_to_do(tmp_path):
    import lossmle
    pkg = tmp_path / "lossmle"
    pkg.mkdir()
    src = os.path.dirname(os.path.abspath(lossmle.__file__))
    for name in os.listdir(src):
        if name.endswith((".py", ".pyx", ".pxd", ".pyi", ".h")):
            shutil.copy(os.path.join(src, name), pkg / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", "import lossmle"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("ImportError: lossmle's compiled extensions (simd, ")
    assert "not built for this Python" in err and str(pkg) in err
    assert "circular import" not in res.stderr
    for what_to_do in ("pip install .", "from another directory", "pip install -e .",
                       "python setup.py build_ext --inplace"):
        assert what_to_do in err


def test_skipped_oracles_named_in_one_line(tmp_path):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_oracles.py").write_text(
        "import pytest\n"
        "def test_a(torch): pass\n"
        "def test_b(torch): pass\n"
        "def test_c():\n"
        "    pytest.importorskip('sklearn.linear_model')\n"
        "def test_d(): pass\n"
        "def test_e():\n"
        "    pytest.skip('not an oracle')\n")
    # torch and scikit-learn made unimportable whether installed or not
    code = ("import sys; sys.modules['torch'] = None; sys.modules['sklearn'] = None\n"
            "import pytest\n"
            "sys.exit(pytest.main(['-q', '-ra', '-p', 'no:cacheprovider', '--rootdir', '.',"
            " 'test_oracles.py']))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("lossmle:")]
    assert ours == ["lossmle: 3 skipped for a missing oracle or tool (torch: 2, sklearn: 1); "
                    "for the full suite: pip install torch==2.13.0 scikit-learn"]
    # below -ra's list of skips, just above pytest's closing line
    assert lines[-2] == ours[0] and lines[-1].startswith("1 passed, 4 skipped")


def test_no_skip_line_when_nothing_is_missing(tmp_path):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_plain.py").write_text(
        "import pytest\n"
        "def test_d(): pass\n"
        "def test_e():\n"
        "    pytest.skip('not an oracle')\n")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", ".", "test_plain.py"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "lossmle:" not in res.stdout
    assert "1 passed, 1 skipped" in res.stdout


def test_imports_and_runs_under_python_OO(tmp_path):
    # python -OO strips docstrings (None): the modules that fill shared parameter
    # text into their docstrings at import raised AttributeError there
    import lossmle
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
        os.path.abspath(lossmle.__file__))))
    code = ("import numpy as np, lossmle; "
            "print(float(lossmle.cross_entropy(np.zeros((2, 3)), [0, 1])))")
    res = subprocess.run([sys.executable, "-OO", "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert math.isclose(float(res.stdout), math.log(3), rel_tol=1e-15)
