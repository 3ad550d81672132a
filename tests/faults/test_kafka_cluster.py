"""Brokers fail: Apache Kafka, three KRaft nodes on loopback, every topic on three replicas,
``min.insync.replicas=2`` and ``acks=all`` for every producer (the worker's idempotent).

One cluster per module (its start is the slowest part); every scenario has topics of its
own and leaves the cluster whole (a failed node is started again on its log). Each kills,
stops or pauses the node that leads a partition the worker is busy with, then checks what
every scenario of the suite checks (all figures equal the batch reference, nothing lost,
nothing counted twice) and, for the notifications, that each expected id is on its topic
exactly once. The time to recover (from the fault until the partition concerned moves
again) is measured and reported, never asserted.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from retention_tracker.devstack.apache_kafka import (
    CLUSTER_OF_THREE,
    KafkaCluster,
    describe_partitions,
    kafka_unavailable,
    start_kafka,
)
from retention_tracker.devstack.processes import ManagedProcess, wait_for
from retention_tracker.streams.calendar import MS_PER_DAY, utc_now_ms
from retention_tracker.streams.winback import notification_id
from tests.e2e.harness import (
    Deployment,
    consume_all,
    event_messages,
    isolated_deployment,
    produce,
    topic_ends,
)

from .support import (
    FAST_GROUP,
    FaultReport,
    LagMonitor,
    alive_predicate,
    applied_per_partition,
    assert_figures_exact,
    workload,
)

pytestmark = pytest.mark.e2e

#: A lost node is fenced once the controller has missed its heartbeats for 4 s (9 s by
#: default), so leadership moves within seconds; everything else as CLUSTER_OF_THREE says.
FAST_FAILOVER = {**CLUSTER_OF_THREE, "broker.session.timeout.ms": "4000",
                 "broker.heartbeat.interval.ms": "1000", "replica.lag.time.max.ms": "5000"}
#: Small batches, so a fault lands while the worker still has a backlog to apply.
SLOW_REPLAY = {**FAST_GROUP, "BATCH_MAX_RECORDS": "20"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    problem = kafka_unavailable()
    if problem:
        pytest.skip(f"Apache Kafka cannot run here: {problem}")
    started = time.monotonic()
    with start_kafka(3, data_dir=tmp_path_factory.mktemp("kafka3"),
                     overrides=FAST_FAILOVER) as whole:
        print(f"3 Kafka nodes answering after {time.monotonic() - started:.1f} s")
        yield whole


@pytest.fixture
def whole(cluster: KafkaCluster) -> Iterator[KafkaCluster]:
    """The cluster, with every node up again after the test, whatever it did to them."""
    try:
        yield cluster
    finally:
        for node in cluster.nodes:
            cluster.resume(node.node_id)
            if not node.alive():
                cluster.restart(node.node_id)


@pytest.fixture
def deployment(whole: KafkaCluster, redis_url: str, unique: str, tmp_path: Path
               ) -> Iterator[Deployment]:
    """A tracker on the three nodes, its topics replicated three times."""
    with isolated_deployment(whole.url, redis_url, unique, tmp_path) as d:
        yield d


def leader(cluster: KafkaCluster, topic: str, partition: int) -> int:
    return int(describe_partitions(cluster.bootstrap, topic)[partition]["leader"])


def applied(d: Deployment, partition: int, topic: str | None = None) -> int:
    """The next offset of ``topic`` (default: the input) the state holds for a partition."""
    client = d.redis(timeout_s=2)
    try:
        if topic is None:
            return applied_per_partition(client, d).get(partition, 0)
        value = client.hget(d.keys.meta(partition), f"off:{topic}")
        return int(value) if value else 0
    finally:
        client.close()


def moves_again(worker: ManagedProcess, progress: Callable[[], int], timeout_s: float = 120
                ) -> float:
    """Seconds until ``progress()`` exceeds its value now (the partition recovered)."""
    before, started = progress(), time.monotonic()
    wait_for(alive_predicate(worker, lambda: progress() > before), timeout_s,
             "progress after the fault", 0.1)
    return round(time.monotonic() - started, 2)


def replicas_back(cluster: KafkaCluster, topic: str, timeout_s: float = 120) -> float:
    """Seconds until every partition of ``topic`` has all three replicas in sync again."""
    started = time.monotonic()

    def full() -> bool:
        with contextlib.suppress(Exception):  # a node may still refuse while it starts
            return all(len(p["isr"]) == 3
                       for p in describe_partitions(cluster.bootstrap, topic).values())
        return False

    wait_for(full, timeout_s, f"{topic} back on three replicas", 0.2)
    return round(time.monotonic() - started, 2)


def finish(d: Deployment, scenario: str, raw: list[dict[str, Any]], produced: int,
           recovery_s: float, monitor: LagMonitor, **extra: Any) -> None:
    report = FaultReport(scenario, produced, raw, recovery_s=recovery_s,
                         max_lag=monitor.max_lag, extra=extra)
    assert_figures_exact(d, raw)
    report.finish(d)


def test_kill_9_of_the_leader_of_an_input_partition_mid_backlog(
        cluster: KafkaCluster, deployment: Deployment) -> None:
    d = deployment
    raw = workload(days=20, seed=71)
    total = produce(d.bootstrap, d.topic, event_messages(raw))
    end = topic_ends(d.bootstrap, d.topic)[0]
    victim = leader(cluster, d.topic, 0)
    with LagMonitor(d, produced=total) as monitor, contextlib.ExitStack() as stack:
        worker, _ = d.start_worker(**SLOW_REPLAY)
        stack.enter_context(worker)
        wait_for(alive_predicate(worker, lambda: applied(d, 0) > 0), 90, "partition 0 moving")
        cluster.kill(victim)
        left = end - applied(d, 0)
        assert left > 0, "the fault came after the backlog of partition 0 was applied"
        recovery = moves_again(worker, lambda: applied(d, 0))
        d.wait_applied(total, worker=worker)
        cluster.restart(victim)
        back = replicas_back(cluster, d.topic)
    finish(d, "K1 kill -9 of an input partition's leader", raw, total, recovery, monitor,
           node=victim, records_left_on_partition=left, replicas_back_s=back)


def test_kill_9_of_the_leader_of_a_rekey_partition_while_forwards_are_in_flight(
        cluster: KafkaCluster, deployment: Deployment) -> None:
    """Messages keyed by event id, not user: most are read away from their user's home
    partition and forwarded through the re-key topic; its leader dies while they flow. A
    forward sent again after the failover is a duplicate the state drops."""
    d = deployment
    raw = workload(days=20, seed=72)
    total = produce(d.bootstrap, d.topic, [(e["event_id"].encode(), orjson.dumps(e))
                                           for e in raw])
    with LagMonitor(d, produced=total) as monitor, contextlib.ExitStack() as stack:
        worker, _ = d.start_worker(**SLOW_REPLAY)
        stack.enter_context(worker)

        def forwards_flowing() -> bool:
            with contextlib.suppress(Exception):  # the topic is created by the worker
                return topic_ends(d.bootstrap, d.rekey_topic, timeout_s=5)[0] > 0
            return False

        wait_for(alive_predicate(worker, forwards_flowing), 90, "forwards on partition 0")
        victim = leader(cluster, d.rekey_topic, 0)
        cluster.kill(victim)
        assert d.applied_offsets() < total, "the fault came after the replay"
        recovery = moves_again(worker, lambda: applied(d, 0, d.rekey_topic))
        d.wait_applied(total, worker=worker)
        cluster.restart(victim)
        back = replicas_back(cluster, d.rekey_topic)
    finish(d, "K2 kill -9 of a re-key partition's leader", raw, total, recovery, monitor,
           node=victim, replicas_back_s=back)


def inactive_users(t0: int, users: int) -> tuple[list[dict[str, Any]], set[str]]:
    """``users`` users with one session each, 10 minutes apart from t0, then a ticker whose
    session every 2 hours moves the event-time watermark 3 days past the last of them; in
    time order, so each user's 1-day notification falls due in turn as the replay goes on.
    Returns the events and the expected notification ids."""
    events = [{"event_id": f"s{i}", "type": "session", "user_id": f"u{i:03d}",
               "ts": t0 + i * 600_000} for i in range(users)]
    last = t0 + users * 600_000
    events += [{"event_id": f"t{n}", "type": "session", "user_id": "ticker",
                "ts": last + n * 7_200_000} for n in range(1, 37)]
    expected = {notification_id("default", f"u{i:03d}", 1, t0 + i * 600_000)
                for i in range(users)}
    return events, expected


def test_kill_9_of_the_leader_of_an_output_partition_while_notifications_are_sent(
        cluster: KafkaCluster, whole: KafkaCluster, redis_url: str, unique: str,
        tmp_path: Path) -> None:
    """The first 60 % of the traffic, until the first notification is on its topic; then
    the leader of one of its partitions is killed and the rest of the traffic produced, so
    the notifications it brings due are sent during and after the failover."""
    t0 = utc_now_ms() - 10 * MS_PER_DAY
    raw, expected = inactive_users(t0, users=300)
    messages = event_messages(raw)
    first = len(messages) * 6 // 10
    env = {**FAST_GROUP, "BATCH_MAX_RECORDS": "5", "CLOCK": "event",
           "INACTIVITY_THRESHOLDS": "1"}
    with isolated_deployment(cluster.url, redis_url, unique, tmp_path, partitions=1) as d, \
            LagMonitor(d, produced=first) as monitor, contextlib.ExitStack() as stack:
        out = d.inactive_topic(1)
        total = produce(d.bootstrap, d.topic, messages[:first])
        worker, _ = d.start_worker(**env)
        stack.enter_context(worker)

        def sent() -> int:
            with contextlib.suppress(Exception):  # the topic is created by the worker
                return sum(topic_ends(d.bootstrap, out, timeout_s=5).values())
            return 0

        wait_for(alive_predicate(worker, lambda: sent() > 0), 90, "first notification")
        victim = leader(cluster, out, 0)
        cluster.kill(victim)
        at_fault = sent()
        total += produce(d.bootstrap, d.topic, messages[first:])
        monitor.produced = total
        recovery = moves_again(worker, sent)
        d.wait_applied(total, worker=worker)
        records = consume_all(d.bootstrap, out, len(expected), timeout_s=60)
        cluster.restart(victim)
        back = replicas_back(cluster, out)
        ids = Counter(orjson.loads(r.value)["notification_id"] for r in records)
        assert set(ids) == expected
        assert {i: n for i, n in ids.items() if n != 1} == {}, "an id sent more than once"
        finish(d, "K3 kill -9 of an output partition's leader", raw, total, recovery,
               monitor, node=victim, notifications=len(ids), sent_before_fault=at_fault,
               replicas_back_s=back)


def test_a_broker_stopped_and_started_again_on_its_log(
        cluster: KafkaCluster, deployment: Deployment) -> None:
    """SIGTERM (a controlled shutdown: leadership moves first), replay on two nodes, then
    the node starts again on its log on disk, catches up, and the worker never notices
    anything but leaders moving."""
    d = deployment
    raw = workload(days=20, seed=74)
    total = produce(d.bootstrap, d.topic, event_messages(raw))
    victim = leader(cluster, d.topic, 1)
    with LagMonitor(d, produced=total) as monitor, contextlib.ExitStack() as stack:
        worker, _ = d.start_worker(**SLOW_REPLAY)
        stack.enter_context(worker)
        wait_for(alive_predicate(worker, lambda: applied(d, 1) > 0), 90, "partition 1 moving")
        cluster.stop_node(victim)
        recovery = moves_again(worker, lambda: applied(d, 1))
        cluster.restart(victim)
        back = replicas_back(cluster, d.topic)
        d.wait_applied(total, worker=worker)
    log_kept = any((cluster.node(victim).data_dir / "data").glob(f"{d.topic}-*"))
    assert log_kept
    finish(d, "K4 broker stopped and restarted on its log", raw, total, recovery, monitor,
           node=victim, replicas_back_s=back)


def test_a_broker_paused_longer_than_its_session_then_resumed(
        cluster: KafkaCluster, deployment: Deployment) -> None:
    """SIGSTOP of a partition's leader for 8 s: the controller fences it after 4 s of
    silence and moves its leaderships; SIGCONT: it finds itself fenced, registers again and
    catches up as a follower."""
    d = deployment
    raw = workload(days=20, seed=75)
    total = produce(d.bootstrap, d.topic, event_messages(raw))
    victim = leader(cluster, d.topic, 2)
    with LagMonitor(d, produced=total) as monitor, contextlib.ExitStack() as stack:
        worker, _ = d.start_worker(**SLOW_REPLAY)
        stack.enter_context(worker)
        wait_for(alive_predicate(worker, lambda: applied(d, 2) > 0), 90, "partition 2 moving")
        paused = time.monotonic()
        cluster.pause(victim)
        try:
            recovery = moves_again(worker, lambda: applied(d, 2))
            # the pause outlasts the broker session however fast the failover was
            wait_for(lambda: time.monotonic() - paused >= 8, 10, "8 s of pause")
        finally:
            cluster.resume(victim)
        back = replicas_back(cluster, d.topic)
        d.wait_applied(total, worker=worker)
    finish(d, "K5 broker SIGSTOP 8 s then SIGCONT", raw, total, recovery, monitor,
           node=victim, replicas_back_s=back)
