"""Sphinx configuration: ``python -m sphinx -b html docs docs/_build/html``.

Set ``SKTRANSFER_QUICK_GALLERY=1`` to run every gallery example on smaller
subsets (what CI does).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sktransfer  # noqa: E402

project = "sktransfer"
author = "the sktransfer developers"
copyright = "2026, the sktransfer developers"
release = version = sktransfer.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples/README.txt"]
autosummary_generate = True
templates_path = ["_templates"]
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_validation_checks = set()
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]

intersphinx_mapping = {}  # offline builds: no inventories to download

html_theme = "pydata_sphinx_theme"
html_title = f"sktransfer {version}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    # the class pages' "minigallery" lists the examples that use the class
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("sktransfer",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
}
os.environ.setdefault("MPLBACKEND", "Agg")


def _skip_routing_methods(app, what, name, obj, skip, options):
    # scikit-learn's generated set_*_request methods document its own
    # glossary, which these docs do not have.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_routing_methods)
