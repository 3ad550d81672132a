"""Starting and stopping the processes of the local stack, by PID, and waiting on conditions.

One mechanism for every process the tests, ``retention demo`` and ``retention bench`` start
(brokers, redis-server, workers, the bench's contenders): each runs in its own session
(process group) on loopback ports chosen at random and is stopped by its PID -- never by
name, so a developer's other brokers and the Redis on 6379 are never touched. Should this
interpreter be SIGKILLed (no teardown, no ``atexit``), Linux kills the children too
(parent-death signal, see :func:`start_process`).

Readiness is always a condition polled with a deadline (:func:`wait_for`), never a fixed
sleep: a sleep is either too short on a loaded CI machine or wastes time everywhere else.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

__all__ = [
    "LOOPBACK",
    "PORT_ATTEMPTS",
    "SYSTEM_REDIS_PORT",
    "ManagedProcess",
    "free_port",
    "run_sync",
    "start_process",
    "start_server",
    "started_processes",
    "tcp_accepts",
    "wait_for",
]

LOOPBACK = "127.0.0.1"
#: The machine's own Redis. We never start on, connect to or stop anything on this port.
SYSTEM_REDIS_PORT = 6379
#: How often a process is asked to start again when the random port it got was taken
#: in the meantime (free_port() can only say which port was free a moment ago).
PORT_ATTEMPTS = 3

T = TypeVar("T")


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago.

    The kernel picks it (bind to port 0), so parallel test runs do not collide the way a
    fixed port range would. It can still be taken before our process binds it; the
    ``start_*`` functions therefore retry with a new port when the server dies on start.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if port != SYSTEM_REDIS_PORT:  # not in the ephemeral range anyway; be explicit
            return port


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` at the deadline.

    This is the only way this module waits: on a condition, with a deadline, so that a slow
    machine only makes things slower and a broken one fails with a message saying *what*
    never became ready. Exceptions raised by ``predicate`` propagate at once (use that to
    fail fast, e.g. when the process being waited on has died); a predicate that probes
    something not yet up should catch the expected errors itself and return False.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{what} not ready after {timeout_s}s")
        time.sleep(min(interval_s, remaining))


class ManagedProcess:
    """A child process we started, in its own process group, stopped only by its PID.

    ``start_new_session=True`` makes the child the leader of a new process group whose id is
    its PID, so signalling that group reaches anything it forked and nothing else. We learn
    that the leader has exited with ``waitid(WNOWAIT)``, which leaves it a zombie: while it
    is unreaped its PID cannot be reused, so the final SIGKILL to the group cannot hit an
    unrelated process. Usable as a context manager (stops on exit, also when a test fails)
    and stopped by an ``atexit`` hook if the interpreter exits with it still running.
    """

    def __init__(self, popen: subprocess.Popen[bytes], name: str, log_path: Path) -> None:
        self.popen = popen
        self.name = name
        self.log_path = log_path
        _LIVE.add(self)
        _STARTED.append(self)

    @property
    def pid(self) -> int:
        """PID of the child, which is also its process-group id."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has been reaped (negative: killed by that signal)."""
        return self.popen.returncode

    def alive(self) -> bool:
        """True while the process runs; does not reap it (see the class docstring)."""
        if self.popen.returncode is not None:
            return False
        if not hasattr(os, "waitid"):  # not on every Unix; reaping early is only less strict
            return self.popen.poll() is None
        try:
            exited = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere; let Popen record that
            self.popen.poll()
            return False
        return exited is None

    def stop(self, timeout_s: float = 10) -> int:
        """SIGTERM the process group, wait up to ``timeout_s``, then SIGKILL; return the code.

        A graceful stop first, so a worker can commit what it applied and a broker can close
        its sockets; SIGKILL afterwards also removes anything the process left behind in its
        group. Safe to call more than once and on a process that already exited.
        """
        if self.alive():
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not self.alive(), timeout_s, f"{self.name} exit", 0.02)
        return self._finish()

    def kill(self) -> int:
        """SIGKILL the process group at once, like a crash or an OOM kill; return the code."""
        return self._finish()

    def _finish(self) -> int:
        # Leader still unreaped (alive or zombie), so its PID is still ours: kill the group.
        if self.popen.returncode is None:
            self._signal_group(signal.SIGKILL)
        code = self.popen.wait()
        _LIVE.discard(self)
        return code

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:  # group already empty
            pass
        except PermissionError:  # only the leader's PID is certainly ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of the log file, for error messages that explain why a start failed."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - max_bytes))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid} {state} log={self.log_path}>"


_LIVE: set[ManagedProcess] = set()
_STARTED: list[ManagedProcess] = []


def started_processes() -> list[ManagedProcess]:
    """Every process this interpreter started, oldest first: to point at logs after a failure."""
    return list(_STARTED)


def stop_all(processes: list[ManagedProcess], timeout_s: float = 10) -> None:
    """Stop several processes at once: SIGTERM to all first, then each waited for (SIGKILL
    after ``timeout_s``), so the graceful shutdowns (a Kafka node's takes seconds) overlap
    instead of adding up."""
    for process in processes:
        if process.alive():
            process._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.stop(timeout_s=max(0.0, deadline - time.monotonic()))


@atexit.register
def _stop_leftovers() -> None:
    """Last line of defence: stop whatever a crashed test or Ctrl-C left running."""
    stop_all(list(_LIVE), timeout_s=5)


def start_process(
    args: list[str],
    name: str,
    env: dict[str, str],
    log_path: Path,
    die_with_parent: bool = True,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start ``args`` with exactly ``env`` (not merged), stdout and stderr appended to a log.

    ``cwd``: where it runs (created if missing); the bench runs its children in its work
    directory, where Faust leaves its ``<app id>-data`` folders, not in the source tree.

    The log is appended to, with a header line, so a worker restarted in a crash test keeps
    the story of its earlier lives in the same file.

    ``die_with_parent``: teardown and ``atexit`` cannot run when this interpreter is
    SIGKILLed -- the OOM killer did exactly that to a test run here and left its broker and
    Redis behind. So on Linux the child is started through ``setpriv --pdeathsig KILL``
    (util-linux; it sets the flag and execs, so the PID stays the child's) and is killed by
    the kernel when we die. Only from the main thread: the kernel sends the signal when the
    *thread* that forked exits, and a pool thread may exit long before we do.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if cwd is not None:
        cwd.mkdir(parents=True, exist_ok=True)
    command = list(args)
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if die_with_parent and setpriv and threading.current_thread() is threading.main_thread():
        command = [setpriv, "--pdeathsig", "KILL", "--", *command]
    with open(log_path, "ab") as log:
        log.write(f"=== {time.strftime('%H:%M:%S')} starting {name}: {args}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(popen, name, log_path)


def start_server(
    name: str,
    port: int | None,
    command: Callable[[int], list[str]],
    log_path: Path,
    ready: Callable[[int], bool],
    timeout_s: float,
) -> tuple[ManagedProcess, int]:
    """Start a server and wait until ``ready(port)``; retry on a fresh port if it lost a race.

    If the process dies while we wait, we fail at once with the end of its log rather than
    after the timeout.
    """
    attempts = 1 if port is not None else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        process = start_process(command(chosen), name, dict(os.environ), log_path)

        def up(process: ManagedProcess = process, chosen: int = chosen) -> bool:
            if not process.alive():
                raise _Died(process)
            return ready(chosen)

        try:
            wait_for(up, timeout_s, f"{name} on port {chosen}")
        except _Died:
            process.stop()
            if attempt == attempts:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} while starting; "
                    f"log {process.log_path}:\n{process.log_tail()}"
                ) from None
            continue
        except BaseException:
            process.stop()
            raise
        return process, chosen
    raise AssertionError("unreachable")


class _Died(Exception):
    def __init__(self, process: ManagedProcess) -> None:
        super().__init__(process.name)


def tcp_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even when called inside an event loop.

    ``asyncio.run`` refuses to nest, and async fixtures or ``retention demo`` may call the
    sync ``start_*`` functions from within a loop; then the coroutine runs in a thread.
    """

    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


