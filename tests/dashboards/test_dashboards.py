"""Dashboards, recording and alert rules, Prometheus and Alertmanager configs, statically:
no drift between the generator and the JSON, only exported metric names, the right
aggregation for 1 or N workers, and promtool / amtool on every file."""

from __future__ import annotations

import re
import subprocess

import pytest

from dashboards import build

from .promql import (
    ALERT_VALUES,
    ALERTMANAGER_CONFIG,
    DASHBOARD_DIR,
    PROMETHEUS_DIR,
    RECORD_LABELS,
    RULE_FILES,
    RULE_TESTS,
    aggregation_problems,
    exported_names,
    metric_names,
    panel_queries,
    require_tool,
    rules,
    variable_queries,
)


def test_checked_in_json_is_what_build_generates() -> None:
    generated = build.rendered()
    on_disk = {p: p.read_text() for p in DASHBOARD_DIR.glob("*.json")}
    assert sorted(on_disk) == sorted(generated), "run: python -m dashboards.build"
    drifted = [p.name for p, text in generated.items() if on_disk[p] != text]
    assert not drifted, f"out of date, run python -m dashboards.build: {drifted}"
    assert build.main(["--check"]) == 0


def test_dashboards_have_the_panels_the_issue_asks_for() -> None:
    titles = {q.dashboard: set() for q in panel_queries()}
    for q in panel_queries():
        titles[q.dashboard].add(q.panel)
    assert set(titles) == {"live", "retention", "pipeline", "money", "winback"}
    assert {"Revenue today by currency", "ARPDAU by currency",
            "Revenue this week, month and year: new vs returning users",
            "Payers this week, month and year: new vs returning users"} <= titles["money"]
    assert {"Users inactive now, by threshold", "Back within 7 days of the notification"
            } <= titles["winback"]
    assert {"DAU against installs", "New vs returning users", "Stickiness (DAU / MAU)",
            "WAU and MAU"} <= titles["live"]
    assert {"Daily cohorts, classic retention", "Daily cohorts, rolling retention",
            "D1 retention", "D7 retention", "D30 retention",
            "Satisfaction (NPS) this week, month and year",
            "NPS of last period's answerers: retained vs churned"} <= titles["retention"]
    assert {"Batch time (parse, plan, apply)", "Event to state latency",
            "Dead-lettered events/s by reason", "Consumer lag by topic"} <= titles["pipeline"]
    assert {name for name, _metric, label in variable_queries() if label == "app"} == set(titles)
    assert ("retention", "retention_cohort_returning", "type") in variable_queries()


def test_every_panel_query_declares_its_labels() -> None:
    build.rendered()  # fills EXPECTED_LABELS
    missing = [str(q) for q in panel_queries() if q.expr not in build.EXPECTED_LABELS]
    assert not missing


def test_queries_and_rules_use_only_exported_metric_names() -> None:
    exported = exported_names()
    records = {r["record"] for r in rules() if "record" in r}
    used = {str(q): metric_names(q.expr) for q in panel_queries()}
    used |= {f"{r['file']}: {r.get('record') or r.get('alert')}": metric_names(r["expr"])
             for r in rules()}
    used |= {f"variable {board}": {metric} for board, metric, _label in variable_queries()}
    unknown = {where: sorted(names - exported - records)
               for where, names in used.items() if names - exported - records}
    assert not unknown, f"names the worker does not export: {unknown}"
    # and every exported family is shown or alerted on somewhere
    def family(name: str) -> str:
        return re.sub(r"_(total|bucket|sum|count)$", "", name)

    unused = {family(n) for n in exported} - {family(n) for n in set().union(*used.values())}
    assert not unused


def test_metric_name_parsing() -> None:
    expr = ('sum by (type) (max by (app, type) (rate(retention_events_accepted_total'
            '{app=~"$app", type!="a b"}[$__rate_interval]))) / on (app) group_left () '
            'x:y:z offset 1w > bool 0.5 and histogram_quantile(0.9, sum by (le) '
            '(rate(retention_worker_batch_seconds_bucket[5m]))) or vector(1e3) '
            'or label_replace(up, "a", "b", "", "")')
    assert metric_names(expr) == {"retention_events_accepted_total", "x:y:z",
                                  "retention_worker_batch_seconds_bucket", "up"}


def test_global_figures_use_max_and_worker_series_sum() -> None:
    exported = exported_names()
    exprs = [str(q) for q in panel_queries()] + [
        f"{r['file']}: {r['expr']}" for r in rules()
    ]
    problems = {e: p for e in exprs if (p := aggregation_problems(e, exported))}
    assert not problems
    assert aggregation_problems("sum by (app) (retention_dau)", exported)
    assert aggregation_problems("max(rate(retention_worker_records_total[1m]))", exported)
    assert aggregation_problems("retention_dau", exported)


def test_every_rule_is_declared_and_alerts_compare_their_figure() -> None:
    found = rules()
    records = {r["record"] for r in found if "record" in r}
    constants = {r for r in records if r.startswith("retention:alert_threshold:")}
    assert set(RECORD_LABELS) == records - constants
    for rule in found:
        if "record" in rule and rule["record"] in constants:
            assert rule["expr"].startswith("vector("), rule
    alerts = {r["alert"]: r for r in found if "alert" in r}
    assert set(alerts) == set(ALERT_VALUES)
    for name, rule in alerts.items():
        value, _labels = ALERT_VALUES[name]
        assert value in rule["expr"], (name, value)
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"].get("summary"), name


def test_every_alert_has_a_promtool_unit_test() -> None:
    import yaml

    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    assert tested == set(ALERT_VALUES)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_promtool_check_config() -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool")
    assert RULE_TESTS
    result = run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_check_config() -> None:
    amtool = require_tool("amtool")
    result = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tool", ["promtool", "amtool"])
def test_a_broken_file_is_caught(tool: str, tmp_path) -> None:
    """The checks above would notice a mistake (guards against a tool that accepts all)."""
    binary = require_tool(tool)
    bad = tmp_path / "bad.yml"
    if tool == "promtool":
        bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: A\n"
                       "        expr: sum by (app (retention_dau)\n")
        result = run(binary, "check", "rules", str(bad))
    else:
        bad.write_text("route:\n  receiver: nowhere\nreceivers: []\n")
        result = run(binary, "check-config", str(bad))
    assert result.returncode != 0
