"""Aggregate counters -> the figures people read: cohort triangles and the daily summary.

Pure functions over the counter families the plan maintains (see plan.user_contributions);
the query module feeds them from Redis, tests feed them from an in-memory apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from retention_tracker.streams.calendar import (
    AppCalendar,
    date_to_day,
    day_to_date,
    period_label,
    period_of_day,
)
from retention_tracker.streams.user_state import MONEY_UNITS

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
        cohort_text, offset_text = key.split(":")
        by_cell.setdefault(int(cohort_text), {})[int(offset_text)] = count
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


def edges_up_to(daily: Mapping[str, int], family: str, day: int) -> int:
    """WAU/MAU from their edge counters (plan._window_edges): the sum of edges up to day."""
    prefix = f"{family}:"
    return sum(v for k, v in daily.items() if k.startswith(prefix) and int(k[4:]) <= day)


def day_summary(app: str, day: int, daily: Mapping[str, int]) -> dict[str, Any]:
    def get(name: str) -> int:
        return int(daily.get(f"{name}:{day}", 0))

    dau, mau, new = get("dau"), edges_up_to(daily, "mae", day), get("new")
    return {
        "app": app,
        "date": day_to_date(day).isoformat(),
        "dau": dau,
        "wau": edges_up_to(daily, "wae", day),
        "mau": mau,
        "stickiness": rate(dau, mau),
        "installs": get("ins"),
        "new_users": new,
        "returning_users": dau - new,
    }


def headline(rows: list[dict[str, Any]], offset: int, cohorts: int = 7
             ) -> tuple[float, float | None] | None:
    """Day-N classic retention of the latest daily cohort whose day N is complete, and the
    mean over the ``cohorts`` such cohorts before it (METRICS.md §4 "Headline D1/D7/D30"):
    the latest is left out of its own baseline, so a drop is not diluted by itself. The
    mean is over fewer cohorts when fewer came before, None when none did."""
    done = _complete_at(rows, offset)
    if not done:
        return None
    latest = done[-1]
    before = [r["counts"][offset] / r["size"] for r in done[-cohorts - 1:-1]]
    baseline = round(sum(before) / len(before), 4) if before else None
    return rate(latest["counts"][offset], latest["size"]), baseline


def headline_cohort_size(rows: list[dict[str, Any]], offset: int) -> int | None:
    """Users of the cohort the headline day-N figure is of (alerts ignore small ones)."""
    done = _complete_at(rows, offset)
    return done[-1]["size"] if done else None


def _complete_at(rows: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    """The cohorts (oldest first) whose day ``offset`` has ended."""
    return [r for r in rows if len(r["complete"]) > offset and r["complete"][offset]]


MONEY_KINDS = ("ltv", "payer_conversion", "roas")


def money(units: int, divisor: int = 1) -> float:
    """Units / divisor in currency, rounded to 4 places in decimal (as the ledger would)."""
    return float(round(Decimal(units) / (MONEY_UNITS * divisor), 4))


def money_rows(
    sizes: Mapping[str, int],
    cells: Mapping[str, int],
    costs: Mapping[str, int],
    kind: str,
    granularity: str,
    currency: str,
    calendar: AppCalendar,
    now_ms: int,
    last_day: int | None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> list[dict[str, Any]]:
    """Cohort curves of money (METRICS.md §5): cumulative LTV, payer conversion, ROAS.
    ``cells`` is the ``ltv`` family (revenue units of cohort c in period c+N, per currency)
    for ltv and roas, the ``fpay`` family (users of c first paying in c+N) for conversion."""
    # the triangle's frame (cohorts, widths, completeness) is the retention one
    rows = cohort_rows(sizes, {}, "classic", granularity, calendar, now_ms, last_day,
                       date_from, date_to)
    by_cohort: dict[int, dict[int, int]] = {}
    for key, value in cells.items():
        parts = key.split(":")
        if kind != "payer_conversion" and parts[2] != currency:
            continue
        by_cohort.setdefault(int(parts[0]), {})[int(parts[1])] = value
    out = []
    for row in rows:
        cohort = _period_of_label(row["cohort"], granularity)
        found = by_cohort.get(cohort, {})
        running, cumulative = 0, []
        for n in range(len(row["complete"])):
            running += found.get(n, 0)
            cumulative.append(running)
        size = row["size"]
        doc: dict[str, Any] = {"cohort": row["cohort"], "size": size}
        if kind == "payer_conversion":
            doc["counts"] = cumulative
            doc["values"] = [rate(c, size) for c in cumulative]
        else:
            cost = costs.get(str(cohort), 0)
            if kind == "roas":
                doc["cac"] = money(cost, size) if cost else None
            doc["revenue"] = [money(units) for units in cumulative]
            doc["values"] = (
                [money(units, size) for units in cumulative]
                if kind == "ltv"
                else [float(round(Decimal(units) / cost, 4)) if cost else None
                      for units in cumulative]
            )
        doc["complete"] = row["complete"]
        out.append(doc)
    return out


def _period_of_label(label: str, granularity: str) -> int:
    if granularity == "day":
        return date_to_day(date.fromisoformat(label))
    if granularity == "week":
        year, week = label.split("-W")
        return period_of_day(date_to_day(date.fromisocalendar(int(year), int(week), 1)), "week")
    year, month = label.split("-")
    return int(year) * 12 + int(month) - 1


def money_of_day(daily: Mapping[str, int], day: int, dau: int) -> dict[str, Any]:
    """revenue, payers, ARPDAU and ARPPU of one day, per currency."""
    prefix = f"rev:{day}:"
    revenue = {k[len(prefix):]: v for k, v in sorted(daily.items()) if k.startswith(prefix) and v}
    payers = int(daily.get(f"pay:{day}", 0))
    return {
        "revenue": {cur: money(units) for cur, units in revenue.items()},
        "payers": payers,
        "arpdau": {cur: money(u, dau) for cur, u in revenue.items()} if dau else {},
        "arppu": {cur: money(u, payers) for cur, u in revenue.items()} if payers else {},
    }


def kpi_rows(families: Mapping[str, Mapping[str, int]], granularity: str, first: int, last: int
             ) -> list[dict[str, Any]]:
    """Period KPIs (METRICS.md §6) for periods first..last from the act, coh, lost, ppay,
    prep and prev families of that granularity."""
    act, coh, lost = families["act"], families["coh"], families["lost"]
    rows = []
    for period in range(first, last + 1):
        active, new, start = act.get(str(period), 0), coh.get(str(period), 0), act.get(
            str(period - 1), 0)
        payers = families["ppay"].get(str(period), 0)
        prefix = f"{period}:"
        revenue = {k[len(prefix):]: money(v) for k, v in sorted(families["prev"].items())
                   if k.startswith(prefix) and v}
        rows.append({
            "period": period_label(period, granularity),
            "active": active,
            "new_users": new,
            "returning": active - new,
            "crr": round((active - new) / start, 4) if start else None,
            "churn": round(lost.get(str(period), 0) / start, 4) if start else None,
            "revenue": revenue,
            "payers": payers,
            "rpr": rate(families["prep"].get(str(period), 0), payers),
        })
    return rows
