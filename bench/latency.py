"""End-to-end latency: from handing an event to the producer to its effect being in Redis.

A fresh worker, already joined and idle, is fed single-event messages at a fixed rate (half
of what it sustained in the throughput run, so the figure is latency, not queueing). Each
message's send time is recorded with the partition and offset the broker gave it; a thread
polls the offsets the worker stores with its state every couple of milliseconds. A message
is visible when its partition's stored next offset passes its offset; latency is the first
poll (its reply time, so the figure errs high by at most one poll) that shows it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_right
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tqdm import tqdm

from retention_tracker.devstack.processes import wait_for

from .contenders import BenchFailure, Deployment, Stack
from .processes import peak_rss_bytes

POLL_S = 0.002


class _OffsetPoller(threading.Thread):
    """Samples (time, next offset) per partition whenever a partition's offset moves."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(name="offset-poller", daemon=True)
        self.deployment = deployment
        self.samples: dict[int, list[tuple[int, float]]] = {}
        self.stop = threading.Event()
        self.polls = 0

    def run(self) -> None:
        client = self.deployment.stack.redis()
        try:
            while not self.stop.is_set():
                offsets = self.deployment.stored_offsets(client)
                seen = time.perf_counter()
                self.polls += 1
                for partition, offset in offsets.items():
                    series = self.samples.setdefault(partition, [])
                    if not series or series[-1][0] != offset:
                        series.append((offset, seen))
                time.sleep(POLL_S)
        finally:
            client.close()

    def latest(self) -> dict[int, int]:
        return {p: s[-1][0] for p, s in self.samples.items() if s}


async def _paced_produce(bootstrap: str, topic: str, events: list[dict[str, Any]], rate: float,
                         bar: tqdm) -> list[tuple[int, int, float]]:
    """Send ``events`` at ``rate`` per second; return (partition, offset, send time) each.

    ``linger_ms=0`` so the producer adds no batching delay of its own to the figure.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                enable_idempotence=False)
    await producer.start()
    sent: list[tuple[asyncio.Future[Any], float]] = []
    try:
        start = time.perf_counter()
        index = 0
        while index < len(events):
            due = int((time.perf_counter() - start) * rate) + 1
            while index < min(due, len(events)):
                event = events[index]
                at = time.perf_counter()
                future = await producer.send(topic, orjson.dumps(event),
                                             key=event["user_id"].encode())
                sent.append((future, at))
                index += 1
            bar.update(index - bar.n)
            await asyncio.sleep(0.001)
        metadata = await asyncio.gather(*(future for future, _ in sent))
    finally:
        await producer.stop()
    return [(m.partition, m.offset, at) for m, (_, at) in zip(metadata, sent, strict=True)]


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))]


def _figures(latencies_ms: list[float], sent: list[tuple[int, int, float]], rate: float
             ) -> dict[str, Any]:
    latencies_ms = sorted(latencies_ms)
    span = sent[-1][2] - sent[0][2] if len(sent) > 1 else 0.0
    return {
        "target_rate_events_per_s": round(rate, 1),
        "achieved_rate_events_per_s": round((len(sent) - 1) / span, 1) if span > 0 else None,
        "events": len(sent),
        "duration_s": round(span, 3),
        "p50_ms": round(_percentile(latencies_ms, 0.50), 2),
        "p90_ms": round(_percentile(latencies_ms, 0.90), 2),
        "p99_ms": round(_percentile(latencies_ms, 0.99), 2),
        "max_ms": round(latencies_ms[-1], 2),
        "mean_ms": round(sum(latencies_ms) / len(latencies_ms), 2),
    }


async def _raw_consumer_latency(bootstrap: str, topic: str, partitions: int,
                                events: list[dict[str, Any]], rate: float, bar: tqdm
                                ) -> tuple[list[float], list[tuple[int, int, float]]]:
    """The same paced stream read by a bare aiokafka consumer in this process: how much of
    the worker's latency the broker, the client and the fetch settings already account for.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_poll_records=2000)
    await consumer.start()
    received: dict[tuple[int, int], float] = {}
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        done = asyncio.Event()

        async def consume() -> None:
            while not done.is_set() or len(received) < len(events):
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                now = time.perf_counter()
                for tp, records in batches.items():
                    for record in records:
                        orjson.loads(record.value)
                        received[tp.partition, record.offset] = now

        reader = asyncio.create_task(consume())
        sent = await _paced_produce(bootstrap, topic, events, rate, bar)
        done.set()
        await asyncio.wait_for(reader, timeout=120)
    finally:
        await consumer.stop()
    return [(received[p, o] - at) * 1000 for p, o, at in sent], sent


def raw_latency(stack: Stack, topic: str, events: list[dict[str, Any]], rate: float,
                duration_s: float) -> dict[str, Any]:
    """Produce->consume latency of a bare aiokafka loop at the worker's latency-run rate."""
    count = max(1, min(len(events), int(rate * duration_s)))
    bar = stack.bar(count, "latency raw single")
    try:
        latencies, sent = asyncio.run(_raw_consumer_latency(
            stack.bootstrap, topic, stack.partitions, events[:count], rate, bar))
    finally:
        bar.close()
    return _figures(latencies, sent, rate)


def measure_latency(deployment: Deployment, events: list[dict[str, Any]], rate: float,
                    duration_s: float) -> dict[str, Any]:
    """Latency percentiles in milliseconds at ``rate`` events/s for about ``duration_s``."""
    stack = deployment.stack
    count = max(1, min(len(events), int(rate * duration_s)))
    client = stack.redis()
    process = deployment.start()
    poller = _OffsetPoller(deployment)
    bar = stack.bar(count, "latency     single")
    try:
        with process:
            def joined() -> bool:
                if not process.alive():
                    raise BenchFailure(f"latency worker exited; log {process.log_path}")
                return deployment.assigned_shards(client) >= stack.partitions

            wait_for(joined, 120, "latency worker's partition assignment")
            poller.start()
            sent = asyncio.run(_paced_produce(stack.bootstrap, deployment.topic,
                                              events[:count], rate, bar))
            ends: dict[int, int] = {}
            for partition, offset, _ in sent:
                ends[partition] = max(ends.get(partition, 0), offset + 1)

            def applied() -> bool:
                if not process.alive():
                    raise BenchFailure(f"latency worker exited; log {process.log_path}")
                latest = poller.latest()
                return all(latest.get(p, 0) >= end for p, end in ends.items())

            wait_for(applied, stack.stall_s, "latency run applied")
            rss = peak_rss_bytes(process.pid)
    finally:
        poller.stop.set()
        if poller.is_alive():
            poller.join(timeout=5)
        bar.close()
        client.close()
    stored = {p: [o for o, _ in series] for p, series in poller.samples.items()}
    latencies = []
    for partition, offset, at in sent:
        index = bisect_right(stored[partition], offset)  # the first stored offset > offset
        latencies.append((poller.samples[partition][index][1] - at) * 1000)
    return {
        **_figures(latencies, sent, rate),
        "poll_interval_ms": POLL_S * 1000,
        "redis_polls": poller.polls,
        "worker_peak_rss_bytes": rss,
    }
