"""pyproject.toml: dependency floors that the resolver honours, gymnax capped below 2, and
every third-party module the tests import declared directly (not only reachable through
another package's requirements)."""

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
DEV = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]
LOCAL = {"memjax", "experiments", "reference", "conftest"}


def canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def floor(requirement: Requirement):
    """The lowest version ``requirement`` admits (None if it has no lower bound)."""
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(bounds) if bounds else None


def applies(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({"extra": ""})


def test_installed_versions_are_in_the_declared_ranges():
    for requirement in RUNTIME + DEV:
        assert requirement.specifier.contains(metadata.version(requirement.name),
                                              prereleases=True), requirement


def test_floors_cover_what_the_installed_dependencies_require():
    """E.g. flax 0.12.8 requires jax >= 0.10 and jax 0.10 requires numpy >= 2.0: a floor
    below that would let the resolver pick a set that cannot import."""
    declared = {canonical(r.name): r for r in RUNTIME}
    too_low = []
    for dependent in declared:
        for text in metadata.requires(dependent) or []:
            need = Requirement(text)
            name = canonical(need.name)
            if name not in declared or not applies(need) or floor(need) is None:
                continue
            ours = floor(declared[name])
            if ours is None or ours < floor(need):
                too_low.append(f"{name} {declared[name].specifier}: {dependent} "
                               f"{metadata.version(dependent)} requires {need.specifier}")
    assert not too_low, too_low


def test_gymnax_is_capped_below_2():
    gymnax = next(r for r in RUNTIME if canonical(r.name) == "gymnax")
    assert gymnax.specifier.contains("1.0.1") and not gymnax.specifier.contains("2.0.0")


def third_party_imports(paths) -> set:
    modules = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in LOCAL
            and not m.startswith("test_")}


def test_every_third_party_module_the_tests_import_is_declared():
    declared = {canonical(r.name) for r in RUNTIME + DEV}
    distributions = metadata.packages_distributions()
    missing = {}
    for module in third_party_imports(sorted((ROOT / "tests").glob("*.py"))):
        names = {canonical(d) for d in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported by tests/ but not in pyproject.toml: {missing}"
