"""Hand-worked examples of the figures (streams/figures.py): counters in, the numbers people
read out. Every expected value is worked out from METRICS.md by hand in the comments."""

from __future__ import annotations

from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.figures import cohort_rows, headline
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
    rows = cohort_rows({(100,): 4}, last, "rolling", "day", UTC, 103 * MS_PER_DAY, 103)
    assert [r.as_json() for r in rows] == [{
        "cohort": "1970-04-11", "size": 4, "counts": [4, 3, 3, 1],
        "values": [1.0, 0.75, 0.75, 0.25],
        # day 100 + N ends at the start of day 101 + N: by day 103 00:00, days 100-102 have
        "complete": [True, True, True, False],
    }]


def test_classic_triangle_is_the_cells_as_they_are_with_gaps_as_zero() -> None:
    cells = {(100, 0): 4, (100, 3): 1, (101, 0): 2, (101, 1): 1}
    rows = cohort_rows({(100,): 4, (101,): 2, (102,): 0}, cells, "classic", "day", UTC,
                       104 * MS_PER_DAY, 103)
    assert [(r.period, r.cohort, r.counts, r.values) for r in rows] == [
        (100, "1970-04-11", (4, 0, 0, 1), (1.0, 0.0, 0.0, 0.25)),
        (101, "1970-04-12", (2, 1, 0), (1.0, 0.5, 0.0)),  # day 102: an empty cohort, not listed
    ]
