"""Session-wide real services for the tests: one Tansu broker and one redis-server.

Both run on free loopback ports and are stopped by PID when the session ends (and by the
``atexit`` hook in ``local_stack`` if the session dies). ``KAFKA_BROKER`` / ``REDIS_URL``
in the environment name existing services to use instead; a given Redis is never flushed,
so tests isolate themselves with the ``unique`` fixture (topic names, group ids, key
prefixes) and delete only their own keys. A SIGTERM to pytest (a CI timeout) is turned into
an interrupt so the same teardown runs; only SIGKILL can still leave servers behind. When a
test fails, its report gets a
"local stack logs" section with the log file of every process started for it.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from retention_tracker.agents.local_stack import (
    ManagedProcess,
    start_broker,
    start_redis,
    started_processes,
)

#: Processes the session fixtures started; listed with every failing test.
_SESSION_PROCESSES: list[ManagedProcess] = []
#: How many processes had been started when a test began (to list only its own ones).
_STARTED_BEFORE = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def kafka_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``kafka://host:port`` of the session's broker: $KAFKA_BROKER, else our own Tansu."""
    given = os.environ.get("KAFKA_BROKER")
    if given:
        yield given if "://" in given else f"kafka://{given}"
        return
    process, url = start_broker(log_dir=tmp_path_factory.mktemp("broker"))
    _SESSION_PROCESSES.append(process)
    with process:
        yield url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://host:port/db`` of the session's Redis: $REDIS_URL, else our own server.

    A given REDIS_URL is used but never flushed: tests use their own key prefixes and
    delete only those.
    """
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    process, url = start_redis(data_dir=tmp_path_factory.mktemp("redis"))
    _SESSION_PROCESSES.append(process)
    with process:
        yield url


@pytest.fixture
def unique() -> str:
    """A short random name part, so tests sharing a broker and a Redis never collide."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where a test's own processes write their logs (kept by pytest for the last runs)."""
    return tmp_path


def pytest_configure(config: pytest.Config) -> None:
    """Make SIGTERM behave like Ctrl-C: pytest then tears the session fixtures down.

    By default SIGTERM ends Python without running teardown or ``atexit`` hooks, which would
    leave the broker and Redis running as orphans. Left alone if someone installed a handler.
    """
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED_BEFORE] = len(started_processes())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, say where the logs of the broker, Redis and workers are."""
    report = yield
    if report.failed:
        own = started_processes()[item.stash.get(_STARTED_BEFORE, 0):]
        processes = _SESSION_PROCESSES + [p for p in own if p not in _SESSION_PROCESSES]
        if processes:
            lines = [f"{p.name} (pid {p.pid}, {_state(p)}): {p.log_path}" for p in processes]
            report.sections.append(("local stack logs", "\n".join(lines)))
    return report


def _state(process: ManagedProcess) -> str:
    return "running" if process.alive() else f"exited {process.returncode}"
