"""Redis's CPU per event alone: the workload's batches loaded, planned and applied through
the real store (``state/store.py``) on a private redis-server, no broker and no worker.

``retention bench`` shows Redis's share of a replay, but on a shared 2-core machine its CPU
is read over a window that other work disturbs. Here the same batches go through
``load_batch`` and ``apply_plan`` one after another, and redis-server's own CPU seconds
(from /proc) are divided by the events: the figure that says how many events/s one Redis
core carries (issue 16's goal: at most 5 µs per event):

    python -m retention_tracker.bench.store_cpu --events 200000 --batch 5000
    python -m retention_tracker.bench.store_cpu --events 200000 --batch 500 --by-user
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis
import redis.asyncio as aioredis

from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import AppCalendar
from retention_tracker.streams.events import parse_message
from retention_tracker.streams.plan import dedup_key_of, plan_batch
from retention_tracker.streams.segments import DEFAULT_RULES, SegmentRules
from retention_tracker.streams.winback import DEFAULT_WINBACK, WinbackRules

from .plan_cpu import NOW_MS, messages_per_partition
from .processes import cpu_seconds
from .workload import WorkloadSpec, build_workload

PREFIX = "storecpu"


async def apply_messages(store: RedisStore, shard: int, topic: str, messages: list[bytes],
                         first_offset: int, calendar: AppCalendar,
                         rules: SegmentRules = DEFAULT_RULES,
                         winback: WinbackRules = DEFAULT_WINBACK, live: bool = False) -> int:
    """One partition batch through the worker's write path: parse, load, plan (event
    clock), apply with the topic's next offset; returns the events parsed. Nothing is
    sent: the plan's win-back messages, if any, are dropped (their due entries are kept).
    ``live``: the batch arrives at its latest event's time (the dedup generations follow
    the events, as a live worker's wall clock does), not after the whole workload."""
    items = [(offset, index, event)
             for offset, message in enumerate(messages, first_offset)
             for index, event in parse_message(message, NOW_MS).events]
    users = [(e.app, e.user_id) for _, _, e in items]
    keys = [dedup_key_of(e) for _, _, e in items]
    now_ms = max((e.ts_ms for _, _, e in items), default=NOW_MS) if live else NOW_MS
    loaded = await store.load_batch(shard, [topic], users, keys, now_ms)
    plan = plan_batch(items, loaded.states, loaded.seen_dedup_keys, loaded.watermark_ms, 400,
                      {app: calendar for app, _ in users}, rules, dedup_keys=keys,
                      winback=winback, event_clock=True)
    applied = await store.apply_plan(shard, loaded, {topic: first_offset + len(messages)},
                                     plan)
    if not applied:
        raise RuntimeError(f"shard {shard}: a version conflict, another writer on the prefix")
    return len(items)


async def replay(url: str, pid: int, parts: list[list[bytes]], batch: int,
                 cache_users: int, winback: WinbackRules = DEFAULT_WINBACK,
                 dedup_buckets: int | None = None, due_buckets: int = 4096, live: bool = False
                 ) -> tuple[float, float, int, dict[str, int]]:
    """Every partition's batches through the store; Redis CPU-s, wall s, events, and the
    commands Redis ran (``INFO commandstats`` calls, scripts' inner calls included).
    ``winback``: the inactivity thresholds whose due entries the plans write;
    ``dedup_buckets``, ``due_buckets``: the store's ``DEDUP_BUCKETS`` (None: auto),
    ``DUE_BUCKETS``; ``live``: ``apply_messages``'s."""
    client = aioredis.from_url(url)
    store = RedisStore(client, prefix=PREFIX, state_cache_users=cache_users,
                       dedup_buckets=dedup_buckets, due_buckets=due_buckets)
    calendar = AppCalendar("UTC")
    await client.config_resetstat()
    before, started, events = cpu_seconds(pid) or 0.0, time.perf_counter(), 0
    for shard, messages in enumerate(parts):
        await store.registry.register_shard(shard)  # as a worker does on assignment
        for start in range(0, len(messages), batch):
            events += await apply_messages(store, shard, "t", messages[start:start + batch],
                                           start, calendar, winback=winback, live=live)
    redis_s = (cpu_seconds(pid) or 0.0) - before
    wall_s = time.perf_counter() - started
    stats = await client.info("commandstats")
    await client.aclose()
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return redis_s, wall_s, events, calls


def configure(url: str, settings: list[str]) -> None:
    """CONFIG SET each NAME=VALUE on the private Redis (its encodings' thresholds, say)."""
    client = redis.Redis.from_url(url)
    try:
        for setting in settings:
            name, _, value = setting.partition("=")
            client.config_set(name, value)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, help="default: events / 10, as the bench")
    parser.add_argument("--batch", type=int, default=5000, help="messages per partition batch")
    parser.add_argument("--by-user", action="store_true", help="arrays of <= 50 user events")
    parser.add_argument("--cache-users", type=int, default=100_000,
                        help="the worker's STATE_CACHE_USERS")
    parser.add_argument("--redis-config", action="append", default=[], metavar="NAME=VALUE",
                        help="a CONFIG SET on the private Redis before the replay, e.g. "
                             "hash-max-listpack-entries=64 (repeatable)")
    args = parser.parse_args()
    workload = build_workload(WorkloadSpec(args.events, args.users or args.events // 10, 30))
    events = workload.by_user if args.by_user else workload.events
    parts = messages_per_partition(events, args.by_user, 50)
    server, url = start_redis()
    with server:
        configure(url, args.redis_config)
        redis_s, wall_s, count, calls = asyncio.run(
            replay(url, server.pid, parts, args.batch, args.cache_users))
        client = redis.Redis.from_url(url)
        try:
            used = int(client.info("memory")["used_memory"])
        finally:
            client.close()
    shape = "by user, <=50 per message" if args.by_user else "single-event messages"
    print(f"{count:,} events ({shape}), {args.batch} messages per partition batch: "
          f"Redis {redis_s:.2f} CPU-s = {redis_s / count * 1e6:.2f} µs per event "
          f"({count / redis_s:,.0f} events per Redis CPU-second); wall {wall_s:.1f} s; "
          f"used_memory {used / 2**20:.1f} MiB")
    inner = {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
             if k not in ("evalsha", "eval", "config|resetstat", "info")}
    print("  Redis commands per event: " + ", ".join(
        f"{name} {n / count:.2f}" for name, n in list(inner.items())[:8]))


if __name__ == "__main__":
    main()
