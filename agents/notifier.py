"""Win-back messages out: ``users.inactive.{K}d`` when a user's inactivity moment comes,
``users.reactivated`` when a notified user is back (METRICS.md §7), ``users.at_risk`` when
its P(alive) falls below the threshold (§9, streams/at_risk.py).

A batch's own messages (the event clock, returns) go out with the batch, before its apply;
the due users of a partition are looked up after each batch (event clock) or every tick
(live, the Ingestor's loop), sent, then recorded in one fenced call. A crash in between
sends the same notification ids again (push services drop repeats by id); none is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import orjson
from aiokafka import AIOKafkaProducer

from retention_tracker.agents.metrics import WorkerMetrics
from retention_tracker.agents.rekey import Router
from retention_tracker.config.settings import Settings
from retention_tracker.state.at_risk import StoredFit
from retention_tracker.state.due_sets import DUE_PAGE
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.at_risk import AtRiskRules, count_returns, plan_at_risk, schedule
from retention_tracker.streams.batch import BatchRules
from retention_tracker.streams.calendar import AppCalendar
from retention_tracker.streams.plan import Plan
from retention_tracker.streams.user_state import UserKey, UserState
from retention_tracker.streams.winback import event_clock_now_ms, plan_notifications

#: How often the kept fits are read again: a refit by any worker or the CLI is seen within it.
FITS_REFRESH_S = 5.0

Message = tuple[str, str, dict[str, object]]  # topic, key, body


class Notifier:
    def __init__(self, settings: Settings, store: RedisStore, rules: BatchRules,
                 metrics: WorkerMetrics, clock_ms: Callable[[], int]) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules
        self.metrics = metrics
        self.clock_ms = clock_ms
        self.producer: AIOKafkaProducer | None = None  # the Ingestor's, once it started
        self._routers: dict[int, Router] = {}  # by the output topic's partition count
        self._at_risk = AtRiskRules(settings.at_risk_threshold, settings.winback_max_delay_ms,
                                    settings.quick_churn_days)
        self._fits_read_s = -FITS_REFRESH_S

    def calendars(self, apps: set[str]) -> dict[str, AppCalendar]:
        """Each app's calendar, its timezone's (the worker refused to start on another)."""
        return {app: AppCalendar(self.settings.timezone_of(app)) for app in apps}

    async def at_risk_rules(self) -> AtRiskRules:
        """The at-risk rules with every app's kept fit of its configured model."""
        if time.monotonic() - self._fits_read_s >= FITS_REFRESH_S:
            kept = {app: StoredFit.decode(raw)
                    for app, raw in (await self.store.registry.read_lapse_fits()).items()}
            self._at_risk = replace(self._at_risk, fits={
                app: (fit.model, fit.params) for app, fit in kept.items()
                if fit.model == self.settings.at_risk_model_of(app)})
            self._fits_read_s = time.monotonic()
        return self._at_risk

    async def at_risk_after_batch(self, plan: Plan, before: dict[UserKey, UserState | None]
                                  ) -> dict[UserKey, int | None]:
        """A planned batch's at-risk side: returns counted (and marks cleared in the plan),
        and the due entries it moves, to apply with it."""
        rules = await self.at_risk_rules()
        calendars = self.calendars({app for app, _ in plan.users})
        count_returns(plan.users, before, plan.stats, calendars)
        return schedule(plan.users, before, rules, calendars)

    async def notify_at_risk(self, shard: int, caught_up: bool = False) -> None:
        """Send the at-risk moments due on ``shard``, then record them, a page at a time
        (``caught_up``: as for ``notify_due``)."""
        while True:
            now = await self._now(shard, caught_up)
            due = await self.store.due.at_risk_due_entries(shard, now)
            if not due:
                return
            loaded = await self.store.load_batch(shard, [], [user for user, _ in due], [], now)
            plan = plan_at_risk(due, loaded.states, now, await self.at_risk_rules(),
                                self.calendars({app for (app, _), _ in due}),
                                self.rules.segments)
            topic = self.settings.at_risk_topic
            await self._send([(topic, str(m["user_id"]), m) for m in plan.messages])
            if self._drained(await self.store.apply_at_risk(shard, loaded, plan),
                             len(plan.messages), len(due)):
                return

    async def _now(self, shard: int, caught_up: bool) -> int:
        """Now for a pass over ``shard``: the clock, or with CLOCK=event the partition's own
        event time (the stream's once it has caught up)."""
        if self.settings.clock == "event":
            return event_clock_now_ms(
                await self.store.reads.shard_watermark_ms(shard),
                await self.store.reads.watermark_ms() if caught_up else None, caught_up)
        return self.clock_ms()

    def _drained(self, applied: bool, sent: int, due: int) -> bool:
        """After a pass's apply: counted, and True when its due entries are drained (a
        conflict reads them again)."""
        if not applied:
            self.metrics.conflicts.inc()
            return False
        self.metrics.notifications.inc(sent)
        return due < DUE_PAGE

    async def notify_due(self, shard: int, applied: Plan | None = None,
                         caught_up: bool = False) -> None:
        """Send what is due on ``shard``, then record it, a page at a time. ``applied``: the
        batch just applied (event clock), to tell when each moment came; ``caught_up``: the
        partition has no backlog (the event clock then follows the stream's watermark)."""
        while True:
            now = await self._now(shard, caught_up)
            due = await self.store.due.due_entries(shard, now)
            if not due:
                return
            loaded = await self.store.load_batch(shard, [], [u for u, _ in due], [], now)
            calendars = self.calendars({u[0] for u, _ in due})
            plan = plan_notifications(
                due, loaded.states, now, calendars, self.rules.segments,
                self.rules.winback,
                applied.arrivals if applied else (), applied.known_ms if applied else None,
            )
            await self.send(plan.messages, [])
            if self._drained(await self.store.apply_notifications(shard, loaded, plan),
                             len(plan.messages), len(due)):
                return

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
        """Each message with its partition given: the default partitioner's for the user id,
        memoised per partition count (``Router``), as ``send`` would pick it, but without
        aiokafka's pure-Python murmur2 per message (a replay sends thousands per batch).
        Not ``send_batch``: aiokafka's accumulator makes a batch wait for the partition's
        previous one to drain without waking its sender, and under load that wait ran
        into its timeout and stopped the worker."""
        producer = self.producer
        assert producer is not None
        homes: dict[str, Router] = {}
        futures = []
        for topic, key, body in messages:
            router = homes.get(topic)
            if router is None:
                count = len(await producer.partitions_for(topic))
                router = homes[topic] = self._routers.setdefault(count, Router(count))
            futures.append(await producer.send(topic, value=orjson.dumps(body),
                                               key=key.encode(), partition=router.home(key)))
        if futures:  # most batches send nothing: skip gather's own cost
            await asyncio.gather(*futures)
