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
from retention_tracker.streams.calendar import parse_date
from retention_tracker.streams.queries import QueryError, cohort_report, summary_report
from retention_tracker.streams.settings import ConfigError, Settings

from .render import key_values, triangle_table

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

    try:
        return asyncio.run(main())
    except QueryError as exc:
        raise Fatal(str(exc)) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise Fatal(f"cannot reach Redis: {exc}") from None
    except redis.exceptions.AuthenticationError as exc:
        raise Fatal(f"Redis refused the credentials: {exc}") from None


def _emit(doc: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        click.echo(orjson.dumps(doc).decode())
    else:
        click.echo(text(doc))


@click.group()
def cli() -> None:
    """Real-time streaming retention tracker (see README.md)."""


@cli.command()
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run a worker: consume the input topics, keep the state in Redis, serve HTTP."""
    from .worker import run_worker

    sys.exit(run_worker(_settings(), loglevel))


@cli.command()
@click.option("--app", "app_name", default="default", show_default=True)
@click.option(
    "--granularity", type=click.Choice(["day", "week", "month"]), default="day",
    show_default=True,
)
@click.option("--kind", type=click.Choice(["classic", "rolling"]), default="classic",
              show_default=True)
@click.option("--from", "date_from", callback=_date, help="first cohort (YYYY-MM-DD)")
@click.option("--to", "date_to", callback=_date, help="last cohort (YYYY-MM-DD)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def report(
    app_name: str, granularity: str, kind: str, date_from: date | None, date_to: date | None,
    as_json: bool,
) -> None:
    """Print the cohort triangle, read from Redis (no worker needed)."""
    from .app import make_store

    settings = _settings()
    doc = _run(lambda: cohort_report(
        make_store(settings), settings, app_name, granularity, kind, date_from, date_to
    ))
    _emit(doc, as_json, triangle_table)


@cli.command()
@click.option("--app", "app_name", default="default", show_default=True)
@click.option("--date", "on", callback=_date, help="the day (YYYY-MM-DD), default today")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def summary(app_name: str, on: date | None, as_json: bool) -> None:
    """Print the day's DAU, WAU, MAU, stickiness, installs, new and returning users."""
    from .app import make_store

    settings = _settings()
    doc = _run(lambda: summary_report(make_store(settings), settings, app_name, on))
    _emit(doc, as_json, key_values)


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
