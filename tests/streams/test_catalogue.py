"""streams/catalogue.py: each figure declared once, and what the surfaces read from it."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from retention_tracker.streams.catalogue import (
    COHORT_FAMILIES,
    CURRENCY_FIGURES,
    DAILY_CHARTS,
    DAILY_FIGURES,
    FIGURE,
    STORED_NAMES,
    Difference,
    Ratio,
    catalogue_json,
)
from retention_tracker.streams.counters import Cell, Measure
from retention_tracker.streams.figures import day_summary

ROOT = Path(__file__).resolve().parents[2]
#: The source modules that may write a daily figure's name: the catalogue, and the
#: independent reference that computes each figure its own way.
MAY_NAME_FIGURES = {"streams/catalogue.py", "bench/reference.py"}
#: Names the period KPIs' rows use too (another figure: the period's, METRICS.md §6): for
#: these the daily figure's gauge name is what is looked for.
KPI_NAMES = {"new_users", "payers", "revenue"}


def test_a_derived_figure_reads_figures_declared_before_it() -> None:
    seen: set[str] = set()
    for figure in DAILY_FIGURES:
        how = figure.derived
        if isinstance(how, Ratio):
            assert {how.part, how.whole} <= seen, figure.key
        if isinstance(how, Difference):
            assert {how.minuend, how.subtrahend} <= seen, figure.key
        seen.add(figure.key)
    for money in CURRENCY_FIGURES:
        assert money.per is None or money.per in seen
    for chart in DAILY_CHARTS:
        assert {*chart.series, *chart.dashboard_only, *chart.right, *(chart.ratio or ())
                } <= seen, chart.id


def test_the_day_summary_is_the_catalogue_derived_from_the_counters() -> None:
    day = 19_700
    daily: Counter[Cell] = Counter({
        (Measure.DAU, day): 4, (Measure.NEW_USERS, day): 1, (Measure.INSTALLS, day): 2,
        (Measure.PAYERS, day): 2, (Measure.REVENUE, day, "USD"): 30_000,
        (Measure.WAU_EDGE, day - 3): 5, (Measure.MAU_EDGE, day - 20): 8,
        (Measure.MAU_EDGE, day - 10): -2,
    })
    got = day_summary("a", day, daily)
    assert list(got) == ["app", "date", *FIGURE, *(f.key for f in CURRENCY_FIGURES)]
    assert (got["dau"], got["wau"], got["mau"], got["stickiness"]) == (4, 5, 6, 0.6667)
    assert (got["returning_users"], got["payers"]) == (3, 2)
    assert got["revenue"] == {"USD": 3.0} and got["arpdau"] == {"USD": 0.75}
    assert got["arppu"] == {"USD": 1.5}


def test_names_are_unique_and_the_page_gets_them_all() -> None:
    keys = [f.key for f in DAILY_FIGURES] + [f.key for f in CURRENCY_FIGURES]
    assert len(keys) == len(set(keys))
    assert len({(f.window, f.kind) for f in COHORT_FAMILIES}) == len(COHORT_FAMILIES)
    doc = json.loads(json.dumps(catalogue_json()))  # what /retention/figures answers
    assert [f["key"] for f in doc["daily"]] == [f.key for f in DAILY_FIGURES]
    assert doc["daily"][3]["whole"] == "mau"  # a share shows '-' when its whole is 0
    assert {c["id"] for c in doc["charts"]} == {c.id for c in DAILY_CHARTS if c.page}
    assert set(STORED_NAMES) == set(Measure)


def test_no_daily_figure_is_named_outside_the_catalogue_and_the_reference() -> None:
    """The issue's measure: a daily figure's name (a string key, a JS property, its gauge)
    in no source module but the catalogue and the reference."""
    sources = [p for folder in ("streams", "state", "agents", "cli", "dashboards", "config")
               for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".js", ".html")]
    for figure in (*DAILY_FIGURES, *CURRENCY_FIGURES):
        key = figure.key
        pattern = re.compile(rf"retention_{key}\b" if key in KPI_NAMES
                             else rf"[\"']{key}[\"']|\.{key}\b|retention_{key}\b|\b{key}:")
        found = {str(p.relative_to(ROOT)) for p in sources if pattern.search(p.read_text())}
        assert found <= MAY_NAME_FIGURES, (key, found - MAY_NAME_FIGURES)
