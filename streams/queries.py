"""The query side shared by the CLI and the HTTP views: Redis counters -> report documents.

Both read Redis directly, so reports work with no worker running.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date
from typing import Any

from .calendar import GRANULARITIES, AppCalendar, date_to_day, day_to_date, period_label, utc_now_ms
from .figures import (
    KINDS,
    MONEY_KINDS,
    cohort_rows,
    day_summary,
    headline,
    iso_time,
    kpi_rows,
    last_day_with_data,
    money_of_day,
    money_rows,
    rate,
)
from .plan import ALL_USERS, segments_of
from .segments import segment_rules
from .settings import Settings
from .store import RedisStore

HEADLINE_DAYS = (1, 7, 30)
_HEADLINE_COHORTS = 7


class QueryError(ValueError):
    """A bad query parameter or an unknown app: shown to the user as one line."""


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
            "one --where at a time: the state keeps counters per single attribute value, "
            "not per combination (see README 'Segments')"
        )
    name, sep, value = where[0].partition("=")
    if not sep or name not in SEGMENT_ATTRIBUTES or not value:
        raise QueryError(f"--where {where[0]!r}: expected one of "
                         f"{', '.join(SEGMENT_ATTRIBUTES)} as attr=value")
    if name == "value" and value not in VALUE_SEGMENTS:
        raise QueryError(f"--where value=...: one of {', '.join(VALUE_SEGMENTS)}")
    return f"{name}={value}"


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
        raise QueryError(f"granularity must be one of {', '.join(GRANULARITIES)}")
    if kind not in KINDS + MONEY_KINDS:
        raise QueryError(f"kind must be one of {', '.join(KINDS + MONEY_KINDS)}")
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
        currency = currency or settings.currency
        if kind != "payer_conversion":
            doc["currency"] = currency
        cells = await family(f"{'fpay' if kind == 'payer_conversion' else 'ltv'}:{granularity}")
        costs = await family(f"cost:{granularity}") if kind == "roas" else Counter()
        rows = money_rows(sizes, cells, costs, kind, granularity, currency, calendar, now,
                          last_day, date_from, date_to)
    return {**doc, "as_of": iso_time(now), "cohorts": rows}


async def summary_report(
    store: RedisStore, settings: Settings, app: str, on: date | None = None,
    where: Sequence[str] = (),
) -> dict[str, Any]:
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    day = date_to_day(on) if on else calendar.day_of(await now_ms(store, settings))
    daily = await store.read_family(app, "daily", segment)
    doc = day_summary(app, day, daily)
    doc.update(money_of_day(daily, day, doc["dau"]))
    if segment != ALL_USERS:
        doc["segment"] = segment
    else:
        doc["winback"] = await winback_figures(store, settings, app)
    return doc


async def winback_figures(
    store: RedisStore, settings: Settings, app: str, stats: Counter[str] | None = None
) -> dict[str, Any]:
    """Per threshold: users inactive now, notifications sent, reactivations and the share
    of notified users back within 7 days, overall and per value segment. ``stats``: the
    counters already read, when the caller covers several apps."""
    stats = stats if stats is not None else await store.read_stats()
    due_now = await store.due_counts(
        app, settings.inactivity_thresholds, await now_ms(store, settings)
    )
    out: dict[str, Any] = {}
    for days in settings.inactivity_thresholds:
        per_segment = {}
        for value in VALUE_SEGMENTS:
            sent = stats.get(f"sent:{app}:{days}:{value}", 0)
            back = stats.get(f"back7:{app}:{days}:{value}", 0)
            per_segment[value] = {
                "notified": sent,
                "reactivated": stats.get(f"react:{app}:{days}:{value}", 0),
                "back_within_7d_share": rate(back, sent),
            }
        sent = sum(s["notified"] for s in per_segment.values())
        back = sum(stats.get(f"back7:{app}:{days}:{v}", 0) for v in VALUE_SEGMENTS)
        out[str(days)] = {
            "inactive": stats.get(f"inactive:{app}:{days}", 0) + due_now[days],
            "notified": sent,
            "reactivated": sum(s["reactivated"] for s in per_segment.values()),
            "back_within_7d_share": rate(back, sent),
            "by_segment": per_segment,
        }
    return out


async def kpis_report(
    store: RedisStore, settings: Settings, app: str, period: str = "week",
    where: Sequence[str] = (),
) -> dict[str, Any]:
    if period not in ("week", "month"):
        raise QueryError("period must be week or month")
    segment = segment_of(where)
    calendar = await app_calendar(store, settings, app)
    families = {
        name: await store.read_family(app, f"{name}:{period}", segment)
        for name in ("act", "coh", "lost", "ppay", "prep", "prev")
    }
    periods = [int(p) for p, n in families["act"].items() if n > 0]
    rows = kpi_rows(families, period, min(periods), max(periods)) if periods else []
    return {**_header(app, calendar, segment, period=period), "periods": rows}


async def repeat_purchase_report(
    store: RedisStore, settings: Settings, app: str, granularity: str = "month",
    date_from: date | None = None, date_to: date | None = None, where: Sequence[str] = (),
) -> dict[str, Any]:
    """Lifetime RPR overall and per cohort from counters; for a window, from the users'
    purchase records (a scan of user state, not of events)."""
    if granularity not in GRANULARITIES:
        raise QueryError(f"granularity must be one of {', '.join(GRANULARITIES)}")
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
            count = sum(
                p.count for day, _, p in state.purchases
                if (low is None or day >= low) and (high is None or day <= high)
            )
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
        entry: dict[str, Any] = {"segment": value, "users": sum(sizes.values())}
        for n in HEADLINE_DAYS:
            found = headline(rows, n, _HEADLINE_COHORTS)
            entry[f"d{n}"] = found[0] if found else None
            entry[f"d{n}_mean7"] = found[1] if found else None
        segments.append(entry)
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
        for pattern in (f"rev:{today}:*", "wae:*", "mae:*"):
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
            "headline": {n: headline(rows["classic"], n, _HEADLINE_COHORTS) for n in HEADLINE_DAYS},
        }
    return {"now_ms": now, "apps": apps, "stats": stats}
