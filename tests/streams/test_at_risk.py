"""At-risk moments and messages (streams/at_risk.py), hand-worked on the paper's CDNOW
parameters: when, what is sent, what a refit or a return does."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from retention_tracker.bench import reference
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.at_risk import (
    AtRiskRules,
    count_returns,
    moment_ms,
    notification_id,
    plan_at_risk,
    schedule,
)
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar, date_to_day
from retention_tracker.streams.counters import Cell, Stat
from retention_tracker.streams.events import Event
from retention_tracker.streams.lapse_model import LapseParams
from retention_tracker.streams.plan import dedup_key, plan_batch
from retention_tracker.streams.segments import DEFAULT_RULES
from retention_tracker.streams.user_state import UserState
from retention_tracker.streams.winback import WinbackRules

from .delivery import in_arrival_order, named, random_batches
from .real_apply import RealApply

# every plan here runs on each engine (tests/streams/conftest.py)
pytestmark = pytest.mark.usefixtures("engine")

HOUR_MS = 3_600_000
UTC = AppCalendar("UTC")
PAPER = LapseParams(0.243, 4.414, 0.793, 2.426)
D0 = date_to_day(date(2024, 1, 1))
RULES = AtRiskRules(0.5, MS_PER_DAY, 7, {"a": ("bgnbd", PAPER)})
USER = ("a", "v1")


def at(day: int, hour: int = 10) -> int:
    return UTC.day_start_ms(day) + hour * 3_600_000


def v1() -> UserState:
    """docs/metrics.md's v1: three Mondays from 2024-01-01; at risk from 2024-02-26."""
    days = frozenset({D0, D0 + 7, D0 + 14})
    return UserState(at(D0), at(D0 + 14), D0, days, frozenset())


#: every app's calendar (the apps' calendars are handed down as data)
CALENDARS: defaultdict[str, AppCalendar] = defaultdict(lambda: UTC)


def test_the_moment_is_the_start_of_the_first_day_below_the_threshold() -> None:
    assert moment_ms(v1(), ("bgnbd", PAPER), 0.5, UTC) == UTC.day_start_ms(D0 + 56)
    one_day = UserState(at(D0), at(D0), D0, frozenset({D0}), frozenset())
    assert moment_ms(one_day, ("bgnbd", PAPER), 0.5, UTC) is None  # never lapses
    assert moment_ms(one_day, None, 0.5, UTC) is None  # no fit
    # MBG/NBD with a > b: at risk on the very day; never before the last activity
    assert moment_ms(one_day, ("mbgnbd", LapseParams(0.2, 4, 3, 1)), 0.5, UTC) == at(D0)


def test_a_batch_schedules_users_with_a_new_day_or_last_activity() -> None:
    old = v1()
    same_day = replace(old, last_active_ms=old.last_active_ms + 1000)
    new_day = replace(old, last_active_ms=at(D0 + 20), active_days=old.active_days | {D0 + 20})
    late = replace(old, active_days=old.active_days | {D0 + 3})  # an earlier day, late
    found = schedule({("a", "s"): same_day, ("a", "n"): new_day, ("a", "l"): late,
                      ("a", "q"): old}, {("a", "s"): old, ("a", "n"): old, ("a", "l"): old,
                                         ("a", "q"): old}, RULES, CALENDARS)
    assert set(found) == {("a", "s"), ("a", "n"), ("a", "l")}  # q: nothing moved
    assert found["a", "s"] == UTC.day_start_ms(D0 + 56)
    assert found["a", "l"] is not None and found["a", "l"] < found["a", "s"]  # x up: sooner
    assert schedule({("b", "s"): same_day}, {("b", "s"): old}, RULES, CALENDARS) == {}
    one_day = UserState(at(D0), at(D0), D0, frozenset({D0}), frozenset())
    assert schedule({("a", "new"): one_day}, {("a", "new"): None}, RULES, CALENDARS) == {}


def test_a_fresh_moment_is_sent_once_per_episode() -> None:
    moment = UTC.day_start_ms(D0 + 56)
    first = plan_at_risk([(USER, moment)], {USER: v1()}, moment + 3_600_000, RULES,
                         CALENDARS, DEFAULT_RULES)
    [message] = first.messages
    assert message["notification_id"] == notification_id("a", "v1", at(D0 + 14))
    assert (message["x"], message["t_x"], message["T"]) == (2, 2.0, 8.0)
    assert message["p_alive"] < 0.5 and message["at_risk_since"] == "2024-02-26T00:00:00.000+00:00"
    assert first.done == [USER] and first.stats == {(Stat.AT_RISK_SENT, "a"): 1}
    marked = first.users[USER]
    assert (marked.at_risk_episode_ms, marked.at_risk_moment_ms, marked.at_risk_sent) == (
        at(D0 + 14), moment, True)
    again = plan_at_risk([(USER, moment)], {USER: marked}, moment + 7_200_000, RULES,
                         CALENDARS, DEFAULT_RULES)
    assert (again.messages, again.done, again.users) == ([], [USER], {})


def test_a_late_moment_expires_and_a_refit_moves_it() -> None:
    moment = UTC.day_start_ms(D0 + 56)
    late = plan_at_risk([(USER, moment)], {USER: v1()}, moment + 2 * MS_PER_DAY, RULES,
                        CALENDARS, DEFAULT_RULES)
    assert late.messages == [] and late.stats == {(Stat.AT_RISK_EXPIRED, "a"): 1}
    assert late.users[USER].at_risk_sent is False
    # a refit with a slower dropout puts the moment later: rescheduled, no message
    slower = dataclasses.replace(RULES, fits={"a": ("bgnbd", LapseParams(0.243, 4.414, 0.2, 8.0))})
    moved = plan_at_risk([(USER, moment)], {USER: v1()}, moment + 3_600_000, slower,
                         CALENDARS, DEFAULT_RULES)
    assert moved.messages == [] and moved.done == [] and moved.later[USER] > moment
    gone = plan_at_risk([(USER, moment)], {USER: v1()}, moment, dataclasses.replace(RULES, fits={}),
                        CALENDARS, DEFAULT_RULES)
    assert gone.done == [USER] and gone.messages == []


def test_a_return_after_the_moment_counts_one_before_it_is_a_false_alarm() -> None:
    moment = UTC.day_start_ms(D0 + 56)
    sent = replace(v1(), at_risk_episode_ms=at(D0 + 14), at_risk_moment_ms=moment,
                   at_risk_sent=True)
    cases = {D0 + 60: {(Stat.AT_RISK_RETURNED, "a"): 1, (Stat.AT_RISK_BACK_7D, "a"): 1},
             D0 + 70: {(Stat.AT_RISK_RETURNED, "a"): 1},
             D0 + 30: {(Stat.AT_RISK_FALSE_ALARM, "a"): 1}}
    for back, expected in cases.items():
        users = {USER: replace(sent, last_active_ms=at(back),
                               active_days=sent.active_days | {back})}
        stats: Counter[Cell] = Counter()
        count_returns(users, {USER: sent}, stats, CALENDARS)
        assert stats == expected, back
        assert users[USER].at_risk_episode_ms is None  # the next lapse is a new episode
    expired = replace(sent, at_risk_sent=False)
    users = {USER: replace(expired, last_active_ms=at(D0 + 60),
                           active_days=sent.active_days | {D0 + 60})}
    stats = Counter()
    count_returns(users, {USER: expired}, stats, CALENDARS)
    assert stats == {} and users[USER].at_risk_episode_ms is None


# ---- the property: any batching gives the plain reading's episodes --------------------------

#: the rules of the property: the paper's fit, a day's delay (so some moments expire)
PROPERTY_RULES = AtRiskRules(0.5, MS_PER_DAY, 7, {"a": ("bgnbd", PAPER)})


@dataclass
class Outcome:
    """Episodes as (user, episode last_active ms), by what became of them; counters."""

    sent: set[tuple[str, int]] = field(default_factory=set)
    ids: list[str] = field(default_factory=list)
    stats: Counter[Cell] = field(default_factory=Counter)


async def replay(store: RedisStore, batches: list[list[Event]]) -> Outcome:
    """The worker's event-clock loop on one partition with a kept fit: each batch planned,
    its returns counted and its at-risk entries moved, applied, then the pass over the due
    at-risk entries at the new watermark (agents/ingest.py, agents/notifier.py)."""
    out = Outcome()
    offset = 0
    no_winback = WinbackRules((), MS_PER_DAY, 7)
    for batch in batches:
        items = [(offset + i, -1, e) for i, e in enumerate(batch)]
        offset += len(batch)
        loaded = await store.load_batch(0, ["t"], [(e.app, e.user_id) for e in batch],
                                        [dedup_key(e.app, e.event_id) for e in batch], at(D0))
        found = plan_batch(items, loaded.states, loaded.seen_dedup_keys, loaded.watermark_ms,
                           400, CALENDARS, DEFAULT_RULES, winback=no_winback, event_clock=True)
        count_returns(found.users, loaded.states, found.stats, CALENDARS)
        moves = schedule(found.users, loaded.states, PROPERTY_RULES, CALENDARS)
        assert await store.apply_plan(0, loaded, {"t": offset}, found, moves)
        out.stats.update(found.stats)
        now = found.watermark_ms or 0
        while due := await store.due.at_risk_due_entries(0, now):
            held = await store.load_batch(0, [], [user for user, _ in due], [], at(D0))
            passed = plan_at_risk(due, held.states, now, PROPERTY_RULES, CALENDARS,
                                  DEFAULT_RULES)
            assert await store.apply_at_risk(0, held, passed)
            out.stats.update(passed.stats)
            for m in passed.messages:
                out.sent.add((m["user_id"], ms_of(m["last_active"])))
                out.ids.append(m["notification_id"])
    return out


def ms_of(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """A few users active on and off for months (gaps of hours to ten weeks, so under the
    paper's fit some lapse and some return) and a ticker that moves the watermark every 8,
    20 or 50 hours (so moments are found fresh, or a day too late: expired), delivered
    roughly in time order: each event may arrive up to 100 h late (a return dated before
    its moment arriving after it: a false alarm)."""
    events = []
    for u in range(draw(st.integers(1, 5))):
        ts = at(D0) + draw(st.integers(0, 72)) * HOUR_MS
        for n in range(draw(st.integers(1, 9))):
            events.append(Event("a", f"u{u}-{n}", "session", f"u{u}", ts))
            gap = draw(st.sampled_from([3, 20, 30, 72, 170, 500, 900, 1100, 1300, 1700]))
            ts += gap * HOUR_MS
    end, step = max(e.ts_ms for e in events), draw(st.sampled_from([8, 20, 50])) * HOUR_MS
    events += [Event("a", f"tick-{n}", "session", "ticker", at(D0) + n * step)
               for n in range((end - at(D0)) // step + 1)]
    delays = [draw(st.sampled_from([0, 0, 0, 2, 30, 100])) * HOUR_MS for _ in events]
    return in_arrival_order(events, delays)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=histories(), seed=st.integers(0, 2**32 - 1))
def test_any_batching_gives_the_references_episodes(redis_url: str, stream: list[Event],
                                                    seed: int) -> None:
    """The worker's path on the real store equals bench/reference.py's plain reading of §9
    for the same batches (the moments are looked for after each batch, by both): the
    messages, one per episode with its deterministic id, and every counter."""
    rng = random.Random(seed)
    batches = random_batches(stream, rng)
    paper = (PAPER.r, PAPER.alpha, PAPER.a, PAPER.b)
    expected = reference.at_risk_episodes(batches, "bgnbd", paper, 0.5, MS_PER_DAY)

    async def scenario() -> Outcome:
        async with RealApply(redis_url, thresholds=(), shards=1,
                             state_cache_users=rng.choice([0, 50])) as state:
            return await replay(state.store, batches)

    got = asyncio.run(scenario())
    assert got.sent == expected["sent"]
    assert sorted(got.ids) == sorted(notification_id("a", user, ms)
                                     for user, ms in expected["sent"])
    risk = {s for s in Stat if s.name.startswith("AT_RISK_")}
    assert named(Counter({k: v for k, v in got.stats.items() if k[0] in risk})) == named(Counter({
        (Stat.AT_RISK_SENT, "a"): len(expected["sent"]),
        (Stat.AT_RISK_EXPIRED, "a"): len(expected["expired"]),
        (Stat.AT_RISK_RETURNED, "a"): len(expected["returns"]),
        (Stat.AT_RISK_BACK_7D, "a"): len(expected["back_7d"]),
        (Stat.AT_RISK_FALSE_ALARM, "a"): len(expected["false_alarms"])}))
