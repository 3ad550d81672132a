"""The plan's engines (streams/engine.py): a module that exercises the plan marks itself
``pytestmark = pytest.mark.usefixtures("engine")`` and runs once per engine. The native
one is skipped only where it was not built; CI fails then (tests/streams/test_engine.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from retention_tracker.streams import engine as engines


@pytest.fixture(scope="module", params=[engines.PYTHON, engines.NATIVE])
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the module's tests with this engine, then go back to the process's choice.
    Module scope: hypothesis refuses function-scoped fixtures, and one switch per module
    is enough (the engine is read once per plan)."""
    if request.param == engines.NATIVE and not engines.native_built():
        pytest.skip(f"the native engine is not built: {engines.why_not_built()}")
    before = engines.running()
    engines.select(request.param)
    try:
        yield request.param
    finally:
        engines.select(before)
