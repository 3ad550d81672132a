"""The layers of docs/architecture.md "Package layout": each imports only the layers above
it, and the pure domain imports no I/O library at all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# devstack (the local brokers, Redis and processes) serves cli/ (`retention demo`), bench/ and
# the tests, never the worker: it comes after agents/, so agents/ cannot import it
LAYERS = ["streams", "config", "state", "agents", "devstack", "cli", "bench"]
# what a pure module may not import: the outside world
# the one edge against the order: `retention bench` (the flags, in cli/) runs the benchmark
ALLOWED = {("cli/bench.py", "retention_tracker.bench")}
IO_MODULES = {"os", "redis", "aiokafka", "faust", "socket", "subprocess", "asyncio", "aiohttp"}


def imports_of(path: Path) -> set[str]:
    """Every module name a file imports (absolute names; relative ones resolved to the
    file's own package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = f"retention_tracker.{path.relative_to(ROOT).parts[0]}"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add(f"{package}.{node.module}" if node.module else package)
            elif node.module:
                names.add(node.module)
    return names


def modules(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_above_it(layer: str) -> None:
    below = LAYERS[LAYERS.index(layer) + 1:]
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(layer)
        for name in imports_of(path)
        if any(name == f"retention_tracker.{b}" or name.startswith(f"retention_tracker.{b}.")
               for b in below)
        and (str(path.relative_to(ROOT)), name) not in ALLOWED
    ]
    assert modules(layer), f"no modules in {layer}/"
    assert not wrong, wrong


#: the state layer's pure modules: where a thing lives is computed, never read
PURE_STATE = [ROOT / "state" / "layout.py"]


def test_the_pure_domain_does_no_io() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in [*modules("streams"), *PURE_STATE]
        for name in imports_of(path)
        if name.split(".")[0] in IO_MODULES
    ]
    assert not wrong, wrong


def test_the_worker_never_imports_the_reference() -> None:
    """The batch reference is the tests' oracle: a worker computing a figure with it would
    make the comparison compare the reference with itself."""
    wrong = [
        f"{path.relative_to(ROOT)}"
        for layer in ("streams", "config", "state", "agents", "cli")
        for path in modules(layer)
        if "retention_tracker.bench.reference" in imports_of(path)
    ]
    assert not wrong, wrong
