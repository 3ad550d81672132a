"""What the bench measures of its child processes: CPU time, run-queue wait, peak RSS.

The children themselves are started with ``devstack.processes.start_process`` in the bench's
work directory (``cwd``: Faust leaves a ``<app id>-data`` folder per worker there, not in the
source tree) and stopped by PID like every process of the local stack.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

RETENTION = [sys.executable, "-m", "retention_tracker.cli"]
FAUST_BASELINE = Path(__file__).resolve().parent / "faust_baseline.py"
#: The baseline's Table: its changelog topic is ``<app id>-events_per_user-changelog``.
FAUST_TABLE = "events_per_user"


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (None once it is gone).

    Taken at both ends of a contender's window it says how much of a core the contender got
    (a machine shared with other work shows up as a low share) and what the broker and
    Redis spent serving it.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def runqueue_wait_seconds(pid: int) -> float | None:
    """Time a process's threads spent runnable but waiting for a CPU (schedstat, summed over
    its threads; None if it is gone or the kernel has no schedstats).

    The difference between "slow because it had no core" and "slow because it waited on
    Redis or the broker": CPU time alone cannot tell them apart on a shared machine.
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[1])  # ns on the run queue
    except (OSError, IndexError, ValueError):
        return None
    return total / 1e9


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy (all CPUs, every process, steal included):
    whether the measured processes had the machine to themselves."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks) - idle - iowait) / _TICKS


class CpuMeter:
    """CPU seconds of named processes between :meth:`start` and :meth:`stop`; also their
    run-queue wait (``waited``) and the machine's busy CPU seconds (``machine_busy_s``)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started: dict[str, float | None] = {}
        self.used: dict[str, float] = {}
        self.started_waits: dict[str, float | None] = {}
        self.waited: dict[str, float] = {}
        self.started_machine: float | None = None
        self.machine_busy_s: float | None = None

    def start(self) -> None:
        self.started = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.started_waits = {name: runqueue_wait_seconds(pid) for name, pid in self.pids.items()}
        self.started_machine = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.started.get(name)
            if now is not None and then is not None:
                self.used[name] = round(now - then, 3)
            now, then = runqueue_wait_seconds(pid), self.started_waits.get(name)
            if now is not None and then is not None:
                self.waited[name] = round(now - then, 3)
        now_busy = machine_busy_seconds()
        if now_busy is not None and self.started_machine is not None:
            self.machine_busy_s = round(now_busy - self.started_machine, 3)
        return self.used


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM of a live process: its peak resident set, what an OOM limit would have to allow.

    Read while the process still runs (the figure disappears with it); None if it is gone.
    """
    return status_bytes(pid, "VmHWM")


def status_bytes(pid: int, name: str) -> int | None:
    """One ``kB`` line of ``/proc/<pid>/status`` (VmHWM, VmRSS) in bytes; None if gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{name}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
