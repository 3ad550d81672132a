"""Prometheus exposition: global figures from a Redis snapshot, plus this worker's own health.

The global figures (the gauges of ``streams/catalogue.py`` ...
``retention_events_accepted_total``) come from Redis, refreshed by a timer, and are the
same on every worker: dashboards and rules take
``max by (app)`` over workers. The per-worker series (``retention_worker_*``, lag, batch
and latency histograms) describe one process: dashboards ``sum`` them. The collector
never does I/O at scrape time; it renders the last snapshot it was given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from retention_tracker.streams.at_risk import MESSAGE_COUNTS
from retention_tracker.streams.catalogue import (
    COUNTERS,
    CURRENCY_FIGURES,
    DAILY_FIGURES,
    GAUGES,
    KPI_SPLITS,
    MONEY,
)
from retention_tracker.streams.counters import Cell, Stat
from retention_tracker.streams.events import EVENT_TYPES, FORWARD_CAUSES, REJECT_REASONS
from retention_tracker.streams.reports import AppFigures, LiveFigures, MoneyRow


@dataclass(slots=True)
class Snapshot:
    figures: LiveFigures | None = None
    stats: Mapping[Cell, int] = field(default_factory=dict)
    watermarks: dict[int, int] = field(default_factory=dict)
    taken_at: float = 0.0
    at_risk: dict[str, dict[str, int]] = field(default_factory=dict)  # app -> users, at_risk


class SnapshotCollector(Collector):
    """Renders the latest snapshot; ``update`` swaps it in one assignment. Every series
    whose label values are known (thresholds, segments, churn types, reject reasons, the
    app's currency) is exported from the start, at zero: panels show 0, not "No data", and
    ``rate()`` sees the first increment."""

    def __init__(self, offsets: tuple[int, ...], thresholds: tuple[int, ...] = (),
                 currency: str = "USD", activity_events: tuple[str, ...] = (),
                 app_currencies: Mapping[str, str] | None = None,
                 app_thresholds: Mapping[str, tuple[int, ...]] | None = None) -> None:
        self.snapshot = Snapshot()
        self.offsets = offsets  # bounded cardinality: only these cohort offsets are exported
        self.thresholds = thresholds
        self.currency = currency
        self.event_types = (*EVENT_TYPES, *activity_events)  # accepted counters at zero
        self.app_currencies = dict(app_currencies or {})  # APP_CURRENCIES
        self.app_thresholds = dict(app_thresholds or {})  # APP_INACTIVITY_THRESHOLDS

    def update(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Any]:
        return []  # the families vary with the data; describe nothing so registering is cheap

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot
        gauges = {g.name: GaugeMetricFamily(g.name, g.help, labels=g.labels) for g in GAUGES}
        counters = {c.name: CounterMetricFamily(c.name, c.help, labels=c.labels)
                    for c in COUNTERS}
        apps = snap.figures.apps if snap.figures is not None else {}
        stats = snap.stats
        for app, figures in apps.items():
            self._summary(gauges, app, figures.summary)
            self._cohorts(gauges, app, figures)
            self._money(gauges, app, figures.money)
            self._periods(gauges, app, figures.periods)
            self._nps(gauges, app, figures.nps)
            self._winback(gauges, counters, app, figures)
        for app, risk in snap.at_risk.items():
            gauges["retention_at_risk_users"].add_metric([app], risk["at_risk"])
            gauges["retention_tracked_users"].add_metric([app], risk["users"])
        self._at_risk_messages(counters, snap.at_risk, stats)
        for shard, mark_ms in snap.watermarks.items():
            gauges["retention_watermark_seconds"].add_metric([str(shard)], mark_ms / 1000)
        if snap.taken_at:
            gauges["retention_worker_snapshot_timestamp_seconds"].add_metric([], snap.taken_at)
        self._events(counters, list(apps), stats, self.event_types)
        yield from gauges.values()
        yield from counters.values()

    def _summary(self, gauges: dict[str, GaugeMetricFamily], app: str,
                 summary: Mapping[str, Any]) -> None:
        for figure in DAILY_FIGURES:
            gauges[figure.gauge].add_metric([app], summary.get(figure.key, 0))
        own = self.app_currencies.get(app, self.currency)
        for money in CURRENCY_FIGURES:
            for currency, value in {own: 0, **summary.get(money.key, {})}.items():
                gauges[money.gauge].add_metric([app, currency], value)

    def _cohorts(self, gauges: dict[str, GaugeMetricFamily], app: str,
                 figures: AppFigures) -> None:
        for kind, rows in figures.cohorts.items():
            for row in rows:
                if kind == "classic":
                    gauges["retention_cohort_size"].add_metric([app, row.cohort], row.size)
        for suffix, by_kind in (("", figures.cohorts), ("_24h", figures.cohorts24)):
            for kind, rows in by_kind.items():
                for row in rows:
                    for offset in (n for n in self.offsets if n < len(row.values)):
                        labels = [row.cohort, str(offset)]
                        gauges["retention_cohort_retention" + suffix].add_metric(
                            [app, kind, *labels], row.values[offset])
                        if kind == "classic":
                            gauges["retention_cohort_complete" + suffix].add_metric(
                                [app, *labels], 1.0 if row.complete[offset] else 0.0)
        for returning, rows in figures.returning.items():
            for row in rows:
                for offset in (n for n in self.offsets if n < len(row.values)):
                    gauges["retention_cohort_returning"].add_metric(
                        [app, returning, row.cohort, str(offset)], row.values[offset])
        for day, pair in figures.headline.items():
            if pair is not None:
                for stat, value in zip(("latest", "mean7"), pair, strict=True):
                    if value is None:  # no cohort before the latest: no baseline
                        continue
                    gauges["retention_headline_retention"].add_metric(
                        [app, f"d{day}", stat], value)
        for day, size in figures.headline_size.items():
            if size is not None:
                gauges["retention_headline_cohort_size"].add_metric([app, f"d{day}"], size)

    def _winback(self, gauges: dict[str, GaugeMetricFamily],
                 counters: dict[str, CounterMetricFamily], app: str,
                 figures: AppFigures) -> None:
        for days in self.app_thresholds.get(app, self.thresholds):
            found = figures.winback.get(str(days), {})
            gauges["retention_inactive_users"].add_metric(
                [app, str(days)], found.get("inactive", 0))
            share = found.get("back_within_7d_share")
            if share is not None:
                gauges["retention_winback_back_within_7d_share"].add_metric([app, str(days)],
                                                                           share)
            counters["retention_notifications_expired"].add_metric(
                [app, str(days)], found.get("expired", 0))
        for (days, kind), by_segment in figures.winback_counts.items():
            for segment, by_churn in by_segment.items():
                for churn, value in by_churn.items():
                    counters[_WINBACK_COUNTERS[kind]].add_metric(
                        [app, str(days), segment, churn], value)

    @staticmethod
    def _at_risk_messages(counters: dict[str, CounterMetricFamily], fitted: Mapping[str, Any],
                          stats: Mapping[Cell, int]) -> None:
        """The users.at_risk counts of every app with a fit (each outcome from 0) or with
        counts left from an earlier one."""
        apps = set(fitted) | {cell[1] for cell in stats if cell[0] in MESSAGE_COUNTS}
        for app in sorted(apps):
            for stat, outcome in MESSAGE_COUNTS.items():
                counters["retention_at_risk_messages"].add_metric([app, outcome],
                                                                  stats.get((stat, app), 0))

    @staticmethod
    def _events(counters: dict[str, CounterMetricFamily], apps: list[str],
                stats: Mapping[Cell, int], event_types: tuple[str, ...]) -> None:
        """Accepted, rejected, duplicate and forwarded events, each known series at 0."""
        found: dict[str, dict[tuple[str, ...], int]] = {
            "retention_events_accepted": {(a, t): 0 for a in apps for t in event_types},
            "retention_events_rejected": {(r,): 0 for r in REJECT_REASONS},
            "retention_events_duplicate": {(a,): 0 for a in apps},
            "retention_events_forwarded": {(a, c): 0 for a in apps for c in FORWARD_CAUSES},
        }
        for key, value in stats.items():
            name = _EVENT_COUNTERS.get(key[0])
            if name is not None:
                found[name][key[1:]] = value
        for name, series in found.items():
            for labels, value in sorted(series.items()):
                counters[name].add_metric(list(labels), value)


    def _periods(self, gauges: dict[str, GaugeMetricFamily], app: str,
                 periods: Mapping[str, Mapping[str, Any]]) -> None:
        """The current period's KPIs split between new and returning users (the catalogue's
        KPI_SPLITS), each on its gauge labelled ``users``; money in every currency of the
        splits and the app's own, 0 where the other side has none."""
        for period, row in periods.items():
            currencies = sorted({self.app_currencies.get(app, self.currency), *(
                currency for kpi in KPI_SPLITS if kpi.unit == MONEY for currency in row[kpi.key])})
            for kpi, split in ((k, k.split) for k in KPI_SPLITS if k.split is not None):
                labels, value = [app, period, split.users], row[kpi.key]
                family = gauges[split.gauge]
                if kpi.unit == MONEY:
                    for currency in currencies:
                        family.add_metric([*labels, currency], value.get(currency, 0))
                else:
                    family.add_metric(labels, value)

    @staticmethod
    def _nps(gauges: dict[str, GaugeMetricFamily], app: str,
             found: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """NPS of the current period and of the previous one's retained and churned
        answerers, per survey; an NPS without answers is not a number, so it is left out."""
        for period, by_survey in found.items():
            for survey, groups in sorted(by_survey.items()):
                current = groups.get("current", {})
                gauges["retention_nps_answers"].add_metric([app, period, survey],
                                                           current.get("answers", 0))
                if current.get("nps") is not None:
                    gauges["retention_nps"].add_metric([app, period, survey], current["nps"])
                for group in ("retained", "churned"):
                    value = groups.get(group, {}).get("nps")
                    if value is not None:
                        gauges["retention_nps_previous"].add_metric([app, period, survey, group],
                                                                    value)

    def _money(self, gauges: dict[str, GaugeMetricFamily], app: str,
               money: Mapping[str, Mapping[str, Sequence[MoneyRow]]]) -> None:
        """LTV and ROAS cells at the exported offsets only (cohorts x offsets x currency)."""
        for kind, by_currency in money.items():
            for currency, rows in by_currency.items():
                for row in rows:
                    for offset in (n for n in self.offsets if n < len(row.values)):
                        value = row.values[offset]
                        if value is not None:  # ROAS of a cohort without costs
                            gauges[f"retention_cohort_{kind}"].add_metric(
                                [app, row.cohort, str(offset), currency], value)


_EVENT_COUNTERS = {Stat.ACCEPTED: "retention_events_accepted",
                   Stat.REJECTED: "retention_events_rejected",
                   Stat.DUPLICATE: "retention_events_duplicate",
                   Stat.FORWARDED: "retention_events_forwarded"}
_WINBACK_COUNTERS = {Stat.SENT: "retention_notifications_sent",
                     Stat.REACTIVATED: "retention_reactivations",
                     Stat.FALSE_ALARM: "retention_false_alarms",
                     Stat.BACK_WITHIN_7D: "retention_reactivations_within_7d"}


class CacheCounts(Protocol):
    """What ``state.cache.StateCache`` counts (this module reads no state: a protocol)."""

    held: int
    loaded: int


class StateCacheLookups(Collector):
    """The users batches needed, held in this worker's state cache or loaded from Redis
    (``state.cache.StateCache`` counts them): a hit rate far below 1 on a steady stream
    says ``STATE_CACHE_USERS`` is short of the users active between two of their events."""

    def __init__(self, cache: CacheCounts) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "retention_worker_state_cache_lookups",
            "users a batch needed: held in the state cache, or loaded from Redis",
            labels=["outcome"])
        family.add_metric(["held"], self.cache.held)
        family.add_metric(["loaded"], self.cache.loaded)
        yield family


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
        self.send_errors = Counter("retention_worker_send_errors",
                                   "failed sends to Kafka (the batch retried with back-off)",
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
        self.forwarded = Counter("retention_worker_forwarded",
                                 "events this worker forwarded to their home partition",
                                 registry=registry)
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
