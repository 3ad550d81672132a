"""The worker's HTTP surface: ``/metrics``, the JSON reports under ``/retention/``, the page at
``/`` and ``/health``. Every report view is one line of the table below: parameters from the
query string, the report from ``state.queries``, a bad parameter as a 400 naming it.

With ``API_TOKEN`` set, every report needs ``Authorization: Bearer <API_TOKEN>``; with
``METRICS_TOKEN``, ``/metrics`` needs its own (Prometheus scrapes with its own
credentials). The page and ``/health`` hold no data and stay open (the page asks for the
token when the API answers 401).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import date
from pathlib import Path

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from retention_tracker.agents.metrics import WorkerMetrics
from retention_tracker.config.settings import Settings
from retention_tracker.state.at_risk import at_risk_report, at_risk_user_report
from retention_tracker.state.queries import (
    QueryError,
    apps_report,
    cohort_report,
    daily_report,
    headline_report,
    kpis_report,
    nps_report,
    pipeline_report,
    repeat_purchase_report,
    summary_report,
    value_segments_report,
)
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import parse_date
from retention_tracker.streams.catalogue import CALENDAR, catalogue_json
from retention_tracker.streams.events import DEFAULT_SURVEY
from retention_tracker.streams.reports import CatalogueReport, Report

STATIC_DIR = Path(__file__).parent / "static"
Answer = Callable[[Request], Awaitable[Report]]


def add_views(app: faust.App, store: RedisStore, settings: Settings,
              registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    """Every route of the worker's web server."""

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            if not authorized(request, settings.metrics_token):
                return _unauthorized(self)
            # aiohttp takes the charset apart from the content type
            content_type = CONTENT_TYPE_LATEST.split("; charset")[0]
            return self.bytes(generate_latest(registry), content_type=content_type)

    for path, report in report_routes(store, settings, metrics).items():
        app.page(path)(_json_view(path, report, settings.api_token))
    _add_page_routes(app)


def report_routes(store: RedisStore, settings: Settings, metrics: WorkerMetrics
                  ) -> dict[str, Answer]:
    """Path -> the report it answers, from the request's query string."""

    def app_of(r: Request) -> str:
        return r.query.get("app", "default")

    def where(r: Request) -> list[str]:
        return r.query.getall("where", [])  # type: ignore[attr-defined]  # a MultiDict

    async def pipeline(r: Request) -> Report:
        return replace(await pipeline_report(store, settings), lag=worker_lag(metrics))

    async def at_risk(r: Request) -> Report:
        if r.query.get("user"):
            return await at_risk_user_report(store, settings, app_of(r), r.query["user"])
        return await at_risk_report(store, settings, app_of(r),
                                    r.query.get("refit", "") in ("1", "true"))

    return {
        "/retention/cohorts": lambda r: cohort_report(
            store, settings, app_of(r), r.query.get("granularity", "day"),
            r.query.get("kind", "classic"), _date_param(r, "from"), _date_param(r, "to"),
            where(r), r.query.get("currency"), r.query.get("returning") or None,
            r.query.get("window", CALENDAR)),
        "/retention/summary": lambda r: summary_report(
            store, settings, app_of(r), _date_param(r, "date"), where(r)),
        "/retention/kpis": lambda r: kpis_report(
            store, settings, app_of(r), r.query.get("period", "week"), where(r)),
        "/retention/nps": lambda r: nps_report(
            store, settings, app_of(r), r.query.get("period", "week"),
            r.query.get("survey", DEFAULT_SURVEY), where(r), r.query.get("by", "period")),
        "/retention/rpr": lambda r: repeat_purchase_report(
            store, settings, app_of(r), r.query.get("granularity", "month"),
            _date_param(r, "from"), _date_param(r, "to"), where(r)),
        "/retention/segments": lambda r: value_segments_report(store, settings, app_of(r)),
        "/retention/daily": lambda r: daily_report(
            store, settings, app_of(r), _date_param(r, "from"), _date_param(r, "to"),
            where(r)),
        "/retention/headline": lambda r: headline_report(store, settings, app_of(r), where(r)),
        "/retention/apps": lambda r: apps_report(store, settings),
        "/retention/figures": lambda r: figures_report(),
        "/retention/pipeline": pipeline,
        "/retention/at-risk": at_risk,
    }


async def figures_report() -> CatalogueReport:
    """What ``/retention/figures`` answers: the catalogue of figures, no data."""
    return CatalogueReport(catalogue_json())


def authorized(request: Request, token: str) -> bool:
    """No token configured, or the request carries it as a bearer token (compared in
    constant time, so the answer's timing tells nothing about the token)."""
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


def _unauthorized(view: View) -> Response:
    return view.json({"error": "missing or wrong bearer token"}, status=401,
                     headers={"WWW-Authenticate": 'Bearer realm="retention"'})


def _json_view(path: str, report: Answer, token: str) -> type[View]:
    """A view answering ``report`` as JSON, a bad parameter as a 400 that names it."""

    async def get(self: View, request: Request) -> Response:
        if not authorized(request, token):
            return _unauthorized(self)
        try:
            return self.json((await report(request)).as_json())
        except QueryError as exc:
            return self.json({"error": exc.shown(), "parameter": exc.param}, status=400)

    name = "".join(part.title() for part in path.rsplit("/", 1)[-1].split("_")) + "View"
    return type(name, (View,), {"get": get})


def _date_param(request: Request, name: str) -> date | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return parse_date(raw)
    except ValueError as exc:
        raise QueryError(str(exc), name) from None


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
