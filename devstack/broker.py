"""The local broker: Apache Kafka where Java 17 and the jars are found, else Tansu.

One choice for the tests, ``retention demo`` and ``retention bench``, and the reason for it,
so that a run on the stand-in says so instead of passing for a run on Kafka.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

from retention_tracker.devstack.apache_kafka import (
    KafkaCluster,
    kafka_unavailable,
    kafka_version,
    start_kafka,
)
from retention_tracker.devstack.processes import ManagedProcess
from retention_tracker.devstack.tansu import start_tansu

__all__ = ["BROKER_KINDS", "LocalBroker", "start_broker"]

BrokerKind = Literal["auto", "kafka", "tansu"]
BROKER_KINDS: tuple[BrokerKind, ...] = ("auto", "kafka", "tansu")


@dataclass
class LocalBroker:
    """A started local broker: what it is, why it was chosen, where it listens, and the
    settings a worker on it needs (``worker_env``)."""

    name: str  # "Apache Kafka 4.4.0" or "Tansu"
    why: str
    url: str  # kafka://127.0.0.1:P
    processes: list[ManagedProcess]
    start_s: float  # spawn to first metadata answer (formatting included for Kafka)
    cluster: KafkaCluster | None = None
    worker_env: dict[str, str] = field(default_factory=dict)

    @property
    def is_kafka(self) -> bool:
        return self.cluster is not None

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        for process in self.processes:
            process.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_broker(log_dir: Path | None = None, kind: BrokerKind = "auto",
                 quick_start: bool = True) -> LocalBroker:
    """Start one broker on loopback. ``auto``: Apache Kafka (single KRaft node) if it can
    run here, else Tansu; ``kafka`` or ``tansu``: that one, or an error saying why not.
    ``quick_start=False``: Kafka's JVM with its full JIT (the bench: steady speed over a
    quick start)."""
    problem = kafka_unavailable() if kind != "tansu" else None
    started = time.monotonic()
    if kind == "tansu" or (kind == "auto" and problem):
        process, url = start_tansu(log_dir=log_dir)
        why = "asked for" if kind == "tansu" else f"the fallback: {problem}"
        # Tansu answers an idempotent produce with UnknownError
        return LocalBroker("Tansu", why, url, [process], time.monotonic() - started,
                           worker_env={"KAFKA_IDEMPOTENCE": "false"})
    if problem:
        raise RuntimeError(f"Apache Kafka cannot start: {problem}")
    cluster = start_kafka(data_dir=log_dir / "kafka" if log_dir else None,
                          quick_start=quick_start)
    why = "asked for" if kind == "kafka" else "Java 17 and the jars of scripts/setup found"
    return LocalBroker(f"Apache Kafka {kafka_version()}", why, cluster.url, cluster.processes,
                       time.monotonic() - started, cluster=cluster)
