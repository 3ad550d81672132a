"""Satisfaction (METRICS.md §8): survey answers -> NPS per period, cohort, segment, and for
churned against retained users. Pure: the plan calls ``add_answers`` and
``add_nps_contributions``, the queries ``nps_rows`` and friends.

A user's answer to a survey in a period (week, month, year) is their latest score in it
(equal times: the larger event_id). The state keeps, per survey and local day, the latest
answer of that day (``user_state.Answer``): the latest of a period is the latest of its
days, so any arrival order gives the same answer. An answer makes no one active: it counts
in the period it was given, in the user's cohort (if the user has activity) and segments,
and as **retained** when the user is active in the next period, **churned** otherwise. That
flag moves when activity of the next period arrives, so it is part of the user's
contributions like any other counter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from retention_tracker.streams.calendar import AppCalendar, period_of_day, periods_of_days
from retention_tracker.streams.counters import Cell, Measure
from retention_tracker.streams.events import DEFAULT_SURVEY, Event
from retention_tracker.streams.user_state import Answer, UserState

#: The periods NPS is given for (the KPI periods).
NPS_PERIODS = ("week", "month", "year")
#: Score classes, as stored: 0-6 detractor, 7-8 passive, 9-10 promoter.
DETRACTOR, PASSIVE, PROMOTER = 0, 1, 2
CLASS_NAMES = {DETRACTOR: "detractors", PASSIVE: "passives", PROMOTER: "promoters"}
#: The groups of ``by=churn``: answered in P, then active in P+1 (retained) or not.
CHURN_GROUPS = ("retained", "churned")
_NPS, _NPS_COHORT = Measure.NPS, Measure.NPS_COHORT


def score_class(score: int) -> int:
    return PROMOTER if score >= 9 else PASSIVE if score >= 7 else DETRACTOR


def add_answers(answers: tuple[Answer, ...], events: Iterable[Event], calendar: AppCalendar
                ) -> tuple[Answer, ...]:
    """The answers kept after these survey events: per (survey, day), the latest by
    (ts, event_id), sorted by (survey, day)."""
    kept: dict[tuple[str, int], Answer] = {(a[0], a[1]): a for a in answers}
    for event in events:
        survey = event.survey or DEFAULT_SURVEY
        key = (survey, calendar.day_of(event.ts_ms))
        found = kept.get(key)
        if found is None or (event.ts_ms, event.event_id) > (found[2], found[3]):
            kept[key] = (*key, event.ts_ms, event.event_id, event.score or 0)
    return tuple(kept[key] for key in sorted(kept))


def latest_per_period(answers: Iterable[Answer], granularity: str
                      ) -> dict[tuple[str, int], int]:
    """(survey, period) -> the score of the latest answer in it."""
    latest: dict[tuple[str, int], tuple[int, str, int]] = {}
    for survey, day, ts_ms, event_id, score in answers:
        key = (survey, period_of_day(day, granularity))
        found = latest.get(key)
        if found is None or (ts_ms, event_id) > found[:2]:
            latest[key] = (ts_ms, event_id, score)
    return {key: found[2] for key, found in latest.items()}


def add_nps_contributions(contrib: Counter[Cell], state: UserState,
                          near: frozenset[int] | None, sign: int = 1) -> None:
    """What the user's answers add to the NPS counters: per granularity, ``(NPS, g, period,
    class, retained, survey)`` and, for a user with a cohort, ``(NPS_COHORT, g, cohort,
    offset, class, survey)``. With ``near`` (the days that changed), only the periods a
    change on those days can move: theirs (an answer) and the ones before (the retained
    flag). Each count is added times ``sign`` (-1: subtracted, as plan.user_contributions
    does for the old state)."""
    seen = state.seen
    for g in NPS_PERIODS:
        active = periods_of_days(state.active_days, g)
        cohort = period_of_day(state.first_day, g) if seen else 0
        moved = None
        if near is not None:
            moved = periods_of_days(near, g)
            moved |= {period - 1 for period in moved}
        for (survey, period), score in latest_per_period(state.answers, g).items():
            if moved is not None and period not in moved:
                continue
            kind = score_class(score)
            contrib[_NPS, g, period, kind, int(period + 1 in active), survey] += sign
            if seen:
                contrib[_NPS_COHORT, g, cohort, period - cohort, kind, survey] += sign


# ---- figures -------------------------------------------------------------------------------


def nps_figures(counts: Mapping[int, int]) -> dict[str, Any]:
    """answers, promoters, passives, detractors and NPS = (promoters - detractors) /
    answers x 100 (rounded to 2 places; None without answers) from counts by class."""
    promoters, passives = counts.get(PROMOTER, 0), counts.get(PASSIVE, 0)
    detractors = counts.get(DETRACTOR, 0)
    answers = promoters + passives + detractors
    return {
        "answers": answers, "promoters": promoters, "passives": passives,
        "detractors": detractors,
        "nps": round((promoters - detractors) / answers * 100, 2) if answers else None,
    }


Coordinates = tuple[Any, ...]


def nps_rows(cells: Mapping[Coordinates, int], survey: str, labels: Any
             ) -> list[dict[str, Any]]:
    """One row per period from the first to the last with answers to ``survey``, from the
    NPS family (coordinates (period, class, retained, survey)); ``labels(period)`` names a
    period."""
    by_period: dict[int, Counter[int]] = {}
    for (period, kind, _retained, name), n in cells.items():
        if name == survey and n:
            by_period.setdefault(period, Counter())[kind] += n
    if not by_period:
        return []
    return [{"period": labels(period), **nps_figures(by_period.get(period, {}))}
            for period in range(min(by_period), max(by_period) + 1)]


def nps_churn_rows(cells: Mapping[Coordinates, int], survey: str, labels: Any
                   ) -> list[tuple[int, dict[str, Any]]]:
    """(period, row) per period with answers: NPS of those who answered in it and were
    active in the next period (retained) against those who were not (churned)."""
    groups: dict[int, dict[str, Counter[int]]] = {}
    for (period, kind, retained, name), n in cells.items():
        if name == survey and n:
            by_group = groups.setdefault(period, {g: Counter() for g in CHURN_GROUPS})
            by_group["retained" if retained else "churned"][kind] += n
    return [(period, {"period": labels(period),
                      **{g: nps_figures(groups[period][g]) for g in CHURN_GROUPS}})
            for period in sorted(groups)]


def nps_cohort_rows(cells: Mapping[Coordinates, int], survey: str, labels: Any
                    ) -> list[dict[str, Any]]:
    """One row per cohort with answers to ``survey`` (from the NPS_COHORT family,
    coordinates (cohort, offset, class, survey)): its users' answers in every period."""
    by_cohort: dict[int, Counter[int]] = {}
    for (cohort, _offset, kind, name), n in cells.items():
        if name == survey and n:
            by_cohort.setdefault(cohort, Counter())[kind] += n
    return [{"cohort": labels(cohort), **nps_figures(by_cohort[cohort])}
            for cohort in sorted(by_cohort)]


def surveys_of(cells: Mapping[Coordinates, int]) -> list[str]:
    """The survey names with answers in an NPS family."""
    return sorted({c[-1] for c, n in cells.items() if n})
