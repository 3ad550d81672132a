"""Calendar arithmetic in an app's timezone: day numbers, ISO weeks, months, labels.

Days, weeks and months are plain integers so the state can key counters by them and
offsets are subtractions: a day is the number of local calendar days since 1970-01-01,
a week the number of ISO weeks since the one holding 1970-01-01, a month year*12+month-1.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

GRANULARITIES = ("day", "week", "month")
#: Every granularity the state keeps period counters in: the cohort granularities, and
#: years for the period KPIs (METRICS.md §6; no cohort triangles by year).
PERIOD_GRANULARITIES = (*GRANULARITIES, "year")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
MS_PER_DAY = 86_400_000  # the one definition: every module takes it from here
_ONE_MS = timedelta(milliseconds=1)


def day_to_date(day: int) -> date:
    return date.fromordinal(day + _EPOCH_ORDINAL)


def date_to_day(value: date) -> int:
    return value.toordinal() - _EPOCH_ORDINAL


@functools.lru_cache(maxsize=65536)
def _month_of_day(day: int) -> int:
    d = day_to_date(day)
    return d.year * 12 + d.month - 1


def _year_of_day(day: int) -> int:
    return _month_of_day(day) // 12


def period_of_day(day: int, granularity: str) -> int:
    if granularity == "day":
        return day
    if granularity == "week":
        return (day + 3) // 7  # 1970-01-01 is a Thursday; its ISO week starts on day -3
    if granularity == "year":
        return _year_of_day(day)  # the calendar year itself
    return _month_of_day(day)


def period_start_day(period: int, granularity: str) -> int:
    if granularity == "day":
        return period
    if granularity == "week":
        return period * 7 - 3
    if granularity == "year":
        return date_to_day(date(period, 1, 1))
    return date_to_day(date(period // 12, period % 12 + 1, 1))


def period_label(period: int, granularity: str) -> str:
    if granularity == "day":
        return day_to_date(period).isoformat()
    if granularity == "week":
        year, week, _ = day_to_date(period_start_day(period, "week")).isocalendar()
        return f"{year}-W{week:02d}"
    if granularity == "year":
        return f"{period:04d}"
    return f"{period // 12:04d}-{period % 12 + 1:02d}"


def periods_of_days(days: Iterable[int], granularity: str) -> set[int]:
    """The periods holding these days; one dispatch per set, not per day (the plan's
    inner loop)."""
    if granularity == "day":
        return set(days)
    if granularity == "week":
        return {(day + 3) // 7 for day in days}
    if granularity == "year":
        return {_year_of_day(day) for day in days}
    return {_month_of_day(day) for day in days}


@dataclass(frozen=True)
class AppCalendar:
    """Maps instants to local calendar days of one timezone; the UTC case skips zoneinfo."""

    timezone: str

    @functools.cached_property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def day_of(self, ts_ms: int) -> int:
        if self.timezone == "UTC":
            return ts_ms // MS_PER_DAY
        local = datetime.fromtimestamp(ts_ms / 1000, self._zone)
        return local.date().toordinal() - _EPOCH_ORDINAL

    def utc_offset_ms(self, ts_ms: int) -> int:
        """The zone's offset from UTC at this instant, in ms (DST-aware): ``day_of`` is the
        day of ``ts_ms`` plus it. The native engine tabulates it per UTC day
        (streams/_native.pyx ``ZoneDays``) instead of asking zoneinfo per event."""
        if self.timezone == "UTC":
            return 0
        offset = datetime.fromtimestamp(ts_ms / 1000, self._zone).utcoffset()
        assert offset is not None, "an IANA zone has an offset at every instant"
        return offset // _ONE_MS

    def day_start_ms(self, day: int) -> int:
        """Local midnight that starts ``day``, as epoch ms (DST-aware)."""
        d = day_to_date(day)
        local = datetime(d.year, d.month, d.day, tzinfo=self._zone)
        return int(local.timestamp() * 1000)

    def period_end_ms(self, period: int, granularity: str) -> int:
        return self.day_start_ms(period_start_day(period + 1, granularity))


def utc_now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def accelerated_clock(speed: float) -> Callable[[], int]:
    """A wall clock running ``speed`` times faster from now on (1: the wall clock itself)."""
    if speed == 1:
        return utc_now_ms
    start = utc_now_ms()
    return lambda: start + int((utc_now_ms() - start) * speed)


def parse_date(text: str) -> date:
    """A CLI/HTTP date flag; ValueError carries a readable message."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None
