"""Day-N retention in 24-hour windows (METRICS.md §4): window N of a user is
``[first_seen + N x 24h, first_seen + (N+1) x 24h)``, counted per daily cohort.

What the user's record keeps for it, exactly under any order: per UTC day with activity,
its earliest and latest event (``UserState.utc_spans``). Window boundaries lie 24 h apart
at first_seen's UTC time of day, so a UTC day holds exactly one, and its events before the
boundary are in one window, those after in the next: the day's earliest event says whether
the first is active, its latest whether the second is. A late event that moves first_seen
moves every boundary, and the spans give the windows again, with no event kept.

Counters, like every other a sum of per-user contributions: ``(WINDOW24, "day", cohort,
N)``, users of the cohort with an activity in window N (classic), and ``(LAST_WINDOW24,
"day", cohort, N)``, users whose last activity is in window N (rolling, a suffix sum when
read). A user whose record predates the spans (``utc_spans`` None) contributes to neither.
"""

from __future__ import annotations

from collections import Counter

from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.counters import Cell, Measure
from retention_tracker.streams.user_state import Span, UserState

_WINDOW24, _LAST_WINDOW24 = Measure.WINDOW24, Measure.LAST_WINDOW24
DAY = "day"  # the only granularity of 24-hour windows: daily cohorts


def merge_spans(spans: tuple[Span, ...] | None, found: dict[int, list[int]]
                ) -> tuple[Span, ...]:
    """The spans with a batch's events added: ``found`` is, per UTC day, their earliest
    and latest. The usual batch has events of the user's last day or later only: the
    spans before stay as they are."""
    if spans is None:
        spans = ()
    if not found:
        return spans
    if spans and min(found) >= spans[-1][0]:
        kept, touched = spans[:-1], {spans[-1][0]: [spans[-1][1], spans[-1][2]]}
    else:
        kept, touched = (), {day: [first, last] for day, first, last in spans}
    for day, (first, last) in found.items():
        span = touched.get(day)
        if span is None:
            touched[day] = [first, last]
        else:
            span[0], span[1] = min(span[0], first), max(span[1], last)
    return kept + tuple((day, span[0], span[1]) for day, span in sorted(touched.items()))


def active_windows(first_seen_ms: int, spans: tuple[Span, ...]) -> set[int]:
    """The windows with an activity, from the spans and first_seen."""
    first_day, boundary_of_day = divmod(first_seen_ms, MS_PER_DAY)
    found: set[int] = set()
    for day, earliest_ms, latest_ms in spans:
        boundary_ms = day * MS_PER_DAY + boundary_of_day  # the day's one boundary
        window = day - first_day  # the window starting there
        if earliest_ms < boundary_ms:
            found.add(window - 1)
        if latest_ms >= boundary_ms:
            found.add(window)
    return found


def last_window(state: UserState) -> int:
    """The window of the user's last activity."""
    return (state.last_active_ms - state.first_seen_ms) // MS_PER_DAY


def add_window_contributions(contrib: Counter[Cell], state: UserState, sign: int = 1) -> None:
    """The user's 24-hour window counters, times ``sign``."""
    if state.utc_spans is None:
        return
    cohort = state.first_day
    for window in active_windows(state.first_seen_ms, state.utc_spans):
        contrib[_WINDOW24, DAY, cohort, window] += sign
    contrib[_LAST_WINDOW24, DAY, cohort, last_window(state)] += sign


def window_delta(old: UserState, new: UserState) -> list[tuple[Cell, int]]:
    """contributions(new) - contributions(old) of the window counters, for two states of
    one cohort (the same first day): only the windows that changed. Most events move
    neither (another event inside a window already active)."""
    if new.utc_spans is None or old.utc_spans is None:
        return []  # unknown stays unknown: neither state contributes
    cohort = new.first_day
    moved: list[tuple[Cell, int]] = []
    before_last, now_last = last_window(old), last_window(new)
    if before_last != now_last:
        moved += [((_LAST_WINDOW24, DAY, cohort, before_last), -1),
                  ((_LAST_WINDOW24, DAY, cohort, now_last), 1)]
    if old.utc_spans == new.utc_spans and old.first_seen_ms == new.first_seen_ms:
        return moved
    before = active_windows(old.first_seen_ms, old.utc_spans)
    after = active_windows(new.first_seen_ms, new.utc_spans)
    moved += [((_WINDOW24, DAY, cohort, w), 1) for w in after - before]
    moved += [((_WINDOW24, DAY, cohort, w), -1) for w in before - after]
    return moved
