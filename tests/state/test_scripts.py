"""The Lua scripts called directly on the session's real redis-server: the paths only the
end-to-end tests reached before (delete on zero, stats, due removal, fencing, dedup TTL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from retention_tracker.state.schema import META_TOKEN, META_VERSION, META_WATERMARK, offset_field
from retention_tracker.state.scripts import (
    APPLY_PLAN_LUA,
    LOAD_BATCH_LUA,
    KeyIndex,
    grouped,
    pack,
)


class Scripts:
    """Both scripts on one key prefix; ``apply`` fills in the fields a test leaves out."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.meta = f"{prefix}:{{0}}:meta"
        self._load = client.register_script(LOAD_BATCH_LUA)
        self._apply = client.register_script(APPLY_PLAN_LUA)

    def key(self, name: str) -> str:
        return f"{self.prefix}:{{0}}:{name}"

    async def apply(self, keys: KeyIndex, **fields: Any) -> int:
        blob = {"version": 0, "token": "t1", "watermark": "", "offsets": [], "users": [],
                "counters": [], "dedup_ttl": 60, "dedup": [], "due_add": [], "due_remove": [],
                **fields}
        return int(await self._apply(keys=keys.names(), args=[pack(blob)]))

    async def load(self, keys: KeyIndex, **fields: Any) -> list[Any]:
        blob = {"topics": [], "users": [], "ids": [], **fields}
        return list(await self._load(keys=keys.names(), args=[pack(blob)]))


@pytest.fixture
async def scripts(redis_url: str, unique: str) -> AsyncIterator[Scripts]:
    client = aioredis.from_url(redis_url)
    yield Scripts(client, f"test-{unique}")
    keys = [k async for k in client.scan_iter(match=f"test-{unique}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_counter_back_at_zero_is_deleted_and_so_is_its_empty_hash(
        scripts: Scripts) -> None:
    keys = KeyIndex(scripts.meta)
    all_users, ios = scripts.key("a:app:all:daily"), scripts.key("a:app:platform=ios:daily")
    targets = [keys.of(all_users), keys.of(ios)]
    assert await scripts.apply(keys, counters=[[targets, "dau:1", "2", "dau:2", "1"]])
    assert await scripts.client.hgetall(ios) == {b"dau:1": b"2", b"dau:2": b"1"}
    assert await scripts.apply(keys, version=1, counters=[[targets, "dau:1", "-2"]])
    assert await scripts.client.hgetall(all_users) == {b"dau:2": b"1"}  # HDEL, not a 0
    assert await scripts.apply(keys, version=2, counters=[[targets, "dau:2", "-1"]])
    assert not await scripts.client.exists(all_users, ios)  # the last field took the hash


async def test_stats_add_up_and_vanish_at_zero(scripts: Scripts) -> None:
    keys = KeyIndex(scripts.meta)
    stats = [keys.of(scripts.key("stats"))]
    assert await scripts.apply(keys, counters=[[stats, "acc:a:session", "3", "dup:a", "1"]])
    assert await scripts.apply(keys, version=1, counters=[[stats, "acc:a:session", "2",
                                                           "dup:a", "-1"]])
    assert await scripts.client.hgetall(scripts.key("stats")) == {b"acc:a:session": b"5"}


async def test_a_big_integer_is_added_exactly(scripts: Scripts) -> None:
    """Values go as strings: a Lua number (a double) would round past 2^53."""
    keys = KeyIndex(scripts.meta)
    target = [keys.of(scripts.key("a:app:all:daily"))]
    big = str(2**53 + 1)
    assert await scripts.apply(keys, counters=[[target, "rev:1:USD", big]])
    assert await scripts.client.hget(scripts.key("a:app:all:daily"), "rev:1:USD") == big.encode()


async def test_due_buckets_keep_their_index_at_their_earliest_entry(scripts: Scripts) -> None:
    """Entries added to and removed from two due buckets: the index scores each bucket by
    its earliest entry, and drops it with its last one (Redis deletes the empty bucket)."""
    keys = KeyIndex(scripts.meta)
    b1, b2, index = (keys.of(scripts.key(name)) for name in ("due:next:1", "due:next:2",
                                                             "due:next:index"))
    assert await scripts.apply(keys, due_add=[[b1, index, "1", "100", "a\x00u", "200", "a\x00v"],
                                              [b2, index, "2", "300", "a\x00w"]])
    assert await scripts.client.zrange(scripts.key("due:next:index"), 0, -1,
                                       withscores=True) == [(b"1", 100), (b"2", 300)]
    assert await scripts.apply(keys, version=1, due_remove=[[b1, index, "1", "a\x00u"],
                                                            [b2, index, "2", "a\x00w"]])
    assert await scripts.client.zrange(scripts.key("due:next:1"), 0, -1) == [b"a\x00v"]
    assert not await scripts.client.exists(scripts.key("due:next:2"))
    assert await scripts.client.zrange(scripts.key("due:next:index"), 0, -1,
                                       withscores=True) == [(b"1", 200)]
    assert await scripts.apply(keys, version=2, due_add=[[b1, index, "1", "50", "a\x00v"]],
                               due_remove=[[b1, index, "1", "a\x00u"]])  # moved earlier
    assert await scripts.client.zrange(scripts.key("due:next:index"), 0, -1,
                                       withscores=True) == [(b"1", 50)]


async def test_a_stale_version_is_refused_and_nothing_written(scripts: Scripts) -> None:
    keys = KeyIndex(scripts.meta)
    daily = keys.of(scripts.key("a:app:all:daily"))
    write = {"counters": [[[daily], "dau:1", "1"]], "offsets": ["t", "5"], "watermark": "42"}
    assert await scripts.apply(keys, **write) == 1
    before = await scripts.client.hgetall(scripts.meta)
    assert await scripts.apply(keys, **{**write, "token": "t2"}) == 0  # planned from v0 again
    assert await scripts.client.hgetall(scripts.meta) == before
    assert await scripts.client.hget(scripts.key("a:app:all:daily"), "dau:1") == b"1"
    assert before == {META_VERSION.encode(): b"1", META_TOKEN.encode(): b"t1",
                      META_WATERMARK.encode(): b"42", offset_field("t").encode(): b"5"}


async def test_dedup_buckets_expire_from_their_latest_write(scripts: Scripts) -> None:
    keys = KeyIndex(scripts.meta)
    bucket = keys.of(scripts.key("dd:0:0"))
    assert await scripts.apply(keys, dedup_ttl=600, dedup=[[bucket, "id1", "id2"]])
    assert 0 < await scripts.client.ttl(scripts.key("dd:0:0")) <= 600
    assert await scripts.client.hlen(scripts.key("dd:0:0")) == 2


async def test_load_reads_meta_sizes_users_and_both_dedup_generations(
        scripts: Scripts) -> None:
    """Each generation is looked up in its own buckets (here 4 before, none recorded now),
    and the reply says what was recorded of both."""
    keys = KeyIndex(scripts.meta)
    users = keys.of(scripts.key("u:app:0"))
    current, previous = keys.of(scripts.key("dd:1:0")), keys.of(scripts.key("dd:0:3"))
    sizes = [keys.of(scripts.key("ddn:1")), keys.of(scripts.key("ddn:0"))]
    assert await scripts.apply(keys, offsets=["t", "7"], watermark="9", read_watermark="11",
                               users=[[users, "u1", "record"]], dedup=[[previous, "old"]],
                               dedup_sizes=[sizes[1], "4", "1", "1"])
    reply = await scripts.load(keys, topics=["t", "other"], users=[[users, "u1", "u2"]],
                               sizes=sizes, ids=[[current, "old", "new"]],
                               old_ids=[[previous, "old", "new"]])
    assert reply == [b"1", b"9", b"t1", b"11", b"", b"4", b"1", b"1", b"7", b"", b"record",
                     b"", 0, 0, 1, 0]


async def test_an_unrecorded_generation_before_a_recorded_one_is_not_looked_up(
        scripts: Scripts) -> None:
    """A count recorded without ids from before proves the unrecorded generation before it
    empty (state/dedup.py): no lookup there, however many buckets a legacy read would
    take. Recorded with them ('u'), the generation before is read."""
    keys = KeyIndex(scripts.meta)
    current, previous = keys.of(scripts.key("dd:1:0")), keys.of(scripts.key("dd:0:0"))
    sizes = [keys.of(scripts.key("ddn:1")), keys.of(scripts.key("ddn:0"))]
    # "seen" stands in the previous generation's bucket without a count: a probe, as no
    # worker writes ids without their count
    assert await scripts.apply(keys, dedup=[[previous, "seen"]],
                               dedup_sizes=[sizes[0], "1", "", "0"])
    reply = await scripts.load(keys, sizes=sizes, ids=[[current, "seen"]],
                               old_ids=[[previous, "seen"]])
    assert reply[4:] == [b"1", b"", b"", b"", 0, 0]
    assert await scripts.apply(keys, version=1, dedup_sizes=[sizes[0], "", "1", "0"])
    reply = await scripts.load(keys, sizes=sizes, ids=[[current, "seen"]],
                               old_ids=[[previous, "seen"]])
    assert reply[4:] == [b"1", b"", b"", b"", 0, 1]


async def test_a_generation_count_is_recorded_once_and_its_ids_add_up(
        scripts: Scripts) -> None:
    """The first write records the count (and whether ids from before go uncounted); every
    write adds its ids and keeps the sizes alive as long as the buckets."""
    keys = KeyIndex(scripts.meta)
    sizes, bucket = keys.of(scripts.key("ddn:5")), keys.of(scripts.key("dd:5:0"))
    assert await scripts.apply(keys, dedup_ttl=600, dedup_sizes=[sizes, "16", "", "0"])
    assert await scripts.client.hgetall(scripts.key("ddn:5")) == {b"b": b"16"}
    assert 0 < await scripts.client.ttl(scripts.key("ddn:5")) <= 600
    for version, ids in enumerate((["x", "y"], ["z"]), start=1):
        assert await scripts.apply(keys, version=version, dedup_ttl=900,
                                   dedup=[[bucket, *ids]],
                                   dedup_sizes=[sizes, "", "", str(len(ids))])
    assert await scripts.client.hgetall(scripts.key("ddn:5")) == {b"b": b"16", b"n": b"3"}
    assert 600 < await scripts.client.ttl(scripts.key("ddn:5")) <= 900
    assert await scripts.apply(keys, version=3, dedup_sizes=[keys.of(scripts.key("ddn:6")),
                                                             "1024", "1", "0"])
    assert await scripts.client.hgetall(scripts.key("ddn:6")) == {b"b": b"1024", b"u": b"1"}


def test_grouped_keeps_buckets_in_first_seen_order_and_says_where_each_member_went() -> None:
    members = [(1, ("a",)), (2, ("b",)), (1, ("c",)), (1, ("d",)), (2, ("e",))]
    heads = {1: (10,), 2: (20, 21)}
    assert grouped(members, heads.__getitem__) == (
        [[10, "a", "c", "d"], [20, 21, "b", "e"]], [0, 2, 3, 1, 4])
    assert grouped(members, heads.__getitem__, most=2) == (
        [[10, "a", "c"], [10, "d"], [20, 21, "b", "e"]], [0, 2, 3, 1, 4])
    pairs = [("k", ("u", "r1")), ("k", ("v", "r2"))]
    assert grouped(pairs, lambda _: (3,), most=1) == ([[3, "u", "r1"], [3, "v", "r2"]], [0, 1])


async def test_buckets_larger_than_one_unpack_are_split(scripts: Scripts) -> None:
    """Lua's unpack() takes ~8,000 values: 20,000 ids in one bucket go in several calls."""
    keys = KeyIndex(scripts.meta)
    current, previous = keys.of(scripts.key("dd:1:0")), keys.of(scripts.key("dd:0:0"))
    ids = [f"id{i}" for i in range(20_000)]
    dedup, _ = grouped(((0, (i,)) for i in ids[::2]), lambda _: (current,))
    assert await scripts.apply(keys, dedup=dedup)
    groups, order = grouped(((0, (i,)) for i in ids), lambda _: (current,))
    old_groups, old_order = grouped(((0, (i,)) for i in ids), lambda _: (previous,))
    reply = await scripts.load(keys, ids=groups, old_ids=old_groups)
    assert reply[4:8] == [b"", b"", b"", b""]  # no sizes read
    flags = dict(zip(order, reply[8:8 + len(order)], strict=True))
    assert [flags[n] for n in range(20_000)] == [1 - n % 2 for n in range(20_000)]
    assert not any(reply[8 + len(order):]) and len(reply) == 8 + len(order) + len(old_order)
