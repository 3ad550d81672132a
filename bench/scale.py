"""Millions of tracked users on this machine (issue 31): what Redis holds per user, and
whether a worker's memory and CPU per event stay flat as the users grow.

For each size (the small one first, default 100,000 users, then ``--users``, default
10,000,000), a fresh redis-server gets that many users' history through the worker's own
write path (``store_cpu.apply_messages``: parse, load, plan, ``RedisStore.apply_plan``; not
keys written by hand), with a progress bar, and is saved (``dump.rdb``). Then, in rounds
that alternate the sizes (so each sees the same busy machine), a Redis started from that
saved state gets a live stream of single-event messages, replayed on Apache Kafka by a real
``retention worker``: its CPU per event, its RSS every second (flat?), and Redis'
``used_memory`` per user and ``MEMORY USAGE`` per key kind after the load and after the
stream.

The history of a user: an install and one or two sessions within an hour of it, a purchase
for 3%, and a return 16 to 38 hours later for 40%, all in the 40 hours before the live
stream (so every due entry lies after the stream's hour of event time: no win-back pass
fires on the loaded users and the CPU figures compare the apply path alone). The live
stream is an hour of event time: 85% sessions and 3% purchases of loaded users drawn at
random (at 10 million they miss the worker's state cache, at 100,000 most hit it), 12%
installs of new users. User records are thus of users one or two days old (smaller than
the 30-day users of ``retention bench``). ``USER_BUCKETS`` and ``DEDUP_BUCKETS`` are sized
as docs/architecture.md "Memory" says (users or events per partition / 400), for the load
and the worker alike.

Each live round also records what Redis ran in its window (``redis_counters``: commands
per event and µs per call) and the worker's batches and state-cache lookups (its
/metrics). ``--reuse DIR`` starts a size from an earlier run's saved state (``DIR/redis-<N>/
dump.rdb``, copied and checked, never written) instead of loading it again;
``--state-cache-users 100000 0`` runs every round with the cache on and off;
``--bucket-users N`` gives every size the bucket counts of N users.

    python -m retention_tracker.bench.scale --users 10000000 --json-out scale.json
    python -m retention_tracker.bench.scale --users 1000000 --live-events 300000
    python -m retention_tracker.bench.scale --reuse /earlier/workdir --state-cache-users 100000 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import shutil
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from retention_tracker.agents.rekey import home_partition
from retention_tracker.cli.feeding import produce_events
from retention_tracker.config.settings import Settings, segment_rules
from retention_tracker.devstack.broker import start_broker
from retention_tracker.devstack.processes import ManagedProcess, free_port, wait_for
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.devstack.topics import ensure_topics
from retention_tracker.state.layout import layout_problem
from retention_tracker.state.schema import DUE_NEXT, due_member
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import AppCalendar

from . import redis_counters
from .checks import key_families
from .contenders import Census, Deployment, RunResult, Stack, raw_loop, run_async, worker_replay
from .processes import cpu_seconds
from .redis_counters import RedisCounters
from .runner import code_version, machine, say
from .sampling import WorkerSampler
from .store_cpu import apply_messages
from .workload import MS_PER_DAY, START_MS

HOUR_MS = 3_600_000
#: The live stream starts here; the loaded history lies in the 40 hours before it.
LIVE_START_MS = START_MS + 30 * MS_PER_DAY
PLATFORMS = ("ios", "android", "web")
COUNTRIES = ("US", "DE", "BR", "IN", "JP", "FR", "GB", "ID")
CAMPAIGNS = ("organic", "fb", "google", "tiktok")
#: Records a user hash holds: the saved 10,000,000-user states were built so. Past the
#: tracker's hash-max-listpack-entries (64) the hashes are hashtables (~120 B a record
#: against ~92 B); users per partition / 48 keeps them listpacks, for more buckets and so
#: more Redis calls per event (docs/architecture.md "Memory";
#: BENCHMARKS.md "Why Redis paid 4.8x").
PER_BUCKET = 400


def user_id(number: int) -> str:
    return f"s{number:09d}"


def _attributes(number: int) -> dict[str, str]:
    return {"platform": PLATFORMS[number % 3], "country": COUNTRIES[number % 8],
            "campaign": CAMPAIGNS[number % 4]}


def history(number: int, rng: random.Random) -> list[dict[str, Any]]:
    """One loaded user's events (see the module's docstring)."""
    uid = user_id(number)
    base = {"user_id": uid, "app": "default", **_attributes(number)}
    t0 = LIVE_START_MS - 40 * HOUR_MS + rng.randrange(38 * HOUR_MS)
    times = [("install", t0)] + [("session", t0 + rng.randrange(HOUR_MS))
                                 for _ in range(1 + (rng.random() < 0.5))]
    if rng.random() < 0.03:
        times.append(("purchase", t0 + rng.randrange(HOUR_MS)))
    if rng.random() < 0.4:
        back = t0 + 16 * HOUR_MS + rng.randrange(22 * HOUR_MS)
        if back < LIVE_START_MS:
            times.append(("session", back))
    events = []
    for n, (kind, ts) in enumerate(times):
        event = {**base, "event_id": f"default-{uid}-{n}", "type": kind, "ts": ts}
        if kind == "purchase":
            event.update(amount=4.99, currency="USD")
        events.append(event)
    return events


def live_stream(users: int, count: int, seed: int = 1) -> list[dict[str, Any]]:
    """The live hour (see the module's docstring): the same draws for every size, a
    returning user's number scaled to the ``users`` loaded (uniform over all of them)."""
    rng = random.Random(seed)
    events = []
    fresh = 0
    for n in range(count):
        ts = LIVE_START_MS + n * HOUR_MS // count
        roll = rng.random()
        if roll < 0.12:
            number, kind = 2_000_000_000 + fresh, "install"  # beyond any loaded user
            fresh += 1
        else:
            number = int(rng.random() * users)
            kind = "purchase" if roll < 0.15 else "session"
        uid = user_id(number)
        event = {"user_id": uid, "app": "default", **_attributes(number),
                 "event_id": f"default-{uid}-live{n}", "type": kind, "ts": ts}
        if kind == "purchase":
            event.update(amount=4.99, currency="USD")
        events.append(event)
    return events


def buckets(items: int, partitions: int, per_bucket: int = PER_BUCKET) -> int:
    """Keys per partition for ``items`` fields or members in all, ``per_bucket`` each (at
    least 1024), a power of two."""
    wanted = max(1024, math.ceil(items / partitions / per_bucket))
    return 1 << (wanted - 1).bit_length()


async def bulk_load(url: str, prefix: str, users: int, partitions: int, settings: Settings,
                    batch_events: int = 5000, progress: bool = True, seed: int = 0
                    ) -> dict[str, Any]:
    """Load ``users`` users' history into Redis through the worker's write path, partition
    batches of about ``batch_events``; returns the events, seconds and CPU seconds."""
    client = aioredis.from_url(url)
    store = RedisStore(client, prefix=prefix, user_buckets=settings.user_buckets,
                       dedup_buckets=settings.dedup_buckets,
                       due_buckets=settings.due_buckets,
                       dedup_window_days=settings.dedup_window_days)
    calendar = AppCalendar(settings.timezone)
    rules, winback = segment_rules(settings), settings.winback_rules()
    rng = random.Random(seed)
    pending: list[list[bytes]] = [[] for _ in range(partitions)]
    offsets = [0] * partitions
    events = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    bar = tqdm(total=users, desc=f"loading {users:,} users", unit="user", unit_scale=True,
               disable=not progress, smoothing=0.05)

    async def flush(shard: int) -> None:
        nonlocal events
        messages = pending[shard]
        events += await apply_messages(store, shard, "bulk-load", messages, offsets[shard],
                                       calendar, rules, winback)
        offsets[shard] += len(messages)
        pending[shard] = []

    try:
        await store.registry.record_layout()  # as a worker on a fresh state: a reuse checks it
        # as the worker's first batch
        await store.registry.fix_timezone("default", settings.timezone)
        for shard in range(partitions):
            await store.registry.register_shard(shard)
        for number in range(users):
            shard = home_partition(user_id(number), partitions)
            pending[shard].extend(orjson.dumps(e) for e in history(number, rng))
            if len(pending[shard]) >= batch_events:
                await flush(shard)
            if number % 10_000 == 9_999:
                bar.update(10_000)
        for shard in range(partitions):
            if pending[shard]:
                await flush(shard)
        bar.update(users - bar.n)
    finally:
        bar.close()
        await client.aclose()
    return {"users": users, "events": events, "seconds": round(time.perf_counter() - started, 1),
            "loader_cpu_s": round(time.process_time() - cpu_started, 1)}


def redis_figures(url: str, prefix: str, users: int) -> dict[str, Any]:
    """used_memory (and its peak, the RSS Redis holds) per user, and MEMORY USAGE per key
    kind, in bytes per user."""
    import redis  # the bench's synchronous client, as checks.py uses

    client = redis.Redis.from_url(url)
    try:
        info = client.info("memory")
        _, families = key_families(client, prefix)
    finally:
        client.close()
    used = int(info["used_memory"])
    return {
        "used_memory_bytes": used,
        "used_memory_peak_bytes": int(info["used_memory_peak"]),
        "used_memory_rss_bytes": int(info["used_memory_rss"]),
        "used_memory_per_user": round(used / users, 1),
        "families": {name: {**f, "bytes_per_user": round(f["bytes"] / users, 1)}
                     for name, f in sorted(families.items())},
    }


@dataclass(slots=True)
class LoadedSize:
    """One size, loaded and saved: its live topic and census, the Redis data folder whose
    ``dump.rdb`` holds the users (each live round starts a Redis from it), the settings."""

    users: int
    topic: str
    census: Census
    data_dir: Path
    env: dict[str, str]
    figures: dict[str, Any]
    run_id: str  # of the run that loaded it: its key prefix is ``<run_id>-scale<users>``


#: The worker's group settings in a live round: a partition batch of 20,000 events holds
#: the worker's event loop for seconds on a busy machine, longer than the bench's usual
#: 2 s session, and every rebalance has the fetched batches read and looked up again (up
#: to 2.5 user lookups an event). With 30 s the group still rebalanced 1-3 times a round,
#: cause not found (BENCHMARKS.md "Why Redis paid 4.8x"): the rounds report their lookups.
STEADY_GROUP = {"SESSION_TIMEOUT_MS": "30000", "HEARTBEAT_MS": "3000"}


def bucket_env(users: int, partitions: int, live_events: int) -> dict[str, str]:
    """A size's bucket settings (docs/architecture.md "Memory"), for the load and the
    worker alike: users and events per partition / 400, a due entry per user ~64 a bucket.
    ``users`` may be another size's (``--bucket-users``): the same keys, fewer users."""
    return {"USER_BUCKETS": str(buckets(users + live_events, partitions)),
            "DEDUP_BUCKETS": str(buckets(users * 3 + live_events, partitions)),
            "DUE_BUCKETS": str(buckets(users, partitions, per_bucket=64))}


def live_topic(users: int, stack: Stack, live_events: int) -> tuple[str, Census]:
    """Produce the live stream drawn from ``users`` to its topic; its census."""
    topic = f"{stack.run_id}-live{users}"
    events = live_stream(users, live_events)
    run_async(lambda: ensure_topics(stack.bootstrap, {topic: stack.partitions}))
    say(f"producing the live stream: {len(events):,} events to {topic}")
    run_async(lambda: produce_events(stack.bootstrap, topic, events, progress=stack.progress))
    return topic, run_async(lambda: raw_loop(stack, topic, "live", len(events)))[1]


def load_size(users: int, stack: Stack, live_events: int, bucket_users: int | None = None
              ) -> LoadedSize:
    """Produce the live topic drawn from ``users``, load the users into a fresh Redis and
    save it (BGSAVE: ``dump.rdb``), so every live round starts from the same loaded state."""
    topic, census = live_topic(users, stack, live_events)
    data_dir = stack.workdir / f"redis-{users}"
    env = bucket_env(bucket_users or users, stack.partitions, live_events)
    user_buckets, dedup_buckets, due_buckets = (
        int(env[name]) for name in ("USER_BUCKETS", "DEDUP_BUCKETS", "DUE_BUCKETS"))
    server, url = start_redis(data_dir=data_dir)
    with server:
        deployment = _deployment(stack, url, server.pid, topic, users, env, stack.run_id)
        settings = Settings.from_env(deployment.env())
        redis_cpu = cpu_seconds(server.pid) or 0.0
        say(f"{users:,} users: loading through the apply path ({user_buckets} user buckets, "
            f"{dedup_buckets} dedup and {due_buckets} due buckets a partition)")
        load = asyncio.run(bulk_load(url, deployment.prefix, users, stack.partitions, settings,
                                     progress=stack.progress))
        load["redis_cpu_s"] = round((cpu_seconds(server.pid) or 0.0) - redis_cpu, 1)
        say(f"{users:,} users loaded: {load['events']:,} events in {load['seconds']:,.0f} s")
        after_load = redis_figures(url, deployment.prefix, users)
        say(f"{users:,} users: Redis {after_load['used_memory_bytes'] / 2**20:,.0f} MiB, "
            f"{after_load['used_memory_per_user']:.0f} B a user; saving it")
        client = deployment.stack.redis()
        try:  # in the background: a synchronous SAVE of gigabytes outlasts the socket timeout
            client.bgsave()
            wait_for(lambda: not client.info("persistence")["rdb_bgsave_in_progress"], 1800,
                     f"the snapshot of {users:,} users")
            status = client.info("persistence")["rdb_last_bgsave_status"]
            if status != "ok":
                raise RuntimeError(f"the snapshot of {users:,} users failed ({status}): "
                                   f"{data_dir}/redis.log")
        finally:
            client.close()
    return LoadedSize(users, topic, census, data_dir, env, {
        "users": users, "user_buckets": user_buckets, "dedup_buckets": dedup_buckets,
        "due_buckets": due_buckets, "load": load, "redis_after_load": after_load,
        "rounds": []}, stack.run_id)


class ReuseMismatch(Exception):
    """A saved state that cannot stand for this run's size (its message is one line)."""


def saved_state(source: Path, users: int) -> Path | None:
    """``source``'s saved state of ``users`` users (``redis-<users>/dump.rdb``), if any."""
    dump = source / f"redis-{users}" / "dump.rdb"
    return dump if dump.is_file() else None


def reuse_size(users: int, dump: Path, stack: Stack, live_events: int,
               bucket_users: int | None = None) -> LoadedSize:
    """A size whose users an earlier run loaded and saved: its ``dump.rdb`` copied into this
    run's workdir (the source is never written), checked (one key prefix ``<run>-scale<N>``
    holding this run's partitions and bucket counts) and used as the loaded state; the
    live stream produced again on this run's broker. The load's figures are the earlier
    run's (its result JSON)."""
    data_dir = stack.workdir / f"redis-{users}"
    env = bucket_env(bucket_users or users, stack.partitions, live_events)
    run_id = copy_saved_state(dump, data_dir, users, stack.partitions, env)
    topic, census = live_topic(users, stack, live_events)
    return LoadedSize(users, topic, census, data_dir, env, {
        "users": users, "user_buckets": int(env["USER_BUCKETS"]),
        "dedup_buckets": int(env["DEDUP_BUCKETS"]), "due_buckets": int(env["DUE_BUCKETS"]),
        "reused": str(dump),
        "load": None, "redis_after_load": None, "rounds": []}, run_id)


def copy_saved_state(dump: Path, data_dir: Path, users: int, partitions: int,
                     env: dict[str, str]) -> str:
    """Copy ``dump`` to ``data_dir/dump.rdb`` and check it (``check_saved_state``) in a
    Redis started from the copy; the run id it was loaded under."""
    if data_dir.resolve() == dump.parent.resolve():
        raise ReuseMismatch(f"--reuse {dump.parent.parent} is this run's --workdir: the saved "
                            f"state would be written over; give another --workdir")
    data_dir.mkdir(parents=True, exist_ok=True)
    say(f"{users:,} users: reusing {dump} ({dump.stat().st_size / 2**20:,.0f} MiB), copied")
    shutil.copyfile(dump, data_dir / "dump.rdb")
    server, url = start_redis(data_dir=data_dir, timeout_s=600)  # loading a big dump
    with server:
        return asyncio.run(check_saved_state(url, dump, users, partitions, env))


async def check_saved_state(url: str, dump: Path, users: int, partitions: int,
                            env: dict[str, str], probes: int = 8) -> str:
    """The run id the saved state was loaded under; ReuseMismatch (one line) unless it holds
    one ``*-scale<users>`` prefix, with ``partitions`` partitions and the bucket counts
    ``env`` gives: its ``<prefix>:layout`` where it has one (as a worker checks it), and
    the first ``probes`` users' records and due entries found where those counts put them
    (states saved before the loader recorded the layout have none)."""
    client = aioredis.from_url(url)
    try:
        found = sorted({k.decode().removesuffix(":shards")
                        async for k in client.scan_iter(match=f"*-scale{users}:shards")})
        if len(found) != 1:
            raise ReuseMismatch(f"{dump} holds {len(found)} states of {users:,} users "
                                f"(keys *-scale{users}:shards), not one")
        [prefix] = found
        store = RedisStore(client, prefix=prefix, user_buckets=int(env["USER_BUCKETS"]),
                           due_buckets=int(env["DUE_BUCKETS"]))
        shards = await store.registry.shard_ids()
        stored = {k.decode(): int(v) for k, v in
                  (await client.hgetall(store.keys.layout())).items()}
        problem = layout_problem(stored, store.layout.counts())
        if problem is None and len(shards) != partitions:
            problem = f"it has {len(shards)} partitions, this run {partitions} (--partitions)"
        for number in range(min(probes, users)):
            if problem is not None:
                break
            user = ("default", user_id(number))
            shard = home_partition(user[1], partitions)
            due = store.keys.due_bucket(shard, DUE_NEXT, store.layout.due_bucket(user))
            if await client.hget(store.layout.user_key(shard, *user), user[1]) is None:
                problem = (f"user {user[1]}'s record is not where USER_BUCKETS="
                           f"{store.layout.user_buckets} puts it")
            elif await client.zscore(due, due_member(user)) is None:
                problem = (f"user {user[1]}'s due entry is not where DUE_BUCKETS="
                           f"{store.layout.due_buckets} puts it")
    finally:
        await client.aclose()
    if problem is not None:
        raise ReuseMismatch(f"{dump} does not match this run's {users:,} users: {problem}")
    return prefix.removesuffix(f"-scale{users}")


def _deployment(stack: Stack, url: str, redis_pid: int, topic: str, users: int,
                env: dict[str, str], run_id: str) -> Deployment:
    """The size's deployment on the Redis at ``url`` (one prefix for every round, that of
    the run that loaded it: ``run_id``)."""
    sized = Stack(stack.kafka_url, url, stack.workdir, run_id, stack.partitions,
                  stack.progress, stack.stall_s, {**stack.service_pids, "redis": redis_pid},
                  {**stack.worker_env, **env})
    return Deployment(sized, topic, f"scale{users}")


def live_round(size: LoadedSize, stack: Stack, round_: int, cache_users: int | None = None
               ) -> dict[str, Any]:
    """A Redis started from the size's saved state; a fresh worker (own consumer group;
    ``STATE_CACHE_USERS=cache_users``, None: its default) replays the live topic on it; its
    CPU, RSS over time, what Redis did in the window (``redis_counters``: commands per
    event, key lookups) and the worker's batches and state-cache lookups (its /metrics),
    and Redis' memory after."""
    server, url = start_redis(data_dir=size.data_dir, timeout_s=600)  # loads dump.rdb
    with server:
        cache = "" if cache_users is None else f"-c{cache_users}"
        port = free_port()
        env = {**size.env, "GROUP_ID": f"{stack.run_id}-scale{size.users}-r{round_}{cache}",
               "WEB_PORT": str(port), **STEADY_GROUP}
        if cache_users is not None:
            env["STATE_CACHE_USERS"] = str(cache_users)
        deployment = _deployment(stack, url, server.pid, size.topic, size.users, env,
                                 size.run_id)
        say(f"{size.users:,} users, round {round_}"
            f"{'' if cache_users is None else f', STATE_CACHE_USERS={cache_users}'}: "
            f"the live stream through a worker")
        sampler = WorkerSampler(deployment)
        readings: list[tuple[RedisCounters, dict[str, float]]] = []
        client = deployment.stack.redis()

        def read(process: ManagedProcess) -> None:
            readings.append((RedisCounters.read(client), worker_counters(port)))

        def window_opens(process: ManagedProcess) -> None:
            read(process)
            sampler.start(process.pid)

        try:
            run, used = worker_replay(deployment, "live", size.census,
                                      on_first_progress=window_opens, before_stop=read)
        finally:
            sampler.stop()
            client.close()
        (redis_before, worker_before), (redis_after, worker_after) = readings
        figures = {"state_cache_users": cache_users if cache_users is not None
                   else Settings().state_cache_users,
                   "live": replay_figures(run), "worker_rss": sampler.rss_figures(),
                   "redis_in_window": redis_after.since(redis_before, run.window_events),
                   "worker_in_window": worker_window(worker_before, worker_after,
                                                     run.window_events),
                   "redis_after_live": redis_figures(url, deployment.prefix, size.users),
                   "live_used_memory_growth_bytes": used["after"] - used["before"]}
    say(round_line(figures))
    return figures


def worker_counters(port: int) -> dict[str, float]:
    """The worker's counters from its /metrics (``retention_worker_*`` samples by name and
    labels): batches, records, state-cache lookups. Its event loop answers between two
    batches, seconds apart on a busy machine; none (empty) if it does not in two minutes."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as reply:
            text = reply.read().decode()
    except OSError as exc:
        say(f"the worker's /metrics did not answer ({exc}): no worker counters this round")
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("retention_worker_") and sample.name.endswith("_total"):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def worker_window(before: dict[str, float], after: dict[str, float], events: int
                  ) -> dict[str, Any]:
    """The worker's batches and state-cache lookups in the window: events per batch, and
    the share of the users a batch needed that the cache held (None: no cache)."""
    if not before or not after:  # a reading missed (worker_counters): nothing to say
        return dict.fromkeys(("batches", "events_per_batch", "state_cache_hit_rate",
                              "user_lookups_per_event"))
    delta = {name: value - before.get(name, 0.0) for name, value in after.items()}
    batches = delta.get("retention_worker_batches_total", 0.0)
    hits = delta.get("retention_worker_state_cache_lookups_total{outcome=held}", 0.0)
    misses = delta.get("retention_worker_state_cache_lookups_total{outcome=loaded}", 0.0)
    return {"batches": int(batches),
            "events_per_batch": round(events / batches, 1) if batches else None,
            "state_cache_held": int(hits), "state_cache_loaded": int(misses),
            "state_cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
            # a batch read again (a rebalance, a version conflict) looks its users up again
            "user_lookups_per_event": round((hits + misses) / events, 3) if events else None,
            "counters": {name: value for name, value in delta.items() if value}}


def replay_figures(run: RunResult) -> dict[str, Any]:
    """A replay's figures with its worker's and Redis' CPU microseconds per event."""
    figures = run.as_dict()
    redis_cpu = run.cpu_s.get("redis")
    events = run.window_events
    worker_cpu = run.cpu_s.get("contender")
    figures["worker_cpu_us_per_event"] = round(worker_cpu / events * 1e6, 2) \
        if worker_cpu and events else None
    figures["redis_cpu_us_per_event"] = round(redis_cpu / events * 1e6, 2) \
        if redis_cpu and events else None
    return figures


def run(sizes: list[int], live_events: int, partitions: int, workdir: Path, progress: bool,
        rounds: int = 2, reuse: Path | None = None,
        cache_users: list[int | None] | None = None, bucket_users: int | None = None
        ) -> dict[str, Any]:
    """Every size loaded on one broker (or its saved state in ``reuse`` copied, where it has
    one), then ``rounds`` live replays of each per ``cache_users`` setting, alternating.
    ``bucket_users``: every size's buckets as for that many users (None: its own)."""
    results: dict[str, Any] = {"machine": machine(), "code": code_version(),
                               "live_events": live_events, "partitions": partitions,
                               "bucket_users": bucket_users, "steady_group": STEADY_GROUP,
                               "workdir": str(workdir), "sizes": {}}
    with contextlib.ExitStack() as services:
        broker = services.enter_context(start_broker(log_dir=workdir, quick_start=False))
        results["broker"] = broker.name
        stack = Stack(broker.url, "", workdir, f"s{uuid.uuid4().hex[:6]}", partitions,
                      progress, 300.0, {"broker": broker.processes[0].pid}, broker.worker_env)
        loaded = []
        for users in sizes:
            dump = saved_state(reuse, users) if reuse is not None else None
            if reuse is not None and dump is None:
                say(f"{users:,} users: no saved state in {reuse}; loading them")
            loaded.append(reuse_size(users, dump, stack, live_events, bucket_users)
                          if dump is not None
                          else load_size(users, stack, live_events, bucket_users))
        for size in loaded:
            results["sizes"][str(size.users)] = size.figures
        for round_ in range(rounds):  # sizes alternate: each round sees the same machine
            for cache in cache_users or [None]:
                for size in loaded:
                    size.figures["rounds"].append(live_round(size, stack, round_, cache))
    return results


def render(results: dict[str, Any]) -> str:
    lines = [f"live stream: {results['live_events']:,} single-event messages, "
             f"{results['partitions']} partitions, {results.get('broker')}"]
    for users, size in results["sizes"].items():
        load, after_load = size["load"], size["redis_after_load"]
        if load is None:
            lines.append(f"{int(users):,} users: the saved state {size['reused']} (its load's "
                         f"figures are in that run's result)")
        else:
            lines.append(
                f"{int(users):,} users: loaded {load['events']:,} events in "
                f"{load['seconds']:,.0f} s; Redis {after_load['used_memory_per_user']:.0f} "
                f"B/user (used_memory {after_load['used_memory_bytes'] / 2**20:,.0f} MiB)")
            for name, family in after_load["families"].items():
                lines.append(f"    {name}: {family['keys']:,} keys, "
                             f"{family['bytes_per_user']:.1f} B/user")
        for index, round_ in enumerate(size["rounds"]):
            lines.append(f"  round {index} {round_line(round_)}")
    return "\n".join(lines)


def round_line(round_: dict[str, Any]) -> str:
    """A live round's figures in two lines: the worker's, then what Redis ran."""
    live, rss, worker = round_["live"], round_["worker_rss"], round_["worker_in_window"]
    return (f"(STATE_CACHE_USERS={round_['state_cache_users']}, hit rate "
            f"{worker['state_cache_hit_rate']}, {worker['user_lookups_per_event']} user "
            f"lookups and 1/{worker['events_per_batch']} batch an event): "
            f"{live['events_per_s']:,.0f} ev/s, worker {live['worker_cpu_us_per_event']} µs "
            f"CPU/event (core {live['contender_core_share']}), Redis "
            f"{live['redis_cpu_us_per_event']} µs/event; RSS "
            f"{rss.get('first_bytes', 0) / 2**20:.0f} -> {rss.get('last_bytes', 0) / 2**20:.0f}"
            f" MiB (peak {rss.get('peak_bytes', 0) / 2**20:.0f}, second half "
            f"{rss.get('second_half_growth_bytes', 0) / 2**20:+.1f} MiB)\n"
            f"    {redis_counters.render(round_['redis_in_window'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--compare-users", type=int, default=100_000,
                        help="the small size the per-event figures are compared with")
    parser.add_argument("--live-events", type=int, default=600_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2,
                        help="live replays of each size, alternating, from its saved state")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="an earlier run's --workdir: a size saved there (redis-<N>/"
                             "dump.rdb, same partitions and buckets) is copied, not loaded")
    parser.add_argument("--state-cache-users", type=int, nargs="+", metavar="N",
                        help="the workers' STATE_CACHE_USERS (default: the worker's); several: "
                             "each round runs every one, alternating (0: the cache off)")
    parser.add_argument("--bucket-users", type=int, metavar="N",
                        help="size every size's buckets as for N users (default: each its "
                             "own): the same keys and calls per batch, fewer users in them")
    add_output_flags(parser)
    args = parser.parse_args()
    if args.bucket_users is not None and args.bucket_users < 1:
        parser.error("--bucket-users must be >= 1")
    if min(args.users, args.compare_users, args.live_events, args.partitions, args.rounds) < 1:
        parser.error("--users, --compare-users, --live-events, --partitions and --rounds "
                     "must be >= 1")
    if min(args.state_cache_users or [0]) < 0:
        parser.error("--state-cache-users must be >= 0")
    if args.reuse is not None and not args.reuse.is_dir():
        parser.error(f"--reuse {args.reuse}: no such directory")
    sizes = sorted({args.compare_users, args.users})
    try:
        results = run(sizes, args.live_events, args.partitions, workdir_of(args, "scale"),
                      not args.no_progress, args.rounds, args.reuse, args.state_cache_users,
                      args.bucket_users)
    except ReuseMismatch as exc:
        parser.exit(2, f"scale: {exc}\n")
    write_results(args, results)
    print(render(results))


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """--workdir, --json-out, --no-progress: where the scaled and skewed runs put things."""
    parser.add_argument("--workdir", type=Path, help="logs and data (default: a new one)")
    parser.add_argument("--json-out", type=Path, help="every figure, as JSON")
    parser.add_argument("--no-progress", action="store_true")


def workdir_of(args: argparse.Namespace, name: str) -> Path:
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix=f"retention-{name}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def write_results(args: argparse.Namespace, results: dict[str, Any]) -> None:
    if args.json_out:
        args.json_out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
