"""The native engine (streams/_native.pyx) against the Python one it replaces: the same
sums, exactly. Held at two levels: the "new active days" delta alone (random day sets over
spans of years, the calendar's table and the arithmetic beyond it), and whole plans of
random batches (several users and apps, non-UTC calendars, purchases with big amounts,
installs, attributes) planned by each engine from the same states."""

from __future__ import annotations

import random
from collections import Counter
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from retention_tracker.streams import engine
from retention_tracker.streams.calendar import (
    MS_PER_DAY,
    AppCalendar,
    _month_of_day,
    period_start_day,
)
from retention_tracker.streams.counters import Cell
from retention_tracker.streams.events import Event
from retention_tracker.streams.plan import (
    Plan,
    add_events,
    add_new_days_delta,
    plan_batch,
    user_contributions,
)
from retention_tracker.streams.segments import SegmentRules, money_units
from retention_tracker.streams.user_state import UserKey, UserState, decode_user, encode_user
from retention_tracker.streams.windows24 import add_window_contributions

pytestmark = pytest.mark.skipif(not engine.native_built(),
                                reason=f"the native engine is not built: {engine.why_not_built()}")

if engine.native_built():
    from retention_tracker.streams import _native


def _state(days: frozenset[int]) -> UserState:
    first = min(days)
    return UserState(first * MS_PER_DAY, max(days) * MS_PER_DAY, first, days, frozenset())


Groups = dict[tuple[str, ...], Counter[Cell]]


def _nonzero(groups: Groups) -> dict[tuple[str, ...], dict[Cell, int]]:
    kept = {seg: {cell: n for cell, n in c.items() if n} for seg, c in groups.items()}
    return {seg: cells for seg, cells in kept.items() if cells}


SEGMENTS = [("all",), ("all", "platform=ios"), ("all", "value=payer")]
# a user: its old active days (first day = the smallest) and the days a batch adds, as
# offsets from a base day: spans of up to three years, bases from 1900 to past the table
users = st.lists(
    st.tuples(st.sampled_from(SEGMENTS),
              st.lists(st.integers(0, 1100), min_size=1, max_size=15),
              st.lists(st.integers(1, 1100), min_size=1, max_size=6)),
    min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(base=st.one_of(st.integers(-25_000, 80_000), st.sampled_from([10_956, 73_040, -1])),
       batch=users)
def test_new_days_sums_are_the_python_delta(base: int, batch: list) -> None:
    native = _native.DeltaSums()
    python: dict[tuple[str, ...], Counter[Cell]] = {}
    rendered: dict[tuple[str, ...], Counter[Cell]] = {}
    for segments, before, after in batch:
        old_days = frozenset(base + d for d in before)
        added = frozenset(min(old_days) + d for d in after) - old_days
        if not added:
            continue
        old, new = _state(old_days), _state(old_days | added)
        add_new_days_delta(python.setdefault(segments, Counter()), old, new, added)
        native.add_new_days(segments, old_days, added)
    native.render_into(rendered)
    assert _nonzero(rendered) == _nonzero(python)


@settings(max_examples=300, deadline=None)
@given(base=st.integers(-3_000, 80_000),
       sessions=st.lists(st.integers(0, 1100), min_size=1, max_size=15),
       installs=st.lists(st.integers(0, 1100), max_size=3),
       cost=st.sampled_from([None, 0.5, 2.0**40 / 10_000, 9e14]),
       zone=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]),
       sign=st.sampled_from([1, -1]))
def test_a_whole_user_natively_is_the_python_contributions(
        base: int, sessions: list[int], installs: list[int], cost: float | None, zone: str,
        sign: int) -> None:
    calendar = AppCalendar(zone)
    events = [Event("a", f"s{i}", "session", "u", (base + d) * MS_PER_DAY + 5_000_000 * i)
              for i, d in enumerate(sessions)]
    events += [Event("a", f"i{i}", "install", "u", (base + d) * MS_PER_DAY, cost=cost)
               for i, d in enumerate(installs)]
    state = add_events(None, events, calendar)
    native = _native.DeltaSums()
    found: Groups = {("all",): Counter()}
    taken = native.add_user(("all",), state, sign)
    assert taken == (abs(state.cost_units) <= _native.MAX_NATIVE_COST)
    if not taken:
        return  # the plan computes this user in Python (the plan-level property holds it)
    add_window_contributions(found[("all",)], state, sign)
    native.render_into(found)
    assert _nonzero(found) == _nonzero({("all",): user_contributions(state, sign=sign)})


def test_the_native_sums_leave_money_answers_and_returns_to_python() -> None:
    buyer = add_events(None, [Event("a", "p", "purchase", "u", BASE_MS, amount=1.0)],
                       AppCalendar("UTC"))
    assert buyer.purchases and not _native.DeltaSums().add_user(("all",), buyer, 1)
    answers_only = UserState(0, 0, 0, frozenset(), frozenset())
    assert not _native.DeltaSums().add_user(("all",), answers_only, 1)


def test_the_native_calendar_is_the_python_one() -> None:
    """Months by table (1970..2169) and by arithmetic outside it; period starts."""
    for day in [*range(-800, 75_000, 3), -700_000, 2_900_000]:
        assert _native.month_of_day(day) == _month_of_day(day), day
    for period in range(1, 3000):
        assert _native.first_day_of(period, "year") == period_start_day(period, "year")
    for period in range(12, 36_000, 7):
        assert _native.first_day_of(period, "month") == period_start_day(period, "month")
    for period in range(-200, 20_000, 3):
        assert _native.first_day_of(period, "week") == period_start_day(period, "week")


ZONES = ["UTC", "America/New_York", "Asia/Tokyo", "Pacific/Chatham"]
BASE_MS = 1_703_980_800_000  # 2023-12-31T00:00:00Z: a year ends the next day
event = st.tuples(
    st.sampled_from(["a", "b"]), st.sampled_from(["u1", "u2", "u3", "u4"]),
    st.sampled_from(["session", "session", "session", "install", "purchase"]),
    st.integers(-40, 800),  # day offset: spans over two years
    st.integers(0, MS_PER_DAY - 1),
    st.sampled_from([None, "ios", "android"]),
    st.sampled_from([0.01, 4.99, 9e14]),  # big money: no overflow on either side
)


def _plan(items: list[tuple[int, int, Event]], states: dict[UserKey, UserState | None],
          calendars: dict[str, AppCalendar], which: str) -> Plan:
    before = engine.running()
    engine.select(which)
    try:
        return plan_batch(items, states, set(), None, 4000, calendars)
    finally:
        engine.select(before)


@settings(max_examples=150, deadline=None)
@given(history=st.lists(event, min_size=1, max_size=25),
       batches=st.lists(st.lists(event, min_size=1, max_size=25), min_size=1, max_size=3),
       zones=st.tuples(st.sampled_from(ZONES), st.sampled_from(ZONES)))
def test_plans_of_both_engines_are_equal(history: list, batches: list, zones: tuple) -> None:
    calendars = {"a": AppCalendar(zones[0]), "b": AppCalendar(zones[1])}
    states: dict[UserKey, UserState | None] = {}
    serial = 0
    for batch in [history, *batches]:
        items = []
        for app, user, kind, day, ms, platform, amount in batch:
            serial += 1
            items.append((serial, -1, Event(
                app, f"e{serial}", kind, user, BASE_MS + day * MS_PER_DAY + ms,
                platform=platform, amount=amount if kind == "purchase" else None,
                cost=amount if kind == "install" else None)))
        users = {(e.app, e.user_id) for _, _, e in items}
        loaded = {u: states.get(u) for u in users}
        python = _plan(items, loaded, calendars, engine.PYTHON)
        native = _plan(items, loaded, calendars, engine.NATIVE)
        assert native.deltas == python.deltas
        assert native.users == python.users
        states.update(python.users)


# ---- state building: _native.add_events against plan.add_events ----------------------------

# instants where a test zone changes its offset (UTC ms): events around them fall on UTC
# days the native table leaves to calendar.day_of, and on the local days next to them
TRANSITIONS_MS = [
    1_710_054_000_000,  # 2024-03-10 07:00Z: New York springs forward
    1_730_613_600_000,  # 2024-11-03 06:00Z: New York falls back
    1_712_412_000_000,  # 2024-04-06 14:00Z: Chatham leaves daylight time (+13:45 -> +12:45)
    1_727_575_200_000,  # 2024-09-28 14:00Z: Chatham enters it
    1_712_458_800_000,  # 2024-04-07 03:00Z: Santiago's midnight goes back to 23:00
    1_725_768_000_000,  # 2024-09-08 04:00Z: Santiago skips its midnight
]
# New York and Chatham change at night, far from a local midnight; Santiago at midnight:
# its UTC day with a transition holds local days the offset of the day's start misplaces
STATE_ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham",
               "America/Santiago"]
instants = st.one_of(
    st.integers(BASE_MS - 200 * MS_PER_DAY, BASE_MS + 200 * MS_PER_DAY),  # over a year
    st.builds(lambda at, ms: at + ms, st.sampled_from(TRANSITIONS_MS),
              st.integers(-2 * MS_PER_DAY, 2 * MS_PER_DAY)),
    st.sampled_from([BASE_MS, BASE_MS + 1, BASE_MS + MS_PER_DAY]),  # equal times: ties
)
amounts = st.one_of(st.sampled_from([None, 0, 0.0, 0.01, 4.99, 7, 9e10, 9e14]),
                    st.floats(0, 1e6, allow_nan=False))
state_event = st.builds(
    lambda kind, ts, attrs, amount, currency: (kind, ts, attrs, amount, currency),
    st.sampled_from(["session", "session", "install", "purchase", "level_up"]),
    instants,
    st.tuples(*[st.sampled_from([None, None, "a", "b", "ios"])] * 3),
    amounts,
    st.sampled_from([None, "EUR", "USD"]),
)


def _events(drawn: list, prefix: str) -> list[Event]:
    return [Event("app", f"{prefix}{i}", kind, "u", ts, *attrs,
                  cost=amount if kind == "install" else None,
                  amount=amount if kind == "purchase" else None,
                  currency=currency if kind == "purchase" else None)
            for i, (kind, ts, attrs, amount, currency) in enumerate(drawn)]


@settings(max_examples=400, deadline=None)
@given(history=st.lists(state_event, max_size=12), batch=st.lists(state_event, min_size=1,
                                                                    max_size=12),
       copies=st.lists(st.integers(0, 11), max_size=3), zone=st.sampled_from(STATE_ZONES),
       returns=st.sampled_from([frozenset(), frozenset({"purchase", "level_up"})]),
       stored=st.booleans(), spans_unknown=st.booleans(), order=st.randoms())
def test_native_add_events_is_the_python_state(
        history: list, batch: list, copies: list[int], zone: str, returns: frozenset[str],
        stored: bool, spans_unknown: bool, order: random.Random) -> None:
    """The same UserState from scratch or from an existing one (as built, or as read back
    from its record; with the spans unknown, as a record before format 6), for events in
    any order with copies of those whose id is not remembered (a session's)."""
    calendar = AppCalendar(zone)
    rules = SegmentRules(return_types=returns)
    state = add_events(None, _events(history, "h"), calendar, rules) if history else None
    if state is not None and stored:
        state = decode_user(encode_user(state))
    if state is not None and spans_unknown:
        state = replace(state, utc_spans=None, notified_episode_ms=state.last_active_ms,
                        notified_days=(2,), at_risk_episode_ms=1, at_risk_moment_ms=2)
    events = _events(batch, "b")
    events += [events[i] for i in copies if i < len(events) and events[i].type == "session"]
    order.shuffle(events)
    expected = add_events(state, events, calendar, rules)
    assert _native.add_events(state, events, calendar, rules) == expected


@pytest.mark.parametrize("zone", STATE_ZONES)
def test_the_native_local_day_is_the_calendars(zone: str) -> None:
    """Every quarter hour over the days around each transition, and the edges of the
    day: the zone's table (or calendar.day_of on a transition's UTC day) gives the
    calendar's day."""
    calendar = AppCalendar(zone)
    for at in TRANSITIONS_MS:
        for ts in range(at - 2 * MS_PER_DAY, at + 2 * MS_PER_DAY, 15 * 60_000):
            for instant in (ts, ts - 1, ts + 1):
                assert _native.day_of(calendar, instant) == calendar.day_of(instant), instant
    for instant in (0, 1, MS_PER_DAY - 1, 2**33 * 1000 - 1, 2**33 * 1000, 2**33 * 1000 + 1):
        assert _native.day_of(calendar, instant) == calendar.day_of(instant), instant


@settings(max_examples=2000, deadline=None)
@given(amount=st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1e10, 1e10, allow_nan=False),
    st.builds(lambda units, places: units / 10**places, st.integers(0, 10**12),
              st.integers(0, 9)),  # prices as typed: 4.99, 0.00025 (a half unit)
    st.integers(-10**20, 10**20)))
def test_native_money_units_are_the_decimal_ones(amount: float) -> None:
    """A float's units from its repr without Decimal: half units to even, as Decimal."""
    assert _native.units_of(amount) == money_units(amount)


class _Reentrant(AppCalendar):
    """A calendar whose day_of (asked by the native add_events past 2242) builds another
    user's state natively, as another thread let in by a Python callback would."""

    inner: ClassVar[list[UserState]] = []

    def day_of(self, ts_ms: int) -> int:
        self.inner.append(_native.add_events(None, [Event("a", "x", "session", "v", 5)],
                                             AppCalendar("UTC"), SegmentRules()))
        return super().day_of(ts_ms)


def test_a_native_add_events_inside_another_takes_the_python_engine() -> None:
    calendar = _Reentrant("Asia/Kathmandu")  # a zone no other test tabulates
    late = 2**33 * 1000 + MS_PER_DAY  # past the zone table: calendar.day_of per instant
    events = [Event("a", "s", "session", "u", late, platform="ios"),
              Event("a", "t", "session", "u", late + 2 * MS_PER_DAY)]
    built = _native.add_events(None, events, calendar, SegmentRules())
    assert built == add_events(None, events, AppCalendar("Asia/Kathmandu"), SegmentRules())
    assert _Reentrant.inner and all(
        state == add_events(None, [Event("a", "x", "session", "v", 5)], AppCalendar("UTC"))
        for state in _Reentrant.inner)
