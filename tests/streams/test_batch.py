"""streams/batch.py: a batch's whole outcome from its parsed records, by hand."""

from __future__ import annotations

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
