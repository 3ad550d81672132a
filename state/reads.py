"""The reads behind reports: an app's aggregate families and chosen fields, its user
records, the pipeline's stats and each partition's progress, each summed or gathered over
every partition the registry lists. Reads only: nothing here writes, and nothing here
turns what it reads into figures (``state/queries.py`` and ``streams/figures.py`` do)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from retention_tracker.state.cluster import Read, Transport
from retention_tracker.state.layout import Layout
from retention_tracker.state.registry import Registry
from retention_tracker.state.schema import META_WATERMARK, offset_field, text
from retention_tracker.streams import engine
from retention_tracker.streams.user_state import UserState


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """How far one partition's state goes: its event-time watermark and, per topic, the
    next offset to apply."""

    watermark_ms: int | None
    offsets: dict[str, int]


def summed(parts: Iterable[Iterable[tuple[bytes | str, bytes | str]]]) -> Counter[str]:
    """Counter fields read from every partition's copy of a hash, summed field by field:
    each partition counts its own users, a figure is the sum over partitions."""
    total: Counter[str] = Counter()
    for part in parts:
        for field, value in part:
            total[text(field)] += int(value)
    return total


class Reads:
    """The nine reads, through one transport (in a cluster, each fanned out to the masters
    at once), over the partitions ``registry`` lists, at the keys ``layout`` names."""

    def __init__(self, transport: Transport, layout: Layout, registry: Registry) -> None:
        self.client = transport.client
        self.transport = transport
        self.layout = layout
        self.keys = layout.keys
        self.registry = registry

    async def read_user(self, app: str, user_id: str) -> UserState | None:
        """One user's record, from whichever partition holds it (one read per partition,
        sent at once)."""
        bucket = self.layout.user_bucket(user_id)
        for raw in await self.transport.fan_out([
                Read("hget", self.keys.users(shard, app, bucket), (user_id,))
                for shard in await self.registry.shard_ids()]):
            if raw:
                return engine.codec().decode_user(raw)
        return None

    async def read_family(self, app: str, family: str, segment: str = "all") -> Counter[str]:
        """One aggregate family of an app's segment, summed over every partition."""
        return summed(part.items() for part in await self.transport.fan_out([
            Read("hgetall", self.keys.aggregate(shard, app, segment, family))
            for shard in await self.registry.shard_ids()]))

    async def read_fields(
        self, app: str, family: str, fields: list[str], segment: str = "all"
    ) -> Counter[str]:
        """Chosen fields of one aggregate family, summed over every partition (for the
        metrics snapshot, which must not read whole families on every refresh)."""
        if not fields:
            return Counter()
        return summed(
            ((name, value) for name, value in zip(fields, values, strict=True)
             if value is not None)
            for values in await self.transport.fan_out([
                Read("hmget", self.keys.aggregate(shard, app, segment, family), (fields,))
                for shard in await self.registry.shard_ids()]))

    async def read_matching(self, app: str, family: str, match: str,
                            segment: str = "all") -> Counter[str]:
        """Fields of a family matching a glob (e.g. today's revenue in every currency): the
        partitions scanned concurrently (in a cluster, on their masters at once)."""

        async def scan(shard: int) -> list[tuple[bytes, bytes]]:
            key = self.keys.aggregate(shard, app, segment, family)
            return [item async for item in self.client.hscan_iter(key, match=match)]

        return summed(await asyncio.gather(*map(scan, await self.registry.shard_ids())))

    async def scan_users(self, app: str, batch: int = 256) -> AsyncIterator[UserState]:
        """Every user record of an app, ``batch`` buckets per pipeline (for queries no counter
        answers); in a cluster each pipeline is split by master and sent to all at once."""
        names = [
            self.keys.users(shard, app, bucket)
            for shard in await self.registry.shard_ids()
            for bucket in range(self.layout.user_buckets)
        ]
        for start in range(0, len(names), batch):
            chunk = names[start : start + batch]
            for values in await self.transport.fan_out([Read("hvals", name) for name in chunk]):
                for raw in values:
                    yield engine.codec().decode_user(raw)

    async def read_stats(self) -> Counter[str]:
        """The stats hashes, summed over every partition."""
        return summed(part.items() for part in await self.transport.fan_out([
            Read("hgetall", self.keys.stats(shard)) for shard in await self.registry.shard_ids()]))

    async def partition_progress(self, topics: Iterable[str]) -> dict[int, PartitionProgress]:
        """Per partition: next offsets and watermark, for lag, health and the event clock."""
        shards = await self.registry.shard_ids()
        topics = list(topics)
        out: dict[int, PartitionProgress] = {}
        fields = [META_WATERMARK, *map(offset_field, topics)]
        replies = await self.transport.fan_out([Read("hmget", self.keys.meta(shard), (fields,))
                                                for shard in shards])
        for shard, values in zip(shards, replies, strict=True):
            out[shard] = PartitionProgress(
                int(values[0]) if values[0] else None,
                {t: int(v) for t, v in zip(topics, values[1:], strict=True) if v},
            )
        return out

    async def shard_watermark_ms(self, shard: int) -> int | None:
        value = await self.client.hget(self.keys.meta(shard), META_WATERMARK)
        return int(value) if value else None

    async def watermark_ms(self) -> int | None:
        progress = await self.partition_progress([])
        marks = [p.watermark_ms for p in progress.values() if p.watermark_ms is not None]
        return max(marks) if marks else None
