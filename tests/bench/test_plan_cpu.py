"""The CPU harness cuts the workload the way the worker sees it (speed is never asserted)."""

from __future__ import annotations

from collections import Counter

import orjson

from retention_tracker.bench.plan_cpu import PARTITIONS, messages_per_partition, replay
from retention_tracker.bench.workload import WorkloadSpec, build_workload

from .copies import remembered_copies


def test_user_arrays_keep_every_event_in_order_one_user_each() -> None:
    workload = build_workload(WorkloadSpec(3_000, 300, 10))
    parts = messages_per_partition(workload.by_user, by_user=True, per_message=50)
    assert len(parts) == PARTITIONS
    arrays = [orjson.loads(m) for part in parts for m in part]
    assert all(1 <= len(a) <= 50 and len({e["user_id"] for e in a}) == 1 for a in arrays)
    flattened = sorted((e["user_id"], e["event_id"]) for a in arrays for e in a)
    assert flattened == sorted((e["user_id"], e["event_id"]) for e in workload.by_user)


def test_replay_times_every_phase() -> None:
    workload = build_workload(WorkloadSpec(2_000, 200, 10))
    seconds = replay(messages_per_partition(workload.events, by_user=False, per_message=1), 100)
    assert set(seconds) == {"parse", "decode", "plan", "encode"}
    assert seconds["plan"] > 0


def test_replay_times_every_phase_of_planning_every_event() -> None:
    workload = build_workload(WorkloadSpec(2_000, 200, 10))
    stats: Counter[str] = Counter()
    seconds = replay(messages_per_partition(workload.events, by_user=False, per_message=1), 100,
                     stats)
    assert set(seconds) == {"parse", "decode", "plan", "encode"}
    assert all(value >= 0 for value in seconds.values())
    accepted = sum(n for name, n in stats.items() if name.startswith("acc:"))
    duplicates = sum(n for name, n in stats.items() if name.startswith("dup:"))
    # every event planned once: accepted, or a copy of one whose id is remembered
    assert duplicates == remembered_copies(workload.events) > 0
    assert accepted + duplicates == len(workload.events)

