"""What the state records about itself, on a real Redis: the first record of an app's
timezone and of the bucket counts wins, and a worker configured otherwise is told."""

from __future__ import annotations

import pytest

from retention_tracker.state.layout import layout_problem
from retention_tracker.state.registry import TimezoneConflict
from retention_tracker.state.store import RedisStore


async def test_timezone_is_fixed_by_first_data(store: RedisStore) -> None:
    await store.registry.fix_timezone("a", "Europe/Paris")
    await store.registry.fix_timezone("a", "Europe/Paris")
    with pytest.raises(TimezoneConflict, match="Europe/Paris"):
        await store.registry.fix_timezone("a", "UTC")


async def test_bucket_counts_are_fixed_by_the_first_worker(store: RedisStore) -> None:
    first = await store.registry.record_layout()
    assert first == store.layout.counts() and layout_problem(first, store.layout.counts()) is None
    other = RedisStore(store.client, prefix=store.keys.prefix,
                       user_buckets=store.layout.user_buckets,
                       due_buckets=store.layout.due_buckets * 2)
    assert await other.registry.record_layout() == first  # the earlier record wins
    problem = layout_problem(first, other.layout.counts())
    assert problem is not None and "\n" not in problem
    assert f"DUE_BUCKETS={store.layout.due_buckets * 2} but the state was built with " \
        f"{store.layout.due_buckets}" in problem and "USER_BUCKETS" not in problem
    assert layout_problem({}, other.layout.counts()) is None  # a state from before the record
