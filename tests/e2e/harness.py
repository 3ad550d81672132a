"""What end-to-end tests share: worker processes, the CLI as a subprocess, producing, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from retention_tracker.devstack.processes import ManagedProcess, free_port, start_process, wait_for
from retention_tracker.devstack.topics import ensure_topics
from retention_tracker.state.schema import Keyspace
from retention_tracker.streams.calendar import MS_PER_DAY, utc_now_ms
from retention_tracker.streams.simulation import SimulationConfig, generate_events

RETENTION = [sys.executable, "-m", "retention_tracker.cli"]


@dataclass
class Deployment:
    """One isolated tracker on the shared broker and Redis: its own topics, group, keys."""

    kafka_url: str
    redis_url: str
    name: str
    log_dir: Path
    partitions: int = 4
    redis_cluster: bool = False  # redis_url is a seed node of a Redis Cluster

    @property
    def bootstrap(self) -> str:
        return self.kafka_url.removeprefix("kafka://")

    @property
    def topic(self) -> str:
        return f"events-{self.name}"

    @property
    def dlq(self) -> str:
        return f"dlq-{self.name}"

    def inactive_topic(self, days: int) -> str:
        return f"inactive-{self.name}-{days}d"

    @property
    def reactivated_topic(self) -> str:
        return f"reactivated-{self.name}"

    @property
    def at_risk_topic(self) -> str:
        return f"atrisk-{self.name}"

    @property
    def rekey_topic(self) -> str:
        """Where the workers forward events read away from their user's partition (the
        default REKEY_TOPIC of this deployment's GROUP_ID)."""
        return f"group-{self.name}.rekey"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BROKER=self.kafka_url,
            REDIS_URL=self.redis_url,
            REDIS_CLUSTER="true" if self.redis_cluster else "false",
            INPUT_TOPICS=self.topic,
            DLQ_TOPIC=self.dlq,
            GROUP_ID=f"group-{self.name}",
            KEY_PREFIX=f"rt-{self.name}",
            INACTIVE_TOPIC_PATTERN=f"inactive-{self.name}-{{days}}d",
            REACTIVATED_TOPIC=f"reactivated-{self.name}",
            AT_RISK_TOPIC=f"atrisk-{self.name}",
            USER_BUCKETS="16",
            DEDUP_BUCKETS="16",
        )
        env.update(extra)
        return env

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.bootstrap, {self.topic: self.partitions, self.dlq: 1}))

    def start_worker(self, index: int = 0, **extra: str) -> tuple[ManagedProcess, int]:
        port = free_port()
        process = start_process(
            [*RETENTION, "worker"],
            f"worker-{index}",
            self.env(WEB_PORT=str(port), **extra),
            self.log_dir / f"worker-{index}.log",
        )
        return process, port

    def cli(self, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*RETENTION, *args], env=self.env(**extra), capture_output=True, text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"retention {' '.join(args)} failed:\n{result.stderr}")
        return result

    def cli_json(self, *args: str, **extra: str) -> Any:
        return orjson.loads(self.cli(*args, "--json", **extra).stdout)

    def redis(self, timeout_s: float | None = None) -> redis.Redis | redis.RedisCluster:
        """A client of this deployment's Redis (a cluster client for a cluster); with
        ``timeout_s``, one try per call and that socket timeout (probes of a Redis that may
        be down)."""
        options: dict[str, Any] = {}
        if timeout_s is not None:
            options.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                           retry=Retry(NoBackoff(), 0))
        if self.redis_cluster:
            return redis.RedisCluster.from_url(self.redis_url, **options)
        return redis.Redis.from_url(self.redis_url, **options)

    def delete_keys(self) -> None:
        """Remove this deployment's Redis keys (only those: the Redis may be shared)."""
        client = self.redis()
        keys = list(client.scan_iter(match=f"rt-{self.name}:*"))
        if keys:
            client.delete(*keys)
        client.close()

    @property
    def consumed_partitions(self) -> int:
        """Partitions the workers share: the input topic's and the re-key topic's."""
        return 2 * self.partitions

    @property
    def keys(self) -> Keyspace:
        return Keyspace(f"rt-{self.name}")

    def applied_offsets(self, topic: str | None = None) -> int:
        """Sum of the next offsets stored with the state: records of ``topic`` (default:
        the input topic) applied so far."""
        client = self.redis()
        keys = self.keys
        total = 0
        for shard in client.smembers(keys.shards()):
            value = client.hget(keys.meta(int(shard)), f"off:{topic or self.topic}")
            total += int(value) if value else 0
        client.close()
        return total

    def wait_applied(self, records: int, timeout_s: float = 90, worker: ManagedProcess | None = None
                     ) -> None:
        """Until ``records`` input records are applied, and then every record forwarded to
        the re-key topic (all of them were sent before their source batch was applied)."""
        def alive() -> None:
            if worker is not None and not worker.alive():
                raise AssertionError(f"worker died; see {worker.log_path}")

        def inputs_done() -> bool:
            alive()
            return self.applied_offsets() >= records

        wait_for(inputs_done, timeout_s, f"{records} records applied")
        forwarded = sum(topic_ends(self.bootstrap, self.rekey_topic).values())

        def forwards_done() -> bool:
            alive()
            return self.applied_offsets(self.rekey_topic) >= forwarded

        wait_for(forwards_done, timeout_s, f"{forwarded} forwarded records applied")


@contextmanager
def isolated_deployment(kafka_url: str, redis_url: str, name: str, log_dir: Path,
                        partitions: int = 4, redis_cluster: bool = False
                        ) -> Iterator[Deployment]:
    """A deployment with its topics created, and its Redis keys deleted afterwards."""
    deployment = Deployment(kafka_url, redis_url, name, log_dir, partitions, redis_cluster)
    deployment.create_topics()
    try:
        yield deployment
    finally:
        deployment.delete_keys()


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]
            ) -> int:
    """Send (key, value) messages and wait for every ack; returns how many were sent."""

    async def run() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        await producer.start()
        try:
            futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
            await asyncio.gather(*futures)
            return len(futures)
        finally:
            await producer.stop()

    return asyncio.run(run())


def topic_ends(bootstrap: str, topic: str, timeout_s: float = 30) -> dict[int, int]:
    """Each partition's end offset, from a fetch's high watermark, which every broker gets
    right (the Tansu fallback's ListOffsets answer can be wrong when the last batch holds
    several records)."""
    return asyncio.run(_read_partitions(bootstrap, topic, timeout_s, records=None))


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30) -> list[ConsumerRecord]:
    """Every record of a topic, from the beginning to the end it has now."""
    records: list[ConsumerRecord] = []
    asyncio.run(_read_partitions(bootstrap, topic, timeout_s, records))
    return records


async def _read_partitions(bootstrap: str, topic: str, timeout_s: float,
                           records: list[ConsumerRecord] | None) -> dict[int, int]:
    """Read from the beginning until every partition's high watermark is known, and with
    ``records``, until each is read up to it; returns the high watermarks."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            parts = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            read_up_to = dict.fromkeys(parts, 0)

            def pending() -> list[TopicPartition]:
                return [tp for tp in parts if consumer.highwater(tp) is None or (
                    records is not None and read_up_to[tp] < (consumer.highwater(tp) or 0))]

            while todo := pending():
                batch = await consumer.getmany(*todo, timeout_ms=200,
                                               max_records=1 if records is None else 500)
                for tp, part in batch.items():
                    if part:
                        read_up_to[tp] = part[-1].offset + 1
                        if records is not None:
                            records.extend(part)
            return {tp.partition: consumer.highwater(tp) or 0 for tp in parts}
    finally:
        await consumer.stop()


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The partitions of ``topic``, once it exists (polled). From the admin client: a
    consumer without a subscription knows only the topics Kafka listed at its start (none:
    an empty metadata request names no topic; Tansu lists them all)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while True:
            # described only once listed: describing asks for metadata with auto-creation,
            # which would create the topic ahead of the worker, with the broker's default
            # partition count. A node lost in a fault test may be asked: asked again.
            with contextlib.suppress(KafkaError):
                if topic in await admin.list_topics():
                    for found in await admin.describe_topics([topic]):
                        if found["topic"] == topic and found["error_code"] == 0 \
                                and found["partitions"]:
                            return sorted(p["partition"] for p in found["partitions"])
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """Every record of a topic (no group): read from the beginning until at least
    ``expected`` arrived (or the deadline), then on to the end offsets every partition has
    at that moment, so records beyond the expected ones are returned too and a caller's
    exact count can fail on them."""

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        records: list[Any] = []
        try:
            async with asyncio.timeout(timeout_s):
                # the topic may not exist yet (created by its first record)
                partitions = [TopicPartition(topic, p)
                              for p in await partitions_of(bootstrap, topic)]
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                while len(records) < expected:
                    for part in (await consumer.getmany(timeout_ms=500)).values():
                        records.extend(part)
                ends = await consumer.end_offsets(partitions)
                while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                    for part in (await consumer.getmany(timeout_ms=500)).values():
                        records.extend(part)
        except TimeoutError:
            pass
        finally:
            await consumer.stop()
        return records

    return asyncio.run(run())


def event_messages(events: Iterable[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [(e["user_id"].encode(), orjson.dumps(e)) for e in events]


def simulated(days: int = 20, seed: int = 3, survey_rate: float = 0.05,
              installs_per_day: int = 25, end_ms: int | None = None) -> list[dict[str, Any]]:
    """Simulated traffic ending now (or at ``end_ms``), with duplicates, late events and NPS
    survey answers. A test that reads the last day's figures gives an ``end_ms`` at a fixed
    time of day (``yesterday_at``): ending now, the last day holds what the simulation made
    of the hours since midnight UTC, and none of its purchases early in the day."""
    cfg = SimulationConfig(
        installs_per_day=installs_per_day, days=days, seed=seed, duplicate_rate=0.05,
        late_rate=0.1, start_ms=(utc_now_ms() if end_ms is None else end_ms) - days * MS_PER_DAY,
        survey_rate=survey_rate,
    )
    return list(generate_events(cfg))


def yesterday_at(hour_utc: int) -> int:
    """Epoch ms of ``hour_utc``:00 UTC yesterday: an end for simulated data whose days are
    the same whatever the time of day the test runs (the simulation is a function of its
    seed and of the time since its start)."""
    return (utc_now_ms() // MS_PER_DAY - 1) * MS_PER_DAY + hour_utc * 3_600_000


def get(url: str, timeout_s: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> Any:
    """The JSON of a 200 answer (anything else fails the test, with the body)."""
    status, body = get(url)
    assert status == 200, body
    return orjson.loads(body)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found
