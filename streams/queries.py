"""The query side shared by the CLI and the HTTP views: Redis counters -> report documents.

Both read Redis directly, so reports work with no worker running.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from .calendar import GRANULARITIES, AppCalendar, date_to_day, day_to_date, utc_now_ms
from .figures import (
    KINDS,
    cohort_rows,
    day_summary,
    headline,
    iso_time,
    last_day_with_data,
)
from .settings import Settings
from .store import RedisStore


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


async def cohort_report(
    store: RedisStore,
    settings: Settings,
    app: str,
    granularity: str = "day",
    kind: str = "classic",
    date_from: date | None = None,
    date_to: date | None = None,
) -> dict[str, Any]:
    if granularity not in GRANULARITIES:
        raise QueryError(f"granularity must be one of {', '.join(GRANULARITIES)}")
    if kind not in KINDS:
        raise QueryError(f"kind must be one of {', '.join(KINDS)}")
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    daily = await store.read_family(app, "daily")
    sizes = await store.read_family(app, f"coh:{granularity}")
    family = "cls" if kind == "classic" else "last"
    cells = await store.read_family(app, f"{family}:{granularity}")
    rows = cohort_rows(
        sizes, cells, kind, granularity, calendar, now, last_day_with_data(daily),
        date_from, date_to,
    )
    return {
        "app": app,
        "granularity": granularity,
        "kind": kind,
        "timezone": calendar.timezone,
        "as_of": iso_time(now),
        "cohorts": rows,
    }


async def summary_report(
    store: RedisStore, settings: Settings, app: str, on: date | None = None
) -> dict[str, Any]:
    calendar = await app_calendar(store, settings, app)
    day = date_to_day(on) if on else calendar.day_of(await now_ms(store, settings))
    return day_summary(app, day, await store.read_family(app, "daily"))


HEADLINE_DAYS = (1, 7, 30)
_HEADLINE_COHORTS = 7


async def live_figures(store: RedisStore, settings: Settings) -> dict[str, Any]:
    """What /metrics shows, per app: today's summary, recent daily cohorts (classic and
    rolling) and the headline D1/D7/D30. Reads only the fields it needs."""
    now = await now_ms(store, settings)
    apps: dict[str, Any] = {}
    for app, zone in (await store.app_timezones()).items():
        calendar = AppCalendar(zone)
        today = calendar.day_of(now)
        names = [f"{n}:{today}" for n in ("dau", "wau", "mau", "ins", "new")]
        summary = day_summary(app, today, await store.read_fields(app, "daily", names))
        # the headline needs D30 of 7 complete cohorts: 38 days back at least
        span = max(settings.metrics_cohort_days, max(HEADLINE_DAYS) + _HEADLINE_COHORTS + 1)
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
            "summary": summary,
            "cohorts": shown,
            "headline": {n: headline(rows["classic"], n, _HEADLINE_COHORTS) for n in HEADLINE_DAYS},
        }
    return {"now_ms": now, "apps": apps}
