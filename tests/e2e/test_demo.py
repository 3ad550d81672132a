"""``retention demo`` as a user runs it (a subprocess starting its own broker, Redis and
worker): when a process it started dies, it says which, shows the end of that process's log,
stops the others by PID and exits non-zero (before issue 26 the page stopped answering, the
terminal said nothing and the demo exited 0)."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest

from retention_tracker.devstack.processes import start_process, wait_for

pytestmark = pytest.mark.e2e


def running(pid: int) -> bool:
    """True while a process with this PID exists (a zombie counts: not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("phase", ["feeding", "serving"])
def test_the_demo_stops_and_says_why_when_its_worker_dies(phase: str, tmp_path: Path) -> None:
    """``feeding``: the worker is SIGKILLed while the simulation is being produced;
    ``serving``: after it (the demo then only serves the page)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BROKER", "REDIS_URL")}
    env["PYTHONUNBUFFERED"] = "1"  # the banner reaches the log as it is printed
    days, seconds_per_day = ("3", "60") if phase == "feeding" else ("1", "0.5")
    log = tmp_path / "demo.log"
    demo = start_process(
        [sys.executable, "-m", "retention_tracker.cli", "demo", "--days", days,
         "--installs-per-day", "20", "--seconds-per-day", seconds_per_day,
         "--workdir", str(tmp_path / "work")], "demo", env, log)
    with demo:
        ready = "retention demo is running" if phase == "feeding" else "simulation done"

        def printed() -> bool:
            assert demo.alive(), demo.log_tail()
            return ready in log.read_text()

        wait_for(printed, 120, f"the demo's {ready!r}")
        found = re.search(r"^  pids    (.*?)  \(watched", log.read_text(), re.M)
        assert found, log.read_text()
        pids = {name: int(pid) for name, pid in
                (part.rsplit(" ", 1) for part in found.group(1).split(", "))}
        # the broker it started: one Apache Kafka node, or Tansu where no Java 17 is found
        assert set(pids) - {"redis-server", "worker"} in ({"kafka-1"}, {"tansu"}), pids
        assert {"redis-server", "worker"} <= set(pids), pids
        os.kill(pids["worker"], signal.SIGKILL)
        wait_for(lambda: not demo.alive(), 60, "the demo's exit")
        code = demo.stop()
    text = log.read_text()
    assert code == 1, text
    assert f"the worker (pid {pids['worker']}) was killed by signal 9; the end of " in text
    worker_log = (tmp_path / "work" / "worker.log").read_text().splitlines()
    last = next(line for line in reversed(worker_log) if line.strip())
    assert f"  {last}" in text.split("was killed by signal 9")[1].splitlines()  # its log's end
    wait_for(lambda: not any(map(running, pids.values())), 30, "every process it started gone")
