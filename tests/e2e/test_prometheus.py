"""A real Prometheus scraping two real workers runs every dashboard query and every rule.

Two workers share a deployment fed with simulated traffic (and a few bad messages). Two
Prometheus servers load the repo's rules: ``both`` scrapes the two workers, ``one`` only the
first. Every query of dashboards/*.json and deploy/prometheus/rules must return data with
the labels it is declared with, and the global figures must read the same through one
worker or two (they are taken with max over workers, never summed).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import pytest
import redis

from retention_tracker.devstack.processes import ManagedProcess, wait_for

from ..dashboards.promql import (
    ALERT_VALUES,
    RECORD_LABELS,
    expand,
    is_global,
    metric_names,
    panel_queries,
    require_tool,
    rules,
    variable_queries,
    with_variables,
)
from .harness import Deployment, event_messages, produce, simulated
from .prometheus import Prometheus, start_prometheus

pytestmark = pytest.mark.e2e

BAD_MESSAGES = [(b"bad-1", b"not json"), (b"bad-2", b'{"type": "session"}')]


@pytest.fixture(scope="module")
def stack(kafka_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Deployment, Prometheus, Prometheus, list[ManagedProcess], int]]:
    """Started once for the module: workers, traffic and two Prometheus servers."""
    name = uuid.uuid4().hex[:8]
    tmp_path = tmp_path_factory.mktemp(f"prometheus-{name}")
    deployment = Deployment(kafka_url, redis_url, name, tmp_path)
    deployment.create_topics()
    try:
        yield from _stack(deployment, tmp_path)
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"rt-{name}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def _stack(deployment: Deployment, tmp_path: Path
           ) -> Iterator[tuple[Deployment, Prometheus, Prometheus, list[ManagedProcess], int]]:
    binary = require_tool("prometheus")
    raw = simulated(days=40)  # D30 of 7 complete cohorts needs 38 days
    half = len(raw) // 2
    sent = produce(deployment.bootstrap, deployment.topic,
                   event_messages(raw[:half]) + BAD_MESSAGES)
    with ExitStack() as stack:
        workers = []
        ports = []
        for index in (1, 2):
            worker, port = deployment.start_worker(index, CLOCK="event", METRICS_REFRESH_S="1",
                                                   RETURN_EVENTS="purchase",
                                                   AT_RISK_REFIT_SECONDS="2")
            workers.append(stack.enter_context(worker))
            ports.append(port)
        both = start_prometheus(binary, tmp_path / "both", ports)
        stack.enter_context(both.process)
        one = start_prometheus(binary, tmp_path / "one", ports[:1])
        stack.enter_context(one.process)
        wait_for(lambda: both.targets_up(2) and one.targets_up(1), 60, "targets up")
        deployment.wait_applied(sent, worker=workers[0])

        def scraped(names: list[str]) -> bool:
            now = time.time()
            return all(both.query(f"max({name})", now) for name in names)

        # the global counters exist before the second half, so rates see it as an increase
        wait_for(lambda: scraped(["retention_events_accepted_total",
                                  "retention_events_rejected_total",
                                  "retention_events_duplicate_total"]), 60, "counters scraped")
        sent += produce(deployment.bootstrap, deployment.topic,
                        event_messages(raw[half:]) + BAD_MESSAGES)
        deployment.wait_applied(sent, worker=workers[0])

        def all_records_scraped() -> bool:
            got = both.query("sum(retention_worker_records_total)", time.time())
            return list(got.values()) == [sent]

        wait_for(all_records_scraped, 60, f"{sent} records on the workers' /metrics")
        # the global figures come from a snapshot of Redis taken by a timer: wait until both
        # workers have served one taken after the last record was applied
        applied_at = time.time()

        def fresh_snapshots_scraped() -> bool:
            got = both.query("min(retention_worker_snapshot_timestamp_seconds)", time.time())
            return bool(got) and min(got.values()) > applied_at

        wait_for(fresh_snapshots_scraped, 60, "snapshots taken after the last batch")
        # the at-risk gauges need a kept fit: the workers refit every 2 s
        wait_for(lambda: bool(both.query("min(retention_at_risk_users)", time.time())), 60,
                 "at-risk gauges")
        yield deployment, both, one, workers, sent


def rule_records() -> dict[str, str]:
    return {r["record"]: r["expr"] for r in rules() if "record" in r}


def all_queries() -> list[tuple[str, str, frozenset[str]]]:
    """(where, PromQL as run, labels each series must carry) for every query in the repo."""
    from dashboards import build

    build.rendered()  # fills build.EXPECTED_LABELS
    records = rule_records()
    found = [
        (str(q), with_variables(expand(q.expr, {})), build.EXPECTED_LABELS[q.expr])
        for q in panel_queries()
    ]
    for name, expr in records.items():
        labels = RECORD_LABELS.get(name, frozenset())  # thresholds carry no labels
        found.append((f"record {name}", expand(expr, records), labels))
    for name, (value, labels) in ALERT_VALUES.items():
        found.append((f"alert {name} (its figure)", expand(value, records), labels))
    return found


def test_every_dashboard_and_rule_query_returns_data(stack) -> None:
    _deployment, both, _one, _workers, _sent = stack
    now = time.time()
    for board, metric, label in variable_queries():
        values = both.api(f"/api/v1/label/{label}/values", **{"match[]": metric})
        expected = {"app": "default", "type": "purchase"}[label]  # the app, RETURN_EVENTS
        assert expected in values, (board, metric, label)
    # a counter that first appears late (the at-risk messages follow a refit) has a rate
    # only once two scrapes of it lie in the window: ask again until every query answers
    problems: list[str] = []

    def every_query_answers() -> bool:
        problems[:] = _query_problems(both, time.time())
        return not problems

    with suppress(TimeoutError):
        wait_for(every_query_answers, 60, "every dashboard and rule query", interval_s=1)
    assert not problems, "\n".join(problems)
    # the alert expressions themselves: what they return (nothing while all is well) carries
    # every label its annotations name, and with both workers up and scraped, the
    # workers-down alert is quiet
    records = rule_records()
    for rule in rules():
        if "alert" in rule:
            fired = both.query(expand(rule["expr"], records), now)
            named = set(re.findall(r"\$labels\.(\w+)", str(rule.get("annotations", {}))))
            for series, value in fired.items():
                assert named <= {name for name, _ in series}, (rule["alert"], series)
                assert math.isfinite(value), (rule["alert"], series)
            if rule["alert"] == "RetentionWorkersDown":
                assert fired == {}, fired


def _query_problems(both: Prometheus, now: float) -> list[str]:
    """What is wrong with the answers to every query in the repo at ``now``: no data, labels
    other than the panel's, a value that is not finite."""
    problems = []
    for where, expr, labels in all_queries():
        result = both.query(expr, now)
        if not result:
            problems.append(f"no data: {where}\n    {expr}")
        for series, value in result.items():
            got = {name for name, _ in series} - {"__name__"}
            if got != labels:
                problems.append(f"labels {sorted(got)}, want {sorted(labels)}: {where}")
            if not math.isfinite(value) and "histogram_quantile" not in expr:
                problems.append(f"value {value}: {where}")
        if "histogram_quantile" in expr and not any(map(math.isfinite, result.values())):
            problems.append(f"no finite quantile: {where}")
    return problems


def test_rules_evaluate_without_errors(stack) -> None:
    _deployment, both, _one, _workers, _sent = stack

    def evaluated() -> bool:
        groups = both.api("/api/v1/rules")["groups"]
        found = [rule for group in groups for rule in group["rules"]]
        assert len(found) == len(rules())
        bad = [(r["name"], r.get("lastError")) for r in found if r["health"] == "err"]
        assert not bad, bad
        return all(r["health"] == "ok" for r in found)

    wait_for(evaluated, 30, "every rule evaluated")


def test_one_worker_or_two_give_the_same_dashboard_numbers(stack) -> None:
    _deployment, both, one, _workers, _sent = stack
    comparable = [
        (where, expr) for where, expr, _labels in all_queries()
        if all(is_global(n)
               for n in metric_names(expr))
        and "rate(" not in expr and "increase(" not in expr
    ]
    assert len(comparable) >= 20
    differ: list[str] = []

    def same() -> bool:
        at = time.time()
        differ[:] = [
            f"{where}: one worker {a}, two workers {b}"
            for where, expr in comparable
            if not equal(a := one.query(expr, at), b := both.query(expr, at))
        ]
        # and each worker serves the same figures (their snapshots are taken independently)
        dau_one = one.query("max by (app) (retention_dau)", at)
        doubled = {labels: 2 * value for labels, value in dau_one.items()}
        summed = both.query("sum by (app) (retention_dau)", at)
        if not dau_one or summed != doubled:
            differ.append(f"sum of DAU over two workers {summed}, want {doubled}")
        return not differ

    # Snapshots are refreshed every second from the same Redis, so the figures converge.
    try:
        wait_for(same, 30, "same figures through one or two workers", interval_s=0.5)
    except TimeoutError:
        raise AssertionError("\n".join(differ)) from None


def equal(a: dict[frozenset[tuple[str, str]], float],
          b: dict[frozenset[tuple[str, str]], float]) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )
