"""Home partitions: routing is Kafka's default partitioner, causes name what the producer did,
and any keying, partitioning and batching of the same events gives the reference figures on
the real store (forwarded through a re-key log, with crashes between forward and apply)."""

from __future__ import annotations

import asyncio
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_tracker.agents.rekey import (
    WATERMARK_HEADER,
    Router,
    home_partition,
    partition_count_problem,
    read_records,
    rekey_headers,
)
from retention_tracker.bench import reference
from retention_tracker.config.settings import Settings
from retention_tracker.state.queries import cohort_report, kpis_report, summary_report
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.batch import VALUE_COPY_MAX_BYTES, BatchRules, outcome_of
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.events import Event
from retention_tracker.streams.plan import dedup_key_of
from tests.streams.real_apply import RealApply

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
NOW_MS = BASE_MS + 90 * MS_PER_DAY
ZONES = {"a": "UTC", "b": "Asia/Tokyo"}
PARTITIONS = 3


def record(offset: int, key: bytes | None, value: bytes, partition: int = 0,
           headers: tuple[tuple[str, bytes], ...] = ()) -> ConsumerRecord:
    return ConsumerRecord("t", partition, offset, 0, 0, key, value, None, 0, len(value), headers)


def session(user: str, n: int = 0) -> dict[str, Any]:
    return {"event_id": f"{user}-{n}", "type": "session", "user_id": user, "ts": BASE_MS}


# ---- the router ------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 3, 4, 12])
def test_home_is_where_kafkas_default_partitioner_puts_the_user_id_key(partitions: int) -> None:
    producer = DefaultPartitioner()
    every = list(range(partitions))
    for n in range(300):
        user = f"user-{n}" if n % 3 else f"ü-{n}-{'x' * (n % 7)}"  # every tail length, UTF-8
        assert home_partition(user, partitions) == producer(user.encode(), every, every)


def test_causes_name_what_the_producer_did() -> None:
    router = Router(4)
    alice, bob = "alice", "bob"
    away_partition = next(p for p in range(4) if p != router.home(alice))
    cases = [
        (None, [session(alice)], "no_key"),
        (b"device-17", [session(alice)], "other_key"),
        (alice.encode(), [session(alice)], "other_partitioner"),
        (bob.encode(), [session(bob), session(alice)], "mixed_array"),
    ]
    for key, objects, cause in cases:
        value = orjson.dumps(objects if len(objects) > 1 else objects[0])
        read = read_records([record(5, key, value, away_partition)], away_partition, router,
                            NOW_MS, 1 << 20, 1000)
        forwarded = [f for f in read.away if f.event.user_id == alice]
        assert [(f.cause, f.partition, f.offset) for f in forwarded] == [
            (cause, router.home(alice), 5)], key


def test_events_at_home_are_not_forwarded_and_keep_their_position() -> None:
    router = Router(4)
    users = [f"u{n}" for n in range(40)]
    home_of = {u: router.home(u) for u in users}
    target = 2
    objects = [session(u) for u in users]
    read = read_records([record(9, None, orjson.dumps(objects), target)], target, router,
                        NOW_MS, 1 << 20, 1000)
    assert [(o, i, e.user_id) for o, i, e in read.at_home] == [
        (9, i, u) for i, u in enumerate(users) if home_of[u] == target]
    assert sorted(f.event.user_id for f in read.away) == sorted(
        u for u in users if home_of[u] != target)
    assert not read.rejects


@pytest.mark.parametrize("array", [False, True])
def test_a_forward_made_large_by_ignored_fields_is_sent_in_its_contract_form(array: bool
                                                                           ) -> None:
    """A forward is the event as sent, unless fields the contract ignores make it longer
    than the worker may copy into a record (``VALUE_COPY_MAX_BYTES``): then its §1 form,
    which its home reads as the same event (the worker's producer refused the original)."""
    router = Router(4)
    away_partition = next(p for p in range(4) if p != router.home("alice"))
    small = {**session("alice", 1), "note": "kept"}
    large = {**session("alice", 2), "type": "purchase", "amount": 4.99, "currency": "EUR",
             "platform": "ios", "blob": "x" * VALUE_COPY_MAX_BYTES}
    for obj, kept in [(small, True), (large, False)]:
        value = orjson.dumps([obj] if array else obj)
        [forward] = read_records([record(5, None, value, away_partition)], away_partition,
                                 router, NOW_MS, 2 << 20, 1000).away
        assert len(forward.value) <= VALUE_COPY_MAX_BYTES
        if kept:
            assert forward.value == (orjson.dumps(obj) if array else value)
        else:
            assert forward.value == orjson.dumps(forward.event.to_json())
        at_home = read_records([record(0, None, forward.value)], forward.partition, None,
                               NOW_MS, 2 << 20, 1000).at_home
        assert [e for _, _, e in at_home] == [forward.event]


def test_rekeyed_records_are_taken_as_home_and_rejects_stay_with_their_record() -> None:
    bad = record(3, b"x", b"{not json")
    good = record(4, None, orjson.dumps(session("someone")))
    read = read_records([bad, good], 0, None, NOW_MS, 1 << 20, 1000)
    assert [(o, e.user_id) for o, _, e in read.at_home] == [(4, "someone")]
    assert [(offset, reject.reason) for offset, reject in read.rejects] == [(3, "invalid_json")]
    assert read.away == []
    bet = record(5, None, orjson.dumps({**session("someone"), "type": "bet"}))
    assert read_records([bet], 0, None, NOW_MS, 1 << 20, 1000).rejects[0][1].reason == (
        "unknown_type")
    read = read_records([bet], 0, None, NOW_MS, 1 << 20, 1000, frozenset({"bet"}))
    assert [e.type for _, _, e in read.at_home] == ["bet"]  # ACTIVITY_EVENTS reach the parser


def test_partition_count_changes_are_refused_in_one_line() -> None:
    assert partition_count_problem({"in": 4, "rk": 4}, {"in": 4, "rk": 4}, "rt") is None
    assert partition_count_problem({"in": 4, "rk": 4}, {}, "rt") is None  # a fresh state
    unequal = partition_count_problem({"in": 8, "rk": 4}, {}, "rt")
    assert unequal is not None and "equal partition counts" in unequal
    moved = partition_count_problem({"in": 8, "rk": 8}, {"in": 4, "rk": 4}, "rt")
    assert moved is not None and "in has 8 partitions" in moved and "built with 4" in moved
    assert "\n" not in moved and "KEY_PREFIX" in moved
    # a new input topic must match the shards the state already has
    new_topic = partition_count_problem({"new": 2}, {"in": 4, "rk": 4}, "rt")
    assert new_topic is not None and "new has 2 partitions" in new_topic


# ---- exact whatever the producers do, on the real store --------------------------------


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    n_users = draw(st.integers(1, 9))
    events = []
    for i in range(draw(st.integers(1, 45))):
        kind = draw(st.sampled_from(["install", "session", "session", "purchase"]))
        events.append(Event(
            app=draw(st.sampled_from(["a", "b"])),
            event_id=f"e{i}",
            type=kind,
            user_id=f"u{draw(st.integers(0, n_users - 1))}",
            ts_ms=BASE_MS + draw(st.integers(0, 60 * 24)) * 3_600_000,
            platform=draw(st.sampled_from([None, "ios", "android"])),
            cost=draw(st.sampled_from([None, 0.5, 2.0])) if kind == "install" else None,
            amount=draw(st.sampled_from([0.99, 4.99, 120.0])) if kind == "purchase" else None,
            currency=draw(st.sampled_from([None, "EUR"])) if kind == "purchase" else None,
        ))
    return events


@dataclass
class Logs:
    """The input topic's and the re-key topic's partitions as the broker would hold them."""

    inputs: list[list[ConsumerRecord]] = field(default_factory=list)
    rekey: list[list[ConsumerRecord]] = field(default_factory=list)

    def append(self, log: list[ConsumerRecord], key: bytes | None, value: bytes,
               headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        log.append(record(len(log), key, value, headers=headers))


def produce(events: list[Event], rng: random.Random) -> Logs:
    """Messages as imperfect producers send them: keyed or not, by the user or by something
    else, placed by murmur2, CRC32 or at random, one event or an array of several users';
    some messages are sent twice (a producer retry)."""
    logs = Logs([[] for _ in range(PARTITIONS)], [[] for _ in range(PARTITIONS)])
    i = 0
    while i < len(events):
        size = rng.choice([1, 1, 2, 4])
        chunk = events[i:i + size]
        i += size
        payload = [e.to_json() for e in chunk]
        value = orjson.dumps(payload if len(payload) > 1 or rng.random() < 0.2 else payload[0])
        key = rng.choice([None, chunk[0].user_id.encode(), b"session-42", str(i).encode()])
        placed_by = rng.choice(["murmur2", "crc32", "random"])
        if key is None or placed_by == "random":
            partition = rng.randrange(PARTITIONS)
        elif placed_by == "crc32":
            partition = zlib.crc32(key) % PARTITIONS
        else:
            partition = home_partition(key.decode(), PARTITIONS)
        for _ in range(2 if rng.random() < 0.1 else 1):
            logs.append(logs.inputs[partition], key, value)
    return logs


async def consume(store: RedisStore, logs: Logs, rng: random.Random,
                  rules: BatchRules) -> None:
    """Batches of any size from any partition in any interleaving, the way the ingest loop
    applies them: forward what is away from home (with the headers the worker sends), then
    apply the rest with the offsets. Now and then a worker dies after forwarding and before
    applying: the batch is read again."""
    router = Router(PARTITIONS)
    sources = [("in", p, logs.inputs[p]) for p in range(PARTITIONS)]
    sources += [("rk", p, logs.rekey[p]) for p in range(PARTITIONS)]
    positions = dict.fromkeys(((t, p) for t, p, _ in sources), 0)
    while True:
        ready = [(t, p, log) for t, p, log in sources if positions[t, p] < len(log)]
        if not ready:
            return
        topic, partition, log = rng.choice(ready)
        begin = positions[topic, partition]
        batch = log[begin:begin + rng.randint(1, 6)]
        read = read_records(batch, partition, router if topic == "in" else None, NOW_MS,
                            1 << 20, 1000)
        events = read.at_home
        keys = [dedup_key_of(e) for _, _, e in events]
        loaded = await store.load_batch(
            partition, [topic], [(e.app, e.user_id) for _, _, e in events], keys, NOW_MS)
        start = loaded.next_offsets[topic] or 0
        fresh = read.from_offset(start)
        outcome = outcome_of(fresh, keys[len(keys) - len(fresh.at_home):], loaded.states,
                             loaded.seen_dedup_keys, loaded.watermark_ms,
                             {app: AppCalendar(zone) for app, zone in ZONES.items()}, rules,
                             None if topic == "rk" else NOW_MS, loaded.read_watermark_ms)
        for forward in outcome.forwards:
            logs.append(logs.rekey[forward.partition], forward.event.user_id.encode(),
                        forward.value, tuple(rekey_headers(forward, f"in/{partition}/")))
        if rng.random() < 0.15:
            positions[topic, partition] = start  # killed: resume where the state says
            continue
        assert await store.apply_plan(partition, loaded, {topic: batch[-1].offset + 1},
                                      outcome.plan)
        positions[topic, partition] = batch[-1].offset + 1


async def figures_equal_reference(store: RedisStore, prefix: str, events: list[Event]) -> None:
    settings_ = Settings(key_prefix=prefix, clock="event")
    watermark = max(e.ts_ms for e in events)
    for app, zone in ZONES.items():
        if not any(e.app == app for e in events):
            continue
        for granularity in ("day", "week", "month"):
            for kind in ("classic", "rolling", "ltv"):
                got = (await cohort_report(store, settings_, app, granularity, kind)).as_json()
                expected = (
                    reference.money_triangle(events, app, granularity, kind, zone, watermark)
                    if kind == "ltv"
                    else reference.triangle(events, app, granularity, kind, zone, watermark))
                assert got["cohorts"] == expected, (app, granularity, kind)
        got_kpis = (await kpis_report(store, settings_, app, "week")).as_json()
        assert got_kpis["periods"] == reference.kpis(events, app, "week", zone,
                                                     now_ms=watermark), app
        for day in sorted({reference.local_day(e.ts_ms, zone) for e in events if e.app == app}):
            got_day = (await summary_report(store, settings_, app, day)).as_json()
            got_day.pop("winback")
            got_day.pop("winback_as_of")
            assert got_day.pop("forwarded").keys() == {
                "mixed_array", "no_key", "other_key", "other_partitioner"}
            assert got_day == reference.summary(events, app, day, zone, now_ms=watermark), (
                app, day)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=histories(), seed=st.integers(0, 2**32 - 1))
def test_any_keying_partitioning_and_batching_gives_the_reference_figures(
    redis_url: str, events: list[Event], seed: int
) -> None:
    rng = random.Random(seed)
    asyncio.run(keyed_any_way(redis_url, events, rng, state_cache_users=rng.choice([0, 100])))


async def keyed_any_way(redis_url: str, events: list[Event], rng: random.Random,
                        horizon_days: int = 400, state_cache_users: int = 0) -> Counter[str]:
    """``events`` sent by imperfect producers (``produce``) and consumed as the worker
    does (``consume``) on the real store; checks the figures are the reference's and
    returns the counters."""
    async with RealApply(redis_url, shards=PARTITIONS, horizon_days=horizon_days,
                         state_cache_users=state_cache_users) as state:
        for app, zone in ZONES.items():
            await state.store.registry.fix_timezone(app, zone)
        for shard in range(PARTITIONS):
            await state.store.registry.register_shard(shard)
        await consume(state.store, produce(events, rng), rng, BatchRules(horizon_days))
        await figures_equal_reference(state.store, state.settings.key_prefix, events)
        return await state.store.reads.read_stats()


# ---- the routing never makes an event late -------------------------------------------------

HORIZON_DAYS = 3


@st.composite
def long_histories(draw: st.DrawFn) -> list[Event]:
    """A history six times the horizon long, produced in event-time order but for events up
    to a day late: against the watermark of the partition each is read from, none is older
    than the horizon, whatever the keying."""
    events = []
    ts_ms = BASE_MS
    for i in range(draw(st.integers(20, 60))):
        ts_ms += draw(st.integers(0, 6 * HORIZON_DAYS * MS_PER_DAY // 20))
        late = draw(st.sampled_from([0, 0, 0, 3_600_000, MS_PER_DAY]))
        kind = draw(st.sampled_from(["install", "session", "purchase"]))
        events.append(Event(app="a", event_id=f"e{i}", type=kind,
                            user_id=f"u{draw(st.integers(0, 7))}", ts_ms=ts_ms - late,
                            amount=0.99 if kind == "purchase" else None))
    return events


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=long_histories(), seed=st.integers(0, 2**32 - 1))
def test_forwarded_events_are_judged_by_the_watermark_they_were_read_at(
    redis_url: str, events: list[Event], seed: int
) -> None:
    """METRICS.md §1: the tracker's own routing never makes an event late. Partitions read
    at any pace (one may be at the end of the history while the re-key topic still holds
    its first forwards, or another's forwards move a home past its own input) and crashes
    between forward and apply: every event is accepted, as when keyed well, and the
    figures are the reference's. produce() repeats messages: a purchase's copies are
    duplicates (it is accepted once), another event's copies are accepted again."""
    stats = asyncio.run(keyed_any_way(redis_url, events, random.Random(seed), HORIZON_DAYS))
    assert not any(k.startswith("rej:") and v for k, v in stats.items()), stats
    for kind in ("install", "session", "purchase"):
        produced = sum(e.type == kind for e in events)
        if kind == "purchase":
            assert stats[f"acc:a:{kind}"] == produced, stats
        else:
            assert stats[f"acc:a:{kind}"] >= produced, stats


def test_a_rekey_record_carries_the_watermark_it_was_read_at() -> None:
    """The header the worker sends is what the home reads back; a record forwarded before it
    existed (no header) is judged at home as before, and a junk value is ignored."""
    router = Router(2)
    away = next(u for u in (f"u{i}" for i in range(20)) if router.home(u) == 1)
    read = read_records([record(4, None, orjson.dumps(session(away)))], 0, router, NOW_MS,
                        1 << 20, 1000)
    (forward,) = read.away
    forward.watermark_ms = BASE_MS - 5
    headers = tuple(rekey_headers(forward, "t/0/"))
    assert dict(headers)[WATERMARK_HEADER] == str(BASE_MS - 5).encode()
    forward.watermark_ms = None
    unset = tuple(rekey_headers(forward, "t/0/"))
    records = [record(0, None, forward.value, 1, headers), record(1, None, forward.value, 1),
               record(2, None, forward.value, 1, unset),
               record(3, None, forward.value, 1, ((WATERMARK_HEADER, b"x"),))]
    home = read_records(records, 1, None, NOW_MS, 1 << 20, 1000)
    assert home.rekeyed and home.carried == {0: BASE_MS - 5, 2: None}
