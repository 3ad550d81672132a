"""streams/catalogue.py: each figure declared once, and what the surfaces read from it."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

from retention_tracker.streams.builders import current_period_cells, current_period_money
from retention_tracker.streams.catalogue import (
    COHORT_FAMILIES,
    CURRENCY_FIGURES,
    DAILY_CHARTS,
    DAILY_FIGURES,
    FIGURE,
    GAUGES,
    KPI_MEASURES,
    KPI_SPLITS,
    KPIS,
    MONEY,
    STORED_NAMES,
    Difference,
    Ratio,
    catalogue_json,
    terms,
)
from retention_tracker.streams.counters import Cell, Measure
from retention_tracker.streams.figures import day_summary, kpi_rows

ROOT = Path(__file__).resolve().parents[2]
#: The source modules that may write a daily figure's name: the catalogue, and the
#: independent reference that computes each figure its own way.
MAY_NAME_FIGURES = {"streams/catalogue.py", "bench/reference.py"}
#: Names the period KPIs' rows use too (another figure: the period's, METRICS.md §6): for
#: these the daily figure's gauge name is what is looked for.
KPI_NAMES = {k.key for k in KPIS} & {f.key for f in (*DAILY_FIGURES, *CURRENCY_FIGURES)}
#: KPI names other reports use for figures of their own: the user record and NPS
#: ("active"), triangles on a returning event ("returning"), NPS by churn and churn types
#: ("churn"), the repeat purchase report ("rpr"). For these and KPI_NAMES, the functions
#: that compute and show KPI rows (KPI_SURFACES) are held to name none.
NAMES_OF_OTHER_REPORTS = {"active", "returning", "churn", "rpr"}
#: Where KPI rows are computed and shown: module -> functions.
KPI_SURFACES = {
    "streams/figures.py": ("kpi_rows", "_period_counter", "kpi_cells"),
    "streams/builders.py": ("kpi_period_rows", "current_period_cells", "current_period_money"),
    "state/queries.py": ("_current_period_reads",),
    "cli/render.py": ("kpis_table",),
    "agents/metrics.py": ("_periods",),
    "agents/static/page.js": ("renderKpis",),
}


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
    seen = set()
    for kpi in KPIS:
        assert {t for t in terms(kpi.derived) if isinstance(t, str)} <= seen, kpi.key
        seen.add(kpi.key)


def test_a_split_kpi_is_a_part_of_a_kpi_on_its_gauge() -> None:
    gauges = {g.name: g.labels for g in GAUGES}
    keys = {k.key for k in KPIS}
    for kpi in KPI_SPLITS:
        assert kpi.split is not None and kpi.split.total in keys
        assert gauges[kpi.split.gauge] == ("app", "period", "users") + (
            ("currency",) if kpi.unit == MONEY else ())
    assert sorted((k.split.total, k.split.users) for k in KPI_SPLITS if k.split) == [
        ("payers", "new"), ("payers", "returning"), ("revenue", "new"), ("revenue", "returning")]


def kpi_families() -> dict[Measure, Counter[tuple[object, ...]]]:
    """Periods 7 (no S: nobody active in 6) and 8 of one app, counters by hand."""
    return {
        Measure.ACTIVE: Counter({(7,): 5, (8,): 6}),
        Measure.COHORT_SIZE: Counter({(7,): 5, (8,): 2}),
        Measure.LOST: Counter({(8,): 1}),
        Measure.PERIOD_PAYERS: Counter({(8,): 3}),
        Measure.REPEAT_PAYERS: Counter({(8,): 1}),
        Measure.PERIOD_REVENUE: Counter({(7, "USD"): 20_000, (8, "EUR"): 5_000,
                                         (8, "USD"): 40_000}),
        # period 8's own cohort brought all of its EUR, part of its USD; offset 1: not new
        Measure.LTV: Counter({(7, 0, "USD"): 20_000, (8, 0, "EUR"): 5_000,
                              (8, 0, "USD"): 15_000, (7, 1, "USD"): 9_999}),
        Measure.FIRST_PAYMENT: Counter({(8, 0): 1, (7, 1): 1}),
    }


def test_kpi_rows_are_the_catalogue_derived_from_the_period_counters() -> None:
    """§6 on counters by hand: CRR and churn None without S, RPR 0.0 without payers, the
    money split per currency with the currencies of no returning revenue left out."""
    families = kpi_families()
    assert set(families) == set(KPI_MEASURES)
    first, second = kpi_rows(families, "week", 7, 8)
    assert list(first) == list(second) == ["period", *(k.key for k in KPIS)]
    # the KPIs of METRICS.md §6 (one declared later is held to the reference by the
    # property tests, tests/streams/test_plan_properties.py)
    assert first == first | {
        "period": first["period"], "active": 5, "new_users": 5, "returning": 0, "crr": None,
        "churn": None, "revenue": {"USD": 2.0}, "payers": 0, "rpr": 0.0,
        "new_revenue": {"USD": 2.0}, "returning_revenue": {}, "new_payers": 0,
        "returning_payers": 0}
    assert second == second | {
        "period": second["period"], "active": 6, "new_users": 2, "returning": 4, "crr": 0.8,
        "churn": 0.2, "revenue": {"EUR": 0.5, "USD": 4.0}, "payers": 3, "rpr": 0.3333,
        "new_revenue": {"EUR": 0.5, "USD": 1.5}, "returning_revenue": {"USD": 2.5},
        "new_payers": 1, "returning_payers": 2}


def test_the_current_period_money_is_its_splits_from_their_own_counters() -> None:
    """The live snapshot reads only the cells the splits are derived from, as
    current_period_cells names them (in each currency it is given)."""
    families = kpi_families()
    cells = current_period_cells("week", 8 * 7 + 3, ["EUR", "USD"])
    assert cells == {Measure.PERIOD_REVENUE: [(8, "EUR"), (8, "USD")],
                     Measure.PERIOD_PAYERS: [(8,)], Measure.LTV: [(8, 0, "EUR"), (8, 0, "USD")],
                     Measure.FIRST_PAYMENT: [(8, 0)]}
    assert current_period_cells("week", 8 * 7 + 3, [])[Measure.LTV] == []  # no revenue yet
    own = {m: Counter({c: families[m][c] for c in wanted if c in families[m]})
           for m, wanted in cells.items()}
    got = current_period_money(own, "week", 8 * 7 + 3)
    row = kpi_rows(families, "week", 8, 8)[0]
    assert got == {"period": row["period"], **{k.key: row[k.key] for k in KPI_SPLITS}}
    assert list(got) == ["period", *(k.key for k in KPI_SPLITS)]


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
    assert [k["key"] for k in doc["kpis"]] == [k.key for k in KPIS]
    wholes = {k["key"]: k["whole"] for k in doc["kpis"] if k["unit"] == "share"}
    assert (wholes["crr"], wholes["churn"], wholes["rpr"]) == (None, None, "payers")
    assert {c["id"] for c in doc["charts"]} == {c.id for c in DAILY_CHARTS if c.page}
    assert set(STORED_NAMES) == set(Measure)


def named(key: str) -> re.Pattern[str]:
    """A figure's name as code writes it: a string key, a JS property, its gauge, a JS key."""
    return re.compile(rf"[\"']{key}[\"']|\.{key}\b|retention_{key}\b|\b{key}:")


def test_no_figure_is_named_outside_the_catalogue_and_the_reference() -> None:
    """The issue's measure: a daily figure's or a period KPI's name (a string key, a JS
    property, its gauge) in no source module but the catalogue and the reference. The
    names a daily figure shares with a KPI are looked for as gauges; the KPI names other
    reports use are held by the next test."""
    sources = [p for folder in ("streams", "state", "agents", "cli", "dashboards", "config")
               for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".js", ".html")]
    kpis = [k for k in KPIS if k.key not in KPI_NAMES | NAMES_OF_OTHER_REPORTS]
    assert kpis
    for figure in (*DAILY_FIGURES, *CURRENCY_FIGURES, *kpis):
        key = figure.key
        pattern = re.compile(rf"retention_{key}\b") if key in KPI_NAMES else named(key)
        found = {str(p.relative_to(ROOT)) for p in sources if pattern.search(p.read_text())}
        assert found <= MAY_NAME_FIGURES, (key, found - MAY_NAME_FIGURES)


def test_the_functions_that_compute_and_show_kpi_rows_name_no_kpi() -> None:
    """They iterate the catalogue's KPIS, the names shared with other figures included."""
    for module, functions in KPI_SURFACES.items():
        text = (ROOT / module).read_text()
        for function in functions:
            if module.endswith(".js"):
                body = re.search(rf"\nfunction {function}\(.*?\n}}\n", text, re.S)
                source = body.group(0) if body else ""
            else:
                source = next((ast.get_source_segment(text, node) or "")
                              for node in ast.walk(ast.parse(text))
                              if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                              and node.name == function)
            assert source, (module, function)
            named_there = [k.key for k in KPIS if named(k.key).search(source)]
            assert not named_there, (module, function, named_there)
