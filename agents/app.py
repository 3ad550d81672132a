"""The Faust application: one app object per worker process, its tasks and its timers.

Faust is the process frame (worker lifecycle, signals, logging, the aiohttp web server,
timers); the consuming itself is the Ingestor's aiokafka loop, started as an app task. An
error in it stops the worker (Faust's crash), and ``run_worker`` reports why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
from faust.app.base import BootStrategy
from prometheus_client import CollectorRegistry

from retention_tracker.agents.ingest import Ingestor
from retention_tracker.agents.metrics import (
    Snapshot,
    SnapshotCollector,
    StateCacheLookups,
    WorkerMetrics,
)
from retention_tracker.agents.web import add_views
from retention_tracker.config.settings import ConfigError, Settings
from retention_tracker.state.at_risk import at_risk_figures, refit_every_app
from retention_tracker.state.connect import make_store
from retention_tracker.state.queries import live_figures
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import accelerated_clock

log = logging.getLogger(__name__)


class _FrameBoot(BootStrategy):
    """Faust without its own Kafka clients: the Ingestor owns consuming and producing."""

    enable_kafka = False


class TrackerApp(faust.App):
    BootStrategy = _FrameBoot

    def _new_web(self) -> Any:
        """Faust's web driver without its placeholder index ({"status": "OK"} at ``/``): the
        worker's own page is served there, and ``/health`` answers liveness probes."""
        driver = super()._new_web()
        driver.blueprints._enabled = [
            (prefix, bp) for prefix, bp in driver.blueprints._enabled
            if "production_index" not in str(bp)
        ]
        return driver

    async def crash(self, reason: BaseException) -> None:
        """Stop on an error. A ConfigError is a reason for the operator, not a bug: logged
        as one line (the CLI prints it and exits 2), no traceback."""
        if isinstance(reason, ConfigError):
            log.critical("%s", reason)
        await super().crash(reason)


class _NoTraceback(logging.Filter):
    """Mode logs every crash with its traceback; a ConfigError's message says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConfigError):
            record.exc_info = record.exc_text = None
        return True


log.addFilter(_NoTraceback())


def create_app(settings: Settings) -> faust.App:
    """Build the worker's app: consuming, the metrics snapshot, the web views."""
    app = TrackerApp(
        f"{settings.group_id}-frame",
        broker=settings.kafka_broker,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        autodiscover=False,
        topic_disable_leader=True,
        store="memory://",
        # Faust keeps nothing we need on disk (no tables): not in the working directory
        datadir=Path(tempfile.gettempdir()) / f"{settings.group_id}-faust-{os.getpid()}",
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_ms / 1000,
    )
    store = make_store(settings)
    if not settings.api_token and not is_loopback(settings.web_host):
        log.warning("WEB_HOST=%s serves the reports beyond this machine without API_TOKEN: "
                    "anyone who reaches port %s reads them", settings.web_host,
                    settings.web_port)
    registry = CollectorRegistry()
    worker_metrics = WorkerMetrics(registry)
    collector = SnapshotCollector(settings.metrics_offsets, settings.inactivity_thresholds,
                                  settings.currency, settings.activity_events,
                                  settings.app_currencies, settings.app_inactivity_thresholds)
    registry.register(collector)
    registry.register(StateCacheLookups(store.cache))
    ingestor = Ingestor(settings, store, clock_ms=accelerated_clock(settings.clock_speed),
                        metrics=worker_metrics)
    app.ingestor = ingestor  # type: ignore[attr-defined]
    app.store = store  # type: ignore[attr-defined]

    @app.task
    async def consume() -> None:
        """Any error here crashes the worker: never one that is up but not consuming."""
        await ingestor.start()
        notifier = asyncio.ensure_future(ingestor.notify_loop())
        try:
            await ingestor.run()
        finally:
            notifier.cancel()
            await ingestor.stop()

    @app.timer(interval=settings.metrics_refresh_s)
    async def refresh_snapshot() -> None:
        """Read the global figures from Redis off the scrape path."""
        try:
            collector.update(await take_snapshot(store, settings))
        except Exception:  # a failed refresh keeps the last snapshot; it is counted and logged
            worker_metrics.snapshot_errors.inc()
            log.exception("metrics snapshot failed")

    if settings.at_risk_refit_seconds:
        @app.timer(interval=settings.at_risk_refit_seconds)
        async def refit_lapse_models() -> None:
            """Refit every app's risk-of-lapsing model (METRICS.md §9) on the schedule."""
            try:
                await refit_every_app(store, settings)
            except Exception:  # the fit kept before stays; the next tick tries again
                log.exception("risk-of-lapsing refit failed")

    add_views(app, store, settings, registry, worker_metrics)
    return app


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


async def take_snapshot(store: RedisStore, settings: Settings) -> Snapshot:
    figures = await live_figures(store, settings)
    return Snapshot(
        figures=figures,
        stats=dict(figures.stats),
        watermarks={
            shard: progress.watermark_ms
            for shard, progress in (await store.reads.partition_progress([])).items()
            if progress.watermark_ms is not None
        },
        taken_at=time.time(),
        at_risk=await at_risk_figures(store, settings),
    )


def stop_reason(app: faust.App) -> str | None:
    """Why the worker stopped on its own, in one line (None: it was asked to stop)."""
    reason = app.crash_reason
    if reason is None:
        return None
    if isinstance(reason, ConfigError):
        return str(reason)
    return f"ingest loop failed: {reason!r}; restart the worker"
