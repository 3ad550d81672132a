"""Reading the due sets: pages of the users whose next win-back or at-risk moment has
come, oldest first (``due_entries``, ``at_risk_due_entries``), and how many users are due
per app and threshold (``due_counts``). Reads only: every change to the due sets,
``RedisStore.adopt_due_sets``' merge of the sets of before included, goes through the
write path's fenced apply (``state/store.py``), with the records it belongs to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from retention_tracker.state.cluster import Read, Transport
from retention_tracker.state.layout import Layout
from retention_tracker.state.registry import Registry
from retention_tracker.state.schema import DUE_NEXT, DUE_RISK, parse_due_member, text
from retention_tracker.state.scripts import DUE_COUNTS_LUA, DUE_RANGE_LUA, pack
from retention_tracker.streams import engine
from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.user_state import UserKey

#: Due entries read per threshold and pass: a pass that got fewer has drained them.
DUE_PAGE = 500


class DueSets:
    """The due buckets' reads, through one transport, at the keys ``layout`` names, over
    the partitions ``registry`` lists."""

    def __init__(self, transport: Transport, layout: Layout, registry: Registry) -> None:
        self.transport = transport
        self.layout = layout
        self.keys = layout.keys
        self.registry = registry
        self._due_range = transport.client.register_script(DUE_RANGE_LUA)
        self._due_counts = transport.client.register_script(DUE_COUNTS_LUA)

    async def at_risk_due_entries(self, shard: int, now_ms: int, limit: int = DUE_PAGE
                                  ) -> list[tuple[UserKey, int]]:
        """(user, due_ms) whose at-risk moment has come, oldest first, at most ``limit``."""
        return await self._due_page(shard, DUE_RISK, now_ms, limit)

    async def due_entries(self, shard: int, now_ms: int, limit: int = DUE_PAGE
                          ) -> list[tuple[UserKey, int]]:
        """(user, due_ms) whose next inactivity moment has come, oldest first, at most
        ``limit``."""
        return await self._due_page(shard, DUE_NEXT, now_ms, limit)

    async def _due_page(self, shard: int, kind: str, now_ms: int, limit: int | None
                        ) -> list[tuple[UserKey, int]]:
        """A kind's entries due by ``now_ms``, oldest first (then by member, as one sorted
        set orders them), at most ``limit``: the index gives the buckets whose earliest
        entry has come, and the ``limit`` oldest entries lie in the ``limit`` buckets that
        start earliest (each starts with an entry at least as old) and any that start with
        the last of them; their due entries up to that one's earliest, read in one call and
        merged, make the page."""
        page = {"start": 0, "num": limit} if limit is not None else {}
        index = self.keys.due_index(shard, kind)
        [first] = await self.transport.fan_out([Read(
            "zrangebyscore", index, ("-inf", now_ms), {**page, "withscores": True})])
        if not first:
            return []
        buckets = {int(number) for number, _ in first}
        most = now_ms
        if len(first) == limit:
            # those buckets hold ``limit`` entries at or before the last one's earliest:
            # no later entry can make the page
            most = int(first[-1][1])
            [tied] = await self.transport.fan_out([Read("zrangebyscore", index, (most, most))])
            buckets.update(int(number) for number in tied)
        names = [self.keys.due_bucket(shard, kind, number) for number in sorted(buckets)]
        flat = await self.transport.script(self._due_range, DUE_RANGE_LUA, names,
                                           pack({"most": str(most), "limit": limit or 0}))
        entries = sorted((int(flat[i + 1]), flat[i]) for i in range(0, len(flat), 2))
        return [(parse_due_member(member), score) for score, member in entries[:limit]]

    async def due_counts(self, thresholds: Mapping[str, Sequence[int]], now_ms: int
                         ) -> dict[str, dict[int, int]]:
        """Per app of ``thresholds`` (its thresholds, ascending) and threshold: its users
        due by ``now_ms`` but not yet handled, over all partitions (the notifier drains them
        every pass, but a replay or any backlog leaves many: thousands every refresh).

        A user's one due entry is its record's next moment, ``last_active`` + its first
        threshold not yet handled (every apply that writes a record moves its entry with
        it; a handled last threshold drops it). So for an app with one threshold (the
        default) the entries due by now ARE its users due: they are counted in Redis, where
        they lie (``DUE_COUNTS_LUA``: one ZCOUNT per due bucket while the state holds one
        app, else a tally by the member's app), and neither entries nor records come back:
        the cost follows the number of due buckets, not the backlog. Which thresholds a due
        user of several has reached follows from its last activity and what its episode
        handled, which only its record holds: for those apps the due users' records are
        read, a page at a time, exact, at a cost that grows with their backlog (an entry
        that carried its threshold would spare them, at a byte or two per user)."""
        counts = {app: dict.fromkeys(days, 0) for app, days in thresholds.items()}
        several = {app for app, days in thresholds.items() if len(days) > 1}
        registry = list(await self.registry.app_timezones())
        only = registry[0] if len(registry) == 1 else None
        for shard in await self.registry.shard_ids():
            for app, count in (await self._count_due(shard, DUE_NEXT, now_ms, only)).items():
                days = thresholds.get(app, ())
                if len(days) == 1:
                    counts[app][days[0]] += count
            if several:
                await self._count_due_records(shard, several, thresholds, now_ms, counts)
        return counts

    async def _count_due(self, shard: int, kind: str, now_ms: int, only: str | None
                         ) -> dict[str, int]:
        """Entries of a kind due by ``now_ms`` on ``shard``, per app; ``only``: the one app
        the state holds, all of them its own (one ZCOUNT per bucket, no member read)."""
        [due] = await self.transport.fan_out([
            Read("zrangebyscore", self.keys.due_index(shard, kind), ("-inf", now_ms))])
        if not due:
            return {}
        names = [self.keys.due_bucket(shard, kind, int(number)) for number in due]
        reply = await self.transport.script(self._due_counts, DUE_COUNTS_LUA, names,
                                            pack({"now": str(now_ms), "per_app": only is None}))
        if only is not None:
            return {only: int(reply[1])}
        return {text(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}

    async def _count_due_records(self, shard: int, apps: set[str],
                                 thresholds: Mapping[str, Sequence[int]], now_ms: int,
                                 counts: dict[str, dict[int, int]]) -> None:
        """Add the due users of ``apps`` on ``shard`` to ``counts`` per threshold their
        records say has come and is not handled, reading DUE_PAGE records at a time."""
        users = [user for user, _ in await self._due_page(shard, DUE_NEXT, now_ms, None)
                 if user[0] in apps]
        for start in range(0, len(users), DUE_PAGE):
            page = users[start:start + DUE_PAGE]
            raws = await self.transport.fan_out([
                Read("hget", self.layout.user_key(shard, app, user_id), (user_id,))
                for app, user_id in page])
            for (app, _), raw in zip(page, raws, strict=True):
                state = engine.codec().decode_user(raw) if raw else None
                if state is None or not state.seen:
                    continue
                for days in thresholds[app]:
                    if (not state.handled(days)
                            and state.last_active_ms + days * MS_PER_DAY <= now_ms):
                        counts[app][days] += 1
