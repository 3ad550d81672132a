"""The consuming loop, per partition batch: read (parse and route), load the users' state,
the batch's outcome (``streams.batch``), send (forwards, dead letters, win-back messages),
then one atomic Redis apply of the plan with the batch's offsets.

It runs an aiokafka consumer inside the Faust app rather than a Faust agent, because the
exactly-once design needs what an agent hides: offsets are read from Redis on assignment
(``seek``), and a partition's batch is applied with its offsets in one Redis script call.
Faust keeps the process frame (worker CLI, web server, timers). See docs/architecture.md
"Why an aiokafka loop inside Faust, not a Faust agent per event".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from operator import attrgetter
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import IllegalStateError, KafkaError, TopicAlreadyExistsError
from prometheus_client import CollectorRegistry

from retention_tracker.agents.metrics import WorkerMetrics
from retention_tracker.agents.notifier import Notifier
from retention_tracker.agents.rekey import (
    PartitionCountChanged,
    Router,
    partition_count_problem,
    read_records,
    rekey_headers,
)
from retention_tracker.agents.replication import default_replication_factor
from retention_tracker.config.settings import Settings, segment_rules
from retention_tracker.state.connect import REDIS_UNAVAILABLE, torn_down_under_a_call
from retention_tracker.state.layout import LayoutChanged, layout_problem
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.backoff import Backoff
from retention_tracker.streams.batch import (
    KEY_COPY_MAX_BYTES,
    VALUE_COPY_MAX_BYTES,
    BatchRules,
    DeadLetter,
    Forward,
    outcome_of,
)
from retention_tracker.streams.calendar import AppCalendar, utc_now_ms
from retention_tracker.streams.plan import Plan, dedup_key_of

log = logging.getLogger(__name__)
T = TypeVar("T")


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    """On assignment, resume each partition where its Redis state says, not where Kafka's
    committed offset says: Redis is the single source of truth for what is applied."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.ingestor.assigned.difference_update(revoked)
        for tp in revoked:  # the new owner reports these now
            self.ingestor.applied_to.pop(tp, None)
            self.ingestor.idle_since.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.ingestor.metrics.lag.remove(tp.topic, str(tp.partition))
        self.ingestor.metrics.assigned.set(len(self.ingestor.assigned))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self.ingestor.refuse_changed_partition_counts():
            return
        await self.ingestor.seek_to_stored(assigned)


class Ingestor:
    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        clock_ms: Callable[[], int] = utc_now_ms,
        backoff: Backoff | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock_ms = clock_ms
        self.backoff = backoff or Backoff()
        self.metrics = metrics or WorkerMetrics(CollectorRegistry())
        self.assigned: set[TopicPartition] = set()
        #: per partition assigned, the next offset applied (None: nothing yet), for lag 0
        self.applied_to: dict[TopicPartition, int | None] = {}
        #: when a partition was first found at lag 0 since its last batch (monotonic s)
        self.idle_since: dict[TopicPartition, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self.batch_rules = BatchRules(settings.horizon_days, segment_rules(settings),
                                      settings.winback_rules(), settings.clock == "event")
        self._calendars: dict[str, AppCalendar] = {}
        self.activity_types = settings.activity_types  # ACTIVITY_EVENTS, parsed once
        self.notifier = Notifier(settings, store, self.batch_rules, self.metrics, clock_ms)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.router: Router | None = None  # set on start, from the topics' partition count
        self.refused: str | None = None  # why this worker must not consume any more

    @property
    def topics(self) -> list[str]:
        """Every topic consumed: the inputs and the re-key topic (one shard per partition)."""
        return [*self.settings.input_topics, self.settings.rekey_topic]

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        inputs = await wait_for_topics(s.kafka_options(), list(s.input_topics))
        shards = max(inputs.values())  # unequal counts are refused below, with the reason
        await create_missing_topics(
            s.kafka_options(),
            [s.dlq_topic, s.reactivated_topic, s.at_risk_topic,
             *map(s.inactive_topic, s.every_inactivity_threshold)],
        )
        await create_missing_topics(s.kafka_options(), [s.rekey_topic], partitions=shards)
        actual = {**inputs, **await wait_for_topics(s.kafka_options(), [s.rekey_topic])}
        stored = await self._retrying(self.store.registry.partition_counts)
        problem = partition_count_problem(actual, stored, s.key_prefix)  # type: ignore[arg-type]
        if problem:
            raise PartitionCountChanged(problem)
        await self._retrying(lambda: self.store.registry.record_partition_counts(actual))
        built = await self._retrying(self.store.registry.record_layout)
        problem = layout_problem(built, self.store.layout.counts())
        if problem:
            raise LayoutChanged(problem)
        self.router = Router(shards)
        self.producer = AIOKafkaProducer(**s.producer_options())
        await self.producer.start()
        self.notifier.producer = self.producer
        self.consumer = AIOKafkaConsumer(
            **s.kafka_options(),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_ms,
            max_poll_records=s.batch_max_records,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=8 << 20,
        )
        self.consumer.subscribe(self.topics, listener=_SeekToStoredOffsets(self))
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def run(self) -> None:
        """Consume until cancelled. Each partition's batches run as their own task, one at a
        time per partition (so its offsets never pass its applied state), and a partition is
        fetched again as soon as its batch is done, whatever the others do: while one
        partition's script runs in Redis, another's batch is planned here (one shared fetch
        per round would wait for the slowest partition of each round)."""
        assert self.consumer is not None
        busy: dict[TopicPartition, asyncio.Task[object]] = {}
        fetch: asyncio.Future[dict[TopicPartition, list[ConsumerRecord]]] | None = None
        try:
            while True:
                idle = [tp for tp in self.consumer.assignment() if tp not in busy]
                fetch = None
                if idle or not busy:  # nothing assigned yet: getmany() waits for it
                    fetch = asyncio.ensure_future(self.consumer.getmany(
                        *idle, timeout_ms=200, max_records=self.settings.batch_max_records))
                waiting: list[asyncio.Future[Any]] = [*busy.values(), *([fetch] if fetch else [])]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for tp, task in list(busy.items()):
                    if task.done():
                        del busy[tp]
                        task.result()  # a failed batch stops the loop
                if fetch is None:
                    continue
                fetch.cancel()  # a partition came free: fetch again with it included
                try:
                    batches = await fetch
                except (asyncio.CancelledError, IllegalStateError):  # or one was revoked
                    continue
                if self.refused:
                    raise PartitionCountChanged(self.refused)
                for tp, records in batches.items():
                    if records:
                        busy[tp] = asyncio.ensure_future(self._retrying(
                            partial(self.process, tp, records)))
        finally:
            pending: list[asyncio.Future[Any]] = [*busy.values(), *([fetch] if fetch else [])]
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def refuse_changed_partition_counts(self) -> bool:
        """On every assignment: a topic whose partition count changed while this worker ran
        stops it (its users' homes moved) before any record of the new layout is applied."""
        assert self.consumer is not None and self.router is not None
        known = {t: self.consumer.partitions_for_topic(t) for t in self.topics}
        actual = {t: len(parts) for t, parts in known.items() if parts}  # None: no metadata yet
        expected = dict.fromkeys(actual, self.router.partitions)
        problem = partition_count_problem(actual, expected, self.settings.key_prefix)
        if problem:
            self.refused = problem  # the consuming loop stops on it (raises) at its next turn
        return problem is not None

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        assert self.consumer is not None
        for tp in assigned:
            await self._retrying(partial(self.store.registry.register_shard, tp.partition))
            await self._retrying(partial(self.store.adopt_due_sets, tp.partition,
                                         self.settings.every_inactivity_threshold))
        for tp in assigned:
            progress = await self._retrying(
                partial(self.store.reads.partition_progress, [tp.topic])
            )
            found = progress.get(tp.partition)
            stored = found.offsets.get(tp.topic) if found is not None else None
            if stored is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, stored)
            self.applied_to[tp] = stored
            self.assigned.add(tp)
        self.metrics.assigned.set(len(self.assigned))
        log.info("assigned %s", sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))

    async def _retrying(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run a step until it succeeds: while Redis is away (or a cluster fails over a
        master to its replica), or Kafka does not take what a batch sends (forwards, dead
        letters, win-back messages, all sent before the batch is applied, so the batch is
        simply planned and sent again), consumption pauses here, counted and logged,
        instead of dropping, buffering or stopping the worker."""
        delays = self.backoff.delays()
        while True:
            try:
                return await step()
            except KafkaError as exc:
                self.metrics.send_errors.inc()
                delay = next(delays)
                log.warning("Kafka did not take a record (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            except Exception as exc:
                if not isinstance(exc, REDIS_UNAVAILABLE) and not torn_down_under_a_call(exc):
                    raise
                self.metrics.redis_errors.inc()
                delay = next(delays)
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    # ---- one partition batch -------------------------------------------------------------

    async def _ensure_calendars(self, apps: set[str]) -> None:
        for app in apps - self._calendars.keys():
            timezone = self.settings.timezone_of(app)
            # TimezoneConflict stops the worker
            await self.store.registry.fix_timezone(app, timezone)
            self._calendars[app] = AppCalendar(timezone)

    def lock(self, shard: int) -> asyncio.Lock:
        """Batches and notification passes of one partition never interleave in a worker
        (across workers, the version fence in Redis keeps them apart)."""
        return self._locks.setdefault(shard, asyncio.Lock())

    async def process(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        async with self.lock(tp.partition):
            applied = await self._process(tp, records)
            if applied is not None and tp in self.applied_to:
                self.applied_to[tp] = records[-1].offset + 1
            self.idle_since.pop(tp, None)  # records came: not idle
            if self.settings.clock == "event":
                caught_up = self.caught_up(tp.partition)
                if self.batch_rules.winback.every_threshold:
                    await self.notifier.notify_due(tp.partition, applied, caught_up)
                await self.notifier.notify_at_risk(tp.partition, caught_up)

    def caught_up(self, shard: int) -> bool:
        """Has ``shard`` caught up: its input partition (this worker's: another worker's is
        not known here) and its re-key partition if this worker has it, each applied to
        the end offset the consumer knows for at least EVENT_CLOCK_IDLE_MS? The wait, as
        Flink's idle sources have, keeps a partition that a producer is still filling, but
        that was read to its end a moment ago, on its own watermark."""
        consumer = self.consumer
        if consumer is None:
            return False
        owned = consumer.assignment()
        parts = [tp for tp in self.assigned if tp.partition == shard and tp in owned]
        if all(tp.topic == self.settings.rekey_topic for tp in parts):
            return False
        now = time.monotonic()
        idle_s = self.settings.event_clock_idle_ms / 1000
        caught = True
        for tp in parts:  # every one: each idle timer starts when it is first found at lag 0
            end = consumer.highwater(tp)
            if end is None or (self.applied_to.get(tp) or 0) < end:
                self.idle_since.pop(tp, None)
                caught = False
            elif now - self.idle_since.setdefault(tp, now) < idle_s:
                caught = False
        return caught

    async def _process(self, tp: TopicPartition, records: list[ConsumerRecord]
                       ) -> Plan | None:
        """Load, plan, send, apply one batch; returns the plan applied (the event clock's
        notification pass reads when each moment came from it), None when it rewound."""
        started = time.perf_counter()
        now = self.clock_ms()
        rekeyed = tp.topic == self.settings.rekey_topic  # routed already: all at home
        read = read_records(records, tp.partition, None if rekeyed else self.router, now,
                            self.settings.max_message_bytes, self.settings.max_events_per_message,
                            self.activity_types)
        await self._ensure_calendars({event.app for _, _, event in read.at_home})
        users = [(e.app, e.user_id) for _, _, e in read.at_home]
        keys = [dedup_key_of(e) for _, _, e in read.at_home]  # hashed once
        forwarded_from = records[-1].offset + 1  # forwards at or after it were sent
        while True:
            loaded = await self.store.load_batch(tp.partition, [tp.topic], users, keys, now)
            start = self._resume_offset(tp, records, loaded.next_offsets.get(tp.topic))
            if start is None:
                return None
            if records[-1].offset < start:
                plan = Plan()  # all of it was applied before (a restart or a rebalance)
                break
            fresh, fresh_keys = read, keys
            if records[0].offset < start:  # part of the batch was applied before
                fresh = read.from_offset(start)  # at_home is in offset order: its tail
                fresh_keys = keys[len(keys) - len(fresh.at_home):]
            outcome = outcome_of(fresh, fresh_keys, loaded.states, loaded.seen_dedup_keys,
                                 loaded.watermark_ms, self._calendars, self.batch_rules,
                                 None if rekeyed else now, loaded.read_watermark_ms)
            plan = outcome.plan
            # forwarded before the offsets are applied: after a crash in between they are
            # forwarded again, and their home drops the copies by event id (dedup)
            await self._forward([f for f in outcome.forwards if f.offset < forwarded_from], tp)
            forwarded_from = min(start, forwarded_from)
            await self._send_dead_letters(outcome.dead_letters, records, rekeyed)
            await self.notifier.send(plan.notifications, plan.reactivations)
            at_risk_due = await self.notifier.at_risk_after_batch(plan, loaded.states)
            if await self.store.apply_plan(tp.partition, loaded,
                                           {tp.topic: records[-1].offset + 1}, plan,
                                           at_risk_due):
                break
            self.metrics.conflicts.inc()  # someone applied in between: reload and re-plan
        self._observe(tp, records, start, started, plan)
        return plan

    def _resume_offset(self, tp: TopicPartition, records: list[ConsumerRecord],
                       stored: int | None) -> int | None:
        """Where this partition's state ends (records before it are applied already), or
        None when Redis holds less than was read past: it lost its last writes, or a
        replica took over; the consumer goes back there and reads the gap again."""
        start = stored or 0
        if stored is not None and records[0].offset > stored:
            log.warning("%s/%s: state ends at offset %s, batch starts at %s; rewinding",
                        tp.topic, tp.partition, stored, records[0].offset)
            assert self.consumer is not None
            with contextlib.suppress(IllegalStateError):  # revoked meanwhile: new owner
                self.consumer.seek(tp, stored)
            return None
        return start

    def _observe(self, tp: TopicPartition, records: list[ConsumerRecord], start: int,
                 started: float, plan: Plan) -> None:
        """The batch's rate, lag and notifications on /metrics."""
        applied = records if records[0].offset >= start else [
            r for r in records if r.offset >= start]
        if applied:
            self.metrics.observe_batch(
                len(applied), time.perf_counter() - started,
                max(map(attrgetter("timestamp"), applied)),
            )
        # a batch may finish after its partition was revoked (a rebalance): its new owner
        # reports the lag, and aiokafka asserts on the highwater of a partition not assigned
        consumer = self.consumer
        end = consumer.highwater(tp) if consumer is not None and tp in consumer.assignment() \
            else None
        if end is not None:
            lag = max(0, end - (records[-1].offset + 1))
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        self.metrics.notifications.inc(len(plan.notifications))

    # ---- win-back notifications ----------------------------------------------------------

    async def notify_loop(self) -> None:
        """Look for due users every tick on every partition this worker owns: live, the
        wall clock moves on; with the event clock, a caught-up partition follows the
        stream's watermark, which other partitions (and workers) move on. At-risk moments
        too: they exist once an app's model is fitted."""
        winback = bool(self.batch_rules.winback.every_threshold)
        while True:
            await asyncio.sleep(self.settings.winback_tick_ms / 1000)
            for shard in sorted({tp.partition for tp in self.assigned}):
                try:
                    async with self.lock(shard):
                        caught_up = self.caught_up(shard)
                        if winback:
                            await self._retrying(partial(self.notifier.notify_due, shard, None,
                                                         caught_up))
                        await self._retrying(partial(self.notifier.notify_at_risk, shard,
                                                     caught_up))
                except Exception:  # e.g. the broker away: due users wait for the next tick
                    self.metrics.notify_errors.inc()
                    log.exception("notification pass on partition %s failed", shard)

    async def _forward(self, away: list[Forward], source: TopicPartition) -> None:
        """Each event to its user's home partition of the re-key topic, as it was sent,
        with where it was read (``source``, ``index``) for dead letters at home and the
        watermark it is judged against there (``rekey_headers``)."""
        if not away:
            return
        assert self.producer is not None
        origin = f"{source.topic}/{source.partition}/"
        futures = [
            await self.producer.send(
                self.settings.rekey_topic,
                value=f.value,
                key=f.event.user_id.encode(),
                partition=f.partition,
                headers=rekey_headers(f, origin),
            )
            for f in away
        ]
        await asyncio.gather(*futures)
        self.metrics.forwarded.inc(len(away))

    async def _send_dead_letters(self, letters: list[DeadLetter],
                                 records: list[ConsumerRecord], forwarded: bool) -> None:
        """Dead letters go out before the batch is applied: a crash in between re-sends them
        (at-least-once, deduplicate on the ``source`` header) but never loses one."""
        if not letters:
            return
        assert self.producer is not None
        by_offset = {record.offset: record for record in records}
        futures = []
        for letter in letters:
            record = by_offset[letter.offset]
            futures.append(await self.producer.send(
                self.settings.dlq_topic,
                value=(record.value or b"")[:VALUE_COPY_MAX_BYTES],  # a too_large one: cut
                key=None if record.key is None else record.key[:KEY_COPY_MAX_BYTES],
                headers=dead_letter_headers(letter, record, forwarded),
            ))
        await asyncio.gather(*futures)


def dead_letter_headers(letter: DeadLetter, record: ConsumerRecord, forwarded: bool
                        ) -> list[tuple[str, bytes]]:
    """Why and where: ``source`` is the topic/partition/offset the event was first read at
    (for a forwarded one, the headers it was forwarded with say it; ``via`` then names the
    re-key record, whose value is the event alone, as its producer sent it); ``size`` is
    the length of the record's value, of which the dead letter holds at most the first
    ``VALUE_COPY_MAX_BYTES`` (a message over MAX_MESSAGE_BYTES is read whole at
    ``source``)."""
    here = f"{record.topic}/{record.partition}/{record.offset}".encode()
    origin = dict(record.headers or ()) if forwarded else {}
    headers = [
        ("reason", letter.reason.encode()),
        ("detail", letter.detail.encode()),
        ("index", origin.get("index") or str(letter.index).encode()),
        ("source", origin.get("source") or here),
        ("size", str(len(record.value or b"")).encode()),
    ]
    if forwarded:
        headers.append(("via", here))
    return headers


async def wait_for_topics(kafka_options: dict[str, Any], names: list[str]) -> dict[str, int]:
    """The partition count of each topic, waiting for those not created yet (the worker
    creates no input topic: their partition count is the operator's choice)."""
    admin = AIOKafkaAdminClient(**kafka_options)
    await admin.start()
    try:
        for attempt in itertools.count():
            found = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()
                     if t["error_code"] == 0 and t["partitions"]}
            missing = [n for n in names if n not in found]
            if not missing:
                return {n: found[n] for n in names}
            if attempt % 30 == 0:
                log.warning("waiting for topic(s) %s to be created", ", ".join(missing))
            await asyncio.sleep(2)
        raise AssertionError("unreachable")
    finally:
        await admin.close()


async def create_missing_topics(kafka_options: dict[str, Any], names: list[str],
                                partitions: int = 4) -> None:
    """Output topics the push services subscribe to exist before the first message."""
    admin = AIOKafkaAdminClient(**kafka_options)
    await admin.start()
    try:
        existing = {t["topic"] for t in await admin.describe_topics() if t["error_code"] == 0}
        replicas = await default_replication_factor(admin)
        missing = [NewTopic(n, partitions, replicas) for n in dict.fromkeys(names)
                   if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()
