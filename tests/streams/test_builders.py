"""The pure builders of the reports (streams/builders.py), on counters written by hand."""

from __future__ import annotations

from retention_tracker.streams.builders import (
    LiveReads,
    Triangle,
    app_figures,
    headline_last_day,
    nps_figures_by,
    pipeline_figures,
    rpr_by_cohort,
)
from retention_tracker.streams.calendar import AppCalendar, period_of_day
from retention_tracker.streams.counters import Measure, Stat
from retention_tracker.streams.figures import Bounds
from retention_tracker.streams.nps import DETRACTOR, PROMOTER
from retention_tracker.streams.reports import CohortRow, MoneyRow

UTC = AppCalendar("UTC")
DAY_MS = 86_400_000


def test_the_headline_reaches_today_but_not_past_the_largest_offset() -> None:
    daily = {(Measure.DAU, 100): 5}
    assert headline_last_day({}, UTC, 0) is None
    assert headline_last_day(daily, UTC, 110 * DAY_MS) == 110
    assert headline_last_day(daily, UTC, 500 * DAY_MS) == 130


def test_a_triangle_names_the_families_it_is_built_from() -> None:
    def families(triangle: Triangle) -> tuple[Measure, Measure, Measure | None]:
        return triangle.sizes, triangle.cells, triangle.costs

    assert families(Triangle("classic", "week")) == (Measure.COHORT_SIZE, Measure.CLASSIC, None)
    assert families(Triangle("rolling", "day", "24h")) == (Measure.WINDOW24,
                                                           Measure.LAST_WINDOW24, None)
    assert families(Triangle("rolling", "day", returning="purchase"))[1] is Measure.LAST_RETURN
    assert families(Triangle("payer_conversion", "day"))[1] is Measure.FIRST_PAYMENT
    assert families(Triangle("roas", "day")) == (Measure.COHORT_SIZE, Measure.LTV, Measure.COST)
    assert [Triangle(k, "day").in_currency for k in ("classic", "payer_conversion", "ltv")] == [
        False, False, True]


def test_a_triangle_on_a_returning_event_counts_that_type_only() -> None:
    """Cohort day 100 of 2: one purchased on day 101, the other only sent a bet."""
    cells = {(100, 1, "purchase"): 1, (100, 1, "bet"): 1}
    [row] = Triangle("classic", "day", returning="purchase").rows(
        {(100,): 2}, cells, {}, None, Bounds(UTC, 102 * DAY_MS, 101))
    assert isinstance(row, CohortRow)
    assert (row.period, row.counts, row.values) == (100, (0, 1), (0.0, 0.5))


def test_payer_conversion_is_the_cumulative_share_of_first_payers() -> None:
    """Cohort of 4: one first pays at +0, one at +2: paid by +0, +1, +2: 1, 1, 2."""
    [row] = Triangle("payer_conversion", "day").rows(
        {(100,): 4}, {(100, 0): 1, (100, 2): 1}, {}, None, Bounds(UTC, 103 * DAY_MS, 102))
    assert isinstance(row, CohortRow)
    assert (row.counts, row.values) == ((1, 1, 2), (0.25, 0.25, 0.5))


def test_app_figures_show_the_recent_cohorts_and_build_the_headline_from_older_ones() -> None:
    """Today is day 100 (UTC, noon), two days shown (99 and 100). Cohort 95 (2 users, 1
    back on day 96) is not shown but is the latest whose day 1 has ended: the headline
    D1 is its 1 of 2. Cohort 99 (4 users) paid 5.00 USD on day 99 and 1.00 EUR on day
    100 with 2.00 USD of install costs: LTV 1.25 USD then 1.25, ROAS (USD only) 2.5."""
    usd, eur = 50_000, 10_000  # in units of 1/10,000
    read = LiveReads(
        daily={(Measure.DAU, 100): 3},
        sizes={(95,): 2, (99,): 4, (100,): 2},
        cells={"classic": {(95, 0): 2, (95, 1): 1, (99, 0): 4, (99, 1): 1, (100, 0): 2},
               "rolling": {(95, 1): 1, (95, 0): 1, (99, 0): 3, (99, 1): 1, (100, 0): 2}},
        windows24={"classic": {(99, 0): 4, (99, 1): 2}, "rolling": {(99, 1): 2, (99, 0): 2}},
        returned={"purchase": {(99, 1, "purchase"): 1}},
        ltv={"USD": {(99, 0, "USD"): usd}, "EUR": {(99, 1, "EUR"): eur}},
        costs={(99,): 20_000},
        periods={}, nps={}, due_now={2: 1})
    figures = app_figures("a", read, {(Stat.INACTIVE, "a", 2): 3}, UTC, 100 * DAY_MS + DAY_MS // 2,
                          cohort_days=2, currency="USD", thresholds=(2,))
    assert {kind: [r.period for r in rows] for kind, rows in figures.cohorts.items()} == {
        "classic": [99, 100], "rolling": [99, 100]}
    assert figures.cohorts["rolling"][0].counts == (4, 1)
    assert (figures.headline[1], figures.headline_size[1]) == ((0.5, None), 2)
    assert [r.counts for r in figures.cohorts24["classic"]] == [(4, 2)]
    assert figures.returning["purchase"][0].counts == (0, 1)
    [ltv_usd, _] = figures.money["ltv"]["USD"]
    assert isinstance(ltv_usd, MoneyRow) and ltv_usd.values == (1.25, 1.25)
    assert figures.money["ltv"]["EUR"][0].values == (0.0, 0.25)
    assert list(figures.money["roas"]) == ["USD"]
    assert figures.money["roas"]["USD"][0].values == (2.5, 2.5)
    assert figures.money["roas"]["USD"][0].cac == 0.5
    assert figures.summary["dau"] == 3
    assert figures.winback["2"]["inactive"] == 4  # 3 marked + 1 due now


def test_nps_by_churn_flags_a_period_complete_once_the_next_has_ended() -> None:
    """Today is day 100 (in week ``week``): last week's answerers split by
    activity this week are not final yet; this week's answers are live."""
    week = period_of_day(100, "week")
    cells = {(week - 2, PROMOTER, 1, "s"): 1, (week - 1, DETRACTOR, 0, "s"): 1,
             (week, PROMOTER, 0, "s"): 1}
    rows, live = nps_figures_by("churn", "s", "week", cells, {}, UTC, 100 * DAY_MS)
    assert [r["complete"] for r in rows] == [True, False, False]
    assert rows[0]["retained"]["promoters"] == 1 and rows[1]["churned"]["detractors"] == 1
    assert live == rows[-1]["period"]
    _, none_live = nps_figures_by("period", "s", "week", {(week - 2, PROMOTER, 1, "s"): 1}, {},
                                  UTC, 100 * DAY_MS)
    assert none_live is None


def test_rpr_by_cohort_lists_every_cohort_with_users() -> None:
    """Months Feb-Apr 1970: Feb 4 buyers (1 repeat) of 9 users, Mar none of 3, Apr 2 of 2;
    May has no users: not listed."""
    feb = period_of_day(31, "month")
    per_cohort = {(feb, 1): 4, (feb, 2): 1, (feb + 2, 1): 2}
    sizes = {(feb,): 9, (feb + 1,): 3, (feb + 2,): 2, (feb + 3,): 0}
    lifetime, cohorts = rpr_by_cohort(per_cohort, sizes, "month")
    assert lifetime == {"buyers": 6, "repeat_buyers": 1, "rpr": 0.1667}
    assert [(c["cohort"], c["buyers"], c["rpr"]) for c in cohorts] == [
        ("1970-02", 4, 0.25), ("1970-03", 0, 0.0), ("1970-04", 2, 0.0)]


def test_the_pipeline_forwards_per_app_with_accepted_events_and_marks_in_iso() -> None:
    stats = {(Stat.ACCEPTED, "b", "session"): 2, (Stat.FORWARDED, "b", "no_key"): 1,
             (Stat.REJECTED, "bad_json"): 5, (Stat.FORWARDED, "gone", "no_key"): 3}
    report = pipeline_figures(stats, {1: DAY_MS, 0: 0}, DAY_MS)
    assert report.accepted == {"b": {"session": 2}} and report.rejected == {"bad_json": 5}
    assert list(report.forwarded) == ["b"] and report.forwarded["b"]["no_key"] == 1
    assert report.watermarks == {"0": "1970-01-01T00:00:00+00:00",
                                 "1": "1970-01-02T00:00:00+00:00"}
