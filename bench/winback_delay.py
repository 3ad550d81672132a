"""Win-back delay benchmark: from a user's due moment to its message on users.inactive.2d,
with a million tracked users in Redis and a real worker, broker and consumer.

    python -m retention_tracker.bench.winback_delay [--users 1000000] [--due 20000] [--window-s 60]

It writes the users' records and due entries straight into Redis (the state a replay would
leave, made in seconds instead of minutes), spreads ``--due`` of them over the next
``--window-s`` seconds and the rest days ahead, starts a worker, and measures for every
notification the wall time it arrived minus its ``inactive_since``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import orjson
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from tqdm import tqdm

from retention_tracker.devstack.broker import start_broker
from retention_tracker.devstack.processes import free_port, start_process
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.devstack.topics import ensure_topics
from retention_tracker.state.schema import Keyspace, due_member
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar, utc_now_ms
from retention_tracker.streams.user_state import UserState, encode_user

PARTITIONS = 4
THRESHOLD_DAYS = 2


def preload(url: str, users: int, due: int, window_ms: int, start_ms: int) -> None:
    """Records and due entries for ``users`` users over the partitions' shards."""
    client = redis.Redis.from_url(url)
    keys = Keyspace("rt")
    store = RedisStore(aioredis.from_url(url))  # only for its key names
    calendar = AppCalendar("UTC")
    client.hset(keys.apps(), "default", "UTC")
    client.sadd(keys.shards(), *range(PARTITIONS))
    pipe = client.pipeline(transaction=False)
    for n in tqdm(range(users), desc="preload users", unit="user", mininterval=1):
        shard, user = n % PARTITIONS, f"u{n:07d}"
        due_ms = start_ms + (n * window_ms // due if n < due else 10 * MS_PER_DAY + n)
        last = due_ms - THRESHOLD_DAYS * MS_PER_DAY
        first = last - 3 * MS_PER_DAY
        active = frozenset({calendar.day_of(first), calendar.day_of(last)})
        state = UserState(first, last, calendar.day_of(first), active,
                          frozenset({calendar.day_of(first)}), session_days=active)
        pipe.hset(store.layout.user_key(shard, "default", user), user, encode_user(state))
        pipe.zadd(keys.due(shard), {due_member(("default", user)): due_ms})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    print(f"redis used_memory {client.info('memory')['used_memory'] / users:.0f} B/user")
    client.close()


async def collect(bootstrap: str, topic: str, expected: int, timeout_s: float) -> list[float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    delays: list[float] = []
    deadline = time.monotonic() + timeout_s
    bar = tqdm(total=expected, desc="notifications", unit="msg")
    try:
        while len(delays) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = utc_now_ms()
                for record in records:
                    body = orjson.loads(record.value)
                    since = body["inactive_since"]
                    due_ms = int(datetime.fromisoformat(since).timestamp() * 1000)
                    delays.append((now - due_ms) / 1000)
                bar.update(len(records))
    finally:
        bar.close()
        await consumer.stop()
    return delays


def scrape_seconds(url: str, times: int = 20) -> tuple[list[float], bytes]:
    """Wall time of GET /metrics (the collector renders the last snapshot, no Redis I/O)."""
    durations, body = [], b""
    for _ in range(times):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        durations.append(time.perf_counter() - started)
    return sorted(durations), body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=20_000)
    parser.add_argument("--window-s", type=int, default=60)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="winback-bench-"))
    broker = start_broker(log_dir=workdir)
    kafka_url = broker.url
    redis_server, redis_url = start_redis(data_dir=workdir)
    with broker, redis_server:
        bootstrap = kafka_url.removeprefix("kafka://")
        asyncio.run(ensure_topics(bootstrap, {
            "app-events": PARTITIONS, f"users.inactive.{THRESHOLD_DAYS}d": PARTITIONS,
            "users.reactivated": PARTITIONS, "app-events.dlq": PARTITIONS,
        }))
        start_ms = utc_now_ms() + 30_000  # preloading and the group join come first
        preload(redis_url, args.users, args.due, args.window_s * 1000, start_ms)
        env = {**os.environ, "KAFKA_BROKER": kafka_url, "REDIS_URL": redis_url,
               "WEB_PORT": str(free_port()), "INACTIVITY_THRESHOLDS": str(THRESHOLD_DAYS),
               **broker.worker_env}
        worker = start_process([sys.executable, "-m", "retention_tracker.cli", "worker"],
                               "worker", env, workdir / "worker.log")
        with worker:
            delays = asyncio.run(collect(bootstrap, f"users.inactive.{THRESHOLD_DAYS}d",
                                         args.due, args.window_s + 120))
            scrape = scrape_seconds(f"http://127.0.0.1:{env['WEB_PORT']}/metrics")
            print(f"/metrics with {args.users} tracked users: {len(scrape[1])} bytes, "
                  f"scrape p50 {scrape[0][len(scrape[0]) // 2] * 1e3:.1f} ms, "
                  f"max {scrape[0][-1] * 1e3:.1f} ms over {len(scrape[0])} scrapes")
    delays.sort()
    if len(delays) < args.due:
        print(f"only {len(delays)} of {args.due} notifications arrived; see {workdir}")
        return 1
    p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99)]
    print(f"{args.users} tracked users, {len(delays)} notifications due over "
          f"{args.window_s} s: delay due->message p50 {p50:.3f} s, p99 {p99:.3f} s, "
          f"max {delays[-1]:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
