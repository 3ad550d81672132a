"""Hand-worked examples of the figures (streams/figures.py): counters in, the numbers people
read out. Every expected value is worked out from METRICS.md by hand in the comments."""

from __future__ import annotations

from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar, period_of_day
from retention_tracker.streams.counters import Stat
from retention_tracker.streams.figures import (
    Bounds,
    cohort_rows,
    current_nps,
    headline,
    pipeline_counts,
    rpr_figures,
    winback_counts,
    winback_figures,
)
from retention_tracker.streams.nps import DETRACTOR, PROMOTER
from retention_tracker.streams.reports import CohortRow

UTC = AppCalendar("UTC")


def row(d1_count: int, size: int = 4, d1_complete: bool = True) -> CohortRow:
    return CohortRow(100, "1970-04-11", size, (size, d1_count), (1.0, d1_count / size),
                     (True, d1_complete))


def test_headline_baseline_is_the_7_complete_cohorts_before_the_latest() -> None:
    """§4: D1 of the latest cohort whose day 1 is complete, against the mean of the 7
    before it. Cohorts of 4 users with 0..4 of them back on day 1."""
    rows = [row(n) for n in (0, 1, 2, 3, 4, 0, 1, 2, 4)] + [row(0, d1_complete=False)]
    # latest complete: 4/4 = 1.0 (the last row's day 1 is not over: left out);
    # baseline: the 7 before it, 1+2+3+4+0+1+2 = 13 of 28 users = 0.4643
    # (with the latest in it, 16/28 = 0.5714; the 7 oldest, 11/28 = 0.3929)
    assert headline(rows, 1) == (1.0, 0.4643)


def test_headline_baseline_over_the_cohorts_there_are() -> None:
    assert headline([row(1), row(3)], 1) == (0.75, 0.25)  # one cohort before: 1/4
    assert headline([row(2)], 1) == (0.5, None)  # nothing before it: no baseline
    assert headline([row(2, d1_complete=False)], 1) is None
    assert headline([row(2)], 7) is None  # no row reaches day 7


def test_rolling_triangle_is_the_suffix_sum_of_last_active_offsets() -> None:
    """§4 rolling: users of c active in any period >= c+N. Cohort day 100 of 4 users, last
    active at offsets 0 (one), 2 (two) and 3 (one); data up to day 103: active at >= 0: 4,
    >= 1: 3, >= 2: 3, >= 3: 1."""
    last = {(100, 0): 1, (100, 2): 2, (100, 3): 1}
    rows = cohort_rows({(100,): 4}, last, "rolling", "day", Bounds(UTC, 103 * MS_PER_DAY, 103))
    assert [r.as_json() for r in rows] == [{
        "cohort": "1970-04-11", "size": 4, "counts": [4, 3, 3, 1],
        "values": [1.0, 0.75, 0.75, 0.25],
        # day 100 + N ends at the start of day 101 + N: by day 103 00:00, days 100-102 have
        "complete": [True, True, True, False],
    }]


def test_classic_triangle_is_the_cells_as_they_are_with_gaps_as_zero() -> None:
    cells = {(100, 0): 4, (100, 3): 1, (101, 0): 2, (101, 1): 1}
    rows = cohort_rows({(100,): 4, (101,): 2, (102,): 0}, cells, "classic", "day",
                       Bounds(UTC, 104 * MS_PER_DAY, 103))
    assert [(r.period, r.cohort, r.counts, r.values) for r in rows] == [
        (100, "1970-04-11", (4, 0, 0, 1), (1.0, 0.0, 0.0, 0.25)),
        (101, "1970-04-12", (2, 1, 0), (1.0, 0.5, 0.0)),  # day 102: an empty cohort, not listed
    ]


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
