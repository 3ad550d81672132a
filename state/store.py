"""The store: loading a batch and applying a plan, and the reads behind every report.

Key names and stored spellings are ``state/schema.py``'s, the Lua scripts
``state/scripts.py``'s. The partition's applied offsets live in its meta hash, written by
the same script as the state they produced: after a crash, state and offsets roll back (or
forward) together.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from retention_tracker.config.settings import ConfigError
from retention_tracker.state.cache import StateCache
from retention_tracker.state.schema import (
    META_WATERMARK,
    Keyspace,
    due_member,
    offset_field,
    parse_due_member,
    render_cell,
    render_stat,
    text,
)
from retention_tracker.state.scripts import APPLY_PLAN_LUA, LOAD_BATCH_LUA, KeyIndex, pack
from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.counters import Cell
from retention_tracker.streams.plan import Plan
from retention_tracker.streams.user_state import UserKey, UserState, decode_user, encode_user
from retention_tracker.streams.winback import NotificationPlan


@dataclass(slots=True)
class LoadedBatch:
    version: int
    watermark_ms: int | None
    next_offsets: dict[str, int | None]
    states: dict[UserKey, UserState | None]
    seen_dedup_keys: set[bytes]
    dedup_generation: int


#: Due entries read per threshold and pass: a pass that got fewer has drained them.
DUE_PAGE = 500


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """How far one partition's state goes: its event-time watermark and, per topic, the
    next offset to apply."""

    watermark_ms: int | None
    offsets: dict[str, int]


class TimezoneConflict(ConfigError):
    """An app's data was built in one timezone and this worker is configured with another."""


def timezone_problem(app: str, stored: str | None, configured: str) -> str | None:
    """One line when an app's data was built in another timezone than the configured one
    (its days would be cut at other hours and mix two calendars), else None."""
    if stored is None or stored == configured:
        return None
    return (f"app {app!r} has data in timezone {stored!r} but TIMEZONE/APP_TIMEZONES give "
            f"{configured!r}; fix the setting")


class RedisStore:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "rt",
        user_buckets: int = 1024,
        dedup_buckets: int = 1024,
        dedup_window_days: int = 7,
        state_cache_users: int = 0,
    ) -> None:
        self.client = client
        self.keys = Keyspace(prefix)
        self.user_buckets = user_buckets
        self.dedup_buckets = dedup_buckets
        self.dedup_window_days = dedup_window_days
        self.cache = StateCache(state_cache_users)
        self._load = client.register_script(LOAD_BATCH_LUA)
        self._apply_script = client.register_script(APPLY_PLAN_LUA)

    # ---- write side -------------------------------------------------------------------

    def user_key(self, shard: int, app: str, user_id: str) -> str:
        """The hash holding this user's record."""
        return self.keys.users(shard, app, zlib.crc32(user_id.encode()) % self.user_buckets)

    def _dedup_bucket(self, key: bytes) -> int:
        return int.from_bytes(key[:4], "little") % self.dedup_buckets

    def dedup_generation(self, now_ms: int) -> int:
        """Ids live in rotating generations of the window's length: one is remembered for
        at least the window and at most twice it, with two lookups per event."""
        return now_ms // MS_PER_DAY // self.dedup_window_days

    async def load_batch(
        self,
        shard: int,
        topics: Iterable[str],
        users: Iterable[UserKey],
        dedup_keys: Iterable[bytes],
        now_ms: int,
    ) -> LoadedBatch:
        topics = list(topics)
        users = list(dict.fromkeys(users))
        dedup_keys = list(dict.fromkeys(dedup_keys))
        generation = self.dedup_generation(now_ms)
        token = self.cache.token(shard)
        held, to_load = self.cache.split(shard, users) if token is not None else ({}, users)
        keys = KeyIndex(self.keys.meta(shard))
        user_args: list[object] = []
        for app, user_id in to_load:
            user_args += [keys.of(self.user_key(shard, app, user_id)), user_id]
        id_args: list[object] = []
        for key in dedup_keys:
            bucket = self._dedup_bucket(key)
            id_args += [
                keys.of(self.keys.dedup(shard, generation, bucket)),
                keys.of(self.keys.dedup(shard, generation - 1, bucket)),
                key,
            ]
        blob = pack({"topics": topics, "users": user_args, "ids": id_args})
        reply = await self._load(keys=keys.names(), args=[blob])
        if token is not None and reply[2] != token:
            self.cache.forget(shard)  # written by someone else since: load every user
            return await self.load_batch(shard, topics, users, dedup_keys, now_ms)
        pos = 3
        offsets = {}
        for topic in topics:
            offsets[topic] = int(reply[pos]) if reply[pos] else None
            pos += 1
        loaded: dict[UserKey, UserState | None] = {}
        for user in to_load:
            loaded[user] = decode_user(reply[pos]) if reply[pos] else None
            pos += 1
        seen = {key for key, flag in zip(dedup_keys, reply[pos:], strict=True) if flag}
        return LoadedBatch(
            version=int(reply[0]),
            watermark_ms=int(reply[1]) if reply[1] else None,
            next_offsets=offsets,
            states={user: held[user] if user in held else loaded[user] for user in users},
            seen_dedup_keys=seen,
            dedup_generation=generation,
        )

    def _counter_groups(self, shard: int, keys: KeyIndex, plan: Plan) -> list[list[object]]:
        """The plan's deltas as the apply script's ``counters``: per group of users and
        family, the aggregate keys of the group's segments, then (field, delta) pairs."""
        groups: list[list[object]] = []
        aggregate = self.keys.aggregate
        for app, by_segments in plan.deltas.items():
            for segments, deltas in by_segments.items():
                by_family: dict[str, list[object]] = {}
                for cell, delta in deltas.items():
                    family, field = render_cell(cell)
                    group = by_family.get(family)
                    if group is None:
                        targets = [keys.of(aggregate(shard, app, s, family)) for s in segments]
                        group = by_family[family] = [targets]
                    group += (field, str(delta))
                groups += by_family.values()
        return groups

    async def apply_plan(
        self,
        shard: int,
        loaded: LoadedBatch,
        next_offsets: Mapping[str, int],
        plan: Plan,
        inactivity_days: Iterable[int] | Callable[[str], Iterable[int]] = (),
    ) -> bool:
        """Apply a plan and the offsets it covers in one atomic call; False on a version
        conflict (nothing was written). ``inactivity_days``: the thresholds whose due sets
        hold the users, or the thresholds of each app (APP_INACTIVITY_THRESHOLDS)."""
        keys = KeyIndex(self.keys.meta(shard))
        counters = self._counter_groups(shard, keys, plan)
        generation = loaded.dedup_generation
        dedup: list[object] = []
        for key in plan.new_dedup_keys:
            dedup += (keys.of(self.keys.dedup(shard, generation, self._dedup_bucket(key))), key)
        due_add: list[object] = []
        of_app = inactivity_days if callable(inactivity_days) else None
        every = () if callable(inactivity_days) else tuple(inactivity_days)
        for user, last_ms in plan.due.items():
            for days in of_app(user[0]) if of_app is not None else every:
                due_add += (keys.of(self.keys.due(shard, days)),
                            str(last_ms + days * MS_PER_DAY), due_member(user))
        return await self._apply(shard, loaded, keys, plan.users, plan.stats, counters, {
            "watermark": "" if plan.watermark_ms is None else str(plan.watermark_ms),
            "offsets": [x for topic, offset in next_offsets.items() for x in (topic, str(offset))],
            "dedup": dedup, "due_add": due_add,
        })

    async def apply_notifications(
        self, shard: int, loaded: LoadedBatch, plan: NotificationPlan
    ) -> bool:
        """Record sent notifications (user marks, due entries gone, counters), fenced by the
        partition version like a batch."""
        keys = KeyIndex(self.keys.meta(shard))
        due_remove: list[object] = []
        for days, user in plan.sent:
            due_remove += (keys.of(self.keys.due(shard, days)), due_member(user))
        return await self._apply(shard, loaded, keys, plan.users, plan.stats, [],
                                 {"due_remove": due_remove})

    async def _apply(
        self,
        shard: int,
        loaded: LoadedBatch,
        keys: KeyIndex,
        users: Mapping[UserKey, UserState],
        stats: Mapping[Cell, int],
        counters: list[list[object]],
        fields: dict[str, object],
    ) -> bool:
        """One fenced apply call: ``fields`` are the script's arguments beyond what every
        call carries (version, token, dedup TTL, users, counters with the stats)."""
        user_args: list[object] = []
        for (app, user_id), state in users.items():
            user_args += (keys.of(self.user_key(shard, app, user_id)), user_id,
                          encode_user(state))
        stats_group: list[object] = [[keys.of(self.keys.stats(shard))]]
        for stat, delta in stats.items():
            if delta:
                stats_group += (render_stat(stat), str(delta))
        if len(stats_group) > 1:
            counters = [*counters, stats_group]
        token = os.urandom(8)
        blob = pack({
            "version": loaded.version, "token": token, "watermark": "", "offsets": [],
            "users": user_args, "dedup_ttl": (2 * self.dedup_window_days + 1) * MS_PER_DAY // 1000,
            "dedup": [], "due_add": [], "due_remove": [], "counters": counters, **fields,
        })
        try:
            applied = bool(await self._apply_script(keys=keys.names(), args=[blob]))
        except BaseException:  # written or not, we cannot tell: trust nothing held
            self.cache.forget(shard)
            raise
        if not applied:
            self.cache.forget(shard)
            return False
        # the states loaded for this write are current too: the fence proved nobody wrote
        current = {user: state for user, state in loaded.states.items() if state is not None}
        self.cache.written(shard, token, {**current, **users})
        return True

    async def due_entries(
        self, shard: int, thresholds: Iterable[int], now_ms: int, limit: int = DUE_PAGE
    ) -> list[tuple[int, UserKey, int]]:
        """(days, user, due_ms) whose moment has come, oldest first, at most ``limit`` each."""
        thresholds = list(thresholds)
        async with self.client.pipeline(transaction=False) as pipe:
            for days in thresholds:
                pipe.zrangebyscore(self.keys.due(shard, days), "-inf", now_ms, start=0,
                                   num=limit, withscores=True)
            replies = await pipe.execute()
        return [
            (days, parse_due_member(member), int(score))
            for days, entries in zip(thresholds, replies, strict=True)
            for member, score in entries
        ]

    async def due_counts(self, app: str, thresholds: Iterable[int], now_ms: int
                         ) -> dict[int, int]:
        """An app's users due now but not yet notified (normally few: the notifier drains
        them every tick), per threshold, over all partitions."""
        shards = await self.shard_ids()
        thresholds = list(thresholds)
        prefix = due_member((app, "")).encode()
        async with self.client.pipeline(transaction=False) as pipe:
            for days in thresholds:
                for shard in shards:
                    pipe.zrangebyscore(self.keys.due(shard, days), "-inf", now_ms)
            replies = await pipe.execute()
        per = len(shards)
        return {
            days: sum(m.startswith(prefix) for r in replies[i * per:(i + 1) * per] for m in r)
            for i, days in enumerate(thresholds)
        }

    async def partition_counts(self) -> dict[str, int]:
        """The partition count of every topic the state was built from."""
        raw = await self.client.hgetall(self.keys.topology())
        return {text(k): int(v) for k, v in raw.items()}

    async def record_partition_counts(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Record the counts of topics seen for the first time; returns all stored counts
        (an earlier worker's record wins, so a changed count is found, not overwritten)."""
        for topic, count in counts.items():
            await self.client.hsetnx(self.keys.topology(), topic, count)
        return await self.partition_counts()

    async def register_shard(self, shard: int) -> None:
        await self.client.sadd(self.keys.shards(), shard)

    async def fix_timezone(self, app: str, timezone: str) -> None:
        """Record the app's timezone on its first data; refuse to mix two calendars."""
        await self.client.hsetnx(self.keys.apps(), app, timezone)
        stored = await self.client.hget(self.keys.apps(), app)
        problem = timezone_problem(app, text(stored) if stored else None, timezone)
        if problem:
            raise TimezoneConflict(problem)

    # ---- read side --------------------------------------------------------------------

    async def shard_ids(self) -> list[int]:
        return sorted(int(s) for s in await self.client.smembers(self.keys.shards()))

    async def app_timezones(self) -> dict[str, str]:
        raw = await self.client.hgetall(self.keys.apps())
        return {text(k): text(v) for k, v in raw.items()}

    async def read_family(self, app: str, family: str, segment: str = "all") -> Counter[str]:
        """One aggregate family of an app's segment, summed over every partition."""
        total: Counter[str] = Counter()
        shards = await self.shard_ids()
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.hgetall(self.keys.aggregate(shard, app, segment, family))
            for part in await pipe.execute():
                for field, value in part.items():
                    total[field.decode()] += int(value)
        return total

    async def read_fields(
        self, app: str, family: str, fields: list[str], segment: str = "all"
    ) -> Counter[str]:
        """Chosen fields of one aggregate family, summed over every partition (for the
        metrics snapshot, which must not read whole families on every refresh)."""
        total: Counter[str] = Counter()
        if not fields:
            return total
        shards = await self.shard_ids()
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.hmget(self.keys.aggregate(shard, app, segment, family), fields)
            for values in await pipe.execute():
                for name, value in zip(fields, values, strict=True):
                    if value is not None:
                        total[name] += int(value)
        return total

    async def read_matching(self, app: str, family: str, match: str,
                            segment: str = "all") -> Counter[str]:
        """Fields of a family matching a glob (e.g. today's revenue in every currency)."""
        total: Counter[str] = Counter()
        for shard in await self.shard_ids():
            key = self.keys.aggregate(shard, app, segment, family)
            async for field, value in self.client.hscan_iter(key, match=match):
                total[field.decode()] += int(value)
        return total

    async def scan_users(self, app: str, batch: int = 64) -> AsyncIterator[UserState]:
        """Every user record of an app, bucket by bucket (for queries no counter answers)."""
        names = [
            self.keys.users(shard, app, bucket)
            for shard in await self.shard_ids()
            for bucket in range(self.user_buckets)
        ]
        for start in range(0, len(names), batch):
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names[start : start + batch]:
                    pipe.hvals(name)
                for values in await pipe.execute():
                    for raw in values:
                        yield decode_user(raw)

    async def read_stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        shards = await self.shard_ids()
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.hgetall(self.keys.stats(shard))
            for part in await pipe.execute():
                for field, value in part.items():
                    total[field.decode()] += int(value)
        return total

    async def partition_progress(self, topics: Iterable[str]) -> dict[int, PartitionProgress]:
        """Per partition: next offsets and watermark, for lag, health and the event clock."""
        shards = await self.shard_ids()
        topics = list(topics)
        out: dict[int, PartitionProgress] = {}
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.hmget(self.keys.meta(shard), [META_WATERMARK, *map(offset_field, topics)])
            for shard, values in zip(shards, await pipe.execute(), strict=True):
                out[shard] = PartitionProgress(
                    int(values[0]) if values[0] else None,
                    {t: int(v) for t, v in zip(topics, values[1:], strict=True) if v},
                )
        return out

    async def shard_watermark_ms(self, shard: int) -> int | None:
        value = await self.client.hget(self.keys.meta(shard), META_WATERMARK)
        return int(value) if value else None

    async def watermark_ms(self) -> int | None:
        progress = await self.partition_progress([])
        marks = [p.watermark_ms for p in progress.values() if p.watermark_ms is not None]
        return max(marks) if marks else None
