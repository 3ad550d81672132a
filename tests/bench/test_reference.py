"""Hand-computed checks of the batch reference (METRICS.md sections 1-4).

Every expected number here was worked out by hand from the contract, not by running the code.
"""

from __future__ import annotations

import itertools
import random
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from retention_tracker.bench.reference import (
    add_periods,
    daily_series,
    day_start_ms,
    dedup,
    local_day,
    next_period_start,
    period_end_ms,
    period_label,
    period_offset,
    period_start,
    summary,
    triangle,
)
from retention_tracker.streams.events import Event

_ids = itertools.count()


def ms(iso: str) -> int:
    """Epoch milliseconds of an ISO-8601 string with an offset, exactly."""
    return (datetime.fromisoformat(iso) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )


def ev(user: str, iso: str, kind: str = "session", app: str = "a", eid: str | None = None) -> Event:
    return Event(
        app=app,
        event_id=eid if eid is not None else f"e{next(_ids)}",
        type=kind,
        user_id=user,
        ts_ms=ms(iso),
    )


def by_cohort(rows: list[dict]) -> dict[str, dict]:
    return {row["cohort"]: row for row in rows}


# --------------------------------------------------------------------------------------
# dedup


def test_dedup_keeps_first_occurrence_per_app_and_event_id():
    first = ev("u1", "2024-01-01T10:00:00+00:00", eid="x")
    again = ev("u1", "2024-01-05T10:00:00+00:00", eid="x")  # same key, other content
    other_app = ev("u1", "2024-01-05T10:00:00+00:00", app="b", eid="x")
    other_id = ev("u1", "2024-01-05T10:00:00+00:00", eid="y")
    assert dedup([first, again, other_app, other_id, first]) == [first, other_app, other_id]


# --------------------------------------------------------------------------------------
# local days


def test_local_day_utc_vs_tokyo():
    ts = ms("2024-03-09T23:30:00+00:00")
    assert local_day(ts, "UTC") == date(2024, 3, 9)
    assert local_day(ts, "Asia/Tokyo") == date(2024, 3, 10)  # 08:30 JST on the 10th


def test_local_day_around_new_york_dst():
    ny = "America/New_York"
    # Spring forward on 2024-03-10 (EST -5 -> EDT -4 at 02:00 local).
    assert local_day(ms("2024-03-10T04:30:00+00:00"), ny) == date(2024, 3, 9)  # 23:30 EST
    assert local_day(ms("2024-03-11T04:30:00+00:00"), ny) == date(2024, 3, 11)  # 00:30 EDT
    assert local_day(ms("2024-03-11T03:59:59.999+00:00"), ny) == date(2024, 3, 10)
    # Fall back on 2024-11-03 (EDT -4 -> EST -5 at 02:00 local).
    assert local_day(ms("2024-11-03T04:30:00+00:00"), ny) == date(2024, 11, 3)  # 00:30 EDT
    assert local_day(ms("2024-11-04T04:30:00+00:00"), ny) == date(2024, 11, 3)  # 23:30 EST


def test_day_start_and_end_across_dst():
    ny = "America/New_York"
    assert day_start_ms(date(2024, 3, 10), ny) == ms("2024-03-10T05:00:00+00:00")
    assert day_start_ms(date(2024, 3, 11), ny) == ms("2024-03-11T04:00:00+00:00")
    # The spring-forward day is 23 hours long, the fall-back day 25.
    assert (
        period_end_ms(date(2024, 3, 10), "day", ny) - day_start_ms(date(2024, 3, 10), ny)
        == 23 * 3600 * 1000
    )
    assert (
        period_end_ms(date(2024, 11, 3), "day", ny) - day_start_ms(date(2024, 11, 3), ny)
        == 25 * 3600 * 1000
    )
    # Sao Paulo used to skip midnight itself (00:00 -> 01:00 on 2018-11-04): the day starts
    # at the jump, 00:00 -03 == 01:00 -02 == 03:00 UTC.
    sp = "America/Sao_Paulo"
    start = day_start_ms(date(2018, 11, 4), sp)
    assert start == ms("2018-11-04T03:00:00+00:00")
    assert local_day(start, sp) == date(2018, 11, 4)
    assert local_day(start - 1, sp) == date(2018, 11, 3)


# --------------------------------------------------------------------------------------
# periods


def test_iso_week_labels_across_year_boundaries():
    assert period_start(date(2020, 12, 31), "week") == date(2020, 12, 28)
    assert period_label(period_start(date(2020, 12, 31), "week"), "week") == "2020-W53"
    assert period_label(period_start(date(2021, 1, 3), "week"), "week") == "2020-W53"  # Sunday
    assert period_label(period_start(date(2021, 1, 4), "week"), "week") == "2021-W01"
    assert period_label(period_start(date(2024, 1, 1), "week"), "week") == "2024-W01"
    # Monday 2019-12-30 belongs to ISO year 2020.
    assert period_label(period_start(date(2019, 12, 31), "week"), "week") == "2020-W01"
    assert period_offset(date(2020, 12, 31), date(2021, 1, 4), "week") == 1
    assert period_offset(date(2021, 1, 3), date(2021, 1, 4), "week") == 1
    assert period_offset(date(2020, 12, 28), date(2021, 1, 3), "week") == 0


def test_month_and_day_periods():
    assert period_start(date(2020, 11, 15), "month") == date(2020, 11, 1)
    assert period_label(date(2020, 11, 1), "month") == "2020-11"
    assert period_label(date(2024, 2, 29), "day") == "2024-02-29"
    assert next_period_start(date(2020, 12, 1), "month") == date(2021, 1, 1)
    assert period_offset(date(2020, 11, 30), date(2021, 2, 1), "month") == 3
    assert period_offset(date(2020, 12, 31), date(2021, 1, 1), "month") == 1
    assert period_offset(date(2020, 12, 31), date(2021, 1, 1), "day") == 1
    assert add_periods(date(2020, 11, 15), 3, "month") == date(2021, 2, 1)
    assert add_periods(date(2020, 12, 31), 1, "week") == date(2021, 1, 4)


def test_unknown_granularity_or_kind_is_refused():
    events = [ev("u1", "2024-01-01T10:00:00+00:00")]
    with pytest.raises(ValueError):
        period_start(date(2024, 1, 1), "decade")
    with pytest.raises(ValueError):
        triangle(events, "a", "year", "classic", "UTC", 0)
    with pytest.raises(ValueError):
        triangle(events, "a", "day", "bounded", "UTC", 0)


# --------------------------------------------------------------------------------------
# A small population over four days in UTC


def small_population() -> list[Event]:
    return [
        ev("u1", "2024-01-01T10:00:00+00:00", "install"),
        ev("u1", "2024-01-02T09:00:00+00:00"),
        ev("u1", "2024-01-04T12:00:00+00:00"),
        ev("u2", "2024-01-01T23:00:00+00:00", "install", eid="u2-install"),
        ev("u2", "2024-01-03T08:00:00+00:00"),
        # A redelivered copy of u2's install carrying another time: ignored, so u2 is not
        # active on 01-04 and installs(01-04) does not count u2.
        ev("u2", "2024-01-04T08:00:00+00:00", "install", eid="u2-install"),
        # u3's install arrives first but happened after its first session: cohort 01-02.
        ev("u3", "2024-01-03T10:00:00+00:00", "install"),
        ev("u3", "2024-01-02T08:00:00+00:00"),
        # u4 reinstalls two days later and never opens a session.
        ev("u4", "2024-01-02T12:00:00+00:00", "install"),
        ev("u4", "2024-01-04T12:00:00+00:00", "install"),
        # u5 arrives in the last millisecond of 01-04.
        ev("u5", "2024-01-04T23:59:59.999+00:00"),
        # Another app: must not leak into app "a", not even into its last day with data.
        ev("u1", "2024-01-01T10:00:00+00:00", app="b"),
        ev("u9", "2024-01-06T10:00:00+00:00", app="b"),
    ]


def test_small_population_classic_day_triangle():
    now = ms("2024-01-04T12:00:00+00:00")
    rows = triangle(small_population(), "a", "day", "classic", "UTC", now)
    assert rows == [
        {
            "cohort": "2024-01-01",
            "size": 2,  # u1, u2
            "counts": [2, 1, 1, 1],  # 01-02: u1; 01-03: u2; 01-04: u1
            "values": [1.0, 0.5, 0.5, 0.5],
            "complete": [True, True, True, False],
        },
        {
            "cohort": "2024-01-02",
            "size": 2,  # u3, u4
            "counts": [2, 1, 1],  # 01-03: u3; 01-04: u4
            "values": [1.0, 0.5, 0.5],
            "complete": [True, True, False],
        },
        {
            "cohort": "2024-01-04",
            "size": 1,  # u5
            "counts": [1],
            "values": [1.0],
            "complete": [False],
        },
    ]


def test_small_population_rolling_day_triangle():
    now = ms("2024-01-05T00:00:00+00:00")  # exactly the end of 01-04: every cell complete
    rows = triangle(small_population(), "a", "day", "rolling", "UTC", now)
    got = by_cohort(rows)
    assert list(got) == ["2024-01-01", "2024-01-02", "2024-01-04"]
    assert got["2024-01-01"]["counts"] == [2, 2, 2, 1]  # u2 last seen 01-03, u1 01-04
    assert got["2024-01-01"]["values"] == [1.0, 1.0, 1.0, 0.5]
    assert got["2024-01-02"]["counts"] == [2, 2, 1]  # u3 last seen 01-03, u4 01-04
    assert got["2024-01-04"]["counts"] == [1]
    assert all(all(row["complete"]) for row in rows)


def test_small_population_daily_summaries():
    events = small_population()
    assert summary(events, "a", date(2024, 1, 1), "UTC") == {
        "app": "a",
        "date": "2024-01-01",
        "dau": 2,
        "wau": 2,
        "mau": 2,
        "stickiness": 1.0,
        "installs": 2,
        "new_users": 2,
        "returning_users": 0,
        "revenue": {},
        "payers": 0,
        "arpdau": {},
        "arppu": {},
    }
    day2 = summary(events, "a", date(2024, 1, 2), "UTC")
    assert (day2["dau"], day2["wau"], day2["mau"], day2["stickiness"]) == (3, 4, 4, 0.75)
    # installs: only u4 (u3's install is on 01-03); new: u3 (from its session) and u4.
    assert (day2["installs"], day2["new_users"], day2["returning_users"]) == (1, 2, 1)
    day3 = summary(events, "a", date(2024, 1, 3), "UTC")
    assert (day3["dau"], day3["wau"], day3["stickiness"]) == (2, 4, 0.5)
    # u3's late install counts as an install but u3 is not new on 01-03.
    assert (day3["installs"], day3["new_users"], day3["returning_users"]) == (1, 0, 2)
    day4 = summary(events, "a", date(2024, 1, 4), "UTC")
    assert (day4["dau"], day4["wau"], day4["mau"], day4["stickiness"]) == (3, 5, 5, 0.6)
    # u4's reinstall is an install again, but u4 is new only on 01-02; u5 is new.
    assert (day4["installs"], day4["new_users"], day4["returning_users"]) == (1, 1, 2)


def test_daily_series_spans_the_apps_own_days():
    series = daily_series(small_population(), "a", "UTC")
    assert list(series) == [date(2024, 1, d) for d in (1, 2, 3, 4)]
    assert [s["dau"] for s in series.values()] == [2, 3, 2, 3]
    assert [s["installs"] for s in series.values()] == [2, 1, 1, 1]
    assert [s["new_users"] for s in series.values()] == [2, 2, 0, 1]
    assert series[date(2024, 1, 3)] == summary(small_population(), "a", date(2024, 1, 3), "UTC")
    # A day without data still has a summary: zeros, and 0.0 stickiness when MAU is 0.
    empty = summary(small_population(), "a", date(2025, 1, 1), "UTC")
    assert (empty["dau"], empty["mau"], empty["stickiness"]) == (0, 0, 0.0)
    assert daily_series(small_population(), "nope", "UTC") == {}


def test_gap_days_are_in_the_series_and_windows_are_7_and_30_days():
    events = [ev("u1", "2024-01-01T10:00:00+00:00"), ev("u2", "2024-02-05T10:00:00+00:00")]
    series = daily_series(events, "a", "UTC")
    assert len(series) == 36  # 2024-01-01 .. 2024-02-05
    jan = {d.day: s for d, s in series.items() if d.month == 1}
    assert (jan[7]["dau"], jan[7]["wau"], jan[7]["mau"]) == (0, 1, 1)  # 01-01 = d-6
    assert (jan[8]["wau"], jan[8]["mau"]) == (0, 1)
    assert (jan[30]["mau"], jan[30]["stickiness"]) == (1, 0.0)  # 01-01 = d-29
    assert (jan[31]["mau"], jan[31]["stickiness"]) == (0, 0.0)
    assert series[date(2024, 2, 5)]["stickiness"] == 1.0


def test_duplicates_change_nothing():
    events = small_population()
    doubled = events + [
        Event(app=e.app, event_id=e.event_id, type="session", user_id="intruder", ts_ms=0)
        for e in events
    ]
    now = ms("2024-01-10T00:00:00+00:00")
    for kind in ("classic", "rolling"):
        assert triangle(doubled, "a", "day", kind, "UTC", now) == triangle(
            events, "a", "day", kind, "UTC", now
        )
    assert daily_series(doubled, "a", "UTC") == daily_series(events, "a", "UTC")


def test_arrival_order_does_not_matter():
    events = [e for e in small_population() if e.event_id != "u2-install"]
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    now = ms("2024-01-10T00:00:00+00:00")
    for granularity in ("day", "week", "month"):
        for kind in ("classic", "rolling"):
            assert triangle(shuffled, "a", granularity, kind, "UTC", now) == triangle(
                events, "a", granularity, kind, "UTC", now
            )
    assert daily_series(shuffled, "a", "UTC") == daily_series(events, "a", "UTC")


# --------------------------------------------------------------------------------------
# The contract's own example


def test_d1_of_100_users_with_15_back_is_015():
    day0, day1, day2 = "2024-05-01T12:00:00+00:00", "2024-05-02T12:00", "2024-05-03T12:00"
    events = [ev(f"u{i}", day0, "install") for i in range(100)]
    events += [ev(f"u{i}", day1 + "+00:00") for i in range(15)]  # u0..u14 back on day 1
    events += [ev(f"u{i}", day2 + "+00:00") for i in range(10, 30)]  # u10..u29 on day 2
    now = ms("2024-05-04T00:00:00+00:00")
    (classic,) = triangle(events, "a", "day", "classic", "UTC", now)
    assert classic["size"] == 100
    assert classic["counts"] == [100, 15, 20]
    assert classic["values"] == [1.0, 0.15, 0.2]
    (rolling,) = triangle(events, "a", "day", "rolling", "UTC", now)
    assert rolling["counts"] == [100, 30, 20]  # u0..u29 came back on day 1 or later
    assert rolling["values"] == [1.0, 0.3, 0.2]


def test_values_are_rounded_to_four_places():
    events = [ev(f"u{i}", "2024-05-01T12:00:00+00:00") for i in range(3)]
    events.append(ev("u0", "2024-05-02T12:00:00+00:00"))
    (row,) = triangle(events, "a", "day", "classic", "UTC", 0)
    assert row["values"] == [1.0, 0.3333]
    assert row["complete"] == [False, False]  # now = epoch: nothing has ended


# --------------------------------------------------------------------------------------
# Time zones


def tokyo_population() -> list[Event]:
    return [
        ev("u1", "2024-01-01T23:30:00+00:00"),  # Tokyo 01-02 08:30
        ev("u1", "2024-01-02T10:00:00+00:00"),  # Tokyo 01-02 19:00
        ev("u2", "2024-01-01T10:00:00+00:00"),  # Tokyo 01-01 19:00
        ev("u2", "2024-01-01T23:45:00+00:00"),  # Tokyo 01-02 08:45
    ]


def test_same_events_give_other_cohorts_in_tokyo():
    now = ms("2024-01-02T15:00:00+00:00")  # Tokyo 2024-01-03 00:00: Tokyo's 01-02 just ended
    utc = triangle(tokyo_population(), "a", "day", "classic", "UTC", now)
    assert utc == [
        {
            "cohort": "2024-01-01",
            "size": 2,
            "counts": [2, 1],  # only u1 is seen on UTC 01-02
            "values": [1.0, 0.5],
            "complete": [True, False],  # UTC 01-02 ends at 2024-01-03T00:00Z
        }
    ]
    tokyo = triangle(tokyo_population(), "a", "day", "classic", "Asia/Tokyo", now)
    assert tokyo == [
        {
            "cohort": "2024-01-01",
            "size": 1,  # u2
            "counts": [1, 1],
            "values": [1.0, 1.0],
            "complete": [True, True],  # end == now counts as ended
        },
        {
            "cohort": "2024-01-02",
            "size": 1,  # u1
            "counts": [1],
            "values": [1.0],
            "complete": [True],
        },
    ]
    one_ms_earlier = triangle(tokyo_population(), "a", "day", "classic", "Asia/Tokyo", now - 1)
    assert [row["complete"] for row in one_ms_earlier] == [[True, False], [False]]
    d2 = summary(tokyo_population(), "a", date(2024, 1, 2), "Asia/Tokyo")
    assert (d2["dau"], d2["new_users"], d2["returning_users"]) == (2, 1, 1)
    d2_utc = summary(tokyo_population(), "a", date(2024, 1, 2), "UTC")
    assert (d2_utc["dau"], d2_utc["new_users"], d2_utc["returning_users"]) == (1, 0, 1)


def test_new_york_dst_days_and_completeness():
    ny = "America/New_York"
    events = [
        ev("u1", "2024-03-10T04:30:00+00:00", "install"),  # 03-09 23:30 EST
        ev("u1", "2024-03-11T03:30:00+00:00"),  # 03-10 23:30 EDT (would be 22:30 EST)
        ev("u2", "2024-03-11T04:30:00+00:00", "install"),  # 03-11 00:30 EDT
    ]
    end_of_march_10 = ms("2024-03-11T04:00:00+00:00")
    rows = triangle(events, "a", "day", "classic", ny, end_of_march_10)
    assert rows == [
        {
            "cohort": "2024-03-09",
            "size": 1,
            "counts": [1, 1, 0],
            "values": [1.0, 1.0, 0.0],
            "complete": [True, True, False],
        },
        {"cohort": "2024-03-11", "size": 1, "counts": [1], "values": [1.0], "complete": [False]},
    ]
    earlier = triangle(events, "a", "day", "classic", ny, end_of_march_10 - 1)
    assert earlier[0]["complete"] == [True, False, False]
    # The same events read in UTC: u1 is 03-10 and 03-11, u2 03-11.
    utc = triangle(events, "a", "day", "classic", "UTC", end_of_march_10)
    assert [(r["cohort"], r["counts"]) for r in utc] == [
        ("2024-03-10", [1, 1]),
        ("2024-03-11", [1]),
    ]
    assert summary(events, "a", date(2024, 3, 11), ny)["installs"] == 1
    assert summary(events, "a", date(2024, 3, 11), "UTC")["installs"] == 1  # u2 (u1: 03-10)
    assert summary(events, "a", date(2024, 3, 10), ny)["installs"] == 0


# --------------------------------------------------------------------------------------
# Weeks and months


def week_population() -> list[Event]:
    return [
        ev("A", "2020-12-31T12:00:00+00:00", "install"),  # Thu, 2020-W53
        ev("A", "2021-01-03T12:00:00+00:00"),  # Sun, still 2020-W53
        ev("A", "2021-01-04T12:00:00+00:00"),  # Mon, 2021-W01
        ev("B", "2021-01-01T12:00:00+00:00", "install"),  # Fri, 2020-W53
        ev("B", "2021-01-12T12:00:00+00:00"),  # 2021-W02
        ev("C", "2021-01-05T12:00:00+00:00", "install"),  # 2021-W01
        ev("C", "2021-01-06T12:00:00+00:00"),  # 2021-W01 again: still one active period
    ]


def test_week_triangle_across_new_year():
    now = ms("2021-01-11T00:00:00+00:00")  # W53 and W01 have ended, W02 has not
    classic = triangle(week_population(), "a", "week", "classic", "UTC", now)
    assert classic == [
        {
            "cohort": "2020-W53",
            "size": 2,
            "counts": [2, 1, 1],  # W01: A; W02: B
            "values": [1.0, 0.5, 0.5],
            "complete": [True, True, False],
        },
        {
            "cohort": "2021-W01",
            "size": 1,
            "counts": [1, 0],
            "values": [1.0, 0.0],
            "complete": [True, False],
        },
    ]
    rolling = by_cohort(triangle(week_population(), "a", "week", "rolling", "UTC", now))
    assert rolling["2020-W53"]["counts"] == [2, 2, 1]  # B (W02) is also active >= W01
    assert rolling["2021-W01"]["counts"] == [1, 0]


def test_date_filters_select_cohorts_by_period():
    now = ms("2021-02-01T00:00:00+00:00")
    events = week_population()

    def cohorts(**filters: date) -> list[str]:
        rows = triangle(events, "a", "week", "classic", "UTC", now, **filters)
        return [row["cohort"] for row in rows]

    assert cohorts() == ["2020-W53", "2021-W01"]
    assert cohorts(date_from=date(2021, 1, 3)) == ["2020-W53", "2021-W01"]  # Sunday of W53
    assert cohorts(date_from=date(2021, 1, 4)) == ["2021-W01"]
    assert cohorts(date_to=date(2021, 1, 3)) == ["2020-W53"]
    assert cohorts(date_to=date(2020, 12, 28)) == ["2020-W53"]
    assert cohorts(date_to=date(2020, 12, 27)) == []
    assert cohorts(date_from=date(2021, 1, 11)) == []
    # Filters keep whole rows: offsets still run to the last period with data.
    (row,) = triangle(events, "a", "week", "classic", "UTC", now, date_to=date(2020, 12, 31))
    assert row["counts"] == [2, 1, 1]
    # Day granularity: the small population's cohorts are 01-01, 01-02 and 01-04.
    day_rows = triangle(
        small_population(),
        "a",
        "day",
        "rolling",
        "UTC",
        now,
        date_from=date(2024, 1, 2),
        date_to=date(2024, 1, 3),
    )
    assert [(r["cohort"], r["counts"]) for r in day_rows] == [("2024-01-02", [2, 2, 1])]


def test_month_triangle_across_new_year():
    events = [
        ev("m1", "2020-11-15T12:00:00+00:00", "install"),
        ev("m1", "2020-12-01T00:00:00+00:00"),
        ev("m1", "2021-02-28T23:00:00+00:00"),
        ev("m2", "2020-12-31T23:00:00+00:00", "install"),
        ev("m2", "2021-01-01T01:00:00+00:00"),
    ]
    now = ms("2021-02-01T00:00:00+00:00")
    classic = triangle(events, "a", "month", "classic", "UTC", now)
    assert classic == [
        {
            "cohort": "2020-11",
            "size": 1,
            "counts": [1, 1, 0, 1],  # Nov, Dec, (not Jan), Feb
            "values": [1.0, 1.0, 0.0, 1.0],
            "complete": [True, True, True, False],
        },
        {
            "cohort": "2020-12",
            "size": 1,
            "counts": [1, 1, 0],
            "values": [1.0, 1.0, 0.0],
            "complete": [True, True, False],
        },
    ]
    rolling = by_cohort(triangle(events, "a", "month", "rolling", "UTC", now))
    assert rolling["2020-11"]["counts"] == [1, 1, 1, 1]
    assert rolling["2020-12"]["counts"] == [1, 1, 0]
    # In Tokyo m2's 2020-12-31T23:00Z is already January and m1's last event is March.
    tokyo = triangle(events, "a", "month", "classic", "Asia/Tokyo", now)
    assert [(r["cohort"], r["counts"]) for r in tokyo] == [
        ("2020-11", [1, 1, 0, 0, 1]),
        ("2021-01", [1, 0, 0]),
    ]


# --------------------------------------------------------------------------------------
# Properties on a larger random population


def random_population(seed: int, n_users: int, n_events: int) -> list[Event]:
    rng = random.Random(seed)
    base = ms("2023-12-20T00:00:00+00:00")
    span = 90 * 24 * 3600 * 1000
    events = []
    for i in range(n_events):
        user = f"u{rng.randrange(n_users)}"
        kind = rng.choice(["install", "session", "session", "session", "purchase"])
        app = "a" if rng.random() < 0.9 else "b"
        events.append(
            Event(
                app=app, event_id=f"r{i}", type=kind, user_id=user, ts_ms=base + rng.randrange(span)
            )
        )
    events += events[: n_events // 20]  # some duplicates
    return events


@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo", "America/New_York"])
@pytest.mark.parametrize("granularity", ["day", "week", "month"])
def test_triangle_invariants(tz: str, granularity: str):
    events = random_population(seed=11, n_users=300, n_events=3000)
    now = ms("2024-02-15T00:00:00+00:00")
    classic = triangle(events, "a", granularity, "classic", tz, now)
    rolling = triangle(events, "a", granularity, "rolling", tz, now)
    assert [r["cohort"] for r in classic] == [r["cohort"] for r in rolling]
    assert [r["cohort"] for r in classic] == sorted(r["cohort"] for r in classic)
    app_users = {e.user_id for e in events if e.app == "a"}
    assert sum(r["size"] for r in classic) == len(app_users)
    lengths = [len(r["counts"]) for r in classic]
    assert lengths == sorted(lengths, reverse=True)  # a triangle
    assert lengths[-1] >= 1
    for c, r in zip(classic, rolling, strict=True):
        assert c["size"] == r["size"] == c["counts"][0] == r["counts"][0]
        assert c["complete"] == r["complete"]
        assert all(rc >= cc for rc, cc in zip(r["counts"], c["counts"], strict=True))
        assert all(a >= b for a, b in itertools.pairwise(r["counts"]))  # rolling never rises
        assert r["counts"][-1] == c["counts"][-1]  # the last offset is the last period
        assert all(a >= b for a, b in itertools.pairwise(c["complete"]))  # True.. then False
        assert c["values"] == [round(x / c["size"], 4) for x in c["counts"]]


def test_daily_series_invariants():
    events = random_population(seed=5, n_users=200, n_events=2000)
    series = daily_series(events, "a", "Europe/Berlin")
    app_users = {e.user_id for e in events if e.app == "a"}
    assert sum(s["new_users"] for s in series.values()) == len(app_users)
    for s in series.values():
        assert s["new_users"] <= s["dau"] <= s["wau"] <= s["mau"]
        assert s["returning_users"] == s["dau"] - s["new_users"]
        assert s["installs"] <= s["dau"]
    # The sum of new users per day equals the sizes of the daily cohorts.
    rows = triangle(events, "a", "day", "classic", "Europe/Berlin", 0)
    sizes = {row["cohort"]: row["size"] for row in rows}
    assert sizes == {d.isoformat(): s["new_users"] for d, s in series.items() if s["new_users"]}


def test_fifty_thousand_events_in_a_few_seconds():
    events = random_population(seed=3, n_users=5000, n_events=50_000)
    started = time.perf_counter()
    triangle(events, "a", "day", "classic", "America/New_York", 0)
    triangle(events, "a", "day", "rolling", "America/New_York", 0)
    daily_series(events, "a", "America/New_York")
    assert time.perf_counter() - started < 20  # generous; about a second on a laptop
