"""The Redis layer on a real Redis: atomic apply with offsets, version fencing, dedup memory,
the due set."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
import zlib
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from retention_tracker.bench import reference
from retention_tracker.state.dedup import FIRST_BUCKETS, LEGACY_BUCKETS, sized
from retention_tracker.state.queries import read_daily, read_measure
from retention_tracker.state.schema import DUE_NEXT, DUE_RISK, due_member, parse_due_member
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.counters import Measure
from retention_tracker.streams.events import Event
from retention_tracker.streams.figures import Bounds, cohort_rows, last_day_with_data
from retention_tracker.streams.plan import Plan, dedup_key, dedup_key_of, plan_batch
from retention_tracker.streams.user_state import UserKey, UserState, encode_user
from retention_tracker.streams.winback import next_moment_ms

BASE_MS = 1_704_067_200_000
UTC = AppCalendar("UTC")
UTC_APPS = {app: UTC for app in ("a", "b", "default")}  # every app of the tests, in UTC


async def apply_batch(store: RedisStore, shard: int, events: list[Event], first_offset: int,
                      now_ms: int = BASE_MS) -> bool:
    items = [(first_offset + i, -1, e) for i, e in enumerate(events)]
    loaded = await store.load_batch(
        shard, ["t"], [(e.app, e.user_id) for e in events],
        [dedup_key_of(e) for e in events], now_ms,
    )
    start = loaded.next_offsets["t"] or 0
    fresh = [item for item in items if item[0] >= start]
    plan = plan_batch(fresh, loaded.states, loaded.seen_dedup_keys, loaded.watermark_ms, 400,
                      UTC_APPS)
    return await store.apply_plan(shard, loaded, {"t": first_offset + len(events)}, plan)


async def test_redis_state_equals_reference_over_shards_and_redelivery(store: RedisStore) -> None:
    rng = random.Random(7)
    events = [
        Event("a", f"e{i}", rng.choice(["install", "session"]), f"u{rng.randrange(40)}",
              BASE_MS + rng.randrange(40 * 24) * 3_600_000)
        for i in range(600)
    ]
    by_shard: dict[int, list[Event]] = {}
    for event in events:
        by_shard.setdefault(zlib.crc32(event.user_id.encode()) % 3, []).append(event)
    for shard, shard_events in by_shard.items():
        await store.registry.register_shard(shard)
        for start in range(0, len(shard_events), 50):
            assert await apply_batch(store, shard, shard_events[start:start + 50], start)
        # a restart re-reads the first half from Kafka: offsets skip it, nothing changes
        assert await apply_batch(store, shard, shard_events[: len(shard_events) // 2], 0)
    now = BASE_MS + 50 * MS_PER_DAY
    for granularity in ("day", "week", "month"):
        daily = await read_daily(store, "a")
        rows = cohort_rows(
            await read_measure(store, "a", Measure.COHORT_SIZE, granularity),
            await read_measure(store, "a", Measure.CLASSIC, granularity),
            "classic", granularity, Bounds(UTC, now, last_day_with_data(daily)),
        )
        assert [r.as_json() for r in rows] == reference.triangle(events, "a", granularity,
                                                                  "classic", "UTC", now)


async def test_apply_is_fenced_by_version(store: RedisStore) -> None:
    event = Event("a", "e1", "purchase", "u1", BASE_MS, amount=1.0)  # its id is remembered
    await store.registry.register_shard(0)
    first = await store.load_batch(0, ["t"], [("a", "u1")], [dedup_key("a", "e1")], BASE_MS)
    second = await store.load_batch(0, ["t"], [("a", "u1")], [dedup_key("a", "e1")], BASE_MS)
    plan = plan_batch([(0, -1, event)], first.states, set(), None, 400, UTC_APPS)
    assert await store.apply_plan(0, first, {"t": 1}, plan) is True
    assert await store.apply_plan(0, second, {"t": 1}, plan) is False  # stale: nothing written
    after = await store.load_batch(0, ["t"], [("a", "u1")], [dedup_key("a", "e1")], BASE_MS)
    assert after.next_offsets == {"t": 1}
    assert after.seen_dedup_keys == {dedup_key("a", "e1")}
    assert (await store.reads.read_family("a", "daily"))[f"dau:{UTC.day_of(BASE_MS)}"] == 1


async def test_dedup_memory_spans_previous_generation_only(store: RedisStore) -> None:
    window_ms = store.dedup_window_days * MS_PER_DAY
    key = dedup_key("a", "e1")
    loaded = await store.load_batch(0, ["t"], [("a", "u")], [key], BASE_MS)
    plan = plan_batch([(0, -1, Event("a", "e1", "purchase", "u", BASE_MS, amount=1.0))],
                      loaded.states, set(), None, 400, UTC_APPS)
    assert await store.apply_plan(0, loaded, {"t": 1}, plan)
    for later, remembered in [(window_ms, True), (2 * window_ms + MS_PER_DAY, False)]:
        again = await store.load_batch(0, ["t"], [], [key], BASE_MS + later)
        assert (key in again.seen_dedup_keys) is remembered


async def test_state_cache_serves_own_writes_and_drops_them_when_another_worker_writes(
    store: RedisStore,
) -> None:
    """Two workers own the partition one after the other (a rebalance): the first must not
    plan on the states it cached once the second has written."""
    if not store.cache.capacity:
        pytest.skip("needs the state cache")
    other = RedisStore(store.client, prefix=store.keys.prefix, user_buckets=8, dedup_buckets=4,
                       state_cache_users=1000)
    await store.registry.register_shard(0)
    day = [Event("a", f"e{n}", "session", "u1", BASE_MS + n * MS_PER_DAY) for n in range(3)]
    assert await apply_batch(store, 0, day[:1], 0)
    # the cache, not Redis, answers for this worker's own last write
    bucket = store.layout.user_key(0, "a", "u1")
    record = await store.client.hget(bucket, "u1")
    await store.client.hdel(bucket, "u1")
    loaded = await store.load_batch(0, ["t"], [("a", "u1")], [], BASE_MS)
    assert loaded.states[("a", "u1")] is not None
    assert loaded.states[("a", "u1")].active_days == {BASE_MS // MS_PER_DAY}
    await store.client.hset(bucket, "u1", record)
    # the other worker writes the partition; the first sees its state, not the cached one
    assert await apply_batch(other, 0, day[1:2], 1)
    assert await apply_batch(store, 0, day[2:], 2)
    final = (await store.load_batch(0, ["t"], [("a", "u1")], [], BASE_MS)).states[("a", "u1")]
    assert final is not None
    assert final.active_days == {e.ts_ms // MS_PER_DAY for e in day}
    assert (await other.load_batch(0, ["t"], [("a", "u1")], [], BASE_MS)).states[
        ("a", "u1")] == final


async def test_every_key_the_apply_script_writes_is_declared_in_keys(
        redis_url: str, unique: str) -> None:
    """The Redis scripting rule Redis Cluster relies on: a script touches only its KEYS
    (the aggregate keys were once built inside the script)."""
    client = aioredis.from_url(redis_url)
    prefix = f"test-{unique}"
    store = RedisStore(client, prefix=prefix, user_buckets=4, dedup_buckets=4)
    declared: set[str] = set()
    script = store._apply_script

    async def spy(keys: list[str], args: list[Any]) -> Any:
        declared.update(keys)
        return await script(keys=keys, args=args)

    store._apply_script = spy  # type: ignore[assignment]
    try:
        events = [Event("a", f"e{n}", "purchase", f"u{n % 3}", BASE_MS + n * 3_600_000,
                        platform="ios" if n % 2 else "android", amount=1.5, currency="USD")
                  for n in range(12)]
        loaded = await store.load_batch(0, ["t"], [(e.app, e.user_id) for e in events],
                                        [dedup_key(e.app, e.event_id) for e in events], BASE_MS)
        plan = plan_batch([(n, -1, e) for n, e in enumerate(events)], loaded.states,
                          loaded.seen_dedup_keys, None, 400, UTC_APPS)
        assert await store.apply_plan(0, loaded, {"t": 12}, plan)
        written = {k.decode() async for k in client.scan_iter(match=f"{prefix}:*")}
        assert any(":a:a:platform=ios:" in k for k in written)  # aggregates of a segment
        assert written <= declared
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_the_per_threshold_due_sets_of_before_merge_at_each_users_earliest(
    store: RedisStore,
) -> None:
    """Issue 31: one due entry per user. A deployment's per-threshold sets are merged into
    it when a worker takes the partition, each user at its earliest entry, and dropped."""
    client, keys = store.client, store.keys
    loaded = await store.load_batch(0, [], [], [], 0)
    assert await store.apply_plan(0, loaded, {}, Plan(due={("a", "x"): 800, ("a", "y"): 60}),
                                  {("a", "y"): 70})  # already in the due buckets
    await client.zadd(keys.due_per_threshold(0, 1), {"a\x00u": 100, "a\x00v": 300})
    await client.zadd(keys.due_per_threshold(0, 7), {"a\x00u": 700, "a\x00x": 900})
    # the single sorted set per kind that came after (never released, on a dev deployment)
    await client.zadd(keys.due(0), {"a\x00w": 50, "a\x00v": 250})
    await client.zadd(keys.due_at_risk(0), {"a\x00u": 40, "a\x00y": 90})
    await store.adopt_due_sets(0, (1, 2, 7))
    merged = [(("a", "w"), 50), (("a", "y"), 60), (("a", "u"), 100), (("a", "v"), 250),
              (("a", "x"), 800)]
    assert await store.due.due_entries(0, 10**6) == merged
    assert await store.due.at_risk_due_entries(0, 10**6) == [(("a", "u"), 40), (("a", "y"), 70)]
    old = [*(keys.due_per_threshold(0, d) for d in (1, 2, 7)), keys.due(0), keys.due_at_risk(0)]
    assert not await client.exists(*old)
    await store.adopt_due_sets(0, (1, 2, 7))  # nothing left to merge: unchanged
    assert await store.due.due_entries(0, 10**6) == merged


async def test_users_due_now_are_counted_per_threshold_from_their_records(
    store: RedisStore,
) -> None:
    """The due set holds u's next moment only (1 day after its last activity); at 3 days
    both of its thresholds have come, and once the first is handled, only the second."""
    await store.registry.register_shard(0)
    state = UserState(BASE_MS, BASE_MS, UTC.day_of(BASE_MS), frozenset({UTC.day_of(BASE_MS)}),
                      frozenset())
    await store.client.hset(store.layout.user_key(0, "a", "u"), "u", encode_user(state))
    loaded = await store.load_batch(0, [], [], [], 0)
    assert await store.apply_plan(0, loaded, {}, Plan(due={("a", "u"): BASE_MS + MS_PER_DAY}))
    now = BASE_MS + 3 * MS_PER_DAY
    assert await store.due.due_counts({"a": (1, 2, 7), "b": (1, 2, 7)}, now) == {
        "a": {1: 1, 2: 1, 7: 0}, "b": {1: 0, 2: 0, 7: 0}}
    handled = replace(state, notified_episode_ms=BASE_MS, notified_days=(1,))
    await store.client.hset(store.layout.user_key(0, "a", "u"), "u", encode_user(handled))
    assert await store.due.due_counts({"a": (1, 2, 7)}, now) == {"a": {1: 0, 2: 1, 7: 0}}


@pytest.mark.parametrize("apps", [("a",), ("a", "b")], ids=["one-app", "two-apps"])
async def test_a_due_backlog_larger_than_any_page_is_counted_exactly(
    store: RedisStore, apps: tuple[str, ...],
) -> None:
    """1,500 users an app on two partitions, 900 of each app due: more than a page
    (DUE_PAGE) and more than one due bucket holds. "a" has one threshold (counted in Redis,
    one ZCOUNT per bucket when it is the state's only app, else tallied per app), "b" two
    (records read: a third had their first moment handled and are due at the second). Each count
    equals the plain one from the records."""
    thresholds = {"a": (2,), "b": (1, 3)}
    now = BASE_MS + 3 * MS_PER_DAY
    records: dict[UserKey, UserState] = {}
    for app in apps:
        await store.registry.fix_timezone(app, "UTC")
        for n in range(1500):
            last_ms = BASE_MS + (n % 5) * MS_PER_DAY * 6 // 10  # due for "a": n % 5 < 2
            day = UTC.day_of(last_ms)
            state = UserState(BASE_MS, last_ms, day, frozenset({day}), frozenset())
            if app == "b" and n % 3 == 0:  # its 1-day moment handled: due at 3 days
                state = replace(state, notified_episode_ms=last_ms, notified_days=(1,))
            records[app, f"u{n}"] = state
    for shard in (0, 1):
        await store.registry.register_shard(shard)
        mine = {user: state for user, state in records.items()
                if zlib.crc32(user[1].encode()) % 2 == shard}
        for (app, user_id), state in mine.items():
            await store.client.hset(store.layout.user_key(shard, app, user_id), user_id,
                                    encode_user(state))
        loaded = await store.load_batch(shard, [], [], [], 0)
        assert await store.apply_plan(shard, loaded, {}, Plan(due={
            user: next_moment_ms(state, thresholds[user[0]]) for user, state in mine.items()}))
    expected = {app: {days: sum(1 for (a, _), state in records.items() if a == app
                                and not state.handled(days)
                                and state.last_active_ms + days * MS_PER_DAY <= now)
                      for days in thresholds[app]} for app in apps}
    assert expected["a"] == {2: 600}
    assert expected.get("b", {1: 800, 3: 300}) == {1: 800, 3: 300}
    assert await store.due.due_counts({app: thresholds[app] for app in apps}, now) == expected
    # a moment later, the next fifth of "a" is due too: the count follows "now"
    later = now + MS_PER_DAY * 6 // 10
    assert (await store.due.due_counts({"a": (2,)}, later))["a"] == {2: 900}


# ---- due buckets: the two-level structure against a plain model --------------------------

DUE_USERS = [("a", f"u{n}") for n in range(12)] + [("b", "u0")]
due_changes = st.dictionaries(st.sampled_from(DUE_USERS),
                              st.one_of(st.none(), st.integers(0, 40)), max_size=8)


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "35")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(due_changes, due_changes), min_size=1, max_size=10),
       now=st.integers(-1, 45), limit=st.integers(1, 6))
def test_due_buckets_hold_a_plain_models_entries_and_pages(
    redis_url: str, steps: list[tuple[dict[UserKey, int | None], dict[UserKey, int | None]]],
    now: int, limit: int,
) -> None:
    """Random moves and drops of win-back and at-risk entries through the apply script, on
    3 buckets (several users a bucket, buckets emptied and refilled, ties): after each
    call every bucket holds exactly the model's users of that bucket, and the index scores
    each non-empty bucket at its earliest entry and lists no other; a page is the model's
    entries due by ``now`` in order (moment, then member), at most ``limit``."""
    asyncio.run(_check_due_buckets(redis_url, steps, now, limit))


async def _check_due_buckets(
    redis_url: str, steps: list[tuple[dict[UserKey, int | None], dict[UserKey, int | None]]],
    now: int, limit: int,
) -> None:
    client = aioredis.from_url(redis_url)
    store = RedisStore(client, prefix=f"due-{uuid.uuid4().hex[:8]}", due_buckets=3)
    model: dict[str, dict[UserKey, int]] = {DUE_NEXT: {}, DUE_RISK: {}}
    try:
        for next_moments, risk_moments in steps:
            loaded = await store.load_batch(0, [], [], [], 0)
            assert await store.apply_plan(0, loaded, {}, Plan(due=dict(next_moments)),
                                          risk_moments)
            for kind, moments in ((DUE_NEXT, next_moments), (DUE_RISK, risk_moments)):
                for user, moment in moments.items():
                    if moment is None:
                        model[kind].pop(user, None)
                    else:
                        model[kind][user] = moment
                await _assert_two_levels(store, kind, model[kind])
        for kind, read in ((DUE_NEXT, store.due.due_entries),
                           (DUE_RISK, store.due.at_risk_due_entries)):
            expected = sorted((moment, due_member(user).encode(), user)
                              for user, moment in model[kind].items() if moment <= now)
            assert await read(0, now, limit) == [(user, m) for m, _, user in expected][:limit]
    finally:
        keys = [k async for k in client.scan_iter(match=f"{store.keys.prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _assert_two_levels(store: RedisStore, kind: str, model: dict[UserKey, int]) -> None:
    buckets: dict[int, dict[UserKey, int]] = {}
    for user, moment in model.items():
        buckets.setdefault(store.layout.due_bucket(user), {})[user] = moment
    for number in range(store.layout.due_buckets):
        held = await store.client.zrange(store.keys.due_bucket(0, kind, number), 0, -1,
                                         withscores=True)
        assert {parse_due_member(m): int(s) for m, s in held} == buckets.get(number, {})
    index = await store.client.zrange(store.keys.due_index(0, kind), 0, -1, withscores=True)
    assert {int(n): int(s) for n, s in index} == {
        number: min(entries.values()) for number, entries in buckets.items()}


# ---- dedup generations: a bucket count each, recorded with the generation ------------------

WEEK_MS = 7 * MS_PER_DAY


def purchases(names: list[str], ts_ms: int) -> list[Event]:
    """Purchases (ids remembered) of a few users, one per name."""
    return [Event("a", name, "purchase", f"u{n % 5}", ts_ms, amount=1.0)
            for n, name in enumerate(names)]


async def generation_sizes(store: RedisStore, shard: int, generation: int) -> dict[str, int]:
    """A generation's recorded sizes (``Keyspace.dedup_sizes``), by field."""
    raw = await store.client.hgetall(store.keys.dedup_sizes(shard, generation))
    return {k.decode(): int(v) for k, v in raw.items()}


async def buckets_used(store: RedisStore, shard: int, generation: int) -> set[int]:
    pattern = store.keys.dedup(shard, generation, 0)[:-1] + "*"
    return {int(k.rsplit(b":", 1)[1]) async for k in store.client.scan_iter(match=pattern)}


async def test_each_generation_is_sized_from_the_last_and_copies_cross_the_change(
        store: RedisStore) -> None:
    """Auto: a fresh partition's first generation gets FIRST_BUCKETS; the next is sized
    from the 250 ids the first kept (16 buckets at ~24 ids), and copies of ids written in
    the first are found through its own count after the change."""
    auto = RedisStore(store.client, prefix=store.keys.prefix, user_buckets=8,
                      state_cache_users=store.cache.capacity)
    first = auto.dedup_generation(BASE_MS)
    await auto.registry.register_shard(0)
    assert await apply_batch(auto, 0, purchases([f"p{n}" for n in range(250)], BASE_MS), 0)
    assert await generation_sizes(auto, 0, first) == {"b": FIRST_BUCKETS, "n": 250}
    used = await buckets_used(auto, 0, first)
    assert used <= set(range(FIRST_BUCKETS)) and len(used) > FIRST_BUCKETS // 2
    later = BASE_MS + WEEK_MS
    batch = purchases([f"p{n}" for n in range(200, 250)] + [f"q{n}" for n in range(10)], later)
    assert await apply_batch(auto, 0, batch, 250, later)
    assert await generation_sizes(auto, 0, first + 1) == {"b": sized(250), "n": 10}
    assert sized(250) == 16
    assert await buckets_used(auto, 0, first + 1) <= set(range(16))
    stats = await auto.reads.read_stats()
    assert stats["dup:a"] == 50 and stats["acc:a:purchase"] == 260
    # a worker started since (nothing cached) finds both generations' ids
    fresh = RedisStore(store.client, prefix=store.keys.prefix, user_buckets=8)
    keys = [dedup_key("a", f"p{n}") for n in (0, 249)] + [dedup_key("a", "q3"),
                                                          dedup_key("a", "r")]
    loaded = await fresh.load_batch(0, ["t"], [], keys, later)
    assert loaded.seen_dedup_keys == set(keys[:3])


async def test_a_worker_upgraded_mid_generation_finds_the_ids_written_before(
        store: RedisStore) -> None:
    """State as the version before wrote it (1,024 buckets, no recorded count): the
    upgraded worker reads it with that count, records it for this generation and the next
    (this one's ids from before are uncounted), and sizes the one after."""
    old = RedisStore(store.client, prefix=store.keys.prefix, user_buckets=8,
                     dedup_buckets=LEGACY_BUCKETS)
    await old.registry.register_shard(0)
    generation = old.dedup_generation(BASE_MS)
    assert await apply_batch(old, 0, purchases([f"p{n}" for n in range(300)], BASE_MS), 0)
    await store.client.delete(old.keys.dedup_sizes(0, generation))  # as written before
    assert len(await buckets_used(old, 0, generation)) > 200
    new = RedisStore(store.client, prefix=store.keys.prefix, user_buckets=8,
                     state_cache_users=store.cache.capacity)
    copies = [f"p{n}" for n in range(0, 300, 10)]
    assert await apply_batch(new, 0, purchases([*copies, "q0", "q1"], BASE_MS + 1), 300,
                             BASE_MS + 1)
    assert await generation_sizes(new, 0, generation) == {"b": LEGACY_BUCKETS, "u": 1, "n": 2}
    later = BASE_MS + WEEK_MS
    assert await apply_batch(new, 0, purchases([*copies, "q0", "q1", "r0"], later), 332,
                             later)
    assert await generation_sizes(new, 0, generation + 1) == {"b": LEGACY_BUCKETS, "n": 1}
    last = later + WEEK_MS
    assert await apply_batch(new, 0, purchases(["r0", "s0"], last), 365, last)
    assert await generation_sizes(new, 0, generation + 2) == {"b": 1, "n": 1}
    stats = await new.reads.read_stats()
    assert stats["dup:a"] == 2 * len(copies) + 2 + 1
    assert stats["acc:a:purchase"] == 300 + 2 + 1 + 1


async def test_a_number_set_later_applies_to_new_generations_only(store: RedisStore) -> None:
    """DEDUP_BUCKETS changed mid-generation: the recorded count still finds the ids."""
    auto = RedisStore(store.client, prefix=store.keys.prefix, user_buckets=8)
    await auto.registry.register_shard(0)
    generation = auto.dedup_generation(BASE_MS)
    assert await apply_batch(auto, 0, purchases([f"p{n}" for n in range(40)], BASE_MS), 0)
    forced = RedisStore(store.client, prefix=store.keys.prefix, user_buckets=8,
                        dedup_buckets=3)
    assert await apply_batch(forced, 0, purchases([f"p{n}" for n in range(40)], BASE_MS), 40)
    later = BASE_MS + WEEK_MS
    assert await apply_batch(forced, 0, purchases(["p1", "q"], later), 80, later)
    assert (await generation_sizes(forced, 0, generation))["b"] == FIRST_BUCKETS
    assert (await generation_sizes(forced, 0, generation + 1))["b"] == 3
    assert (await forced.reads.read_stats())["dup:a"] == 41


dedup_batches = st.lists(
    st.tuples(st.booleans(), st.sampled_from([None, 1, 2, 7]),
              st.lists(st.integers(0, 19), max_size=12)),
    min_size=1, max_size=8)


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "35")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(batches=dedup_batches, upgraded_after=st.integers(0, 3),
       before=st.sampled_from([None, 7]))
def test_copies_are_found_across_generations_settings_and_an_upgrade(
    redis_url: str, batches: list[tuple[bool, int | None, list[int]]], upgraded_after: int,
    before: int | None,
) -> None:
    """Purchases delivered in batches over generations (a batch may start the next one),
    each batch by a worker with its DEDUP_BUCKETS (auto or a number), the first
    ``upgraded_after`` batches written as the version before did (DEDUP_BUCKETS
    ``before``, unset: 1,024; no count recorded), which the upgraded workers keep while
    those generations are looked up (docs/configuration.md): a copy is dropped exactly
    when its id was kept in this generation or the previous one (METRICS.md §1, the dedup
    window), whatever the bucket counts."""
    asyncio.run(_check_dedup_generations(redis_url, batches, upgraded_after, before))


async def _check_dedup_generations(redis_url: str,
                                   batches: list[tuple[bool, int | None, list[int]]],
                                   upgraded_after: int, before: int | None) -> None:
    client = aioredis.from_url(redis_url)
    prefix = f"dd-{uuid.uuid4().hex[:8]}"
    workers: dict[int | None, RedisStore] = {}
    kept: dict[int, int] = {}  # event number -> generation its id was last kept in
    expected = {"dup:a": 0, "acc:a:purchase": 0}
    now, offset, last_before = BASE_MS, 0, None
    try:
        await RedisStore(client, prefix=prefix).registry.register_shard(0)
        for position, (next_generation, buckets, numbers) in enumerate(batches):
            now += WEEK_MS if next_generation else 1
            generation = RedisStore(client).dedup_generation(now)
            old = position < upgraded_after
            if old:
                last_before, buckets = generation, before or LEGACY_BUCKETS
            elif last_before is not None and generation <= last_before + 1:
                buckets = before
            worker = workers.setdefault(buckets, RedisStore(
                client, prefix=prefix, user_buckets=4, dedup_buckets=buckets,
                state_cache_users=100))
            assert await apply_batch(worker, 0, purchases([f"e{n}" for n in numbers], now),
                                     offset, now)
            offset += len(numbers)
            if old:  # the version before recorded no count
                await client.delete(worker.keys.dedup_sizes(0, generation))
            for number in numbers:
                if kept.get(number, generation - 2) >= generation - 1:
                    expected["dup:a"] += 1
                else:
                    expected["acc:a:purchase"] += 1
                    kept[number] = generation
        stats = await RedisStore(client, prefix=prefix).reads.read_stats()
        assert {name: stats[name] for name in expected} == expected
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
