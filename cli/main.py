"""The ``retention`` command: worker, reports, feeding (replay, simulate) and the demo.

Every expected failure (a bad flag or setting, an unreachable service, an unknown app)
ends as one readable line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

import click
import orjson
import redis.exceptions
from aiokafka.errors import KafkaError

from retention_tracker.cli.render import (
    at_risk_text,
    kpis_table,
    nps_text,
    rpr_text,
    segments_table,
    summary_text,
    triangle_table,
)
from retention_tracker.config.settings import ConfigError, Settings, mask_url
from retention_tracker.state.at_risk import at_risk_report, at_risk_user_report
from retention_tracker.state.queries import (
    NPS_BY,
    QueryError,
    cohort_report,
    kpis_report,
    nps_report,
    repeat_purchase_report,
    summary_report,
    value_segments_report,
)
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import GRANULARITIES, MS_PER_DAY, parse_date
from retention_tracker.streams.catalogue import CALENDAR, WINDOWS
from retention_tracker.streams.events import DEFAULT_SURVEY
from retention_tracker.streams.figures import KINDS, KPI_PERIODS, MONEY_KINDS
from retention_tracker.streams.nps import NPS_PERIODS
from retention_tracker.streams.reports import AtRiskReport, AtRiskUserReport, ReplayReport, Report

T = TypeVar("T")
EXIT_USAGE = 2


class Fatal(Exception):
    """Stop with this one line."""


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise Fatal(str(exc)) from None


def _date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return parse_date(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    from retention_tracker.cli.feeding import TopicMissing, kafka_problem, quiet_kafka_logs

    try:
        with quiet_kafka_logs():
            return asyncio.run(main())
    except TopicMissing as exc:
        raise Fatal(str(exc)) from None
    except QueryError as exc:
        raise Fatal(exc.shown("--")) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            redis.exceptions.ResponseError, redis.exceptions.RedisClusterException) as exc:
        from retention_tracker.state.connect import redis_failure, redis_problem

        unreachable = isinstance(exc, (redis.exceptions.ConnectionError,
                                       redis.exceptions.TimeoutError))
        if not unreachable and redis_problem(exc) is None:
            raise
        # (refused credentials are a ConnectionError: redis_failure says which it was)
        raise Fatal(redis_failure(exc, "REDIS_URL")) from None
    except KafkaError as exc:
        raise Fatal(kafka_problem(exc, mask_url(_settings().kafka_broker))) from None


R = TypeVar("R", bound=Report)


def _show(build: Callable[[RedisStore, Settings], Awaitable[R]], as_json: bool,
          text: Callable[[R], str]) -> None:
    """A report read from Redis (no worker needed), shown as text or JSON."""
    from retention_tracker.state.connect import make_store

    settings = _settings()
    async def report() -> R:
        store = make_store(settings)
        try:
            return await build(store, settings)
        finally:
            await store.close()

    _emit(_run(report), as_json, text)


def _emit(report: R, as_json: bool, text: Callable[[R], str]) -> None:
    """The one difference between the CLI and HTTP: here a report may be text."""
    if as_json:
        click.echo(orjson.dumps(report.as_json()).decode())
    else:
        click.echo(text(report))


WHERE = click.option(
    "--where", "where", multiple=True, metavar="ATTR=VALUE",
    help="segment: platform=, country=, campaign= or value=vip|payer|free",
)


@click.group()
def cli() -> None:
    """Real-time streaming retention tracker (see README.md)."""


@cli.command()
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run a worker: consume the input topics, keep the state in Redis, serve HTTP."""
    from retention_tracker.agents.worker import run_worker

    sys.exit(run_worker(_settings(), loglevel))


@cli.command()
@click.option("--app", "app_name", default="default", show_default=True)
@click.option(
    "--granularity", type=click.Choice(GRANULARITIES), default="day",
    show_default=True,
)
@click.option("--kind", default="classic", show_default=True,
              type=click.Choice([*KINDS, *MONEY_KINDS]))
@click.option("--currency", default=None, help="money kinds: the currency (default CURRENCY)")
@click.option("--returning", default=None, metavar="TYPE",
              help="count a user back only if it sent this event type (one of RETURN_EVENTS)")
@click.option("--window", type=click.Choice(WINDOWS), default=CALENDAR, show_default=True,
              help="24h: day N counted in 24-hour windows from each user's first event "
              "(daily cohorts, classic or rolling)")
@WHERE
@click.option("--from", "date_from", callback=_date, help="first cohort (YYYY-MM-DD)")
@click.option("--to", "date_to", callback=_date, help="last cohort (YYYY-MM-DD)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def report(
    app_name: str, granularity: str, kind: str, currency: str | None, returning: str | None,
    window: str, where: tuple[str, ...], date_from: date | None, date_to: date | None,
    as_json: bool,
) -> None:
    """Print a cohort triangle (retention or money), read from Redis (no worker needed)."""
    _show(lambda store, settings: cohort_report(
        store, settings, app_name, granularity, kind, date_from, date_to, where, currency,
        returning, window,
    ), as_json, triangle_table)


@cli.command()
@click.option("--app", "app_name", default="default", show_default=True)
@click.option("--date", "on", callback=_date, help="the day (YYYY-MM-DD), default today")
@WHERE
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def summary(app_name: str, on: date | None, where: tuple[str, ...], as_json: bool) -> None:
    """Print the day's figures: active, new and returning users, money, win-back."""
    _show(lambda store, settings: summary_report(store, settings, app_name, on, where),
          as_json, summary_text)


@cli.command()
@click.option("--app", "app_name", default="default", show_default=True)
@click.option("--period", type=click.Choice(KPI_PERIODS), default="week",
              show_default=True)
@WHERE
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def kpis(app_name: str, period: str, where: tuple[str, ...], as_json: bool) -> None:
    """Per period: active, new, returning, CRR, churn, revenue, payers, repeat purchase rate."""
    _show(lambda store, settings: kpis_report(store, settings, app_name, period, where),
          as_json, kpis_table)


@cli.command()
@click.option("--app", "app_name", default="default", show_default=True)
@click.option("--period", type=click.Choice(NPS_PERIODS), default="week", show_default=True)
@click.option("--survey", default=DEFAULT_SURVEY, show_default=True, help="which survey")
@click.option("--by", "by", type=click.Choice(NPS_BY), default="period", show_default=True,
              help="rows per period, per cohort, or answerers retained vs churned")
@WHERE
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def nps(app_name: str, period: str, survey: str, by: str, where: tuple[str, ...],
        as_json: bool) -> None:
    """Satisfaction: NPS (promoters - detractors) of survey answers, by period or cohort."""
    _show(lambda store, settings: nps_report(store, settings, app_name, period, survey,
                                             where, by), as_json, nps_text)


@cli.command()
@click.option("--app", "app_name", default="default", show_default=True)
@click.option("--granularity", type=click.Choice(GRANULARITIES), default="month",
              show_default=True, help="cohort granularity of the per-cohort rates")
@click.option("--from", "date_from", callback=_date, help="window start (YYYY-MM-DD)")
@click.option("--to", "date_to", callback=_date, help="window end (YYYY-MM-DD)")
@WHERE
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def rpr(app_name: str, granularity: str, date_from: date | None, date_to: date | None,
        where: tuple[str, ...], as_json: bool) -> None:
    """Repeat purchase rate: lifetime, per cohort, and for a window (--from/--to)."""
    _show(lambda store, settings: repeat_purchase_report(
        store, settings, app_name, granularity, date_from, date_to, where), as_json, rpr_text)


@cli.command()
@click.option("--app", "app_name", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def segments(app_name: str, as_json: bool) -> None:
    """VIP, payers and free users side by side: counts and D1/D7/D30 retention."""
    _show(lambda store, settings: value_segments_report(store, settings, app_name),
          as_json, segments_table)


@cli.command("at-risk")
@click.option("--app", "app_name", default="default", show_default=True)
@click.option("--user", "user_id", default=None, help="one user's x, t_x, T and P(alive)")
@click.option("--refit", is_flag=True, help="fit the model now (else the one kept)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def at_risk(app_name: str, user_id: str | None, refit: bool, as_json: bool) -> None:
    """Risk of lapsing: the app's BG/NBD (or MBG/NBD) model and P(alive) of its users."""

    async def build(store: RedisStore, settings: Settings) -> AtRiskReport | AtRiskUserReport:
        if user_id is not None:
            return await at_risk_user_report(store, settings, app_name, user_id)
        return await at_risk_report(store, settings, app_name, refit)

    _show(build, as_json, at_risk_text)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--csv-map", default=None,
              help="CSV input: our field=their column, e.g. user_id=uid,ts=time,type=event")
@click.option("--no-sort", is_flag=True,
              help="keep file order (default: sort by event time, see "
                   "docs/operations.md 'Replaying a history')")
@click.option("--batch", "batch_size", default=1, show_default=True,
              help="events per Kafka message (JSON arrays of one user's events)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable summary")
def replay(files: tuple[str, ...], csv_map: str | None, no_sort: bool, batch_size: int,
           as_json: bool) -> None:
    """Produce a history (JSONL of events, or CSV with --csv-map) to the input topic."""
    from retention_tracker.cli.feeding import (
        parse_mapping,
        prepare_replay,
        produce_events,
        read_csv,
        read_jsonl,
    )
    from retention_tracker.streams.calendar import utc_now_ms

    settings = _settings()
    try:
        mapping = parse_mapping(csv_map) if csv_map else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--csv-map") from None

    def rows() -> Any:
        for path in files:
            yield from (read_csv(path, mapping) if mapping is not None else read_jsonl(path))

    try:
        valid, rejected = prepare_replay(rows(), utc_now_ms(), sort=not no_sort,
                                         activity_types=settings.activity_types)
    except ValueError as exc:
        raise Fatal(str(exc)) from None
    stats = _run(lambda: produce_events(
        settings.bootstrap_servers, settings.input_topics[0], valid, batch_size=batch_size,
        progress=not as_json, client_options=settings.kafka_options(),
    ))
    report = ReplayReport(stats.events, stats.messages, round(stats.seconds, 3),
                          dict(sorted(rejected.items())))
    _emit(report, as_json, lambda r: f"{stats}\nrejected lines: " + (
        ", ".join(f"{k}={v}" for k, v in r.rejected.items()) or "none"))


@cli.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="start at the oldest message")
@click.option("--limit", default=0, help="stop after this many messages (0: run until Ctrl-C)")
@click.option("--group", default=None, help="consume as this group (default: no group)")
def tail(topic: str, from_beginning: bool, limit: int, group: str | None) -> None:
    """Print a topic's messages as a push service receives them (one JSON line each)."""
    from retention_tracker.cli.feeding import tail_topic

    settings = _settings()
    _run(lambda: tail_topic(settings.bootstrap_servers, topic, from_beginning, limit, group,
                            click.echo, settings.kafka_options()))


@cli.command()
@click.option("--days", default=30, show_default=True, help="simulated days of traffic")
@click.option("--installs-per-day", default=200, show_default=True)
@click.option("--seconds-per-day", default=5.0, show_default=True,
              help="time acceleration: wall seconds per simulated day (0 = as fast as possible)")
@click.option("--duplicate-rate", default=0.01, show_default=True)
@click.option("--late-rate", default=0.01, show_default=True)
@click.option("--malformed-rate", default=0.0, show_default=True)
@click.option("--survey-rate", default=0.05, show_default=True,
              help="NPS survey answers per active day (0: none)")
@click.option("--activity-rate", default=0.5, show_default=True,
              help="share of active days with events of the ACTIVITY_EVENTS types (0: none)")
@click.option("--no-install-costs", is_flag=True, help="installs without a cost (no CAC, ROAS)")
@click.option("--seed", default=0, show_default=True)
@click.option("--batch", "batch_size", default=1, show_default=True,
              help="events per Kafka message")
def simulate(days: int, installs_per_day: int, seconds_per_day: float, duplicate_rate: float,
             late_rate: float, malformed_rate: float, survey_rate: float, activity_rate: float,
             no_install_costs: bool, seed: int, batch_size: int) -> None:
    """Live synthetic traffic: installs with costs, a retention curve, purchases, survey
    answers, the custom types of ACTIVITY_EVENTS, dirt on demand."""
    from retention_tracker.cli.feeding import produce_events, simulated_stream
    from retention_tracker.streams.calendar import utc_now_ms
    from retention_tracker.streams.simulation import SimulationConfig

    settings = _settings()
    try:
        cfg = SimulationConfig(
            installs_per_day=installs_per_day, days=days, seed=seed,
            start_ms=utc_now_ms() - days * MS_PER_DAY, duplicate_rate=duplicate_rate,
            late_rate=late_rate, malformed_rate=malformed_rate, survey_rate=survey_rate,
            activity_types=settings.activity_events, activity_rate=activity_rate,
            install_costs=not no_install_costs,
        )
    except ValueError as exc:
        raise Fatal(str(exc)) from None
    stats = _run(lambda: produce_events(
        settings.bootstrap_servers, settings.input_topics[0],
        simulated_stream(cfg, seconds_per_day), batch_size=batch_size,
        client_options=settings.kafka_options(),
    ))
    click.echo(str(stats))


@cli.command()
@click.option("--days", default=30, show_default=True)
@click.option("--installs-per-day", default=200, show_default=True)
@click.option("--seconds-per-day", default=5.0, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="where logs and Redis files go (default: a new temporary folder)")
def demo(days: int, installs_per_day: int, seconds_per_day: float, workdir: str | None) -> None:
    """Everything on embedded defaults: broker, Redis, a worker and the simulator."""
    from pathlib import Path

    from retention_tracker.cli.demo import run_demo
    from retention_tracker.devstack import MissingLocalExtra

    try:
        code = run_demo(days, installs_per_day, seconds_per_day,
                        Path(workdir) if workdir else None)
    except MissingLocalExtra as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


def _register_optional_commands() -> None:
    """`bench` needs the source checkout's bench/ folder; `check` is always there."""
    from retention_tracker.cli.bench import bench
    from retention_tracker.cli.check import check

    cli.add_command(bench)
    cli.add_command(check)


_register_optional_commands()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"retention: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except Fatal as exc:
        click.echo(f"retention: error: {exc}", err=True)
        sys.exit(1)
