"""Calendar arithmetic (streams/calendar.py): day numbers, ISO weeks, months, labels and
local midnights. Expected values worked out from a calendar, not from the code."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention_tracker.streams.calendar import (
    MS_PER_DAY,
    AppCalendar,
    accelerated_clock,
    date_to_day,
    day_to_date,
    parse_date,
    period_label,
    period_of_day,
    period_start_day,
    periods_of_days,
    utc_now_ms,
)

JAN_1_2024 = 19723  # days since 1970-01-01: 54 years, 13 of them leap: 54 * 365 + 13


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def test_day_numbers() -> None:
    assert date_to_day(date(1970, 1, 1)) == 0
    assert date_to_day(date(2024, 1, 1)) == JAN_1_2024
    assert day_to_date(JAN_1_2024 + 59) == date(2024, 2, 29)  # a leap year
    assert day_to_date(-1) == date(1969, 12, 31)


def test_weeks_are_iso_weeks_monday_first() -> None:
    # 2024-01-01 is a Monday: its week starts that day; Sunday 2024-01-07 is in it too
    week = period_of_day(JAN_1_2024, "week")
    assert period_of_day(JAN_1_2024 + 6, "week") == week
    assert period_of_day(JAN_1_2024 + 7, "week") == week + 1
    assert period_of_day(JAN_1_2024 - 1, "week") == week - 1  # Sunday 2023-12-31
    assert period_start_day(week, "week") == JAN_1_2024
    assert period_label(week, "week") == "2024-W01"
    # ISO years: Friday 2021-01-01 belongs to 2020-W53
    assert period_label(period_of_day(date_to_day(date(2021, 1, 1)), "week"), "week") == \
        "2020-W53"
    assert period_of_day(0, "week") == 0  # Thursday 1970-01-01: week 0 began on day -3
    assert period_start_day(0, "week") == -3


def test_months_and_days() -> None:
    month = period_of_day(JAN_1_2024 + 31, "month")  # 2024-02-01
    assert month == 2024 * 12 + 1
    assert period_label(month, "month") == "2024-02"
    assert period_start_day(month, "month") == JAN_1_2024 + 31
    assert period_start_day(month + 1, "month") == JAN_1_2024 + 31 + 29
    assert period_of_day(JAN_1_2024, "day") == JAN_1_2024
    assert period_label(JAN_1_2024, "day") == "2024-01-01"


@given(st.lists(st.integers(-20_000, 40_000), max_size=30),
       st.sampled_from(["day", "week", "month"]))
def test_periods_of_days_is_the_set_of_each_days_period(days: list[int], g: str) -> None:
    assert periods_of_days(days, g) == {period_of_day(d, g) for d in days}


@given(st.integers(-20_000, 40_000), st.sampled_from(["day", "week", "month"]))
def test_a_day_lies_in_its_period(day: int, g: str) -> None:
    period = period_of_day(day, g)
    assert period_start_day(period, g) <= day < period_start_day(period + 1, g)
    assert date_to_day(day_to_date(day)) == day


def test_local_days_follow_the_timezone() -> None:
    instant = ms("2024-03-09T23:30:00+00:00")
    assert AppCalendar("UTC").day_of(instant) == JAN_1_2024 + 68  # 2024-03-09
    assert AppCalendar("Asia/Tokyo").day_of(instant) == JAN_1_2024 + 69  # 08:30 on the 10th
    assert AppCalendar("America/New_York").day_of(instant) == JAN_1_2024 + 68  # 18:30 EST


def test_local_midnights_and_period_ends_across_dst() -> None:
    ny = AppCalendar("America/New_York")
    march_10 = date_to_day(date(2024, 3, 10))  # clocks spring forward at 02:00
    assert ny.day_start_ms(march_10) == ms("2024-03-10T00:00:00-05:00")
    assert ny.day_start_ms(march_10 + 1) == ms("2024-03-11T00:00:00-04:00")
    assert ny.period_end_ms(march_10, "day") - ny.day_start_ms(march_10) == 23 * 3_600_000
    assert AppCalendar("UTC").period_end_ms(JAN_1_2024, "day") == (JAN_1_2024 + 1) * MS_PER_DAY
    week = period_of_day(JAN_1_2024, "week")
    assert AppCalendar("UTC").period_end_ms(week, "week") == ms("2024-01-08T00:00:00+00:00")


def test_clocks() -> None:
    assert accelerated_clock(1) is utc_now_ms
    before = int(datetime.now(UTC).timestamp() * 1000)
    fast = accelerated_clock(1000)
    assert fast() >= before


def test_parse_date() -> None:
    assert parse_date("2024-02-29") == date(2024, 2, 29)
    with pytest.raises(ValueError, match="is not a date"):
        parse_date("2023-02-29")


def test_years_are_kpi_periods() -> None:
    """A year is numbered by itself, labelled YYYY, and ends at local midnight of Jan 1st."""
    new_year = date_to_day(date(2024, 1, 1))
    assert period_of_day(new_year - 1, "year") == 2023
    assert period_of_day(new_year, "year") == 2024
    assert periods_of_days({new_year - 1, new_year, new_year + 40}, "year") == {2023, 2024}
    assert period_start_day(2024, "year") == new_year
    assert period_label(2024, "year") == "2024"
    tokyo = AppCalendar("Asia/Tokyo")
    assert tokyo.period_end_ms(2023, "year") == 1_704_034_800_000  # 2023-12-31T15:00Z
