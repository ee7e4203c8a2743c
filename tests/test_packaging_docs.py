"""The documentation's examples run, and the docs list every public name.

* Every ``Examples`` section of every public docstring (``lossmle.__all__``,
  the methods and properties of its classes, and ``lossmle.dask``) runs as a
  doctest, so an example can no longer show a number the code does not return.
* Every Python code block of README.md and of the Sphinx sources in ``docs/``
  runs as a doctest too.  A block is one DocTest with its own namespace (each
  block does its own imports); a block that imports an optional package that
  is not installed (dask, matplotlib, torch, sklearn) is skipped.
* Every name of ``lossmle.__all__`` is in the README's table of public names
  and in the API reference page, so a new public name cannot be forgotten.

NumPy's print options are fixed for the run (``legacy="1.25"``: ``0.5``, not
``np.float64(0.5)``), and the examples print rounded numbers, so the output
does not depend on the NumPy version or the machine.
"""
import doctest
import importlib.util
import inspect
import pathlib
import re

import numpy as np
import pytest

import lossmle

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
API_PAGE = DOCS / "api.rst"

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

#: top-level modules an example may import that lossmle does not require
OPTIONAL = ("dask", "distributed", "matplotlib", "torch", "sklearn", "scipy", "mpmath",
            "jax")

PUBLIC = [n for n in lossmle.__all__ if n != "__version__"]


@pytest.fixture(autouse=True)
def _print_options():
    old = np.get_printoptions()
    np.set_printoptions(legacy="1.25")
    try:
        yield
    finally:
        np.set_printoptions(**old)


def _missing_optional(source):
    """The optional packages a piece of example code imports and this machine lacks."""
    needed = set(re.findall(r"^\s*(?:>>>|\.\.\.)?\s*(?:from|import)\s+([A-Za-z_]\w*)",
                            source, flags=re.M))
    if re.search(r"lossmle(?:\.dask|\s+import\s+dask)", source):
        needed.add("dask")
    if "SoftmaxRegression(" in source:  # fit() drives scipy.optimize (extra 'mle')
        needed.add("scipy")
    return sorted(m for m in needed & set(OPTIONAL) if importlib.util.find_spec(m) is None)


def _run(test):
    missing = _missing_optional("\n".join(ex.source for ex in test.examples))
    if missing:
        pytest.skip(f"{test.name} needs {', '.join(missing)}")
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out = []
    runner.run(test, out=out.append)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, "".join(out)


# ------------------------------------------------------------------ docstrings

def _public_objects():
    objs = [(f"lossmle.{n}", getattr(lossmle, n)) for n in PUBLIC]
    if importlib.util.find_spec("dask") is not None:
        import lossmle.dask as lmd
        objs += [(f"lossmle.dask.{n}", getattr(lmd, n)) for n in lmd.__all__]
    return objs


def _docstring_tests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = {}
    for qualname, obj in _public_objects():
        # module=False: a class's methods are searched whatever module says
        for t in finder.find(obj, qualname, module=False, globs={}):
            tests.setdefault(t.name, t)
    return [tests[k] for k in sorted(tests)]


DOCSTRING_TESTS = _docstring_tests()


@pytest.mark.parametrize("test", DOCSTRING_TESTS, ids=[t.name for t in DOCSTRING_TESTS])
def test_docstring_examples(test):
    _run(test)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_an_example(name):
    names = {t.name.split(".")[1] for t in DOCSTRING_TESTS if t.examples}
    obj = getattr(lossmle, name)
    if inspect.isclass(obj) and issubclass(obj, Warning):
        pytest.skip("a warning class has nothing to show")
    assert name in names, f"lossmle.{name} has no Examples section"


# --------------------------------------------------- README and docs/ code blocks

_MD_BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_RST_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)\.\. (?:code-block|code|sourcecode)::[ \t]*(?P<lang>\w*)[^\n]*\n"
    r"(?P<opts>(?:(?P=indent)[ \t]+:[^\n]*\n)*)"
    r"(?P<body>(?:[ \t]*\n|(?P=indent)[ \t]+[^\n]*\n)*)", re.M)


def _blocks(path):
    """(language, code, line) of every code block of a Markdown / reST file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        for m in _MD_BLOCK.finditer(text):
            yield m.group(1).lower(), m.group(2), text.count("\n", 0, m.start()) + 2
    else:
        for m in _RST_BLOCK.finditer(text):
            body = inspect.cleandoc("\n" + m.group("body"))
            yield m.group("lang").lower(), body, text.count("\n", 0, m.start()) + 2
        # a bare reST doctest block (a paragraph starting with >>>)
        for m in re.finditer(r"(?:\A|\n[ \t]*\n)((?:>>>[^\n]*\n)(?:[^\n]+\n)*)", text):
            yield "pycon", m.group(1), text.count("\n", 0, m.start(1)) + 1


def _doc_files():
    files = [README] + sorted(DOCS.rglob("*.rst")) + sorted(DOCS.rglob("*.md"))
    return [f for f in files if f.exists() and "_build" not in f.parts
            and "generated" not in f.parts]


def _code_block_cases():
    cases = []
    for f in _doc_files():
        for lang, code, line in _blocks(f):
            if lang in ("python", "py", "pycon", "python3", ""):
                if lang == "" and ">>>" not in code:
                    continue
                cases.append(pytest.param(f, lang, code, line,
                                          id=f"{f.relative_to(ROOT)}:{line}"))
    return cases


CODE_BLOCKS = _code_block_cases()


@pytest.mark.parametrize("path, lang, code, line", CODE_BLOCKS)
def test_code_block_runs(path, lang, code, line):
    assert ">>>" in code, (
        f"{path.name}:{line}: a Python block must be written as a doctest "
        "(>>> lines with their output) so that the test suite can run it")
    name = f"{path.relative_to(ROOT)}:{line}"
    test = doctest.DocTestParser().get_doctest(code, {}, name, str(path), line - 1)
    _run(test)


def test_there_are_code_blocks_to_run():
    readme = [c for c in CODE_BLOCKS if c.values[0] == README]
    assert len(readme) >= 2
    assert len(CODE_BLOCKS) > len(readme)


# ------------------------------------------------------- every public name listed

@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_in_readme_table(name):
    rows = [ln for ln in README.read_text(encoding="utf-8").splitlines()
            if ln.startswith("|")]
    assert any(re.search(rf"`{re.escape(name)}[`(]", ln) for ln in rows), (
        f"lossmle.{name} is missing from the README's table of public names")


def test_api_page_lists_every_public_name():
    """The API page's autosummary lists are generated from ``lossmle.__all__``.

    docs/conf.py writes them (docs/_api_names.rst); a name may also be listed
    by hand in docs/api.rst to give it a section of its own.
    """
    import sys
    sys.path.insert(0, str(DOCS))
    try:
        spec = importlib.util.spec_from_file_location("_lossmle_api_names",
                                                      DOCS / "api_names.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(DOCS))
    text = mod.render(lossmle)
    listed = set(re.findall(r"^[ ]+(\w+)$", text, flags=re.M))
    missing = sorted(set(PUBLIC) - listed)
    assert not missing, f"not in the API reference: {missing}"
    unknown = sorted(listed - set(PUBLIC) - set(getattr(lossmle, "__deprecated__", ())))
    assert not unknown, f"listed in the API reference but not public: {unknown}"


def test_readme_links_lead_somewhere():
    """Every relative link of the README names a file of the checkout; a link on a
    public name leads to the module that defines it (where its docstring is)."""
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\[([^\]]+)\]\(([^)#\s]+)[^)]*\)", text)
    assert links
    for label, target in links:
        if re.match(r"\w+://", target):
            continue
        path = ROOT / target
        assert path.exists(), f"README links {label!r} to {target}, which does not exist"
        name = label.strip("`")
        if name in PUBLIC:
            src = path.read_text(encoding="utf-8")
            assert re.search(rf"^(?:def|class) {name}\b|^{name} = ", src, flags=re.M), (
                f"README links {name} to {target}, which does not define it")
