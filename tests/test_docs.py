"""The documentation in ``docs/``: its examples run, and it builds without a warning.

* Every ``>>>`` example of the user guide and the mathematics page, and of every module docstring
  of the three packages, runs and prints what the page says (doctest).
* ``help(gd.sample)`` lists the fields of the result and has an example.
* With Sphinx and numpydoc installed (the ``docs`` extra), the HTML build passes with warnings as
  errors, and its object inventory holds every public name of ``gddim_numerics`` and
  ``gddim_numerics.backends``; otherwise the build test is skipped.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import importlib.util
import pkgutil
import pydoc
import subprocess
import sys
from pathlib import Path

import pytest

import gddim_numerics as gd
import gddim_numerics.backends

DOCS = Path(__file__).resolve().parents[1] / "docs"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
PACKAGES = ("gddim_numerics", "gddim_numerics.backends", "gddim_numerics.validation")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names += [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules(module.__path__)]
    return names


@pytest.mark.parametrize("page", ["guide.rst", "math.rst"])
def test_page_examples_run(page):
    if page == "guide.rst":
        pytest.importorskip("torch")  # the guide's network is a PyTorch function
    result = doctest.testfile(str(DOCS / page), module_relative=False, optionflags=FLAGS, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/{page} failed (see output)"


def test_docstring_examples_run():
    failed, attempted = 0, 0
    for name in _modules():
        result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS, verbose=False)
        failed, attempted = failed + result.failed, attempted + result.attempted
    assert attempted > 0
    assert failed == 0, f"{failed} of {attempted} docstring examples failed (see output)"


def test_help_of_sample_lists_result_fields_and_an_example():
    text = pydoc.render_doc(gd.sample, renderer=pydoc.plaintext)
    for field in dataclasses.fields(gd.SampleResult):
        assert f"``{field.name}``" in text, f"help(gd.sample) does not describe SampleResult.{field.name}"
    assert ">>> " in text and "gd.sample(" in text


def _public_names() -> list[str]:
    return ([f"gddim_numerics.{n}" for n in gd.__all__]
            + [f"gddim_numerics.backends.{n}" for n in gddim_numerics.backends.__all__])


@pytest.mark.slow
def test_docs_build_without_warnings_and_list_every_public_name(tmp_path):
    if importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("numpydoc") is None:
        pytest.skip("the docs extra (sphinx, numpydoc) is not installed")
    from sphinx.util.inventory import InventoryFile

    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    with open(out / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    documented = {name for entries in inventory.values() for name in entries}
    missing = [n for n in _public_names() if n not in documented]
    assert not missing, f"public names missing from the API reference: {missing}"
    api = (out / "api.html").read_text(encoding="utf-8")
    assert all(f'id="{n}"' in api for n in _public_names())
