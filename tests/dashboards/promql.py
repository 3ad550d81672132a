"""What the dashboard, rule and Prometheus tests share: every PromQL query of the repo, the
names the worker exports, and the label set each query must return."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from retention_tracker.agents.metrics import WorkerMetrics
from retention_tracker.streams.catalogue import COUNTERS, GAUGES

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "dashboards"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
WORKER_PREFIX = "retention_worker_"

#: Labels of every recording rule's series (a rule missing here fails the tests).
RECORD_LABELS: dict[str, frozenset[str]] = {
    "app_day:retention_headline:latest_over_mean7": frozenset({"app", "day"}),
    "app_day:retention_headline:cohort_size": frozenset({"app", "day"}),
    "app:retention_dau:ratio_1w": frozenset({"app"}),
    "app:retention_dau:max_offset_1w": frozenset({"app"}),
    "app:retention_installs:ratio_1w": frozenset({"app"}),
    "app:retention_events_accepted:rate5m": frozenset({"app"}),
    "topic:retention_worker_consumer_lag:sum": frozenset({"topic"}),
    "retention:events_rejected:rate5m": frozenset(),
    "retention:events_rejected:rate1d": frozenset(),
    "retention:last_event_age_seconds": frozenset(),
}
#: Each alert's figure -- its expression without the comparison, which legitimately returns
#: nothing when all is well -- and the labels of that figure's series.
ALERT_VALUES: dict[str, tuple[str, frozenset[str]]] = {
    "RetentionHeadlineDrop": ("app_day:retention_headline:latest_over_mean7",
                              frozenset({"app", "day"})),
    "RetentionDauBelowLastWeek": ("app:retention_dau:ratio_1w", frozenset({"app"})),
    "RetentionInstallsUpDauDown": ("app:retention_installs:ratio_1w", frozenset({"app"})),
    "RetentionNoEvents": ("app:retention_events_accepted:rate5m", frozenset({"app"})),
    "RetentionWorkersDown": ("retention_worker_assigned_partitions",
                             frozenset({"instance", "job"})),
    "RetentionConsumerLagHigh": ("topic:retention_worker_consumer_lag:sum",
                                 frozenset({"topic"})),
    "RetentionDeadLetterSpike": ("retention:events_rejected:rate5m", frozenset()),
}
#: Grafana's variables, as the tests evaluate them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "${app}": "default",
    "$app": "default",
    "$returning": "purchase",  # the returning event of the workers the tests start
}


def require_tool(name: str) -> str:
    """Path of a Prometheus tool; without it, fail under CI (CI=...) and skip elsewhere."""
    found = shutil.which(name)
    if found:
        return found
    reason = (f"{name} not on PATH: scripts/setup installs it (Debian packages prometheus, "
              "prometheus-alertmanager) when run as root on a machine with apt-get")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


# ---- the queries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel}: {self.expr}"


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))  # panels inside rows
    return found


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def panel_queries() -> list[PanelQuery]:
    queries = []
    for name, board in dashboards().items():
        for panel in _panels(board.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    queries.append(PanelQuery(name, panel.get("title", "?"), target["expr"]))
    return queries


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard, metric, label) of every ``label_values(metric, label)`` variable."""
    found = []
    for name, board in dashboards().items():
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            raw = variable.get("query")
            text = raw.get("query", "") if isinstance(raw, dict) else raw
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", text or "")
            assert match, f"{name}: variable {variable['name']}: unsupported query {text!r}"
            found.append((name, match[1], match[2]))
    return found


def rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/rules, with its group and file."""
    import yaml  # only the tests that read YAML need PyYAML

    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found.append({**rule, "group": group["name"], "file": path.name})
    return found


def expand(expr: str, records: dict[str, str], strip_offsets: bool = True) -> str:
    """``expr`` with recording-rule names replaced by their expressions (so it can be run
    on data the rules have not recorded yet) and, optionally, ``offset 1w`` removed (a
    test Prometheus has no week-old data)."""
    for _ in range(5):  # records may use records
        for name, body in records.items():
            expr = re.sub(rf"(?<![\w:]){re.escape(name)}(?![\w:])", f"({body.strip()})", expr)
    if strip_offsets:
        expr = re.sub(r"\s+offset\s+\d+[smhdwy]", "", expr)
    return expr


def with_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


# ---- metric names --------------------------------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
             "and", "or", "unless", "inf", "nan"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile"}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression reads."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    text = _OFFSET.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match[0].lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(match[0])
    return names


def exported_names() -> set[str]:
    """Every series name a worker's /metrics can carry (agents/metrics.py)."""
    names = {g.name for g in GAUGES} | {f"{c.name}_total" for c in COUNTERS}
    for family in WorkerMetrics(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def is_global(name: str) -> bool:
    return not name.startswith(WORKER_PREFIX)


def enclosing_aggregation(expr: str, position: int) -> str | None:
    """The innermost aggregation operator around ``position`` (functions such as rate or
    label_replace are looked through), ``absent`` if inside absent(), else None."""
    text = _STRING.sub(lambda m: " " * len(m[0]), expr)  # keep positions
    depth = 0
    for i in range(position - 1, -1, -1):
        char = text[i]
        if char == ")":
            depth += 1
        elif char == "(":
            if depth:
                depth -= 1
                continue
            before = text[:i].rstrip()
            head = re.search(r"(\w+)\s*(?:(?:by|without)\s*\([^()]*\)\s*)?$", before)
            word = head[1] if head else ""
            if word in AGGREGATIONS or word == "absent":
                return word
    return None


def aggregation_problems(expr: str, exported: set[str]) -> list[str]:
    """Global figures must be combined with max/min over workers (never summed), and
    per-worker series with sum/count: then a query is right for 1 or N workers."""
    problems = []
    text = _STRING.sub(lambda m: " " * len(m[0]), expr)
    for name in metric_names(expr) & exported:
        for match in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])", text):
            agg = enclosing_aggregation(expr, match.start())
            allowed = {"max", "min"} if is_global(name) else {"sum", "count", "absent"}
            if name.endswith("_timestamp_seconds"):  # a time: the oldest/newest worker
                allowed |= {"max", "min"}
            if agg not in allowed:
                problems.append(f"{name} aggregated with {agg} (want one of {sorted(allowed)})")
    return problems
