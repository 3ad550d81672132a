"""Redis memory per accepted event and per user, by key family: what the dedup ids, the
user records and the win-back due sets cost (issue 31).

The workload's batches go through the real store on a private redis-server (``store_cpu``'s
replay), with copies of a share of the events delivered again at later positions (across
batches). Then ``MEMORY USAGE key SAMPLES 0`` is summed per key family, the dedup keys are
deleted to see ``used_memory`` drop by as much, and the figures are compared with the batch
reference (``bench/checks.py``'s): a memory figure of a store that got the numbers wrong
is worthless.

    python -m retention_tracker.bench.memory --events 200000 --duplicates 0.05
    python -m retention_tracker.bench.memory --events 200000 --thresholds 1,2,7,30
    python -m retention_tracker.bench.memory --events 200000 --due-buckets 64
"""

from __future__ import annotations

import argparse
import asyncio
import random
from typing import Any

import redis
import redis.asyncio as aioredis

from retention_tracker.config.settings import Settings
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.state.queries import cohort_report, summary_report
from retention_tracker.state.schema import key_kind
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.events import SURVEY, validate_event
from retention_tracker.streams.plan import adds_up
from retention_tracker.streams.winback import WinbackRules

from .checks import _FAR_FUTURE_MS, Reference, difference
from .plan_cpu import messages_per_partition
from .store_cpu import PREFIX, replay
from .workload import WorkloadSpec, build_workload


def with_copies(events: list[dict[str, Any]], share: float, seed: int = 0
                ) -> list[dict[str, Any]]:
    """The events with a copy of ``share`` of them, each delivered again at a random later
    position (so mostly in a later batch)."""
    rng = random.Random(seed)
    out = list(events)
    for position in sorted(rng.sample(range(len(events)), int(len(events) * share)),
                           reverse=True):
        out.insert(rng.randint(position + 1, len(events)), events[position])
    return out


def families(client: redis.Redis, match: str = f"{PREFIX}:*") -> dict[str, dict[str, int]]:
    """Bytes (``MEMORY USAGE``, every field), keys and fields per key family, of the keys
    that ``match``."""
    keys = [k.decode() for k in client.scan_iter(match=match, count=1000)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
        pipe.type(key)
    replies = pipe.execute()
    found: dict[str, dict[str, int]] = {}
    for key, size, kind in zip(keys, replies[::2], replies[1::2], strict=True):
        family = found.setdefault(key_kind(key, PREFIX), {"keys": 0, "bytes": 0, "fields": 0})
        family["keys"] += 1
        family["bytes"] += int(size or 0)
        family["fields"] += int({b"hash": client.hlen, b"zset": client.zcard}.get(
            kind, lambda _: 0)(key))
    return found


async def figures_match(url: str, raw: list[dict[str, Any]]) -> list[str]:
    """Differences between the store's reports and the reference over ``raw`` (none: [])."""
    expected = Reference.of(raw)
    settings = Settings(key_prefix=PREFIX, redis_url=url, clock="event")
    client = aioredis.from_url(url)
    store = RedisStore(client, prefix=PREFIX)
    await store.fix_timezone("default", "UTC")  # as a worker does on an app's first data
    found = []
    for (g, kind), rows in expected.triangles.items():
        got = (await cohort_report(store, settings, "default", g, kind)).as_json()["cohorts"]
        found.append(difference(got, rows, f"{g}/{kind}: "))
    for day, doc in expected.summaries.items():
        got = (await summary_report(store, settings, "default", day)).as_json()
        found.append(difference(got, doc, f"summary {day}: "))
    await client.aclose()
    return [f for f in found if f]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, help="default: events / 10, as the bench")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--batch", type=int, default=5000, help="messages per partition batch")
    parser.add_argument("--duplicates", type=float, default=0.05,
                        help="share of the events delivered twice")
    parser.add_argument("--thresholds", default="2", help="inactivity thresholds, days")
    parser.add_argument("--dedup-buckets", type=int, default=1024, help="DEDUP_BUCKETS")
    parser.add_argument("--due-buckets", type=int, default=4096, help="DUE_BUCKETS")
    args = parser.parse_args()
    workload = build_workload(WorkloadSpec(args.events, args.users or args.events // 10,
                                           args.days))
    raw = with_copies(workload.events, args.duplicates)
    events = [validate_event(e, _FAR_FUTURE_MS) for e in raw]
    remembered = sum(map(adds_up, events))
    activity = sum(e.type != SURVEY for e in events) - remembered
    thresholds = tuple(int(d) for d in args.thresholds.split(","))
    parts = messages_per_partition(raw, False, 1)
    server, url = start_redis()
    with server:
        client = redis.Redis.from_url(url)
        before = int(client.info("memory")["used_memory"])
        asyncio.run(replay(url, server.pid, parts, args.batch, 0, WinbackRules(thresholds),
                           args.dedup_buckets, args.due_buckets))
        grown = int(client.info("memory")["used_memory"]) - before
        mismatches = asyncio.run(figures_match(url, raw))
        found = families(client)
        due_index = families(client, f"{PREFIX}:*:due:*:index")
        dedup_keys = [k for k in client.scan_iter(match=f"{PREFIX}:*:dd:*", count=1000)]
        held = int(client.info("memory")["used_memory"])
        if dedup_keys:
            client.delete(*dedup_keys)
        dropped = held - int(client.info("memory")["used_memory"])
        client.close()
    users = workload.distinct_users
    dedup = found.get("dedup_ids", {"bytes": 0, "fields": 0})
    print(f"{len(raw):,} events delivered ({args.duplicates:.0%} copies), {users:,} users, "
          f"{activity:,} activity events, {remembered:,} that add up (purchases, costed "
          f"installs), DEDUP_BUCKETS {args.dedup_buckets}; used_memory grew {grown:,} B "
          f"({grown / users:.0f} B per user)")
    print(f"  dedup ids: {dedup['fields']:,} kept, {dedup['bytes']:,} B (used_memory "
          f"{dropped:,} B freed on deleting them): {dropped / len(raw):.1f} B per event "
          f"delivered, {dropped / max(remembered, 1):.1f} B per event that adds up")
    for name, family in sorted(found.items()):
        print(f"  {name}: {family['keys']:,} keys, {family['fields']:,} fields, "
              f"{family['bytes']:,} B = {family['bytes'] / users:.1f} B per user")
    empty = {"keys": 0, "bytes": 0, "fields": 0}
    due, index = found.get("due", empty), due_index.get("due", empty)
    entries = due["fields"] - index["fields"]
    print(f"  due sets, DUE_BUCKETS {args.due_buckets}: {due['bytes'] / users:.1f} B per user "
          f"({len(thresholds)} thresholds), {due['bytes'] / max(entries, 1):.1f} B per entry "
          f"({entries:,} entries in {due['keys'] - index['keys']:,} buckets, "
          f"{entries / max(due['keys'] - index['keys'], 1):.0f} a bucket; the indexes "
          f"{index['bytes']:,} B)")
    print("  figures equal the reference" if not mismatches
          else "  FIGURES DIFFER: " + "; ".join(mismatches))
    if mismatches:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
