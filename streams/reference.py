"""The batch reference: METRICS.md sections 1-4 computed the plain way, from a list of events.

The streaming worker keeps incremental state (per-user bitmaps, counters, late-event
corrections) and it is easy to get subtly wrong. This module is what that state must equal:
it takes the whole set of events at once, deduplicates them, and recomputes every figure
from scratch with sets and loops, straight from the definitions in the contract. Tests feed
the same events to both and compare.

It is deliberately independent of the implementation: it imports nothing from the project
except the `Event` type, does its own calendar arithmetic with the standard library
(`zoneinfo`, `datetime`), and favours being obviously right over being fast.

Choices where the contract leaves room (kept in one place so they are easy to challenge):

- Deduplication is global: the first occurrence of an (app, event_id) in iteration order
  wins, whatever the distance in time (the streaming dedup window is not modelled).
- Every deduplicated event counts, including events later than `now_ms`; `now_ms` is only
  used for the `complete` flags.
- A triangle lists only cohorts that have at least one user (an empty period has no rate).
- The start of a local day is its first instant: local midnight, or the moment the clocks
  jump when a DST change skips midnight.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from retention_tracker.streams.events import Event

GRANULARITIES = ("day", "week", "month")
KINDS = ("classic", "rolling")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

User = tuple[str, str]  # (app, user_id)


# --------------------------------------------------------------------------------------
# Events


def dedup(events: Iterable[Event]) -> list[Event]:
    """Keep the first occurrence of each (app, event_id), in the original order."""
    seen: set[tuple[str, str]] = set()
    kept: list[Event] = []
    for event in events:
        key = (event.app, event.event_id)
        if key in seen:
            continue
        seen.add(key)
        kept.append(event)
    return kept


# --------------------------------------------------------------------------------------
# Time


def local_day(ts_ms: int, tz: str) -> date:
    """The calendar date of the instant `ts_ms` (epoch milliseconds) in the IANA zone `tz`."""
    instant = _EPOCH + timedelta(milliseconds=ts_ms)  # exact integer arithmetic, no floats
    return instant.astimezone(ZoneInfo(tz)).date()


def day_start_ms(day: date, tz: str) -> int:
    """Epoch milliseconds of the first instant of `day` in `tz`.

    That is local midnight. When a DST change skips midnight (clocks jump from 00:00 to
    01:00), `fold=0` reads the nonexistent 00:00 with the offset in force before the jump,
    which is exactly the instant of the jump, i.e. still the first instant of the day.
    """
    midnight = datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(tz))
    return (midnight - _EPOCH) // _ONE_MS


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")


def period_start(day: date, granularity: str) -> date:
    """The period containing `day`, identified by its first day.

    day: the date itself; week: the Monday of its ISO week; month: the first of the month.
    """
    _check_granularity(granularity)
    if granularity == "day":
        return day
    if granularity == "week":
        return day - timedelta(days=day.weekday())  # weekday(): Monday is 0
    return day.replace(day=1)


def next_period_start(start: date, granularity: str) -> date:
    """The first day of the period after the one that starts on `start`."""
    _check_granularity(granularity)
    if granularity == "day":
        return start + timedelta(days=1)
    if granularity == "week":
        return start + timedelta(days=7)
    if start.month == 12:
        return date(start.year + 1, 1, 1)
    return date(start.year, start.month + 1, 1)


def period_label(start: date, granularity: str) -> str:
    """day "YYYY-MM-DD", week "YYYY-Www" (ISO year and week), month "YYYY-MM"."""
    _check_granularity(granularity)
    if granularity == "day":
        return start.isoformat()
    if granularity == "week":
        iso_year, iso_week, _ = start.isocalendar()
        return f"{iso_year:04d}-W{iso_week:02d}"
    return f"{start.year:04d}-{start.month:02d}"


def period_offset(first: date, later: date, granularity: str) -> int:
    """Number of whole periods from the period of `first` to the period of `later`."""
    a = period_start(first, granularity)
    b = period_start(later, granularity)
    if granularity == "day":
        return (b - a).days
    if granularity == "week":
        return (b - a).days // 7  # both are Mondays, so this is exact
    return (b.year - a.year) * 12 + (b.month - a.month)


def add_periods(start: date, n: int, granularity: str) -> date:
    """The start of the period `n` periods after the one that starts on `start` (n >= 0)."""
    current = period_start(start, granularity)
    for _ in range(n):
        current = next_period_start(current, granularity)
    return current


def period_end_ms(start: date, granularity: str, tz: str) -> int:
    """When the period starting on `start` ends: the first instant of the next period in tz."""
    return day_start_ms(next_period_start(start, granularity), tz)


# --------------------------------------------------------------------------------------
# Users and their days


class _AppData:
    """One app's deduplicated events reduced to what sections 3-4 need, all in local days."""

    def __init__(self, events: Iterable[Event], app: str, tz: str) -> None:
        self.first_seen_ms: dict[User, int] = {}
        self.active_days: dict[User, set[date]] = {}
        self.users_active_on: dict[date, set[User]] = {}
        self.users_installing_on: dict[date, set[User]] = {}
        for event in dedup(events):
            if event.app != app:
                continue
            user = (event.app, event.user_id)
            day = local_day(event.ts_ms, tz)
            if user not in self.first_seen_ms or event.ts_ms < self.first_seen_ms[user]:
                self.first_seen_ms[user] = event.ts_ms
            self.active_days.setdefault(user, set()).add(day)
            self.users_active_on.setdefault(day, set()).add(user)
            if event.type == "install":
                self.users_installing_on.setdefault(day, set()).add(user)
        self.first_day: dict[User, date] = {
            user: local_day(ts, tz) for user, ts in self.first_seen_ms.items()
        }
        self.new_users_on: dict[date, set[User]] = {}
        for user, day in self.first_day.items():
            self.new_users_on.setdefault(day, set()).add(user)

    def first_data_day(self) -> date | None:
        return min(self.users_active_on) if self.users_active_on else None

    def last_data_day(self) -> date | None:
        return max(self.users_active_on) if self.users_active_on else None

    def users_active_between(self, first: date, last: date) -> set[User]:
        users: set[User] = set()
        day = first
        while day <= last:
            users |= self.users_active_on.get(day, set())
            day += timedelta(days=1)
        return users


# --------------------------------------------------------------------------------------
# Section 4: retention triangles


def triangle(
    events: Iterable[Event],
    app: str,
    granularity: str,
    kind: str,
    tz: str,
    now_ms: int,
    date_from: date | None = None,
    date_to: date | None = None,
) -> list[dict]:
    """The retention triangle of `app`, one dict per non-empty cohort, oldest first.

    Each dict is {"cohort", "size", "counts", "values", "complete"}; offsets run from 0 to
    the app's last period with data. `date_from`/`date_to` keep the cohorts whose period
    lies between the periods of those dates (inclusive); they do not shorten the rows.
    """
    _check_granularity(granularity)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    data = _AppData(events, app, tz)
    last_day = data.last_data_day()
    if last_day is None:
        return []
    last_period = period_start(last_day, granularity)

    # Each user's cohort, and the set of periods it was active in.
    cohort_users: dict[date, list[User]] = {}
    active_periods: dict[User, set[date]] = {}
    for user, first_day in data.first_day.items():
        cohort_users.setdefault(period_start(first_day, granularity), []).append(user)
        active_periods[user] = {period_start(d, granularity) for d in data.active_days[user]}

    low = period_start(date_from, granularity) if date_from is not None else None
    high = period_start(date_to, granularity) if date_to is not None else None

    rows: list[dict] = []
    for cohort in sorted(cohort_users):
        if low is not None and cohort < low:
            continue
        if high is not None and cohort > high:
            continue
        users = cohort_users[cohort]
        size = len(users)
        n_offsets = period_offset(cohort, last_period, granularity) + 1
        counts = [0] * n_offsets
        for user in users:
            offsets = [period_offset(cohort, p, granularity) for p in active_periods[user]]
            if kind == "classic":
                # Active in period c+N.
                for n in offsets:
                    if 0 <= n < n_offsets:
                        counts[n] += 1
            else:
                # Active in any period >= c+N, i.e. its latest active period is >= c+N.
                latest = max(offsets)
                for n in range(n_offsets):
                    if latest >= n:
                        counts[n] += 1
        values = [round(count / size, 4) for count in counts]
        complete = [
            period_end_ms(add_periods(cohort, n, granularity), granularity, tz) <= now_ms
            for n in range(n_offsets)
        ]
        rows.append(
            {
                "cohort": period_label(cohort, granularity),
                "size": size,
                "counts": counts,
                "values": values,
                "complete": complete,
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# Section 3: daily figures


def _summary_of(data: _AppData, app: str, day: date) -> dict:
    dau = len(data.users_active_on.get(day, set()))
    wau = len(data.users_active_between(day - timedelta(days=6), day))
    mau = len(data.users_active_between(day - timedelta(days=29), day))
    new_users = len(data.new_users_on.get(day, set()))
    return {
        "app": app,
        "date": day.isoformat(),
        "dau": dau,
        "wau": wau,
        "mau": mau,
        "stickiness": round(dau / mau, 4) if mau else 0.0,
        "installs": len(data.users_installing_on.get(day, set())),
        "new_users": new_users,
        "returning_users": dau - new_users,
    }


def summary(events: Iterable[Event], app: str, date: date, tz: str) -> dict:
    """DAU, WAU, MAU, stickiness, installs, new and returning users of `app` on local `date`."""
    return _summary_of(_AppData(events, app, tz), app, date)


def daily_series(events: Iterable[Event], app: str, tz: str) -> dict[date, dict]:
    """`summary` for every day from the app's first to its last day with data, gaps included."""
    data = _AppData(events, app, tz)
    first, last = data.first_data_day(), data.last_data_day()
    series: dict[date, dict] = {}
    if first is None or last is None:
        return series
    day = first
    while day <= last:
        series[day] = _summary_of(data, app, day)
        day += timedelta(days=1)
    return series
