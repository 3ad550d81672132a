"""Prometheus exposition: global figures from a Redis snapshot, plus this worker's own health.

The global figures (``retention_dau`` ... ``retention_events_accepted_total``) come from
Redis, refreshed by a timer, and are the same on every worker: dashboards and rules take
``max by (app)`` over workers. The per-worker series (``retention_worker_*``, lag, batch
and latency histograms) describe one process: dashboards ``sum`` them. The collector
never does I/O at scrape time; it renders the last snapshot it was given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Every metric name the worker exports; dashboards and rules may use only these.
GLOBAL_GAUGES = {
    "retention_dau": "distinct users active today (app timezone)",
    "retention_wau": "distinct users active in the 7 days ending today",
    "retention_mau": "distinct users active in the 30 days ending today",
    "retention_stickiness": "DAU / MAU today",
    "retention_installs": "distinct users with an install event today",
    "retention_new_users": "users first seen today",
    "retention_returning_users": "DAU minus new users today",
    "retention_revenue": "revenue today, per currency",
    "retention_payers": "distinct users with a purchase today",
    "retention_arpdau": "revenue today / DAU, per currency",
    "retention_arppu": "revenue today / payers, per currency",
    "retention_cohort_size": "users of a recent daily cohort",
    "retention_cohort_retention": "share of a daily cohort active on day N (classic) or on "
    "day N or later (rolling)",
    "retention_cohort_complete": "1 when the cohort's day N has ended",
    "retention_headline_retention": "D1/D7/D30 classic retention: latest complete cohort and "
    "mean of the 7 complete cohorts before it",
    "retention_watermark_seconds": "latest event time applied, per partition",
    "retention_inactive_users": "users inactive for at least the threshold now",
    "retention_winback_back_within_7d_share": "share of notified users active again within "
    "7 days of their notification",
    "retention_worker_snapshot_timestamp_seconds": "when the Redis figures were last read",
}
GLOBAL_COUNTERS = {
    "retention_events_accepted": "events accepted, by app and type",
    "retention_events_rejected": "events dead-lettered, by reason",
    "retention_events_duplicate": "duplicate events ignored, by app",
    "retention_notifications_sent": "inactivity notifications sent, by threshold and segment",
    "retention_reactivations": "notified users active again, by threshold and segment",
}


@dataclass(slots=True)
class Snapshot:
    figures: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    watermarks: dict[int, int] = field(default_factory=dict)
    taken_at: float = 0.0


class SnapshotCollector(Collector):
    """Renders the latest snapshot; ``update`` swaps it in one assignment."""

    def __init__(self, offsets: tuple[int, ...]) -> None:
        self.snapshot = Snapshot()
        self.offsets = offsets  # bounded cardinality: only these cohort offsets are exported

    def update(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Any]:
        return []  # the families vary with the data; describe nothing so registering is cheap

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot
        gauges = {
            name: GaugeMetricFamily(name, doc, labels=_GAUGE_LABELS[name])
            for name, doc in GLOBAL_GAUGES.items()
        }
        winback_counters = {
            name: CounterMetricFamily(name, GLOBAL_COUNTERS[name],
                                      labels=["app", "threshold", "segment"])
            for name in ("retention_notifications_sent", "retention_reactivations")
        }
        for app, figures in snap.figures.get("apps", {}).items():
            summary = figures["summary"]
            for name, key in _SUMMARY_FIELDS.items():
                gauges[name].add_metric([app], summary[key])
            gauges["retention_payers"].add_metric([app], summary.get("payers", 0))
            for name in ("revenue", "arpdau", "arppu"):
                for currency, value in summary.get(name, {}).items():
                    gauges[f"retention_{name}"].add_metric([app, currency], value)
            for kind, rows in figures["cohorts"].items():
                for row in rows:
                    if kind == "classic":
                        gauges["retention_cohort_size"].add_metric([app, row["cohort"]],
                                                                   row["size"])
                    for offset in (n for n in self.offsets if n < len(row["values"])):
                        labels = [app, kind, row["cohort"], str(offset)]
                        gauges["retention_cohort_retention"].add_metric(
                            labels, row["values"][offset])
                        if kind == "classic":
                            gauges["retention_cohort_complete"].add_metric(
                                [app, row["cohort"], str(offset)],
                                1.0 if row["complete"][offset] else 0.0)
            for days, found in figures.get("winback", {}).items():
                gauges["retention_inactive_users"].add_metric([app, days], found["inactive"])
                gauges["retention_winback_back_within_7d_share"].add_metric(
                    [app, days], found["back_within_7d_share"])
                for value, seg in found["by_segment"].items():
                    winback_counters["retention_notifications_sent"].add_metric(
                        [app, days, value], seg["notified"])
                    winback_counters["retention_reactivations"].add_metric(
                        [app, days, value], seg["reactivated"])
            for day, pair in figures["headline"].items():
                if pair is not None:
                    for stat, value in zip(("latest", "mean7"), pair, strict=True):
                        if value is None:  # no cohort before the latest: no baseline
                            continue
                        gauges["retention_headline_retention"].add_metric(
                            [app, f"d{day}", stat], value)
        for shard, mark_ms in snap.watermarks.items():
            gauges["retention_watermark_seconds"].add_metric([str(shard)], mark_ms / 1000)
        if snap.taken_at:
            gauges["retention_worker_snapshot_timestamp_seconds"].add_metric([], snap.taken_at)
        yield from gauges.values()
        yield from winback_counters.values()
        counters = {
            name: CounterMetricFamily(name, doc, labels=_COUNTER_LABELS[name])
            for name, doc in GLOBAL_COUNTERS.items()
            if name in _COUNTER_LABELS
        }
        for key, value in snap.stats.items():
            kind, _, rest = key.partition(":")
            if kind == "acc":
                app, _, event_type = rest.rpartition(":")
                counters["retention_events_accepted"].add_metric([app, event_type], value)
            elif kind == "rej":
                counters["retention_events_rejected"].add_metric([rest], value)
            elif kind == "dup":
                counters["retention_events_duplicate"].add_metric([rest], value)
        yield from counters.values()


_SUMMARY_FIELDS = {
    "retention_dau": "dau",
    "retention_wau": "wau",
    "retention_mau": "mau",
    "retention_stickiness": "stickiness",
    "retention_installs": "installs",
    "retention_new_users": "new_users",
    "retention_returning_users": "returning_users",
}
_GAUGE_LABELS = {
    **{name: ["app"] for name in _SUMMARY_FIELDS},
    "retention_payers": ["app"],
    "retention_revenue": ["app", "currency"],
    "retention_arpdau": ["app", "currency"],
    "retention_arppu": ["app", "currency"],
    "retention_cohort_size": ["app", "cohort"],
    "retention_cohort_retention": ["app", "kind", "cohort", "offset"],
    "retention_cohort_complete": ["app", "cohort", "offset"],
    "retention_headline_retention": ["app", "day", "stat"],
    "retention_watermark_seconds": ["partition"],
    "retention_inactive_users": ["app", "threshold"],
    "retention_winback_back_within_7d_share": ["app", "threshold"],
    "retention_worker_snapshot_timestamp_seconds": [],
}
_COUNTER_LABELS = {
    "retention_events_accepted": ["app", "type"],
    "retention_events_rejected": ["reason"],
    "retention_events_duplicate": ["app"],
}


class WorkerMetrics:
    """This process's instruments, in their own registry (fresh per app, as tests want)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records = Counter("retention_worker_records", "Kafka records processed by this worker",
                               registry=registry)
        self.batches = Counter("retention_worker_batches", "partition batches applied",
                               registry=registry)
        self.conflicts = Counter("retention_worker_version_conflicts",
                                 "batches re-planned after another writer applied first",
                                 registry=registry)
        self.redis_errors = Counter("retention_worker_redis_errors",
                                    "failed Redis calls (retried with back-off)",
                                    registry=registry)
        self.snapshot_errors = Counter("retention_worker_snapshot_errors",
                                       "failed refreshes of the Redis figures", registry=registry)
        self.batch_seconds = Histogram(
            "retention_worker_batch_seconds", "time to parse, plan and apply one batch",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.event_to_state_seconds = Histogram(
            "retention_worker_event_to_state_seconds",
            "from a record's Kafka timestamp to its batch applied in Redis",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.notifications = Counter("retention_worker_notifications",
                                     "inactivity notifications sent by this worker",
                                     registry=registry)
        self.notify_errors = Counter("retention_worker_notify_errors",
                                     "failed notification passes (retried next tick)",
                                     registry=registry)
        self.lag = Gauge("retention_worker_consumer_lag", "records behind the partition's end",
                         ["topic", "partition"], registry=registry)
        self.assigned = Gauge("retention_worker_assigned_partitions",
                              "partitions this worker consumes", registry=registry)

    def observe_batch(self, records: int, seconds: float, newest_record_ms: int) -> None:
        self.records.inc(records)
        self.batches.inc()
        self.batch_seconds.observe(seconds)
        self.event_to_state_seconds.observe(max(0.0, time.time() - newest_record_ms / 1000))
