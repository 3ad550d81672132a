"""Win-back messages out: ``users.inactive.{K}d`` when a user's inactivity moment comes,
``users.reactivated`` when a notified user is back (METRICS.md §7).

A batch's own messages (the event clock, returns) go out with the batch, before its apply;
the due users of a partition are looked up after each batch (event clock) or every tick
(live, the Ingestor's loop), sent, then recorded in one fenced call. A crash in between
sends the same notification ids again (push services drop repeats by id); none is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import orjson
from aiokafka import AIOKafkaProducer

from retention_tracker.agents.metrics import WorkerMetrics
from retention_tracker.agents.rekey import Router
from retention_tracker.config.settings import Settings
from retention_tracker.state.store import DUE_PAGE, RedisStore
from retention_tracker.streams.batch import BatchRules
from retention_tracker.streams.calendar import AppCalendar
from retention_tracker.streams.plan import Plan
from retention_tracker.streams.winback import plan_notifications

Message = tuple[str, str, dict[str, object]]  # topic, key, body


class Notifier:
    def __init__(self, settings: Settings, store: RedisStore, rules: BatchRules,
                 metrics: WorkerMetrics, clock_ms: Callable[[], int],
                 calendar_for: Callable[[str], AppCalendar]) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules
        self.metrics = metrics
        self.clock_ms = clock_ms
        self.calendar_for = calendar_for
        self.producer: AIOKafkaProducer | None = None  # the Ingestor's, once it started
        self._routers: dict[int, Router] = {}  # by the output topic's partition count

    async def notify_due(self, shard: int, applied: Plan | None = None) -> None:
        """Send what is due on ``shard``, then record it, a page at a time. ``applied``: the
        batch just applied (event clock), to tell when each moment came."""
        s = self.settings
        while True:
            now = self.clock_ms()
            if s.clock == "event":  # the partition's own event time
                now = await self.store.shard_watermark_ms(shard) or 0
            due = await self.store.due_entries(shard, s.every_inactivity_threshold, now)
            if not due:
                return
            loaded = await self.store.load_batch(shard, [], [u for _, u, _ in due], [], now)
            plan = plan_notifications(
                due, loaded.states, now, self.calendar_for, self.rules.segments,
                self.rules.winback,
                applied.arrivals if applied else (), applied.known_ms if applied else None,
            )
            await self.send(plan.messages, [])
            if await self.store.apply_notifications(shard, loaded, plan):
                self.metrics.notifications.inc(len(plan.messages))
                if len(due) < DUE_PAGE:
                    return
            else:
                self.metrics.conflicts.inc()

    async def send(self, inactive: list[dict[str, object]],
                   reactivated: list[dict[str, object]]) -> None:
        """Each message to its topic, keyed by user; returns once the broker acked all."""
        await self._send(self._messages(inactive, reactivated))

    def _messages(self, inactive: list[dict[str, object]],
                  reactivated: list[dict[str, object]]) -> list[Message]:
        s = self.settings
        return [
            *((s.inactive_topic(int(m["threshold_days"])), str(m["user_id"]), m)  # type: ignore[call-overload]
              for m in inactive),
            *((s.reactivated_topic, str(m["user_id"]), m) for m in reactivated),
        ]

    async def _send(self, messages: Iterable[Message]) -> None:
        """In record batches, one per topic partition: a replay sends thousands of messages
        per batch, and ``producer.send`` cost ~10 µs each (a Python murmur2, a batch lookup
        per message). The partition is the default partitioner's for the user id, memoised
        per partition count (``Router``), as ``send`` would pick it."""
        producer = self.producer
        assert producer is not None
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        homes: dict[str, Router] = {}
        for topic, key, body in messages:
            router = homes.get(topic)
            if router is None:
                count = len(await producer.partitions_for(topic))
                router = homes[topic] = self._routers.setdefault(count, Router(count))
            by_partition.setdefault((topic, router.home(key)), []).append(
                (key.encode(), orjson.dumps(body)))
        futures = []
        for (topic, partition), records in by_partition.items():
            batch = producer.create_batch()
            for key_bytes, value in records:
                if batch.append(key=key_bytes, value=value, timestamp=None) is None:
                    if batch.record_count():
                        futures.append(await producer.send_batch(batch, topic,
                                                                 partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key_bytes, value=value, timestamp=None) is None:
                        # larger than a batch: send() refuses it with the broker's reason
                        futures.append(await producer.send(topic, value=value, key=key_bytes,
                                                           partition=partition))
                        batch = producer.create_batch()
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        if futures:  # most batches send nothing: skip gather's own cost
            await asyncio.gather(*futures)
