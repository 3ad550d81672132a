"""streams/batch.py: a batch's whole outcome from its parsed records, by hand."""

from __future__ import annotations

import pytest

from retention_tracker.streams.batch import (
    AT_HOME,
    BatchRules,
    DeadLetter,
    Forward,
    ParsedBatch,
    outcome_of,
)
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.counters import Stat
from retention_tracker.streams.events import Event, Reject
from retention_tracker.streams.plan import dedup_key

# every plan here runs on each engine (tests/streams/conftest.py)
pytestmark = pytest.mark.usefixtures("engine")

BASE_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
UTC = AppCalendar("UTC")
UTC_APPS = {app: UTC for app in ("a", "b", "default")}  # every app of the tests, in UTC
RULES = BatchRules(horizon_days=31)


def session(user: str, event_id: str, ts_ms: int) -> Event:
    return Event("a", event_id, "session", user, ts_ms)


def test_the_outcome_holds_plan_dead_letters_forwards_and_every_counter() -> None:
    events = [(10, -1, session("u1", "e1", BASE_MS)),
              (11, 0, session("u2", "e2", BASE_MS - 40 * MS_PER_DAY)),  # behind the horizon
              (12, -1, session("u1", "e1", BASE_MS))]  # a duplicate
    away = [Forward(13, -1, session("u9", "e9", BASE_MS), 3, "no_key")]
    batch = ParsedBatch(events, [(12, Reject("invalid_json", "x")), (10, Reject("bad", "y", 1))],
                        away)
    keys = [dedup_key(e.app, e.event_id) for _, _, e in events]
    outcome = outcome_of(batch, keys, {("a", "u1"): None, ("a", "u2"): None}, set(), BASE_MS,
                         UTC_APPS, RULES, arrival_ms=BASE_MS + 5)
    # dead letters: rejects and the too-old event together, in the order they were read
    assert outcome.dead_letters == [DeadLetter(10, 1, "bad", "y"),
                                    DeadLetter(11, 0, "too_old", "older than the horizon"),
                                    DeadLetter(12, -1, "invalid_json", "x")]
    assert outcome.forwards == away
    stats = outcome.plan.stats
    assert stats[Stat.REJECTED, "bad"] == stats[Stat.REJECTED, "invalid_json"] == 1
    assert stats[Stat.REJECTED, "too_old"] == 1
    assert stats[Stat.DUPLICATE, "a"] == 1 and stats[Stat.ACCEPTED, "a", "session"] == 1
    day = (BASE_MS + 5) // MS_PER_DAY
    assert stats[Stat.ROUTE, day, AT_HOME] == 3  # read at home, whatever became of them
    assert stats[Stat.ROUTE, day, "no_key"] == 1 and stats[Stat.FORWARDED, "a", "no_key"] == 1
    assert set(outcome.plan.users) == {("a", "u1")}


def test_the_rekey_topic_counts_no_routes_and_a_replayed_part_is_cut() -> None:
    events = [(5, -1, session("u1", "e1", BASE_MS)), (6, -1, session("u2", "e2", BASE_MS))]
    batch = ParsedBatch(events, [(5, Reject("bad", "z"))],
                        [Forward(5, -1, session("u9", "e9", BASE_MS), 1, "other_key")])
    fresh = batch.from_offset(6)
    assert fresh.at_home == events[1:] and fresh.rejects == [] and fresh.away == []
    outcome = outcome_of(fresh, [dedup_key("a", "e2")], {("a", "u2"): None}, set(), None,
                         UTC_APPS, RULES, arrival_ms=None)
    assert not any(key[0] in (Stat.ROUTE, Stat.FORWARDED) for key in outcome.plan.stats)
    assert outcome.dead_letters == [] and set(outcome.plan.users) == {("a", "u2")}


def test_each_event_is_judged_by_the_watermark_of_the_partition_it_was_read_from() -> None:
    """An input batch: every event read (kept or forwarded, in the order read) moves the read
    watermark, the forwards carry the value before them; at home a forwarded event is judged
    by what it carries, not by the home's watermark at the end of a backlog."""
    rules = BatchRules(horizon_days=3)
    day = MS_PER_DAY
    kept = [(1, -1, session("u1", "e1", BASE_MS)), (2, 1, session("u2", "e2", BASE_MS + day)),
            (4, -1, session("u1", "e4", BASE_MS - 5 * day))]  # too old: 5 days behind e3
    away = [Forward(2, 0, session("u9", "e9", BASE_MS + 2 * day), 3, "mixed_array"),
            Forward(3, -1, session("u8", "e3", BASE_MS + 9 * day), 3, "no_key"),
            Forward(5, -1, session("u8", "e5", BASE_MS), 3, "no_key")]  # too old here
    batch = ParsedBatch(kept, [], away)
    keys = [dedup_key(e.app, e.event_id) for _, _, e in kept]
    outcome = outcome_of(batch, keys, {("a", "u1"): None, ("a", "u2"): None}, set(), None,
                         UTC_APPS, rules, BASE_MS, read_watermark_ms=BASE_MS - day)
    # the one too old for the watermark it was read at is rejected here, once, not sent
    assert outcome.forwards == away[:2]
    assert [f.watermark_ms for f in outcome.forwards] == [BASE_MS, BASE_MS + 2 * day]
    assert outcome.plan.read_watermark_ms == BASE_MS + 9 * day
    assert outcome.dead_letters == [DeadLetter(4, -1, "too_old", "older than the horizon"),
                                    DeadLetter(5, -1, "too_old", "older than the horizon")]
    assert outcome.plan.stats[Stat.REJECTED, "too_old"] == 2
    assert outcome.plan.stats[Stat.FORWARDED, "a", "no_key"] == 2  # read away, by its cause
    assert outcome.plan.watermark_ms == BASE_MS + day  # moved by what is accepted here only
    # at home, where the watermark is at the end of a backlog: judged by what was carried
    late = session("u9", "e9", BASE_MS + 2 * day)
    home = ParsedBatch([(0, -1, late), (1, -1, session("u7", "e7", BASE_MS)),
                        (2, -1, session("u6", "e6", BASE_MS))],
                       rekeyed=True, carried={0: BASE_MS, 1: None})  # offset 2: no header
    keys = [dedup_key("a", e) for e in ("e9", "e7", "e6")]
    users = {("a", u): None for u in ("u9", "u7", "u6")}
    outcome = outcome_of(home, keys, users, set(), BASE_MS + 300 * day, UTC_APPS,
                         rules, None)
    assert set(outcome.plan.users) == {("a", "u9"), ("a", "u7")}
    assert outcome.dead_letters == [DeadLetter(2, -1, "too_old", "older than the horizon")]
    assert outcome.plan.read_watermark_ms is None  # the re-key topic moves no read watermark
