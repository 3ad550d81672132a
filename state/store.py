"""The one module that owns Redis: key names, Lua scripts, loading a batch and applying a plan.

Every key of a Kafka partition carries the hash tag ``{<partition>}``, so one partition's
state lives in one Redis Cluster slot and each batch is a single atomic script call there.
The partition's applied offsets live in its meta hash, written by the same script as the
state they produced: after a crash, state and offsets roll back (or forward) together.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

import msgpack
import redis.asyncio as aioredis

from retention_tracker.config.settings import ConfigError
from retention_tracker.state.cache import StateCache
from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.plan import Plan
from retention_tracker.streams.user_state import UserKey, UserState, decode_user, encode_user
from retention_tracker.streams.winback import NotificationPlan

# Both scripts take their arguments as one MessagePack blob (ARGV[1], decoded by Redis's
# built-in cmsgpack): packing thousands of small arguments one by one in redis-py cost ~11%
# of the worker's CPU, one packb call ~1/15 of that. Values that Redis stores or adds up are
# sent as strings: Lua numbers are doubles and would round integers past 2^53.

# KEYS[1]: the partition's meta hash; KEYS[2..]: user buckets then dedup buckets.
# blob: [[topic...], [key_index, user_id, ...], [key_cur, key_prev, id, ...]]
# Returns: version, watermark_ms, write token, next offset per topic, user record per user
# ('' if none), then 1/0 per id (already seen in the current or previous dedup generation).
LOAD_BATCH_LUA = """
local meta = KEYS[1]
local a = cmsgpack.unpack(ARGV[1])
local out = {redis.call('HGET', meta, 'v') or '0', redis.call('HGET', meta, 'wm') or '',
             redis.call('HGET', meta, 'tok') or ''}
local t = a[1]
for i = 1, #t do
  out[#out + 1] = redis.call('HGET', meta, 'off:' .. t[i]) or ''
end
t = a[2]
for i = 1, #t, 2 do
  out[#out + 1] = redis.call('HGET', KEYS[t[i]], t[i + 1]) or ''
end
t = a[3]
for i = 1, #t, 3 do
  local f = t[i + 2]
  if redis.call('HEXISTS', KEYS[t[i]], f) == 1
     or redis.call('HEXISTS', KEYS[t[i + 1]], f) == 1 then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# KEYS[1]: the partition's meta hash; KEYS[2..]: every key the plan writes.
# blob: [expected_version, watermark_ms, [topic, next_offset, ...],
#        [key_index, user_id, record, ...],
#        [[aggregate_prefix, [segment, ...], family, field, delta, ...], ...],
#        dedup_ttl_s, [key_index, id, ...], [key_index, score, member, ...],
#        [key_index, member, ...], write_token, [stats_key_index, field, delta, ...]]
# Each counter delta goes to every segment of its group; the script names the keys as
# Keyspace.aggregate does (prefix .. segment .. ':' .. family), all in the partition's slot.
# The write token, unique to this call, tells a worker whether the partition was written by
# anyone else since its own last write (state/cache.py).
# Returns 0 (nothing written) when the version moved since LOAD_BATCH: another worker or an
# earlier attempt applied first, and the caller must reload and re-plan. Else 1.
APPLY_PLAN_LUA = """
local meta = KEYS[1]
local a = cmsgpack.unpack(ARGV[1])
local version = tonumber(redis.call('HGET', meta, 'v') or '0')
if version ~= a[1] then return 0 end
redis.call('HSET', meta, 'v', version + 1, 'tok', a[10])
if a[2] ~= '' then redis.call('HSET', meta, 'wm', a[2]) end
local t = a[3]
for i = 1, #t, 2 do
  redis.call('HSET', meta, 'off:' .. t[i], t[i + 1])
end
t = a[4]
for i = 1, #t, 3 do
  redis.call('HSET', KEYS[t[i]], t[i + 1], t[i + 2])
end
for _, group in ipairs(a[5]) do
  local base, segments = group[1], group[2]
  for j = 3, #group, 3 do
    local family, f, d = group[j], group[j + 1], group[j + 2]
    for k = 1, #segments do
      local key = base .. segments[k] .. ':' .. family
      if redis.call('HINCRBY', key, f, d) == 0 then redis.call('HDEL', key, f) end
    end
  end
end
t = a[11]
local stats = KEYS[t[1]]
for i = 2, #t, 2 do
  if redis.call('HINCRBY', stats, t[i], t[i + 1]) == 0 then redis.call('HDEL', stats, t[i]) end
end
local ttl = a[6]
local expiring = {}
t = a[7]
for i = 1, #t, 2 do
  local key = KEYS[t[i]]
  redis.call('HSET', key, t[i + 1], '')
  if not expiring[key] then redis.call('EXPIRE', key, ttl); expiring[key] = true end
end
t = a[8]
for i = 1, #t, 3 do
  redis.call('ZADD', KEYS[t[i]], t[i + 1], t[i + 2])
end
t = a[9]
for i = 1, #t, 2 do
  redis.call('ZREM', KEYS[t[i]], t[i + 1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Every Redis key name the tracker uses; nothing else builds one."""

    prefix: str

    def meta(self, shard: int) -> str:
        return f"{self.prefix}:{{{shard}}}:meta"

    def stats(self, shard: int) -> str:
        return f"{self.prefix}:{{{shard}}}:stats"

    def users(self, shard: int, app: str, bucket: int) -> str:
        return f"{self.prefix}:{{{shard}}}:u:{app}:{bucket}"

    def aggregate(self, shard: int, app: str, segment: str, family: str) -> str:
        """Counters of one family for one segment ('all', 'platform=ios', 'value=vip')."""
        return f"{self.aggregate_prefix(shard, app)}{segment}:{family}"

    def aggregate_prefix(self, shard: int, app: str) -> str:
        """What every aggregate key of an app's partition starts with (the apply script
        appends segment and family itself)."""
        return f"{self.prefix}:{{{shard}}}:a:{app}:"

    def dedup(self, shard: int, generation: int, bucket: int) -> str:
        return f"{self.prefix}:{{{shard}}}:dd:{generation}:{bucket}"

    def due(self, shard: int, days: int) -> str:
        """Users by the moment they become inactive for ``days`` (last_active + days)."""
        return f"{self.prefix}:{{{shard}}}:due:{days}"

    def apps(self) -> str:
        """app -> timezone, fixed by the app's first accepted event."""
        return f"{self.prefix}:apps"

    def shards(self) -> str:
        return f"{self.prefix}:shards"

    def topology(self) -> str:
        """topic -> partition count the state was built with (a partition is a shard)."""
        return f"{self.prefix}:topology"


def due_member(user: UserKey) -> str:
    return f"{user[0]}\x00{user[1]}"


def parse_due_member(member: bytes) -> UserKey:
    app, _, user_id = member.decode().partition("\x00")
    return app, user_id


def _pack(value: object) -> bytes:
    """The scripts' argument blob. Raw (str) type for bytes too: Redis's cmsgpack predates
    MessagePack's bin type and rejects it."""
    return msgpack.packb(value, use_bin_type=False)


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
        self._apply = client.register_script(APPLY_PLAN_LUA)

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
        key_index: dict[str, int] = {self.keys.meta(shard): 1}

        def index_of(name: str) -> int:
            return key_index.setdefault(name, len(key_index) + 1)

        user_args: list[object] = []
        for app, user_id in to_load:
            user_args += [index_of(self.user_key(shard, app, user_id)), user_id]
        id_args: list[object] = []
        for key in dedup_keys:
            bucket = self._dedup_bucket(key)
            id_args += [
                index_of(self.keys.dedup(shard, generation, bucket)),
                index_of(self.keys.dedup(shard, generation - 1, bucket)),
                key,
            ]
        reply = await self._load(keys=list(key_index), args=[_pack([topics, user_args, id_args])])
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

    async def apply_plan(
        self,
        shard: int,
        loaded: LoadedBatch,
        next_offsets: Mapping[str, int],
        plan: Plan,
        inactivity_days: Iterable[int] = (),
    ) -> bool:
        """Apply a plan and the offsets it covers in one atomic call; False on a version
        conflict (nothing was written)."""
        groups: list[list[object]] = []
        for app, by_segments in plan.deltas.items():
            base = self.keys.aggregate_prefix(shard, app)
            for segments, deltas in by_segments.items():
                group: list[object] = [base, list(segments)]
                for (family, field), delta in deltas.items():
                    group += [family, field, str(delta)]
                groups.append(group)
        generation = loaded.dedup_generation
        dedup = [
            (self.keys.dedup(shard, generation, self._dedup_bucket(key)), key)
            for key in plan.new_dedup_keys
        ]
        due = [
            (self.keys.due(shard, days), last_ms + days * MS_PER_DAY, due_member(user))
            for user, last_ms in plan.due.items()
            for days in inactivity_days
        ]
        return await self._apply_ops(
            shard, loaded, plan.watermark_ms, next_offsets, plan.users, groups, plan.stats,
            dedup, due, [],
        )

    async def apply_notifications(
        self, shard: int, loaded: LoadedBatch, plan: NotificationPlan
    ) -> bool:
        """Record sent notifications (user marks, due entries gone, counters), fenced by the
        partition version like a batch."""
        removals = [(self.keys.due(shard, days), due_member(user)) for days, user in plan.sent]
        return await self._apply_ops(
            shard, loaded, None, {}, plan.users, [], plan.stats, [], [], removals
        )

    async def _apply_ops(
        self,
        shard: int,
        loaded: LoadedBatch,
        watermark_ms: int | None,
        next_offsets: Mapping[str, int],
        users: Mapping[UserKey, UserState],
        groups: list[list[object]],
        stats: Mapping[str, int],
        dedup: list[tuple[str, bytes]],
        zadd: list[tuple[str, int, str]],
        zrem: list[tuple[str, str]],
    ) -> bool:
        key_index: dict[str, int] = {self.keys.meta(shard): 1}

        def index_of(name: str) -> int:
            return key_index.setdefault(name, len(key_index) + 1)

        offset_args: list[object] = []
        for topic, offset in next_offsets.items():
            offset_args += [topic, str(offset)]
        user_args: list[object] = []
        for (app, user_id), state in users.items():
            user_args += [index_of(self.user_key(shard, app, user_id)), user_id,
                          encode_user(state)]
        stats_args: list[object] = [index_of(self.keys.stats(shard))]
        for field, delta in stats.items():
            if delta:
                stats_args += [field, str(delta)]
        dedup_args: list[object] = []
        for key, member in dedup:
            dedup_args += [index_of(key), member]
        zadd_args: list[object] = []
        for key, score, member in zadd:
            zadd_args += [index_of(key), str(score), member]
        zrem_args: list[object] = []
        for key, member in zrem:
            zrem_args += [index_of(key), member]
        token = os.urandom(8)
        blob = _pack([
            loaded.version, "" if watermark_ms is None else str(watermark_ms), offset_args,
            user_args, groups, (2 * self.dedup_window_days + 1) * MS_PER_DAY // 1000, dedup_args,
            zadd_args, zrem_args, token, stats_args,
        ])
        try:
            applied = bool(await self._apply(keys=list(key_index), args=[blob]))
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
        return {k.decode(): int(v) for k, v in raw.items()}

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
        problem = timezone_problem(app, stored.decode() if stored else None, timezone)
        if problem:
            raise TimezoneConflict(problem)

    # ---- read side --------------------------------------------------------------------

    async def shard_ids(self) -> list[int]:
        return sorted(int(s) for s in await self.client.smembers(self.keys.shards()))

    async def app_timezones(self) -> dict[str, str]:
        raw = await self.client.hgetall(self.keys.apps())
        return {k.decode(): v.decode() for k, v in raw.items()}

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

    async def partition_progress(self, topics: Iterable[str]) -> dict[int, dict[str, object]]:
        """Per partition: next offsets and watermark, for lag, health and the event clock."""
        shards = await self.shard_ids()
        topics = list(topics)
        out: dict[int, dict[str, object]] = {}
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.hmget(self.keys.meta(shard), ["wm", *[f"off:{t}" for t in topics]])
            for shard, values in zip(shards, await pipe.execute(), strict=True):
                out[shard] = {
                    "watermark_ms": int(values[0]) if values[0] else None,
                    "offsets": {
                        t: int(v) for t, v in zip(topics, values[1:], strict=True) if v
                    },
                }
        return out

    async def shard_watermark_ms(self, shard: int) -> int | None:
        value = await self.client.hget(self.keys.meta(shard), "wm")
        return int(value) if value else None

    async def watermark_ms(self) -> int | None:
        progress = await self.partition_progress([])
        marks = [p["watermark_ms"] for p in progress.values() if p["watermark_ms"] is not None]
        return max(marks) if marks else None  # type: ignore[type-var]
