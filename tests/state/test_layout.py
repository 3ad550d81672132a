"""Where a thing lives (no Redis): a user's hash and due bucket, and the bucket counts by
their settings' names. The stored layout against a worker's is in test_registry.py."""

from __future__ import annotations

import zlib

from retention_tracker.state.layout import Layout
from retention_tracker.state.schema import Keyspace

LAYOUT = Layout(Keyspace("rt"), user_buckets=8, due_buckets=64)


def test_a_users_record_is_in_the_same_bucket_in_every_partition_and_app() -> None:
    bucket = zlib.crc32(b"u1") % 8
    assert LAYOUT.user_key(3, "a", "u1") == f"rt:{{3}}:u:a:{bucket}"
    assert LAYOUT.user_key(0, "b", "u1") == f"rt:{{0}}:u:b:{bucket}"
    assert LAYOUT.counts() == {"USER_BUCKETS": 8, "DUE_BUCKETS": 64}


def test_one_crc_partitions_users_fill_every_due_bucket() -> None:
    """The due bucket is a digest, not a CRC: 1,000 users of one partition of four (by
    their id's CRC) reach every one of 64 due buckets (a CRC of the member reaches 16)."""
    ids = (f"u{n:07d}" for n in range(20_000))
    users = [("a", user_id) for user_id in ids if zlib.crc32(user_id.encode()) % 4 == 0]
    assert {LAYOUT.due_bucket(user) for user in users[:1000]} == set(range(64))


def test_due_buckets_stay_where_deployed_states_have_them() -> None:
    """A state's due entries are found by their bucket: the digest is part of the stored
    format (a change would strand every entry written before)."""
    deployed = Layout(Keyspace("rt"), due_buckets=4096)
    assert [deployed.due_bucket(("a", "u1")), deployed.due_bucket(("default", "42"))] == [
        1978, 2038]
