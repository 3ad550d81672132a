"""The figures of counters: the arithmetic of METRICS.md on counters already read. A
triangle's rows, a day's figures, a period's KPIs, the headline of a triangle, the win-back
and pipeline figures of the statistics: each function takes one family (or the
statistics) and knows no report. Which families a report is made of, and which of these
rows it shows, is ``streams/builders.py``'s job.

Pure functions over the counters the plan maintains (see plan.user_contributions), named by
the cells of ``streams/counters.py``: a daily mapping is keyed ``(measure, day[, currency])``,
a period family by its coordinates (``(cohort,)``, ``(cohort, offset)``, ...). The query
module reads them from Redis and parses the stored names (``state/schema.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import accumulate
from typing import Any

from retention_tracker.streams.calendar import (
    MS_PER_DAY,
    AppCalendar,
    date_to_day,
    day_to_date,
    period_label,
    period_of_day,
)
from retention_tracker.streams.catalogue import (
    CURRENCY_FIGURES,
    DAILY_FIGURES,
    KPIS,
    MONEY,
    Count,
    DailyFigure,
    Difference,
    Edges,
    Kpi,
    PeriodCount,
    Ratio,
    terms,
    with_inputs,
)
from retention_tracker.streams.counters import Cell, Measure, Stat
from retention_tracker.streams.events import FORWARD_CAUSES
from retention_tracker.streams.nps import nps_figures
from retention_tracker.streams.reports import CohortRow, MoneyRow
from retention_tracker.streams.segments import money

Coordinates = tuple[Any, ...]  # of one counter in its family: (cohort, offset), (period,) ...

KINDS = ("classic", "rolling")
KPI_PERIODS = ("week", "month", "year")  # the periods period KPIs are given for


def rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def iso_time(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")


def days_with_data(daily: Mapping[Cell, int]) -> list[int]:
    """The days with an active user."""
    return [cell[1] for cell, v in daily.items() if cell[0] is Measure.DAU and v > 0]


def last_day_with_data(daily: Mapping[Cell, int]) -> int | None:
    days = days_with_data(daily)
    return max(days) if days else None


def cohort_rows(
    sizes: Mapping[Coordinates, int],
    cells: Mapping[Coordinates, int],
    kind: str,
    granularity: str,
    bounds: Bounds,
    windows24: bool = False,
) -> list[CohortRow]:
    """Rows of the cohort triangle. ``sizes`` is the COHORT_SIZE family; ``cells`` the
    CLASSIC family (users of cohort c active in c+N) for classic, LAST_ACTIVE (users of c
    last active in c+N) for rolling. With ``windows24`` (daily cohorts), the cells are
    the 24-hour windows' (WINDOW24, LAST_WINDOW24: streams/windows24.py): a row runs to
    the last day with data or to its latest window if later (a DST day), and cell N is
    complete at the end of the cohort's day plus (N+1) x 24h (METRICS.md §4)."""
    by_cell: dict[int, dict[int, int]] = {}
    for (cohort, offset), count in cells.items():
        by_cell.setdefault(cohort, {})[offset] = count
    rows = []
    for cohort, size, width in cohort_frames(sizes, granularity, bounds):
        found = by_cell.get(cohort, {})
        if windows24:
            width = max(width, max((n for n, v in found.items() if v), default=-1) + 1)
        if kind == "classic":
            counts = [found.get(n, 0) for n in range(width)]
        else:
            # last-active offsets never pass the app's last period, so a suffix sum will do
            counts, running = [0] * width, 0
            for n in range(width - 1, -1, -1):
                running += found.get(n, 0)
                counts[n] = running
        rows.append(CohortRow(
            cohort, period_label(cohort, granularity), size, tuple(counts),
            tuple(rate(c, size) for c in counts),
            _completeness(bounds, cohort, granularity, width, windows24)))
    return rows


@dataclass(frozen=True, slots=True)
class Bounds:
    """What bounds a triangle's rows, retention or money, and says which cells have ended:
    the app's calendar, now, the app's last day with data (None: no data, no rows) and the
    cohorts asked for (those of the periods of ``date_from`` .. ``date_to``, each optional)."""

    calendar: AppCalendar
    now_ms: int
    last_day: int | None
    date_from: date | None = None
    date_to: date | None = None


def cohort_frames(sizes: Mapping[Coordinates, int], granularity: str, bounds: Bounds
                  ) -> list[tuple[int, int, int]]:
    """(cohort period, size, offsets up to the app's last period with data) of each
    non-empty cohort within ``bounds``, oldest first."""
    if bounds.last_day is None:
        return []
    last_period = period_of_day(bounds.last_day, granularity)
    low = period_of_day(date_to_day(bounds.date_from), granularity) if bounds.date_from else None
    high = period_of_day(date_to_day(bounds.date_to), granularity) if bounds.date_to else None
    return [(cohort, sizes[cohort,], last_period - cohort + 1)
            for cohort in sorted(c for (c,), size in sizes.items() if size > 0)
            if (low is None or cohort >= low) and (high is None or cohort <= high)]


def window_sizes(window0: Mapping[Coordinates, int]) -> Counter[Coordinates]:
    """The daily cohorts' sizes from their 24-hour windows' classic cells: every user of a
    cohort has an activity in window 0 (its first event)."""
    return Counter({(cohort,): v for (cohort, n), v in window0.items() if n == 0})


def _completeness(bounds: Bounds, cohort: int, granularity: str, width: int,
                  windows24: bool) -> tuple[bool, ...]:
    """Whether each cell of a row has ended by now: its period, or for 24-hour windows the
    end of the cohort's day plus (N+1) x 24h."""
    calendar = bounds.calendar
    if windows24:
        day_end = calendar.period_end_ms(cohort, "day")
        ends = [day_end + (n + 1) * MS_PER_DAY for n in range(width)]
    else:
        ends = [calendar.period_end_ms(cohort + n, granularity) for n in range(width)]
    return tuple(end_ms <= bounds.now_ms for end_ms in ends)


def edges_up_to(daily: Mapping[Cell, int], measure: Measure, day: int) -> int:
    """WAU/MAU from their edge counters (plan._window_edges): the sum of edges up to day."""
    return sum(v for cell, v in daily.items() if cell[0] is measure and cell[1] <= day)


def day_summary(app: str, day: int, daily: Mapping[Cell, int]) -> dict[str, Any]:
    """The day's figures (streams/catalogue.py): the DAILY_FIGURES, each from its
    derivation, then the CURRENCY_FIGURES per currency."""

    def count(how: Count | Edges | PeriodCount, per_currency: bool) -> int:
        if isinstance(how, Count):
            return int(daily.get((how.measure, day), 0))
        if isinstance(how, Edges):
            return edges_up_to(daily, how.measure, day)
        raise TypeError(f"a daily figure counts a day's counters, not {how}")

    out: dict[str, Any] = {"app": app, "date": day_to_date(day).isoformat()}
    out.update(derive(DAILY_FIGURES, count))
    out.update(_money_of_day(daily, day, out))
    return out


Counting = Callable[[Count | Edges | PeriodCount, bool], Any]


def derive(figures: Sequence[DailyFigure] | Sequence[Kpi], count: Counting) -> dict[str, Any]:
    """Each of ``figures`` (a row's, in declaration order) from its derivation: a counter
    read by ``count`` (told whether the figure is money: then per currency, {currency:
    units}), a ratio or a difference of the figures before it or of counters."""
    out: dict[str, Any] = {}

    def value(term: str | PeriodCount) -> Any:
        return out[term] if isinstance(term, str) else count(term, False)

    for figure in figures:
        how = figure.derived
        if isinstance(how, Ratio):
            whole = value(how.whole)
            out[figure.key] = rate(value(how.part), whole) if whole else how.empty
        elif isinstance(how, Difference):
            minuend, subtrahend = out[how.minuend], out[how.subtrahend]
            out[figure.key] = (
                {c: v - subtrahend.get(c, 0) for c, v in minuend.items()
                 if v != subtrahend.get(c, 0)} if figure.unit == MONEY
                else minuend - subtrahend)
        else:
            out[figure.key] = count(how, figure.unit == MONEY)
    return out


def headline(rows: Sequence[CohortRow], offset: int, cohorts: int = 7
             ) -> tuple[float, float | None] | None:
    """Day-N classic retention of the latest daily cohort whose day N is complete, and the
    mean over the ``cohorts`` such cohorts before it (METRICS.md §4 "Headline D1/D7/D30"):
    the latest is left out of its own baseline, so a drop is not diluted by itself. The
    mean is over fewer cohorts when fewer came before, None when none did."""
    done = _complete_at(rows, offset)
    if not done:
        return None
    latest = done[-1]
    before = [r.counts[offset] / r.size for r in done[-cohorts - 1:-1]]
    baseline = round(sum(before) / len(before), 4) if before else None
    return rate(latest.counts[offset], latest.size), baseline


def headline_cohort_size(rows: Sequence[CohortRow], offset: int) -> int | None:
    """Users of the cohort the headline day-N figure is of (alerts ignore small ones)."""
    done = _complete_at(rows, offset)
    return done[-1].size if done else None


def _complete_at(rows: Sequence[CohortRow], offset: int) -> list[CohortRow]:
    """The cohorts (oldest first) whose day ``offset`` has ended."""
    return [r for r in rows if len(r.complete) > offset and r.complete[offset]]


MONEY_KINDS = ("ltv", "payer_conversion", "roas")


def money_rows(sizes: Mapping[Coordinates, int], cells: Mapping[Coordinates, int],
               costs: Mapping[Coordinates, int], kind: str, granularity: str, currency: str,
               bounds: Bounds) -> list[MoneyRow]:
    """Cohort curves of money (METRICS.md §5): cumulative LTV or ROAS. ``cells`` is the
    LTV family (revenue units of cohort c in period c+N, per currency: ``currency``'s are
    used), ``costs`` the COST family."""
    rows = []
    for cohort, size, cumulative, complete in _cumulative_rows(
            sizes, {k: v for k, v in cells.items() if k[2] == currency}, granularity, bounds):
        cost = costs.get((cohort,), 0)
        values = (tuple(money(units, size) for units in cumulative) if kind == "ltv"
                  else tuple(float(round(Decimal(units) / cost, 4)) if cost else None
                             for units in cumulative))
        rows.append(MoneyRow(cohort, period_label(cohort, granularity), size,
                             money(cost, size) if cost else None,
                             tuple(money(units) for units in cumulative), values, complete,
                             roas=kind == "roas"))
    return rows


def conversion_rows(sizes: Mapping[Coordinates, int], first_payments: Mapping[Coordinates, int],
                    granularity: str, bounds: Bounds) -> list[CohortRow]:
    """Payer conversion (METRICS.md §5): the share of each cohort that has paid by period
    c+N, from FIRST_PAYMENT (users of c first paying in c+N)."""
    return [CohortRow(cohort, period_label(cohort, granularity), size, cumulative,
                      tuple(rate(c, size) for c in cumulative), complete)
            for cohort, size, cumulative, complete in _cumulative_rows(
                sizes, first_payments, granularity, bounds)]


def _cumulative_rows(sizes: Mapping[Coordinates, int], cells: Mapping[Coordinates, int],
                     granularity: str, bounds: Bounds
                     ) -> list[tuple[int, int, tuple[int, ...], tuple[bool, ...]]]:
    """(cohort, size, cumulative sums of ``cells`` by offset, completeness) of each row of
    a money triangle, whose frame (cohorts, widths, completeness) is the retention one."""
    by_cohort: dict[int, dict[int, int]] = {}
    for coordinates, value in cells.items():
        by_cohort.setdefault(coordinates[0], {})[coordinates[1]] = value
    return [(cohort, size,
             tuple(accumulate(by_cohort.get(cohort, {}).get(n, 0) for n in range(width))),
             _completeness(bounds, cohort, granularity, width, windows24=False))
            for cohort, size, width in cohort_frames(sizes, granularity, bounds)]


def revenue_currencies(daily: Mapping[Cell, int], first_day: int | None = None) -> list[str]:
    """The currencies with revenue (from ``first_day`` on), sorted."""
    return sorted({cell[2] for cell, v in daily.items() if cell[0] is Measure.REVENUE and v
                   and (first_day is None or cell[1] >= first_day)})


def _money_of_day(daily: Mapping[Cell, int], day: int, figures: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """The day's CURRENCY_FIGURES (revenue, ARPDAU, ARPPU), per currency, from its revenue
    counters and the day's ``figures`` (``day_summary``) they are divided by."""
    revenue = dict(sorted((cell[2], v) for cell, v in daily.items()
                          if cell[0] is Measure.REVENUE and cell[1] == day and v))
    out: dict[str, Any] = {}
    for figure in CURRENCY_FIGURES:
        whole = figures[figure.per] if figure.per is not None else None
        out[figure.key] = (
            {cur: money(units) for cur, units in revenue.items()} if whole is None
            else {cur: money(units, whole) for cur, units in revenue.items()} if whole
            else {})
    return out


def kpi_rows(families: Mapping[Measure, Mapping[Coordinates, int]], granularity: str,
             first: int, last: int, kpis: tuple[Kpi, ...] = KPIS) -> list[dict[str, Any]]:
    """Period KPIs (METRICS.md §6) for periods first..last from the KPI_MEASURES families
    of that granularity: the catalogue's KPIS (or ``kpis`` only, from what they are
    derived from), each from its derivation; money per currency, non-zero ones only."""
    needed = with_inputs(kpis)
    rows = []
    for period in range(first, last + 1):
        found = derive(needed, _period_counter(families, period))
        rows.append({"period": period_label(period, granularity),
                     **{k.key: _money_out(found[k.key]) if k.unit == MONEY else found[k.key]
                        for k in kpis}})
    return rows


def _period_counter(families: Mapping[Measure, Mapping[Coordinates, int]], period: int
                    ) -> Counting:
    """Reads a KPI's counters (catalogue.PeriodCount) of ``period`` in ``families``."""

    def count(how: Count | Edges | PeriodCount, per_currency: bool) -> Any:
        if not isinstance(how, PeriodCount):
            raise TypeError(f"a period KPI counts a period's counters, not {how}")
        cell = _period_cell(how, period)
        family = families[how.measure]
        if per_currency:
            return {c[-1]: v for c, v in family.items() if c[:-1] == cell and v}
        return family.get(cell, 0)

    return count


def _period_cell(how: PeriodCount, period: int) -> Coordinates:
    """The cell of a KPI's counter for ``period`` (per currency, one more coordinate)."""
    number = period - 1 if how.previous else period
    return (number, 0) if how.own_cohort else (number,)


def kpi_cells(kpis: Sequence[Kpi], period: int, currencies: Sequence[str]
              ) -> dict[Measure, list[Coordinates]]:
    """The counter cells computing ``kpis`` of ``period`` reads (those of the KPIs they are
    derived from too), a money counter's in each of ``currencies``: what to read from Redis
    when only those KPIs of one period are wanted (the live snapshot's current period)."""
    cells: dict[Measure, dict[Coordinates, None]] = {}
    for kpi in with_inputs(tuple(kpis)):
        for term in terms(kpi.derived):
            if isinstance(term, PeriodCount):
                cell = _period_cell(term, period)
                per_currency = term is kpi.derived and kpi.unit == MONEY
                family = cells.setdefault(term.measure, {})  # read, even with no currency
                for wanted in [(*cell, c) for c in currencies] if per_currency else [cell]:
                    family[wanted] = None
    return {measure: list(wanted) for measure, wanted in cells.items()}


def _money_out(units: Mapping[str, int]) -> dict[str, float]:
    return {currency: money(v) for currency, v in sorted(units.items())}


# ---- figures of the statistics (win-back, the pipeline), the current NPS, RPR ----------

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
