"""Output files of the ``gddim-numerics`` commands: checked up front, written atomically.

Output files are written to a staging folder beside the destination and moved into place only
when all of them were written (nothing half-written on failure).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .plots import plot_errors

JSON_NAME = "results.json"
TABLES_NAME = "tables.md"


def check_writable_folder(path: str | os.PathLike, forbidden: Sequence[Path] = ()) -> Path:
    """Resolve an output folder and prove it can be written, before any work is done.

    Raises
    ------
    ValueError
        If ``path`` is a file, lies inside one of ``forbidden`` (the installed package), or its
        nearest existing folder refuses a trial sub-folder (which is removed at once).
    """
    out = Path(path).expanduser().resolve()
    for root in forbidden:
        if out == root.resolve() or root.resolve() in out.parents:
            raise ValueError(f"output folder {out} lies inside the package ({root}); choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    anchor = next(p for p in (out, *out.parents) if p.exists())
    if not anchor.is_dir():
        raise ValueError(f"cannot create output folder {out}: {anchor} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".gddim-write-check-", dir=anchor))
    except OSError as err:
        raise ValueError(f"cannot write to output folder {out}: {err.strerror} ({anchor})") from None
    return out


def check_writable_file(path: str | os.PathLike) -> Path:
    """Resolve an output file path (its folder is checked like :func:`check_writable_folder`)."""
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise ValueError(f"{target} is a folder; give a file path")
    check_writable_folder(target.parent)
    return target


def write_outputs(results: dict, out: Path, markdown: str, plots: bool) -> list[str]:
    """Write ``results.json``, ``tables.md`` and (with ``plots``) one PNG per diffusion into ``out``.

    Everything goes to a staging folder beside ``out`` first and is moved in at the end, so a
    failure leaves ``out`` as it was. Returns the file names written.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".gddim-validation-", dir=out.parent))
    try:
        stage.chmod(_folder_mode())  # mkdtemp's private 0o700 would become the output folder's mode
        (stage / JSON_NAME).write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
        (stage / TABLES_NAME).write_text(markdown)
        if plots:
            for diffusion in results["results"]:
                plot_errors(results, diffusion, stage / f"error_vs_nfe_{diffusion}.png")
        names = sorted(p.name for p in stage.iterdir())
        if out.exists():
            for name in names:
                os.replace(stage / name, out / name)
            stage.rmdir()
        else:
            os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return names


def _folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder (no partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
