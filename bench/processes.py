"""Starting the bench's child processes in its work directory, and reading their peak RSS.

``local_stack.start_process`` runs children in the current directory, where Faust leaves a
``<app id>-data`` folder per worker; the bench runs them in its own work directory instead
so a run leaves nothing in the source tree. Everything else (own process group, stop by
PID, SIGKILL fallback, the atexit safety net) is ``local_stack.ManagedProcess``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from retention_tracker.agents.local_stack import ManagedProcess

RETENTION = [sys.executable, "-m", "retention_tracker.agents"]
FAUST_BASELINE = Path(__file__).resolve().parent / "faust_baseline.py"


def spawn(args: list[str], name: str, env: dict[str, str], log_path: Path, cwd: Path
          ) -> ManagedProcess:
    """Like ``local_stack.start_process`` (exact env, log appended, own session), in ``cwd``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"=== {time.strftime('%H:%M:%S')} starting {name}: {args}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    return ManagedProcess(popen, name, log_path)


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


class CpuMeter:
    """CPU seconds of named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started: dict[str, float | None] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self.started = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.started.get(name)
            if now is not None and then is not None:
                self.used[name] = round(now - then, 3)
        return self.used


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM of a live process: its peak resident set, what an OOM limit would have to allow.

    Read while the process still runs (the figure disappears with it); None if it is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
