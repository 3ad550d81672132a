"""Starting a worker (agents/worker.py): ENGINE=native where the native engine was not
built stops it with one readable line, before it touches Redis or Kafka."""

from __future__ import annotations

import pytest

from retention_tracker.agents.worker import EXIT_FATAL, run_worker
from retention_tracker.config.settings import Settings
from retention_tracker.streams import engine


def test_native_engine_missing_stops_the_worker_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    before = engine.running()
    monkeypatch.setattr(engine, "_built", None)
    monkeypatch.setattr(engine, "_why_not", "no compiler")
    try:
        assert run_worker(Settings(engine="native")) == EXIT_FATAL
    finally:
        monkeypatch.undo()
        engine.select(before)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["retention: error: ENGINE=native but the native engine was not built "
                     "(no compiler); reinstall the project with a C compiler (scripts/setup), "
                     "or set ENGINE=auto"]
