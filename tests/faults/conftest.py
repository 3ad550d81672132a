"""Fixtures of the fault-injection suite: a deployment on the session's broker and Redis, a
deployment on a Redis of the test's own (for tests that stop, kill or pause Redis), and a
terminal summary of every scenario's report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Deployment, isolated_deployment

from .support import REPORTS, OwnRedis


@pytest.fixture
def deployment(kafka_url: str, redis_url: str, unique: str, tmp_path: Path
               ) -> Iterator[Deployment]:
    """An isolated tracker on the session's broker and Redis (its own topics and keys)."""
    with isolated_deployment(kafka_url, redis_url, unique, tmp_path) as d:
        yield d


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server for this test alone, AOF on (fsync everysec); stopped by PID after it,
    whatever the test did to it."""
    server = OwnRedis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_deployment(kafka_url: str, own_redis: OwnRedis, unique: str, tmp_path: Path
                   ) -> Deployment:
    """An isolated tracker whose Redis is the test's own (see ``own_redis``)."""
    d = Deployment(kafka_url, own_redis.url, unique, tmp_path)
    d.create_topics()
    return d


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    terminalreporter.section("fault-injection reports")
    for report in REPORTS:
        rejected = ", ".join(f"{k}={v}" for k, v in report["rejected"].items()) or "none"
        terminalreporter.write_line(
            f"{report['scenario']}: produced {report['messages_produced']} messages "
            f"({report['valid_events_produced']} valid events), accepted {report['accepted']}, "
            f"duplicates {report['duplicates']}, rejected [{rejected}], lost {report['lost']}, "
            f"double counted {report['double_counted']}, recovery {report['recovery_s']} s, "
            f"max lag {report['max_lag']}"
        )
