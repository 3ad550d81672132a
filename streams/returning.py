"""Retention on a chosen returning event (RETURN_EVENTS): cohort retention where a user
counts as back in a period only if it sent an event of that type in it, e.g. payer
retention with ``purchase``.

The user's record keeps, per type named in RETURN_EVENTS, the days it sent one
(``UserState.returns``). Its contributions, like every counter's, are per user, so the
plan moves them by ``contributions(new) - contributions(old)`` whatever the arrival order:
``(RETURNED, g, cohort, offset, type)``, users of the cohort who sent the type in period
cohort + offset (the classic triangle), and ``(LAST_RETURN, g, cohort, offset, type)``,
users whose latest such period is cohort + offset (the rolling one, a suffix sum at query
time, as for activity).
"""

from __future__ import annotations

from collections import Counter

from retention_tracker.streams.calendar import GRANULARITIES, period_of_day, periods_of_days
from retention_tracker.streams.counters import Cell, Measure
from retention_tracker.streams.user_state import UserState

_RETURNED, _LAST_RETURN = Measure.RETURNED, Measure.LAST_RETURN


def add_return_contributions(contrib: Counter[Cell], state: UserState,
                             near: frozenset[int] | None, sign: int = 1) -> None:
    """The user's returning-event counters, times ``sign``; with ``near`` (the days that
    changed) the classic cells of the periods holding them only (the rolling cell is one
    per user and type: always given)."""
    for g in GRANULARITIES:
        cohort = period_of_day(state.first_day, g)
        moved = periods_of_days(near, g) if near is not None else None
        for kind, days in state.returns:
            periods = periods_of_days(days, g)
            for period in periods if moved is None else periods & moved:
                contrib[_RETURNED, g, cohort, period - cohort, kind] += sign
            contrib[_LAST_RETURN, g, cohort, max(periods) - cohort, kind] += sign


def changed_return_days(old: UserState, new: UserState) -> set[int]:
    """The days on which a type's returning events differ between two states."""
    before, after = dict(old.returns), dict(new.returns)
    changed: set[int] = set()
    for kind in before.keys() | after.keys():
        changed |= before.get(kind, frozenset()) ^ after.get(kind, frozenset())
    return changed
