"""Horizontal scaling: two ``retention worker`` processes in one consumer group, one topic.

Partitions are the unit of parallelism (docs/architecture.md, "The path of an event"):
every state key is partition-local and a partition batch is applied by one Lua call, so
two workers on separate partitions share nothing but Redis, the broker and the machine's
cores. This run
measures whether each keeps the rate one worker had alone on the same topic.

The figure must not include a rebalance, which pauses every member and re-seeks: both
workers are started together on the already full single-event topic, and the window opens
only at the first partition batch applied *after* both have logged their assignment
(``assigned [...]``, written by the worker once it has sought to its stored offsets) and
those assignments are disjoint and cover every partition. Kafka's first JoinGroup waits
for members no longer than ``group.initial.rebalance.delay.ms`` (0 here) and Tansu holds it
for half the session timeout (``devstack.tansu``), so two workers started together often
land in the same first generation and nothing is applied before the join; if one joined late, what
the other applied alone is counted as ``events_applied_before_join`` and stays outside the
window. Should a worker log another assignment before the last event (a rebalance inside
the window, e.g. a heartbeat missed on a starved machine), the figure is void and the bench
fails rather than report it.

Which partitions a worker owned is read from its own log, not inferred from Redis: the
state in Redis says how far each partition got, not who applied it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from retention_tracker.devstack.processes import ManagedProcess, wait_for

from .contenders import POLL_S, BenchFailure, Census, Deployment, RunResult
from .processes import CpuMeter, peak_rss_bytes

WORKERS = 2
_ASSIGNED = re.compile(r"\bassigned \[([^\]]*)\]")  # agents/ingest.py, Ingestor.seek_to_stored


def assignments(log_path: Path, topic: str) -> list[frozenset[int]]:
    """Every assignment a worker logged for ``topic``, oldest first. aiokafka rebalances
    eagerly, so each line is the worker's whole assignment in one generation; the last one
    is what it owns now, and a new line means a rebalance happened."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    partition = re.compile(rf"'{re.escape(topic)}/(\d+)'")
    return [frozenset(int(p) for p in partition.findall(match[1]))
            for match in _ASSIGNED.finditer(text)]


def _failure(what: str, process: ManagedProcess) -> BenchFailure:
    return BenchFailure(f"{what}; log {process.log_path}:\n{process.log_tail(2000)}")


def _wait_joined(members: dict[str, ManagedProcess], topic: str, partitions: int,
                 timeout_s: float) -> dict[str, frozenset[int]]:
    """Wait until every worker owns partitions, none twice, all of them covered; return
    what each owns. Fails at once if a worker dies while joining."""
    owned: dict[str, frozenset[int]] = {}

    def joined() -> bool:
        latest: dict[str, frozenset[int]] = {}
        for name, process in members.items():
            if not process.alive():
                raise _failure(f"{name} exited ({process.returncode}) while joining", process)
            seen = assignments(process.log_path, topic)
            if not seen or not seen[-1]:
                return False
            latest[name] = seen[-1]
        # While a rebalance is under way, some lines are of the old generation: overlapping
        # or not covering every partition. Only a consistent picture counts.
        if sum(map(len, latest.values())) != partitions or \
                frozenset().union(*latest.values()) != frozenset(range(partitions)):
            return False
        owned.update(latest)
        return True

    try:
        wait_for(joined, timeout_s, f"{len(members)} workers each owning partitions of {topic}",
                 POLL_S)
    except TimeoutError as exc:
        logs = ", ".join(str(p.log_path) for p in members.values())
        raise BenchFailure(f"{exc} (no consistent 'assigned [...]' lines; logs {logs})") from None
    return owned


@dataclass(slots=True)
class _Joined:
    """The workers once they all own partitions: who owns what, and what was applied then."""

    owned: dict[str, frozenset[int]]
    generations: dict[str, int]  # "assigned" lines each worker had logged by then
    base: dict[int, int]  # events applied per partition at the join
    spawned: float
    joined: float


@dataclass(slots=True)
class _Windows:
    """The combined window (from the first batch applied after the join) and each worker's
    own (from its first batch to its own last event), with their CPU meters."""

    everyone: CpuMeter
    own: dict[str, CpuMeter]
    combined: tuple[float, int] | None = None  # (time, events applied then)
    opened: dict[str, tuple[float, int]] = field(default_factory=dict)  # (time, its events)
    closed: dict[str, float] = field(default_factory=dict)
    last: float = 0.0

    def progressed(self, owned: dict[str, frozenset[int]], previous: dict[int, int],
                   done: dict[int, int], now: float) -> None:
        """Open the combined window, and the window of every worker whose partitions moved."""
        if self.combined is None:
            self.combined = (now, sum(done.values()))
            self.everyone.start()
        for name, parts in owned.items():
            if name not in self.opened and any(done[p] != previous[p] for p in parts
                                               if p in done):
                self.opened[name] = (now, sum(done.get(p, 0) for p in parts))
                self.own[name].start()

    def close_finished(self, owned: dict[str, frozenset[int]], done: dict[int, int],
                       totals: dict[int, int], now: float) -> None:
        for name, parts in owned.items():
            if name in self.opened and name not in self.closed and \
                    all(done[p] >= totals[p] for p in parts if p in totals):
                self.closed[name] = now
                self.own[name].stop()


def horizontal_replay(deployment: Deployment, census: Census, single_rate: float,
                      workers: int = WORKERS) -> dict[str, Any]:
    """Replay ``deployment.topic`` (the single-event shape) through ``workers`` workers in one
    group; the state stays in Redis for :func:`checks.verify`.

    Combined rate: from the first batch applied after the join to the last event, as
    ``worker_replay``. Per worker: the same, over its own partitions (its window opens at
    its own first applied batch and closes at its own last event), with its CPU share over
    that window. Redis' and the broker's CPU are read over the combined window.
    """
    stack = deployment.stack
    if stack.partitions < workers:
        return {"skipped": f"{stack.partitions} partitions cannot keep {workers} workers busy"}
    client = stack.redis()
    ends = census.end_offsets()
    totals = {p: census.events_before(p, end) for p, end in ends.items()}
    bar = stack.bar(census.events, f"{workers} workers   single")
    spawned = time.perf_counter()

    def applied() -> dict[int, int]:
        offsets = deployment.stored_offsets(client)
        return {p: census.events_before(p, offsets.get(p, 0)) for p in ends}

    try:
        with contextlib.ExitStack() as running:
            members = {
                f"worker-{i}": running.enter_context(deployment.start(str(i), loglevel="info"))
                for i in range(1, workers + 1)
            }
            owned = _wait_joined(members, deployment.topic, stack.partitions, stack.stall_s)
            joined = time.perf_counter()
            generations = {n: len(assignments(p.log_path, deployment.topic))
                           for n, p in members.items()}
            start = _Joined(owned, generations, applied(), spawned, joined)
            bar.update(sum(start.base.values()))
            windows = _Windows(
                CpuMeter({**{n: p.pid for n, p in members.items()}, **stack.service_pids}),
                {n: CpuMeter({"contender": p.pid}) for n, p in members.items()},
            )
            _follow(deployment, members, start, totals, applied, windows, bar)
            _refuse_rebalance(members, deployment.topic, generations)
            rss = {n: peak_rss_bytes(p.pid) for n, p in members.items()}
    finally:
        bar.close()
        client.close()
    return _figures(deployment, census, single_rate, start, totals, windows, rss)


def _follow(deployment: Deployment, members: dict[str, ManagedProcess], start: _Joined,
            totals: dict[int, int], applied: Callable[[], dict[int, int]], windows: _Windows,
            bar: tqdm) -> None:
    """Poll the applied events until every partition is done, opening and closing the
    windows; fail if a worker dies or nothing moves for ``stall_s``."""
    stack = deployment.stack
    workers, total = len(members), sum(totals.values())
    previous = start.base
    stalled_since = time.monotonic()
    while True:
        done = applied()
        now = time.perf_counter()
        if done != previous:
            bar.update(sum(done.values()) - sum(previous.values()))
            stalled_since = time.monotonic()
            windows.progressed(start.owned, previous, done, now)
            previous = done
        windows.close_finished(start.owned, done, totals, now)
        if done == totals:
            windows.last = now
            windows.everyone.stop()
            return
        for name, process in members.items():
            if not process.alive():
                raise _failure(f"{name} exited ({process.returncode}) at "
                               f"{sum(done.values())}/{total} events", process)
        if time.monotonic() - stalled_since > stack.stall_s:
            raise BenchFailure(f"{workers} workers made no progress for "
                               f"{stack.stall_s}s at {sum(done.values())}/{total}")
        time.sleep(POLL_S)


def _refuse_rebalance(members: dict[str, ManagedProcess], topic: str,
                      generations: dict[str, int]) -> None:
    """Fail if a worker logged an assignment after the join: the figure would include it."""
    rebalanced = {n: assignments(p.log_path, topic)[generations[n]:]
                  for n, p in members.items()}
    if any(rebalanced.values()):
        raise BenchFailure(f"a rebalance happened inside the horizontal window "
                           f"(assignments logged after the join: {rebalanced}); "
                           "the figure would include the pause")


def _per_worker(start: _Joined, totals: dict[int, int], windows: _Windows,
                rss: dict[str, int | None], single_rate: float) -> dict[str, Any]:
    """Each worker's rate over its own partitions and window, against one worker alone."""
    per_worker: dict[str, Any] = {}
    for name, parts in start.owned.items():
        events = sum(totals.get(p, 0) - start.base.get(p, 0) for p in parts)  # after join
        opened = windows.opened.get(name)
        meter = windows.own[name]
        result = RunResult(
            "worker", "single", events,
            sum(totals.get(p, 0) for p in parts) - opened[1] if opened else 0,
            windows.closed[name] - opened[0] if opened else 0.0,
            opened[0] - start.spawned if opened else 0.0, rss[name], cpu_s=meter.used,
        )
        waited = meter.waited.get("contender")
        per_worker[name] = {
            "partitions": sorted(parts), **result.as_dict(),
            "runqueue_wait_share": round(waited / result.window_s, 3)
            if waited is not None and result.window_s > 0 else None,
            "vs_single_worker": round(result.events_per_s / single_rate, 4)
            if single_rate else None,
        }
    return per_worker


def _figures(deployment: Deployment, census: Census, single_rate: float, start: _Joined,
             totals: dict[int, int], windows: _Windows, rss: dict[str, int | None]
             ) -> dict[str, Any]:
    """The run's report: the combined rate and CPU over the combined window, per worker."""
    if windows.combined is None:
        raise BenchFailure("the whole topic was applied before both workers had joined; "
                           "the horizontal run needs more events")
    opened, opened_events = windows.combined
    per_worker = _per_worker(start, totals, windows, rss, single_rate)
    total, everyone = census.events, windows.everyone
    window_s = windows.last - opened
    combined = (total - opened_events) / window_s if window_s > 0 else 0.0
    used = everyone.used

    machine = round(everyone.machine_busy_s / window_s, 3) \
        if everyone.machine_busy_s is not None and window_s > 0 else None

    def per_window(seconds: dict[str, float]) -> dict[str, float]:
        return {n: round(s / window_s, 3) for n, s in seconds.items()} if window_s > 0 else {}

    return {
        "workers": len(start.owned),
        "topic": deployment.topic,
        "partitions": deployment.stack.partitions,
        "nproc": os.cpu_count(),
        "events": total,
        "events_applied_before_join": sum(start.base.values()),
        "window_events": total - opened_events,
        "window_s": round(window_s, 4),
        "events_per_s": round(combined, 1),
        "join_s": round(start.joined - start.spawned, 3),
        "startup_s": round(opened - start.spawned, 3),
        "single_worker_events_per_s": round(single_rate, 1),
        "combined_vs_single_worker": round(combined / single_rate, 4) if single_rate else None,
        "per_worker": per_worker,
        "cpu_s_in_window": used,
        "core_share_in_window": per_window(used),
        "cores_used_in_window": round(sum(used.values()) / window_s, 3) if window_s > 0
        else None,
        # runnable but without a CPU, per second of window: high = the machine is too small
        "runqueue_wait_share_in_window": per_window(everyone.waited),
        # every process on the machine, the bench and anything else included: well above
        # cores_used_in_window means other work ran (the rates are then not the machine's)
        "machine_busy_cores_in_window": machine,
        "other_processes_cores_in_window": round(machine - sum(used.values()) / window_s, 3)
        if machine is not None else None,
        # "assigned" lines per worker by the end; 1 each: both were in the first generation
        "assignments_logged": start.generations,
    }
