"""The slow tier of tests/conftest.py names tests that exist (a renamed test would silently
move to the default tier), and both tiers keep tests of every file that has any."""

import ast
from pathlib import Path

from conftest import ALL, DEFAULT_SLOWEST_FIRST, SLOW, SLOWEST_FIRST

TESTS = Path(__file__).resolve().parent


def defined_tests(path: Path) -> set:
    return {
        node.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_slow_name_is_a_test():
    missing = []
    for file, names in SLOW.items():
        path = TESTS / file
        if not path.exists():
            missing.append(file)
        elif names != ALL:
            defined = defined_tests(path)
            missing += [f"{file}::{n}" for n in sorted(names) if n.split("[")[0] not in defined]
    assert not missing, f"tests/conftest.py SLOW names what does not exist: {missing}"


def test_orders_name_existing_files():
    assert all((TESTS / f).exists() for f in SLOWEST_FIRST + DEFAULT_SLOWEST_FIRST)


def test_most_files_keep_a_quick_test():
    """Only files that are all subprocess runs are slow as a whole."""
    assert {f for f, names in SLOW.items() if names == ALL} <= {
        "test_devices.py",
        "test_docs.py",
        "test_learning.py",
    }
