"""Import memjax as it was at another git revision, beside this checkout's, in one process.

The benchmarks that compare "before" and "after" a change time both in the same process,
interleaved, as every other memjax benchmark does: ``import_revision("da0a727")`` extracts that
revision's ``memjax/`` package with ``git archive`` into a temporary folder under the name
``memjax_da0a727`` (its own imports rewritten to that name) and imports it. The two packages
share jax, flax and the compiled-program caches, nothing else.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_IMPORT = re.compile(r"(?m)^(\s*)(from|import)\s+memjax\b")


def _rewrite(source: str, package: str) -> str:
    """``source`` with its ``memjax`` imports (statements and ``"memjax.x"`` module names)
    pointing at ``package``."""
    source = _IMPORT.sub(lambda m: f"{m.group(1)}{m.group(2)} {package}", source)
    return re.sub(r"""(["'])memjax\.""", lambda m: f"{m.group(1)}{package}.", source)


def import_revision(revision: str, root: Path = ROOT):
    """The ``memjax`` package of git ``revision`` (of the repository at ``root``), imported as
    ``memjax_<revision>``; or, when ``revision`` is a folder holding a ``memjax/`` package (a
    revision extracted beforehand, for a machine without the git history), that package,
    imported as ``memjax_<folder name>``.

    Raises:
      ValueError: ``revision`` is neither.
    """
    if (Path(revision) / "memjax" / "__init__.py").is_file():
        package = f"memjax_{Path(revision).resolve().name}"
        if package in sys.modules:
            return sys.modules[package]
        folder = Path(tempfile.mkdtemp(prefix="memjax-revision-"))
        shutil.copytree(Path(revision) / "memjax", folder / package)
        return _import_renamed(folder, package)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", f"{revision}^{{commit}}"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, "memjax"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise ValueError(f"cannot read revision {revision!r} of {root}: {e}") from None
    package = f"memjax_{commit}"
    if package in sys.modules:
        return sys.modules[package]
    folder = Path(tempfile.mkdtemp(prefix="memjax-revision-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "memjax").rename(folder / package)
    return _import_renamed(folder, package)


def _import_renamed(folder: Path, package: str):
    """Import ``folder/package`` (a copy of ``memjax/``) after rewriting its imports."""
    for path in (folder / package).rglob("*.py"):
        path.write_text(_rewrite(path.read_text(), package))
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(folder))


def config_for(train_module, settings: dict):
    """``settings`` (flat, by name) as the ``TrainConfig`` of ``train_module`` (a revision's
    ``memjax.train``): through its ``replace`` when it routes agent knobs, else the dataclass
    fields it has (a revision from before agent configs took every knob flat)."""
    config_class = train_module.TrainConfig
    if hasattr(config_class, "settings"):
        return config_class(agent=settings.get("agent", "dqn")).replace(
            **{k: v for k, v in settings.items() if k != "agent"}
        )
    names = {f.name for f in dataclasses.fields(config_class)}
    return dataclasses.replace(config_class(), **{k: v for k, v in settings.items() if k in names})


__all__ = ["import_revision", "config_for"]
