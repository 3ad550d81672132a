"""The engine selector (streams/engine.py): ENGINE=auto|native|python, one readable error
where the native engine is asked for and missing, and CI's promise that it is built."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from retention_tracker.streams import engine


@pytest.fixture
def restore() -> Iterator[None]:
    before = engine.running()
    try:
        yield
    finally:
        engine.select(before)


def test_ci_builds_the_native_engine() -> None:
    """CI has gcc: a build that fell back to Python there is a broken build, not a skip."""
    if os.environ.get("CI") != "true":
        pytest.skip("CI only (a developer's machine may lack a compiler)")
    assert engine.native_built(), engine.why_not_built()


def test_python_is_selected_and_described(restore: None) -> None:
    assert engine.select("python") == "python"
    assert engine.native() is None
    assert engine.describe().startswith("python")


@pytest.mark.skipif(not engine.native_built(), reason="the native engine is not built")
def test_auto_and_native_run_the_built_module(restore: None) -> None:
    assert engine.select("auto") == "native"
    assert engine.select("native") == "native"
    assert engine.native() is not None
    assert engine.describe().startswith("native")


def test_native_where_not_built_is_one_readable_line(
        restore: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_built", None)
    monkeypatch.setattr(engine, "_why_not", "No module named '_native'")
    with pytest.raises(engine.EngineError, match=r"^ENGINE=native but .*not built") as info:
        engine.select("native")
    assert "\n" not in str(info.value)
    assert engine.select("auto") == "python"  # auto falls back
    assert "fallback" in engine.describe()


def test_an_unknown_engine_is_refused(restore: None) -> None:
    with pytest.raises(engine.EngineError, match="expected one of auto, native, python"):
        engine.select("fast")
