"""The reports of figures: which families each report (and the live snapshot of
/metrics) is made of, and which rows of ``streams/figures.py`` it shows, flagged complete
once they have ended. Counters already read (with "now" and the app's calendar) in, the
report or its parts out: ``Triangle`` and ``LiveReads`` name the families that
``state/queries.py`` reads, which checks the parameters and does the I/O; nothing here
does, so each builder is tested with plain values. The arithmetic of one family is
``streams/figures.py``'s."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from retention_tracker.streams.calendar import (
    AppCalendar,
    day_to_date,
    period_label,
    period_of_day,
)
from retention_tracker.streams.catalogue import CALENDAR, COHORT_FAMILY, KPI_SPLITS
from retention_tracker.streams.counters import Cell, Measure, Stat
from retention_tracker.streams.figures import (
    KINDS,
    Bounds,
    Coordinates,
    cohort_rows,
    conversion_rows,
    current_nps,
    day_summary,
    forwarded_figures,
    headline,
    headline_cohort_size,
    iso_time,
    kpi_cells,
    kpi_rows,
    last_day_with_data,
    money_rows,
    pipeline_counts,
    rpr_figures,
    winback_counts,
    winback_figures,
    window_sizes,
)
from retention_tracker.streams.nps import (
    nps_churn_rows,
    nps_cohort_rows,
    nps_rows,
)
from retention_tracker.streams.reports import (
    AppFigures,
    CohortRow,
    MoneyRow,
    PipelineReport,
    TriangleRow,
)

Family = Mapping[Coordinates, int]  # one period family, read and parsed to coordinates

HEADLINE_DAYS = (1, 7, 30)
#: the headline's baseline: the mean over this many latest complete cohorts (§4)
HEADLINE_COHORTS = 7


def headline_figures(sizes: Family, cells: Family, daily: Mapping[Cell, int],
                     calendar: AppCalendar, now: int) -> dict[str, Any]:
    """D1/D7/D30 of the latest complete daily cohort and the mean of the 7 latest (§4),
    from the daily cohorts' sizes and CLASSIC cells and the daily measures."""
    rows = cohort_rows(sizes, cells, "classic", "day",
                       Bounds(calendar, now, headline_last_day(daily, calendar, now)))
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


@dataclass(frozen=True, slots=True)
class Triangle:
    """A cohort triangle asked for (METRICS.md §4, §5): what it counts (``kind``; in
    calendar periods or 24-hour ``window``s; on any activity or, with ``returning``, on
    that event type only), hence the families it is built from: ``sizes``, ``cells`` and
    ``costs``, the ones ``state/queries.cohort_report`` reads."""

    kind: str
    granularity: str
    window: str = CALENDAR
    returning: str | None = None

    @property
    def sizes(self) -> Measure:
        """The cohorts' sizes: COHORT_SIZE, or in 24-hour windows the classic cells (every
        user of a cohort is active in its window 0)."""
        if self.window != CALENDAR:
            return COHORT_FAMILY[self.window, "classic"].measure
        return Measure.COHORT_SIZE

    @property
    def cells(self) -> Measure:
        if self.window != CALENDAR or (self.kind in KINDS and self.returning is None):
            return COHORT_FAMILY[self.window, self.kind].measure
        if self.returning is not None:
            return Measure.RETURNED if self.kind == "classic" else Measure.LAST_RETURN
        return Measure.FIRST_PAYMENT if self.kind == "payer_conversion" else Measure.LTV

    @property
    def costs(self) -> Measure | None:
        return Measure.COST if self.kind == "roas" else None

    @property
    def in_currency(self) -> bool:
        """LTV and ROAS are amounts of one currency; the others count users."""
        return self.kind in ("ltv", "roas")

    def rows(self, sizes: Family, cells: Family, costs: Family, currency: str | None,
             bounds: Bounds) -> list[TriangleRow]:
        """The triangle's rows from its families as read (``costs`` empty but for ROAS;
        ``currency``: LTV's and ROAS's, None for the others)."""
        if self.kind == "payer_conversion":
            return list(conversion_rows(sizes, cells, self.granularity, bounds))
        if self.kind not in KINDS:
            assert currency is not None, "LTV and ROAS are in one currency"
            return list(money_rows(sizes, cells, costs, self.kind, self.granularity,
                                   currency, bounds))
        if self.window != CALENDAR:
            return list(cohort_rows(window_sizes(sizes), cells, self.kind, self.granularity,
                                    bounds, windows24=True))
        if self.returning is not None:
            cells = Counter({(c, n): v for (c, n, t), v in cells.items()
                             if t == self.returning})
        return list(cohort_rows(sizes, cells, self.kind, self.granularity, bounds))


def live_span(cohort_days: int) -> int:
    """How many daily cohorts back the live figures read: the METRICS_COHORT_DAYS shown,
    and at least what the headline needs, D30 of the latest complete cohort (31 days back)
    and of the 7 before it: 39 days."""
    return max(cohort_days, max(HEADLINE_DAYS) + HEADLINE_COHORTS + 2)


@dataclass(frozen=True, slots=True)
class LiveReads:
    """The counters one app's live figures are built from (``app_figures``), as
    ``state/queries.live_figures`` reads them: cells of the daily cohorts of the last
    ``live_span`` days, or of the shown ones (the last METRICS_COHORT_DAYS) where said."""

    daily: Mapping[Cell, int]  # today's daily measures, every day's edges and revenue
    sizes: Family  # COHORT_SIZE
    cells: Mapping[str, Family]  # kind -> the calendar cells (CLASSIC, LAST_ACTIVE)
    windows24: Mapping[str, Family]  # kind -> the 24-hour windows' cells, shown cohorts
    returned: Mapping[str, Family]  # RETURN_EVENTS type -> RETURNED cells, shown cohorts
    ltv: Mapping[str, Family]  # currency with revenue in the shown days -> its LTV cells
    costs: Family  # COST, shown cohorts
    # week, month, year -> the current period's PERIOD_REVENUE, LTV, PERIOD_PAYERS and
    # FIRST_PAYMENT cells (what the catalogue's KPI_SPLITS are derived from)
    periods: Mapping[str, Mapping[Measure, Family]]
    nps: Mapping[str, Family]  # week, month, year -> the NPS family
    due_now: Mapping[int, int]  # threshold -> users due but not yet handled


def app_figures(app: str, read: LiveReads, stats: Mapping[Cell, int], calendar: AppCalendar,
                now: int, *, cohort_days: int, currency: str, thresholds: Sequence[int]
                ) -> AppFigures:
    """One app's figures on /metrics (the collector's snapshot): today's summary; the shown
    daily cohorts' retention (classic and rolling, in days and in 24-hour windows, on each
    returning event), LTV and ROAS (in ``currency``, the app's, that of install costs); the
    headline; the current periods' money and NPS; win-back."""
    today = calendar.day_of(now)
    first_shown = today - cohort_days + 1
    shown = day_to_date(first_shown)

    def recent(kind: str, sizes: Family, cells: Family, since: date | None = None,
               windows24: bool = False) -> tuple[CohortRow, ...]:
        return tuple(cohort_rows(sizes, cells, kind, "day",
                                 Bounds(calendar, now, today, since), windows24))

    rows = {kind: recent(kind, read.sizes, cells) for kind, cells in read.cells.items()}
    sizes24 = window_sizes(read.windows24["classic"])
    money: dict[str, dict[str, tuple[MoneyRow, ...]]] = {"ltv": {}, "roas": {}}
    for found, cells in read.ltv.items():  # ROAS in the currency of install costs only
        for kind in ("ltv", "roas") if found == currency else ("ltv",):
            money[kind][found] = tuple(money_rows(read.sizes, cells, read.costs, kind, "day",
                                                  found, Bounds(calendar, now, today, shown)))
    return AppFigures(
        winback=winback_figures(stats, app, thresholds, read.due_now),
        winback_counts=winback_counts(stats, app, thresholds),
        summary=day_summary(app, today, read.daily),
        cohorts={kind: tuple(r for r in kind_rows if r.period >= first_shown)
                 for kind, kind_rows in rows.items()},
        cohorts24={kind: recent(kind, sizes24, cells, windows24=True)
                   for kind, cells in read.windows24.items()},
        money=money,
        headline={n: headline(rows["classic"], n, HEADLINE_COHORTS) for n in HEADLINE_DAYS},
        headline_size={n: headline_cohort_size(rows["classic"], n) for n in HEADLINE_DAYS},
        periods={g: current_period_money(families, g, today)
                 for g, families in read.periods.items()},
        nps={g: current_nps(cells, g, today) for g, cells in read.nps.items()},
        returning={event_type: recent("classic", read.sizes, Counter(
            {(c, n): v for (c, n, _), v in typed.items()}), shown)
            for event_type, typed in read.returned.items()},
    )


def current_period_cells(granularity: str, today: int, currencies: Sequence[str]
                         ) -> dict[Measure, list[Coordinates]]:
    """The counter cells ``current_period_money`` reads, in each of ``currencies``."""
    return kpi_cells(KPI_SPLITS, period_of_day(today, granularity), currencies)


def current_period_money(families: Mapping[Measure, Family], granularity: str, today: int
                         ) -> dict[str, Any]:
    """The current week, month or year's revenue and payers split between its new and its
    returning users (METRICS.md §6): its KPI row of the catalogue's KPI_SPLITS."""
    period = period_of_day(today, granularity)
    return kpi_rows(families, granularity, period, period, KPI_SPLITS)[0]


def nps_figures_by(by: str, survey: str, period: str, cells: Family, cohort_cells: Family,
                   calendar: AppCalendar, now: int) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of an NPS report (METRICS.md §8) of ``survey`` by ``period``: per period
    (``by`` "period"), per cohort ("cohort", from ``cohort_cells``, the NPS_COHORT family)
    or per period split between answerers active in the next period and the others
    ("churn", each flagged complete once the next period has ended); and the label of the
    period holding now when a row is of it (its figures are live numbers)."""

    def label(number: int) -> str:
        return period_label(number, period)

    if by == "cohort":
        rows = nps_cohort_rows(cohort_cells, survey, label)
    elif by == "churn":
        rows = [{**row, "complete": calendar.period_end_ms(number + 1, period) <= now}
                for number, row in nps_churn_rows(cells, survey, label)]
    else:
        rows = nps_rows(cells, survey, label)
    current = label(period_of_day(calendar.day_of(now), period))
    live = current if by != "cohort" and any(r["period"] == current for r in rows) else None
    return rows, live


def rpr_by_cohort(per_cohort: Family, sizes: Family, granularity: str
                  ) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
    """Lifetime repeat purchase rate overall and of every non-empty cohort (buyers or not),
    from the REPEAT_BUYERS family (coordinates (cohort, 1): buyers, (cohort, 2): repeat
    buyers) and the cohorts' sizes."""
    cohorts = sorted(c for (c,), size in sizes.items() if size > 0)
    lifetime = rpr_figures(sum(v for (_, n), v in per_cohort.items() if n == 1),
                           sum(v for (_, n), v in per_cohort.items() if n == 2))
    return lifetime, tuple({"cohort": period_label(c, granularity),
                            **rpr_figures(per_cohort.get((c, 1), 0), per_cohort.get((c, 2), 0))}
                           for c in cohorts)


def pipeline_figures(stats: Mapping[Cell, int], watermarks: Mapping[int, int], now: int
                     ) -> PipelineReport:
    """Pipeline health from the statistics (in the stored names' order, as always shown):
    accepted events by app and type, rejects by reason, duplicates by app, forwarded
    events by app and cause, and each partition's event-time watermark."""
    # the apps sorted: a set's order changed with the process's hash seed
    forwarded = {app: forwarded_figures(stats, app)
                 for app in sorted({key[1] for key in stats if key[0] is Stat.ACCEPTED})}
    accepted, rejected, duplicates = pipeline_counts(stats.items())
    marks = {str(shard): iso_time(int(ms)) for shard, ms in sorted(watermarks.items())}
    return PipelineReport(iso_time(now), accepted, rejected, duplicates, forwarded, marks)
