"""The transport to a single Redis or a Redis Cluster: reads fanned out per master, writes
sent to the master of their slot (with WAIT on the same connection), redirections followed
with a new slot map. The store (``state/store.py``) says what to read and write; this
module only says how it reaches the servers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.commands.core import AsyncScript
from redis.exceptions import AskError, MovedError, NoScriptError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A single Redis or a Redis Cluster (``REDIS_CLUSTER``): the store speaks to either the
#: same way, since every key of a partition shares its hash tag and nothing else is read or
#: written by more than one key at a time.
AsyncClient = aioredis.Redis | aioredis.RedisCluster


class Read(NamedTuple):
    """One read of one key, queued on a pipeline as ``pipe.<method>(key, *args, **options)``."""

    method: str
    key: str
    args: tuple[Any, ...] = ()
    options: Mapping[str, Any] = {}

    def queue(self, pipe: Any) -> None:
        getattr(pipe, self.method)(self.key, *self.args, **self.options)


class Transport:
    """How calls reach Redis. ``scripts``: the Lua sources a master new to this process
    is given before its first call. ``wait_replicas``: the replicas a write waits for on a
    single Redis (a cluster's slot map says how many each master has)."""

    def __init__(self, client: AsyncClient, scripts: Sequence[str], wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000) -> None:
        self.client = client
        self.scripts = tuple(scripts)
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        #: writes fewer replicas acknowledged than asked in time
        self.wait_shortfalls = 0
        self._masters: dict[str, aioredis.Redis] = {}  # cluster: a plain client per master
        #: cluster: slot -> "host:port" a MOVED reply named, followed until the cluster
        #: client's own slot map agrees (see ``redirected``)
        self._moved: dict[int, str] = {}

    async def close(self) -> None:
        """Close the client and the per-master ones (a process that ends without it logs
        every unclosed cluster node)."""
        for server in self._masters.values():
            await server.aclose()
        self._masters.clear()
        await self.client.aclose()

    async def script(self, script: AsyncScript, source: str, keys: list[str], blob: bytes,
                     wait: int = 0) -> Any:
        """One call of a registered script whose KEYS all share the first key's slot. On a
        single Redis without WAIT, redis-py's script object (EVALSHA, loading on NOSCRIPT);
        else straight to the master of that slot (``on_master``): the cluster client would
        hash every one of the call's hundreds of keys to find the slot, twice, per call."""
        if not wait and not isinstance(self.client, aioredis.RedisCluster):
            return await script(keys=keys, args=[blob])
        return await self.on_master(keys[0], wait,
                                    ("EVALSHA", script.sha, len(keys), *keys, blob), source)

    async def on_master(self, key: str, replicas: int, command: tuple[EncodableT, ...],
                        script: str | None = None) -> Any:
        """``command`` (on ``key``), sent to the master serving ``key``'s slot through a
        plain client of that master (``server_of``); with ``replicas``, followed by ``WAIT
        replicas REDIS_WAIT_TIMEOUT_MS`` on the same connection, since WAIT counts the
        acknowledgements of that connection's writes (the cluster pipeline would re-route a
        redirected or retried command on its own, and the WAIT would ask another one).
        A redirection (the slot moved: a failover, resharding) means nothing ran: the slot
        map is read again and the command sent to the new master. Returns the command's
        reply; a WAIT that falls short is logged and counted, not raised: the write is done
        on the master either way, and a failover before the replicas have it only sends
        that partition back to its stored offset (docs/operations.md, "Redis Cluster")."""
        async def once() -> tuple[Any, int]:
            server = await self.server_of(key)
            for loaded in (False, True):
                try:
                    if not replicas:
                        return await server.execute_command(*command), 0
                    async with server.pipeline(transaction=False) as pipe:
                        pipe.execute_command(*command)
                        pipe.execute_command("WAIT", replicas, self.wait_timeout_ms)
                        reply, acknowledged = await pipe.execute()
                        return reply, int(acknowledged)
                except NoScriptError:  # a promoted replica has no script cache; nothing ran
                    if script is None or loaded:
                        raise
                    await server.script_load(script)
            raise AssertionError("unreachable")

        reply, acknowledged = await self.redirected(once)
        if acknowledged < replicas:
            self.wait_shortfalls += 1
            log.warning("write to %s acknowledged by %s of %s replica(s) within %s ms",
                        key, acknowledged, replicas, self.wait_timeout_ms)
        return reply

    async def replicated_write(self, key: str, *command: EncodableT) -> object:
        """A write that waits for the master's replicas (at most the WAIT timeout) before
        going on: for keys outside the partitions (apps, shards, topology), rare, and not
        covered by any partition's offsets, so a failover that lost one would not replay it."""
        replicas = self.replicas_of(key)
        if not replicas:
            return await self.client.execute_command(*command)
        return await self.on_master(key, replicas, command)

    async def redirected(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` against the cluster's masters. A redirection means nothing ran. A MOVED
        reply names the master that serves the slot now: it is followed at once (the slot
        is sent there, ``server_of``) and the cluster client asked to read its map again,
        which redis-py does at most once a second (``topology_refresh_min_interval``, from
        redis-py 8): waiting for that map made a read fail with MOVED after three quick
        tries. The call is made again as long as each MOVED names a new master for its
        slot; one that names the master already followed (the nodes disagree) is raised,
        and the worker's retry loop waits. An ASK (a slot half migrated) reads the map
        again, three tries at most. A lost connection forgets what MOVED replies said,
        marks the map stale for the next call and raises (the worker's retry loop waits
        for Redis)."""
        asked = 0
        while True:
            try:
                return await call()
            except MovedError as moved:
                target = f"{moved.host}:{moved.port}"
                if self._moved.get(moved.slot_id) == target:
                    raise
                self._moved[moved.slot_id] = target
                await self.relearn_slots()
            except AskError:
                asked += 1
                if asked == 3:
                    raise
                await self.relearn_slots()
            except (RedisConnectionError, RedisTimeoutError):
                self._moved.clear()
                await self.relearn_slots(later=True)
                raise

    async def fan_out(self, calls: Sequence[Read]) -> list[Any]:
        """Reads of one key each, replies in order: one pipeline on a single Redis; in a
        cluster one pipeline per master, sent to all masters at once through the plain
        clients (the cluster pipeline spends more CPU routing each command than the read
        costs). A redirection reads again with a new
        slot map (reads are idempotent)."""
        client = self.client
        if not isinstance(client, aioredis.RedisCluster):
            async with client.pipeline(transaction=False) as pipe:
                for call in calls:
                    call.queue(pipe)
                return list(await pipe.execute())

        async def once() -> list[Any]:
            by_server: dict[int, tuple[aioredis.Redis, list[int]]] = {}
            for index, call in enumerate(calls):
                server = await self.server_of(call.key)
                by_server.setdefault(id(server), (server, []))[1].append(index)

            async def run(server: aioredis.Redis, indexes: list[int]) -> list[Any]:
                async with server.pipeline(transaction=False) as pipe:
                    for index in indexes:
                        calls[index].queue(pipe)
                    return list(await pipe.execute())

            parts = await asyncio.gather(*(run(*group) for group in by_server.values()))
            out: list[Any] = [None] * len(calls)
            for (_server, indexes), replies in zip(by_server.values(), parts, strict=True):
                for index, reply in zip(indexes, replies, strict=True):
                    out[index] = reply
            return out

        return await self.redirected(once)

    async def server_of(self, key: str) -> aioredis.Redis:
        """The single Redis, or a plain client of the master serving ``key``: the one a
        MOVED reply named for its slot while the cluster client's map says otherwise, else
        the one of that map."""
        client = self.client
        if not isinstance(client, aioredis.RedisCluster):
            return client
        if client._initialize:  # a failed call asked for a new slot map
            await client.initialize()
        node = client.get_node_from_key(key)
        slot = client.keyslot(key)
        moved = self._moved.get(slot)
        if moved is not None and node is not None and node.name == moved:
            del self._moved[slot]  # the map has caught up
            moved = None
        if moved is not None:
            host, port = moved.rsplit(":", 1)
            return await self._master(moved, client.get_node(host=host, port=int(port))
                                      or client.get_default_node(), host, int(port))
        if node is None:
            raise SlotNotCoveredError(f"no master serves the slot of {key}")
        return await self._master(node.name, node, node.host, int(node.port))

    async def _master(self, name: str, like: ClusterNode, host: str, port: int
                      ) -> aioredis.Redis:
        """The plain client of master ``name`` (one per master), with the connection
        settings (TLS, user, password) of the cluster node ``like``."""
        server = self._masters.get(name)
        if server is None:
            pool = aioredis.ConnectionPool(connection_class=like.connection_class,
                                           **{**like.connection_kwargs, "host": host,
                                              "port": port})
            server = aioredis.Redis(connection_pool=pool)
            # a master new to this worker (a promoted replica) may not have the scripts: a
            # NOSCRIPT in a pipeline would still run its WAIT, for nothing
            for source in self.scripts:
                await server.script_load(source)
            self._masters[name] = server
        return server

    async def relearn_slots(self, later: bool = False) -> None:
        """Read the cluster's slot map again: now (a redirection), or at the next call
        (``later``: the node may be down; the next call reads it from any node).
        ``RedisCluster.initialize()`` reads the map only when the client is marked for
        it, so the mark comes first: without it a redirection met by these plain
        clients, which the cluster client never sees, left the old map in place and the
        worker retried the old master for ever."""
        client = self.client
        if isinstance(client, aioredis.RedisCluster):
            client._initialize = True
            if not later:
                await client.initialize()

    def replicas_of(self, key: str) -> int:
        """Replicas the master of ``key`` has, as the cluster's slot map says (a single
        Redis: REDIS_WAIT_REPLICAS, since it does not tell its client)."""
        if isinstance(self.client, aioredis.RedisCluster):
            nodes = self.client.nodes_manager.slots_cache.get(self.client.keyslot(key), [])
            return max(0, len(nodes) - 1)
        return self.wait_replicas
