"""A core discrepancy met while building the fault scenarios (not a fault scenario itself),
checked in-process on the session's Redis: ``retention rpr`` used to list only cohorts with a
buyer (it read the ``rpc:<granularity>`` counters, which exist only for buyers) while the
reference lists every non-empty cohort with ``buyers: 0``, so the e2e comparison failed
whenever a week cohort had no purchase -- depending on the workload and on the weekday."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from retention_tracker.bench import reference
from retention_tracker.config.settings import Settings
from retention_tracker.state.queries import repeat_purchase_report
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.events import Event
from retention_tracker.streams.plan import dedup_key, plan_batch

pytestmark = pytest.mark.e2e

JAN_1_2024 = 1_704_067_200_000  # a Monday


@pytest.fixture
async def store(redis_url: str, unique: str) -> AsyncIterator[RedisStore]:
    client = aioredis.from_url(redis_url)
    yield RedisStore(client, prefix=f"rt-{unique}", user_buckets=4, dedup_buckets=4)
    keys = [k async for k in client.scan_iter(match=f"rt-{unique}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_rpr_lists_cohorts_without_buyers(store: RedisStore, unique: str) -> None:
    events = [
        Event("default", "e1", "install", "payer", JAN_1_2024),
        Event("default", "e2", "purchase", "payer", JAN_1_2024 + 1, amount=0.99),
        Event("default", "e3", "install", "free", JAN_1_2024 + 7 * MS_PER_DAY),  # next week
    ]
    await store.registry.register_shard(0)
    await store.registry.fix_timezone("default", "UTC")
    loaded = await store.load_batch(0, ["t"], [(e.app, e.user_id) for e in events],
                                    [dedup_key(e.app, e.event_id) for e in events], JAN_1_2024)
    plan = plan_batch([(i, -1, e) for i, e in enumerate(events)], loaded.states,
                      loaded.seen_dedup_keys, loaded.watermark_ms, 400,
                      {"default": AppCalendar("UTC")})
    assert await store.apply_plan(0, loaded, {"t": len(events)}, plan)
    settings = Settings(key_prefix=f"rt-{unique}", user_buckets=4, dedup_buckets=4)
    doc = (await repeat_purchase_report(store, settings, "default", "week")).as_json()
    expected = reference.repeat_purchase_by_cohort(events, "default", "week", "UTC")
    assert {c.pop("cohort"): c for c in doc["cohorts"]} == expected
