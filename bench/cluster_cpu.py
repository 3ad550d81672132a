"""Events per CPU-second, from one worker on one Redis to two workers on a three-master
Redis Cluster (and two workers on one Redis, to tell the second worker's cost from the
cluster's): does the cluster cost CPU per event, and does it stay flat as workers and
masters are added?

Absolute throughput on the development machine is bound by its two cores (and by whatever
else runs there), so the figure that says how the tracker scales is CPU per event: worker
and Redis CPU seconds (utime + stime from ``/proc``) over a window, for the events applied
in it. A layout that scales keeps events per CPU-second flat; the cores then set the rate.

Each layout gets a fresh Redis (a single ``redis-server``, or a cluster of masters without
replicas, so that both sides count the same work) and replays the same topic of
single-event messages from the beginning under its own group and key prefix, with
``CLOCK=event`` as ``retention bench`` does. The window opens once every worker has logged
its assignment (``assigned [...]``) and closes when every record is applied (the offsets
stored with the state); events applied before it are left out, CPU spent before it too.

    python -m retention_tracker.bench.cluster_cpu --events 200000 --partitions 12 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retention_tracker.cli.feeding import produce_events
from retention_tracker.config.settings import Settings
from retention_tracker.devstack.broker import start_broker
from retention_tracker.devstack.processes import free_port, start_process, wait_for
from retention_tracker.devstack.redis_server import start_redis, start_redis_cluster
from retention_tracker.devstack.topics import ensure_topics
from retention_tracker.state.connect import make_sync_client
from retention_tracker.state.schema import Keyspace

from .horizontal import assignments
from .processes import RETENTION, CpuMeter, machine_busy_seconds
from .workload import WorkloadSpec, build_workload


@dataclass(frozen=True, slots=True)
class Layout:
    workers: int
    masters: int  # 1: a single redis-server; more: a Redis Cluster of that many masters

    @property
    def name(self) -> str:
        redis = "1 Redis" if self.masters == 1 else f"{self.masters} masters"
        return f"{self.workers} worker{'s' if self.workers > 1 else ''} x {redis}"


#: 2 workers x 1 Redis separates what a second worker costs on the same cores from what
#: the cluster costs.
LAYOUTS = (Layout(1, 1), Layout(1, 3), Layout(2, 1), Layout(2, 3))


def _applied(settings: Settings, topic: str, partitions: int) -> int:
    """Records of ``topic`` applied, from the offsets stored with the state."""
    client = make_sync_client(settings)
    keys = Keyspace(settings.key_prefix)
    try:
        pipe = client.pipeline(transaction=False)
        for p in range(partitions):
            pipe.hget(keys.meta(p), f"off:{topic}")
        return sum(int(v) for v in pipe.execute() if v is not None)
    finally:
        client.close()


def run_layout(layout: Layout, kafka_url: str, topic: str, partitions: int, total: int,
               workdir: Path, run: str) -> dict[str, Any]:
    """One layout: fresh Redis, its workers, the window's events and CPU seconds."""
    with contextlib.ExitStack() as stack:
        if layout.masters == 1:
            server, url = start_redis(data_dir=workdir / f"{run}-redis")
            stack.enter_context(server)
            redis_pids = {"redis": server.pid}
        else:
            cluster = start_redis_cluster(layout.masters, 0, workdir / f"{run}-cluster")
            stack.enter_context(cluster)
            url = cluster.url
            redis_pids = {f"redis-{port}": p.pid for port, p in cluster.processes.items()}
        settings = Settings(redis_url=url, redis_cluster=layout.masters > 1, key_prefix=run)
        env = {**os.environ, "KAFKA_BROKER": kafka_url, "REDIS_URL": url,
               "REDIS_CLUSTER": "true" if layout.masters > 1 else "false",
               "INPUT_TOPICS": topic, "DLQ_TOPIC": f"{run}-dlq", "GROUP_ID": f"{run}-group",
               "KEY_PREFIX": run, "CLOCK": "event"}  # default group timeouts: two starved
        # workers on 2 cores missed 2 s sessions and rebalanced inside the window
        workers = {}
        for index in range(layout.workers):
            name = f"{run}-worker-{index}"
            workers[name] = stack.enter_context(start_process(
                [*RETENTION, "worker", "--loglevel", "info"], name,
                {**env, "WEB_PORT": str(free_port())}, workdir / f"{name}.log", cwd=workdir))

        lines_seen = {"count": -1, "since": time.monotonic()}

        def joined() -> bool:
            """Every worker's latest assignment, together covering every partition, and no
            new assignment logged for 2 s: a second worker joining late rebalances, and the
            window should not hold that pause."""
            owned: list[frozenset[int]] = []
            for process in workers.values():
                if not process.alive():
                    raise RuntimeError(f"{process.name} died: {process.log_tail(2000)}")
                owned += assignments(process.log_path, topic)[-1:]
            count = sum(len(assignments(p.log_path, topic)) for p in workers.values())
            if count != lines_seen["count"]:
                lines_seen.update(count=count, since=time.monotonic())
                return False
            return len(owned) == len(workers) and sum(map(len, owned)) == partitions and \
                frozenset().union(*owned) == frozenset(range(partitions)) and \
                time.monotonic() - lines_seen["since"] >= 2.0

        wait_for(joined, 120, f"{layout.name}: workers owning every partition", 0.05)
        meter = CpuMeter({**{n: p.pid for n, p in workers.items()}, **redis_pids})
        meter.start()
        opened, before = time.perf_counter(), _applied(settings, topic, partitions)
        def done() -> bool:
            for process in workers.values():
                if not process.alive():
                    raise RuntimeError(f"{process.name} died: {process.log_tail(2000)}")
            return _applied(settings, topic, partitions) >= total

        wait_for(done, 900, f"{layout.name}: {total} records applied", 0.05)
        window_s = time.perf_counter() - opened
        used = meter.stop()
    events = total - before
    if not used or events <= 0:
        raise RuntimeError(f"{layout.name}: no window (applied before it {before} of {total}, "
                           f"CPU read {used})")
    worker_cpu = sum(v for n, v in used.items() if "worker" in n)
    redis_cpu = sum(v for n, v in used.items() if n.startswith("redis"))
    return {
        "layout": layout.name, "workers": layout.workers, "masters": layout.masters,
        "events": events, "events_before_window": before, "window_s": round(window_s, 3),
        "events_per_s": round(events / window_s, 1),
        "worker_cpu_s": round(worker_cpu, 3), "redis_cpu_s": round(redis_cpu, 3),
        "events_per_cpu_s": round(events / (worker_cpu + redis_cpu), 1),
        "events_per_worker_cpu_s": round(events / worker_cpu, 1),
        "events_per_redis_cpu_s": round(events / redis_cpu, 1),
        "cores_used": round((worker_cpu + redis_cpu) / window_s, 3),
        "machine_busy_cores": round(meter.machine_busy_s / window_s, 3)
        if meter.machine_busy_s is not None else None,
        "cpu_s": used,
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so every process started is stopped


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1, help="each layout this many times")
    parser.add_argument("--json", type=Path, help="write the runs here too")
    args = parser.parse_args()
    workload = build_workload(WorkloadSpec(args.events, args.events // 10, 30))
    workdir = Path(tempfile.mkdtemp(prefix="cluster-cpu-"))
    runs: list[dict[str, Any]] = []
    broker = start_broker(log_dir=workdir)
    kafka_url = broker.url
    os.environ.update(broker.worker_env)  # the workers' environment starts from ours
    with broker:
        topic = "cluster-cpu"
        asyncio.run(ensure_topics(kafka_url, {topic: args.partitions}))
        asyncio.run(produce_events(kafka_url.removeprefix("kafka://"), topic,
                                   workload.events, progress=False))
        total = len(workload.events)
        for round_ in range(args.rounds):
            for layout in LAYOUTS:
                result = run_layout(layout, kafka_url, topic, args.partitions, total,
                                    workdir, f"cc{round_}w{layout.workers}m{layout.masters}")
                runs.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "cpu_s"}),
                      flush=True)
    print(render(runs, total, args.partitions, machine_busy_seconds() is not None))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


def render(runs: list[dict[str, Any]], events: int, partitions: int, proc: bool) -> str:
    lines = [f"{events} single-event messages, {partitions} partitions, CLOCK=event",
             "| layout | events/s | worker CPU s | Redis CPU s | events per CPU-s | "
             "per worker CPU-s | per Redis CPU-s | cores used | machine busy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r['layout']} | {r['events_per_s']:,.0f} | {r['worker_cpu_s']:.1f} | "
            f"{r['redis_cpu_s']:.1f} | {r['events_per_cpu_s']:,.0f} | "
            f"{r['events_per_worker_cpu_s']:,.0f} | {r['events_per_redis_cpu_s']:,.0f} | "
            f"{r['cores_used']:.2f} | {r['machine_busy_cores']} |")
    lines += ["", "Median per layout (events per CPU-second: total, worker, Redis):"]
    for name in dict.fromkeys(r["layout"] for r in runs):
        mine = [r for r in runs if r["layout"] == name]
        lines.append(f"- {name}: " + ", ".join(
            f"{statistics.median(r[k] for r in mine):,.0f}" for k in
            ("events_per_cpu_s", "events_per_worker_cpu_s", "events_per_redis_cpu_s"))
            + f" ({len(mine)} runs)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
