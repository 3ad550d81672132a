"""Aggregate counters -> the figures people read: cohort triangles and the daily summary.

Pure functions over the counter families the plan maintains (see plan.user_contributions);
the query module feeds them from Redis, tests feed them from an in-memory apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from .calendar import AppCalendar, date_to_day, day_to_date, period_label, period_of_day

KINDS = ("classic", "rolling")


def rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def iso_time(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")


def last_day_with_data(daily: Mapping[str, int]) -> int | None:
    days = [int(k[4:]) for k, v in daily.items() if k.startswith("dau:") and v > 0]
    return max(days) if days else None


def cohort_rows(
    sizes: Mapping[str, int],
    cells: Mapping[str, int],
    kind: str,
    granularity: str,
    calendar: AppCalendar,
    now_ms: int,
    last_day: int | None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> list[dict[str, Any]]:
    """Rows of the cohort triangle. ``cells`` is the ``cls`` family (users of cohort c active
    in c+N) for classic, the ``last`` family (users of c last active in c+N) for rolling."""
    if last_day is None:
        return []
    last_period = period_of_day(last_day, granularity)
    low = period_of_day(date_to_day(date_from), granularity) if date_from else None
    high = period_of_day(date_to_day(date_to), granularity) if date_to else None
    by_cell: dict[int, dict[int, int]] = {}
    for key, count in cells.items():
        cohort, offset = key.split(":")
        by_cell.setdefault(int(cohort), {})[int(offset)] = count
    rows = []
    for cohort in sorted(int(c) for c, size in sizes.items() if size > 0):
        if (low is not None and cohort < low) or (high is not None and cohort > high):
            continue
        size = sizes[str(cohort)]
        width = last_period - cohort + 1
        found = by_cell.get(cohort, {})
        if kind == "classic":
            counts = [found.get(n, 0) for n in range(width)]
        else:
            # last-active offsets never pass the app's last period, so a suffix sum will do
            counts, running = [0] * width, 0
            for n in range(width - 1, -1, -1):
                running += found.get(n, 0)
                counts[n] = running
        rows.append(
            {
                "cohort": period_label(cohort, granularity),
                "size": size,
                "counts": counts,
                "values": [rate(c, size) for c in counts],
                "complete": [
                    calendar.period_end_ms(cohort + n, granularity) <= now_ms
                    for n in range(width)
                ],
            }
        )
    return rows


def day_summary(app: str, day: int, daily: Mapping[str, int]) -> dict[str, Any]:
    def get(name: str) -> int:
        return int(daily.get(f"{name}:{day}", 0))

    dau, mau, new = get("dau"), get("mau"), get("new")
    return {
        "app": app,
        "date": day_to_date(day).isoformat(),
        "dau": dau,
        "wau": get("wau"),
        "mau": mau,
        "stickiness": rate(dau, mau),
        "installs": get("ins"),
        "new_users": new,
        "returning_users": dau - new,
    }


def headline(rows: list[dict[str, Any]], offset: int, cohorts: int = 7
             ) -> tuple[float, float] | None:
    """Day-N classic retention of the latest daily cohort whose day N is complete, and its
    mean over the ``cohorts`` latest such cohorts (METRICS.md §4 "Headline D1/D7/D30")."""
    done = [r for r in rows if len(r["complete"]) > offset and r["complete"][offset]]
    if not done:
        return None
    recent = [r["counts"][offset] / r["size"] for r in done[-cohorts:]]
    return rate(done[-1]["counts"][offset], done[-1]["size"]), round(sum(recent) / len(recent), 4)
