"""RedisStore on the session's real redis-server: what its apply call declares."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import AppCalendar
from retention_tracker.streams.events import Event
from retention_tracker.streams.plan import dedup_key, plan_batch

BASE_MS = 1_704_067_200_000
UTC = AppCalendar("UTC")


async def test_every_key_the_apply_script_writes_is_declared_in_keys(
        redis_url: str, unique: str) -> None:
    """The Redis scripting rule Redis Cluster relies on: a script touches only its KEYS
    (the aggregate keys were once built inside the script)."""
    client = aioredis.from_url(redis_url)
    prefix = f"test-{unique}"
    store = RedisStore(client, prefix=prefix, user_buckets=4, dedup_buckets=4)
    declared: set[str] = set()
    script = store._apply_script

    async def spy(keys: list[str], args: list[Any]) -> Any:
        declared.update(keys)
        return await script(keys=keys, args=args)

    store._apply_script = spy  # type: ignore[assignment]
    try:
        events = [Event("a", f"e{n}", "purchase", f"u{n % 3}", BASE_MS + n * 3_600_000,
                        platform="ios" if n % 2 else "android", amount=1.5, currency="USD")
                  for n in range(12)]
        loaded = await store.load_batch(0, ["t"], [(e.app, e.user_id) for e in events],
                                        [dedup_key(e.app, e.event_id) for e in events], BASE_MS)
        plan = plan_batch([(n, -1, e) for n, e in enumerate(events)], loaded.states,
                          loaded.seen_dedup_keys, None, 400, lambda _a: UTC)
        assert await store.apply_plan(0, loaded, {"t": 12}, plan, (2,))
        written = {k.decode() async for k in client.scan_iter(match=f"{prefix}:*")}
        assert any(":a:a:platform=ios:" in k for k in written)  # aggregates of a segment
        assert written <= declared
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
