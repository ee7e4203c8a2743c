"""Typing: the stubs (.pyi), py.typed, and ``mypy --strict`` on a usage file.

* every compiled module of lossmle has a ``.pyi`` next to it, and the package
  is marked ``py.typed`` (PEP 561);
* every public module (one defining a name of ``lossmle.__all__``, or a
  public submodule such as ``lossmle.dask``) has a ``.pyi`` or is written with
  inline annotations (``TYPED_MODULES``, which pass ``mypy --strict``
  themselves);
* a small, idiomatic user calling every name of ``lossmle.__all__`` passes
  ``mypy --strict``, and runs;
* a user with type errors fails it, with the errors the stubs should catch
  (so the stubs are really the ones mypy reads);
* mypy's ``stubtest`` finds every stub (each ``.pyi`` next to a ``.py`` or a
  compiled module) in step with the runtime signatures (a parameter added to
  a function without its stub fails here).

mypy runs against the lossmle that ``import lossmle`` finds (installed, or the
in-place build).  Skips cleanly when mypy is not installed.
"""
import importlib.machinery
import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import pytest

import lossmle

PKG_DIR = os.path.dirname(os.path.abspath(lossmle.__file__))
PARENT = os.path.dirname(PKG_DIR)

def _package_files():
    """(dotted name relative to lossmle, file name) of every file in the package's tree."""
    for folder, _, files in os.walk(PKG_DIR):
        rel = os.path.relpath(folder, PKG_DIR)
        prefix = "" if rel == "." else rel.replace(os.sep, ".") + "."
        for fname in files:
            yield prefix, fname


def _compiled_modules():
    """The compiled extensions, as dotted names relative to lossmle (e.g. "_kernels.simd")."""
    names = set()
    suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
    for prefix, fname in _package_files():
        suffix = next((s for s in suffixes if fname.endswith(s)), None)
        if suffix is not None:
            names.add(prefix + fname[: -len(suffix)])
    return sorted(names)


def _has_stub(module):
    """Whether the module (dotted, relative to lossmle) has a .pyi beside it."""
    return os.path.isfile(os.path.join(PKG_DIR, *module.split(".")) + ".pyi")


def _stubbed_py_modules():
    """The lossmle .py modules described by a sibling .pyi (found, not listed)."""
    return sorted(prefix + f[:-3] for prefix, f in _package_files()
                  if f.endswith(".py") and _has_stub(prefix + f[:-3]))


def _public_modules():
    """Every module defining a name of ``lossmle.__all__``, plus the public
    submodules (lossmle/*.py without a leading underscore, e.g. lossmle.dask)."""
    modules = set()
    for name in lossmle.__all__:
        module = getattr(getattr(lossmle, name), "__module__", None)
        if isinstance(module, str) and module.startswith("lossmle."):
            modules.add(module)
    modules.update(f"lossmle.{f[:-3]}" for f in os.listdir(PKG_DIR)
                   if f.endswith(".py") and not f.startswith("_"))
    return sorted(modules - ADAPTERS)


#: the framework adapters are annotated, but torch's autograd.Function and
#: jax's pure_callback are untyped calls to mypy --strict: checked by their
#: own tests (gradcheck, check_grads), not held to --strict here
ADAPTERS = {"lossmle.torch", "lossmle.jax"}


def test_package_is_marked_typed():
    assert os.path.isfile(os.path.join(PKG_DIR, "py.typed"))


def test_every_compiled_module_has_a_stub():
    compiled = _compiled_modules()
    assert compiled, "no compiled extension found in lossmle's folder"
    missing = [m for m in compiled if not _has_stub(m)]
    assert not missing, f"compiled modules without a .pyi stub: {missing}"


GOOD = textwrap.dedent('''
    """A type-checked user of lossmle's public API (every name of __all__)."""
    import warnings

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
    kd = lossmle.kl_div(np.log([[0.5, 0.5]]), [[0.25, 0.75]], reduction="batchmean")
    kd_loss, kd_grad = lossmle.kl_div_with_grad(np.log([[0.5, 0.5]]), [[0.25, 0.75]],
                                                log_target=False)
    kd_shape: tuple[int, ...] = kd_grad.shape
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
    # backward passes and gradients
    z: NDArray[np.float64] = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0],
                                       [1.0, 1.0, 3.0], [0.2, 0.1, 0.0]])
    z32: NDArray[np.float32] = z.astype(np.float32)
    probs: NDArray[np.float64] = lossmle.softmax(z, axis=-1)
    d_z = lossmle.softmax_backward(np.ones_like(z), probs, axis=-1, n_threads=1)
    d_lz = lossmle.log_softmax_backward(np.ones_like(z), lossmle.log_softmax(z, axis=-1))
    nll_value, nll_grad = lossmle.nll_loss_with_grad(lp, y, reduction="sum",
                                                     weight=[1.0, 1.0, 2.0])
    # likelihoods (probabilities or logits)
    ll = lossmle.log_likelihood([0.5, 0.5], [0, 1, 1], reduction="mean")
    nll_rows = lossmle.negative_log_likelihood(z, y % 3, logits=True, axis=-1,
                                               reduction="none")
    ekl: np.float64 = lossmle.empirical_kl([0, 1, 0, 1], [0.5, 0.5], [2 / 3, 1 / 3],
                                           base=2)
    # divergences and entropy from logits
    kd = lossmle.kl_divergence_from_logits(z, z[::-1], temperature=2.0,
                                           reduction="batchmean")
    kd_loss, g_q32 = lossmle.kl_divergence_from_logits_with_grad(
        z32, z32[::-1], logit_softcap=30.0, n_threads=1)
    g_q32_same: NDArray[np.float32] = g_q32  # float32 logits, float32 gradient
    kd_sum, g_q, g_p = lossmle.kl_divergence_from_logits_with_grad(
        z, z[::-1], p_grad=True, reduction="sum")
    js = lossmle.js_divergence_from_logits(z, z[::-1], base=2, reduction="none")
    ent = lossmle.entropy_from_logits(z32, axis=-1, reduction="mean")
    # binary cross-entropy
    t01: NDArray[np.float64] = np.tile([1.0, 0.0, 1.0], (4, 1))
    bce = lossmle.binary_cross_entropy_with_logits(z, t01, pos_weight=np.array([1.0, 2.0, 1.0]),
                                                   reduction="sum")
    bce_loss, bce_grad = lossmle.binary_cross_entropy_with_logits_with_grad(
        z32, t01.astype(np.float32), sample_weight=np.ones(4)[:, None])
    bce_grad_same: NDArray[np.float32] = bce_grad
    # (and at run time the dtypes are the ones the overloads promise)
    assert g_q32.dtype == np.float32 and bce_grad.dtype == np.float32
    assert g_q.dtype == g_p.dtype == np.float64
    # metrics
    metrics = lossmle.evaluate_logits(z, y % 3, k=(1, 2), ignore_index=-100)
    acc = float(metrics["accuracy"])
    count: int = metrics["count"]
    # the estimator
    feats: NDArray[np.float64] = np.array([[0.0], [1.0], [2.0], [3.0]])
    labels = np.array([0, 0, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lossmle.ConvergenceWarning)
        model = lossmle.SoftmaxRegression(C=10.0, class_weight="balanced",
                                          max_iter=50).fit(feats, labels)
    model = model.set_params(tol=1e-6)
    proba: NDArray[np.float64] = model.predict_proba(feats)
    pred = model.predict([[0.5], [2.5]])
    accuracy: float = model.score(feats, labels, sample_weight=np.ones(4))
    coef: NDArray[np.float64] = model.coef_
    n_iter: int = model.n_iter_
    assert issubclass(lossmle.ConvergenceWarning, UserWarning)
    total += (float(nll_value) + float(ll) + float(nll_rows.sum()) + float(ekl)
              + float(kd) + float(kd_loss) + float(kd_sum) + float(js.sum()) + float(ent)
              + float(bce) + float(bce_loss) + acc + count + accuracy + n_iter)
''')

# Each line must give (at least) one mypy error on that line.
BAD = textwrap.dedent('''
    import numpy as np
    from numpy.typing import NDArray
    import lossmle
    import lossmle._deprecated
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
    lossmle.binary_cross_entropy_with_logits(np.zeros(3), np.ones(3), reduction="batchmean")
    h: NDArray[np.float32] = lossmle.binary_cross_entropy_with_logits_with_grad(np.zeros(3), np.ones(3))[1]
    loss, gq, gp = lossmle.kl_divergence_from_logits_with_grad(np.zeros((2, 3)), np.zeros((2, 3)))
    lossmle.kl_divergence_from_logits_with_grad(np.zeros(3), np.zeros(3), p_grad_out=np.zeros(3))
    lossmle.entropy_from_logits(np.zeros(3), reduction="batchmean")
    lossmle.js_divergence_from_logits(np.zeros(3), np.zeros(3), temperature=None)
    lossmle.evaluate_logits(np.zeros((2, 3)), [0, 1], k=2.5)
    lossmle.log_likelihood([0.5, 0.5], [0, 1], logits="yes")
    lossmle.empirical_kl([0, 1], [0.5, 0.5], [0.5, 0.5], base="e")
    lossmle.SoftmaxRegression(C="big")
    lossmle.SoftmaxRegression(class_weight="auto")
    s: str = lossmle.SoftmaxRegression().fit(np.zeros((2, 1)), [0, 1]).score(np.zeros((2, 1)), [0, 1])
    lossmle.SoftmaxRegression().fit(np.zeros((2, 1)), [0, 1]).predict_probas(np.zeros((2, 1)))
    lossmle._deprecated.masked_softmax(np.zeros(3))
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
TYPED_MODULES = ["lossmle._streaming", "lossmle._linear_ce", "lossmle.dask"]
# ... and the optional package each needs (mypy checks it only when installed)
TYPED_MODULES_NEED = {"lossmle.dask": "dask"}


def _checkable_typed_modules():
    return [m for m in TYPED_MODULES if m not in TYPED_MODULES_NEED
            or importlib.util.find_spec(TYPED_MODULES_NEED[m]) is not None]


def test_every_public_module_is_typed():
    public = _public_modules()
    # the discovery itself works (a broken one would make this test vacuous)
    assert {"lossmle._special", "lossmle._regression", "lossmle._streaming",
            "lossmle._threads", "lossmle.dask"} <= set(public), public
    untyped = [m for m in public
               if m not in TYPED_MODULES and not _has_stub(m[len("lossmle."):])]
    assert not untyped, (f"public modules with neither a .pyi stub nor inline "
                         f"annotations (TYPED_MODULES): {untyped}")


def test_typed_modules_have_no_stub():
    # a .pyi would shadow the inline annotations: mypy would check the stub
    shadowed = [m for m in TYPED_MODULES if _has_stub(m[len("lossmle."):])]
    assert not shadowed, shadowed


@pytest.fixture(scope="module")
def mypy_errors(run_mypy):
    """One mypy --strict run over both usage files and the typed modules.

    Returns {file name: {line number: error line}}.
    """
    packages = []
    for m in _checkable_typed_modules():
        packages += ["-p", m]
    errors = {}
    # mypy takes files or packages, not both: two runs sharing one cache.
    # dask ships py.typed but its functions are unannotated: calling them from
    # lossmle.dask is no error of lossmle's.
    for targets, files in ((["usage_ok.py", "usage_bad.py"],
                            {"usage_ok.py": GOOD, "usage_bad.py": BAD}),
                           (["--untyped-calls-exclude=dask", *packages], None)):
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


def test_usage_calls_every_public_name():
    # the usage file reaches the whole public API (so every stub is exercised)
    used = set(re.findall(r"\blossmle\.(\w+)", GOOD))
    missing = sorted(set(lossmle.__all__) - used)
    assert not missing, f"public names never used in GOOD: {missing}"


def test_type_errors_are_caught(mypy_errors):
    lines = BAD.splitlines()
    # every line from the first lossmle call on must be flagged, and no other
    first = lines.index(next(l for l in lines if l.startswith("lossmle."))) + 1
    expected = set(range(first, len(lines) + 1))
    assert set(mypy_errors.get("usage_bad.py", {})) == expected, mypy_errors


def test_stubs_match_runtime(run_mypy, tmp_path):
    pytest.importorskip("mypy.stubtest")
    # (a compiled module without a stub fails test_every_compiled_module_has_a_stub)
    stubbed = _stubbed_py_modules()
    assert {"_special", "_regression", "_deprecated"} <= set(stubbed), stubbed
    modules = [f"lossmle.{m}" for m in _compiled_modules() + stubbed if _has_stub(m)]
    config = tmp_path / "stubtest.ini"
    # lossmle's untyped modules import scipy/sklearn, which ship no stubs
    config.write_text("[mypy]\nignore_missing_imports = True\n")
    allow = tmp_path / "allowlist.txt"
    allow.write_text("lossmle\\..*\\.__test__\n")  # Cython's doctest dict
    res = run_mypy("-m", "mypy.stubtest", "--concise", "--mypy-config-file",
                   str(config), "--allowlist", str(allow),
                   "--ignore-unused-allowlist", *modules)
    assert res.returncode == 0, res.stdout + res.stderr
