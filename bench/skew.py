"""Skewed users (issue 31): 1% of the users make half of the events, one of them a million
in a day. Does a worker's cost per event stay flat, does any partition stall behind the
whale's, what is the latency at half rate, and are the figures (the whale's own among them)
exact?

The uniform workload of ``retention bench`` and the same workload with the heavy users'
extra events (``workload.skewed_workload``) are produced to two topics (single-event
messages keyed by user, 4 partitions) and each replayed from the start by a fresh
``retention worker`` on Apache Kafka, its stored offsets sampled every second
(``sampling.WorkerSampler``: each partition's lag and its longest stall). After the skewed
replay its reports equal the batch reference (``checks.verify``), and so do the whale's
own: the summary of its day and the day triangle for its campaign, which it alone has.
Then a fresh worker gets the whale's day (from its first event on) at half the skewed
replay's rate (``latency.measure_latency``).

    python -m retention_tracker.bench.skew --events 1500000 --users 150000 --json-out skew.json

The whale's events count among the heavy users' half: with 1,000,000 of them the uniform
workload needs well over 1,000,000 events for the other heavy users to get extras at all
(at 1,500,000 they get ~300 each; at 1,000,000 the whale alone would be the half).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from retention_tracker.bench import reference
from retention_tracker.cli.feeding import produce_events
from retention_tracker.config.settings import Settings
from retention_tracker.devstack.broker import start_broker
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.devstack.topics import ensure_topics
from retention_tracker.state.connect import make_store
from retention_tracker.state.queries import cohort_report, summary_report
from retention_tracker.streams.events import validate_event

from .checks import APP, TIMEZONE, Reference, Verdict, verify
from .contenders import Deployment, Stack, raw_loop, run_async, worker_replay
from .latency import measure_latency
from .runner import code_version, machine, say
from .sampling import WorkerSampler
from .scale import add_output_flags, replay_figures, workdir_of, write_results
from .workload import (
    WHALE_CAMPAIGN,
    SkewFacts,
    SkewSpec,
    WorkloadSpec,
    build_workload,
    skewed_workload,
)


def whale_figures(deployment: Deployment, events: list[Any], facts: SkewFacts,
                  watermark_ms: int) -> Verdict:
    """The whale's day summary and its campaign's day triangle, worker against reference."""
    settings = Settings.from_env(deployment.env())
    day = reference.local_day(facts.whale_day_start_ms, TIMEZONE)
    where = {"campaign": WHALE_CAMPAIGN}

    async def read() -> tuple[Any, Any]:
        store = make_store(settings)
        try:
            summary = (await summary_report(store, settings, APP, day,
                                            [f"campaign={WHALE_CAMPAIGN}"])).as_json()
            triangle = (await cohort_report(store, settings, APP, "day", "classic",
                                            where=[f"campaign={WHALE_CAMPAIGN}"])
                        ).as_json()["cohorts"]
        finally:
            await store.client.aclose()
        return summary, triangle

    summary, triangle = asyncio.run(read())
    verdict = Verdict()
    verdict.check(f"whale summary {day}", summary,
                  reference.summary(events, APP, day, TIMEZONE, where=where))
    verdict.check("whale triangle day classic", triangle,
                  reference.triangle(events, APP, "day", "classic", TIMEZONE, watermark_ms,
                                     where=where))
    return verdict


def replay(deployment: Deployment, topic_events: int, label: str) -> dict[str, Any]:
    """Census, then a worker's replay of the deployment's topic with its lag sampled."""
    stack = deployment.stack
    census = run_async(lambda: raw_loop(stack, deployment.topic, label, topic_events))[1]
    sampler = WorkerSampler(deployment)
    try:
        run, _ = worker_replay(deployment, label, census,
                               on_first_progress=lambda p: sampler.start(p.pid))
    finally:
        sampler.stop()
    per_partition = Counter({p: c[-1] for p, c in census.cumulative.items() if c})
    return {**replay_figures(run),
            "events_per_partition": {str(p): n for p, n in sorted(per_partition.items())},
            "partitions": sampler.lag_figures(census.end_offsets()),
            "worker_rss": sampler.rss_figures()}


def run(spec: WorkloadSpec, skew: SkewSpec, workdir: Path, progress: bool,
        latency_seconds: float) -> dict[str, Any]:
    uniform = build_workload(spec)
    skewed, facts = skewed_workload(uniform, skew)
    heavy = set(facts.heavy_users)
    results: dict[str, Any] = {
        "machine": machine(), "code": code_version(), "workdir": str(workdir),
        "uniform_events": len(uniform.events), "skewed_events": len(skewed.events),
        "users": uniform.distinct_users, "heavy_users": len(heavy),
        "heavy_event_share": round(sum(e["user_id"] in heavy for e in skewed.events)
                                   / len(skewed.events), 4),
        "whale": facts.whale, "whale_events_in_day": facts.whale_events_in_day,
        "whale_day": reference.local_day(facts.whale_day_start_ms, TIMEZONE).isoformat(),
    }
    say(f"{len(uniform.events):,} uniform events, {len(skewed.events):,} skewed "
         f"({results['heavy_event_share']:.0%} from {len(heavy):,} users; the whale "
         f"{facts.whale_events_in_day:,} in a day)")
    with contextlib.ExitStack() as services:
        broker = services.enter_context(start_broker(log_dir=workdir, quick_start=False))
        server, url = start_redis(data_dir=workdir / "redis")
        services.enter_context(server)
        results["broker"] = broker.name
        stack = Stack(broker.url, url, workdir, f"k{uuid.uuid4().hex[:6]}", 4, progress, 300.0,
                      {"broker": broker.processes[0].pid, "redis": server.pid},
                      broker.worker_env)
        shapes = {"uniform": uniform.events, "skewed": skewed.events}
        deployments = {name: Deployment(stack, f"{stack.run_id}-{name}", f"worker-{name}")
                       for name in shapes}
        latency = Deployment(stack, f"{stack.run_id}-latency", "worker-latency")
        run_async(lambda: ensure_topics(stack.bootstrap, {
            **{d.topic: 4 for d in (*deployments.values(), latency)},
            **{d.dlq: 1 for d in (*deployments.values(), latency)}}))
        for name, events in shapes.items():
            say(f"producing {len(events):,} events ({name})")
            run_async(lambda events=events, name=name: produce_events(
                stack.bootstrap, deployments[name].topic, events, progress=progress))
        for name, events in shapes.items():
            say(f"{name}: a worker replays the topic")
            results[name] = replay(deployments[name], len(events), name)
        say("skewed: the figures against the reference (bench/reference.py)")
        expected = Reference.of(skewed.events)
        verdict = verify(deployments["skewed"], expected)
        validated = [validate_event(e, 1 << 62) for e in skewed.events]
        whale = whale_figures(deployments["skewed"], validated, facts, expected.watermark_ms)
        results["correctness"] = {"ok": verdict.ok and whale.ok,
                                  "checks": verdict.checks + whale.checks,
                                  "mismatches": verdict.mismatches + whale.mismatches}
        rate = results["skewed"]["events_per_s"] / 2
        whale_day = [e for e in skewed.events if e["ts"] >= facts.whale_day_start_ms]
        say(f"latency: the whale's day at {rate:,.0f} events/s for {latency_seconds:g} s")
        results["latency"] = measure_latency(latency, whale_day, rate, latency_seconds)
        count = results["latency"]["events"]
        results["latency"]["whale_share_of_events"] = round(
            sum(e["user_id"] == facts.whale for e in whale_day[:count]) / count, 3)
    return results


def render(results: dict[str, Any]) -> str:
    lines = [f"{results['skewed_events']:,} skewed events ({results['heavy_event_share']:.1%} "
             f"from {results['heavy_users']:,} of {results['users']:,} users; the whale "
             f"{results['whale_events_in_day']:,} on {results['whale_day']}) against "
             f"{results['uniform_events']:,} uniform"]
    for name in ("uniform", "skewed"):
        run = results[name]
        stalls = ", ".join(f"p{p} {f['longest_stall_s']}s (done {f['caught_up_at_s']}s, "
                           f"{run['events_per_partition'].get(p, 0):,} ev)"
                           for p, f in run["partitions"].items())
        lines.append(f"{name}: {run['events_per_s']:,.0f} ev/s, worker "
                     f"{run['worker_cpu_us_per_event']} µs CPU/event, Redis "
                     f"{run['redis_cpu_us_per_event']} µs/event, peak RSS "
                     f"{(run['peak_rss_bytes'] or 0) / 2**20:.0f} MiB")
        lines.append(f"  longest stall per partition: {stalls}")
    latency = results["latency"]
    lines.append(f"latency at {latency['achieved_rate_events_per_s']:,.0f} ev/s (whale "
                 f"{latency['whale_share_of_events']:.0%} of them): p50 {latency['p50_ms']} ms,"
                 f" p99 {latency['p99_ms']} ms, max {latency['max_ms']} ms")
    correctness = results["correctness"]
    lines.append("correctness: " + (f"OK ({len(correctness['checks'])} reports equal the "
                                    "reference)" if correctness["ok"]
                                    else f"FAILED {correctness['mismatches']}"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_500_000, help="the uniform workload's")
    parser.add_argument("--users", type=int, default=150_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--whale-events", type=int, default=1_000_000)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    add_output_flags(parser)
    args = parser.parse_args()
    started = time.monotonic()
    results = run(WorkloadSpec(args.events, args.users, args.days),
                  SkewSpec(whale_events=args.whale_events), workdir_of(args, "skew"),
                  not args.no_progress, args.latency_seconds)
    results["seconds"] = round(time.monotonic() - started, 1)
    write_results(args, results)
    print(render(results))
    raise SystemExit(0 if results["correctness"]["ok"] else 1)


if __name__ == "__main__":
    main()
