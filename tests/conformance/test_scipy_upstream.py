"""SciPy's own tests for logsumexp, softmax, log_softmax, entropy and rel_entr,
run against lossmle.

Each suite is a pytest run (a subprocess) of SciPy's installed test module
with the plugin ``lossmle_scipy_plugin``, which replaces SciPy's functions by
adapters calling lossmle (numpy backend).  Every upstream case must pass or
be listed in ``deviations.SCIPY_DEVIATIONS``; the sabotage test shows that
the cases really reach lossmle (a lossmle that raises fails them all).
"""
import fnmatch
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("scipy")

import lossmle  # noqa: E402

from deviations import SCIPY_DEVIATIONS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# (suite name, module, -k expression or None)
SUITES = [
    ("logsumexp", "scipy.special.tests.test_logsumexp", None),
    ("entropy", "scipy.stats.tests.test_entropy", "TestEntropy"),
    ("entropy_nan_policy", "scipy.stats.tests.test_axis_nan_policy",
     "entropy and not differential"),
    ("rel_entr", "scipy.special.tests.test_basic", "rel_entr"),
]


def run_suite(module, kexpr, tmp_path, sabotage=False):
    """Run one upstream module under the plugin; returns {test id: passed?}."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    junit = tmp_path / "junit.xml"
    env = dict(os.environ)
    # the lossmle this session imported (a build tree or an installed one)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(lossmle.__file__)), HERE]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("LOSSMLE_CONFORMANCE_SABOTAGE", None)
    if sabotage:
        env["LOSSMLE_CONFORMANCE_SABOTAGE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"),
           "--rootdir", str(tmp_path), "-p", "lossmle_scipy_plugin", "-p", "no:cacheprovider",
           "-q", "--junitxml", str(junit), "--pyargs", module]
    if kexpr:
        cmd += ["-k", kexpr]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    if not junit.exists():
        raise AssertionError(f"upstream run did not report:\n{proc.stdout}\n{proc.stderr}")
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        if case.find("skipped") is not None:
            continue
        outcomes[name] = case.find("failure") is None and case.find("error") is None
    assert outcomes, f"no upstream case ran:\n{proc.stdout[-3000:]}"
    return outcomes, proc.stdout


def listed(suite, name):
    return next((reason for (s, pat), reason in SCIPY_DEVIATIONS.items()
                 if s == suite and fnmatch.fnmatchcase(name, pat)), None)


@pytest.mark.parametrize("suite,module,kexpr", SUITES, ids=[s[0] for s in SUITES])
def test_upstream_suite_passes_or_deviation_listed(suite, module, kexpr, tmp_path):
    outcomes, log = run_suite(module, kexpr, tmp_path)
    unlisted = sorted(n for n, ok in outcomes.items() if not ok and listed(suite, n) is None)
    stale = sorted(n for n, ok in outcomes.items() if ok and listed(suite, n) is not None)
    n_pass = sum(outcomes.values())
    print(f"{suite}: {n_pass} passed, {len(outcomes) - n_pass} listed deviations")
    assert not unlisted, "upstream failures not in deviations.py:\n" + "\n".join(unlisted) \
        + "\n" + log[-5000:]
    assert not stale, "listed deviations that now pass (remove them):\n" + "\n".join(stale)


@pytest.mark.parametrize("suite,module,kexpr", SUITES[:2] + SUITES[3:],
                         ids=[s[0] for s in SUITES[:2] + SUITES[3:]])
def test_layer_really_calls_lossmle(suite, module, kexpr, tmp_path):
    """A lossmle whose functions raise fails the upstream cases (all but
    those that never call the function under test)."""
    outcomes, _ = run_suite(module, kexpr, tmp_path, sabotage=True)
    failed = sum(not ok for ok in outcomes.values())
    assert failed >= 0.95 * len(outcomes), (failed, len(outcomes))
