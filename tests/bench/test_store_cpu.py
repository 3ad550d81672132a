"""The Redis-CPU harness applies every event through the real store (speed is never
asserted): each unique event accepted once, its state equal to the batch reference's."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from retention_tracker.bench.plan_cpu import messages_per_partition
from retention_tracker.bench.store_cpu import PREFIX, replay
from retention_tracker.bench.workload import WorkloadSpec, build_workload
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.state.store import RedisStore

from .copies import remembered_copies


def test_replay_applies_each_unique_event_once_and_counts_redis_work() -> None:
    workload = build_workload(WorkloadSpec(2_000, 200, 10))
    parts = messages_per_partition(workload.events, by_user=False, per_message=1)
    server, url = start_redis()
    with server:
        redis_s, _, events, calls = asyncio.run(replay(url, server.pid, parts, 150, 1000))

        async def accepted() -> int:
            client = aioredis.from_url(url)
            store = RedisStore(client, prefix=PREFIX)
            stats = await store.reads.read_stats()
            await client.aclose()
            return sum(n for name, n in stats.items() if name.startswith("acc:"))

        # every event accepted but the copies of those whose id is remembered
        assert asyncio.run(accepted()) == len(workload.events) - remembered_copies(
            workload.events)
    assert events == len(workload.events)
    assert redis_s > 0 and calls["hincrby"] > 0 and calls["hmget"] > 0


def test_a_live_replay_spans_dedup_generations_and_still_drops_every_copy() -> None:
    """``live``: each batch arrives at its latest event's time, so a 20-day workload
    crosses dedup generations (each recorded with its count), and the copies of
    purchases, all within a generation or the next, are still found."""
    workload = build_workload(WorkloadSpec(2_000, 200, 20))
    parts = messages_per_partition(workload.events, by_user=False, per_message=1)
    server, url = start_redis()
    with server:
        asyncio.run(replay(url, server.pid, parts, 100, 0, live=True))

        async def read() -> tuple[int, int]:
            client = aioredis.from_url(url)
            store = RedisStore(client, prefix=PREFIX)
            stats = await store.reads.read_stats()
            recorded = [k async for k in client.scan_iter(
                match=store.keys.dedup_sizes(0, 0).replace(":0", ":*"))]
            await client.aclose()
            return sum(n for name, n in stats.items() if name.startswith("acc:")), len(recorded)

        accepted, generations = asyncio.run(read())
    assert accepted == len(workload.events) - remembered_copies(workload.events)
    assert generations >= 3  # partition 0's: 20 days over 7-day generations
