"""The test tree's habits (docs/development.md "Tests and benchmark"): no test module
imports another (helpers and fixtures live in non-test modules and conftest.py), and the
unit tests of a module sit in tests/<package>/test_<module>.py."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
PACKAGES = ("streams", "config", "state", "agents", "devstack", "cli", "bench")


def imported_modules(path: Path) -> set[str]:
    """The test-tree modules a file imports, as paths relative to tests/ without .py."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.parent.relative_to(TESTS).parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[: len(package) - node.level + 1])
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found.update("/".join([*base, *name.split(".")]) for name in names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests."):
            found.add(str(node.module).removeprefix("tests.").replace(".", "/"))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("tests.").replace(".", "/")
                         for a in node.names if a.name.startswith("tests."))
    return found


def test_no_test_module_imports_another() -> None:
    offenders = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        tests = {m for m in imported_modules(path) if m.rsplit("/", 1)[-1].startswith("test_")}
        if tests:
            offenders[str(path.relative_to(ROOT))] = sorted(tests)
    assert offenders == {}


def test_the_check_sees_relative_and_absolute_imports() -> None:
    """The check itself, on a file placed as tests/e2e/test_x.py would be."""
    sample = TESTS / "e2e" / "test_page.py"
    assert "e2e/harness" in imported_modules(sample)
    assert "streams/real_apply" in imported_modules(TESTS / "test_docs_metrics.py")
    assert "streams/real_apply" in imported_modules(TESTS / "state" / "test_queries.py")


def test_unit_tests_sit_beside_their_module() -> None:
    """No tests/<package>/test_<module>.py for a module of another package."""
    misplaced = []
    for path in sorted(TESTS.glob("*/test_*.py")):
        package = path.parent.name
        if package not in PACKAGES:
            continue
        module = path.stem.removeprefix("test_")
        for other in PACKAGES:
            if other != package and (ROOT / other / f"{module}.py").exists() and not (
                    ROOT / package / f"{module}.py").exists():
                misplaced.append(f"{path.relative_to(ROOT)} tests {other}/{module}.py")
    assert misplaced == []


def test_every_importable_folder_is_a_declared_package() -> None:
    """setuptools warns (about 40 lines each, before the demo's URL) for a folder under a
    package that Python could import but `packages` leaves out, such as the page's static/."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(setuptools["packages"])
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for sub in [ROOT / folder, *(ROOT / folder).rglob("*")]:
            rel = sub.relative_to(ROOT / folder).parts
            if sub.is_dir() and all(p.isidentifier() and p != "__pycache__" for p in rel):
                found.add(".".join([name, *rel]))
    assert found - declared == set()
    assert "retention_tracker.agents.static" in declared
