"""The state cache's bookkeeping; its use against Redis is in test_store.py."""

from __future__ import annotations

from retention_tracker.state.cache import StateCache
from retention_tracker.streams.user_state import UserState


def state(day: int) -> UserState:
    return UserState(day * 86_400_000, day * 86_400_000, day, frozenset({day}), frozenset())


def test_least_recently_used_users_are_forgotten_first() -> None:
    cache = StateCache(capacity=2)
    cache.written(0, b"t1", {("a", "u1"): state(1), ("a", "u2"): state(2)})
    held, missing = cache.split(0, [("a", "u1")])  # u1 is now the most recently used
    assert held == {("a", "u1"): state(1)} and missing == []
    cache.written(0, b"t2", {("a", "u3"): state(3)})
    held, missing = cache.split(0, [("a", "u1"), ("a", "u2"), ("a", "u3")])
    assert set(held) == {("a", "u1"), ("a", "u3")} and missing == [("a", "u2")]
    assert cache.token(0) == b"t2"


def test_forgetting_a_partition_keeps_the_others() -> None:
    cache = StateCache(capacity=10)
    cache.written(0, b"t0", {("a", "u1"): state(1)})
    cache.written(1, b"t1", {("a", "u1"): state(5)})
    cache.forget(0)
    assert cache.token(0) is None and cache.token(1) == b"t1"
    assert cache.split(1, [("a", "u1")])[0] == {("a", "u1"): state(5)}
    assert len(cache) == 1


def test_capacity_zero_holds_nothing() -> None:
    cache = StateCache(capacity=0)
    cache.written(0, b"t", {("a", "u1"): state(1)})
    assert cache.token(0) is None and len(cache) == 0


def test_lookups_are_counted_held_or_loaded() -> None:
    cache = StateCache(capacity=10)
    cache.written(0, b"t", {("a", "u1"): state(1)})
    cache.split(0, [("a", "u1"), ("a", "u2")])
    assert (cache.held, cache.loaded) == (1, 1)
    held, missing = cache.split(0, [("a", "u1")], current=False)  # another writer since
    assert held == {} and missing == [("a", "u1")]
    assert (cache.held, cache.loaded) == (1, 2)
