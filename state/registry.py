"""What the state records about itself: its partitions (shards), each app's timezone, the
partition count of each topic it was built from, the bucket layout it was built with and
each app's fitted risk-of-lapsing model. A first record wins (HSETNX), so a worker
configured otherwise finds the difference instead of overwriting it."""

from __future__ import annotations

from collections.abc import Mapping

from retention_tracker.config.settings import ConfigError
from retention_tracker.state.cluster import Transport
from retention_tracker.state.layout import Layout
from retention_tracker.state.schema import text


class TimezoneConflict(ConfigError):
    """An app's data was built in one timezone and this worker is configured with another."""


def timezone_problem(app: str, stored: str | None, configured: str) -> str | None:
    """One line when an app's data was built in another timezone than the configured one
    (its days would be cut at other hours and mix two calendars), else None."""
    if stored is None or stored == configured:
        return None
    return (f"app {app!r} has data in timezone {stored!r} but TIMEZONE/APP_TIMEZONES give "
            f"{configured!r}; fix the setting")


class Registry:
    """The state's records about itself, written through ``transport`` (to the key's
    master, with the replicas it waits for) and read on its client."""

    def __init__(self, transport: Transport, layout: Layout) -> None:
        self.client = transport.client
        self.transport = transport
        self.layout = layout
        self.keys = layout.keys

    async def shard_ids(self) -> list[int]:
        return sorted(int(s) for s in await self.client.smembers(self.keys.shards()))

    async def register_shard(self, shard: int) -> None:
        await self.transport.replicated_write(self.keys.shards(), "SADD", self.keys.shards(), shard)

    async def app_timezones(self) -> dict[str, str]:
        raw = await self.client.hgetall(self.keys.apps())
        return {text(k): text(v) for k, v in raw.items()}

    async def fix_timezone(self, app: str, timezone: str) -> None:
        """Record the app's timezone on its first data; refuse to mix two calendars."""
        await self.transport.replicated_write(self.keys.apps(), "HSETNX", self.keys.apps(), app,
                                              timezone)
        stored = await self.client.hget(self.keys.apps(), app)
        problem = timezone_problem(app, text(stored) if stored else None, timezone)
        if problem:
            raise TimezoneConflict(problem)

    async def partition_counts(self) -> dict[str, int]:
        """The partition count of every topic the state was built from."""
        raw = await self.client.hgetall(self.keys.topology())
        return {text(k): int(v) for k, v in raw.items()}

    async def record_partition_counts(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Record the counts of topics seen for the first time; returns all stored counts
        (an earlier worker's record wins, so a changed count is found, not overwritten)."""
        for topic, count in counts.items():
            await self.transport.replicated_write(self.keys.topology(), "HSETNX",
                                                  self.keys.topology(), topic, count)
        return await self.partition_counts()

    async def record_layout(self) -> dict[str, int]:
        """Record the bucket counts on the state's first worker; returns the stored ones (an
        earlier worker's record wins, so a changed count is found, not overwritten)."""
        key = self.keys.layout()
        for name, count in self.layout.counts().items():
            await self.transport.replicated_write(key, "HSETNX", key, name, count)
        return {text(k): int(v) for k, v in (await self.client.hgetall(key)).items()}

    async def write_lapse_fit(self, app: str, fit: bytes) -> None:
        """Keep an app's fitted risk-of-lapsing model (JSON), replacing the one before."""
        await self.transport.replicated_write(self.keys.lapse_fits(), "HSET",
                                              self.keys.lapse_fits(), app, fit)

    async def read_lapse_fit(self, app: str) -> bytes | None:
        found = await self.client.hget(self.keys.lapse_fits(), app)
        return found.encode() if isinstance(found, str) else found

    async def read_lapse_fits(self) -> dict[str, bytes]:
        """Every app's kept fit (the worker's at-risk moments are computed under them)."""
        raw = await self.client.hgetall(self.keys.lapse_fits())
        return {text(app): fit.encode() if isinstance(fit, str) else fit
                for app, fit in raw.items()}
