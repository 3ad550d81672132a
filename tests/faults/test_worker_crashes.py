"""Workers die: kill -9 at random moments of one replay, and a rebalance then a kill -9 with
two workers. Offsets live in Redis with the state, so nothing is lost or counted twice."""

from __future__ import annotations

import contextlib
import os
import random
import time

import pytest

from retention_tracker.devstack.processes import wait_for
from tests.e2e.harness import Deployment, event_messages, produce

from .support import (
    FAST_GROUP,
    FaultReport,
    LagMonitor,
    alive_predicate,
    assert_figures_exact,
    metric,
    workload,
)

pytestmark = pytest.mark.e2e


def test_kill_9_of_the_worker_four_times_during_one_replay(deployment: Deployment) -> None:
    """Scenario 1: four SIGKILLs at random points of one replay (many small batches), a
    restart after each; the fifth life finishes. The random points come from a printed seed
    (FAULT_SEED reproduces a run)."""
    seed = int(os.environ.get("FAULT_SEED", random.randrange(1 << 30)))
    print(f"FAULT_SEED={seed}")
    rng = random.Random(seed)
    raw = workload(days=20, seed=7)
    messages = event_messages(raw)
    total = produce(deployment.bootstrap, deployment.topic, messages)
    # one kill in each quarter of 10%..80% of the replay, so every life applies something
    # and the last kill still comes before the end
    targets = [int(total * (0.1 + 0.175 * (i + rng.random()))) for i in range(4)]
    env = {**FAST_GROUP, "BATCH_MAX_RECORDS": "10"}
    killed_at: list[int] = []
    with LagMonitor(deployment, produced=total) as monitor, contextlib.ExitStack() as stack:
        for life, target in enumerate(targets):
            worker, _ = deployment.start_worker(index=life, **env)
            stack.enter_context(worker)
            wait_for(alive_predicate(worker, lambda t=target: deployment.applied_offsets() >= t),
                     60, f"{target} records applied by life {life}")
            worker.kill()
            killed_at.append(deployment.applied_offsets())
        assert killed_at == sorted(killed_at) and killed_at[-1] < total, killed_at
        restarted = time.monotonic()
        worker, _ = deployment.start_worker(index=len(targets), **env)
        stack.enter_context(worker)
        deployment.wait_applied(total, worker=worker)
        recovery = round(time.monotonic() - restarted, 2)
    report = FaultReport("1 worker kill -9 x4", total, raw, recovery_s=recovery,
                         max_lag=monitor.max_lag,
                         extra={"seed": seed, "applied_at_kills": killed_at})
    assert_figures_exact(deployment, raw)
    report.finish(deployment)


def test_second_worker_joins_then_first_is_killed(deployment: Deployment) -> None:
    """Scenario 5: a worker replays, a second joins mid-stream (rebalance: partitions move,
    a stale owner's batch is fenced by the partition version), then the first is SIGKILLed
    and its partitions come back to the second after about twice the session timeout."""
    raw = workload(days=20, seed=13)
    messages = event_messages(raw)
    parts = [messages[: len(messages) * 4 // 10], messages[len(messages) * 4 // 10:
             len(messages) * 7 // 10], messages[len(messages) * 7 // 10:]]
    env = {**FAST_GROUP, "BATCH_MAX_RECORDS": "20"}
    produced = produce(deployment.bootstrap, deployment.topic, parts[0])
    with LagMonitor(deployment, produced=produced) as monitor, contextlib.ExitStack() as stack:
        first, port0 = deployment.start_worker(index=0, **env)
        stack.enter_context(first)
        wait_for(alive_predicate(first, lambda: deployment.applied_offsets() >= produced // 2),
                 60, "the first worker halfway through the first part")
        second, port1 = deployment.start_worker(index=1, **env)
        stack.enter_context(second)
        produced += produce(deployment.bootstrap, deployment.topic, parts[1])
        monitor.produced = produced
        joined = time.monotonic()

        def shared() -> bool:
            mine = metric(port0, "retention_worker_assigned_partitions")
            theirs = metric(port1, "retention_worker_assigned_partitions")
            return bool(mine and theirs and mine + theirs == deployment.consumed_partitions)

        wait_for(alive_predicate(second, alive_predicate(first, shared)), 60,
                 "the partitions shared by two workers")
        rebalance_s = round(time.monotonic() - joined, 2)
        first.kill()
        killed = time.monotonic()
        at_kill = deployment.applied_offsets()
        produced += produce(deployment.bootstrap, deployment.topic, parts[2])
        monitor.produced = produced
        deployment.wait_applied(produced, worker=second)
        recovery = round(time.monotonic() - killed, 2)
        assert metric(port1, "retention_worker_assigned_partitions") == (
            deployment.consumed_partitions)
        conflicts = metric(port1, "retention_worker_version_conflicts_total")
    assert at_kill < produced
    report = FaultReport(
        "5 second worker joins, first kill -9", produced, raw, recovery_s=recovery,
        max_lag=monitor.max_lag,
        extra={"rebalance_s": rebalance_s, "applied_at_kill": at_kill,
               "version_conflicts_second_worker": conflicts},
    )
    assert_figures_exact(deployment, raw)
    report.finish(deployment)
