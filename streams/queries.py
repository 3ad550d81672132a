"""The query side shared by the CLI and the HTTP views: Redis counters -> report documents.

Both read Redis directly, so reports work with no worker running.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from .calendar import GRANULARITIES, AppCalendar, date_to_day, utc_now_ms
from .figures import KINDS, cohort_rows, day_summary, iso_time, last_day_with_data
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
