"""The pure builders of the reports: counters already read (with "now" and the app's
calendar) in, report parts out. ``state/queries.py`` checks the parameters and reads the
counters; nothing here does I/O, so each builder is tested with plain values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from retention_tracker.streams.calendar import AppCalendar, period_of_day
from retention_tracker.streams.counters import Cell, Measure, Stat
from retention_tracker.streams.events import FORWARD_CAUSES
from retention_tracker.streams.figures import (
    Coordinates,
    day_summary,
    headline,
    kpi_rows,
    last_day_with_data,
    rate,
)
from retention_tracker.streams.nps import nps_figures

HEADLINE_DAYS = (1, 7, 30)
#: the headline's baseline: the mean over this many latest complete cohorts (§4)
HEADLINE_COHORTS = 7
VALUE_SEGMENTS = ("vip", "payer", "free")
CHURN_TYPES = ("quick", "late")
#: the win-back statistics counted per (threshold, value segment, churn type), as named in
#: the reports (sent, false alarms, reactivated, back within 7 days)
WINBACK_KINDS = {Stat.SENT: "notified", Stat.FALSE_ALARM: "false_alarms",
                 Stat.REACTIVATED: "reactivated", Stat.BACK_WITHIN_7D: "back7"}

WinbackCounts = dict[tuple[int, Stat], dict[str, dict[str, int]]]


def forwarded_figures(stats: Mapping[Cell, int], app: str) -> dict[str, int]:
    """The app's events read away from their user's home partition, by cause (all time):
    exact figures all the same, but a sign that a producer needs fixing."""
    return {cause: stats.get((Stat.FORWARDED, app, cause), 0) for cause in FORWARD_CAUSES}


def winback_counts(stats: Mapping[Cell, int], app: str, thresholds: Sequence[int]
                   ) -> WinbackCounts:
    """(threshold, kind) -> value segment -> churn type -> count, from the win-back
    statistics (sent, false alarms, reactivated, back within 7 days), with every known
    label at zero."""
    counts: WinbackCounts = {
        (days, kind): {seg: dict.fromkeys(CHURN_TYPES, 0) for seg in VALUE_SEGMENTS}
        for days in thresholds for kind in WINBACK_KINDS
    }
    for key, value in stats.items():
        kind = key[0]
        if kind not in WINBACK_KINDS:
            continue
        found_app, days, *labels = key[1:]
        if found_app != app or not labels:
            continue
        by_segment = counts.get((days, kind), {}).get(labels[0])
        if by_segment is not None:  # records from before churn types count as "late"
            churn = labels[1] if len(labels) > 1 else "late"
            by_segment[churn] = by_segment.get(churn, 0) + value
    return counts


def winback_figures(stats: Mapping[Cell, int], app: str, thresholds: Sequence[int],
                    due_now: Mapping[int, int]) -> dict[str, Any]:
    """Per threshold: users inactive now (those marked, plus ``due_now``: due but not yet
    handled), notifications sent, moments found too late to publish (expired), false
    alarms, reactivations and the share of notified users back within 7 days, overall,
    per value segment and per churn type."""
    counts = winback_counts(stats, app, thresholds)

    def figures(days: int, segment: str | None, churn: str | None) -> dict[str, Any]:
        def total(kind: Stat) -> int:
            return sum(n for seg, per in counts[days, kind].items()
                       if segment in (None, seg) for c, n in per.items() if churn in (None, c))

        counted = {name: total(kind) for kind, name in WINBACK_KINDS.items()
                   if kind is not Stat.BACK_WITHIN_7D}
        out: dict[str, float | None] = dict(counted)
        out["back_within_7d_share"] = (  # 0 of 0 notified is no rate: null, shown as -
            rate(total(Stat.BACK_WITHIN_7D), counted["notified"]) if counted["notified"]
            else None)
        return out

    result: dict[str, Any] = {}
    for days in thresholds:
        result[str(days)] = {
            "inactive": stats.get((Stat.INACTIVE, app, days), 0) + due_now[days],
            "expired": stats.get((Stat.EXPIRED, app, days), 0),
            **figures(days, None, None),
            "by_segment": {seg: figures(days, seg, None) for seg in VALUE_SEGMENTS},
            "by_churn_type": {churn: figures(days, None, churn) for churn in CHURN_TYPES},
        }
    return result


def headline_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """D1/D7/D30 of the latest complete daily cohort and the mean of the 7 latest (§4)."""
    out: dict[str, Any] = {}
    for n in HEADLINE_DAYS:
        found = headline(rows, n, HEADLINE_COHORTS)
        out[f"d{n}"] = found[0] if found else None
        out[f"d{n}_mean7"] = found[1] if found else None
    return out


def headline_last_day(daily: Mapping[Cell, int], calendar: AppCalendar, now: int
                      ) -> int | None:
    """How far the headline's cohort rows reach: to today, so that a cohort whose day N has
    ended counts even when no event came after it (§4: when the stream stops, D1 of the
    last cohort is 0, not skipped for an older one), but no further than the last day with
    data plus the largest headline offset (an old history needs no wider rows)."""
    last = last_day_with_data(daily)
    if last is None:
        return None
    return max(last, min(calendar.day_of(now), last + max(HEADLINE_DAYS)))


def daily_rows(app: str, daily: Mapping[Cell, int], first: int, last: int,
               calendar: AppCalendar, now: int) -> tuple[dict[str, Any], ...]:
    """The summary of each day ``first..last``, flagged complete once the day has ended."""
    days = []
    for day in range(first, last + 1):
        figures = day_summary(app, day, daily)
        figures["complete"] = calendar.period_end_ms(day, "day") <= now
        days.append(figures)
    return tuple(days)


def kpi_period_rows(families: Mapping[Measure, Mapping[Coordinates, int]], period: str,
                    calendar: AppCalendar, now: int) -> list[dict[str, Any]]:
    """The KPIs of every period from the first to the last with active users, each flagged
    complete once it has ended (§6: a period that has not ended has live CRR and churn)."""
    periods = [p for (p,), n in families[Measure.ACTIVE].items() if n > 0]
    rows = kpi_rows(families, period, min(periods), max(periods)) if periods else []
    for number, row in enumerate(rows, start=min(periods, default=0)):
        row["complete"] = calendar.period_end_ms(number, period) <= now
    return rows


def pipeline_counts(stats: Iterable[tuple[Cell, int]]
                    ) -> tuple[dict[str, dict[str, int]], dict[str, int], dict[str, int]]:
    """Accepted events by app and type, rejects by reason, duplicates by app, in the order
    ``stats`` comes (the stored names' order, as always shown)."""
    accepted: dict[str, dict[str, int]] = {}
    rejected: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    for key, value in stats:
        if key[0] is Stat.ACCEPTED:
            accepted.setdefault(key[1], {})[key[2]] = value
        elif key[0] is Stat.REJECTED:
            rejected[key[1]] = value
        elif key[0] is Stat.DUPLICATE:
            duplicates[key[1]] = value
    return accepted, rejected, duplicates


def current_nps(cells: Mapping[Coordinates, int], granularity: str, today: int
                ) -> dict[str, dict[str, dict[str, Any]]]:
    """Per survey with answers in the current or the previous week, month or year: the
    current period's NPS so far, and the previous period's answerers split between those
    active in the current period (retained) and the others (churned)."""
    period = period_of_day(today, granularity)
    out: dict[str, dict[str, dict[int, int]]] = {}
    for (number, kind, retained, survey), n in cells.items():
        if number not in (period, period - 1) or not n:
            continue
        group = "current" if number == period else ("retained" if retained else "churned")
        counts = out.setdefault(survey, {}).setdefault(group, {})
        counts[kind] = counts.get(kind, 0) + n
    return {survey: {group: nps_figures(counts) for group, counts in groups.items()}
            for survey, groups in out.items()}


def rpr_figures(buyers: int, repeat: int) -> dict[str, Any]:
    """Buyers, repeat buyers and the repeat purchase rate (METRICS.md §5)."""
    return {"buyers": buyers, "repeat_buyers": repeat, "rpr": rate(repeat, buyers)}
