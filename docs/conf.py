"""Sphinx configuration of the gddim-numerics documentation.

Build: ``python -m sphinx -W --keep-going -b html docs OUTDIR`` (the ``docs`` extra installs Sphinx
and numpydoc). The API reference lists every name of ``gddim_numerics.__all__`` and
``gddim_numerics.backends.__all__``: :func:`api_source` writes it into ``api.rst`` at read time,
so names added to ``__all__`` appear without editing the docs. Nothing is written into the
source tree.
"""

import importlib.util
import inspect
import pkgutil
import sys

import gddim_numerics
import gddim_numerics.backends

project = "gddim-numerics"
author = "gddim-numerics developers"
copyright = "gddim-numerics developers"  # noqa: A001  (Sphinx's option name)
release = gddim_numerics.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]
exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
#: Optional dependencies a module may import at its top: mocked when absent, so that the
#: reference builds with the ``docs`` extra alone.
OPTIONAL = ("torch", "cupy", "jax", "dask", "distributed", "diffusers", "matplotlib", "tqdm", "sklearn")
autodoc_mock_imports = [name for name in OPTIONAL if importlib.util.find_spec(name) is None]

#: (module, names) documented on the API page, in this order.
PUBLIC = (
    ("gddim_numerics", gddim_numerics.__all__),
    ("gddim_numerics.backends", gddim_numerics.backends.__all__),
)
API_MARKER = ".. public-names::"
MODULES_MARKER = ".. module-list::"
#: Packages whose modules (all but ``_private`` ones) get a section on the modules page.
PACKAGES = ("gddim_numerics", "gddim_numerics.backends", "gddim_numerics.validation")


def directive_for(module, name: str) -> str:
    """The autodoc directive of one public name: class, function or data."""
    obj = getattr(module, name)
    if inspect.isclass(obj):
        return f".. autoclass:: {module.__name__}.{name}\n   :members:\n   :inherited-members:\n"
    if callable(obj):
        return f".. autofunction:: {module.__name__}.{name}\n"
    return f".. autodata:: {module.__name__}.{name}\n   :no-value:\n"


def home_module(package, name: str) -> str:
    """The module that defines the public ``package.name`` (for data: the module holding it)."""
    obj = getattr(package, name)
    home = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isroutine(obj)) else None
    if home is None:
        prefix = package.__name__ + "."
        holders = sorted(m for m, mod in list(sys.modules.items())
                         if m.startswith(prefix) and getattr(mod, name, None) is obj)
        home = holders[0] if holders else package.__name__
    return home


def first_paragraph(modname: str) -> str:
    """The first paragraph of a module's docstring (whole, so inline markup stays closed)."""
    doc = inspect.getdoc(sys.modules[modname]) or ""
    lines = doc.split("\n\n")[0].strip().splitlines()
    if len(lines) > 1 and set(lines[1].strip()) <= set("-=~^#*"):  # a section title: keep its text
        lines = lines[:1]
    return "\n".join(lines)


def api_source() -> str:
    """reST of every public name: one section per public package, grouped by defining module."""
    parts = []
    for modname, names in PUBLIC:
        package = __import__(modname, fromlist=["_"])
        title = f"``{modname}``"
        parts.append(f"{title}\n{'=' * len(title)}\n\n.. currentmodule:: {modname}\n")
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(home_module(package, name), []).append(name)
        for home in sorted(groups):
            sub = f"From ``{home}``"
            parts.append(f"{sub}\n{'-' * len(sub)}\n\n{first_paragraph(home)}\n")
            parts.extend(directive_for(package, name) for name in groups[home])
    return "\n".join(parts)


def module_names() -> list[str]:
    """The packages of :data:`PACKAGES` and their non-private modules, found by walking them."""
    names = []
    for package in PACKAGES:
        module = __import__(package, fromlist=["_"])
        names.append(package)
        names.extend(f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__)
                     if not info.name.startswith("_") and not info.ispkg)
    return names


def modules_source() -> str:
    """reST of every module: its docstring and its documented members."""
    parts = []
    for name in module_names():
        title = f"``{name}``"
        # a package re-exports its modules' names (its __all__, on the API page): docstring only
        members = "" if name in PACKAGES else "   :members:\n"
        parts.append(f"{title}\n{'-' * len(title)}\n\n.. automodule:: {name}\n{members}")
    return "\n".join(parts)


def _insert_generated(app, docname, source):
    if docname == "api":
        source[0] = source[0].replace(API_MARKER, api_source())
    elif docname == "modules":
        source[0] = source[0].replace(MODULES_MARKER, modules_source())


def _resolve_short_name(app, env, node, contnode):
    """Resolve a Python cross-reference written without its module (``StepTables``,
    ``LinearDiffusion.log_snr``) to the one documented object whose full name ends with it,
    the shortest one, so the public ``gddim_numerics.NAME`` path wins; ties and unknown names stay text."""
    if node.get("refdomain") != "py":
        return None
    from sphinx.util.nodes import make_refnode

    target = node["reftarget"].lstrip("~.")
    objects = env.get_domain("py").objects
    matches = sorted((name for name in objects if name.endswith("." + target)), key=len)
    if not matches:
        return None
    if len(matches) > 1 and len(matches[0]) == len(matches[1]):
        return None
    entry = objects[matches[0]]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, matches[0])


def setup(app):
    app.connect("source-read", _insert_generated)
    app.connect("missing-reference", _resolve_short_name)
    return {"parallel_read_safe": True}
