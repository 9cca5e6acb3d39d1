"""pyproject.toml: dependency floors that the resolver honours, caps below the next major
versions (gymnax below 2), every third-party module the tests import declared directly (not
only reachable through another package's requirements), the version in one place, the
license."""

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
# the package, the scripts, and the tests' own helper modules (tests/*.py that are not tests)
LOCAL = {"memjax", "experiments"} | {
    p.stem for p in (ROOT / "tests").glob("*.py") if not p.name.startswith("test_")
}


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
        assert requirement.specifier.contains(
            metadata.version(requirement.name), prereleases=True
        ), requirement


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
                too_low.append(
                    f"{name} {declared[name].specifier}: {dependent} "
                    f"{metadata.version(dependent)} requires {need.specifier}"
                )
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
    return {
        m
        for m in modules
        if m not in sys.stdlib_module_names and m not in LOCAL and not m.startswith("test_")
    }


def test_every_third_party_module_the_tests_import_is_declared():
    declared = {canonical(r.name) for r in RUNTIME + DEV}
    distributions = metadata.packages_distributions()
    missing = {}
    for module in third_party_imports(sorted((ROOT / "tests").glob("*.py"))):
        names = {canonical(d) for d in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported by tests/ but not in pyproject.toml: {missing}"


def ceiling(requirement: Requirement):
    """The lowest version ``requirement`` excludes from above (None if it has no cap)."""
    caps = [Version(s.version) for s in requirement.specifier if s.operator in ("<", "<=", "==")]
    return min(caps) if caps else None


def test_every_runtime_dependency_is_capped_below_its_next_major_version():
    """A cap on each runtime dependency (next major; for 0.x the next minor), above what is
    installed and, for jax and flax, above the versions the GPU machine runs (0.11.2, 0.12.10)."""
    uncapped = [str(r) for r in RUNTIME if ceiling(r) is None]
    assert not uncapped, f"no upper bound: {uncapped}"
    known = {"jax": ["0.10.2", "0.11.2"], "flax": ["0.12.8", "0.12.10"]}
    for requirement in RUNTIME:
        for version in known.get(canonical(requirement.name), []):
            assert requirement.specifier.contains(version), (requirement, version)


def test_the_version_is_written_once():
    """pyproject reads it from memjax.__version__ (statically: building imports no memjax)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    attr = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "memjax.__version__"
    tree = ast.parse((ROOT / "memjax" / "__init__.py").read_text())
    assigned = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]
    ]
    assert len(assigned) == 1 and Version(assigned[0])  # a literal setuptools reads via ast


def test_license():
    assert PROJECT["license"] == "Apache-2.0"
    for name in PROJECT["license-files"]:
        assert (ROOT / name).is_file(), name
    assert "Apache License" in (ROOT / "LICENSE").read_text()
