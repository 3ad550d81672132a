"""``retention demo``: the whole tracker on embedded defaults, on this machine alone.

Starts what is missing (Apache Kafka, or Tansu where no Java 17 is found, and a
redis-server) on free loopback ports, a worker process and the simulator, prints which
broker it started and why and where to look, and on Ctrl-C stops exactly what it started,
by PID.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import click

from retention_tracker.cli.feeding import produce_events, simulated_stream
from retention_tracker.config.settings import Settings
from retention_tracker.devstack.broker import start_broker
from retention_tracker.devstack.processes import free_port, start_process, wait_for
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.devstack.topics import ensure_topics
from retention_tracker.streams.calendar import MS_PER_DAY, utc_now_ms
from retention_tracker.streams.simulation import SimulationConfig


def run_demo(days: int, installs_per_day: int, seconds_per_day: float, workdir: Path | None) -> int:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="retention-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    with ExitStack() as started:
        broker_line = f"{env.get('KAFKA_BROKER')} (KAFKA_BROKER, yours)"
        if "KAFKA_BROKER" not in env:
            broker = started.enter_context(start_broker(log_dir=workdir))
            env["KAFKA_BROKER"] = broker.url
            env.update(broker.worker_env)
            broker_line = f"{broker.url}  {broker.name}: {broker.why}"
        if "REDIS_URL" not in env:
            redis_server, env["REDIS_URL"] = start_redis(data_dir=workdir)
            started.enter_context(redis_server)
        env.setdefault("WEB_PORT", str(free_port()))
        env.setdefault("CLOCK", "event")  # the simulated days pass faster than the wall clock
        settings = Settings.from_env(env)
        asyncio.run(ensure_topics(
            settings.bootstrap_servers,
            {**dict.fromkeys(settings.input_topics, 4), settings.dlq_topic: 1},
        ))
        worker = start_process(
            [sys.executable, "-m", "retention_tracker.cli", "worker"],
            "worker", env, workdir / "worker.log",
        )
        started.enter_context(worker)
        web = f"http://{settings.web_host}:{settings.web_port}"
        wait_for(lambda: _answers(web) or not worker.alive(), 60, "worker web server")
        if not worker.alive():
            click.echo(f"worker failed to start; see {workdir / 'worker.log'}", err=True)
            return 1
        click.echo(_banner(env, broker_line, web, workdir, days, seconds_per_day))
        cfg = SimulationConfig(
            installs_per_day=installs_per_day, days=days,
            start_ms=utc_now_ms() - days * MS_PER_DAY, duplicate_rate=0.01, late_rate=0.02,
            malformed_rate=0.001, survey_rate=0.05,  # NPS answers, so `retention nps` shows some
            activity_types=settings.activity_events,  # the custom types ACTIVITY_EVENTS names
        )
        try:
            stats = asyncio.run(produce_events(
                settings.bootstrap_servers, settings.input_topics[0],
                simulated_stream(cfg, seconds_per_day), progress=True,
            ))
            click.echo(f"simulation done: {stats}; the worker keeps serving, Ctrl-C stops all")
            wait_for(lambda: not worker.alive(), 10**9, "Ctrl-C")
        except KeyboardInterrupt:
            click.echo("\nstopping what the demo started ...")
    return 0


def _answers(web: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{web}/retention/summary", timeout=1):
            return True
    except OSError as exc:  # HTTP 400 (no data yet) still means the server is up
        return getattr(exc, "code", None) == 400


def _banner(env: dict[str, str], broker: str, web: str, workdir: Path, days: int, spd: float
            ) -> str:
    exports = f"export KAFKA_BROKER={env['KAFKA_BROKER']} REDIS_URL={env['REDIS_URL']} CLOCK=event"
    if env.get("KAFKA_IDEMPOTENCE"):
        exports += f" KAFKA_IDEMPOTENCE={env['KAFKA_IDEMPOTENCE']}"
    return "\n".join([
        f"open {web}/  (the tracker's page: live charts, cohorts, money, win-back)",
        "retention demo is running",
        f"  broker  {broker}",
        f"  redis   {env['REDIS_URL']}",
        f"  worker  {web}/retention/summary  {web}/retention/cohorts?granularity=week",
        f"  logs    {workdir}",
        f"simulating {days} days of traffic, one day every {spd:g} s. In another terminal:",
        f"  {exports}",
        "  .venv/bin/retention report --granularity day",
        "  .venv/bin/retention summary --json",
        "Ctrl-C stops everything the demo started.",
    ])
