"""Kafka delivers too much or too little: the whole workload twice plus producer retries,
tombstones and empty messages, and a consumer group started over from the earliest offset."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from retention_tracker.devstack.processes import wait_for
from retention_tracker.streams.calendar import utc_now_ms
from retention_tracker.streams.plan import adds_up
from tests.e2e.harness import Deployment, event_messages, produce

from .support import (
    FAST_GROUP,
    FaultReport,
    LagMonitor,
    alive_predicate,
    assert_figures_exact,
    metric,
    produce_recorded,
    read_dead_letters,
    read_stats,
    source_of,
    valid_events,
    workload,
)

pytestmark = pytest.mark.e2e


def test_workload_delivered_twice_with_producer_retries(deployment: Deployment) -> None:
    """Scenario 6: after the workload is applied, all of it is produced again, and a random
    tenth a third time (a producer retrying after lost acks), shuffled. The figures do not
    move; each copy of a purchase or a costed install is counted once as a duplicate, in
    Redis and on /metrics (``retention_events_duplicate_total``), each copy of another
    event (whose id is not remembered, METRICS.md §1) once as accepted."""
    d = deployment
    raw = workload(days=20, seed=41)
    messages = event_messages(raw)
    rng = random.Random(41)
    again = messages + rng.sample(messages, len(messages) // 10)
    rng.shuffle(again)
    produced = produce(d.bootstrap, d.topic, messages)
    with LagMonitor(d, produced=produced) as monitor, contextlib.ExitStack() as stack:
        worker, port = d.start_worker(**FAST_GROUP, METRICS_REFRESH_S="1")
        stack.enter_context(worker)
        d.wait_applied(produced, worker=worker)
        before = read_stats(d)
        produced += produce(d.bootstrap, d.topic, again)
        monitor.produced = produced
        resent = time.monotonic()
        d.wait_applied(produced, worker=worker)
        recovery = round(time.monotonic() - resent, 2)
        after = read_stats(d)

        def metric_shows_duplicates() -> bool:
            shown = metric(port, "retention_events_duplicate_total", app="default")
            return shown == after["dup:default"]

        wait_for(alive_predicate(worker, metric_shows_duplicates), 30,
                 "duplicates on /metrics")
    copies = [orjson.loads(value) for _, value in again]
    remembered = sum(map(adds_up, valid_events(copies)))
    assert 0 < remembered < len(copies)
    assert after["dup:default"] - before["dup:default"] == remembered
    accepted_again = sum((after - before)[k] for k in after if k.startswith("acc:"))
    assert accepted_again == len(copies) - remembered
    assert after["acc:default:purchase"] == before["acc:default:purchase"]
    report = FaultReport("6 workload delivered twice + producer retries", produced, raw,
                         resent=copies, recovery_s=recovery, max_lag=monitor.max_lag,
                         extra={"copies_resent": len(again)})
    assert_figures_exact(d, raw)
    report.finish(d)


def dlq_end_offset(bootstrap: str, topic: str) -> int:
    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(topic, 0)])
            return int(next(iter(ends.values())))
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_tombstones_empty_messages_and_a_new_consumer_group(deployment: Deployment) -> None:
    """Scenario 9: null (tombstone) and empty values, with and without keys, mixed into the
    workload: each is dead-lettered once as ``empty_message`` and processing goes on. Then a
    worker with a NEW group id (no committed offsets: Kafka would start it at the earliest
    offset) and the same key prefix: it seeks to the offsets stored in Redis, so it
    re-applies nothing, dead-letters nothing again, and only new records change anything."""
    d = deployment
    raw = workload(days=10, seed=43)
    rng = random.Random(43)
    mixed: list[tuple[bytes | None, bytes | None]] = list(event_messages(raw))
    for i in range(40):  # tombstones carry a key; empty values come with and without one
        key = None if i % 2 and i >= 20 else f"u{rng.randrange(10**6):06d}".encode()
        mixed.insert(rng.randrange(len(mixed) + 1), (key, None if i < 20 else b""))
    metas = produce_recorded(d.bootstrap, d.topic, mixed)
    empties = {(source_of(d.topic, meta), -1)
               for meta, (_, value) in zip(metas, mixed, strict=True) if not value}
    produced = len(metas)
    with LagMonitor(d, produced=produced) as monitor, contextlib.ExitStack() as stack:
        first, _ = d.start_worker(index=0, **FAST_GROUP)
        stack.enter_context(first)
        d.wait_applied(produced, worker=first)
        letters = read_dead_letters(d.bootstrap, d.dlq, empties)
        assert {(x.source, x.index) for x in letters} == empties
        assert {x.reason for x in letters} == {"empty_message"}
        first.stop()
        before, dlq_before = read_stats(d), dlq_end_offset(d.bootstrap, d.dlq)

        second, port = d.start_worker(index=1, GROUP_ID=f"group-{d.name}-reset", **FAST_GROUP)
        stack.enter_context(second)
        started = time.monotonic()
        wait_for(alive_predicate(second, lambda: metric(
            port, "retention_worker_assigned_partitions") == d.consumed_partitions), 60,
            "the new group's worker owning every partition")
        now = utc_now_ms()
        extra = [{"event_id": f"late-joiner-{i}", "type": "session", "user_id": f"n{i}",
                  "ts": now - 3_600_000 * (i + 1)} for i in range(5)]
        produced += produce(d.bootstrap, d.topic, [(e["user_id"].encode(), orjson.dumps(e))
                                                   for e in extra])
        monitor.produced = produced
        d.wait_applied(produced, worker=second)
        recovery = round(time.monotonic() - started, 2)
        processed_by_new_group = metric(port, "retention_worker_records_total")
    after = read_stats(d)
    assert processed_by_new_group == len(extra)
    assert dlq_end_offset(d.bootstrap, d.dlq) == dlq_before
    counted = ("acc:", "dup:", "rej:")  # (win-back counters may move with the wall clock)
    change = {k: after[k] - before[k] for k in after | before if k.startswith(counted)}
    assert {k: v for k, v in change.items() if v} == {"acc:default:session": len(extra)}
    report = FaultReport("9 tombstones/empty + new consumer group", produced, raw + extra,
                         recovery_s=recovery, max_lag=monitor.max_lag,
                         extra={"empty_messages": len(empties),
                                "records_processed_by_new_group": processed_by_new_group})
    assert_figures_exact(d, raw + extra)
    report.finish(d, expected_rejects=Counter(empty_message=len(empties)))
