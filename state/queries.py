"""The query side shared by the CLI and the HTTP views: reads of Redis counters, handed to
the pure builders of reports.

Both read Redis directly, so reports work with no worker running. Parameters are checked by
``state/params.py``; the reports are built by the pure ``streams/builders.py`` (which
families each is made of) from the figures of ``streams/figures.py``. What is left here is
I/O: each report reads the counters its builder names and hands them over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date
from typing import Any

from retention_tracker.config.settings import Settings, segment_rules
from retention_tracker.state.params import (
    SEGMENT_ATTRIBUTES,
    QueryError,
    check_cohort_query,
    check_window,
    money_currency,
    segment_of,
)
from retention_tracker.state.schema import (
    DAILY_FAMILY,
    WINBACK_STATS,
    family_name,
    field_name,
    field_pattern,
    parse_daily,
    parse_family,
    parse_stats,
)
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.builders import (
    LiveReads,
    Triangle,
    app_figures,
    current_period_cells,
    daily_rows,
    headline_figures,
    kpi_period_rows,
    live_span,
    nps_figures_by,
    pipeline_figures,
    rpr_by_cohort,
)
from retention_tracker.streams.calendar import (
    GRANULARITIES,
    AppCalendar,
    date_to_day,
    utc_now_ms,
)
from retention_tracker.streams.catalogue import (
    CALENDAR,
    COHORT_FAMILY,
    DAY_MEASURES,
    HOURS24,
    KPI_MEASURES,
    RUN_MEASURES,
)
from retention_tracker.streams.counters import Cell, Measure
from retention_tracker.streams.events import (
    DEFAULT_SURVEY,
    SURVEY_NAME_RE,
)
from retention_tracker.streams.figures import (
    KINDS,
    KPI_PERIODS,
    VALUE_SEGMENTS,
    WINBACK_KINDS,
    Bounds,
    Coordinates,
    day_summary,
    days_with_data,
    forwarded_figures,
    iso_time,
    last_day_with_data,
    revenue_currencies,
    rpr_figures,
)
from retention_tracker.streams.figures import winback_figures as build_winback_figures
from retention_tracker.streams.nps import (
    NPS_PERIODS,
    surveys_of,
)
from retention_tracker.streams.plan import ALL_USERS, segments_of
from retention_tracker.streams.reports import (
    AppFigures,
    AppsReport,
    CohortReport,
    DailyReport,
    HeadlineReport,
    KpisReport,
    LiveFigures,
    NpsReport,
    PipelineReport,
    RepeatPurchaseReport,
    SummaryReport,
    ValueSegmentsReport,
)


async def read_daily(store: RedisStore, app: str, segment: str = ALL_USERS) -> Counter[Cell]:
    """An app's daily measures for one segment, parsed to cells."""
    return parse_daily(await store.reads.read_family(app, DAILY_FAMILY, segment))


async def read_measure(store: RedisStore, app: str, measure: Measure, granularity: str | None,
                       segment: str = ALL_USERS) -> Counter[Coordinates]:
    """One period family of an app's segment (granularity None: an app-wide one, such as
    the lapse summaries), parsed to coordinates."""
    found = await store.reads.read_family(app, family_name(measure, granularity), segment)
    return parse_family(measure, found)


async def read_cells(store: RedisStore, app: str, measure: Measure, granularity: str,
                     cells: Sequence[Coordinates]) -> Counter[Coordinates]:
    """Chosen counters of one period family (all users), parsed to coordinates."""
    fields = [field_name(measure, *c) for c in cells]
    found = await store.reads.read_fields(app, family_name(measure, granularity), fields)
    return parse_family(measure, found)


async def now_ms(store: RedisStore, settings: Settings) -> int:
    """'Now' of the contract: the wall clock live, the event-time watermark in replays."""
    if settings.clock == "event":
        mark = await store.reads.watermark_ms()
        if mark is not None:
            return mark
    return utc_now_ms()


async def app_calendar(store: RedisStore, settings: Settings, app: str) -> AppCalendar:
    zones = await store.registry.app_timezones()
    if app not in zones:
        known = ", ".join(sorted(zones)) or "none yet"
        raise QueryError(f"no data for app {app!r} (apps with data: {known})")
    return AppCalendar(zones[app])


def _segment_shown(segment: str) -> str | None:
    """A report names its segment, unless it is all users."""
    return None if segment == ALL_USERS else segment


async def cohort_report(
    store: RedisStore,
    settings: Settings,
    app: str,
    granularity: str = "day",
    kind: str = "classic",
    date_from: date | None = None,
    date_to: date | None = None,
    where: Sequence[str] = (),
    currency: str | None = None,
    returning: str | None = None,
    window: str = CALENDAR,
) -> CohortReport:
    """A cohort triangle: retention (classic, rolling; on any activity, or with
    ``returning`` on that event type of RETURN_EVENTS only; in calendar periods, or with
    ``window`` "24h" in 24-hour windows from each user's first event) or money."""
    check_cohort_query(settings, granularity, kind, returning, window)
    check_window(date_from, date_to)
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    triangle = Triangle(kind, granularity, window, returning)

    async def family(measure: Measure) -> Counter[Coordinates]:
        return await read_measure(store, app, measure, granularity, segment)

    last_day = last_day_with_data(await read_daily(store, app, segment))
    sizes = await family(triangle.sizes)
    cells = sizes if triangle.cells is triangle.sizes else await family(triangle.cells)
    costs = await family(triangle.costs) if triangle.costs is not None else Counter()
    shown_currency = (money_currency(settings, app, kind, currency, cells)
                      if triangle.in_currency else None)
    rows = triangle.rows(sizes, cells, costs, shown_currency,
                         Bounds(calendar, now, last_day, date_from, date_to))
    return CohortReport(app, granularity, kind, calendar.timezone, _segment_shown(segment),
                        shown_currency, iso_time(now), tuple(rows), returning,
                        None if window == CALENDAR else window)


async def summary_report(
    store: RedisStore, settings: Settings, app: str, on: date | None = None,
    where: Sequence[str] = (),
) -> SummaryReport:
    """One day's figures. ``complete`` is false while the day has not ended (live numbers);
    win-back figures exist only as live totals, so they carry their own ``winback_as_of``
    whatever the day asked for."""
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    day = date_to_day(on) if on else calendar.day_of(now)
    daily = await read_daily(store, app, segment)
    figures = day_summary(app, day, daily)
    complete = calendar.period_end_ms(day, "day") <= now
    if segment != ALL_USERS:
        return SummaryReport(figures, complete, segment)
    stats = parse_stats(await store.reads.read_stats())
    return SummaryReport(figures, complete, None,
                         await winback_figures(store, settings, app, stats), iso_time(now),
                         forwarded_figures(stats, app))


assert tuple(WINBACK_KINDS) == WINBACK_STATS  # the report's kinds are the stored ones

DAILY_DAYS = 90


async def daily_report(
    store: RedisStore, settings: Settings, app: str, date_from: date | None = None,
    date_to: date | None = None, where: Sequence[str] = (),
) -> DailyReport:
    """The summary of every day in a window (default: the last DAILY_DAYS days with data),
    for charts of DAU against installs. Same figures as ``summary`` day by day."""
    check_window(date_from, date_to)
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    daily = await read_daily(store, app, segment)
    last = date_to_day(date_to) if date_to else last_day_with_data(daily)
    report = DailyReport(app, iso_time(now), calendar.timezone, _segment_shown(segment))
    if last is None:
        return report
    first = (date_to_day(date_from) if date_from
             else max(last - DAILY_DAYS + 1, min(days_with_data(daily), default=last)))
    if last - first + 1 > settings.horizon_days:
        raise QueryError(f"at most {settings.horizon_days} days (HORIZON_DAYS) at a time",
                         "from")
    return replace(report, days=daily_rows(app, daily, first, last, calendar, now))


async def apps_report(store: RedisStore, settings: Settings) -> AppsReport:
    """The apps with data and what the page's pickers offer."""
    zones = await store.registry.app_timezones()
    return AppsReport(tuple({"app": app, "timezone": zones[app],
                             "currency": settings.currency_of(app),
                             "thresholds": list(settings.inactivity_thresholds_of(app))}
                            for app in sorted(zones)),
                      settings.currency, tuple(settings.inactivity_thresholds),
                      tuple(SEGMENT_ATTRIBUTES), tuple(VALUE_SEGMENTS))


async def headline_report(
    store: RedisStore, settings: Settings, app: str, where: Sequence[str] = ()
) -> HeadlineReport:
    """The headline D1/D7/D30 against their baseline, for one segment or all users."""
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    return HeadlineReport(app, iso_time(now), calendar.timezone, _segment_shown(segment),
                          headline_figures(*await _headline_reads(store, app, segment),
                                           calendar, now))


async def _headline_reads(store: RedisStore, app: str, segment: str
                          ) -> tuple[Counter[Coordinates], Counter[Coordinates], Counter[Cell]]:
    """What a segment's headline is built from (builders.headline_figures): the daily
    cohorts' sizes and classic cells, the daily measures."""
    return (await read_measure(store, app, Measure.COHORT_SIZE, "day", segment),
            await read_measure(store, app, Measure.CLASSIC, "day", segment),
            await read_daily(store, app, segment))


async def pipeline_report(store: RedisStore, settings: Settings) -> PipelineReport:
    """Pipeline health from Redis (the same on every worker): accepted events by app and
    type, rejects by reason, duplicates by app, and each partition's event-time watermark."""
    now = await now_ms(store, settings)
    stats = parse_stats(dict(sorted((await store.reads.read_stats()).items())))  # names' order
    marks = {shard: p.watermark_ms for shard, p in
             (await store.reads.partition_progress([])).items() if p.watermark_ms is not None}
    return pipeline_figures(stats, marks, now)


async def winback_figures(
    store: RedisStore, settings: Settings, app: str, stats: Mapping[Cell, int] | None = None
) -> dict[str, Any]:
    """Per threshold: users inactive now, notifications sent, moments found too late to
    publish (expired), false alarms, reactivations and the share of notified users back
    within 7 days, overall, per value segment and per churn type. ``stats``: the counters
    already read, when the caller covers several apps."""
    stats = stats if stats is not None else parse_stats(await store.reads.read_stats())
    thresholds = settings.inactivity_thresholds_of(app)
    due_now = await store.due.due_counts({app: thresholds}, await now_ms(store, settings))
    return build_winback_figures(stats, app, thresholds, due_now[app])


async def kpis_report(
    store: RedisStore, settings: Settings, app: str, period: str = "week",
    where: Sequence[str] = (),
) -> KpisReport:
    if period not in KPI_PERIODS:
        raise QueryError(f"one of {', '.join(KPI_PERIODS)}", "period")
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    families = {
        measure: await read_measure(store, app, measure, period, segment)
        for measure in KPI_MEASURES
    }
    rows = kpi_period_rows(families, period, calendar, now)
    return KpisReport(app, period, calendar.timezone, _segment_shown(segment), tuple(rows))


NPS_BY = ("period", "cohort", "churn")


async def nps_report(
    store: RedisStore, settings: Settings, app: str, period: str = "week",
    survey: str = DEFAULT_SURVEY, where: Sequence[str] = (), by: str = "period",
) -> NpsReport:
    """NPS of one survey (METRICS.md §8) per period, per cohort or for churned against
    retained answerers, from the NPS counters (no scan)."""
    if period not in NPS_PERIODS:
        raise QueryError(f"one of {', '.join(NPS_PERIODS)}", "period")
    if by not in NPS_BY:
        raise QueryError(f"one of {', '.join(NPS_BY)}", "by")
    if not SURVEY_NAME_RE.match(survey):
        raise QueryError(f"{survey!r}: 1-64 chars of [A-Za-z0-9._-]", "survey")
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    cells = await read_measure(store, app, Measure.NPS, period, segment)
    cohort_cells = (await read_measure(store, app, Measure.NPS_COHORT, period, segment)
                    if by == "cohort" else Counter())
    rows, live = nps_figures_by(by, survey, period, cells, cohort_cells, calendar, now)
    return NpsReport(app, period, survey, by, calendar.timezone, _segment_shown(segment),
                     iso_time(now), tuple(surveys_of(cells)), live, tuple(rows))


async def repeat_purchase_report(
    store: RedisStore, settings: Settings, app: str, granularity: str = "month",
    date_from: date | None = None, date_to: date | None = None, where: Sequence[str] = (),
) -> RepeatPurchaseReport:
    """Lifetime RPR overall and per cohort from counters; for a window, from the users'
    purchase records (a scan of user state, not of events)."""
    if granularity not in GRANULARITIES:
        raise QueryError(f"one of {', '.join(GRANULARITIES)}", "granularity")
    check_window(date_from, date_to)
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    per_cohort = await read_measure(store, app, Measure.REPEAT_BUYERS, granularity, segment)
    sizes = await read_measure(store, app, Measure.COHORT_SIZE, granularity, segment)
    report = RepeatPurchaseReport(app, granularity, calendar.timezone, _segment_shown(segment),
                                  *rpr_by_cohort(per_cohort, sizes, granularity))
    if date_from or date_to:
        low = date_to_day(date_from) if date_from else None
        high = date_to_day(date_to) if date_to else None
        rules = segment_rules(settings).for_app(app)
        buyers = repeat = 0
        async for state in store.reads.scan_users(app):
            if segment != ALL_USERS and segment not in segments_of(state, rules):
                continue
            count = state.purchase_count(low, high)
            buyers += count >= 1
            repeat += count >= 2
        report = replace(report, window={
            "from": date_from.isoformat() if date_from else None,
            "to": date_to.isoformat() if date_to else None,
            **rpr_figures(buyers, repeat),
        })
    return report


async def value_segments_report(
    store: RedisStore, settings: Settings, app: str
) -> ValueSegmentsReport:
    """VIP, payers and free users side by side: how many, and how they retain."""
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    segments = []
    for value in VALUE_SEGMENTS:
        sizes, cells, daily = await _headline_reads(store, app, f"value={value}")
        segments.append({"segment": value, "users": sum(sizes.values()),
                         **headline_figures(sizes, cells, daily, calendar, now)})
    return ValueSegmentsReport(app, calendar.timezone, iso_time(now), tuple(segments))


async def live_figures(store: RedisStore, settings: Settings) -> LiveFigures:
    """What /metrics shows, per app (streams/builders.app_figures), from the few fields it
    needs."""
    now = await now_ms(store, settings)
    stats = parse_stats(await store.reads.read_stats())
    apps: dict[str, AppFigures] = {}
    zones = await store.registry.app_timezones()
    # every app's due users in one pass over the due sets (they hold every app's entries)
    due_now = await store.due.due_counts(
        {app: settings.inactivity_thresholds_of(app) for app in zones}, now)
    for app, zone in zones.items():
        calendar = AppCalendar(zone)
        read = await _live_reads(store, settings, app, calendar.day_of(now), due_now[app])
        apps[app] = app_figures(app, read, stats, calendar, now,
                                cohort_days=settings.metrics_cohort_days,
                                currency=settings.currency_of(app),
                                thresholds=settings.inactivity_thresholds_of(app))
    return LiveFigures(now, apps, stats)


async def _live_reads(store: RedisStore, settings: Settings, app: str, today: int,
                      due_now: dict[int, int]) -> LiveReads:
    """The fields an app's live figures are built from (builders.LiveReads); ``due_now``:
    its users due and not yet handled, per threshold (``DueSets.due_counts``)."""
    found = await store.reads.read_fields(app, DAILY_FAMILY,
                                    [field_name(m, today) for m in DAY_MEASURES])
    for measure in (Measure.REVENUE, *RUN_MEASURES):  # every day's: currencies, edge sums
        found.update(await store.reads.read_matching(app, DAILY_FAMILY, field_pattern(measure)))
    daily = parse_daily(found)
    first_shown = today - settings.metrics_cohort_days + 1
    cohorts = range(today - live_span(settings.metrics_cohort_days) + 1, today + 1)
    shown = range(first_shown, today + 1)

    def offsets(days: range, more: int = 0) -> list[Coordinates]:
        return [(c, n) for c in days for n in range(today - c + 1 + more)]

    async def cells(measure: Measure, wanted: Sequence[Coordinates]) -> Counter[Coordinates]:
        return await read_cells(store, app, measure, "day", wanted)

    currencies = revenue_currencies(daily)
    return LiveReads(
        daily=daily,
        sizes=await cells(Measure.COHORT_SIZE, [(c,) for c in cohorts]),
        cells={kind: await cells(COHORT_FAMILY[CALENDAR, kind].measure, offsets(cohorts))
               for kind in KINDS},
        # 24-hour windows: one offset more than the days (a window ends later on a DST day)
        windows24={kind: await cells(COHORT_FAMILY[HOURS24, kind].measure, offsets(shown, 1))
                   for kind in KINDS},
        returned={event_type: await cells(Measure.RETURNED,
                                          [(*cell, event_type) for cell in offsets(shown)])
                  for event_type in settings.return_events},
        ltv={currency: await cells(Measure.LTV, [(*cell, currency) for cell in offsets(shown)])
             for currency in revenue_currencies(daily, first_shown)},
        costs=await cells(Measure.COST, [(c,) for c in shown]),
        periods={g: await _current_period_reads(store, app, g, today, currencies)
                 for g in KPI_PERIODS},
        nps={g: await read_measure(store, app, Measure.NPS, g) for g in NPS_PERIODS},
        due_now=due_now,
    )


async def _current_period_reads(store: RedisStore, app: str, granularity: str, today: int,
                                currencies: list[str]) -> dict[Measure, Counter[Coordinates]]:
    """The few counters that hold the current week, month or year's KPIs split between its
    new and its returning users (builders.current_period_cells names them)."""
    wanted = current_period_cells(granularity, today, currencies)
    return {measure: await read_cells(store, app, measure, granularity, cells)
            for measure, cells in wanted.items()}
