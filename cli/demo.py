"""``retention demo``: the whole tracker on embedded defaults, on this machine alone.

Starts what is missing (Apache Kafka, or Tansu where no Java 17 is found, and a
redis-server) on free loopback ports, a worker process and the simulator, prints which
broker it started and why and where to look, and on Ctrl-C stops exactly what it started,
by PID. It watches what it started: when one of them dies, it says which, shows the end of
its log, stops the others and exits 1 (a demo whose worker died must not look alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Awaitable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import click

from retention_tracker.cli.feeding import produce_events, simulated_stream
from retention_tracker.config.settings import Settings
from retention_tracker.devstack.broker import start_broker
from retention_tracker.devstack.processes import (
    ManagedProcess,
    free_port,
    start_process,
    wait_for,
)
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.devstack.topics import ensure_topics
from retention_tracker.streams.calendar import MS_PER_DAY, utc_now_ms
from retention_tracker.streams.simulation import SimulationConfig

T = TypeVar("T")
#: How often the demo looks whether what it started is still running.
WATCH_INTERVAL_S = 0.2
#: Lines of a dead process's log the demo shows.
LOG_LINES = 20


def run_demo(days: int, installs_per_day: int, seconds_per_day: float, workdir: Path | None) -> int:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="retention-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    watched: list[ManagedProcess] = []
    with ExitStack() as started:
        broker_line = f"{env.get('KAFKA_BROKER')} (KAFKA_BROKER, yours)"
        if "KAFKA_BROKER" not in env:
            broker = started.enter_context(start_broker(log_dir=workdir))
            watched.extend(broker.processes)
            env["KAFKA_BROKER"] = broker.url
            env.update(broker.worker_env)
            broker_line = f"{broker.url}  {broker.name}: {broker.why}"
        if "REDIS_URL" not in env:
            redis_server, env["REDIS_URL"] = start_redis(data_dir=workdir)
            watched.append(started.enter_context(redis_server))
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
        watched.append(started.enter_context(worker))
        web = f"http://{settings.web_host}:{settings.web_port}"
        wait_for(lambda: _answers(web) or _first_dead(watched) is not None, 60,
                 "worker web server")
        dead = _first_dead(watched)
        if dead is not None:
            return _died(dead)
        click.echo(_banner(env, broker_line, web, workdir, days, seconds_per_day, watched))
        cfg = SimulationConfig(
            installs_per_day=installs_per_day, days=days,
            start_ms=utc_now_ms() - days * MS_PER_DAY, duplicate_rate=0.01, late_rate=0.02,
            malformed_rate=0.001, survey_rate=0.05,  # NPS answers, so `retention nps` shows some
            activity_types=settings.activity_events,  # the custom types ACTIVITY_EVENTS names
        )
        try:
            stats, dead = asyncio.run(_while_alive(watched, produce_events(
                settings.bootstrap_servers, settings.input_topics[0],
                simulated_stream(cfg, seconds_per_day), progress=True,
            )))
            if dead is None:
                click.echo(f"simulation done: {stats}; the worker keeps serving, Ctrl-C stops "
                           "all")
                wait_for(lambda: _first_dead(watched) is not None, 10**9, "Ctrl-C", 0.2)
                dead = _first_dead(watched)
            assert dead is not None
            return _died(dead)
        except KeyboardInterrupt:
            click.echo("\nstopping what the demo started ...")
    return 0


async def _while_alive(watched: list[ManagedProcess], feeding: Awaitable[T]
                       ) -> tuple[T | None, ManagedProcess | None]:
    """Feed the simulation while watching what the demo started: what feeding gave, or
    None and the process that died (feeding is then cancelled)."""
    task = asyncio.ensure_future(feeding)
    try:
        while True:
            done, _ = await asyncio.wait([task], timeout=WATCH_INTERVAL_S)
            if done:
                dead = _first_dead(watched)
                if dead is not None and task.exception() is not None:
                    return None, dead  # e.g. the broker died under the producer
                return task.result(), None
            dead = _first_dead(watched)
            if dead is not None:
                return None, dead
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _first_dead(watched: list[ManagedProcess]) -> ManagedProcess | None:
    return next((process for process in watched if not process.alive()), None)


def _died(dead: ManagedProcess) -> int:
    """Say which process died and how its log ends; the caller's ExitStack stops the rest,
    by PID. The demo's exit status: 1."""
    code = dead.stop()  # reaps it (and whatever it left in its process group)
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    tail = dead.log_tail().splitlines()[-LOG_LINES:]
    click.echo("\n".join([
        f"retention demo: the {dead.name} (pid {dead.pid}) {how}; the end of "
        f"{dead.log_path}:", *(f"  {line}" for line in tail),
        "stopping what the demo started ...",
    ]), err=True)
    return 1


def _answers(web: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{web}/retention/summary", timeout=1):
            return True
    except OSError as exc:  # HTTP 400 (no data yet) still means the server is up
        return getattr(exc, "code", None) == 400


def _banner(env: dict[str, str], broker: str, web: str, workdir: Path, days: int, spd: float,
            watched: list[ManagedProcess]) -> str:
    exports = f"export KAFKA_BROKER={env['KAFKA_BROKER']} REDIS_URL={env['REDIS_URL']} CLOCK=event"
    if env.get("KAFKA_IDEMPOTENCE"):
        exports += f" KAFKA_IDEMPOTENCE={env['KAFKA_IDEMPOTENCE']}"
    pids = ", ".join(f"{process.name} {process.pid}" for process in watched)
    return "\n".join([
        f"open {web}/  (the tracker's page: live charts, cohorts, money, win-back)",
        "retention demo is running",
        f"  broker  {broker}",
        f"  redis   {env['REDIS_URL']}",
        f"  worker  {web}/retention/summary  {web}/retention/cohorts?granularity=week",
        f"  logs    {workdir}",
        f"  pids    {pids}  (watched: if one dies, the demo stops all and says why)",
        f"simulating {days} days of traffic, one day every {spd:g} s. In another terminal:",
        f"  {exports}",
        "  .venv/bin/retention report --granularity day",
        "  .venv/bin/retention summary --json",
        "Ctrl-C stops everything the demo started.",
    ])
