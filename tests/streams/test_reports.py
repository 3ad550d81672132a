"""streams/reports.py: the JSON form every surface shows, in the order the fields say."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import pytest

from retention_tracker.streams.reports import (
    CohortReport,
    CohortRow,
    MoneyRow,
    PipelineReport,
    SummaryReport,
)


def test_a_report_for_all_users_names_no_segment_and_rows_become_lists() -> None:
    row = CohortRow(19723, "2024-01-01", 2, (2, 1), (1.0, 0.5), (True, False))
    report = CohortReport("a", "day", "classic", "UTC", None, None, "2024-01-02T00:00:00Z",
                          (row,))
    doc = report.as_json()
    assert list(doc) == ["app", "granularity", "kind", "timezone", "as_of", "cohorts"]
    # the period is the row's data, not shown: the label is
    assert doc["cohorts"] == [{"cohort": "2024-01-01", "size": 2, "counts": [2, 1],
                               "values": [1.0, 0.5], "complete": [True, False]}]
    segmented = CohortReport("a", "day", "ltv", "UTC", "platform=ios", "EUR", "t", ())
    assert segmented.as_json()["segment"] == "platform=ios"
    assert segmented.as_json()["currency"] == "EUR"
    with pytest.raises(FrozenInstanceError):
        report.app = "b"  # type: ignore[misc]


def test_a_summary_flattens_its_day_figures_and_shows_live_totals_for_all_users() -> None:
    day = {"app": "a", "date": "2024-01-01", "dau": 3}
    assert SummaryReport(day, True, "value=vip").as_json() == {**day, "complete": True,
                                                               "segment": "value=vip"}
    everyone = SummaryReport(day, False, None, {"2": {"inactive": 1}}, "t", {"no_key": 0})
    assert everyone.as_json() == {**day, "complete": False, "winback": {"2": {"inactive": 1}},
                                  "winback_as_of": "t", "forwarded": {"no_key": 0}}


def test_the_pipeline_shows_lag_only_where_a_worker_added_its_own() -> None:
    report = PipelineReport("t", {}, {}, {}, {}, {})
    assert "lag" not in report.as_json()
    assert replace(report, lag={"t/0": 4}).as_json()["lag"] == {"t/0": 4}


def test_a_money_row_shows_its_cac_for_roas_only_and_null_without_costs() -> None:
    ltv = MoneyRow(19723, "2024-01-01", 2, None, (1.0, 3.0), (0.5, 1.5), (True, False))
    assert ltv.as_json() == {"cohort": "2024-01-01", "size": 2, "revenue": [1.0, 3.0],
                             "values": [0.5, 1.5], "complete": [True, False]}
    roas = MoneyRow(19723, "2024-01-01", 2, None, (1.0,), (None,), (True,), roas=True)
    assert list(roas.as_json()) == ["cohort", "size", "cac", "revenue", "values", "complete"]
    assert roas.as_json()["cac"] is None
