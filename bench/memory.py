"""Redis memory per accepted event and per user, by key family: what the dedup ids, the
user records and the win-back due sets cost (issue 31).

The workload's batches go through the real store on a private redis-server (``store_cpu``'s
replay), with copies of a share of the events delivered again at later positions (across
batches, within a day of their event). Each batch arrives at its latest event's time, so
the dedup generations (``DEDUP_WINDOW_DAYS``, 7 days) follow the workload's days: its 30
days span four or five generations, each with the bucket count its partition chose. Then
``MEMORY USAGE key SAMPLES 0`` is summed per key family, the dedup keys are deleted to see
``used_memory`` drop by as much, and the figures are compared with the batch reference
(``bench/checks.py``'s): a memory figure of a store that got the numbers wrong is
worthless.

    python -m retention_tracker.bench.memory --events 200000 --duplicates 0.05
    python -m retention_tracker.bench.memory --events 200000 --dedup-buckets 1024
    python -m retention_tracker.bench.memory --events 200000 --thresholds 1,2,7,30
    python -m retention_tracker.bench.memory --events 200000 --due-buckets 64
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import random
from typing import Any

import redis
import redis.asyncio as aioredis

from retention_tracker.config.settings import Settings
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.state.queries import cohort_report, summary_report
from retention_tracker.state.schema import SIZES_BUCKETS, SIZES_IDS, Keyspace, key_kind
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.events import SURVEY, validate_event
from retention_tracker.streams.plan import adds_up
from retention_tracker.streams.winback import WinbackRules

from .checks import _FAR_FUTURE_MS, Reference, difference
from .plan_cpu import messages_per_partition
from .store_cpu import PREFIX, replay
from .workload import WorkloadSpec, build_workload


def with_copies(events: list[dict[str, Any]], share: float, within_ms: int, seed: int = 0
                ) -> list[dict[str, Any]]:
    """The events with a copy of ``share`` of them, each delivered again at a random later
    position (so mostly in a later batch) at most ``within_ms`` after the event arrived (a
    position's arrival: the latest event time delivered up to it, as ``store_cpu``'s live
    batches take it): a copy later than the dedup window would be counted again, by the
    contract (METRICS.md §1)."""
    rng = random.Random(seed)
    arrived = list(itertools.accumulate((e["ts"] for e in events), max))
    out = list(events)
    for position in sorted(rng.sample(range(len(events)), int(len(events) * share)),
                           reverse=True):
        last = bisect.bisect_right(arrived, arrived[position] + within_ms)
        out.insert(rng.randint(position + 1, last), events[position])
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


def _buckets(text: str) -> int | None:
    """--dedup-buckets: a count, or None for auto."""
    return None if text == "auto" else int(text)


def sizes(client: redis.Redis, shards: int, generations: range
          ) -> dict[int, list[tuple[int, int, int]]]:
    """Per partition, (generation, buckets, ids kept) of every recorded dedup generation
    among ``generations`` (``Keyspace.dedup_sizes``)."""
    keys = Keyspace(PREFIX)
    found: dict[int, list[tuple[int, int, int]]] = {}
    for shard in range(shards):
        for generation in generations:
            buckets, ids = client.hmget(keys.dedup_sizes(shard, generation), SIZES_BUCKETS,
                                        SIZES_IDS)
            if buckets is not None:
                found.setdefault(shard, []).append((generation, int(buckets), int(ids or 0)))
    return found


async def figures_match(url: str, raw: list[dict[str, Any]]) -> list[str]:
    """Differences between the store's reports and the reference over ``raw`` (none: [])."""
    expected = Reference.of(raw)
    settings = Settings(key_prefix=PREFIX, redis_url=url, clock="event")
    client = aioredis.from_url(url)
    store = RedisStore(client, prefix=PREFIX)
    await store.registry.fix_timezone("default", "UTC")  # as a worker does on an app's first data
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
    parser.add_argument("--dedup-buckets", type=_buckets, default=None,
                        help="DEDUP_BUCKETS: a number, or auto (the default)")
    parser.add_argument("--copies-within-hours", type=float, default=24,
                        help="a copy arrives at most this long after its event")
    parser.add_argument("--due-buckets", type=int, default=4096, help="DUE_BUCKETS")
    args = parser.parse_args()
    workload = build_workload(WorkloadSpec(args.events, args.users or args.events // 10,
                                           args.days))
    raw = with_copies(workload.events, args.duplicates,
                      int(args.copies_within_hours * 3_600_000))
    events = [validate_event(e, _FAR_FUTURE_MS) for e in raw]
    remembered = sum(map(adds_up, events))
    activity = sum(e.type != SURVEY for e in events) - remembered
    thresholds = tuple(int(d) for d in args.thresholds.split(","))
    parts = messages_per_partition(raw, False, 1)
    window_ms = Settings().dedup_window_days * MS_PER_DAY  # the store's default window
    server, url = start_redis()
    with server:
        client = redis.Redis.from_url(url)
        before = int(client.info("memory")["used_memory"])
        asyncio.run(replay(url, server.pid, parts, args.batch, 0, WinbackRules(thresholds),
                           args.dedup_buckets, args.due_buckets, live=True))
        grown = int(client.info("memory")["used_memory"]) - before
        mismatches = asyncio.run(figures_match(url, raw))
        found = families(client)
        due_index = families(client, f"{PREFIX}:*:due:*:index")
        times = [e.ts_ms for e in events]
        generations = sizes(client, len(parts), range(min(times) // window_ms - 1,
                                                      max(times) // window_ms + 2))
        dedup_keys = [k for pattern in ("dd", "ddn")
                      for k in client.scan_iter(match=f"{PREFIX}:*:{pattern}:*", count=1000)]
        held = int(client.info("memory")["used_memory"])
        if dedup_keys:
            client.delete(*dedup_keys)
        dropped = held - int(client.info("memory")["used_memory"])
        client.close()
    users = workload.distinct_users
    empty = {"keys": 0, "bytes": 0, "fields": 0}
    dedup = found.get("dedup_ids", empty)
    dedup_bytes = dedup["bytes"] + found.get("dedup_sizes", empty)["bytes"]
    print(f"{len(raw):,} events delivered ({args.duplicates:.0%} copies, each within "
          f"{args.copies_within_hours:g} h of its event), {users:,} users, {args.days} days, "
          f"{activity:,} activity events, {remembered:,} that add up (purchases, costed "
          f"installs), DEDUP_BUCKETS {args.dedup_buckets or 'auto'}; used_memory grew "
          f"{grown:,} B ({grown / users:.0f} B per user)")
    print(f"  dedup ids: {dedup['fields']:,} kept, {dedup_bytes:,} B with the generations' "
          f"sizes (used_memory {dropped:,} B freed on deleting them): "
          f"{dropped / len(raw):.1f} B per event delivered, "
          f"{dropped / max(remembered, 1):.1f} B per event that adds up, "
          f"{dedup_bytes / max(dedup['fields'], 1):.1f} B per id kept")
    for shard, rows in sorted(generations.items()):
        print(f"  partition {shard}: " + ", ".join(
            f"generation {g} {b} buckets ({n:,} ids, {n / b:.0f} a bucket)"
            for g, b, n in rows))
    for name, family in sorted(found.items()):
        print(f"  {name}: {family['keys']:,} keys, {family['fields']:,} fields, "
              f"{family['bytes']:,} B = {family['bytes'] / users:.1f} B per user")
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
