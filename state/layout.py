"""Where a thing lives in the state: the user's bucket and hash, the due bucket of a user,
and the bucket counts the state is built with. Pure (no I/O): the write path, the
registry, the reads and the due sets all place keys through one ``Layout``, so a record
is read where it was written."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from retention_tracker.config.settings import ConfigError
from retention_tracker.state.schema import Keyspace, due_member
from retention_tracker.streams.user_state import UserKey


@dataclass(frozen=True, slots=True)
class Layout:
    """The keyspace and the bucket counts (``USER_BUCKETS``, ``DUE_BUCKETS``): fixed for the
    state's life (``layout_problem``)."""

    keys: Keyspace
    user_buckets: int = 1024
    due_buckets: int = 4096

    def user_bucket(self, user_id: str) -> int:
        """The user bucket holding ``user_id``'s record (in every partition alike)."""
        return zlib.crc32(user_id.encode()) % self.user_buckets

    def user_key(self, shard: int, app: str, user_id: str) -> str:
        """The hash holding this user's record."""
        return self.keys.users(shard, app, self.user_bucket(user_id))

    def due_bucket(self, user: UserKey) -> int:
        """The due bucket holding ``user``'s entries (the same number in every kind). A
        digest, not a CRC: a CRC of the member is the user id's CRC xor a constant, so its
        low bits would follow any CRC-based partitioning (bench/plan_cpu.py's: with 4
        partitions, each partition's users filled only a quarter of its buckets)."""
        digest = hashlib.blake2b(due_member(user).encode(), digest_size=4).digest()
        return int.from_bytes(digest) % self.due_buckets

    def counts(self) -> dict[str, int]:
        """The bucket counts, by their settings' names (as the state records them)."""
        return {"USER_BUCKETS": self.user_buckets, "DUE_BUCKETS": self.due_buckets}


class LayoutChanged(ConfigError):
    """The state was built with other bucket counts than this worker's settings."""


def layout_problem(stored: Mapping[str, int], configured: Mapping[str, int]) -> str | None:
    """One line when a bucket count differs from the one the state was built with, else
    None. A user's record and due entry sit in the bucket its hash names modulo the count:
    with another count the worker would read a new user where a record exists, and an old
    due entry could never be removed again (it would come due at every pass)."""
    changed = [f"{name}={configured[name]} but the state was built with {stored[name]}"
               for name in sorted(configured)
               if name in stored and stored[name] != configured[name]]
    if not changed:
        return None
    return (f"{'; '.join(changed)}: bucket counts are fixed for the state's life; restore the "
            f"setting, or replay into a fresh KEY_PREFIX (docs/operations.md 'Re-sharding')")
