"""Sphinx configuration of lossmle's documentation (``sphinx-build -W -b html docs out``)."""
import datetime
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import lossmle
except ImportError:  # a source tree built in place (python setup.py build_ext --inplace)
    sys.path.insert(0, str(HERE.parent))
    import lossmle

import api_names  # noqa: E402

# The API page's lists come from lossmle.__all__: a new public name needs no edit here.
_generated = api_names.render(lossmle)
_target = HERE / "_api_names.rst"
if not _target.exists() or _target.read_text() != _generated:
    _target.write_text(_generated)

project = "lossmle"
author = "the lossmle authors"
copyright = f"{datetime.date.today().year}, {author}"
release = lossmle.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_api_names.rst", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# _api_names.rst is included, not a page of its own: name it for the stub generator
autosummary_generate = ["api.rst", "_api_names.rst"]
autosummary_imported_members = True
autodoc_typehints = "none"
numpydoc_show_class_members = True
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = False
# With -W these fail the build: a parameter missing from (or unknown to) its
# docstring's Parameters, a function without Returns, a documented object
# without a docstring.
numpydoc_validation_checks = {"PR01", "PR02", "RT01", "GL08"}

default_role = "code"
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

intersphinx_mapping = {}
if os.environ.get("LOSSMLE_DOCS_INTERSPHINX"):  # off by default: CI builds offline
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "scipy": ("https://docs.scipy.org/doc/scipy", None),
    }

html_theme = "pydata_sphinx_theme"
html_title = f"lossmle {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
# pages without sub-pages: no (empty) section navigation on the left
html_sidebars = {"index": [], "getting_started": [], "performance": [], "changelog": []}
html_static_path = ["_static"]
html_css_files = ["lossmle.css"]
html_show_sourcelink = False
