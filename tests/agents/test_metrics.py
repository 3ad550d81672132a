"""The Prometheus exposition (agents/metrics.py): a snapshot in, the families out.

A fresh CollectorRegistry per test; the snapshot's counters come from the real plan and
win-back code (so they are named as the plan writes them), its figures in the shape the
worker's snapshot has (state/queries.live_figures)."""

from __future__ import annotations

import ast
import inspect
from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest

from retention_tracker.agents import metrics as metrics_module
from retention_tracker.agents.metrics import (
    Snapshot,
    SnapshotCollector,
    StateCacheLookups,
    WorkerMetrics,
)
from retention_tracker.state.cache import StateCache
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.catalogue import COUNTERS, CURRENCY_FIGURES, DAILY_FIGURES, GAUGES
from retention_tracker.streams.counters import Cell, Stat
from retention_tracker.streams.events import REJECT_REASONS, Event
from retention_tracker.streams.figures import winback_counts
from retention_tracker.streams.plan import dedup_key_of, plan_batch
from retention_tracker.streams.reports import AppFigures, CohortRow, LiveFigures, MoneyRow
from retention_tracker.streams.segments import DEFAULT_RULES
from retention_tracker.streams.winback import WinbackRules, handle_moment

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
UTC = AppCalendar("UTC")
UTC_APPS = {app: UTC for app in ("a", "b", "default")}  # every app of the tests, in UTC


def real_stats() -> Counter[Cell]:
    """Two sessions and a purchase accepted, one duplicate (a copy of the purchase), one
    notification sent: the plan's typed cells, as the snapshot carries them (parsed from
    the stats hash)."""
    events = [Event("a", "e1", "session", "u1", BASE_MS),
              Event("a", "e2", "session", "u1", BASE_MS + 1),
              Event("a", "e3", "purchase", "u2", BASE_MS + 2, amount=1.0),
              Event("a", "e3", "purchase", "u2", BASE_MS + 2, amount=1.0)]
    plan = plan_batch([(i, -1, e) for i, e in enumerate(events)],
                      {("a", "u1"): None, ("a", "u2"): None}, set(), None, 400,
                      UTC_APPS, dedup_keys=[dedup_key_of(e) for e in events])
    stats = Counter(plan.stats)
    state = plan.users["a", "u2"]
    handle_moment(("a", "u2"), state, 2, state.last_active_ms + 2 * MS_PER_DAY, UTC,
                  DEFAULT_RULES, WinbackRules(), [], stats)
    return stats


def row(size: int, values: list[float], complete: list[bool]) -> CohortRow:
    return CohortRow(19723, "2024-01-01", size, (), tuple(values), tuple(complete))


def money_row(size: int, values: list[float | None], complete: list[bool]) -> MoneyRow:
    return MoneyRow(19723, "2024-01-01", size, None, (), tuple(values), tuple(complete))


def snapshot() -> Snapshot:
    summary = {"dau": 3, "wau": 4, "mau": 5, "stickiness": 0.6, "installs": 2,
               "new_users": 1, "returning_users": 2, "payers": 1,
               "revenue": {"USD": 10.0}, "arpdau": {"USD": 3.3333}, "arppu": {"USD": 10.0}}
    app = AppFigures(
        summary=summary,
        cohorts={"classic": (row(4, [1.0, 0.5, 0.25], [True, True, False]),),
                 "rolling": (row(4, [1.0, 0.75, 0.25], [True, True, False]),)},
        headline={1: (0.5, None), 7: None},
        headline_size={1: 4, 7: None},
        money={"ltv": {"USD": (money_row(4, [0.0, 2.5, 2.5], [True, True, False]),)},
               "roas": {"USD": (money_row(4, [None, None, None], [True, True, False]),)}},
        winback={"2": {"inactive": 3, "expired": 1, "back_within_7d_share": 0.25}},
        periods={"week": {"period": "2024-W01", "new_revenue": {"EUR": 1.5},
                          "returning_revenue": {"USD": 10.0}, "new_payers": 1,
                          "returning_payers": 2}},
        nps={"week": {"nps": {"current": {"answers": 4, "nps": 25.0},
                              "retained": {"answers": 2, "nps": 50.0},
                              "churned": {"answers": 0, "nps": None}},
                      "csat": {"retained": {"answers": 1, "nps": -100.0}}}},
        returning={"purchase": (row(4, [0.25, 0.5, 0.0], [True, True, False]),)},
        cohorts24={"classic": (row(4, [1.0, 0.25, 0.0], [True, True, False]),),
                   "rolling": (row(4, [1.0, 0.5, 0.0], [True, True, False]),)},
        winback_counts=winback_counts(real_stats(), "a", (2,)),
    )
    stats = dict(real_stats())
    figures = LiveFigures(BASE_MS, {"a": app}, stats)
    return Snapshot(figures=figures, stats=stats, watermarks={0: BASE_MS},
                    taken_at=1_704_067_260.0)


def registry_with(snap: Snapshot, offsets: tuple[int, ...] = (0, 1)) -> CollectorRegistry:
    registry = CollectorRegistry()
    collector = SnapshotCollector(offsets, thresholds=(2,), currency="USD")
    registry.register(collector)
    collector.update(snap)
    return registry


def test_every_documented_family_is_exposed_and_nothing_else() -> None:
    registry = registry_with(snapshot())
    names = {family.name for family in registry.collect()}
    counters = {c.name for c in COUNTERS}
    assert names == {g.name for g in GAUGES} | counters


def test_daily_figures_and_money_per_currency() -> None:
    registry = registry_with(snapshot())

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("retention_dau", app="a") == 3
    assert value("retention_stickiness", app="a") == 0.6
    assert value("retention_returning_users", app="a") == 2
    assert value("retention_arpdau", app="a", currency="USD") == 3.3333
    assert value("retention_payers", app="a") == 1


def test_cohorts_only_at_the_exported_offsets() -> None:
    registry = registry_with(snapshot(), offsets=(1,))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("retention_cohort_size", app="a", cohort="2024-01-01") == 4
    assert value("retention_cohort_retention", app="a", kind="rolling", cohort="2024-01-01",
                 offset="1") == 0.75
    assert value("retention_cohort_retention", app="a", kind="classic", cohort="2024-01-01",
                 offset="0") is None  # offset 0 not exported here
    assert value("retention_cohort_complete", app="a", cohort="2024-01-01", offset="1") == 1
    assert value("retention_cohort_ltv", app="a", cohort="2024-01-01", offset="1",
                 currency="USD") == 2.5
    assert value("retention_cohort_roas", app="a", cohort="2024-01-01", offset="1",
                 currency="USD") is None  # no install costs: no ROAS
    assert value("retention_headline_retention", app="a", day="d1", stat="latest") == 0.5
    assert value("retention_headline_retention", app="a", day="d1", stat="mean7") is None
    assert value("retention_headline_cohort_size", app="a", day="d1") == 4
    assert value("retention_cohort_returning", app="a", type="purchase", cohort="2024-01-01",
                 offset="1") == 0.5
    assert value("retention_cohort_returning", app="a", type="purchase", cohort="2024-01-01",
                 offset="0") is None  # offset 0 not exported here
    assert value("retention_cohort_retention_24h", app="a", kind="rolling",
                 cohort="2024-01-01", offset="1") == 0.5
    assert value("retention_cohort_complete_24h", app="a", cohort="2024-01-01",
                 offset="1") == 1


def test_event_and_winback_counters_from_the_plans_counters() -> None:
    registry = registry_with(snapshot())

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("retention_events_accepted_total", app="a", type="session") == 2
    assert value("retention_events_accepted_total", app="a", type="purchase") == 1
    assert value("retention_events_accepted_total", app="a", type="install") == 0
    assert value("retention_events_duplicate_total", app="a") == 1
    for reason in REJECT_REASONS:  # every reason exported from the start, at zero
        assert value("retention_events_rejected_total", reason=reason) == 0
    assert value("retention_events_forwarded_total", app="a", cause="no_key") == 0
    assert value("retention_notifications_sent_total", app="a", threshold="2",
                 segment="payer", churn_type="quick") == 1
    assert value("retention_notifications_sent_total", app="a", threshold="2",
                 segment="vip", churn_type="late") == 0
    assert value("retention_notifications_expired_total", app="a", threshold="2") == 1
    assert value("retention_inactive_users", app="a", threshold="2") == 3
    assert value("retention_winback_back_within_7d_share", app="a", threshold="2") == 0.25
    assert value("retention_watermark_seconds", partition="0") == BASE_MS / 1000
    assert value("retention_worker_snapshot_timestamp_seconds") == 1_704_067_260.0


def test_current_period_money_is_split_between_new_and_returning_users() -> None:
    registry = registry_with(snapshot())

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("retention_period_payers", app="a", period="week", users="new") == 1
    assert value("retention_period_payers", app="a", period="week", users="returning") == 2
    assert value("retention_period_revenue", app="a", period="week", users="returning",
                 currency="USD") == 10.0
    # every currency of the period on both sides, CURRENCY always: 0, not "no data"
    assert value("retention_period_revenue", app="a", period="week", users="new",
                 currency="USD") == 0
    assert value("retention_period_revenue", app="a", period="week", users="returning",
                 currency="EUR") == 0


def test_nps_now_and_of_the_last_period_by_churn() -> None:
    registry = registry_with(snapshot())

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("retention_nps", app="a", period="week", survey="nps") == 25.0
    assert value("retention_nps_answers", app="a", period="week", survey="nps") == 4
    assert value("retention_nps_previous", app="a", period="week", survey="nps",
                 group="retained") == 50.0
    # no answers: no NPS (not a number), but the count of answers is there
    assert value("retention_nps_previous", app="a", period="week", survey="nps",
                 group="churned") is None
    assert value("retention_nps", app="a", period="week", survey="csat") is None
    assert value("retention_nps_answers", app="a", period="week", survey="csat") == 0


def test_every_daily_figure_of_the_catalogue_is_a_gauge() -> None:
    """The collector iterates the catalogue: a figure declared there is exported, by the
    name and help declared there, with no line of the collector naming it."""
    registry = registry_with(snapshot())
    helps = {family.name: family.documentation for family in registry.collect()}
    for figure in (*DAILY_FIGURES, *CURRENCY_FIGURES):
        assert helps[figure.gauge] == figure.help
    assert "state" not in {name.split(".")[1] for name in _imports(metrics_module)}


def _imports(module: object) -> set[str]:
    """The retention_tracker modules a module imports (from its source)."""
    tree = ast.parse(inspect.getsource(module))  # type: ignore[arg-type]
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.module and node.module.startswith("retention_tracker.")}


def test_custom_activity_types_are_exported_from_the_start() -> None:
    registry = CollectorRegistry()
    collector = SnapshotCollector((0,), currency="USD", activity_events=("bet",))
    registry.register(collector)
    collector.update(snapshot())
    assert registry.get_sample_value("retention_events_accepted_total",
                                     {"app": "a", "type": "bet"}) == 0


def test_an_empty_snapshot_renders_without_data() -> None:
    registry = registry_with(Snapshot())
    text = generate_latest(registry).decode()
    assert "# TYPE retention_dau gauge" in text
    assert registry.get_sample_value("retention_dau", {"app": "a"}) is None
    assert registry.get_sample_value("retention_events_rejected_total",
                                     {"reason": "invalid_json"}) == 0


def test_worker_metrics_count_batches_in_their_own_registry() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.observe_batch(records=5, seconds=0.02, newest_record_ms=0)
    assert registry.get_sample_value("retention_worker_records_total") == 5
    assert registry.get_sample_value("retention_worker_batches_total") == 1
    assert registry.get_sample_value("retention_worker_batch_seconds_count") == 1
    assert registry.get_sample_value("retention_worker_batch_seconds_bucket",
                                     {"le": "0.025"}) == 1
    assert registry.get_sample_value("retention_worker_batch_seconds_bucket",
                                     {"le": "0.01"}) == 0


def test_state_cache_lookups_are_the_caches_counts() -> None:
    registry = CollectorRegistry()
    cache = StateCache(capacity=10)
    registry.register(StateCacheLookups(cache))
    cache.split(0, [("a", "u1"), ("a", "u2")])
    assert registry.get_sample_value("retention_worker_state_cache_lookups_total",
                                     {"outcome": "loaded"}) == 2
    assert registry.get_sample_value("retention_worker_state_cache_lookups_total",
                                     {"outcome": "held"}) == 0


def test_at_risk_message_counts_from_the_snapshots_counters() -> None:
    """The users.at_risk counts are the counters the at-risk pass and the batches write
    (streams/at_risk.py), carried by the snapshot: each outcome of an app with a fit from 0,
    and an app whose fit is gone still shows what it counted."""
    stats = {**real_stats(), (Stat.AT_RISK_SENT, "a"): 5, (Stat.AT_RISK_RETURNED, "a"): 2,
             (Stat.AT_RISK_BACK_7D, "a"): 1, (Stat.AT_RISK_EXPIRED, "gone"): 3}
    registry = registry_with(Snapshot(stats=stats,
                                      at_risk={"a": {"users": 9, "at_risk": 4}}))

    def value(app: str, outcome: str) -> float | None:
        return registry.get_sample_value("retention_at_risk_messages_total",
                                         {"app": app, "outcome": outcome})

    assert [value("a", o) for o in ("sent", "expired", "returned", "back_within_7d",
                                     "false_alarms")] == [5, 0, 2, 1, 0]
    assert value("gone", "expired") == 3 and value("gone", "sent") == 0
    assert value("b", "sent") is None  # no fit, no counts: no series
    assert registry.get_sample_value("retention_at_risk_users", {"app": "a"}) == 4
