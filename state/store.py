"""The store's write path: loading a batch and applying a plan (or an at-risk pass, sent
notifications, the merge of the due sets of before) in one fenced script call each.

Key names and stored spellings are ``state/schema.py``'s, the Lua scripts
``state/scripts.py``'s. The partition's applied offsets live in its meta hash, written by
the same script as the state they produced: after a crash, state and offsets roll back (or
forward) together. ``RedisStore`` builds the other rooms on its one client and transport
and holds them: ``layout`` (where a thing lives, ``state/layout.py``), ``registry`` (what
the state records about itself, ``state/registry.py``), ``reads`` (the reads behind
reports, ``state/reads.py``) and ``due`` (reading the due sets, ``state/due_sets.py``).
How calls reach a single Redis or a cluster's masters is ``state/cluster.py``'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from retention_tracker.state.cache import StateCache
from retention_tracker.state.cluster import AsyncClient, Read, Transport
from retention_tracker.state.dedup import (
    DedupLayout,
    Recorded,
    bucket_of,
    generation_layout,
    legacy_buckets,
)
from retention_tracker.state.due_sets import DueSets
from retention_tracker.state.layout import Layout
from retention_tracker.state.reads import Reads
from retention_tracker.state.registry import Registry
from retention_tracker.state.schema import (
    DUE_NEXT,
    DUE_RISK,
    Keyspace,
    due_member,
    parse_due_member,
    render_cell,
    render_stat,
)
from retention_tracker.state.scripts import (
    APPLY_PLAN_LUA,
    DUE_COUNTS_LUA,
    DUE_RANGE_LUA,
    LOAD_BATCH_LUA,
    KeyIndex,
    grouped,
    pack,
)
from retention_tracker.streams import engine
from retention_tracker.streams.at_risk import AtRiskPlan
from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.counters import Cell
from retention_tracker.streams.plan import Plan
from retention_tracker.streams.user_state import UserKey, UserState
from retention_tracker.streams.winback import NotificationPlan


@dataclass(slots=True)
class LoadedBatch:
    version: int
    watermark_ms: int | None
    next_offsets: dict[str, int | None]
    states: dict[UserKey, UserState | None]
    seen_dedup_keys: set[bytes]
    #: the dedup generations' bucket counts the batch was looked up in and writes with
    dedup: DedupLayout
    #: the latest event time read from the partition's inputs (``META_READ_WATERMARK``)
    read_watermark_ms: int | None = None


class RedisStore:
    """The write path, and the rooms every caller reads through (``store.reads``,
    ``store.due``, ``store.registry``, ``store.layout``): one client, one transport."""

    def __init__(
        self,
        client: AsyncClient,
        prefix: str = "rt",
        user_buckets: int = 1024,
        dedup_buckets: int | None = None,
        due_buckets: int = 4096,
        dedup_window_days: int = 7,
        state_cache_users: int = 0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.client = client
        self.transport = Transport(
            client, (LOAD_BATCH_LUA, APPLY_PLAN_LUA, DUE_RANGE_LUA, DUE_COUNTS_LUA),
            wait_replicas, wait_timeout_ms)
        #: where each thing lives: one layout for the write path and every room
        self.layout = Layout(Keyspace(prefix), user_buckets, due_buckets)
        self.keys = self.layout.keys  # the write path names keys on every call
        #: what the state records about itself
        self.registry = Registry(self.transport, self.layout)
        #: the reads behind reports
        self.reads = Reads(self.transport, self.layout, self.registry)
        #: reading the due sets
        self.due = DueSets(self.transport, self.layout, self.registry)
        #: DEDUP_BUCKETS: a fixed count for every new generation, None for ``auto``
        self.dedup_buckets = dedup_buckets
        #: recorded bucket counts by (shard, generation), as last read: a guess for the
        #: next load, which reads them again and looks the ids up again if they differ
        self._dedup_counts: dict[tuple[int, int], int] = {}
        self.dedup_window_days = dedup_window_days
        self.cache = StateCache(state_cache_users)
        self._load = client.register_script(LOAD_BATCH_LUA)
        self._apply_script = client.register_script(APPLY_PLAN_LUA)

    async def close(self) -> None:
        """Close the client and the per-master ones (``Transport.close``)."""
        await self.transport.close()

    def dedup_generation(self, now_ms: int) -> int:
        """Ids live in rotating generations of the window's length: one is remembered for
        at least the window and at most twice it, with two lookups per event."""
        return now_ms // MS_PER_DAY // self.dedup_window_days

    async def load_batch(
        self,
        shard: int,
        topics: Iterable[str],
        users: Iterable[UserKey],
        given_keys: Iterable[bytes | None],
        now_ms: int,
    ) -> LoadedBatch:
        """The partition's meta, the batch's users and which of ``given_keys`` are
        remembered (None: an event whose id is not kept, ``streams.plan.adds_up``)."""
        topics = list(topics)
        users = list(dict.fromkeys(users))
        dedup_keys = [key for key in dict.fromkeys(given_keys) if key is not None]
        generation = self.dedup_generation(now_ms)
        counts, legacy = self._dedup_counts, legacy_buckets(self.dedup_buckets)
        counts.pop((shard, generation - 2), None)  # read no more
        read = (counts.get((shard, generation), legacy),
                counts.get((shard, generation - 1), legacy))
        token = self.cache.token(shard)
        held, to_load = self.cache.split(shard, users, current=token is not None)
        keys = KeyIndex(self.keys.meta(shard))
        sizes = [keys.of(self.keys.dedup_sizes(shard, generation)),
                 keys.of(self.keys.dedup_sizes(shard, generation - 1))]
        user_groups, user_order = grouped(
            (((app, self.layout.user_bucket(user_id)), (user_id,)) for app, user_id in to_load),
            lambda bucket: (keys.of(self.keys.users(shard, *bucket)),))
        id_groups = [self._id_groups(shard, keys, generation, read[0], dedup_keys),
                     self._id_groups(shard, keys, generation - 1, read[1], dedup_keys)]
        blob = pack({"topics": topics, "users": user_groups, "sizes": sizes,
                     "ids": id_groups[0][0], "old_ids": id_groups[1][0]})
        reply = await self.transport.script(self._load, LOAD_BATCH_LUA, keys.names(), blob)
        recorded = self._note_dedup_counts(shard, generation, reply[4:8])
        if token is not None and reply[2] != token:
            self.cache.forget(shard)  # written by someone else since: load every user
            return await self.load_batch(shard, topics, users, dedup_keys, now_ms)
        if dedup_keys and read != (recorded.current or legacy, recorded.previous or legacy):
            # looked up with counts recorded since, or by another worker: again with these
            return await self.load_batch(shard, topics, users, dedup_keys, now_ms)
        # after 8 fields: each topic's next offset, each loaded record, each id's flag
        records = 8 + len(topics)
        flags = iter(reply[records + len(user_order):])
        decode_user = engine.codec().decode_user  # the engine's, native where it runs
        loaded = {to_load[position]: decode_user(raw) if raw else None
                  for position, raw in zip(user_order, reply[records:], strict=False)}
        version = int(reply[0])
        return LoadedBatch(
            version=version,
            watermark_ms=int(reply[1]) if reply[1] else None,
            next_offsets={topic: int(offset) if offset else None
                          for topic, offset in zip(topics, reply[8:records], strict=True)},
            states={user: held[user] if user in held else loaded[user] for user in users},
            seen_dedup_keys={dedup_keys[position] for _, order in id_groups
                             for position in order if next(flags)},
            dedup=generation_layout(generation, recorded, self.dedup_buckets, version == 0),
            read_watermark_ms=int(reply[3]) if reply[3] else None,
        )

    def _note_dedup_counts(self, shard: int, generation: int,
                           fields: Sequence[bytes | None]) -> Recorded:
        """The load script's reading of this generation's and the previous one's recorded
        bucket counts (count, count, the previous one's ids, its upgrade flag), kept as the
        guess the next load looks ids up with."""
        current, previous, previous_ids, uncounted = fields
        recorded = Recorded(int(current) if current else None,
                            int(previous) if previous else None,
                            int(previous_ids) if previous_ids else 0, bool(uncounted))
        for g, count in ((generation, recorded.current), (generation - 1, recorded.previous)):
            if count is None:
                self._dedup_counts.pop((shard, g), None)
            else:
                self._dedup_counts[shard, g] = count
        return recorded

    def _id_groups(self, shard: int, keys: KeyIndex, generation: int, buckets: int,
                   ids: list[bytes]) -> tuple[list[list[object]], list[int]]:
        """``ids`` grouped per bucket of a dedup generation of ``buckets`` buckets (the
        scripts' ``ids``, ``old_ids`` and ``dedup``), and their positions in that order."""
        return grouped(((bucket_of(key, buckets), (key,)) for key in ids),
                       lambda bucket: (keys.of(self.keys.dedup(shard, generation, bucket)),))

    def _counter_groups(self, shard: int, keys: KeyIndex, plan: Plan) -> list[list[object]]:
        """The plan's deltas as the apply script's ``counters``: one group per aggregate
        hash, its (field, delta) pairs summed over every group of users first. A batch
        moves ~10 (segment, cell) pairs per event but only ~1.4 distinct ones (all users
        share the "all" segment, most share a platform or country, and an active day's
        cells are everyone's): summing here, exactly, in Python ints, leaves Redis one
        HINCRBY per distinct pair (BENCHMARKS.md "Throughput")."""
        sums: dict[tuple[str, str, str], dict[str, int]] = {}
        for app, by_segments in plan.deltas.items():
            for segments, deltas in by_segments.items():
                for cell, delta in deltas.items():
                    family, field = render_cell(cell)
                    for segment in segments:
                        fields = sums.get((app, segment, family))
                        if fields is None:
                            sums[app, segment, family] = {field: delta}
                        else:
                            fields[field] = fields.get(field, 0) + delta
        aggregate = self.keys.aggregate
        groups: list[list[object]] = []
        for (app, segment, family), fields in sums.items():
            group: list[object] = [[keys.of(aggregate(shard, app, segment, family))]]
            for field, delta in fields.items():
                if delta:
                    group += (field, str(delta))
            if len(group) > 1:
                groups.append(group)
        return groups

    async def apply_plan(
        self,
        shard: int,
        loaded: LoadedBatch,
        next_offsets: Mapping[str, int],
        plan: Plan,
        at_risk_due: Mapping[UserKey, int | None] | None = None,
    ) -> bool:
        """Apply a plan and the offsets it covers in one atomic call; False on a version
        conflict (nothing was written). The plan's due entries go to the due sets as they
        are; ``at_risk_due``: users' at-risk moments (None: no entry; streams/at_risk.py)."""
        keys = KeyIndex(self.keys.meta(shard))
        counters = self._counter_groups(shard, keys, plan)
        written = loaded.dedup
        dedup, _ = self._id_groups(shard, keys, written.generation, written.current,
                                   plan.new_dedup_keys)
        sizes: list[object] = []
        if written.record or dedup:
            sizes = [keys.of(self.keys.dedup_sizes(shard, written.generation)),
                     str(written.current) if written.record else "",
                     "1" if written.uncounted else "", str(len(plan.new_dedup_keys))]
        due = self._due_changes(shard, keys, {DUE_NEXT: plan.due, DUE_RISK: at_risk_due or {}})
        applied = await self._apply(shard, loaded, keys, plan.users, plan.stats, counters, {
            "watermark": "" if plan.watermark_ms is None else str(plan.watermark_ms),
            "read_watermark": ("" if plan.read_watermark_ms is None
                               else str(plan.read_watermark_ms)),
            "offsets": [x for topic, offset in next_offsets.items() for x in (topic, str(offset))],
            "dedup": dedup, "dedup_sizes": sizes, **due,
        })
        if applied and written.record:
            self._dedup_counts[shard, written.generation] = written.current
        return applied

    def _due_changes(self, shard: int, keys: KeyIndex,
                     moments: Mapping[str, Mapping[UserKey, int | None]]) -> dict[str, object]:
        """Users' moments per due kind as the apply script's ``due_add`` and ``due_remove``
        (None: the user's entry goes), grouped per due bucket: one ZADD or ZREM per bucket,
        and the script sets each touched bucket's index entry after."""
        def head(bucket: tuple[str, int]) -> tuple[object, ...]:
            kind, number = bucket
            return (keys.of(self.keys.due_bucket(shard, kind, number)),
                    keys.of(self.keys.due_index(shard, kind)), str(number))
        added: list[tuple[tuple[str, int], tuple[str, ...]]] = []
        removed: list[tuple[tuple[str, int], tuple[str, ...]]] = []
        for kind, by_user in moments.items():
            for user, moment in by_user.items():
                bucket = (kind, self.layout.due_bucket(user))
                if moment is None:
                    removed.append((bucket, (due_member(user),)))
                else:
                    added.append((bucket, (str(moment), due_member(user))))
        return {"due_add": grouped(added, head)[0], "due_remove": grouped(removed, head)[0]}

    async def apply_at_risk(self, shard: int, loaded: LoadedBatch, plan: AtRiskPlan) -> bool:
        """Record an at-risk pass (user marks, entries dropped or moved, counters), fenced
        by the partition version like a batch."""
        keys = KeyIndex(self.keys.meta(shard))
        due = self._due_changes(shard, keys, {DUE_RISK: {**dict.fromkeys(plan.done),
                                                         **plan.later}})
        return await self._apply(shard, loaded, keys, plan.users, plan.stats, [], due)

    async def adopt_due_sets(self, shard: int, thresholds: Iterable[int]) -> None:
        """Merge the due sets of before into the due buckets, each user at its earliest
        entry, and drop them (once: none is left after): the per-threshold sets of before
        issue 31 and the single sorted set per kind that came after them. An entry earlier
        than the user's next moment only moves when it comes due (``plan_notifications``),
        so nothing pending is lost. One fenced apply: all of it or nothing."""
        old = {DUE_NEXT: [*(self.keys.due_per_threshold(shard, days) for days in thresholds),
                          self.keys.due(shard)],
               DUE_RISK: [self.keys.due_at_risk(shard)]}
        names = [name for kind_names in old.values() for name in kind_names]
        if not await self.client.exists(*names):
            return
        while True:
            loaded = await self.load_batch(shard, [], [], [], 0)  # the fence's version
            earliest: dict[str, dict[UserKey, int]] = {}
            for kind, kind_names in old.items():
                moments = earliest[kind] = {}
                for part in await self.transport.fan_out([
                        Read("zrange", name, (0, -1), {"withscores": True})
                        for name in kind_names]):
                    for member, score in part:
                        user = parse_due_member(member)
                        moments[user] = min(int(score), moments.get(user, int(score)))
                users = list(moments)
                held = await self.transport.fan_out([
                    Read("zscore", self.keys.due_bucket(shard, kind, self.layout.due_bucket(user)),
                         (due_member(user),)) for user in users])
                for user, score in zip(users, held, strict=True):
                    if score is not None:
                        moments[user] = min(moments[user], int(score))
            keys = KeyIndex(self.keys.meta(shard))
            due = self._due_changes(shard, keys, earliest)
            if await self._apply(shard, loaded, keys, {}, {}, [], due):
                break
        await self.transport.replicated_write(names[0], "DEL", *names)

    async def apply_notifications(
        self, shard: int, loaded: LoadedBatch, plan: NotificationPlan
    ) -> bool:
        """Record sent notifications (user marks, due entries gone, counters), fenced by the
        partition version like a batch."""
        keys = KeyIndex(self.keys.meta(shard))
        due = self._due_changes(shard, keys, {DUE_NEXT: plan.due})
        return await self._apply(shard, loaded, keys, plan.users, plan.stats, [], due)

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
        encode_user = engine.codec().encode_user  # the engine's, native where it runs
        user_args, _ = grouped(
            (((app, self.layout.user_bucket(user_id)), (user_id, encode_user(state)))
             for (app, user_id), state in users.items()),
            lambda bucket: (keys.of(self.keys.users(shard, *bucket)),))
        stats_group: list[object] = [[keys.of(self.keys.stats(shard))]]
        for stat, delta in stats.items():
            if delta:
                stats_group += (render_stat(stat), str(delta))
        if len(stats_group) > 1:
            counters = [*counters, stats_group]
        token = os.urandom(8)
        blob = pack({
            "version": loaded.version, "token": token, "watermark": "", "read_watermark": "",
            "offsets": [],
            "users": user_args, "dedup_ttl": (2 * self.dedup_window_days + 1) * MS_PER_DAY // 1000,
            "dedup": [], "dedup_sizes": [], "due_add": [], "due_remove": [],
            "counters": counters, **fields,
        })
        try:
            applied = bool(await self.transport.script(
                self._apply_script, APPLY_PLAN_LUA, keys.names(), blob,
                wait=self.transport.wait_replicas))
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
