"""The clients a deployment's settings describe: the one place a Redis client is made.

``REDIS_CLUSTER=true`` makes ``REDIS_URL`` the seed node of a Redis Cluster: redis-py's
cluster client learns the slot map from it, sends each partition's script to the master
of the partition's slot (every key of a partition carries its hash tag, ``state/schema.py``)
and splits a pipeline by node, sending the parts concurrently. TLS (``rediss://``) and ACL
users (``user:password@``) pass through the URL either way.
"""

from __future__ import annotations

import os

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    MovedError,
    RedisClusterException,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

from retention_tracker.config.settings import Settings
from retention_tracker.state.cluster import AsyncClient
from retention_tracker.state.store import RedisStore

#: Errors that mean "Redis is (for now) not there": a node down, a failover under way (the
#: cluster refuses queries until a replica has taken over), slots moving. The worker waits
#: and retries on them instead of dropping or buffering (``agents/ingest.py``). A
#: redirection (MOVED/ASK) still raised after the store's own three tries means the slot map
#: is still converging after a failover; nothing ran, so waiting and retrying is safe.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError, TimeoutError, ClusterDownError, TryAgainError, MasterDownError,
    SlotNotCoveredError, MovedError, AskError,
)

SyncClient = redis.Redis | redis.RedisCluster

_REDIS_PACKAGE = os.path.dirname(redis.__file__) + os.sep


def torn_down_under_a_call(exc: BaseException) -> bool:
    """An AttributeError or TypeError raised inside redis-py's own code: its asyncio cluster
    client closes every connection when one call meets CLUSTERDOWN during a failover, and
    another call using one of them at that moment fails with ``'NoneType' object has no
    attribute 'writelines'`` (redis-py issues #3546, #3815, #3835). A connection lost, in
    effect: the caller retries like on any. An error raised from this project's code is
    never taken for one."""
    if not isinstance(exc, (AttributeError, TypeError)):
        return False
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_code.co_filename.startswith(_REDIS_PACKAGE)


def make_client(settings: Settings, socket_timeout_s: float = 10,
                connect_timeout_s: float = 5) -> AsyncClient:
    """The asyncio client of the settings' Redis, single node or cluster. Its socket
    timeout outlasts a WAIT (``REDIS_WAIT_TIMEOUT_MS``), which blocks that long when the
    replicas fall short."""
    socket_timeout_s = max(socket_timeout_s, settings.redis_wait_timeout_ms / 1000 + 5)
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(
            settings.redis_url, socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
        )
    return aioredis.from_url(settings.redis_url, socket_timeout=socket_timeout_s,
                             socket_connect_timeout=connect_timeout_s)


def make_sync_client(settings: Settings, timeout_s: float = 5, retries: bool = True
                     ) -> SyncClient:
    """A blocking client (preflight, ``retention check``), single node or cluster; without
    ``retries`` one try per call, so a probe of a dead Redis answers at once."""
    options: dict[str, object] = {"socket_connect_timeout": timeout_s,
                                  "socket_timeout": timeout_s}
    if not retries:
        options["retry"] = Retry(NoBackoff(), 0)
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(settings.redis_url, **options)  # type: ignore[arg-type]
    return redis.Redis.from_url(settings.redis_url, **options)  # type: ignore[arg-type]


def redis_failure(exc: BaseException, where: str) -> str:
    """The one line for a Redis that could not be used (``where``: its masked URL): the
    credentials refused, a cluster mismatch (``redis_problem``), or not reachable."""
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return f"Redis at {where} refused the credentials: {exc}"
    return redis_problem(exc) or f"cannot reach Redis at {where}: {exc}"


def redis_problem(exc: BaseException) -> str | None:
    """One line for what redis-py raises when REDIS_CLUSTER does not match what REDIS_URL
    is, or when no node of a cluster can be reached; None for anything else."""
    if isinstance(exc, (ClusterDownError, TryAgainError)):
        return f"Redis Cluster cannot answer now (a failover under way?): {exc}"
    if isinstance(exc, (AskError, ClusterCrossSlotError)):  # MOVED is an AskError
        return ("Redis at REDIS_URL is a Redis Cluster node (it redirects keys to other "
                "nodes): set REDIS_CLUSTER=true")
    if isinstance(exc, RedisClusterException):
        if "not enabled" in str(exc):
            return ("REDIS_CLUSTER=true but Redis at REDIS_URL is not a cluster node: unset "
                    "REDIS_CLUSTER")
        return f"Redis Cluster: {str(exc).splitlines()[0]}"
    return None


def make_store(settings: Settings) -> RedisStore:
    return RedisStore(
        make_client(settings),
        prefix=settings.key_prefix,
        user_buckets=settings.user_buckets,
        dedup_buckets=settings.dedup_buckets,
        due_buckets=settings.due_buckets,
        dedup_window_days=settings.dedup_window_days,
        state_cache_users=settings.state_cache_users,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
