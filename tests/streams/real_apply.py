"""Batches planned by ``plan.plan_batch`` and applied by the real Lua scripts
(``RedisStore.load_batch`` / ``apply_plan``) on the session's real redis-server, figures read
back through ``state/queries.py``: the path a worker takes, minus Kafka.

Each ``RealApply`` owns one key prefix and deletes its keys in ``close``, so examples never
see each other's state and a given Redis is never flushed. Users are spread over
``shards`` partitions by a hash of their id, as Kafka's partitioner would, so every figure
is also a sum over shards.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis

from retention_tracker.config.settings import Settings, segment_rules
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import AppCalendar
from retention_tracker.streams.events import Event
from retention_tracker.streams.plan import dedup_key_of, plan_batch

TOPIC = "t"


class RealApply:
    """One example's state in Redis, written only by the production load/plan/apply."""

    def __init__(self, redis_url: str, *, timezone: str = "UTC", horizon_days: int = 400,
                 dedup_window_days: int = 7, state_cache_users: int = 0, shards: int = 2,
                 thresholds: Sequence[int] = (2,), per_app: dict[str, Any] | None = None
                 ) -> None:
        """``per_app``: Settings fields of per-app rules (app_currencies, app_vip_*)."""
        self.client = aioredis.from_url(redis_url)
        self.settings = Settings(
            key_prefix=f"test-{uuid.uuid4().hex[:10]}", timezone=timezone, clock="event",
            horizon_days=horizon_days, dedup_window_days=dedup_window_days,
            user_buckets=4, inactivity_thresholds=tuple(thresholds),
            activity_events=("bet",), return_events=("purchase", "bet"), **(per_app or {}),
        )
        # DEDUP_BUCKETS auto, the default: each dedup generation sized and recorded
        self.store = RedisStore(self.client, prefix=self.settings.key_prefix, user_buckets=4,
                                dedup_window_days=dedup_window_days,
                                state_cache_users=state_cache_users)
        self.calendar = AppCalendar(timezone)
        self.shards = shards
        self.next_offset = dict.fromkeys(range(shards), 0)
        self.rules = segment_rules(self.settings)

    def shard_of(self, event: Event) -> int:
        return zlib.crc32(event.user_id.encode()) % self.shards

    async def apply(self, batch: Iterable[Event], arrival_ms: int) -> list[Event]:
        """Deliver one batch (split per shard, each shard's part at its next offsets) at
        arrival time ``arrival_ms`` (the dedup generations' clock); returns the events the
        plan rejected as too old."""
        parts: dict[int, list[Event]] = {}
        for event in batch:
            parts.setdefault(self.shard_of(event), []).append(event)
        rejected: list[Event] = []
        for shard, events in sorted(parts.items()):
            first = self.next_offset[shard]
            rejected += await self.apply_at(shard, events, first, arrival_ms)
            self.next_offset[shard] = first + len(events)
        return rejected

    async def apply_at(self, shard: int, events: list[Event], first_offset: int,
                       arrival_ms: int) -> list[Event]:
        """Apply events of one shard as the records ``first_offset...``: records below the
        shard's stored next offset are skipped, as after a worker restart."""
        await self.store.registry.register_shard(shard)
        for app in {e.app for e in events}:
            await self.store.registry.fix_timezone(app, self.calendar.timezone)
        items = [(first_offset + i, -1, e) for i, e in enumerate(events)]
        loaded = await self.store.load_batch(
            shard, [TOPIC], [(e.app, e.user_id) for e in events],
            [dedup_key_of(e) for e in events], arrival_ms,
        )
        start = loaded.next_offsets[TOPIC] or 0
        fresh = [item for item in items if item[0] >= start]
        plan = plan_batch(fresh, loaded.states, loaded.seen_dedup_keys, loaded.watermark_ms,
                          self.settings.horizon_days,
                          {app: self.calendar for app in {e.app for e in events}}, self.rules,
                          winback=self.settings.winback_rules())
        applied = await self.store.apply_plan(
            shard, loaded, {TOPIC: max(start, first_offset + len(events))}, plan)
        assert applied, "nobody else writes this prefix: the version cannot have moved"
        return [event for _, _, event in plan.too_old]

    async def due(self) -> dict[tuple[str, str], int]:
        """(app, user_id) -> its next inactivity moment, from every shard's due set."""
        found = {}
        for shard in range(self.shards):
            for user, due_ms in await self.store.due.due_entries(shard, 2**62, limit=10_000):
                found[user] = due_ms
        return found

    async def close(self) -> None:
        keys = [k async for k in self.client.scan_iter(match=f"{self.settings.key_prefix}:*")]
        if keys:
            await self.client.delete(*keys)
        await self.client.aclose()

    async def __aenter__(self) -> RealApply:
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        await self.close()
