"""A real Redis Cluster on loopback (three masters, one replica each; ``REDIS_CLUSTER=true``):
the exact end-to-end replay, a rebalance between two workers, and failovers (``kill -9`` of
a master mid-replay, its replica promoted by the cluster) that the worker rides through.

One cluster for the module (built in ~3 s); the tests run in file order and the failover
tests come last, since each leaves a master dead (its replica serving its slots alone).
What the failover tests check is what docs/operations.md "Redis Cluster" promises: asynchronous
replication can lose the applies a master acknowledged and had not yet sent to its
replica; each apply holds a partition's state and offsets, so both go back together and
the worker reads the gap again from Kafka (exact figures); with ``REDIS_WAIT_REPLICAS=1``
an apply the worker saw acknowledged is never lost, so it never has to go back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from click.testing import CliRunner

from retention_tracker.cli.main import cli
from retention_tracker.devstack.processes import wait_for
from retention_tracker.devstack.redis_server import LocalCluster, start_redis_cluster
from retention_tracker.state.schema import DUE_NEXT, DUE_RISK, due_member
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.plan import Plan
from tests.e2e.harness import Deployment, event_messages, isolated_deployment, produce

from .support import (
    FAST_GROUP,
    FaultReport,
    alive_predicate,
    assert_figures_exact,
    metric,
    workload,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with start_redis_cluster(3, 1, tmp_path_factory.mktemp("cluster")) as built:
        yield built


@pytest.fixture
def deployment(kafka_url: str, cluster: LocalCluster, unique: str, tmp_path: Path
               ) -> Iterator[Deployment]:
    """An isolated tracker whose Redis is the module's cluster (4 partitions: their hash
    tags fall on all three masters)."""
    with isolated_deployment(kafka_url, cluster.url, unique, tmp_path,
                             redis_cluster=True) as d:
        yield d


def owners(deployment: Deployment) -> dict[int, int]:
    """partition -> port of the master serving its slot now."""
    client = deployment.redis()
    assert isinstance(client, redis.RedisCluster)
    try:
        return {p: int(client.get_node_from_key(deployment.keys.meta(p)).port)
                for p in range(deployment.partitions)}
    finally:
        client.close()


def offsets_on(cluster: LocalCluster, port: int, deployment: Deployment,
               partitions: list[int]) -> dict[int, int]:
    """The input topic's stored next offset of ``partitions``, read on one node directly."""
    client = cluster.client(port)
    try:
        return {p: int(client.hget(deployment.keys.meta(p), f"off:{deployment.topic}") or 0)
                for p in partitions}
    finally:
        client.close()


def check_lines(deployment: Deployment) -> dict[str, dict[str, str]]:
    result = CliRunner().invoke(cli, ["check", "--json"], env=deployment.env())
    return {c["check"]: c for c in orjson.loads(result.stdout)}


def promoted(cluster: LocalCluster, dead: int, replica: int) -> bool:
    """The seed serves again (cluster_state ok) and ``replica`` serves the dead master's
    slots; probes of a cluster in the middle of a failover may fail: not yet."""
    try:
        masters = cluster.serving_masters()
        state = cluster.client(cluster.masters[0]).execute_command("CLUSTER", "INFO")
    except redis.RedisError:
        return False
    return "cluster_state:ok" in state and replica in masters and dead not in masters


def rewinds(worker_log: Path, deployment: Deployment) -> list[str]:
    return [line for line in worker_log.read_text(errors="replace").splitlines()
            if "rewinding" in line and deployment.topic in line]


def test_exact_figures_and_check_on_a_cluster(deployment: Deployment,
                                              cluster: LocalCluster) -> None:
    raw = workload(days=20, seed=21)
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(raw))
    worker, _ = deployment.start_worker(**FAST_GROUP)
    with worker:
        deployment.wait_applied(sent, worker=worker)
    # the partitions' state is spread over every master, each partition on one
    assert set(owners(deployment).values()) == set(cluster.masters)
    assert_figures_exact(deployment, raw)
    FaultReport("cluster: replay on 3 masters", sent, raw).finish(deployment)
    checks = check_lines(deployment)
    assert checks["redis"]["detail"].startswith("Redis Cluster (3 masters)"), checks
    assert checks["redis cluster"]["status"] == "ok", checks
    assert checks["redis cluster"]["detail"].startswith("cluster_state ok, 3 masters"), checks
    assert checks["redis slots"] == {
        "check": "redis slots", "status": "ok",
        "detail": "16384/16384 slots served by 3 masters, each with 1 replica(s)"}
    # the same cluster named without REDIS_CLUSTER: one line, not a traceback
    wrong = deployment.cli("report", check=False, REDIS_CLUSTER="false")
    assert wrong.returncode == 1, wrong.stderr
    assert wrong.stderr.strip().splitlines() == [
        "retention: error: Redis at REDIS_URL is a Redis Cluster node (it redirects keys to "
        "other nodes): set REDIS_CLUSTER=true"], wrong.stderr
    right = deployment.cli("report", "--granularity", "week")
    assert right.stderr == "" and "classic retention" in right.stdout, right


def test_rebalance_between_two_workers_on_a_cluster(deployment: Deployment) -> None:
    """A second worker joins mid-replay: partitions move between the workers, a stale
    owner's batch is refused by the partition version (one script on one master)."""
    raw = workload(days=20, seed=23)
    messages = event_messages(raw)
    half = len(messages) // 2
    env = {**FAST_GROUP, "BATCH_MAX_RECORDS": "20"}
    produced = produce(deployment.bootstrap, deployment.topic, messages[:half])
    with contextlib.ExitStack() as stack:
        first, port0 = deployment.start_worker(index=0, **env)
        stack.enter_context(first)
        wait_for(alive_predicate(first, lambda: deployment.applied_offsets() >= produced // 3),
                 60, "the first worker a third through")
        second, port1 = deployment.start_worker(index=1, **env)
        stack.enter_context(second)
        produced += produce(deployment.bootstrap, deployment.topic, messages[half:])

        def shared() -> bool:
            mine = metric(port0, "retention_worker_assigned_partitions")
            theirs = metric(port1, "retention_worker_assigned_partitions")
            return bool(mine and theirs and mine + theirs == deployment.consumed_partitions)

        wait_for(alive_predicate(second, alive_predicate(first, shared)), 60,
                 "the partitions shared by two workers")
        deployment.wait_applied(produced, worker=second)
        assert first.alive()
    assert_figures_exact(deployment, raw)
    FaultReport("cluster: second worker joins", produced, raw).finish(deployment)


async def test_a_slot_moved_under_the_store_is_followed(cluster: LocalCluster,
                                                          unique: str) -> None:
    """A slot moved to another master after the store read the slot map (resharding, or a
    failover the store learns of only by a redirection): the store's read follows the
    MOVED reply to the new master at once, and follows the slot back again. Seen before
    the fixes: the plain per-master clients met MOVED and the map was never read again
    (``RedisCluster.initialize()`` is a no-op unless the client is marked for it); then,
    with redis-py 8, which reads the map at most once a second, three quick tries all met
    MOVED (``MovedError ... ZRANGEBYSCORE ... 835`` on a fresh clone). A shard no
    deployment uses, so its slot holds no key but the test's and can move by SETSLOT."""
    client = aioredis.RedisCluster.from_url(cluster.url)
    store = RedisStore(client, prefix=f"rt-{unique}", user_buckets=4, dedup_buckets=4)
    shard = 999
    user = ("default", "moved-user")
    bucket = store.layout.due_bucket(user)
    key = store.keys.due_bucket(shard, DUE_NEXT, bucket)
    index = store.keys.due_index(shard, DUE_NEXT)
    slot = client.keyslot(key)
    assert client.keyslot(index) == slot  # the partition's hash tag

    def held_at(node: redis.Redis, moment: int) -> None:
        node.zadd(key, {due_member(user): moment})
        node.zadd(index, {str(bucket): moment})
    try:
        assert await store.due.due_entries(shard, 10) == []  # the map read, its master used
        source = int(client.get_node_from_key(key).port)
        target = next(port for port in cluster.masters if port != source)
        with contextlib.closing(cluster.client(source)) as node:
            assert node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        _move_slot(cluster, slot, target)
        try:
            with contextlib.closing(cluster.client(target)) as node:
                held_at(node, 5)  # only the new master holds it
                try:
                    assert await store.due.due_entries(shard, 10) == [(user, 5)]
                finally:
                    node.delete(key, index)
        finally:
            _move_slot(cluster, slot, source)
        with contextlib.closing(cluster.client(source)) as node:
            held_at(node, 6)
            try:  # MOVED back: the store follows it again
                assert await store.due.due_entries(shard, 10) == [(user, 6)]
            finally:
                node.delete(key, index)
    finally:
        await store.close()  # the cluster client and the per-master ones


async def test_due_buckets_and_their_adoption_on_a_cluster(cluster: LocalCluster,
                                                          unique: str) -> None:
    """The due buckets, their index and the older single sets of a partition share its
    hash tag: the apply script, the page reads and the adoption run on a cluster as on one
    Redis (a cross-slot key would fail the call)."""
    client = aioredis.RedisCluster.from_url(cluster.url)
    store = RedisStore(client, prefix=f"rt-{unique}", user_buckets=4, dedup_buckets=4,
                       due_buckets=4)
    users = [("default", f"u{n}") for n in range(10)]
    try:
        for shard in (0, 1, 2):  # partitions on different masters
            await client.zadd(store.keys.due(shard), {due_member(users[0]): 1})
            await store.adopt_due_sets(shard, (2,))
            loaded = await store.load_batch(shard, [], [], [], 0)
            assert await store.apply_plan(shard, loaded, {}, Plan(
                due={user: 10 + n for n, user in enumerate(users)} | {users[1]: None}),
                {users[2]: 5})
            assert await store.due.due_entries(shard, 12, limit=1) == [(users[0], 10)]
            assert await store.due.due_entries(shard, 14) == [(users[0], 10), (users[2], 12),
                                                          (users[3], 13), (users[4], 14)]
            assert await store.due.at_risk_due_entries(shard, 10) == [(users[2], 5)]
            assert not await client.exists(store.keys.due(shard))
    finally:
        for shard in (0, 1, 2):
            names = [store.keys.meta(shard), store.keys.due(shard)]
            for kind in (DUE_NEXT, DUE_RISK):
                names += [store.keys.due_index(shard, kind),
                          *(store.keys.due_bucket(shard, kind, n) for n in range(4))]
            await client.delete(*names)
        await store.close()


def _move_slot(cluster: LocalCluster, slot: int, port: int) -> None:
    """An empty slot to the master on ``port`` the way a resharding moves it (IMPORTING on
    the target, MIGRATING on the source, then SETSLOT NODE on the target first, which bumps
    its config epoch, then on every other master); returns once every node, replicas
    included, says so (a replica learns of the move by gossip, and believes it only from a
    node whose config epoch is higher than the old owner's: without the bump, a move to a
    master of a lower epoch never reached the replicas and the test timed out)."""
    ids = cluster.node_ids()
    node = ids[port]
    source = _owner(cluster, port, slot)
    with contextlib.closing(cluster.client(port)) as target:
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    with contextlib.closing(cluster.client(source)) as old:
        old.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node)
    for master in [port, *(m for m in cluster.masters if m != port)]:
        with contextlib.closing(cluster.client(master)) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node)
    live = [p for p, process in cluster.processes.items() if process.alive()]
    wait_for(lambda: all(_owner(cluster, p, slot) == port for p in live),
             30, f"slot {slot} on {port} for every node", 0.05)


def _owner(cluster: LocalCluster, via: int, slot: int) -> int:
    """The port of the master serving ``slot``, as the node on ``via`` sees it."""
    node = cluster.client(via)
    try:
        for start, end, master, *_ in node.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        return 0
    finally:
        node.close()


def _start_replay(deployment: Deployment, seed: int, **extra: str
                  ) -> tuple[list[dict[str, Any]], int, Any]:
    raw = workload(days=20, seed=seed)
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(raw))
    worker, _ = deployment.start_worker(**FAST_GROUP, BATCH_MAX_RECORDS="10", **extra)
    return raw, sent, worker


def _victim(deployment: Deployment, cluster: LocalCluster) -> tuple[int, int, list[int]]:
    """A master that is not the seed (REDIS_URL must stay reachable), with partitions of
    this deployment and a replica: (its port, its replica's port, its partitions)."""
    wait_for(cluster.replicas_in_sync, 30, "every replica in sync", 0.1)
    served = cluster.serving_masters()
    by_master: dict[int, list[int]] = {}
    for partition, master in owners(deployment).items():
        by_master.setdefault(master, []).append(partition)
    port = next(m for m in sorted(by_master) if m != cluster.masters[0] and served.get(m))
    return port, served[port][0], by_master[port]


def _promotion(cluster: LocalCluster, victim: int, replica: int) -> float:
    killed = time.monotonic()
    cluster.processes[victim].kill()
    wait_for(lambda: promoted(cluster, victim, replica), 60,
             f"replica {replica} promoted in place of {victim}", 0.1)
    return round(time.monotonic() - killed, 2)


def test_failover_loses_an_unreplicated_tail_and_the_worker_reads_it_again(
        deployment: Deployment, cluster: LocalCluster) -> None:
    """The replication link of one master is cut (its replica cannot re-authenticate), the
    worker keeps applying there, then the master is SIGKILLed and its replica promoted:
    the applies since the cut are lost, state and offsets together. The worker notices that
    its batches start past the stored offsets, rewinds and reads the gap again."""
    victim, replica, partitions = _victim(deployment, cluster)
    raw, sent, worker = _start_replay(deployment, seed=25)
    with worker:
        wait_for(alive_predicate(worker, lambda: min(offsets_on(
            cluster, victim, deployment, partitions).values()) > 0), 60,
            "applies on the victim master")
        with contextlib.closing(cluster.client(replica)) as node:
            node.config_set("masterauth", "not-the-password")  # it cannot sync again
        with contextlib.closing(cluster.client(victim)) as node:
            node.client_kill_filter(_type="replica")
        cut = offsets_on(cluster, victim, deployment, partitions)
        wait_for(alive_predicate(worker, lambda: any(
            now > cut[p] for p, now in offsets_on(cluster, victim, deployment,
                                                  partitions).items())),
            30, "applies the replica does not have")
        acknowledged = offsets_on(cluster, victim, deployment, partitions)
        failover_s = _promotion(cluster, victim, replica)
        with contextlib.closing(cluster.client(replica)) as node:
            node.config_set("masterauth", "")
            kept = {p: int(node.hget(deployment.keys.meta(p), f"off:{deployment.topic}")
                           or 0) for p in partitions}
        assert all(kept[p] <= acknowledged[p] for p in partitions), (kept, acknowledged)
        assert any(kept[p] < acknowledged[p] for p in partitions), (kept, acknowledged)
        deployment.wait_applied(sent, worker=worker)
        assert worker.alive()
        gone_back = rewinds(worker.log_path, deployment)
    assert gone_back, "the worker never noticed the lost tail"
    assert_figures_exact(deployment, raw)
    FaultReport("cluster: failover loses a tail", sent, raw, recovery_s=failover_s,
                extra={"acknowledged": acknowledged, "kept": kept}).finish(deployment)
    checks = check_lines(deployment)
    assert checks["redis slots"]["status"] == "warn", checks  # the promoted one stands alone
    assert f"127.0.0.1:{replica} have no replica" in checks["redis slots"]["detail"], checks
    cluster.restart(victim)  # back, as the replica of the node that took its slots
    wait_for(lambda: cluster.serving_masters().get(replica) == [victim], 30,
             f"{victim} replicating {replica}", 0.1)


def test_failover_with_wait_loses_nothing_acknowledged(
        deployment: Deployment, cluster: LocalCluster) -> None:
    """REDIS_WAIT_REPLICAS=1: every apply waits for the replica. A master SIGKILLed
    mid-replay and its replica promoted: no apply the worker saw acknowledged is lost, so
    the worker never goes back, and the figures are exact. Until the old master is back
    (as the new one's replica) the new master has none: its applies wait the timeout and
    are logged as short, as docs/operations.md says."""
    victim, replica, partitions = _victim(deployment, cluster)
    raw, sent, worker = _start_replay(deployment, seed=27, REDIS_WAIT_REPLICAS="1",
                                      REDIS_WAIT_TIMEOUT_MS="2000")
    with worker:
        wait_for(alive_predicate(worker, lambda: min(offsets_on(
            cluster, victim, deployment, partitions).values()) > 0), 60,
            "applies on the victim master")
        before_kill = worker.log_path.read_text(errors="replace")
        failover_s = _promotion(cluster, victim, replica)
        cluster.restart(victim)
        wait_for(lambda: cluster.serving_masters().get(replica) == [victim], 30,
                 f"{victim} replicating {replica}", 0.1)
        deployment.wait_applied(sent, worker=worker)
        assert worker.alive()
    short = [line for line in before_kill.splitlines() if "acknowledged by" in line]
    assert not short, short  # every write had its replica's ack before the kill
    assert not rewinds(worker.log_path, deployment)
    assert_figures_exact(deployment, raw)
    FaultReport("cluster: failover with WAIT", sent, raw,
                recovery_s=failover_s).finish(deployment)
