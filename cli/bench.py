"""``retention bench``: the throughput, latency and memory benchmark (BENCHMARKS.md).

The flags live here; the benchmark itself is ``retention_tracker.bench`` (``bench/``),
imported when the command runs.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

if TYPE_CHECKING:
    from retention_tracker.devstack.broker import BrokerKind

QUICK = {"events": 20_000, "users": 2_000, "days": 30, "latency_seconds": 3.0}


@click.command()
@click.option("--events", type=click.IntRange(min=1), default=None,
              help="events in the workload (approximate)  [default: 1000000; quick: 20000]")
@click.option("--users", type=click.IntRange(min=1), default=None,
              help="distinct users (approximate)  [default: 100000; quick: 2000]")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="simulated days of traffic  [default: 30]")
@click.option("--seed", default=0, show_default=True, help="simulation seed")
@click.option("--partitions", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--skip-baselines", is_flag=True,
              help="skip the Faust baseline (the raw loop always runs: it is also the census "
                   "of the topics the worker's progress is measured with)")
@click.option("--skip-flink", is_flag=True,
              help="skip the Apache Flink job (it runs where Java 17 is found; the first run "
                   "builds it with Maven unless scripts/setup did)")
@click.option("--skip-horizontal", is_flag=True,
              help="skip the horizontal run (two workers in one group on the single-event "
                   "topic, against one worker's rate)")
@click.option("--baseline-events", type=click.IntRange(min=1), default=200_000,
              show_default=True,
              help="the Faust baseline is measured on at most this many events per topic")
@click.option("--latency-seconds", type=click.FloatRange(min=0.5), default=None,
              help="length of the latency run  [default: 10; quick: 3]")
@click.option("--latency-rate", type=click.FloatRange(min=1), default=None,
              help="events/s of the latency run  [default: half the worker's measured rate]")
@click.option("--quick", is_flag=True,
              help="a small run (20k events, workers fetch 200 records at a time) for CI: "
                   "checks the plumbing and correctness")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write every figure as JSON here")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="logs and Redis files (default: a new temporary folder, kept)")
@click.option("--profile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="after the measured runs, replay the single-event topic once more with "
                   "py-spy attached; collapsed stacks go here, top functions to the report")
@click.option("--broker", type=click.Choice(["auto", "kafka", "tansu", "both"]),
              default="auto", show_default=True,
              help="the local broker: Apache Kafka where Java 17 and its jars are found, else "
                   "Tansu; kafka or tansu: that one; both: the run on each, side by side")
@click.option("--no-progress", is_flag=True, help="no progress bars")
def bench(events: int | None, users: int | None, days: int | None, seed: int, partitions: int,
          skip_baselines: bool, skip_flink: bool, skip_horizontal: bool, baseline_events: int,
          latency_seconds: float | None, latency_rate: float | None, quick: bool,
          json_out: Path | None, workdir: Path | None, profile: Path | None,
          broker: str, no_progress: bool) -> None:
    """Benchmark the worker against a raw aiokafka loop, a Faust agent and an Apache Flink job,
    on a real broker and Redis; check its figures against the batch reference (exit 1 if
    they differ)."""
    from retention_tracker.bench import runner  # on use: it pulls in Faust and the baselines

    args = sys.argv[1:]
    if args[:1] == ["bench"]:  # `retention bench ...` rather than `python -m ...bench_cli`
        args = args[1:]
    size = QUICK if quick else {"events": 1_000_000, "users": 100_000, "days": 30,
                                "latency_seconds": 10.0}
    if quick:  # ~5,000 records a partition: small fetches keep several batches in each
        # window (with the default 5000 a worker may apply its partitions in one poll)
        os.environ.setdefault("BATCH_MAX_RECORDS", "200")
    options = runner.Options(
        events=events or int(size["events"]), users=users or int(size["users"]),
        days=days or int(size["days"]), seed=seed, partitions=partitions,
        skip_baselines=skip_baselines, skip_flink=skip_flink, skip_horizontal=skip_horizontal,
        baseline_events=baseline_events,
        latency_seconds=latency_seconds or size["latency_seconds"], latency_rate=latency_rate,
        json_out=json_out,
        workdir=workdir, profile=profile, progress=not no_progress,
        command=shlex.join(["retention", "bench", *args]),
    )
    if broker != "both":
        code, results = runner.run(dataclasses.replace(options, broker=cast("BrokerKind", broker)))
        click.echo(runner.render(results))
        if code:
            sys.exit(code)
        return
    by_broker: dict[str, dict[str, Any]] = {}
    codes = []
    for kind in ("kafka", "tansu"):
        code, by_broker[kind] = runner.run(dataclasses.replace(
            options, broker=kind, workdir=workdir / kind if workdir else None,
            json_out=json_out.with_suffix(f".{kind}.json") if json_out else None))
        codes.append(code)
        click.echo(f"\n== on {by_broker[kind].get('broker', {}).get('name', kind)} ==")
        click.echo(runner.render(by_broker[kind]))
    click.echo(runner.render_side_by_side(by_broker))
    if any(codes):
        sys.exit(1)


if __name__ == "__main__":  # python -m retention_tracker.cli.bench (before registration)
    bench()
