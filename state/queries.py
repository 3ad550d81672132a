"""The query side shared by the CLI and the HTTP views: Redis counters -> report documents.

Both read Redis directly, so reports work with no worker running.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from retention_tracker.config.settings import Settings, segment_rules
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import (
    GRANULARITIES,
    AppCalendar,
    date_to_day,
    day_to_date,
    period_label,
    utc_now_ms,
)
from retention_tracker.streams.events import CURRENCY_RE, FORWARD_CAUSES
from retention_tracker.streams.figures import (
    KINDS,
    KPI_PERIODS,
    MONEY_KINDS,
    cohort_rows,
    day_summary,
    headline,
    headline_cohort_size,
    iso_time,
    kpi_rows,
    last_day_with_data,
    money_of_day,
    money_rows,
    rate,
)
from retention_tracker.streams.plan import ALL_USERS, segments_of

HEADLINE_DAYS = (1, 7, 30)
_HEADLINE_COHORTS = 7


class QueryError(ValueError):
    """A bad query parameter or an unknown app: shown to the user as one line.

    ``param`` names the parameter at fault the way HTTP spells it (``from``, ``where``); the
    CLI shows it as its flag (``--from``), so neither side names the other's syntax."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def shown(self, prefix: str = "") -> str:
        """The line to show: ``prefix`` is ``"--"`` for the CLI, empty for HTTP."""
        return f"{prefix}{self.param}: {self}" if self.param else str(self)


async def now_ms(store: RedisStore, settings: Settings) -> int:
    """'Now' of the contract: the wall clock live, the event-time watermark in replays."""
    if settings.clock == "event":
        mark = await store.watermark_ms()
        if mark is not None:
            return mark
    return utc_now_ms()


async def app_calendar(store: RedisStore, settings: Settings, app: str) -> AppCalendar:
    zones = await store.app_timezones()
    if app not in zones:
        known = ", ".join(sorted(zones)) or "none yet"
        raise QueryError(f"no data for app {app!r} (apps with data: {known})")
    return AppCalendar(zones[app])


SEGMENT_ATTRIBUTES = ("platform", "country", "campaign", "value")
VALUE_SEGMENTS = ("vip", "payer", "free")


def segment_of(where: Sequence[str] = ()) -> str:
    """``--where attr=value`` -> the segment whose counters the state keeps. One attribute
    at a time: combinations would need counters per combination (README "Segments")."""
    if not where:
        return ALL_USERS
    if len(where) > 1:
        raise QueryError(
            "one segment at a time: the state keeps counters per single attribute value, "
            "not per combination (see README 'Segments')", "where",
        )
    name, sep, value = where[0].partition("=")
    if not sep or name not in SEGMENT_ATTRIBUTES or not value:
        raise QueryError(f"{where[0]!r}: expected one of "
                         f"{', '.join(SEGMENT_ATTRIBUTES)} as attr=value", "where")
    if name == "value" and value not in VALUE_SEGMENTS:
        raise QueryError(f"value=...: one of {', '.join(VALUE_SEGMENTS)}", "where")
    return f"{name}={value}"


def check_window(date_from: date | None, date_to: date | None) -> None:
    """A reversed window is a typo, not an empty answer."""
    if date_from and date_to and date_from > date_to:
        raise QueryError(
            f"{date_from.isoformat()} is after the window's end ({date_to.isoformat()})", "from")




def money_currency(
    settings: Settings, app: str, kind: str, currency: str | None, ltv_cells: Counter[str]
) -> str:
    """The currency of an ltv or roas triangle: one the app has revenue in (or CURRENCY);
    ROAS only in CURRENCY, the currency install costs are kept in (no FX)."""
    currency = currency or settings.currency
    if not CURRENCY_RE.match(currency):
        raise QueryError(f"{currency!r} must be an ISO 4217 code such as USD", "currency")
    if kind == "roas" and currency != settings.currency:
        raise QueryError(
            f"ROAS divides revenue by install costs, which are kept in {settings.currency} "
            f"(CURRENCY); ROAS in {currency} would need exchange rates", "currency")
    known = {k.rsplit(":", 1)[1] for k, v in ltv_cells.items() if v} | {settings.currency}
    if currency not in known:
        raise QueryError(f"no revenue in {currency} for app {app!r} "
                         f"(currencies: {', '.join(sorted(known))})", "currency")
    return currency


def _header(app: str, calendar: AppCalendar, segment: str, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"app": app, **extra, "timezone": calendar.timezone}
    if segment != ALL_USERS:
        doc["segment"] = segment
    return doc


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
) -> dict[str, Any]:
    if granularity not in GRANULARITIES:
        raise QueryError(f"one of {', '.join(GRANULARITIES)}", "granularity")
    if kind not in KINDS + MONEY_KINDS:
        raise QueryError(f"one of {', '.join(KINDS + MONEY_KINDS)}", "kind")
    check_window(date_from, date_to)
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)

    async def family(name: str) -> Counter[str]:
        return await store.read_family(app, name, segment)

    last_day = last_day_with_data(await family("daily"))
    sizes = await family(f"coh:{granularity}")
    doc = _header(app, calendar, segment, granularity=granularity, kind=kind)
    if kind in KINDS:
        cells = await family(f"{'cls' if kind == 'classic' else 'last'}:{granularity}")
        rows = cohort_rows(sizes, cells, kind, granularity, calendar, now, last_day,
                           date_from, date_to)
    else:
        cells = await family(f"{'fpay' if kind == 'payer_conversion' else 'ltv'}:{granularity}")
        if kind != "payer_conversion":
            currency = money_currency(settings, app, kind, currency, cells)
            doc["currency"] = currency
        else:
            currency = currency or settings.currency  # unused: conversion counts users
        costs = await family(f"cost:{granularity}") if kind == "roas" else Counter()
        rows = money_rows(sizes, cells, costs, kind, granularity, currency, calendar, now,
                          last_day, date_from, date_to)
    return {**doc, "as_of": iso_time(now), "cohorts": rows}


async def summary_report(
    store: RedisStore, settings: Settings, app: str, on: date | None = None,
    where: Sequence[str] = (),
) -> dict[str, Any]:
    """One day's figures. ``complete`` is false while the day has not ended (live numbers);
    win-back figures exist only as live totals, so they carry their own ``winback_as_of``
    whatever the day asked for."""
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    day = date_to_day(on) if on else calendar.day_of(now)
    daily = await store.read_family(app, "daily", segment)
    doc = day_summary(app, day, daily)
    doc.update(money_of_day(daily, day, doc["dau"]))
    doc["complete"] = calendar.period_end_ms(day, "day") <= now
    if segment != ALL_USERS:
        doc["segment"] = segment
    else:
        stats = await store.read_stats()
        doc["winback"] = await winback_figures(store, settings, app, stats)
        doc["winback_as_of"] = iso_time(now)
        doc["forwarded"] = forwarded_figures(stats, app)
    return doc


def forwarded_figures(stats: Counter[str], app: str) -> dict[str, int]:
    """The app's events read away from their user's home partition, by cause (all time):
    exact figures all the same, but a sign that a producer needs fixing."""
    return {cause: stats.get(f"fwd:{app}:{cause}", 0) for cause in FORWARD_CAUSES}


CHURN_TYPES = ("quick", "late")
_WINBACK_KINDS = {"sent": "notified", "false": "false_alarms", "react": "reactivated",
                  "back7": "back7"}


WinbackCounts = dict[tuple[int, str], dict[str, dict[str, int]]]


def winback_counts(stats: Mapping[str, int], app: str, thresholds: Sequence[int]
                   ) -> WinbackCounts:
    """(threshold, kind) -> value segment -> churn type -> count, from the ``sent:``,
    ``false:``, ``react:`` and ``back7:`` counters, with every known label at zero."""
    counts: WinbackCounts = {
        (days, kind): {seg: dict.fromkeys(CHURN_TYPES, 0) for seg in VALUE_SEGMENTS}
        for days in thresholds for kind in _WINBACK_KINDS
    }
    for key, value in stats.items():
        kind, _, rest = key.partition(":")
        if kind not in _WINBACK_KINDS:
            continue
        found_app, days, *labels = rest.split(":")
        if found_app != app or not labels:
            continue
        by_segment = counts.get((int(days), kind), {}).get(labels[0])
        if by_segment is not None:  # records from before churn types count as "late"
            churn = labels[1] if len(labels) > 1 else "late"
            by_segment[churn] = by_segment.get(churn, 0) + value
    return counts


DAILY_DAYS = 90


async def daily_report(
    store: RedisStore, settings: Settings, app: str, date_from: date | None = None,
    date_to: date | None = None, where: Sequence[str] = (),
) -> dict[str, Any]:
    """The summary of every day in a window (default: the last DAILY_DAYS days with data),
    for charts of DAU against installs. Same figures as ``summary`` day by day."""
    check_window(date_from, date_to)
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    daily = await store.read_family(app, "daily", segment)
    last = date_to_day(date_to) if date_to else last_day_with_data(daily)
    doc = _header(app, calendar, segment, as_of=iso_time(now))
    if last is None:
        return {**doc, "days": []}
    days_with_data = [int(k[4:]) for k, v in daily.items() if k.startswith("dau:") and v > 0]
    first = (date_to_day(date_from) if date_from
             else max(last - DAILY_DAYS + 1, min(days_with_data, default=last)))
    if last - first + 1 > settings.horizon_days:
        raise QueryError(f"at most {settings.horizon_days} days (HORIZON_DAYS) at a time",
                         "from")
    days = []
    for day in range(first, last + 1):
        figures = day_summary(app, day, daily)
        figures.update(money_of_day(daily, day, figures["dau"]))
        figures["complete"] = calendar.period_end_ms(day, "day") <= now
        days.append(figures)
    return {**doc, "days": days}


async def apps_report(store: RedisStore, settings: Settings) -> dict[str, Any]:
    """The apps with data and what the page's pickers offer."""
    zones = await store.app_timezones()
    return {
        "apps": [{"app": app, "timezone": zones[app]} for app in sorted(zones)],
        "currency": settings.currency,
        "thresholds": list(settings.inactivity_thresholds),
        "segment_attributes": list(SEGMENT_ATTRIBUTES),
        "value_segments": list(VALUE_SEGMENTS),
    }


def headline_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """D1/D7/D30 of the latest complete daily cohort and the mean of the 7 latest (§4)."""
    out: dict[str, Any] = {}
    for n in HEADLINE_DAYS:
        found = headline(rows, n, _HEADLINE_COHORTS)
        out[f"d{n}"] = found[0] if found else None
        out[f"d{n}_mean7"] = found[1] if found else None
    return out


async def headline_report(
    store: RedisStore, settings: Settings, app: str, where: Sequence[str] = ()
) -> dict[str, Any]:
    """The headline D1/D7/D30 against their baseline, for one segment or all users."""
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    rows = cohort_rows(
        await store.read_family(app, "coh:day", segment),
        await store.read_family(app, "cls:day", segment), "classic", "day", calendar, now,
        last_day_with_data(await store.read_family(app, "daily", segment)),
    )
    return {**_header(app, calendar, segment, as_of=iso_time(now)),
            "headline": headline_figures(rows)}


async def pipeline_report(store: RedisStore, settings: Settings) -> dict[str, Any]:
    """Pipeline health from Redis (the same on every worker): accepted events by app and
    type, rejects by reason, duplicates by app, and each partition's event-time watermark."""
    now = await now_ms(store, settings)
    accepted: dict[str, dict[str, int]] = {}
    rejected: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    forwarded: dict[str, dict[str, int]] = {}
    stats = await store.read_stats()
    for app in {key.split(":")[1] for key in stats if key.startswith("acc:")}:
        forwarded[app] = forwarded_figures(stats, app)
    for key, value in sorted(stats.items()):
        kind, _, rest = key.partition(":")
        if kind == "acc":
            app, _, event_type = rest.rpartition(":")
            accepted.setdefault(app, {})[event_type] = value
        elif kind == "rej":
            rejected[rest] = value
        elif kind == "dup":
            duplicates[rest] = value
    marks = {shard: p["watermark_ms"] for shard, p in
             (await store.partition_progress([])).items() if p["watermark_ms"] is not None}
    return {
        "as_of": iso_time(now),
        "accepted": accepted,
        "rejected": rejected,
        "duplicates": duplicates,
        "forwarded": forwarded,
        "watermarks": {str(shard): iso_time(int(ms))
                       for shard, ms in sorted(marks.items())},
    }


async def winback_figures(
    store: RedisStore, settings: Settings, app: str, stats: Counter[str] | None = None
) -> dict[str, Any]:
    """Per threshold: users inactive now, notifications sent, moments found too late to
    publish (expired), false alarms, reactivations and the share of notified users back
    within 7 days, overall, per value segment and per churn type. ``stats``: the counters
    already read, when the caller covers several apps."""
    stats = stats if stats is not None else await store.read_stats()
    due_now = await store.due_counts(
        app, settings.inactivity_thresholds, await now_ms(store, settings)
    )
    counts = winback_counts(stats, app, settings.inactivity_thresholds)

    def figures(days: int, segment: str | None, churn: str | None) -> dict[str, Any]:
        def total(kind: str) -> int:
            return sum(n for seg, per in counts[days, kind].items()
                       if segment in (None, seg) for c, n in per.items() if churn in (None, c))

        out = {name: total(kind) for kind, name in _WINBACK_KINDS.items() if kind != "back7"}
        out["back_within_7d_share"] = rate(total("back7"), out["notified"])
        return out

    result: dict[str, Any] = {}
    for days in settings.inactivity_thresholds:
        result[str(days)] = {
            "inactive": stats.get(f"inactive:{app}:{days}", 0) + due_now[days],
            "expired": stats.get(f"expired:{app}:{days}", 0),
            **figures(days, None, None),
            "by_segment": {seg: figures(days, seg, None) for seg in VALUE_SEGMENTS},
            "by_churn_type": {churn: figures(days, None, churn) for churn in CHURN_TYPES},
        }
    return result


async def kpis_report(
    store: RedisStore, settings: Settings, app: str, period: str = "week",
    where: Sequence[str] = (),
) -> dict[str, Any]:
    if period not in KPI_PERIODS:
        raise QueryError("week or month", "period")
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    families = {
        name: await store.read_family(app, f"{name}:{period}", segment)
        for name in ("act", "coh", "lost", "ppay", "prep", "prev")
    }
    periods = [int(p) for p, n in families["act"].items() if n > 0]
    rows = kpi_rows(families, period, min(periods), max(periods)) if periods else []
    for number, row in enumerate(rows, start=min(periods, default=0)):
        # §6: a period that has not ended is flagged; its CRR and churn are live numbers
        row["complete"] = calendar.period_end_ms(number, period) <= now
    return {**_header(app, calendar, segment, period=period), "periods": rows}


async def repeat_purchase_report(
    store: RedisStore, settings: Settings, app: str, granularity: str = "month",
    date_from: date | None = None, date_to: date | None = None, where: Sequence[str] = (),
) -> dict[str, Any]:
    """Lifetime RPR overall and per cohort from counters; for a window, from the users'
    purchase records (a scan of user state, not of events)."""
    if granularity not in GRANULARITIES:
        raise QueryError(f"one of {', '.join(GRANULARITIES)}", "granularity")
    check_window(date_from, date_to)
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    per_cohort = await store.read_family(app, f"rpc:{granularity}", segment)
    sizes = await store.read_family(app, f"coh:{granularity}", segment)
    cohorts = sorted(int(c) for c, size in sizes.items() if size > 0)  # buyers or not

    def rpr_doc(buyers: int, repeat: int) -> dict[str, Any]:
        return {"buyers": buyers, "repeat_buyers": repeat, "rpr": rate(repeat, buyers)}

    doc = _header(app, calendar, segment, granularity=granularity)
    doc["lifetime"] = rpr_doc(
        sum(v for k, v in per_cohort.items() if k.endswith(":1")),
        sum(v for k, v in per_cohort.items() if k.endswith(":2")),
    )
    doc["cohorts"] = [
        {"cohort": period_label(c, granularity),
         **rpr_doc(per_cohort.get(f"{c}:1", 0), per_cohort.get(f"{c}:2", 0))}
        for c in cohorts
    ]
    if date_from or date_to:
        low = date_to_day(date_from) if date_from else None
        high = date_to_day(date_to) if date_to else None
        rules = segment_rules(settings)
        buyers = repeat = 0
        async for state in store.scan_users(app):
            if segment != ALL_USERS and segment not in segments_of(state, rules):
                continue
            count = state.purchase_count(low, high)
            buyers += count >= 1
            repeat += count >= 2
        doc["window"] = {
            "from": date_from.isoformat() if date_from else None,
            "to": date_to.isoformat() if date_to else None,
            **rpr_doc(buyers, repeat),
        }
    return doc


async def value_segments_report(
    store: RedisStore, settings: Settings, app: str
) -> dict[str, Any]:
    """VIP, payers and free users side by side: how many, and how they retain."""
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    segments = []
    for value in VALUE_SEGMENTS:
        segment = f"value={value}"
        sizes = await store.read_family(app, "coh:day", segment)
        daily = await store.read_family(app, "daily", segment)
        rows = cohort_rows(sizes, await store.read_family(app, "cls:day", segment), "classic",
                           "day", calendar, now, last_day_with_data(daily))
        segments.append({"segment": value, "users": sum(sizes.values()),
                         **headline_figures(rows)})
    return {"app": app, "timezone": calendar.timezone, "as_of": iso_time(now),
            "segments": segments}




async def live_figures(store: RedisStore, settings: Settings) -> dict[str, Any]:
    """What /metrics shows, per app: today's summary, recent daily cohorts (classic and
    rolling) and the headline D1/D7/D30. Reads only the fields it needs."""
    now = await now_ms(store, settings)
    stats = await store.read_stats()
    apps: dict[str, Any] = {}
    for app, zone in (await store.app_timezones()).items():
        calendar = AppCalendar(zone)
        today = calendar.day_of(now)
        names = [f"{n}:{today}" for n in ("dau", "ins", "new", "pay")]
        daily = await store.read_fields(app, "daily", names)
        for pattern in ("rev:*", "wae:*", "mae:*"):  # rev: every day's, for the currencies
            daily.update(await store.read_matching(app, "daily", pattern))
        summary = day_summary(app, today, daily)
        summary.update(money_of_day(daily, today, summary["dau"]))
        # the headline needs D30 of the latest complete cohort (31 days back) and of the 7
        # before it: 39 days back at least
        span = max(settings.metrics_cohort_days, max(HEADLINE_DAYS) + _HEADLINE_COHORTS + 2)
        cohorts = range(today - span + 1, today + 1)
        cells = [f"{c}:{n}" for c in cohorts for n in range(today - c + 1)]
        sizes = await store.read_fields(app, "coh:day", [str(c) for c in cohorts])
        rows = {
            kind: cohort_rows(
                sizes, await store.read_fields(app, f"{family}:day", cells), kind, "day",
                calendar, now, today,
            )
            for kind, family in (("classic", "cls"), ("rolling", "last"))
        }
        first_shown = day_to_date(today - settings.metrics_cohort_days + 1).isoformat()
        shown = {  # daily labels are ISO dates: they sort as the days do
            kind: [r for r in kind_rows if r["cohort"] >= first_shown]
            for kind, kind_rows in rows.items()
        }
        apps[app] = {
            "winback": await winback_figures(store, settings, app, stats),
            "summary": summary,
            "cohorts": shown,
            "money": await _recent_money(store, settings, app, calendar, now, today, daily),
            "headline": {n: headline(rows["classic"], n, _HEADLINE_COHORTS) for n in HEADLINE_DAYS},
            "headline_size": {n: headline_cohort_size(rows["classic"], n)
                              for n in HEADLINE_DAYS},
        }
    return {"now_ms": now, "apps": apps, "stats": stats}


async def _recent_money(
    store: RedisStore, settings: Settings, app: str, calendar: AppCalendar, now: int,
    today: int, daily: Counter[str],
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """LTV (per currency with revenue in the window) and ROAS (in CURRENCY, the currency of
    costs) of the last METRICS_COHORT_DAYS daily cohorts: kind -> currency -> rows."""
    first = today - settings.metrics_cohort_days + 1
    currencies = sorted({k.rsplit(":", 1)[1] for k, v in daily.items()
                         if k.startswith("rev:") and v and int(k.split(":")[1]) >= first})
    cohorts = range(first, today + 1)
    sizes = await store.read_fields(app, "coh:day", [str(c) for c in cohorts])
    costs = await store.read_fields(app, "cost:day", [str(c) for c in cohorts])
    out: dict[str, dict[str, list[dict[str, Any]]]] = {"ltv": {}, "roas": {}}
    for currency in currencies:
        fields = [f"{c}:{n}:{currency}" for c in cohorts for n in range(today - c + 1)]
        cells = await store.read_fields(app, "ltv:day", fields)
        out["ltv"][currency] = money_rows(sizes, cells, costs, "ltv", "day", currency,
                                          calendar, now, today)
        if currency == settings.currency:
            out["roas"][currency] = money_rows(sizes, cells, costs, "roas", "day", currency,
                                               calendar, now, today)
    return out
