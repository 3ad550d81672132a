"""The scaled run's loader goes through the worker's write path: every loaded user has a
record, every event is accepted once, and the figures equal the batch reference on the same
events. The live stream draws the same way for every size (speed is never asserted)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from retention_tracker.bench import reference
from retention_tracker.bench.checks import APP, TIMEZONE
from retention_tracker.bench.scale import (
    LIVE_START_MS,
    ReuseMismatch,
    bucket_env,
    buckets,
    bulk_load,
    copy_saved_state,
    history,
    live_stream,
    saved_state,
)
from retention_tracker.config.settings import Settings
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.state.queries import summary_report
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import MS_PER_DAY
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
        users, accepted, summary = asyncio.run(read(url, settings, events[0]["ts"]))
    assert loaded["users"] == users == USERS
    assert loaded["events"] == accepted == len(events)
    validated = [validate_event(e, 1 << 62) for e in events]
    day = reference.local_day(events[0]["ts"], TIMEZONE)
    want = reference.summary(validated, APP, day, TIMEZONE)
    assert {k: summary[k] for k in want} == want


async def read(url: str, settings: Settings, ts: int) -> tuple[int, int, dict[str, Any]]:
    """The users with a record, the events accepted, and the summary of ``ts``'s day."""
    client = aioredis.from_url(url)
    store = RedisStore(client, prefix=settings.key_prefix)
    try:
        users = [u async for u in store.reads.scan_users(APP)]
        stats = await store.reads.read_stats()
        day = reference.local_day(ts, TIMEZONE)
        summary = (await summary_report(store, settings, APP, day)).as_json()
    finally:
        await client.aclose()
    accepted = sum(n for name, n in stats.items() if name.startswith("acc:"))
    return len(users), accepted, summary


def test_a_saved_state_is_copied_checked_and_reads_as_loaded(tmp_path: Path) -> None:
    """--reuse: the earlier run's dump is copied (never written), found to hold this size's
    partitions and buckets, and reads as the loaded state did; a mismatch is one line."""
    users, partitions = 300, 4
    env = bucket_env(users, partitions, 1_000)
    # the event clock: "now" (a report's as_of) is the state's, not the wall clock's
    settings = Settings.from_env({**env, "KEY_PREFIX": f"sold-scale{users}", "CLOCK": "event"})
    earlier = tmp_path / "earlier" / f"redis-{users}"
    server, url = start_redis(data_dir=earlier)
    with server:
        asyncio.run(bulk_load(url, settings.key_prefix, users, partitions, settings,
                              progress=False))
        as_loaded = asyncio.run(read(url, settings, LIVE_START_MS - MS_PER_DAY))
        client = redis.Redis.from_url(url)
        client.save()
        client.close()
    dump = saved_state(tmp_path / "earlier", users)
    assert dump == earlier / "dump.rdb" and saved_state(tmp_path / "earlier", 301) is None
    saved = dump.read_bytes()

    now = tmp_path / "now" / f"redis-{users}"
    assert copy_saved_state(dump, now, users, partitions, env) == "sold"
    server, url = start_redis(data_dir=now)
    with server:
        assert asyncio.run(read(url, settings, LIVE_START_MS - MS_PER_DAY)) == as_loaded
        assert as_loaded[0] == users
        client = redis.Redis.from_url(url)
        client.delete(f"{settings.key_prefix}:layout")  # as saved before the loader kept it
        client.save()
        client.close()
    assert dump.read_bytes() == saved  # the earlier run's state is never written

    def mismatch(source: Path, **changed: int) -> str:
        with pytest.raises(ReuseMismatch) as raised:
            copy_saved_state(source, tmp_path / "other" / f"redis-{users}", users,
                             changed.pop("partitions", partitions),
                             {**env, **{k: str(v) for k, v in changed.items()}})
        return str(raised.value)

    assert "DUE_BUCKETS=2048 but the state was built with 1024" in mismatch(dump, DUE_BUCKETS=2048)
    assert "it has 4 partitions, this run 2" in mismatch(dump, partitions=2)
    without_layout = now / "dump.rdb"
    assert "user s000000000's record is not where USER_BUCKETS=2048 puts it" in mismatch(
        without_layout, USER_BUCKETS=2048)
    assert "user s000000000's due entry is not where DUE_BUCKETS=2048 puts it" in mismatch(
        without_layout, DUE_BUCKETS=2048)
    with pytest.raises(ReuseMismatch, match="is this run's --workdir"):
        copy_saved_state(dump, earlier, users, partitions, env)


def test_the_live_stream_draws_the_same_way_for_every_size() -> None:
    small, large = live_stream(1_000, 2_000), live_stream(1_000_000, 2_000)
    assert [e["type"] for e in small] == [e["type"] for e in large]
    assert [e["ts"] for e in small] == [e["ts"] for e in large]
    returning = [e for e in large if e["type"] != "install"]
    assert max(int(e["user_id"][1:]) for e in returning) >= 1_000  # beyond the small size
    assert all(int(e["user_id"][1:]) < 1_000 for e in small if e["type"] != "install")


def test_buckets_follow_the_users_per_partition() -> None:
    assert buckets(100_000, 4) == 1024  # the setting's default below that
    assert buckets(10_000_000, 4) == 8192  # 2.5M a partition / 400 = 6,250 -> 8,192
