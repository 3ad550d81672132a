"""The state tests' store on the session's Redis, with and without the state cache."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from retention_tracker.state.store import RedisStore


@pytest.fixture(params=[0, 1000], ids=["no-cache", "state-cache"])
async def store(redis_url: str, unique: str, request: pytest.FixtureRequest):
    client = aioredis.from_url(redis_url)
    yield RedisStore(client, prefix=f"test-{unique}", user_buckets=8, dedup_buckets=4,
                     state_cache_users=request.param)
    keys = [k async for k in client.scan_iter(match=f"test-{unique}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
