"""The store a deployment's settings describe: the one place a Redis client is made."""

from __future__ import annotations

import redis.asyncio as aioredis

from retention_tracker.config.settings import Settings
from retention_tracker.state.store import RedisStore


def make_store(settings: Settings) -> RedisStore:
    client = aioredis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    return RedisStore(
        client,
        prefix=settings.key_prefix,
        user_buckets=settings.user_buckets,
        dedup_buckets=settings.dedup_buckets,
        dedup_window_days=settings.dedup_window_days,
        state_cache_users=settings.state_cache_users,
    )
