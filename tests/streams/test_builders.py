"""The pure builders of the reports (streams/builders.py), on counters written by hand."""

from __future__ import annotations

from retention_tracker.streams.builders import (
    current_nps,
    headline_last_day,
    pipeline_counts,
    rpr_figures,
    winback_counts,
    winback_figures,
)
from retention_tracker.streams.calendar import AppCalendar, period_of_day
from retention_tracker.streams.counters import Measure, Stat
from retention_tracker.streams.nps import DETRACTOR, PROMOTER

UTC = AppCalendar("UTC")
DAY_MS = 86_400_000


def test_winback_counts_show_every_label_and_count_old_records_as_late() -> None:
    stats = {(Stat.SENT, "a", 2, "vip", "quick"): 3, (Stat.SENT, "a", 2, "free"): 2,
             (Stat.SENT, "b", 2, "vip", "quick"): 7}
    counts = winback_counts(stats, "a", (2,))
    assert counts[2, Stat.SENT] == {"vip": {"quick": 3, "late": 0},
                                    "payer": {"quick": 0, "late": 0},
                                    "free": {"quick": 0, "late": 2}}
    assert counts[2, Stat.REACTIVATED]["vip"] == {"quick": 0, "late": 0}


def test_winback_figures_add_the_users_due_now_and_have_no_share_of_nobody() -> None:
    stats = {(Stat.INACTIVE, "a", 2): 4, (Stat.SENT, "a", 2, "vip", "late"): 2,
             (Stat.BACK_WITHIN_7D, "a", 2, "vip", "late"): 1}
    figures = winback_figures(stats, "a", (2,), {2: 3})["2"]
    assert (figures["inactive"], figures["notified"]) == (7, 2)
    assert figures["back_within_7d_share"] == 0.5
    assert figures["by_segment"]["free"]["back_within_7d_share"] is None


def test_pipeline_counts_keep_the_order_given() -> None:
    accepted, rejected, duplicates = pipeline_counts([
        ((Stat.ACCEPTED, "b", "session"), 2), ((Stat.ACCEPTED, "a", "install"), 1),
        ((Stat.REJECTED, "bad_json"), 5), ((Stat.DUPLICATE, "a"), 4)])
    assert list(accepted) == ["b", "a"] and accepted["a"] == {"install": 1}
    assert (rejected, duplicates) == ({"bad_json": 5}, {"a": 4})


def test_the_headline_reaches_today_but_not_past_the_largest_offset() -> None:
    daily = {(Measure.DAU, 100): 5}
    assert headline_last_day({}, UTC, 0) is None
    assert headline_last_day(daily, UTC, 110 * DAY_MS) == 110
    assert headline_last_day(daily, UTC, 500 * DAY_MS) == 130


def test_current_nps_splits_the_previous_period_by_retention() -> None:
    week = period_of_day(100, "week")
    cells = {(week, PROMOTER, 0, "s"): 2, (week - 1, PROMOTER, 1, "s"): 1,
             (week - 1, DETRACTOR, 0, "s"): 1, (week - 2, PROMOTER, 1, "s"): 9}
    found = current_nps(cells, "week", 100)["s"]
    assert found["current"]["nps"] == 100.0
    assert (found["retained"]["answers"], found["churned"]["detractors"]) == (1, 1)


def test_rpr_is_repeat_buyers_over_buyers() -> None:
    assert rpr_figures(4, 1) == {"buyers": 4, "repeat_buyers": 1, "rpr": 0.25}
    assert rpr_figures(0, 0)["rpr"] == 0.0
