"""24-hour windows (streams/windows24.py): the spans give each window exactly, and the plan's
counters summed over any order, batching and duplication are the reference's triangle.

The end-to-end property (test_plan_properties) holds the same through Redis and the query;
this one is pure, so it runs many more examples, with events packed around window
boundaries and first events arriving late (every window re-based)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention_tracker.bench import reference
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.catalogue import COHORT_FAMILY, HOURS24
from retention_tracker.streams.counters import Cell, Measure
from retention_tracker.streams.events import Event
from retention_tracker.streams.figures import (
    Bounds,
    cohort_rows,
    last_day_with_data,
    window_sizes,
)
from retention_tracker.streams.plan import ALL_USERS, add_events, dedup_key, plan_batch
from retention_tracker.streams.user_state import UserKey, UserState
from retention_tracker.streams.windows24 import active_windows

# every plan here runs on each engine (tests/streams/conftest.py)
pytestmark = pytest.mark.usefixtures("engine")

BASE_MS = 1_710_000_000_000  # 2024-03-09T16:00Z: a DST change (US) the next day
ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]


def test_a_day_holds_one_boundary_and_its_ends_say_which_windows() -> None:
    """First event at 10:00 UTC: boundaries at 10:00 every day. Day 1's events at 09:00
    (window 0) and 11:00 (window 1); day 3's only at 09:00 (window 2, not 3)."""
    hour = 3_600_000
    first = 10 * hour
    spans = ((0, first, first), (1, MS_PER_DAY + 9 * hour, MS_PER_DAY + 11 * hour),
             (3, 3 * MS_PER_DAY + 9 * hour, 3 * MS_PER_DAY + 9 * hour))
    assert active_windows(first, spans) == {0, 1, 2}
    # a late first event at 08:00 of day 0 moves every boundary to 08:00: day 1's events
    # are both in window 1, day 3's in window 3
    earlier = ((0, 8 * hour, first), *spans[1:])
    assert active_windows(8 * hour, earlier) == {0, 1, 3}


@st.composite
def events(draw: st.DrawFn) -> list[Event]:
    users = draw(st.integers(1, 5))
    out = []
    for i in range(draw(st.integers(1, 40))):
        # whole days and a time near a few fixed times of day, so events fall on both
        # sides of a user's boundaries, to the millisecond
        day = draw(st.integers(0, 12))
        time_ms = draw(st.sampled_from([0, 3_600_000, 36_000_000, 86_399_999])) + draw(
            st.integers(-2, 2))
        # a platform: an earlier event carrying the same one moves only its time (the
        # plan's path where no counted day changes, but first_seen may)
        out.append(Event("a", f"e{i}", draw(st.sampled_from(["session", "install", "bet"])),
                         f"u{draw(st.integers(0, users - 1))}",
                         BASE_MS + day * MS_PER_DAY + time_ms,
                         platform=draw(st.sampled_from([None, "ios"]))))
    return out


@settings(max_examples=400, deadline=None)
@given(events=events(), seed=st.integers(0, 2**32), tz=st.sampled_from(ZONES))
def test_plans_in_any_order_give_the_reference_triangle(events: list[Event], seed: int,
                                                         tz: str) -> None:
    rng = random.Random(seed)
    stream = events + [e for e in events if rng.random() < 0.3]  # duplicates
    rng.shuffle(stream)
    calendar = AppCalendar(tz)
    states: dict[UserKey, UserState | None] = {}
    counters: Counter[Cell] = Counter()
    seen: set[bytes] = set()
    watermark = None
    while stream:
        batch = stream[:rng.randint(1, 6)]
        stream = stream[len(batch):]
        for event in batch:
            states.setdefault((event.app, event.user_id), None)
        keys = [dedup_key(e.app, e.event_id) for e in batch]
        plan = plan_batch([(i, -1, e) for i, e in enumerate(batch)], states,
                          seen.intersection(keys), watermark, 400, {"a": calendar},
                          dedup_keys=keys, event_clock=True)
        seen.update(plan.new_dedup_keys)
        watermark = plan.watermark_ms
        states.update(plan.users)
        for segments, deltas in plan.deltas.get("a", {}).items():
            if ALL_USERS in segments:
                counters.update(deltas)
    assert watermark is not None
    daily = Counter({cell: n for cell, n in counters.items() if cell[0] is Measure.DAU})
    for kind in ("classic", "rolling"):
        def family(measure: Measure) -> Counter[tuple[int, int]]:
            return Counter({cell[2:]: n for cell, n in counters.items() if cell[0] is measure})

        classic = family(COHORT_FAMILY[HOURS24, "classic"].measure)
        cells = family(COHORT_FAMILY[HOURS24, kind].measure)
        got = cohort_rows(window_sizes(classic), cells, kind, "day",
                          Bounds(calendar, watermark, last_day_with_data(daily)), windows24=True)
        assert [r.as_json() for r in got] == reference.triangle(events, "a", "day", kind, tz,
                                                                 watermark,
                                         window="24h"), kind


def test_a_record_from_before_the_spans_counts_in_no_window() -> None:
    """Format 5 kept no spans (None): the user's windows are unknown, so it counts in no
    window cell, and stays unknown when its events go on."""
    calendar = AppCalendar("UTC")
    known = add_events(None, [Event("a", "e1", "session", "u", BASE_MS)], calendar)
    old = UserState(known.first_seen_ms, known.last_active_ms, known.first_day,
                    known.active_days, known.install_days, utc_spans=None)
    later = add_events(old, [Event("a", "e2", "session", "u", BASE_MS + MS_PER_DAY)], calendar)
    assert later.utc_spans is None
    plan = plan_batch([(0, -1, Event("a", "e2", "session", "u", BASE_MS + MS_PER_DAY))],
                      {("a", "u"): old}, set(), None, 400, {"a": calendar})
    cells = [cell for deltas in plan.deltas["a"].values() for cell in deltas]
    assert not any(cell[0] in (Measure.WINDOW24, Measure.LAST_WINDOW24) for cell in cells)
    assert any(cell[0] is Measure.DAU for cell in cells)
