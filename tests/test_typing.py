"""Typing: the stubs (.pyi), py.typed, and ``mypy --strict`` on a usage file.

* every compiled module of lossmle has a ``.pyi`` next to it, and the package
  is marked ``py.typed`` (PEP 561);
* a small, idiomatic user of the public API passes ``mypy --strict``;
* a user with type errors fails it, with the errors the stubs should catch
  (so the stubs are really the ones mypy reads);
* mypy's ``stubtest`` finds every stub in step with the runtime signatures
  (a parameter added to a function without its stub fails here).

mypy runs against the lossmle that ``import lossmle`` finds (installed, or the
in-place build).  Skips cleanly when mypy is not installed.
"""
import importlib.machinery
import os
import subprocess
import sys
import textwrap

import pytest

import lossmle

PKG_DIR = os.path.dirname(os.path.abspath(lossmle.__file__))
PARENT = os.path.dirname(PKG_DIR)

# Public modules whose stubs (.pyi next to the .py) describe the API.
STUBBED_PY = ["_special", "_losses", "_divergence", "_validation", "_threads", "_config"]


def _compiled_modules():
    names = set()
    suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
    for fname in os.listdir(PKG_DIR):
        suffix = next((s for s in suffixes if fname.endswith(s)), None)
        if suffix is not None:
            names.add(fname[: -len(suffix)])
    return sorted(names)


def _has_stub(module):
    return os.path.isfile(os.path.join(PKG_DIR, module + ".pyi"))


def test_package_is_marked_typed():
    assert os.path.isfile(os.path.join(PKG_DIR, "py.typed"))


def test_every_compiled_module_has_a_stub():
    compiled = _compiled_modules()
    assert compiled, "no compiled extension found next to lossmle/__init__.py"
    missing = [m for m in compiled if not _has_stub(m)]
    assert not missing, f"compiled modules without a .pyi stub: {missing}"


GOOD = textwrap.dedent('''
    """A type-checked user of lossmle's public API."""
    import numpy as np
    from numpy.typing import NDArray

    import lossmle


    def mean_loss(logits: NDArray[np.float32], labels: NDArray[np.int64]) -> float:
        loss = lossmle.cross_entropy(logits, labels, reduction="mean",
                                     label_smoothing=0.1, n_threads=1)
        return float(loss)


    def step(logits: NDArray[np.float64],
             labels: NDArray[np.int64]) -> NDArray[np.float64]:
        loss, grad = lossmle.cross_entropy_with_grad(logits, labels, axis=-1,
                                                     weight=[1.0, 2.0, 1.0])
        assert float(loss) >= 0
        return grad  # float64 in, float64 gradient out


    x64 = np.zeros((4, 3))
    x32: NDArray[np.float32] = np.zeros((4, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 0], dtype=np.int64)
    p32: NDArray[np.float32] = lossmle.softmax(x32, axis=-1)  # float32 stays float32
    lp: NDArray[np.float64] = lossmle.log_softmax(x64, axis=(0, 1))
    lse = lossmle.logsumexp(x64, axis=1, keepdims=True)
    res, sgn = lossmle.logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    kl = lossmle.kl_divergence([0.5, 0.5], [1 / 3, 2 / 3], base=2, validate=True)
    h = lossmle.entropy([0.5, 0.5], [0.25, 0.75], axis=None, keepdims=False)
    nll = lossmle.nll_loss(lp, y, reduction="none", ignore_index=-1)
    lossmle.set_num_threads(2)
    lossmle.set_num_threads(None)
    n: int = lossmle.get_num_threads()
    lossmle.show_config()
    version: str = lossmle.__version__
    total: float = (mean_loss(x32, y) + float(kl) + float(h) + float(res)
                    + float(sgn) + float(nll.sum()) + float(p32.sum()) + n)
    shape: tuple[int, ...] = lse.shape
    g: NDArray[np.float64] = step(x64, y)
    state = lossmle.LogSumExpState(axis=-1).update(x32[:, :2]).update(x32[:, 2:])
    state = state.merge(lossmle.LogSumExpState(shape=(4,)))
    streamed = state.result()
    n_seen: int = state.n_classes
    w = np.ones((3, 5), dtype=np.float32)
    lce = lossmle.linear_cross_entropy(np.ones((4, 5), dtype=np.float32), w, y % 3,
                                       chunk_size=2)
    lce_loss, d_hidden, d_weight, d_bias = lossmle.linear_cross_entropy_with_grad(
        np.ones((4, 5)), w, y, bias=None, reduction="sum")
    d_w_shape: tuple[int, ...] = d_weight.shape
    has_bias: bool = d_bias is not None
''')

# Each line must give (at least) one mypy error on that line.
BAD = textwrap.dedent('''
    import numpy as np
    from numpy.typing import NDArray
    import lossmle
    lossmle.logsumexp(np.zeros(3), axis="last")
    lossmle.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="avg")
    lossmle.kl_divergence([1.0], [1.0], validate="yes")
    lossmle.softmax(np.zeros(3), n_thread=2)
    e: str = lossmle.get_num_threads()
    f: NDArray[np.float32] = lossmle.log_softmax(np.zeros(3))
    lossmle.set_num_threads("4")
    lossmle.nll_loss(np.zeros((2, 3)), [0, 1], label_smoothing=0.1)
    lossmle.LogSumExpState().merge(np.zeros(3))
    lossmle.linear_cross_entropy(np.ones((2, 3)), np.ones((4, 3)), [0, 1], reduction="avg")
''').strip() + "\n"


@pytest.fixture(scope="module")
def run_mypy(tmp_path_factory):
    pytest.importorskip("mypy")
    work = tmp_path_factory.mktemp("typing")
    env = dict(os.environ, PYTHONPATH=PARENT, MYPY_FORCE_COLOR="0")
    env.pop("MYPYPATH", None)

    def run(*args, files=None):
        for name, text in (files or {}).items():
            (work / name).write_text(text)
        return subprocess.run(
            [sys.executable, *args], cwd=work, env=env, capture_output=True,
            text=True, timeout=300)

    return run


# lossmle modules written with inline annotations: they must pass --strict
# themselves (the others are described by their .pyi).
TYPED_MODULES = ["lossmle._streaming", "lossmle._linear_ce"]


@pytest.fixture(scope="module")
def mypy_errors(run_mypy):
    """One mypy --strict run over both usage files and the typed modules.

    Returns {file name: {line number: error line}}.
    """
    packages = []
    for m in TYPED_MODULES:
        packages += ["-p", m]
    errors = {}
    # mypy takes files or packages, not both: two runs sharing one cache
    for targets, files in ((["usage_ok.py", "usage_bad.py"],
                            {"usage_ok.py": GOOD, "usage_bad.py": BAD}),
                           (packages, None)):
        res = run_mypy("-m", "mypy", "--strict", "--no-color-output",
                       "--no-error-summary", "--cache-dir", ".mypy_cache",
                       "--python-executable", sys.executable, *targets, files=files)
        assert res.returncode in (0, 1), res.stdout + res.stderr  # 2: mypy failed
        for line in res.stdout.splitlines():
            if ": error:" in line:
                path, lineno = line.split(":")[:2]
                errors.setdefault(os.path.basename(path), {})[int(lineno)] = line
    return errors


def test_usage_passes_mypy_strict(mypy_errors):
    assert "usage_ok.py" not in mypy_errors, mypy_errors["usage_ok.py"]


def test_typed_modules_pass_mypy_strict(mypy_errors):
    others = {f: e for f, e in mypy_errors.items() if not f.startswith("usage_")}
    assert not others, others


def test_usage_file_runs(run_mypy):
    # the typed usage is also valid at run time (the stubs describe real calls)
    res = run_mypy("usage_ok.py", files={"usage_ok.py": GOOD})
    assert res.returncode == 0, res.stdout + res.stderr


def test_type_errors_are_caught(mypy_errors):
    lines = BAD.splitlines()
    # every line from the first lossmle call on must be flagged, and no other
    first = lines.index(next(l for l in lines if l.startswith("lossmle."))) + 1
    expected = set(range(first, len(lines) + 1))
    assert set(mypy_errors.get("usage_bad.py", {})) == expected, mypy_errors


def test_stubs_match_runtime(run_mypy, tmp_path):
    pytest.importorskip("mypy.stubtest")
    # (a compiled module without a stub fails test_every_compiled_module_has_a_stub)
    modules = [f"lossmle.{m}" for m in _compiled_modules() + STUBBED_PY if _has_stub(m)]
    config = tmp_path / "stubtest.ini"
    # lossmle's untyped modules import scipy/sklearn, which ship no stubs
    config.write_text("[mypy]\nignore_missing_imports = True\n")
    allow = tmp_path / "allowlist.txt"
    allow.write_text("lossmle\\..*\\.__test__\n")  # Cython's doctest dict
    res = run_mypy("-m", "mypy.stubtest", "--concise", "--mypy-config-file",
                   str(config), "--allowlist", str(allow),
                   "--ignore-unused-allowlist", *modules)
    assert res.returncode == 0, res.stdout + res.stderr
