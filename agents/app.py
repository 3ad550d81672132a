"""The Faust application: one app object per worker process, its web views and its tasks.

Faust is the process frame (worker lifecycle, signals, logging, the aiohttp web server,
timers); the consuming itself is the Ingestor's aiokafka loop, started as an app task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import faust
from faust.app.base import BootStrategy
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from retention_tracker.agents.ingest import Ingestor
from retention_tracker.agents.metrics import Snapshot, SnapshotCollector, WorkerMetrics
from retention_tracker.agents.rekey import PartitionCountChanged
from retention_tracker.config.settings import Settings
from retention_tracker.state.connect import make_store
from retention_tracker.state.queries import (
    QueryError,
    apps_report,
    cohort_report,
    daily_report,
    headline_report,
    kpis_report,
    live_figures,
    pipeline_report,
    repeat_purchase_report,
    summary_report,
    value_segments_report,
)
from retention_tracker.state.store import TimezoneConflict
from retention_tracker.streams.calendar import accelerated_clock, parse_date

log = logging.getLogger(__name__)


def _date_param(request: Request, name: str) -> date | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return parse_date(raw)
    except ValueError as exc:
        raise QueryError(str(exc), name) from None


STATIC_DIR = Path(__file__).parent / "static"


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


def create_app(settings: Settings, fatal: list[str] | None = None) -> faust.App:
    """Build the worker's app. ``fatal`` collects a one-line reason when the worker must
    stop (e.g. a timezone conflict), for the CLI's exit code."""
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

    def on_fatal(reason: str) -> None:
        log.critical("%s", reason)
        if fatal is not None:
            fatal.append(reason)
        os.kill(os.getpid(), signal.SIGTERM)  # the Faust worker's own graceful stop

    registry = CollectorRegistry()
    worker_metrics = WorkerMetrics(registry)
    collector = SnapshotCollector(settings.metrics_offsets, settings.inactivity_thresholds,
                                  settings.currency)
    registry.register(collector)
    ingestor = Ingestor(
        settings, store, clock_ms=accelerated_clock(settings.clock_speed), on_fatal=on_fatal,
        metrics=worker_metrics,
    )
    app.ingestor = ingestor  # type: ignore[attr-defined]
    app.store = store  # type: ignore[attr-defined]

    @app.task
    async def consume() -> None:
        await ingestor.start()
        notifier = asyncio.ensure_future(ingestor.notify_loop())
        try:
            await ingestor.run()
        except (TimezoneConflict, PartitionCountChanged):
            pass  # on_fatal already asked the worker to stop
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never a worker that is up but no longer consuming
            log.exception("ingest loop failed")
            on_fatal(f"ingest loop failed: {exc!r}; restart the worker")
        finally:
            notifier.cancel()
            await ingestor.stop()

    @app.timer(interval=settings.metrics_refresh_s)
    async def refresh_snapshot() -> None:
        """Read the global figures from Redis off the scrape path."""
        try:
            figures = await live_figures(store, settings)
            collector.update(Snapshot(
                figures=figures,
                stats=dict(figures["stats"]),
                watermarks={
                    shard: progress["watermark_ms"]  # type: ignore[misc]
                    for shard, progress in (await store.partition_progress([])).items()
                    if progress["watermark_ms"] is not None
                },
                taken_at=time.time(),
            ))
        except Exception:  # a failed refresh keeps the last snapshot; it is counted and logged
            worker_metrics.snapshot_errors.inc()
            log.exception("metrics snapshot failed")

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp takes the charset apart from the content type
            content_type = CONTENT_TYPE_LATEST.split("; charset")[0]
            return self.bytes(generate_latest(registry), content_type=content_type)

    async def _answer(view: View, build: Any) -> Response:
        try:
            return view.json(await build())
        except QueryError as exc:
            return view.json({"error": exc.shown(), "parameter": exc.param}, status=400)

    @app.page("/retention/cohorts")
    class Cohorts(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            return await _answer(
                self,
                lambda: cohort_report(
                    store,
                    settings,
                    q.get("app", "default"),
                    q.get("granularity", "day"),
                    q.get("kind", "classic"),
                    _date_param(request, "from"),
                    _date_param(request, "to"),
                    request.query.getall("where", []),
                    q.get("currency"),
                ),
            )

    @app.page("/retention/summary")
    class Summary(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            return await _answer(
                self,
                lambda: summary_report(
                    store, settings, q.get("app", "default"), _date_param(request, "date"),
                    request.query.getall("where", []),
                ),
            )

    @app.page("/retention/kpis")
    class Kpis(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            return await _answer(self, lambda: kpis_report(
                store, settings, q.get("app", "default"), q.get("period", "week"),
                q.getall("where", []),
            ))

    @app.page("/retention/rpr")
    class RepeatPurchases(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            return await _answer(self, lambda: repeat_purchase_report(
                store, settings, q.get("app", "default"), q.get("granularity", "month"),
                _date_param(request, "from"), _date_param(request, "to"), q.getall("where", []),
            ))

    @app.page("/retention/segments")
    class ValueSegments(View):
        async def get(self, request: Request) -> Response:
            return await _answer(self, lambda: value_segments_report(
                store, settings, request.query.get("app", "default")))

    @app.page("/retention/daily")
    class Daily(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            return await _answer(self, lambda: daily_report(
                store, settings, q.get("app", "default"), _date_param(request, "from"),
                _date_param(request, "to"), q.getall("where", []),
            ))

    @app.page("/retention/headline")
    class Headline(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            return await _answer(self, lambda: headline_report(
                store, settings, q.get("app", "default"), q.getall("where", [])))

    @app.page("/retention/apps")
    class Apps(View):
        async def get(self, request: Request) -> Response:
            return await _answer(self, lambda: apps_report(store, settings))

    @app.page("/retention/pipeline")
    class Pipeline(View):
        async def get(self, request: Request) -> Response:
            async def build() -> dict[str, Any]:
                doc = await pipeline_report(store, settings)
                doc["lag"] = worker_lag(worker_metrics)
                return doc

            return await _answer(self, build)

    _add_page_routes(app)
    return app


def worker_lag(metrics: WorkerMetrics) -> dict[str, int]:
    """This worker's consumer lag per topic/partition (the partitions it consumes)."""
    return {
        f"{sample.labels['topic']}/{sample.labels['partition']}": int(sample.value)
        for family in metrics.lag.collect() for sample in family.samples
    }


def _add_page_routes(app: faust.App) -> None:
    """The page at ``/`` and its files (our HTML, JS, CSS and the vendored chart library,
    shipped as package data), and ``/health`` for liveness probes. Read-only, offline."""

    @app.page("/")
    class Page(View):
        async def get(self, request: Request) -> Response:
            return self.html((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "OK"})

    app.web.add_static("/static/", STATIC_DIR)
