"""The scaled run's loader goes through the worker's write path: every loaded user has a
record, every event is accepted once, and the figures equal the batch reference on the same
events. The live stream draws the same way for every size (speed is never asserted)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import redis.asyncio as aioredis

from retention_tracker.bench import reference
from retention_tracker.bench.checks import APP, TIMEZONE
from retention_tracker.bench.scale import LIVE_START_MS, buckets, bulk_load, history, live_stream
from retention_tracker.config.settings import Settings
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.state.queries import summary_report
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.events import validate_event

USERS = 1_500


def test_bulk_load_writes_every_user_through_the_apply_path() -> None:
    settings = Settings(key_prefix="scale")
    rng = random.Random(0)  # the loader's own draws, for the reference
    events = [e for n in range(USERS) for e in history(n, rng)]
    assert all(e["ts"] < LIVE_START_MS for e in events)  # the history ends before the stream
    server, url = start_redis()
    with server:
        loaded = asyncio.run(bulk_load(url, "scale", USERS, 4, settings, batch_events=700,
                                       progress=False))

        async def read() -> tuple[int, int, dict[str, Any]]:
            client = aioredis.from_url(url)
            store = RedisStore(client, prefix="scale")
            try:
                users = [u async for u in store.scan_users(APP)]
                stats = await store.read_stats()
                day = reference.local_day(events[0]["ts"], TIMEZONE)
                summary = (await summary_report(store, settings, APP, day)).as_json()
            finally:
                await client.aclose()
            accepted = sum(n for name, n in stats.items() if name.startswith("acc:"))
            return len(users), accepted, summary

        users, accepted, summary = asyncio.run(read())
    assert loaded["users"] == users == USERS
    assert loaded["events"] == accepted == len(events)
    validated = [validate_event(e, 1 << 62) for e in events]
    day = reference.local_day(events[0]["ts"], TIMEZONE)
    want = reference.summary(validated, APP, day, TIMEZONE)
    assert {k: summary[k] for k in want} == want


def test_the_live_stream_draws_the_same_way_for_every_size() -> None:
    small, large = live_stream(1_000, 2_000), live_stream(1_000_000, 2_000)
    assert [e["type"] for e in small] == [e["type"] for e in large]
    assert [e["ts"] for e in small] == [e["ts"] for e in large]
    returning = [e for e in large if e["type"] != "install"]
    assert max(int(e["user_id"][1:]) for e in returning) >= 1_000  # beyond the small size
    assert all(int(e["user_id"][1:]) < 1_000 for e in small if e["type"] != "install")


def test_buckets_keep_a_hash_inside_a_listpack() -> None:
    assert buckets(100_000, 4) == 1024  # the setting's default below that
    assert buckets(10_000_000, 4) == 8192  # 2.5M a partition / 400 = 6,250 -> 8,192
