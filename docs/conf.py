"""Sphinx configuration of mixprec's documentation: the guides (Markdown) and the API reference (docstrings).

Build it as the docs tox env does, nitpicky, with every warning an error::

    sphinx-build -W --keep-going -n -b html docs docs/_build/html

The reference is generated from the docstrings of the installed ``mixprec`` distribution (autodoc,
with napoleon reading their Google-style ``Args:`` sections); the Markdown guides are read by
myst-parser, so the pages a newcomer reads on GitHub are the same pages as on the site.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from typing import Any

from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer

import mixprec

project = "mixprec"
author = "the mixprec authors"
copyright = "the mixprec authors"
release = mixprec.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_heading_anchors = 3

# --- the reference -------------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# Broken references are errors (``-n -W``), but the network is not reachable where the docs are
# built, so there is no intersphinx inventory for the libraries mixprec builds on. Their types appear
# in signatures; these references are known to point outside this site and are not checked:
nitpick_ignore_regex = [
    # torch: tensors, dtypes, optimizers, GradScaler, modules
    ("py:.*", r"torch(\..*)?"),
    # Lightning: the Precision classes mixprec's objects are, and their type aliases. mixprec imports
    # them only for type checking, so autodoc sees some by the short names they are imported as.
    ("py:.*", r"lightning(\..*)?"),
    ("py:class", r"Precision|TrainerPrecision"),
    # Python's standard library (no intersphinx inventory either): Mapping and Callable in annotations
    ("py:class", r"collections\.abc\..*"),
]

# --- the site ------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"mixprec {release}"

# --- corrections to autodoc and napoleon ------------------------------------------------------------------


def _defining_module(module: str, name: str) -> str | None:
    """The module that ``module`` imports ``name`` from (``from X import name``), if it does."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and any(a.name == name for a in node.names):
            return node.module
    return None


#: What autodoc documents as attributes; their docstrings are prose, their types the annotations.
_ATTRIBUTES = frozenset({"attribute", "data", "property"})
_prose: dict[str, list[str]] = {}


def _attribute_doc(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Keep an attribute's docstring as written, and give a re-exported constant the comment it has where defined.

    napoleon reads the first line of an attribute's docstring as ``type: description`` (Google
    style); mixprec's docstrings begin "what it is: more", with the type in the annotation. And
    autodoc looks for a constant's ``#:`` comment only in the module it documents it under
    (``mixprec``), and otherwise shows the docstring of the value's type (``dict``'s, pluggy's
    marker's). Runs before napoleon; :func:`_attribute_doc_restored` puts the text back after it.
    """
    if what not in _ATTRIBUTES:
        return
    module, _, attr = name.rpartition(".")
    source = _defining_module(module, attr) if what == "data" else None
    if source is not None:
        lines[:] = list(ModuleAnalyzer.for_module(source).find_attr_docs().get(("", attr)) or [])
    _prose[name] = list(lines)


def _attribute_doc_restored(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what in _ATTRIBUTES and name in _prose:
        lines[:] = _prose.pop(name)


def _dataclass_factory_defaults(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str | None, str | None] | None:
    """Show a dataclass field's ``default_factory()`` as its default (``{}``) instead of ``<factory>``.

    ``<factory>`` is not Python, so Sphinx could not parse the signature and its types would not be linked.
    """
    if signature is None or not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        return None
    for field in dataclasses.fields(obj):
        if field.init and field.default_factory is not dataclasses.MISSING:
            signature = signature.replace("<factory>", repr(field.default_factory()), 1)
    return signature, return_annotation


def setup(app: Sphinx) -> None:
    # napoleon processes docstrings at the default priority, 500.
    app.connect("autodoc-process-docstring", _attribute_doc, priority=400)
    app.connect("autodoc-process-docstring", _attribute_doc_restored, priority=600)
    app.connect("autodoc-process-signature", _dataclass_factory_defaults)
