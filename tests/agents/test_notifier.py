"""agents/notifier.py: which topic, key and partition each win-back message goes to (the
recording on a real Redis, and the messages of real workers, are tests/e2e/test_winback.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from retention_tracker.agents.metrics import WorkerMetrics
from retention_tracker.agents.notifier import Notifier
from retention_tracker.config.settings import Settings
from retention_tracker.devstack.topics import ensure_topics
from retention_tracker.streams.batch import BatchRules


def notifier() -> Notifier:
    settings = Settings(inactive_topic_pattern="lapsed.{days}d", reactivated_topic="back")
    return Notifier(settings, store=None, rules=BatchRules(400),  # type: ignore[arg-type]
                    metrics=WorkerMetrics(CollectorRegistry()), clock_ms=lambda: 0)


def test_each_threshold_has_its_topic_and_every_message_is_keyed_by_its_user() -> None:
    inactive: list[dict[str, Any]] = [{"threshold_days": 2, "user_id": "u1"},
                                      {"threshold_days": 7, "user_id": "u2"}]
    back: list[dict[str, Any]] = [{"threshold_days": [2, 7], "user_id": "u3"}]
    messages = notifier()._messages(inactive, back)
    assert [(topic, key) for topic, key, _ in messages] == [
        ("lapsed.2d", "u1"), ("lapsed.7d", "u2"), ("back", "u3")]
    assert [body for _, _, body in messages] == [*inactive, *back]


async def test_messages_go_to_the_default_partitioners_partition(
        kafka_url: str, unique: str) -> None:
    """On a real broker: every message arrives once, with its body, keyed by its user, on
    the partition Kafka's default partitioner gives that key (the notifier gives the
    partition itself), also when a partition's messages fill several record batches."""
    servers = kafka_url.removeprefix("kafka://")
    lapsed, back = f"lapsed-{unique}.2d", f"back-{unique}"
    await ensure_topics(servers, {lapsed: 3, back: 1})
    sender = notifier()
    sender.settings = Settings(inactive_topic_pattern=f"lapsed-{unique}.{{days}}d",
                               reactivated_topic=back)
    sender.producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await sender.producer.start()
    padding = "x" * 700  # ~50 messages of a partition overflow a 16 kB record batch
    inactive: list[dict[str, Any]] = [
        {"threshold_days": 2, "user_id": f"user-{n}", "pad": padding} for n in range(150)]
    reactivated: list[dict[str, Any]] = [{"threshold_days": [2], "user_id": "user-1"}]
    try:
        await sender.send(inactive, reactivated)
    finally:
        await sender.producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(lapsed, p) for p in range(3)] + [TopicPartition(back, 0)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        got: list[tuple[str, int, bytes, dict[str, Any]]] = []
        deadline = asyncio.get_running_loop().time() + 30
        while sum(ends.values()) > len(got) and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got += [(r.topic, r.partition, r.key, orjson.loads(r.value)) for r in records]
    finally:
        await consumer.stop()
    partitioner = DefaultPartitioner()
    assert sorted(got, key=lambda r: (r[0], r[3]["user_id"])) == sorted(
        [(lapsed, partitioner(m["user_id"].encode(), [0, 1, 2], [0, 1, 2]),
          m["user_id"].encode(), m) for m in inactive]
        + [(back, 0, b"user-1", reactivated[0])], key=lambda r: (r[0], r[3]["user_id"]))
