"""Apache Kafka on loopback: one node, or a cluster of several, in KRaft mode.

The broker our users run, started from the jars ``scripts/setup`` copied from Maven Central
(``deploy/kafka/pom.xml`` pins the version) into ``<venv>/kafka-<version>/libs``: nothing is
downloaded here. Every node is a broker and a controller (``process.roles=broker,
controller``) with a static quorum of all nodes (``controller.quorum.voters``), its storage
formatted first (``kafka.tools.StorageTool format``, what ``kafka-storage.sh`` runs), its
settings those of ``deploy/kafka/server.properties`` (the file docker-compose.yml mounts)
plus its identity and addresses, its data in a folder of its own (kept for a restart: the
log is on disk), its ports free loopback ports, and it is stopped by PID
(:mod:`.processes`).

The JVM is sized for a shared two-core machine: a 256 MiB heap growing to 1 GiB (512 MiB
per node of a cluster) with the serial collector, which needs no GC threads of its own.
Measured here (2 cores, other test suites running, load 4-6): formatting 2-4 s, a single
node answering metadata 6-10 s after ``start_kafka`` was called (3 s on a quiet machine),
three nodes 12-13 s; ~350 MB resident per node.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from retention_tracker.devstack.java import java_binary, java_unavailable, pom_property
from retention_tracker.devstack.processes import (
    LOOPBACK,
    PORT_ATTEMPTS,
    ManagedProcess,
    free_port,
    run_sync,
    start_process,
    stop_all,
    wait_for,
)
from retention_tracker.devstack.topics import kafka_answers_metadata

__all__ = [
    "CLUSTER_OF_THREE",
    "PER_NODE",
    "SERVER_PROPERTIES",
    "KafkaCluster",
    "KafkaNode",
    "describe_partitions",
    "kafka_libs",
    "kafka_unavailable",
    "kafka_version",
    "read_properties",
    "start_kafka",
]

#: The repository's deploy/kafka: the pom that pins the version and the broker settings.
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kafka"
SERVER_PROPERTIES = DEPLOY / "server.properties"
POM = DEPLOY / "pom.xml"

#: A cluster of three as production runs it: every topic on three brokers, a write
#: acknowledged (acks=all) once two have it, so one broker may die without losing any.
CLUSTER_OF_THREE = {
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
}

_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
      - name: org.apache.kafka.controller.QuorumController
        level: INFO
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


def kafka_version() -> str:
    """The pinned Apache Kafka version (``deploy/kafka/pom.xml``)."""
    return pom_property(POM, "kafka.version")


def kafka_libs() -> Path:
    """Where ``scripts/setup`` put the broker's jars: inside the virtualenv, per version."""
    return Path(sys.prefix) / f"kafka-{kafka_version()}" / "libs"


def kafka_unavailable() -> str | None:
    """Why Apache Kafka cannot run here (None: it can): no Java 17 or newer, or no jars."""
    problem = java_unavailable()
    if problem is not None:
        return problem
    libs = kafka_libs()
    if not any(libs.glob("kafka_2.13-*.jar")):
        return f"no Kafka jars in {libs} (scripts/setup copies them from Maven Central)"
    return None


def read_properties(path: Path = SERVER_PROPERTIES) -> dict[str, str]:
    """A Java properties file of ``key=value`` lines (comments and blank lines skipped)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


@dataclass
class KafkaNode:
    """One node of a local cluster: a broker and a controller, its ports and its folder."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    process: ManagedProcess | None = None
    previous: list[ManagedProcess] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


@dataclass
class KafkaCluster:
    """Apache Kafka nodes on loopback; ``url`` names them all (``kafka://h:p,h:p``)."""

    nodes: list[KafkaNode]
    heap: str
    quick_start: bool
    overrides: dict[str, str]
    cluster_id: str

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes)

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def processes(self) -> list[ManagedProcess]:
        return [p for n in self.nodes for p in [*n.previous, *([n.process] if n.process else [])]]

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def kill(self, node_id: int) -> None:
        """SIGKILL a node, like a machine lost: no controlled shutdown, no flush."""
        process = self.node(node_id).process
        if process is not None:
            process.kill()

    def stop_node(self, node_id: int) -> None:
        """SIGTERM a node: a controlled shutdown (leadership moved away, log flushed)."""
        process = self.node(node_id).process
        if process is not None:
            process.stop(timeout_s=60)

    def pause(self, node_id: int) -> None:
        """SIGSTOP a node: alive but silent (a long GC pause, a frozen VM)."""
        self._signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self._signal(node_id, signal.SIGCONT)

    def _signal(self, node_id: int, sig: signal.Signals) -> None:
        process = self.node(node_id).process
        if process is not None and process.alive():
            os.killpg(process.pid, sig)

    def restart(self, node_id: int, timeout_s: float = 60) -> None:
        """Start a stopped or killed node again on its ports and its log on disk."""
        node = self.node(node_id)
        if node.process is not None:
            node.process.stop()
            node.previous.append(node.process)
        node.process = _spawn(node, self.heap, self.quick_start)
        wait_for(lambda: _up(node, len(self.nodes)), timeout_s,
                 f"kafka node {node_id} on port {node.port}")

    def stop(self) -> None:
        """Stop every node by its PID (SIGCONT first: a paused JVM cannot shut down)."""
        for node in self.nodes:
            self.resume(node.node_id)
        stop_all(self.processes, timeout_s=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_kafka(nodes: int = 1, data_dir: Path | None = None,
                overrides: Mapping[str, str] | None = None, heap: str | None = None,
                quick_start: bool = True, timeout_s: float = 90) -> KafkaCluster:
    """Format and start ``nodes`` Apache Kafka nodes; return once every one is a live broker.

    ``overrides`` change settings of ``deploy/kafka/server.properties`` (a cluster of three:
    :data:`CLUSTER_OF_THREE`). ``data_dir`` (default: a new temporary folder, left for
    post-mortems) holds each node's properties, log and data. ``quick_start``: see
    :func:`_spawn`. A start that fails because a port was taken meanwhile is retried on new
    ports; otherwise the end of a log explains.
    """
    problem = kafka_unavailable()
    if problem:
        raise RuntimeError(f"Apache Kafka cannot start: {problem}")
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="kafka-"))
    heap = heap or ("-Xmx1g" if nodes == 1 else "-Xmx512m")
    for attempt in range(1, PORT_ATTEMPTS + 1):
        cluster = KafkaCluster(
            [KafkaNode(i, free_port(), free_port(), data_dir / f"attempt-{attempt}" / f"node-{i}")
             for i in range(1, nodes + 1)],
            heap, quick_start, dict(overrides or {}), _cluster_id())
        try:
            _format(cluster)
            for node in cluster.nodes:
                node.process = _spawn(node, heap, quick_start)

            def all_up(cluster: KafkaCluster = cluster) -> bool:
                dead = [n for n in cluster.nodes if not n.alive()]
                if dead:
                    raise _NodeDied(dead[0])
                return _up(cluster.nodes[0], nodes)

            wait_for(all_up, timeout_s, f"{nodes} kafka node(s)", 0.2)
        except _NodeDied as died:
            cluster.stop()
            if attempt == PORT_ATTEMPTS or not _lost_a_port(died.node):
                raise RuntimeError(f"kafka node {died.node.node_id} exited while starting; log "
                                   f"{died.node.log_dir}/kafka.log:\n{_tail(died.node)}") from None
            continue
        except BaseException:
            cluster.stop()
            raise
        return cluster
    raise AssertionError("unreachable")


class _NodeDied(Exception):
    def __init__(self, node: KafkaNode) -> None:
        super().__init__(node.node_id)
        self.node = node


def _cluster_id() -> str:
    """A random cluster id as Kafka writes one (``kafka-storage.sh random-uuid``): 16 bytes,
    URL-safe base64 without padding, and, as Kafka's own, never starting with a dash (the
    format tool would read one as an option: it failed the bench once in 64 starts)."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


#: What each node adds to the shared settings: its identity and addresses (docker-compose.yml
#: sets the same as KAFKA_* variables, and nothing else).
PER_NODE = ("node.id", "process.roles", "listeners", "advertised.listeners",
            "controller.quorum.voters", "log.dirs")


def _properties(node: KafkaNode, cluster: KafkaCluster) -> dict[str, str]:
    settings = read_properties()
    settings.update(cluster.overrides)
    settings.update({
        "node.id": str(node.node_id),
        "process.roles": "broker,controller",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{node.port},CONTROLLER://{LOOPBACK}:"
                     f"{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{node.port}",
        "controller.quorum.voters": ",".join(
            f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in cluster.nodes),
        "log.dirs": str(node.data_dir / "data"),
    })
    return settings


def _format(cluster: KafkaCluster) -> None:
    """Write each node's properties and format its storage, all nodes at once (each format
    is a JVM start, ~1.5 s)."""
    java = java_binary() or "java"

    def run(node: KafkaNode) -> subprocess.CompletedProcess[str]:
        node.log_dir.mkdir(parents=True, exist_ok=True)
        (node.data_dir / "log4j2.yaml").write_text(_LOG4J2)
        lines = [f"{k}={v}" for k, v in _properties(node, cluster).items()]
        (node.data_dir / "server.properties").write_text("\n".join(lines) + "\n")
        return subprocess.run(
            [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
             f"-Dlog4j2.configurationFile={node.data_dir / 'log4j2.yaml'}",
             "-cp", f"{kafka_libs()}/*", "kafka.tools.StorageTool", "format",
             "-t", cluster.cluster_id, "-c", str(node.data_dir / "server.properties")],
            capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=len(cluster.nodes)) as pool:
        results = list(pool.map(run, cluster.nodes))
    for node, result in zip(cluster.nodes, results, strict=True):
        if result.returncode != 0:
            raise RuntimeError(f"formatting kafka node {node.node_id} failed:\n"
                               f"{result.stdout}{result.stderr}")


def _spawn(node: KafkaNode, heap: str, quick_start: bool) -> ManagedProcess:
    """``quick_start``: the C1 compiler only (``-XX:TieredStopAtLevel=1``): the JVM compiles
    less while starting (measured here under load: answering after 5.7 s instead of 9.9 s)
    and runs slower for long; the bench starts without it."""
    java = java_binary() or "java"
    jit = ["-XX:TieredStopAtLevel=1"] if quick_start else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "JAVA_TOOL"))}
    return start_process(
        [java, "-Xms256m", heap, "-XX:+UseSerialGC", *jit, "-XX:+ExitOnOutOfMemoryError",
         "-Djava.awt.headless=true",
         f"-Dlog4j2.configurationFile={node.data_dir / 'log4j2.yaml'}",
         "-cp", f"{kafka_libs()}/*", "kafka.Kafka", str(node.data_dir / "server.properties")],
        f"kafka-{node.node_id}", env, node.log_dir / "kafka.log")


def _up(node: KafkaNode, brokers: int) -> bool:
    return kafka_answers_metadata(node.port, brokers)


def _lost_a_port(node: KafkaNode) -> bool:
    return "Address already in use" in _tail(node)


def _tail(node: KafkaNode) -> str:
    return node.process.log_tail() if node.process else ""


def describe_partitions(bootstrap: str, topic: str) -> dict[int, dict[str, Any]]:
    """Partition -> {"leader": node id, "isr": [node ids]} of ``topic``, as metadata says."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def ask() -> dict[int, dict[str, Any]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            topics: Any = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return {p["partition"]: {"leader": p["leader"], "isr": sorted(p["isr"])}
                for t in topics if t["topic"] == topic for p in t["partitions"]}

    return run_sync(ask)
