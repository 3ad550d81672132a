"""Decoded user states a worker wrote or read last, kept between batches.

Loading a user means a Redis lookup and a decode (~15 µs of Python per user, a fifth of a
batch's CPU before this cache). A partition is written only through version-fenced script
calls, and every call stores a token unique to it; while the partition's token is still the
one of this worker's last write, nobody else has written there, so the states this worker
holds for it are the current ones. Any other token (another worker applied after a
rebalance, Redis lost writes, an apply whose reply was lost) drops the partition's entries.
Bounded: least recently used users are forgotten first.

A Redis Cluster failover does not break the argument. A script's writes reach the replica
as one MULTI/EXEC block, in order, so a promoted replica holds the partition as some apply
left it, with that apply's token: if it is this worker's last one, nothing was lost and the
states held are current; if the replica missed later applies, its token is an older one and
the partition's entries are dropped (docs/operations.md, "Redis Cluster").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from retention_tracker.streams.user_state import UserKey, UserState


class StateCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[tuple[int, str, str], UserState] = OrderedDict()
        self._tokens: dict[int, bytes] = {}
        # users a batch found here and users it loaded from Redis, since start: the
        # worker's /metrics (retention_worker_state_cache_lookups), to size the cache by
        self.held = 0
        self.loaded = 0

    def token(self, shard: int) -> bytes | None:
        """The token of this worker's last write to the partition, if the cache holds it."""
        return self._tokens.get(shard)

    def split(self, shard: int, users: Iterable[UserKey], current: bool = True
              ) -> tuple[dict[UserKey, UserState], list[UserKey]]:
        """(states held, users to load) for a partition; every user is to load unless its
        token is ``current``."""
        held: dict[UserKey, UserState] = {}
        missing: list[UserKey] = []
        states = self._states if current else {}
        for user in users:
            key = (shard, *user)
            state = states.get(key)
            if state is None:
                missing.append(user)
            else:
                self._states.move_to_end(key)
                held[user] = state
        self.held += len(held)
        self.loaded += len(missing)
        return held, missing

    def written(self, shard: int, token: bytes, states: Mapping[UserKey, UserState]) -> None:
        """After a successful write with ``token``: these are the partition's current states."""
        if self.capacity <= 0:
            return
        self._tokens[shard] = token
        cached = self._states
        for (app, user_id), state in states.items():
            key = (shard, app, user_id)
            cached[key] = state
            cached.move_to_end(key)
        while len(cached) > self.capacity:
            cached.popitem(last=False)

    def forget(self, shard: int) -> None:
        """Someone else may have written the partition: nothing held for it is trusted."""
        if self._tokens.pop(shard, None) is not None:
            for key in [key for key in self._states if key[0] == shard]:
                del self._states[key]

    def __len__(self) -> int:
        return len(self._states)
