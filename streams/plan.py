"""The pure heart: a batch of events + the users' current state -> a plan of state changes.

Every aggregate counter is a sum over users of what each user contributes to it. So when a
user's state changes, the exact counter update is ``contributions(new) - contributions(old)``:
that is what makes the figures independent of arrival order, late events included (a late
first event moves the user to an earlier cohort, and the delta moves every cell with it).
No I/O here: the Redis layer loads the inputs and applies the plan atomically.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

from msgspec.structs import replace

from retention_tracker.streams import engine
from retention_tracker.streams.calendar import (
    GRANULARITIES,
    MS_PER_DAY,
    PERIOD_GRANULARITIES,
    AppCalendar,
    period_of_day,
    periods_of_days,
)
from retention_tracker.streams.counters import Cell, Measure, Stat
from retention_tracker.streams.events import SURVEY, Event
from retention_tracker.streams.nps import add_answers, add_nps_contributions
from retention_tracker.streams.returning import add_return_contributions, changed_return_days
from retention_tracker.streams.segments import (
    DEFAULT_RULES,
    SegmentRules,
    money_units,
    value_segment,
)
from retention_tracker.streams.user_state import (
    ATTRIBUTES,
    Purchases,
    UserKey,
    UserState,
    shared_days,
)
from retention_tracker.streams.winback import (
    DEFAULT_WINBACK,
    WinbackRules,
    handle_moment,
    moment_reached_ms,
    next_moment_ms,
    return_of,
)
from retention_tracker.streams.windows24 import (
    add_window_contributions,
    merge_spans,
    window_delta,
)

if TYPE_CHECKING:
    from retention_tracker.streams._native import DeltaSums

WAU_DAYS = 7
MAU_DAYS = 30

ALL_USERS = "all"

Segments = tuple[str, ...]  # every segment a user counts in: ("all", "platform=ios", ...)


def dedup_key(app: str, event_id: str) -> bytes:
    """96-bit digest of (app, event_id): fixed size whatever the id length (collisions ~1e-13
    at 1e8 ids per window)."""
    return hashlib.blake2b(f"{app}\x00{event_id}".encode(), digest_size=12).digest()


def adds_up(event: Event) -> bool:
    """Does a copy of this event change a figure? Only when its effect adds up (METRICS.md
    §1): a purchase (revenue, purchase counts) or an install carrying a cost (CAC). Every
    other fact a user's state keeps is a set, a minimum, a maximum or a latest-wins (active,
    session, install and return days, first_seen, last_active, attributes, the latest answer
    per survey and day, ties by event_id): applying a copy again leaves it as it was, so such
    an event's id is neither looked up nor kept (issue 31: ~19 B of Redis per event)."""
    return event.type == "purchase" or (event.type == "install" and bool(event.cost))


def dedup_key_of(event: Event) -> bytes | None:
    """The event's dedup key when its id must be remembered (``adds_up``), else None."""
    return dedup_key(event.app, event.event_id) if adds_up(event) else None


def segments_of(state: UserState, rules: SegmentRules) -> list[str]:
    """Every segment the user counts in: all users, each single attribute value, value."""
    return [
        ALL_USERS,
        *(f"{name}={value}" for name, value, _ in state.attributes),
        f"value={value_segment(state, rules)}",
    ]


def _window_edges(days: list[int], width: int) -> list[tuple[int, int]]:
    """WAU/MAU as edges: +1 where a run of covered days (days whose trailing window holds
    an active day) starts, -1 where it ends, so the count on day d is the sum of the edges
    up to d. A new active day moves at most two edges instead of ``width`` counters.
    ``days`` sorted; runs never touch, so every position appears once."""
    edges: list[tuple[int, int]] = []
    end = None
    for day in days:
        if end is None or day > end:
            if end is not None:
                edges.append((end, -1))
            edges.append((day, 1))
        end = day + width
    if end is not None:
        edges.append((end, -1))
    return edges


# the measures as module globals: the hot loop below reads each many times per user
_DAU, _WAU_EDGE, _MAU_EDGE = Measure.DAU, Measure.WAU_EDGE, Measure.MAU_EDGE
_INSTALLS, _NEW_USERS, _PAYERS, _REVENUE = (
    Measure.INSTALLS, Measure.NEW_USERS, Measure.PAYERS, Measure.REVENUE)
_COHORT_SIZE, _CLASSIC, _ACTIVE, _LOST, _LAST_ACTIVE, _COST = (
    Measure.COHORT_SIZE, Measure.CLASSIC, Measure.ACTIVE, Measure.LOST, Measure.LAST_ACTIVE,
    Measure.COST)
_LTV, _PERIOD_REVENUE, _FIRST_PAYMENT, _PERIOD_PAYERS, _REPEAT_PAYERS, _REPEAT_BUYERS = (
    Measure.LTV, Measure.PERIOD_REVENUE, Measure.FIRST_PAYMENT, Measure.PERIOD_PAYERS,
    Measure.REPEAT_PAYERS, Measure.REPEAT_BUYERS)
_LAPSE = Measure.LAPSE


def user_contributions(
    state: UserState, near_days: frozenset[int] | None = None,
    into: Counter[Cell] | None = None, sign: int = 1, years: bool = True,
) -> Counter[Cell]:
    """What one user adds to every aggregate counter of its app (METRICS.md §3-§6), keyed
    by cell (streams/counters.py).

    With ``near_days``, only the counters that a change on those days can move are given
    (plus the few per-user ones: cohort, cost, last active, first payment, repeat buyer):
    for two states with the same first day and segments, the difference of the scoped
    contributions is the difference of the full ones, at a fraction of the cost.

    With ``into``, the contributions times ``sign`` are added to it: a delta is new's
    minus old's, with no Counter in between. The 24-hour window counters are given only
    when not scoped: first_seen may move within the first day and re-base every window,
    so their delta is ``window_delta``'s (streams/windows24.py)."""
    contrib: Counter[Cell] = Counter() if into is None else into
    if not state.seen:  # known only by survey answers: they count, nothing else
        add_nps_contributions(contrib, state, None, sign)
        return contrib
    scoped = near_days is not None
    near: frozenset[int] = near_days if near_days is not None else state.active_days
    _add_daily(contrib, state, near, scoped, sign)
    purchase_count = state.purchase_count() if state.purchases else 0
    for g in GRANULARITIES:
        near_periods = _add_periods(contrib, state, g, near, scoped, sign)
        if state.purchases:
            _add_period_money(contrib, state, g, near_periods, purchase_count, sign)
    if years:  # False: the caller knows the yearly counters do not move (_years_move)
        near_years = _add_years(contrib, state, near, scoped, sign)
        if state.purchases:
            _add_period_money(contrib, state, YEAR, near_years, purchase_count, sign)
    if state.answers:
        add_nps_contributions(contrib, state, near_days, sign)
    if state.returns:
        add_return_contributions(contrib, state, near_days, sign)
    if not scoped:  # scoped: the caller adds the windows' own delta (window_delta)
        add_window_contributions(contrib, state, sign)
    return contrib


YEAR = "year"


def _add_years(contrib: Counter[Cell], state: UserState, near: frozenset[int],
               scoped: bool, sign: int) -> set[int]:
    """The yearly KPI counters (METRICS.md §6): cohort size (new users of the year), active
    and lost per year; no cohort triangle by year. Returns the years a change can move."""
    first_year = period_of_day(state.first_day, YEAR)
    # most users' days lie in one year (first_day is the earliest active day): no set walk
    active = ({first_year} if period_of_day(max(state.active_days), YEAR) == first_year
              else periods_of_days(state.active_days, YEAR))
    near_years = periods_of_days(near, YEAR) if scoped else active
    contrib[_COHORT_SIZE, YEAR, first_year] += sign
    for year in active & near_years:
        contrib[_ACTIVE, YEAR, year] += sign
    for year in {y + 1 for y in near_years} | near_years if scoped else {y + 1 for y in active}:
        if _lost(active, year):
            contrib[_LOST, YEAR, year] += sign
    return near_years


def _add_daily(contrib: Counter[Cell], state: UserState, near: frozenset[int],
               scoped: bool, sign: int) -> None:
    """The daily counters: DAU, WAU/MAU edges, installs, new users, payers, revenue."""
    days = state.active_days
    for day in near & days if scoped else days:
        contrib[_DAU, day] += sign
    # a change on day d moves edges in [d, d + width] only: outside that range the edges
    # of the old and new state are equal, so both may leave them out
    if not scoped:
        _add_edges(contrib, sorted(days), None, sign)
    elif near:
        _add_edges(contrib, sorted(days), (min(near), max(near)), sign)
    for day in state.install_days:
        if not scoped or day in near:
            contrib[_INSTALLS, day] += sign
    contrib[_NEW_USERS, state.first_day] += sign
    purchases = [p for p in state.purchases if not scoped or p[0] in near]
    for day in {day for day, _, _ in purchases}:
        contrib[_PAYERS, day] += sign
    for day, currency, totals in purchases:
        contrib[_REVENUE, day, currency] += sign * totals.units


def _add_edges(contrib: Counter[Cell], ordered: list[int], near: tuple[int, int] | None,
               sign: int) -> None:
    """The WAU/MAU edges of these (sorted) active days, times ``sign``; with ``near``
    (lowest, highest changed day), only those a change there can move."""
    for measure, width in ((_WAU_EDGE, WAU_DAYS), (_MAU_EDGE, MAU_DAYS)):
        for day, edge in _window_edges(ordered, width):
            if near is None or near[0] <= day <= near[1] + width:
                contrib[measure, day] += sign * edge


def _lost(active: frozenset[int] | set[int], period: int) -> bool:
    """Is ``period`` one the user was lost in: active in the one before, not in it?"""
    return period - 1 in active and period not in active


def _add_periods(contrib: Counter[Cell], state: UserState, g: str, near: frozenset[int],
                 scoped: bool, sign: int) -> frozenset[int] | set[int]:
    """The cohort counters of granularity ``g``: size, classic cells, active, lost, last
    active, cost. Returns the periods a change can move (the money counters use them)."""
    days = state.active_days
    cohort = period_of_day(state.first_day, g)
    contrib[_COHORT_SIZE, g, cohort] += sign
    # day periods are the days themselves: no copies
    active = days if g == "day" else periods_of_days(days, g)
    near_periods = (near if g == "day" else periods_of_days(near, g)) if scoped else active
    for period in active & near_periods:
        contrib[_CLASSIC, g, cohort, period - cohort] += sign
        contrib[_ACTIVE, g, period] += sign
    lost_candidates = (
        {p + 1 for p in near_periods} | near_periods if scoped else {p + 1 for p in active}
    )
    for period in lost_candidates:
        if _lost(active, period):
            contrib[_LOST, g, period] += sign
    contrib[_LAST_ACTIVE, g, cohort, period_of_day(state.last_day, g) - cohort] += sign
    if state.cost_units:
        contrib[_COST, g, cohort] += sign * state.cost_units
    return near_periods


def _add_period_money(contrib: Counter[Cell], state: UserState, g: str,
                      near_periods: frozenset[int] | set[int], purchase_count: int,
                      sign: int) -> None:
    """A payer's counters of granularity ``g``: LTV, period revenue, first payment, payers,
    repeat payers, repeat buyers."""
    cohort = period_of_day(state.first_day, g)
    per_period: Counter[int] = Counter()
    for day, currency, totals in state.purchases:
        period = period_of_day(day, g)
        per_period[period] += totals.count
        if period in near_periods:
            contrib[_LTV, g, cohort, period - cohort, currency] += sign * totals.units
            contrib[_PERIOD_REVENUE, g, period, currency] += sign * totals.units
    contrib[_FIRST_PAYMENT, g, cohort, min(per_period) - cohort] += sign
    for period, count in per_period.items():
        if period in near_periods:
            contrib[_PERIOD_PAYERS, g, period] += sign
            if count >= 2:
                contrib[_REPEAT_PAYERS, g, period] += sign
    contrib[_REPEAT_BUYERS, g, cohort, 1] += sign
    if purchase_count >= 2:
        contrib[_REPEAT_BUYERS, g, cohort, 2] += sign


def add_events(
    state: UserState | None,
    events: Iterable[Event],
    calendar: AppCalendar,
    rules: SegmentRules = DEFAULT_RULES,
) -> UserState:
    """The user's state after these accepted events, in any order. A copy of an event
    whose id is not remembered (``adds_up``) may be among them: it changes nothing. The
    Python engine's; the native one's (``_native.add_events``) gives the same state."""
    first_ms = state.first_seen_ms if state else None
    last_ms = state.last_active_ms if state else None
    active = set(state.active_days) if state else set()
    installs = set(state.install_days) if state else set()
    attributes = {name: (value, ts) for name, value, ts in state.attributes} if state else {}
    purchases: dict[tuple[int, str], Purchases] = (
        {(day, cur): p for day, cur, p in state.purchases} if state else {}
    )
    cost = state.cost_units if state else 0
    session_days = set(state.session_days) if state else set()
    return_types = rules.return_types  # RETURN_EVENTS: the days of these types are kept
    returns: dict[str, set[int]] = (
        {kind: set(days) for kind, days in state.returns} if state and state.returns else {})
    # 24-hour windows: per UTC day of these events, the earliest and latest (merged below)
    spans: dict[int, list[int]] | None = (
        None if state is not None and state.utc_spans is None else {})
    for event in events:
        day = calendar.day_of(event.ts_ms)
        active.add(day)
        if spans is not None:
            span = spans.get(event.ts_ms // MS_PER_DAY)
            if span is None:
                spans[event.ts_ms // MS_PER_DAY] = [event.ts_ms, event.ts_ms]
            elif event.ts_ms < span[0]:
                span[0] = event.ts_ms
            elif event.ts_ms > span[1]:
                span[1] = event.ts_ms
        if return_types and event.type in return_types:
            returns.setdefault(event.type, set()).add(day)
        if event.type == "install":
            installs.add(day)
            if event.cost:
                cost += money_units(event.cost)
        elif event.type == "session":
            session_days.add(day)
        elif event.type == "purchase":
            key = (day, event.currency or rules.default_currency)
            old = purchases.get(key, Purchases(0, 0))
            purchases[key] = Purchases(old.count + 1, old.units + money_units(event.amount or 0))
        for name in ATTRIBUTES:
            value = getattr(event, name)
            if value is None:
                continue
            # the earliest event carrying it wins; equal times: the smallest value
            found = attributes.get(name)
            if found is None or (event.ts_ms <= found[1]
                                 and (event.ts_ms, value) < (found[1], found[0])):
                attributes[name] = (value, event.ts_ms)
        if first_ms is None or event.ts_ms < first_ms:
            first_ms = event.ts_ms
        if last_ms is None or event.ts_ms > last_ms:
            last_ms = event.ts_ms
    assert first_ms is not None and last_ms is not None, "add_events needs at least one event"
    active_days = frozenset(active)
    return UserState(
        first_seen_ms=first_ms,
        last_active_ms=last_ms,
        first_day=calendar.day_of(first_ms),
        active_days=active_days,
        install_days=frozenset(installs),
        attributes=tuple((name, *attributes[name]) for name in ATTRIBUTES if name in attributes),
        purchases=tuple((day, cur, p) for (day, cur), p in sorted(purchases.items())),
        cost_units=cost,
        session_days=shared_days(session_days, active_days),
        notified_episode_ms=state.notified_episode_ms if state else None,
        notified_days=state.notified_days if state else (),
        expired_days=state.expired_days if state else (),
        answers=state.answers if state else (),
        returns=tuple((kind, frozenset(days)) for kind, days in sorted(returns.items()))
        if returns else (),
        utc_spans=None if spans is None
        else merge_spans(state.utc_spans if state is not None else (), spans),
        at_risk_episode_ms=state.at_risk_episode_ms if state else None,
        at_risk_moment_ms=state.at_risk_moment_ms if state else 0,
        at_risk_sent=state.at_risk_sent if state else False,
    )


def _add_user_delta(
    pending: dict[Segments, Counter[Cell]],
    old: UserState | None,
    new: UserState,
    rules: SegmentRules,
    native_sums: DeltaSums | None = None,
) -> None:
    """contributions(new) - contributions(old), filed under the segments the user is (or
    was) in. Users with the same segments share one Counter, which the store applies to
    each of those segments: far cheaper than adding every user's delta to every segment.
    ``native_sums``: the native engine's sums (streams/engine.py) of the usual change and
    of whole users, rendered into ``pending`` by the caller once per batch; None: the
    Python engine."""
    if old is not None and _same_counted_facts(old, new):
        # only last_active_ms, session days or the UTC day spans moved: the 24-hour windows
        # may have (rarely: an event in a window already active moves none)
        _add_window_delta(pending, old, new, rules)
        return
    new_segments = tuple(segments_of(new, rules))
    if old is None:
        _add_whole(pending, new_segments, new, 1, native_sums)
        return
    old_segments = tuple(segments_of(old, rules))
    if old.seen and old_segments == new_segments and old.first_day == new.first_day:
        near = _changed_days(old, new)
        if not near and old.cost_units == new.cost_units:
            # e.g. an earlier event carrying the same attribute value
            _add_window_delta(pending, old, new, rules)
            return
        target = pending.setdefault(new_segments, Counter())
        for cell, delta in window_delta(old, new):
            target[cell] += delta
        if _only_new_active_days(old, new):  # the usual change: another day of activity
            if native_sums is not None:
                native_sums.add_new_days(new_segments, old.active_days, near)
            else:
                add_new_days_delta(target, old, new, near)
            return
        years = _years_move(old, new, near)
        user_contributions(new, near, into=target, years=years)
        user_contributions(old, near, into=target, sign=-1, years=years)
    else:  # the user moved cohort or segment: every contribution moves
        _add_whole(pending, new_segments, new, 1, native_sums)
        _add_whole(pending, old_segments, old, -1, native_sums)


def _add_whole(pending: dict[Segments, Counter[Cell]], segments: Segments, state: UserState,
               sign: int, native_sums: DeltaSums | None) -> None:
    """``sign`` times all of the user's contributions, under ``segments``: the native
    engine's sums take what they can (no money, answers or returning events), the 24-hour
    windows always here; the Python engine, or a user the native sums leave, in full."""
    target = pending.setdefault(segments, Counter())
    if native_sums is not None and native_sums.add_user(segments, state, sign):
        add_window_contributions(target, state, sign)
    else:
        user_contributions(state, into=target, sign=sign)


def _add_window_delta(pending: dict[Segments, Counter[Cell]], old: UserState,
                      new: UserState, rules: SegmentRules) -> None:
    """The 24-hour windows' delta of a user whose other counted facts did not change,
    filed under its segments (computed only when a window moved)."""
    moved = window_delta(old, new)
    if moved:
        target = pending.setdefault(tuple(segments_of(new, rules)), Counter())
        for cell, delta in moved:
            target[cell] += delta
#: The lapse summaries are kept for all users only: a fit per segment is not asked for,
#: and the cells are nearly one per user.
_ALL_ONLY: Segments = (ALL_USERS,)


def lapse_cell(state: UserState) -> Cell | None:
    """The user's cell of the app's lapse summaries (METRICS.md §9, streams/lapse_model.py):
    (x repeat active days, t_x = last - first active day, first active day). The first
    day, not T, so the cell does not move as days pass; None for a user with no activity."""
    if not state.seen:
        return None
    return (_LAPSE, len(state.active_days) - 1, state.last_day - state.first_day,
            state.first_day)


def _add_lapse_delta(groups: dict[Segments, Counter[Cell]], old: UserState | None,
                     new: UserState) -> None:
    """lapse_cell(new) - lapse_cell(old). Active days are only ever added, so an equal
    count means the same days and the same cell: the usual event costs one len."""
    if old is not None and old.seen and len(old.active_days) == len(new.active_days):
        return
    before = lapse_cell(old) if old is not None else None
    after = lapse_cell(new)
    if before != after:
        target = groups.setdefault(_ALL_ONLY, Counter())
        if before is not None:
            target[before] -= 1
        if after is not None:
            target[after] += 1


def _only_new_active_days(old: UserState, new: UserState) -> bool:
    """Do the two states (same first day and segments) differ in counted facts only by
    active days the new one adds? Then ``add_new_days_delta`` gives the delta: installs,
    purchases, cost and returning events equal means their counters cancel, and a user
    with survey answers is left to the generic path (the answers' retained flag reads
    the active days)."""
    return (
        not new.answers
        and old.install_days == new.install_days
        and old.purchases == new.purchases
        and old.cost_units == new.cost_units
        and old.returns == new.returns
        and old.active_days < new.active_days
    )


def add_new_days_delta(contrib: Counter[Cell], old: UserState, new: UserState,
                       added: frozenset[int]) -> None:
    """contributions(new) - contributions(old) when new only adds the active days
    ``added`` (``_only_new_active_days``), written straight from what a new day moves:
    its DAU, the WAU/MAU edges around it, and per granularity (years included) the new
    periods' classic and active cells, the lost cells next to them and the last-active
    cell. The generic path computes both states' contributions near the change and lets
    them cancel; ``tests/streams/test_new_days_delta.py`` holds the two to the same
    delta."""
    for day in added:
        contrib[_DAU, day] += 1
    near = (min(added), max(added))
    old_days, new_days = sorted(old.active_days), sorted(new.active_days)
    _add_edges(contrib, new_days, near, 1)
    _add_edges(contrib, old_days, near, -1)
    old_last, new_last = old_days[-1], new_days[-1]
    for g in PERIOD_GRANULARITIES:
        if g == "day":
            before: frozenset[int] | set[int] = old.active_days
            fresh: frozenset[int] | set[int] = added
        else:
            before = periods_of_days(old_days, g)
            fresh = periods_of_days(added, g) - before
        cohorts = g != YEAR  # years: period KPIs only, no cohort triangle
        cohort = period_of_day(new.first_day, g)
        for period in fresh:
            if cohorts:
                contrib[_CLASSIC, g, cohort, period - cohort] += 1
            contrib[_ACTIVE, g, period] += 1
        # lost(q) = q - 1 active and q not: only q in fresh or just after one can change
        after = before | fresh
        for period in fresh | {p + 1 for p in fresh}:
            moved = _lost(after, period) - _lost(before, period)
            if moved:
                contrib[_LOST, g, period] += moved
        if cohorts:
            last_before, last_now = period_of_day(old_last, g), period_of_day(new_last, g)
            if last_before != last_now:
                contrib[_LAST_ACTIVE, g, cohort, last_before - cohort] -= 1
                contrib[_LAST_ACTIVE, g, cohort, last_now - cohort] += 1


def _years_move(old: UserState, new: UserState, near: frozenset[int]) -> bool:
    """Can the yearly KPI counters differ between two states of the same first day? Not
    when the purchases are the same and every changed day falls in a year the user was
    active in already (its first or last): the set of active years is then the same. The
    usual event (another day of this year) so skips them."""
    if old.purchases != new.purchases:
        return True
    known = (period_of_day(old.first_day, YEAR), period_of_day(old.last_day, YEAR))
    return any(period_of_day(day, YEAR) not in known for day in near)


def _nonzero(groups: dict[Segments, Counter[Cell]]) -> dict[Segments, dict[Cell, int]]:
    """Drop the deltas that cancelled out (and groups left empty)."""
    kept = {segments: {k: v for k, v in deltas.items() if v} for segments, deltas in groups.items()}
    return {segments: deltas for segments, deltas in kept.items() if deltas}


def _same_counted_facts(old: UserState, new: UserState) -> bool:
    """Does nothing that a counter or a segment is computed from differ? (Most events are
    another session on a day already counted.)"""
    return (
        old.active_days == new.active_days
        and old.first_day == new.first_day
        and old.install_days == new.install_days
        and old.purchases == new.purchases
        and old.cost_units == new.cost_units
        and old.attributes == new.attributes
        and old.answers == new.answers
        and old.returns == new.returns
    )


def _changed_days(old: UserState, new: UserState) -> frozenset[int]:
    """Days on which the user's contributions can differ between two states."""
    changed = (new.active_days - old.active_days) | (new.install_days - old.install_days)
    if old.answers != new.answers:  # survey answers: the days whose answer changed
        changed |= {answer[1] for answer in set(old.answers) ^ set(new.answers)}
    if old.returns != new.returns:  # RETURN_EVENTS days
        changed |= changed_return_days(old, new)
    return changed | {day for day, _, _ in set(new.purchases) ^ set(old.purchases)}


@dataclass(slots=True)
class Plan:
    """Everything one batch changes; applied atomically with the batch's offsets."""

    users: dict[UserKey, UserState] = field(default_factory=dict)
    # app -> segments -> cell -> delta: each delta counts in every one of the segments
    deltas: dict[str, dict[Segments, dict[Cell, int]]] = field(default_factory=dict)
    new_dedup_keys: list[bytes] = field(default_factory=list)
    stats: Counter[Cell] = field(default_factory=Counter)  # (Stat, *tail) -> delta
    too_old: list[tuple[int, int, Event]] = field(default_factory=list)  # (offset, index, ev)
    # the due entries that move: user -> its next inactivity moment, None to drop it (one
    # per user, streams/winback.py next_moment_ms; the store writes them as they are)
    due: dict[UserKey, int | None] = field(default_factory=dict)
    reactivations: list[dict[str, object]] = field(default_factory=list)  # users.reactivated
    # event clock: users.inactive.{K}d messages whose moment came inside the batch
    notifications: list[dict[str, object]] = field(default_factory=list)
    watermark_ms: int | None = None
    # input batches: the latest event time read from the partition (``streams/batch.py``)
    read_watermark_ms: int | None = None
    arrivals: list[int] = field(default_factory=list)  # watermark after each accepted event
    # event clock: the watermark at the arrival of the event that set each user's final
    # last_active in this batch (its moments cannot have come before that)
    known_ms: dict[UserKey, int] = field(default_factory=dict)


def _moment_cuts(old: UserState | None, events: list[Event], arrivals: list[int],
                 thresholds: Sequence[int]) -> tuple[list[tuple[int, int]], int | None]:
    """Event clock: where "now" passes one of the user's inactivity moments not handled yet,
    before one of its events in this batch (rare: a batch spans minutes, a gap days). Each
    cut is (position of that event, arrival watermark of the event that set the user's last
    activity then: no moment comes before it). Also the arrival watermark of the event that
    set the final last activity (None: not moved by this batch)."""
    cuts: list[tuple[int, int]] = []
    known_ms: int | None = None
    if not thresholds:
        return cuts, known_ms
    last_ms = old.last_active_ms if old is not None else None
    earliest_ms = (last_ms if last_ms is not None else events[0].ts_ms) + thresholds[0] * MS_PER_DAY
    if arrivals[-1] < earliest_ms:  # no moment can come before this batch ends: the usual
        for event, now_ms in zip(events, arrivals, strict=True):
            if last_ms is None or event.ts_ms > last_ms:
                last_ms, known_ms = event.ts_ms, now_ms
        return cuts, known_ms
    pending = [d for d in thresholds if old is None or not old.handled(d)]  # ascending
    set_at = 0  # before the batch
    for position, (event, now_ms) in enumerate(zip(events, arrivals, strict=True)):
        if last_ms is not None and pending and last_ms + pending[0] * MS_PER_DAY <= now_ms:
            cuts.append((position, set_at))
            pending = [d for d in pending if last_ms + d * MS_PER_DAY > now_ms]
        if last_ms is None or event.ts_ms > last_ms:
            last_ms, set_at, known_ms = event.ts_ms, now_ms, now_ms
            pending = list(thresholds)
    return cuts, known_ms


def _apply_events(
    plan: Plan,
    user: UserKey,
    old: UserState | None,
    events: list[Event],
    arrivals: list[int],
    cuts: list[tuple[int, int]],
    calendar: AppCalendar,
    rules: SegmentRules,
    winback: WinbackRules,
) -> UserState:
    """The user's state after its events. Without cuts, all of them at once; at each cut
    (event clock), the moments now has passed are handled first (published, or expired
    when found too late), and the events after it may then be the user's return (or show
    a false alarm). One add_events per run of events between cuts."""
    if not cuts:  # the usual: all events at once
        return _add_run(plan, user, old, events, calendar, rules, winback)
    state = old
    bounds = [0, *(position for position, _ in cuts), len(events)]
    set_at = dict(cuts)
    for begin, end in pairwise(bounds):
        if begin in set_at and state is not None:
            now_ms = arrivals[begin]
            for days in winback.thresholds_of(user[0]):
                moment_ms = state.last_active_ms + days * MS_PER_DAY
                if moment_ms <= now_ms and not state.handled(days):
                    reached_ms = max(set_at[begin],
                                     moment_reached_ms(plan.arrivals, moment_ms, now_ms))
                    state = handle_moment(user, state, days, reached_ms, calendar, rules,
                                          winback, plan.notifications, plan.stats)
        if end > begin:
            state = _add_run(plan, user, state, events[begin:end], calendar, rules, winback)
    assert state is not None, "a user with no event in the batch"
    return state


def _add_run(plan: Plan, user: UserKey, state: UserState | None, run: list[Event],
             calendar: AppCalendar, rules: SegmentRules, winback: WinbackRules) -> UserState:
    """The state after a run of events; when an episode was handled, the run may be the
    user's return (a users.reactivated message) or show a false alarm."""
    native = engine.native()  # None: the Python engine builds the state
    new = (add_events if native is None else native.add_events)(state, run, calendar, rules)
    if state is not None and (state.notified_days or state.expired_days):
        new, message = return_of(user, state, new, run, rules, winback, plan.stats)
        if message is not None:
            plan.reactivations.append(message)
    return new


def _accept(plan: Plan, events: list[tuple[int, int, Event]], keys: Sequence[bytes | None],
            seen_dedup_keys: set[bytes], horizon_days: int, event_clock: bool,
            answered: dict[UserKey, list[Event]] | None = None,
            judged_ms: Sequence[int | None] | None = None,
            ) -> tuple[dict[UserKey, list[Event]], dict[UserKey, list[int]]]:
    """Drop duplicates (copies of the events whose id is remembered, ``adds_up``) and events
    too old for the horizon (counted, and the latter kept for their dead letters), move the
    watermark; the accepted events by user, and with the
    event clock the watermark at each of them. Survey answers (no activity) go to
    ``answered`` instead, by user. ``judged_ms``: the watermark each event is judged
    against for the horizon (that of the partition it was first read from, as it was then;
    None: none yet); not given, the running watermark."""
    horizon_ms = horizon_days * MS_PER_DAY
    seen = set(seen_dedup_keys)
    accepted: dict[UserKey, list[Event]] = {}
    arrived: dict[UserKey, list[int]] = {}
    by_type: Counter[tuple[str, str]] = Counter()  # accepted (app, type), filed once below
    new_keys, arrivals = plan.new_dedup_keys, plan.arrivals  # the per-event loop's locals
    watermark_ms = plan.watermark_ms
    limits = iter(judged_ms) if judged_ms is not None else None
    for (offset, index, event), key in zip(events, keys, strict=True):
        limit = next(limits) if limits is not None else watermark_ms
        if key is not None and key in seen:
            plan.stats[Stat.DUPLICATE, event.app] += 1
            continue
        if limit is not None and event.ts_ms < limit - horizon_ms:
            plan.too_old.append((offset, index, event))
            plan.stats[Stat.REJECTED, "too_old"] += 1
            continue
        if key is not None:  # None: a copy would change nothing (adds_up), not remembered
            seen.add(key)
            new_keys.append(key)
        by_type[event.app, event.type] += 1
        if watermark_ms is None or event.ts_ms > watermark_ms:
            watermark_ms = event.ts_ms
        user = (event.app, event.user_id)
        if event.type == SURVEY and answered is not None:
            answered.setdefault(user, []).append(event)
            if event_clock:
                arrivals.append(watermark_ms)
            continue
        found = accepted.get(user)
        if found is None:
            accepted[user] = [event]
        else:
            found.append(event)
        if event_clock:
            arrivals.append(watermark_ms)
            arrived.setdefault(user, []).append(watermark_ms)
    plan.watermark_ms = watermark_ms
    for (app, kind), count in by_type.items():
        plan.stats[Stat.ACCEPTED, app, kind] += count
    return accepted, arrived


def plan_batch(
    events: Iterable[tuple[int, int, Event]],
    states: Mapping[UserKey, UserState | None],
    seen_dedup_keys: set[bytes],
    watermark_ms: int | None,
    horizon_days: int,
    calendars: Mapping[str, AppCalendar],
    rules: SegmentRules = DEFAULT_RULES,
    dedup_keys: Sequence[bytes | None] | None = None,
    winback: WinbackRules = DEFAULT_WINBACK,
    event_clock: bool = False,
    judged_ms: Sequence[int | None] | None = None,
) -> Plan:
    """Plan one partition batch. ``events`` are (offset, index in message, event) in offset
    order; ``states`` must hold every user of the batch (None for a new user), and
    ``calendars`` the calendar of every app in it (data: the plan calls nothing back).
    ``dedup_keys``, when given, are the events' ``dedup_key_of`` in the same order (the
    caller already hashed them to load the batch; None: the event's copies are not told
    apart, ``adds_up``). ``judged_ms``, when given, holds the watermark
    each event is judged against for the horizon, in the same order (``streams/batch.py``);
    else the partition's watermark as the batch moves it. With ``event_clock``, "now" is the
    watermark and moves event by event: a user's inactivity moment that it passes before
    the user's next event in the batch is handled right there (METRICS.md §7), so a gap
    that opens and closes inside one batch is an episode like any other."""
    events = list(events)
    keys = dedup_keys if dedup_keys is not None else [
        dedup_key_of(event) for _, _, event in events]
    plan = Plan(watermark_ms=watermark_ms)
    answered: dict[UserKey, list[Event]] = {}
    accepted, arrived = _accept(plan, events, keys, seen_dedup_keys, horizon_days,
                                event_clock, answered, judged_ms)
    pending: dict[str, dict[Segments, Counter[Cell]]] = {}
    native = engine.native()  # None: the Python engine computes every delta
    native_sums: dict[str, DeltaSums] = {}  # per app
    for user_key, user_events in accepted.items():
        app = user_key[0]
        app_rules = rules.for_app(app)  # the app's currency and VIP bars
        old = states[user_key]
        # a user known only by survey answers has no activity yet: its events start it
        active_old = old if old is None or old.seen else None
        cuts: list[tuple[int, int]] = []
        user_arrivals = arrived.get(user_key, [])
        if event_clock:
            cuts, known_ms = _moment_cuts(active_old, user_events, user_arrivals,
                                          winback.thresholds_of(app))
            if known_ms is not None:
                plan.known_ms[user_key] = known_ms
        new = _apply_events(plan, user_key, active_old, user_events, user_arrivals, cuts,
                            calendars[app], app_rules, winback)
        if old is not None and active_old is None:
            new = replace(new, answers=old.answers)
        if answered:
            new = _with_answers(new, answered.pop(user_key, None), calendars[app])
        if new == old:
            continue
        thresholds = winback.thresholds_of(app)
        if thresholds:
            moment_ms = next_moment_ms(new, thresholds)
            if active_old is None or moment_ms != next_moment_ms(active_old, thresholds):
                plan.due[user_key] = moment_ms
        plan.users[user_key] = new
        groups = pending.setdefault(app, {})
        app_sums = None
        if native is not None:
            app_sums = native_sums.get(app)
            if app_sums is None:
                app_sums = native_sums[app] = native.DeltaSums()
        _add_user_delta(groups, old, new, app_rules, app_sums)
        _add_lapse_delta(groups, old, new)
    for user_key, answers in answered.items():  # answers of users with no event here
        app, old = user_key[0], states[user_key]
        new = _with_answers(old or _ANSWERS_ONLY, answers, calendars[app])
        if new != old:
            plan.users[user_key] = new
            _add_user_delta(pending.setdefault(app, {}), old, new, rules.for_app(app))
    for app, app_sums in native_sums.items():
        app_sums.render_into(pending[app])
    plan.deltas = {app: _nonzero(groups) for app, groups in pending.items()}
    return plan


#: The state of a user before its first survey answer when nothing else is known of it.
_ANSWERS_ONLY = UserState(0, 0, 0, frozenset(), frozenset())


def _with_answers(state: UserState, answers: list[Event] | None, calendar: AppCalendar
                  ) -> UserState:
    """The state with these survey answers kept (METRICS.md §8); they make no one active."""
    if not answers:
        return state
    return replace(state, answers=add_answers(state.answers, answers, calendar))
