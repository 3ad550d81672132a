"""The three consumers raced on the same topic, each timed over its steady window.

Startup and consumer-group join (seconds on Tansu, see ``devstack.tansu``) never count: the
Faust agent's and the worker's windows open when their first unit of work is done (the
agent's first message, the worker's first applied partition batch as seen in Redis) and
close when the last event is done; the events of that first unit are not counted. The raw
loop's window opens when its first fetch that returns records was *requested* and counts
that fetch's events too: it has no group join to leave out, and a topic that fits in one
fetch would otherwise have an empty window (a rate of 0). The rate is the events done inside
the window divided by its length.

* ``raw``: an aiokafka ``getmany`` loop that only decodes JSON and counts events; the
  ceiling any Python consumer on this broker and machine can reach. It runs in this process
  without a consumer group (manual assignment), and doubles as the topic's census: the
  offsets and events per message the worker's progress is converted with.
* ``faust``: ``bench/faust_baseline.py``, a plain Faust agent updating a Table per event.
* ``worker``: ``retention worker``, the product, exactly as deployed (own group, Redis).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from tqdm import tqdm

from retention_tracker.agents.replication import config_value
from retention_tracker.config.settings import Settings
from retention_tracker.devstack.processes import ManagedProcess, free_port, start_process
from retention_tracker.state.schema import Keyspace
from retention_tracker.streams import engine

from .processes import FAUST_BASELINE, FAUST_TABLE, RETENTION, CpuMeter, peak_rss_bytes
from .redis_commands import CommandMeter

POLL_S = 0.02  # how often Redis is read for progress: the window's resolution


def batch_records() -> int:
    """The worker's BATCH_MAX_RECORDS (its environment's, read when the run starts, as the
    worker reads it), used by the raw loop too: both read the topic in fetches of a size."""
    return int(os.environ.get("BATCH_MAX_RECORDS") or Settings().batch_max_records)


class BenchFailure(Exception):
    """The bench cannot produce a trustworthy figure (a contender died, stalled, or lied)."""


def worker_engine() -> dict[str, Any]:
    """The plan's engine the workers run (their environment's ENGINE, as this install
    resolves it: streams/engine.py). ``worker_figure`` is false when it is the Python
    fallback: then the figures are not the worker's (it runs native where it is built)."""
    choice = os.environ.get("ENGINE") or Settings().engine
    try:
        native = engine.resolve(choice)
    except engine.EngineError as exc:
        raise BenchFailure(str(exc)) from None
    return {"choice": choice, "name": engine.NATIVE if native is not None else engine.PYTHON,
            "detail": engine.describe(choice), "worker_figure": native is not None}


@dataclass(slots=True)
class Stack:
    """Where everything runs: the broker, Redis, the work directory and naming."""

    kafka_url: str
    redis_url: str
    workdir: Path
    run_id: str
    partitions: int = 4
    progress: bool = True
    stall_s: float = 120.0  # a contender without progress for this long fails the bench
    service_pids: dict[str, int] = field(default_factory=dict)  # "broker", "redis"
    worker_env: dict[str, str] = field(default_factory=dict)  # what the broker needs of them

    @property
    def bootstrap(self) -> str:
        return self.kafka_url.removeprefix("kafka://")

    def cpu_meter(self, contender_pid: int) -> CpuMeter:
        return CpuMeter({"contender": contender_pid, **self.service_pids})

    def bar(self, total: int, desc: str) -> tqdm:
        return tqdm(
            total=total, desc=desc, unit="ev", unit_scale=True, dynamic_ncols=True,
            smoothing=0.1, disable=not self.progress or not sys.stderr.isatty(), leave=False,
        )

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


@dataclass(slots=True)
class Census:
    """Per partition: the offsets of the topic's records and cumulative events up to each.

    The worker stores "next offset" per partition; this turns that into events applied
    without trusting ListOffsets(latest), which Tansu can undercount.
    """

    offsets: dict[int, list[int]] = field(default_factory=dict)
    cumulative: dict[int, list[int]] = field(default_factory=dict)

    def events_before(self, partition: int, next_offset: int) -> int:
        offsets = self.offsets.get(partition, [])
        index = bisect_left(offsets, next_offset)
        return self.cumulative[partition][index - 1] if index else 0

    def end_offsets(self) -> dict[int, int]:
        return {p: offs[-1] + 1 for p, offs in self.offsets.items() if offs}

    @property
    def messages(self) -> int:
        return sum(len(o) for o in self.offsets.values())

    @property
    def events(self) -> int:
        return sum(c[-1] for c in self.cumulative.values() if c)


@dataclass(slots=True)
class RunResult:
    """One contender on one topic. ``events_per_s`` is over the steady window only."""

    contender: str
    shape: str
    events: int  # events the contender processed in total
    window_events: int  # of which inside the steady window
    window_s: float
    startup_s: float  # from process start (or consumer start) to the window's opening
    peak_rss_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # in the window, per process

    @property
    def events_per_s(self) -> float:
        return self.window_events / self.window_s if self.window_s > 0 else 0.0

    def cpu_figures(self) -> dict[str, Any]:
        """CPU seconds in the window; the contender's share of one core (well below 1 means
        it waited, on I/O or because something else had the CPU) and events per CPU second
        (the figure least disturbed by a busy machine)."""
        own = self.cpu_s.get("contender")
        return {
            "cpu_s_in_window": self.cpu_s,
            "contender_core_share": round(own / self.window_s, 3) if own and self.window_s
            else None,
            "events_per_contender_cpu_s": round(self.window_events / own, 1) if own else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "contender": self.contender,
            "shape": self.shape,
            "events": self.events,
            "window_events": self.window_events,
            "window_s": round(self.window_s, 4),
            "events_per_s": round(self.events_per_s, 1),
            "startup_s": round(self.startup_s, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            **self.cpu_figures(),
            **self.extra,
        }


# ---- (a) the raw ceiling -------------------------------------------------------------------


async def raw_loop(stack: Stack, topic: str, shape: str, expected_events: int
                   ) -> tuple[RunResult, Census]:
    """Decode and count every event of ``topic``; also take the census of its records."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=batch_records(),
        fetch_max_bytes=64 << 20, max_partition_fetch_bytes=8 << 20,  # as the worker's
    )
    started = time.perf_counter()
    census = Census()
    count = 0
    first: tuple[float, int] | None = None
    bar = stack.bar(expected_events, f"raw loop    {shape}")
    meter = stack.cpu_meter(os.getpid())
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(stack.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        offsets = {p: census.offsets.setdefault(p, []) for p in range(stack.partitions)}
        cumulative = {p: census.cumulative.setdefault(p, []) for p in range(stack.partitions)}
        loads = orjson.loads
        stalled_since = time.monotonic()
        while count < expected_events:
            requested = time.perf_counter()
            batches = await consumer.getmany(timeout_ms=200, max_records=batch_records())
            before = count
            for tp, records in batches.items():
                offs, cum = offsets[tp.partition], cumulative[tp.partition]
                prior = total = cum[-1] if cum else 0
                for record in records:
                    decoded = loads(record.value)
                    total += len(decoded) if isinstance(decoded, list) else 1
                    offs.append(record.offset)
                    cum.append(total)
                count += total - prior
            if count > before:
                bar.update(count - before)
                stalled_since = time.monotonic()
                if first is None:  # the window opens at this fetch's request
                    first = (requested, before)
                    meter.start()
            elif time.monotonic() - stalled_since > stack.stall_s:
                raise BenchFailure(f"raw loop: no progress for {stack.stall_s}s at "
                                   f"{count}/{expected_events} events")
        last = time.perf_counter()
        meter.stop()
    finally:
        bar.close()
        await consumer.stop()
    assert first is not None
    if count != expected_events:
        raise BenchFailure(f"raw loop on {topic}: {count} events, expected {expected_events}")
    result = RunResult("raw", shape, count, count - first[1], last - first[0], first[0] - started,
                       cpu_s=meter.used)
    return result, census


# ---- (b) the idiomatic Faust baseline ------------------------------------------------------


def faust_agent(stack: Stack, topic: str, shape: str, measure_events: int) -> RunResult:
    """Run the Faust baseline until it has processed ``measure_events`` events."""
    name = f"{stack.run_id}-faust-{shape}"
    progress_key = f"bench:{name}"
    env = dict(
        os.environ, BENCH_BROKER=stack.kafka_url, BENCH_TOPIC=topic, BENCH_REDIS=stack.redis_url,
        BENCH_PROGRESS_KEY=progress_key, BENCH_TOTAL=str(measure_events), BENCH_APP_ID=name,
        BENCH_DATADIR=str(stack.workdir / "faust-data"),
        BENCH_PARTITIONS=str(stack.partitions),
    )
    client = stack.redis()
    spawned = time.time()
    process = start_process([sys.executable, str(FAUST_BASELINE)], name, env,
                            stack.workdir / f"{name}.log", cwd=stack.workdir)
    bar = stack.bar(measure_events, f"faust agent {shape}")
    try:
        with process:
            meter = stack.cpu_meter(process.pid)
            wait_progress(process, lambda: int(client.hget(progress_key, "count") or 0),
                          measure_events, bar, stack.stall_s, "faust agent", meter)
            rss = peak_rss_bytes(process.pid)
        fields = {k.decode(): float(v) for k, v in client.hgetall(progress_key).items()}
    finally:
        bar.close()
        client.close()
    count = int(fields["count"])
    changelog = f"{name}-{FAUST_TABLE}-changelog"
    return RunResult(
        "faust", shape, count, count - int(fields["first_count"]),
        fields["last_ts"] - fields["first_ts"], fields["first_ts"] - spawned, rss,
        {"measured_prefix_events": measure_events,
         "changelog_topic": changelog,
         "changelog_cleanup_policy": run_async(
             lambda: topic_setting(stack.bootstrap, changelog, "cleanup.policy"))},
        meter.used,
    )


async def topic_setting(bootstrap: str, topic: str, name: str) -> str | None:
    """One setting of a topic as the broker reports it (None where it cannot: Tansu).
    The Faust table's changelog must be compacted, as Faust creates it on Kafka."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses: Any = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})])
    except KafkaError:
        return None
    finally:
        await admin.close()
    return config_value(responses, name)


def wait_progress(process: ManagedProcess, read: Callable[[], int], target: int, bar: tqdm,
                  timeout_s: float, what: str, meter: CpuMeter) -> None:
    """Poll ``read`` until it reaches ``target``; fail if the process dies or stalls. The
    CPU meter runs from the first progress seen to the target."""
    last_change = time.monotonic()
    shown = 0
    while True:
        done = read()
        if done != shown:
            if shown == 0:
                meter.start()
            bar.update(done - shown)
            shown, last_change = done, time.monotonic()
        if done >= target:
            meter.stop()
            return
        if not process.alive():
            raise BenchFailure(f"{what} exited ({process.returncode}) at {done}/{target} events;"
                               f" log {process.log_path}:\n{process.log_tail(2000)}")
        if time.monotonic() - last_change > timeout_s:
            raise BenchFailure(f"{what} made no progress for {timeout_s}s at {done}/{target}; "
                               f"log {process.log_path}")
        time.sleep(POLL_S)


# ---- (c) our worker --------------------------------------------------------------------------


@dataclass(slots=True)
class Deployment:
    """One ``retention worker`` deployment: its topic, group, DLQ and Redis key prefix."""

    stack: Stack
    topic: str
    name: str

    @property
    def prefix(self) -> str:
        return f"{self.stack.run_id}-{self.name}"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}-dlq"

    @property
    def keys(self) -> Keyspace:
        return Keyspace(self.prefix)

    def env(self, **extra: str) -> dict[str, str]:
        """The worker's settings: production defaults except isolation and the event clock.

        A short session timeout only shortens the group join, which is outside the window.
        """
        env = dict(os.environ)
        env.update(
            KAFKA_BROKER=self.stack.kafka_url, REDIS_URL=self.stack.redis_url,
            INPUT_TOPICS=self.topic, DLQ_TOPIC=self.dlq, GROUP_ID=f"{self.prefix}-group",
            KEY_PREFIX=self.prefix, WEB_PORT=str(free_port()), CLOCK="event",
            SESSION_TIMEOUT_MS="2000", HEARTBEAT_MS="500",
        )
        env.update(self.stack.worker_env)
        env.update(extra)
        return env

    def start(self, member: str = "", loglevel: str = "warning") -> ManagedProcess:
        """One worker of the deployment. ``member`` names one of several workers sharing the
        group (own log, own web port); ``loglevel="info"`` keeps its "assigned [...]" lines,
        which say what it owns (the horizontal run reads them)."""
        name = f"worker-{self.name}" + (f"-{member}" if member else "")
        return start_process([*RETENTION, "worker", "--loglevel", loglevel], name, self.env(),
                             self.stack.workdir / f"{name}.log", cwd=self.stack.workdir)

    @property
    def rekey_topic(self) -> str:
        """The worker's default REKEY_TOPIC for this deployment's group."""
        return f"{self.prefix}-group.rekey"

    def stored_offsets(self, client: redis.Redis, topic: str | None = None) -> dict[int, int]:
        """Next offset per partition of ``topic`` (default: the input) as stored with the
        state (only applied records count)."""
        pipe = client.pipeline(transaction=False)
        for p in range(self.stack.partitions):
            pipe.hget(self.keys.meta(p), f"off:{topic or self.topic}")
        return {p: int(v) for p, v in enumerate(pipe.execute()) if v is not None}

    def assigned_shards(self, client: redis.Redis) -> int:
        return int(client.scard(self.keys.shards()))


def worker_replay(deployment: Deployment, shape: str, census: Census,
                  on_first_progress: Callable[[ManagedProcess], Any] | None = None,
                  forwarded_events: int = 0) -> tuple[RunResult, dict[str, int]]:
    """Replay the topic through a fresh worker; returns the result and INFO used_memory
    before and after (the state it built is still in Redis, for checks and memory figures).

    ``forwarded_events``: how many events the worker must forward to their home partition
    (one a record); the replay ends when that many re-key records are applied too, and
    progress counts those (an event is applied when it reached home).

    ``on_first_progress`` is called once the window opens (a profiler attaches there, so
    imports and the group join stay out of the profile).
    """
    stack = deployment.stack
    client = stack.redis()
    total = census.events
    memory = {"before": int(client.info("memory")["used_memory"])}
    spawned = time.perf_counter()
    process = deployment.start()
    bar = stack.bar(total, f"worker      {shape}")
    meter = stack.cpu_meter(process.pid)
    commands, whole_run_commands = CommandMeter(client), CommandMeter(client)
    whole_run = stack.cpu_meter(process.pid)
    whole_run.start()
    whole_run_commands.start()
    try:
        with process:
            first, last = _follow_worker(deployment, client, census, process, bar,
                                         (meter, commands), on_first_progress,
                                         forwarded_events)
            whole_run.stop()
            whole_run_commands.stop()
            rss = peak_rss_bytes(process.pid)
            memory["after"] = int(client.info("memory")["used_memory"])
    finally:
        bar.close()
        client.close()
    if first[1] < total:
        result = RunResult("worker", shape, total, total - first[1], last - first[0],
                           first[0] - spawned, rss, cpu_s=meter.used)
    else:
        # The whole topic was applied between two polls (a small topic, a fast worker): the
        # steady window is empty, so the figures are the whole run's from the spawn, start-up
        # included, and say so.
        result = RunResult("worker", shape, total, total, last - spawned, 0.0, rss,
                           extra={"window": "whole run from spawn (the steady window was empty)"},
                           cpu_s=whole_run.used)
        commands = whole_run_commands
    result.extra["redis_commands"] = commands.per_event(result.window_events)
    return result, memory


def _follow_worker(deployment: Deployment, client: redis.Redis, census: Census,
                   process: ManagedProcess, bar: tqdm, meters: tuple[CpuMeter, CommandMeter],
                   on_first_progress: Callable[[ManagedProcess], Any] | None,
                   forwarded_events: int) -> tuple[tuple[float, int], float]:
    """Poll the applied offsets until the whole topic (and every forwarded event) is
    applied; returns the window's opening (time, events done then) and its end time; the
    meters run over that window. Fails if the worker exits or stalls for ``stall_s``."""
    meter, commands = meters
    stack = deployment.stack
    ends = census.end_offsets()
    total = census.events
    first: tuple[float, int] | None = None
    stalled_since = time.monotonic()
    shown = 0
    while True:
        offsets = deployment.stored_offsets(client)
        now = time.perf_counter()
        done = sum(census.events_before(p, o) for p, o in offsets.items())
        if forwarded_events:
            at_home = sum(deployment.stored_offsets(client, deployment.rekey_topic).values())
            done = min(done, at_home)
        if done != shown:
            bar.update(done - shown)
            shown, stalled_since = done, time.monotonic()
            if first is None:
                first = (now, done)
                meter.start()
                commands.start()
                if on_first_progress is not None:
                    on_first_progress(process)
        if all(offsets.get(p, 0) >= end for p, end in ends.items()) and (
                not forwarded_events or done >= forwarded_events):
            meter.stop()
            commands.stop()
            assert first is not None
            return first, now
        if not process.alive():
            raise BenchFailure(
                f"worker exited ({process.returncode}) at {done}/{total} events; log "
                f"{process.log_path}:\n{process.log_tail(2000)}")
        if time.monotonic() - stalled_since > stack.stall_s:
            raise BenchFailure(f"worker made no progress for {stack.stall_s}s at "
                               f"{done}/{total}; log {process.log_path}")
        time.sleep(POLL_S)


def run_async(coro_factory: Callable[[], Any]) -> Any:
    """asyncio.run for the bench's few async steps (topics, producing, the raw loop)."""

    async def main() -> Any:
        return await coro_factory()

    return asyncio.run(main())
