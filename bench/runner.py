"""One benchmark run, start to finish: services, workload, contenders, checks, report.

Everything runs on throw-away services (Apache Kafka, or Tansu where no Java 17 is found,
and a redis-server on free loopback ports, stopped by PID on the way out, also on failure),
so a run needs nothing installed and measures the same stack the demo and the end-to-end
tests use; ``--broker both`` runs it on each broker and sets the figures side by side.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from retention_tracker.agents.rekey import home_partition
from retention_tracker.cli.feeding import ProduceStats, produce_events
from retention_tracker.devstack.broker import BrokerKind, start_broker
from retention_tracker.devstack.redis_server import redis_server_binary, start_redis
from retention_tracker.devstack.topics import ensure_topics

from .checks import Reference, Verdict, forwarded_events, redis_memory, verify
from .contenders import (
    BenchFailure,
    Census,
    Deployment,
    RunResult,
    Stack,
    faust_agent,
    raw_loop,
    run_async,
    worker_engine,
    worker_replay,
)
from .flink_job import FlinkFigures, build_job, check_figures, flink_job, flink_unavailable
from .horizontal import WORKERS, horizontal_replay
from .latency import measure_latency, raw_latency
from .profile import profile_replay
from .redis_commands import summary
from .workload import Workload, WorkloadSpec, build_workload

SHAPES = {"single": 1, "batch50": 50, "miskeyed": 1}  # shape -> events per message (at most)
SHAPE_LABELS = {"single": "single (1 event/msg)", "batch50": "batch (<=50 events/msg)",
                "miskeyed": "mis-keyed (1 ev/msg, all forwarded)"}
# Every event of this shape is sent without a key to the partition after its user's home,
# so the worker forwards each one through its re-key topic: the cost of a mis-keyed producer.
MISKEYED = "miskeyed"
BASELINE_SHAPES = ("single", "batch50")  # the Faust agent and the Flink job run on these
CONTENDER_LABELS = {
    "raw": "(a) raw aiokafka loop",
    "faust": "(b) faust agent + table",
    "worker": "(c) retention worker",
    "flink": "(d) Apache Flink job",
}
#: Nexmark q15 (count and count-distinct per day) on Flink: the published figure per core.
FLINK_ANCHOR = "Nexmark q15 ~72,000 events/s per core"
METHOD = (
    "events/s over each contender's steady window: from the end of its first unit of work "
    "(faust: first message; worker: first partition batch seen applied in Redis, polled "
    "every 20 ms) to its last event, events of that first unit not counted; the raw loop "
    "(no group join) from the request of its first fetch that returned records, that "
    "fetch counted, so a topic read in one fetch still has a window; the Flink job from its "
    "first progress line (1,024 events read, by its own clock) to the line of its last event, "
    "the events before that line not counted. Startup and "
    "consumer-group join are therefore excluded for all. "
    "Contenders run one after another on the same topic, never at the same time. "
    "Horizontal: two workers in one group replay the single topic together; both are started "
    "at once and the window opens at the first batch applied after both logged disjoint "
    "assignments covering every partition (no rebalance inside it: one fails the bench); "
    "per worker, the same over its own partitions."
)


@dataclass(frozen=True, slots=True)
class Options:
    """The knobs of a run (the ``bench`` command's flags)."""

    events: int = 1_000_000
    users: int = 100_000
    days: int = 30
    seed: int = 0
    partitions: int = 4
    skip_baselines: bool = False
    skip_flink: bool = False
    skip_horizontal: bool = False
    baseline_events: int = 200_000  # the Faust baseline is measured on this prefix
    latency_seconds: float = 10.0
    latency_rate: float | None = None  # events/s; None: half the worker's single-shape rate
    json_out: Path | None = None
    workdir: Path | None = None
    profile: Path | None = None
    progress: bool = True
    stall_s: float = 120.0
    command: str = ""
    broker: BrokerKind = "auto"  # devstack.broker: Apache Kafka, else Tansu; or one of them


def machine() -> dict[str, Any]:
    """What the figures were measured on; they mean nothing without it."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info
                    if line.startswith("model name")), cpu)
    mem_total = None
    with contextlib.suppress(OSError, StopIteration, ValueError), open("/proc/meminfo") as info:
        mem_total = int(next(line for line in info if line.startswith("MemTotal")).split()[1])
    try:
        redis_version = subprocess.run([redis_server_binary(), "--version"], capture_output=True,
                                       text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        redis_version = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_kib": mem_total,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "redis_server": redis_version,
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (figures of a dirty tree
    are only comparable with care)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "HEAD").strip() or None, "uncommitted_files": changed}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(options: Options) -> tuple[int, dict[str, Any]]:
    """Run the bench; returns (exit code, results). Exit 1 when figures are wrong or a
    contender failed: a fast wrong answer must not look like a result."""
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="retention-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": options.command,
        "machine": machine(),
        "code": code_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "method": METHOD,
        "workdir": str(workdir),
    }
    try:  # which engine the workers run: the fallback's figures are not the worker's
        results["engine"] = worker_engine()
    except BenchFailure as exc:
        say(f"FAILED: {exc}")
        return 1, {**results, "error": str(exc)}
    say(f"engine: {results['engine']['detail']}")
    say(f"generating the workload (~{options.events:,} events, ~{options.users:,} users, "
         f"{options.days} days); logs in {workdir}")
    workload = build_workload(WorkloadSpec(options.events, options.users, options.days,
                                           options.seed))
    results["workload"] = workload.describe()
    code = 0
    try:
        with contextlib.ExitStack() as services:
            broker = services.enter_context(start_broker(log_dir=workdir, kind=options.broker,
                                                         quick_start=False))
            say(f"broker: {broker.name} ({broker.why}), answering {broker.start_s:.1f} s "
                 "after its start")
            results["broker"] = {"name": broker.name, "why": broker.why,
                                 "start_s": round(broker.start_s, 2)}
            server, redis_url = start_redis(data_dir=workdir / "redis")
            services.enter_context(server)
            stack = Stack(broker.url, redis_url, workdir, f"b{uuid.uuid4().hex[:6]}",
                          options.partitions, options.progress, options.stall_s,
                          {"broker": broker.processes[0].pid, "redis": server.pid},
                          broker.worker_env)
            _run_all(stack, workload, options, results)
    except BenchFailure as exc:
        say(f"FAILED: {exc}")
        results["error"] = str(exc)
        code = 1
    except Exception as exc:  # still write what was measured, and say why it stopped
        traceback.print_exc()
        say(f"FAILED: {type(exc).__name__}: {exc}")
        results["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
    if not results.get("correctness", {}).get("ok", False):
        code = 1
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if options.json_out is not None:
        options.json_out.parent.mkdir(parents=True, exist_ok=True)
        options.json_out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return code, results


@dataclass(frozen=True, slots=True)
class _Deployments:
    """The run's topics and its worker deployments, each with its own group and key prefix:
    one per shape, the latency one, and the profiled and horizontal replays of "single"."""

    topics: dict[str, str]  # shape -> topic
    latency_topic: str
    raw_latency_topic: str
    shapes: dict[str, Deployment]
    latency: Deployment
    profile: Deployment
    horizontal: Deployment

    @classmethod
    def of(cls, stack: Stack) -> _Deployments:
        topics = {shape: f"{stack.run_id}-{shape}" for shape in SHAPES}
        latency_topic = f"{stack.run_id}-latency"
        return cls(
            topics, latency_topic, f"{stack.run_id}-latency-raw",
            {shape: Deployment(stack, topics[shape], f"worker-{shape}") for shape in SHAPES},
            Deployment(stack, latency_topic, "worker-latency"),
            Deployment(stack, topics["single"], "worker-profile"),
            Deployment(stack, topics["single"], "worker-horizontal"),
        )

    def wanted_topics(self, partitions: int) -> dict[str, int]:
        """Topic -> partitions: the inputs have the stack's, each DLQ one."""
        wanted = {t: partitions for t in (*self.topics.values(), self.latency_topic,
                                          self.raw_latency_topic)}
        wanted.update({d.dlq: 1 for d in (*self.shapes.values(), self.latency, self.profile,
                                          self.horizontal)})
        return wanted


def _run_all(stack: Stack, workload: Workload, options: Options, results: dict[str, Any]
             ) -> None:
    plan = _Deployments.of(stack)
    run_async(lambda: ensure_topics(stack.bootstrap, plan.wanted_topics(stack.partitions)))
    produced = _produce(stack, workload, plan.topics)
    results["produce"] = produced
    verdict = Verdict()
    results["correctness"] = {**verdict.as_dict(), "ok": False}  # nothing checked yet
    results["flink"] = _flink_setup(options)
    censuses, expected = _throughput(stack, workload, options, plan, produced, verdict,
                                     results)
    single_rate = results["throughput"]["single"]["worker"]["events_per_s"]
    if options.skip_horizontal:
        results["horizontal"] = {"skipped": "--skip-horizontal"}
    else:
        _horizontal(plan.horizontal, censuses["single"], single_rate, expected, verdict,
                    results)
    _latency(stack, plan, workload, options, single_rate, results)
    if options.profile is not None:
        say(f"profile: an extra replay of the single topic under py-spy -> {options.profile}")
        profiled, summary = profile_replay(plan.profile, censuses["single"], options.profile)
        summary["replay_events_per_s_while_sampled"] = round(profiled.events_per_s, 1)
        results["profile"] = summary


def _flink_setup(options: Options) -> dict[str, Any]:
    """Whether the Flink job runs (Java 17, and the job built or Maven to build it), built
    here if it is not yet; ``{"skipped": why}`` otherwise."""
    why = "--skip-flink" if options.skip_flink else flink_unavailable()
    if why is not None:
        say(f"the Apache Flink job is skipped: {why}")
        return {"skipped": why}
    build_job(say)
    return {"anchor": FLINK_ANCHOR}


def _produce(stack: Stack, workload: Workload, topics: dict[str, str]) -> dict[str, Any]:
    """Fill each shape's topic; the mis-keyed one is sent away from each user's home."""
    produced: dict[str, Any] = {}
    partitions = stack.partitions

    def away_from_home(event: dict[str, Any]) -> tuple[bytes | None, int]:
        return None, (home_partition(event["user_id"], partitions) + 1) % partitions

    for shape, per_message in SHAPES.items():
        source = workload.events if per_message == 1 else workload.by_user
        placement = away_from_home if shape == MISKEYED and partitions > 1 else None
        say(f"producing {len(source):,} events to {topics[shape]} ({shape})")
        stats: ProduceStats = run_async(
            lambda source=source, topic=topics[shape], per_message=per_message,
            placement=placement: produce_events(
                stack.bootstrap, topic, source, batch_size=per_message, progress=stack.progress,
                placement=placement))
        produced[shape] = {
            "events": stats.events, "messages": stats.messages, "bytes": stats.bytes,
            "events_per_message": round(stats.events / stats.messages, 2),
            "seconds": round(stats.seconds, 3), "events_per_s": round(stats.events_per_s, 1),
        }
    return produced


def _throughput(stack: Stack, workload: Workload, options: Options, plan: _Deployments,
                produced: dict[str, Any], verdict: Verdict, results: dict[str, Any]
                ) -> tuple[dict[str, Census], Reference]:
    """Race the contenders on every shape, checking the worker's figures after each; returns
    each topic's census and the reference figures, for the runs that follow."""
    throughput: dict[str, dict[str, Any]] = {}
    memory: dict[str, Any] = {}
    censuses: dict[str, Census] = {}
    say("computing the batch reference figures (bench/reference.py)")
    expected = Reference.of(workload.events)
    with_flink = "skipped" not in results["flink"]
    for shape in SHAPES:
        total = produced[shape]["events"]
        forwarded = total if shape == MISKEYED and stack.partitions > 1 else 0
        runs, censuses[shape], used, flink_figures = _race(stack, options, plan, shape, total,
                                                           forwarded, with_flink)
        throughput[shape] = {name: r.as_dict() for name, r in runs.items()}
        results["throughput"] = throughput  # kept even if the figures turn out wrong
        for name, r in runs.items():
            say(f"{shape}: {name}: {r.events_per_s:,.0f} events/s "
                 f"({r.window_events:,} events in {r.window_s:.2f} s)")
        say(f"{shape}: checking the worker's figures against the reference")
        _judge(plan.shapes[shape], expected, verdict, results)
        if flink_figures is not None:
            say(f"{shape}: checking the Flink job's figures against the reference")
            _record(check_figures(f"flink-{shape}", flink_figures, expected), "flink-" + shape,
                    verdict, results)
        if forwarded:
            results.setdefault("forwarded_events", {})[shape] = found = forwarded_events(
                plan.shapes[shape])
            if found != forwarded:
                raise BenchFailure(f"{shape}: {found:,} events forwarded, {forwarded:,} sent "
                                   "away from home")
        memory[shape] = redis_memory(plan.shapes[shape], used, workload.distinct_users, total)
    results["ratios"] = _ratios(throughput)
    results["redis_memory"] = memory
    results["worker_peak_rss_bytes"] = {
        shape: throughput[shape]["worker"]["peak_rss_bytes"] for shape in throughput
    }
    return censuses, expected


def _race(stack: Stack, options: Options, plan: _Deployments, shape: str, total: int,
          forwarded: int, with_flink: bool
          ) -> tuple[dict[str, RunResult], Census, dict[str, int], FlinkFigures | None]:
    """One shape's contenders in turn: the raw loop (which takes the census), the Faust
    baseline on a prefix, our worker, the Flink job. Returns their runs, the census, the
    worker's INFO used_memory before and after, and the Flink job's figures if it ran."""
    runs: dict[str, RunResult] = {}
    figures: FlinkFigures | None = None
    topic = plan.topics[shape]
    say(f"{shape}: (a) raw aiokafka loop")
    runs["raw"], census = run_async(lambda: raw_loop(stack, topic, shape, total))
    if not options.skip_baselines and shape in BASELINE_SHAPES:
        measured = min(total, options.baseline_events)
        say(f"{shape}: (b) faust agent + table (first {measured:,} events)")
        runs["faust"] = faust_agent(stack, topic, shape, measured)
    say(f"{shape}: (c) retention worker")
    runs["worker"], used = worker_replay(plan.shapes[shape], shape, census,
                                         forwarded_events=forwarded)
    if with_flink and shape in BASELINE_SHAPES:
        say(f"{shape}: (d) Apache Flink job (MiniCluster, parallelism 1)")
        runs["flink"], figures = flink_job(stack, topic, shape, total)
    return runs, census, used, figures


def _horizontal(deployment: Deployment, census: Census, single_rate: float,
                expected: Reference, verdict: Verdict, results: dict[str, Any]) -> None:
    """Two workers in one group on the single topic, then their figures checked too."""
    say(f"horizontal: {WORKERS} retention workers in one group replay the single topic")
    horizontal = horizontal_replay(deployment, census, single_rate)
    results["horizontal"] = horizontal
    if "skipped" not in horizontal:
        say(f"horizontal: {horizontal['events_per_s']:,.0f} events/s combined "
             f"({horizontal['combined_vs_single_worker']:.2f}x one worker); checking the "
             "figures against the reference")
        horizontal["correctness_ok"] = False  # what the JSON says if the check raises
        _judge(deployment, expected, verdict, results)
        horizontal["correctness_ok"] = True


def _latency(stack: Stack, plan: _Deployments, workload: Workload, options: Options,
             single_rate: float, results: dict[str, Any]) -> None:
    """Produce-to-Redis latency at a steady rate, and the same stream read by a bare loop."""
    rate = options.latency_rate or single_rate / 2
    why = "as asked" if options.latency_rate else "half the worker's rate"
    say(f"latency: single-event messages at {rate:,.0f} events/s ({why}) "
         f"for {options.latency_seconds:g} s")
    results["latency"] = measure_latency(plan.latency, workload.events, rate,
                                         options.latency_seconds)
    say("latency: the same stream read by a bare aiokafka loop (broker + client share)")
    results["latency_raw_consumer"] = raw_latency(stack, plan.raw_latency_topic,
                                                  workload.events, rate,
                                                  options.latency_seconds)


def _judge(deployment: Deployment, expected: Reference, verdict: Verdict,
           results: dict[str, Any]) -> None:
    """Check a deployment's figures against the reference into the run's verdict; a mismatch
    stops the run (after recording it), since its throughput would be a wrong answer's."""
    _record(verify(deployment, expected), deployment.name, verdict, results)


def _record(found: Verdict, name: str, verdict: Verdict, results: dict[str, Any]) -> None:
    """Add one contender's checks to the run's verdict; a mismatch stops the run."""
    verdict.checks += found.checks
    verdict.mismatches += found.mismatches
    verdict.ok = verdict.ok and found.ok
    results["correctness"] = verdict.as_dict()
    if not found.ok:
        raise BenchFailure(f"the figures of {name} differ from the reference: "
                           + "; ".join(found.mismatches)[:2000])


def _ratios(throughput: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The worker's rate as a multiple of each baseline's, per shape; the mis-keyed run's
    also as a multiple of the well-keyed one's (what forwarding every event costs)."""
    out: dict[str, Any] = {}
    for shape, runs in throughput.items():
        ours = runs["worker"]["events_per_s"]
        out[shape] = {
            f"worker_vs_{name}": round(ours / run["events_per_s"], 4)
            for name, run in runs.items() if name != "worker" and run["events_per_s"] > 0
        }
        ours_per_cpu = runs["worker"].get("events_per_contender_cpu_s")
        flink_per_cpu = runs.get("flink", {}).get("events_per_contender_cpu_s")
        if ours_per_cpu and flink_per_cpu:  # the comparison: per core
            out[shape]["worker_vs_flink_per_cpu_s"] = round(ours_per_cpu / flink_per_cpu, 4)
    well_keyed = throughput.get("single", {}).get("worker", {}).get("events_per_s")
    if MISKEYED in out and well_keyed:
        out[MISKEYED]["worker_vs_well_keyed"] = round(
            throughput[MISKEYED]["worker"]["events_per_s"] / well_keyed, 4)
    return out


# ---- the printed report ------------------------------------------------------------------------


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _render_horizontal(horizontal: dict[str, Any] | None) -> list[str]:
    """A few lines: the combined rate against one worker's, then each worker, then where
    the cores went (on a small machine that is what caps the combined rate)."""
    if not horizontal:
        return []
    if "skipped" in horizontal:
        return [f"horizontal: skipped ({horizontal['skipped']})"]
    lines = [
        f"horizontal, {horizontal['workers']} workers in one group: "
        f"{horizontal['events_per_s']:,.0f} ev/s = "
        f"{_share(horizontal['combined_vs_single_worker'])}x one worker "
        f"({horizontal['single_worker_events_per_s']:,.0f} ev/s), window "
        f"{horizontal['window_s']:.1f}s"
    ]
    for name, run in horizontal["per_worker"].items():
        lines.append(
            f"  {name} partitions {run['partitions']}: {run['events_per_s']:,.0f} ev/s = "
            f"{_share(run['vs_single_worker'])}x one worker, core "
            f"{_share(run.get('contender_core_share'))}, peak RSS {_mib(run['peak_rss_bytes'])}"
        )

    def processes(shares: dict[str, float]) -> str:
        workers = " + ".join(_share(shares.get(name)) for name in horizontal["per_worker"])
        return (f"workers {workers}, redis {_share(shares.get('redis'))}, "
                f"broker {_share(shares.get('broker'))}")

    lines.append(f"  cores used: {processes(horizontal['core_share_in_window'])}; "
                 f"others {_share(horizontal.get('other_processes_cores_in_window'))}; machine "
                 f"{_share(horizontal.get('machine_busy_cores_in_window'))} of "
                 f"{horizontal['nproc']}")
    lines.append("  waiting for a CPU (s per s of window): "
                 + processes(horizontal.get("runqueue_wait_share_in_window", {})))
    return lines


REPORT_WIDTH = 100  # the printed report fits a terminal: longer lines wrap, indented


def render_side_by_side(by_broker: dict[str, dict[str, Any]]) -> str:
    """The same workload on each broker, one column each: the worker's rate and its ratio
    to the raw loop per shape, the latency, the broker's start."""
    names = list(by_broker)
    header = f"{'':<32}" + "".join(f"{by_broker[n].get('broker', {}).get('name', n):>20}"
                                   for n in names)
    lines = ["", "side by side (one run, same workload)", header, "-" * len(header)]

    def row(label: str, value: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for name in names:
            try:
                cells.append(value(by_broker[name]))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("-")
        lines.append(f"{label:<32}" + "".join(f"{c:>20}" for c in cells))

    row("broker answering after", lambda r: f"{r['broker']['start_s']:.1f} s")
    shapes = next(iter(by_broker.values())).get("throughput", {})
    for shape in shapes:
        row(f"{shape}: worker events/s", lambda r, s=shape:
            f"{r['throughput'][s]['worker']['events_per_s']:,.0f}")
        row(f"{shape}: raw loop events/s", lambda r, s=shape:
            f"{r['throughput'][s]['raw']['events_per_s']:,.0f}")
        row(f"{shape}: worker / raw loop", lambda r, s=shape:
            f"{r['ratios'][s]['worker_vs_raw']:.3f}x")
        row(f"{shape}: worker per CPU-s", lambda r, s=shape:
            f"{r['throughput'][s]['worker']['events_per_contender_cpu_s']:,.0f}")
    row("latency rate", lambda r: f"{r['latency']['achieved_rate_events_per_s']:,.0f} ev/s")
    row("latency p50 / p99", lambda r:
        f"{r['latency']['p50_ms']:.0f} / {r['latency']['p99_ms']:.0f} ms")
    row("figures equal the reference", lambda r: str(r["correctness"]["ok"]))
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    """The human-readable table (BENCHMARKS.md shows the same), at most REPORT_WIDTH
    columns a line."""
    workload = results.get("workload", {})
    lines = [f"workload: {workload.get('events', 0):,} events, "
             f"{workload.get('distinct_users', 0):,} users, {workload.get('days')} days"]
    lines += _render_engine(results.get("engine"))
    lines += _render_throughput(results)
    lines += _render_flink(results)
    lines += _render_horizontal(results.get("horizontal"))
    lines += _render_latency(results)
    lines += _render_memory(results.get("redis_memory", {}))
    lines += _render_commands(results.get("throughput", {}))
    lines += _render_verdict(results)
    return "\n".join(textwrap.fill(line, REPORT_WIDTH, subsequent_indent="    ")
                     if len(line) > REPORT_WIDTH else line for line in lines)


def _render_engine(found: dict[str, Any] | None) -> list[str]:
    """Which engine the workers ran; the Python fallback's figures are said not to be the
    worker's (a worker runs the native engine wherever it is built)."""
    if found is None:  # a result from before the engines
        return []
    if found["worker_figure"]:
        return [f"engine: {found['detail']}"]
    return [f"engine: {found['detail']}",
            "NOT the worker's figures: the Python fallback ran (the worker runs the native "
            "engine where it is built; ENGINE=auto)"]


def _render_throughput(results: dict[str, Any]) -> list[str]:
    """The table of every contender on every shape, then the worker's ratios."""
    workload_events = results.get("workload", {}).get("events", 0)
    throughput = results.get("throughput", {})
    header = (f"{'shape / contender':<30}{'events/s':>10}{'window':>8}{'startup':>8}"
              f"{'core':>6}{'ev/CPU-s':>10}{'redis CPU':>10}{'peak RSS':>10}")
    lines = ["", header, "-" * len(header)]
    for shape, runs in throughput.items():
        per_message = results.get("produce", {}).get(shape, {}).get("events_per_message")
        label = SHAPE_LABELS.get(shape, shape)
        lines.append(label + (f", mean {per_message} ev/msg" if per_message else ""))
        for name, run in runs.items():
            note = " *" if name == "faust" and run["events"] < workload_events else ""
            share = run.get("contender_core_share")
            per_cpu = run.get("events_per_contender_cpu_s")
            redis_cpu = run.get("cpu_s_in_window", {}).get("redis")
            redis_share = f"{redis_cpu / run['window_s']:.2f}" if redis_cpu is not None and \
                run["window_s"] > 0 else "-"
            lines.append(
                f"  {CONTENDER_LABELS.get(name, name) + note:<28}"
                f"{run['events_per_s']:>10,.0f}{run['window_s']:>7.1f}s{run['startup_s']:>7.1f}s"
                f"{'-' if share is None else f'{share:.2f}':>6}"
                f"{'-' if per_cpu is None else f'{per_cpu:,.0f}':>10}{redis_share:>10}"
                f"{_mib(run.get('peak_rss_bytes')):>10}"
            )
    for shape, ratios in results.get("ratios", {}).items():
        parts = [f"{value:.3f}x {key.removeprefix('worker_vs_')}" for key, value in
                 ratios.items()]
        if parts:
            lines.append(f"worker / baseline, {shape}: " + ", ".join(parts))
    if any(run["contender"] == "faust" and run["events"] < workload_events
           for runs in throughput.values() for run in runs.values()):
        lines.append("* faust measured on a prefix of the topic (see measured_prefix_events)")
    return lines


def _render_flink(results: dict[str, Any]) -> list[str]:
    """Per CPU-second, Flink beside the worker and the raw ceiling: the issue's figure."""
    flink = results.get("flink")
    if not flink:
        return []
    if "skipped" in flink:
        return [f"flink: skipped ({flink['skipped']})"]
    lines = []
    for shape, runs in results.get("throughput", {}).items():
        if "flink" not in runs:
            continue
        per_cpu = {name: runs[name].get("events_per_contender_cpu_s")
                   for name in ("worker", "flink", "raw")}
        ratio = results.get("ratios", {}).get(shape, {}).get("worker_vs_flink_per_cpu_s")
        parts = ", ".join(f"{name} {'-' if value is None else f'{value:,.0f}'}"
                          for name, value in per_cpu.items())
        lines.append(f"per CPU-second, {shape}: {parts} ev/CPU-s; worker / flink "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'}")
    lines.append(f"flink: the JVM's CPU (all its threads); anchor: {flink['anchor']}")
    return lines


def _render_latency(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    latency = results.get("latency")
    if latency:
        lines.append(
            f"latency produce->Redis at {latency['achieved_rate_events_per_s']:,.0f} ev/s "
            f"({latency['events']:,} events): p50 {latency['p50_ms']:.1f} ms, "
            f"p99 {latency['p99_ms']:.1f} ms, max {latency['max_ms']:.1f} ms"
        )
    raw = results.get("latency_raw_consumer")
    if raw:
        lines.append(
            f"  same stream, bare aiokafka consumer: p50 {raw['p50_ms']:.1f} ms, "
            f"p99 {raw['p99_ms']:.1f} ms, max {raw['max_ms']:.1f} ms"
        )
    return lines


def _render_memory(redis_memory: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for shape, memory in redis_memory.items():
        families = memory["families"]
        lines.append(
            f"redis, {shape}: {memory['bytes_per_user_total']:,.0f} B/user total "
            f"(used_memory delta {_mib(memory['used_memory_delta_bytes'])}); "
            f"user records {memory['bytes_per_user_records']:,.0f} B/user, "
            f"dedup ids {memory['dedup_bytes_per_user']:,.0f} B/user "
            f"({memory['dedup_bytes_per_event']:,.0f} B/event; deleting them freed "
            f"{_mib(memory['used_memory_drop_on_deleting_dedup_bytes'])}), aggregates "
            f"{_mib(families.get('aggregates', {}).get('bytes', 0))}"
        )
    return lines


def _render_commands(throughput: dict[str, Any]) -> list[str]:
    """The worker's costliest Redis commands per shape (bench/redis_commands.py)."""
    return [f"redis commands per event, {shape}: {summary(commands)}"
            for shape, runs in throughput.items()
            if (commands := runs.get("worker", {}).get("redis_commands"))]


def _render_verdict(results: dict[str, Any]) -> list[str]:
    """Correctness, the profile's top, any error or busy-machine warning, the legend."""
    correctness = results.get("correctness", {})
    lines = ["correctness: " + (
        f"OK ({len(correctness.get('checks', []))} reports equal the reference)"
        if correctness.get("ok") else f"FAILED {correctness.get('mismatches')}")]
    profile = results.get("profile")
    if profile:
        lines.append(f"profile ({profile['samples']} samples), top self time:")
        lines += [f"  {row['share']:>6.1%}  {row['function']}" for row in profile["self"][:10]]
    if results.get("error"):
        lines.append(f"ERROR: {results['error']}")
    load = results.get("load_average_at_start")
    if load and load[0] > 1.0:
        lines.append(f"WARNING: load average {load[0]} at start: the machine was busy, rates "
                     "are low; ev/CPU-s is the figure least disturbed by that")
    lines.append("core: the contender's CPU seconds / window (1.00 = one full core); redis "
                 "CPU: redis-server's, same window")
    lines.append(f"method: {results.get('method', '')}")
    return lines
