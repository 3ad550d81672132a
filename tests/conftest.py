"""Session-wide real services for the tests: one broker and one redis-server.

The broker is Apache Kafka (a single KRaft node, devstack.apache_kafka) wherever Java 17
and the jars of ``scripts/setup`` are found, else Tansu (the session's summary says which
and why). Both run on free loopback ports and are stopped by PID when the session ends
(and by the ``atexit`` hook of ``devstack.processes`` if the session dies).
``KAFKA_BROKER`` / ``REDIS_URL`` in the environment name existing services to use instead;
a given Redis is never flushed,
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

from retention_tracker.devstack.broker import LocalBroker, start_broker
from retention_tracker.devstack.processes import ManagedProcess, started_processes
from retention_tracker.devstack.redis_server import start_redis

#: Processes the session fixtures started; listed with every failing test.
_SESSION_PROCESSES: list[ManagedProcess] = []
#: The session's broker, once started: named in the terminal summary.
_BROKER: list[LocalBroker] = []
#: How many processes had been started when a test began (to list only its own ones).
_STARTED_BEFORE = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def kafka_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``kafka://host:port`` of the session's broker: $KAFKA_BROKER, else our own (Apache
    Kafka, or Tansu where it cannot run). What a worker needs on it (on Tansu,
    ``KAFKA_IDEMPOTENCE=false``) goes into this process's environment, which every
    worker and CLI the tests start copies."""
    given = os.environ.get("KAFKA_BROKER")
    if given:
        yield given if "://" in given else f"kafka://{given}"
        return
    broker = start_broker(log_dir=tmp_path_factory.mktemp("broker"))
    _SESSION_PROCESSES.extend(broker.processes)
    _BROKER.append(broker)
    saved = {name: os.environ.get(name) for name in broker.worker_env}
    os.environ.update(broker.worker_env)
    try:
        with broker:
            yield broker.url
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Which broker the session ran on and why: a run on the Tansu fallback must say so."""
    for broker in _BROKER:
        terminalreporter.write_line(
            f"broker: {broker.name} ({broker.why}), answering {broker.start_s:.1f} s after "
            "its start")
