"""The native engine (streams/_native.pyx) against the Python one it replaces: the same
sums, exactly. Held at two levels: the "new active days" delta alone (random day sets over
spans of years, the calendar's table and the arithmetic beyond it), and whole plans of
random batches (several users and apps, non-UTC calendars, purchases with big amounts,
installs, attributes) planned by each engine from the same states."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from retention_tracker.streams.user_state import UserKey, UserState
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
