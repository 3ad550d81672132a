"""The plan's direct delta for the usual change (a user active on new days, nothing else
counted moving) against the definition: contributions(new) - contributions(old), in full.
The end-to-end properties (test_plan_properties) take this path too, mixed with every
other; here it is held alone, over spans long enough for new weeks, months and years."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.counters import Cell
from retention_tracker.streams.events import Event
from retention_tracker.streams.plan import (
    _only_new_active_days,
    add_events,
    add_new_days_delta,
    user_contributions,
)
from retention_tracker.streams.windows24 import window_delta

BASE_MS = 1_703_980_800_000  # 2023-12-31T00:00:00Z: a year ends two days in
UTC = AppCalendar("UTC")
days = st.lists(st.integers(0, 800), min_size=1, max_size=12)


def _nonzero(counter: Counter[Cell]) -> dict[Cell, int]:
    return {cell: n for cell, n in counter.items() if n}


@settings(max_examples=300, deadline=None)
@given(before=days, after=days, buys=st.lists(st.integers(0, 800), max_size=3),
       installed=st.booleans())
def test_direct_delta_of_new_active_days_is_the_generic_one(
        before: list[int], after: list[int], buys: list[int], installed: bool) -> None:
    events = [Event("a", f"s{i}", "session", "u", BASE_MS + d * MS_PER_DAY + 3_600_000)
              for i, d in enumerate(before)]
    events += [Event("a", f"p{i}", "purchase", "u", BASE_MS + d * MS_PER_DAY, amount=4.99)
               for i, d in enumerate(buys)]
    if installed:
        events.append(Event("a", "i", "install", "u", BASE_MS + min(before) * MS_PER_DAY))
    old = add_events(None, events, UTC)
    # days on or after the first: the same cohort (a cohort move takes the generic path)
    later = [Event("a", f"n{i}", "session", "u", BASE_MS + d * MS_PER_DAY + 7_200_000)
             for i, d in enumerate(after) if d >= min(before)]
    new = add_events(old, later, UTC)
    if new.active_days == old.active_days:
        return  # nothing new: the plan returns before either path
    assert _only_new_active_days(old, new)
    expected = user_contributions(new)
    user_contributions(old, into=expected, sign=-1)
    direct: Counter[Cell] = Counter()
    add_new_days_delta(direct, old, new, new.active_days - old.active_days)
    for cell, delta in window_delta(old, new):  # the plan adds the windows' delta beside
        direct[cell] += delta
    assert _nonzero(direct) == _nonzero(expected)
