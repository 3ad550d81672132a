"""Redis goes away under a running worker: a restart, a kill -9 (and the loss of the writes
the OS had not synced yet), an outage of several seconds, and a write pause.

Each test runs its own redis-server (AOF on, ``appendfsync everysec``) and brings it back
on the same port and data directory, so the worker's REDIS_URL stays valid. The worker
retries every Redis step with back-off (0.1 s doubling to 5 s): consumption pauses, nothing
is dropped or buffered, and the figures end exact.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest
import redis

from retention_tracker.devstack.processes import wait_for
from retention_tracker.state.schema import Keyspace
from tests.e2e.harness import Deployment, event_messages, produce

from .support import (
    FAST_GROUP,
    FaultReport,
    LagMonitor,
    OwnRedis,
    alive_predicate,
    assert_figures_exact,
    blocked_scripts,
    metric,
    quick_client,
    workload,
)

pytestmark = pytest.mark.e2e

#: A production outage of a minute or more, scaled down to keep CI short: 10 s already
#: takes the back-off to its 5 s cap, so longer outages only repeat the same retries.
OUTAGE_S = 10.0
ENV = {**FAST_GROUP, "BATCH_MAX_RECORDS": "20"}


def redis_errors(port: int) -> float:
    return metric(port, "retention_worker_redis_errors_total") or 0.0


def test_redis_restarted_mid_stream(own_redis: OwnRedis, own_deployment: Deployment) -> None:
    """Scenario 2: SIGTERM to Redis while the worker consumes, more records arrive while it
    is down, then Redis comes back on the same port and AOF; the worker resumes by itself."""
    d = own_deployment
    raw = workload(days=20, seed=21)
    messages = event_messages(raw)
    half = len(messages) // 2
    produced = produce(d.bootstrap, d.topic, messages[:half])
    with LagMonitor(d, produced=produced) as monitor, contextlib.ExitStack() as stack:
        worker, port = d.start_worker(**ENV)
        stack.enter_context(worker)
        wait_for(alive_predicate(worker, lambda: d.applied_offsets() >= half // 2), 60,
                 "the worker halfway through the first half")
        own_redis.stop()
        produced += produce(d.bootstrap, d.topic, messages[half:])
        monitor.produced = produced
        wait_for(alive_predicate(worker, lambda: redis_errors(port) >= 1), 30,
                 "the worker seeing Redis gone")
        own_redis.start()
        back = time.monotonic()
        d.wait_applied(produced, worker=worker)
        recovery = round(time.monotonic() - back, 2)
        errors = redis_errors(port)
    report = FaultReport("2 Redis SIGTERM + restart", produced, raw, recovery_s=recovery,
                         max_lag=monitor.max_lag, extra={"worker_redis_errors": errors})
    assert_figures_exact(d, raw)
    report.finish(d)


def test_redis_kill_9_with_aof_everysec(own_redis: OwnRedis, own_deployment: Deployment
                                        ) -> None:
    """Scenario 3: SIGKILL to Redis in the middle of a replay of small batches. With
    ``appendfsync everysec`` an acknowledged write is already in the OS page cache, so a
    process kill loses nothing that was answered; a batch whose reply was lost is re-planned
    against the reloaded state and skipped or applied once."""
    d = own_deployment
    raw = workload(days=20, seed=23)
    produced = produce(d.bootstrap, d.topic, event_messages(raw))
    with LagMonitor(d, produced=produced) as monitor, contextlib.ExitStack() as stack:
        worker, port = d.start_worker(**{**ENV, "BATCH_MAX_RECORDS": "10"})
        stack.enter_context(worker)
        wait_for(alive_predicate(worker, lambda: d.applied_offsets() >= produced * 2 // 5), 60,
                 "40 % of the replay applied")
        before_kill = d.applied_offsets()
        own_redis.kill()
        own_redis.start()
        back = time.monotonic()
        after_restart = d.applied_offsets()
        d.wait_applied(produced, worker=worker)
        recovery = round(time.monotonic() - back, 2)
        errors = redis_errors(port)
    assert after_restart >= before_kill  # no answered write was lost with the process
    report = FaultReport("3 Redis kill -9 (AOF everysec)", produced, raw, recovery_s=recovery,
                         max_lag=monitor.max_lag,
                         extra={"applied_just_before_kill": before_kill,
                                "applied_after_restart": after_restart,
                                "worker_redis_errors": errors})
    assert_figures_exact(d, raw)
    report.finish(d)


def test_redis_losing_its_last_second_of_writes_replays_the_gap(
        own_redis: OwnRedis, own_deployment: Deployment) -> None:
    """Scenario 3b: what ``everysec`` really risks is a machine crash, not a process kill:
    writes of the last second that the OS had not flushed are gone. Simulated exactly: the AOF
    is cut back to its length at a moment T (a prefix of the file is what a lost page-cache
    tail leaves), after more batches were applied, then Redis restarts from it. State and
    offsets roll back together to T; the records applied after T must be read again."""
    d = own_deployment
    raw = workload(days=20, seed=25)
    messages = event_messages(raw)
    first, second = len(messages) // 3, 2 * len(messages) // 3
    produced = produce(d.bootstrap, d.topic, messages[:first])
    with LagMonitor(d, produced=produced) as monitor, contextlib.ExitStack() as stack:
        worker, _ = d.start_worker(**ENV)
        stack.enter_context(worker)
        d.wait_applied(first, worker=worker)
        [aof] = own_redis.aof_files()
        synced = aof.stat().st_size  # T: everything up to here reached the disk
        produced += produce(d.bootstrap, d.topic, messages[first:second])
        monitor.produced = produced
        d.wait_applied(second, worker=worker)  # applied after T, only in the page cache
        own_redis.kill()
        os.truncate(aof, synced)  # the machine crashed: the unsynced tail is gone
        own_redis.start()
        back = time.monotonic()
        rolled_back_to = d.applied_offsets()
        assert rolled_back_to == first
        produced += produce(d.bootstrap, d.topic, messages[second:])
        monitor.produced = produced
        d.wait_applied(produced, worker=worker)
        recovery = round(time.monotonic() - back, 2)
    report = FaultReport("3b Redis loses its un-fsynced AOF tail ", produced,
                         raw, recovery_s=recovery, max_lag=monitor.max_lag,
                         extra={"offsets_rolled_back_to": rolled_back_to,
                                "records_to_replay": second - first})
    report.finish(d)
    assert_figures_exact(d, raw)


def test_redis_unreachable_for_a_while(own_redis: OwnRedis, own_deployment: Deployment) -> None:
    """Scenario 4: Redis down for OUTAGE_S (a minute in production terms, scaled down): the
    worker stays alive, stops applying (its processed-records counter does not move), retries
    with back-off rather than in a busy loop, keeps serving /metrics, then catches up."""
    d = own_deployment
    raw = workload(days=20, seed=27)
    messages = event_messages(raw)
    half = len(messages) // 2
    produced = produce(d.bootstrap, d.topic, messages[:half])
    with LagMonitor(d, produced=produced) as monitor, contextlib.ExitStack() as stack:
        worker, port = d.start_worker(**ENV)
        stack.enter_context(worker)
        wait_for(alive_predicate(worker, lambda: d.applied_offsets() >= half // 2), 60,
                 "the worker halfway through the first half")
        own_redis.stop()
        down = time.monotonic()
        produced += produce(d.bootstrap, d.topic, messages[half:])
        monitor.produced = produced
        wait_for(alive_predicate(worker, lambda: redis_errors(port) >= 1), 30,
                 "the worker seeing Redis gone")
        records_at_first_error = metric(port, "retention_worker_records_total")
        wait_for(alive_predicate(worker, lambda: time.monotonic() - down >= OUTAGE_S),
                 OUTAGE_S + 5, f"a {OUTAGE_S:.0f} s outage")
        assert worker.alive()
        records_at_end = metric(port, "retention_worker_records_total")
        errors_during = redis_errors(port)
        own_redis.start()
        back = time.monotonic()
        d.wait_applied(produced, worker=worker)
        recovery = round(time.monotonic() - back, 2)
    assert records_at_first_error is not None  # /metrics answered during the outage
    assert records_at_end == records_at_first_error  # consumption paused
    # two loops retry (batches and win-back ticks), each 0.1 s doubling to 5 s: ~8 tries
    # each in 10 s; a busy loop would make thousands
    assert 3 <= errors_during <= 60, errors_during
    report = FaultReport(f"4 Redis unreachable {OUTAGE_S:.0f} s", produced, raw,
                         recovery_s=recovery, max_lag=monitor.max_lag,
                         extra={"outage_s": OUTAGE_S, "worker_redis_errors": errors_during})
    assert_figures_exact(d, raw)
    report.finish(d)


class OffsetStateChecker:
    """Samples, in one MULTI, every partition's stored offset and its event counters. One
    valid event per record makes ``accepted + duplicates + rejected == offset`` an exact
    invariant: an offset stored ahead of its state (or behind it) breaks it at once."""

    def __init__(self, d: Deployment) -> None:
        self.d = d
        self.keys = Keyspace(f"rt-{d.name}")
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.violations: list[dict[int, tuple[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="offset-checker")

    def sample(self, client: redis.Redis) -> None:
        shards = sorted(int(s) for s in client.smembers(self.keys.shards()))
        with client.pipeline(transaction=True) as pipe:
            for shard in shards:
                pipe.hget(self.keys.meta(shard), f"off:{self.d.topic}")
                pipe.hgetall(self.keys.stats(shard))
            replies = pipe.execute()
        offsets, bad = {}, {}
        for shard, offset, stats in zip(shards, replies[::2], replies[1::2], strict=True):
            counted = sum(int(v) for k, v in stats.items()
                          if k.split(b":")[0] in (b"acc", b"dup", b"rej"))
            offsets[shard] = int(offset or 0)
            if offsets[shard] != counted:
                bad[shard] = (offsets[shard], counted)
        self.samples.append((time.monotonic(), offsets))
        if bad:
            self.violations.append(bad)

    def _run(self) -> None:
        client = quick_client(self.d.redis_url)
        try:
            while not self._stop.wait(0.02):
                with contextlib.suppress(redis.RedisError):
                    self.sample(client)
        finally:
            client.close()

    def __enter__(self) -> OffsetStateChecker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_slow_batch_never_lets_offsets_run_ahead(own_redis: OwnRedis,
                                                 own_deployment: Deployment) -> None:
    """Scenario 10: batches made slow (CLIENT PAUSE 3000 WRITE holds their Redis calls) while
    partitions have records waiting. A worker has at most one batch in flight per partition
    (Ingestor.run starts a partition's next batch only when its previous one is done), so at
    most one call per partition is held, no offset moves during the pause, and at no sample
    is a stored offset ahead of (or behind) the state it covers. Afterwards the figures are
    exact."""
    d = own_deployment
    raw = workload(days=20, seed=29)
    produced = produce(d.bootstrap, d.topic, event_messages(raw))
    env = {**ENV, "WINBACK_TICK_MS": "3600000"}  # only batches talk to Redis in this test
    client = quick_client(d.redis_url)
    with (OffsetStateChecker(d) as checker, LagMonitor(d, produced=produced) as monitor,
          contextlib.ExitStack() as stack):
        stack.callback(client.close)
        worker, _ = d.start_worker(**env)
        stack.enter_context(worker)
        wait_for(alive_predicate(worker, lambda: d.applied_offsets() >= produced // 3), 60,
                 "a third of the replay applied")
        client.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        paused = time.monotonic()
        seen: list[int] = []

        def held() -> bool:
            seen.append(blocked_scripts(client))
            return seen[-1] > 0

        wait_for(held, 2.5, "a batch held by the pause")
        first_held = time.monotonic()
        wait_for(lambda: not held(), 10, "the pause lifted")
        d.wait_applied(produced, worker=worker)
        recovery = round(time.monotonic() - paused, 2)
    frozen = {tuple(sorted(offsets.items())) for t, offsets in checker.samples
              if first_held < t < paused + 2.9}
    assert 1 <= max(seen) <= d.partitions, seen  # at most one batch per partition
    assert len(frozen) == 1, frozen  # nothing applied while that batch was held
    assert checker.violations == [], checker.violations[:3]
    assert len(checker.samples) > 50
    report = FaultReport("10 CLIENT PAUSE 3 s (slow batch)", produced, raw, recovery_s=recovery,
                         max_lag=monitor.max_lag,
                         extra={"max_batches_in_flight": max(seen),
                                "invariant_samples": len(checker.samples)})
    assert_figures_exact(d, raw)
    report.finish(d)
