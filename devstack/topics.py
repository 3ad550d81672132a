"""Topics of the local stack's brokers: created, waited for, and the broker's first answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from retention_tracker.agents.replication import default_replication_factor
from retention_tracker.devstack.processes import LOOPBACK, run_sync, tcp_accepts

__all__ = ["ensure_topics", "kafka_answers_metadata"]


def kafka_answers_metadata(port: int, brokers: int = 1) -> bool:
    """A real Kafka request, because an open socket alone does not mean requests are served;
    true once the cluster lists ``brokers`` brokers (all nodes of a local cluster)."""
    if not tcp_accepts(port):
        return False

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"{LOOPBACK}:{port}", request_timeout_ms=1000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return len(cluster.get("brokers") or []) >= brokers
        except (KafkaError, OSError, TimeoutError):
            return False
        finally:
            await admin.close()

    return run_sync(probe)




def _bootstrap(servers: str) -> str:
    return servers.removeprefix("kafka://")


async def ensure_topics(
    bootstrap_servers: str, topics: dict[str, int], timeout_s: float = 30
) -> None:
    """Create ``topics`` (name -> partitions) and wait until metadata shows them.

    Replicated as the worker's own topics are (the cluster's default replication factor,
    :func:`~retention_tracker.agents.replication.default_replication_factor`).

    Idempotent: a topic that already exists is fine if it has the asked partition count,
    and a ``ValueError`` otherwise -- per-key ordering and the shard layout depend on it.
    Waiting for the metadata (read for all topics, which auto-creates nothing) means a
    consumer started right afterwards sees every partition instead of racing the broker.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(bootstrap_servers))
    try:
        await admin.start()
        replicas = await default_replication_factor(admin)
        response: Any = await admin.create_topics(
            [NewTopic(name, num_partitions=n, replication_factor=replicas)
             for name, n in topics.items()]
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
