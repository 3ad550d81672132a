"""Brokers fail: Apache Kafka, three KRaft nodes on loopback, every topic on three replicas,
``min.insync.replicas=2`` and ``acks=all`` for every producer (the worker's idempotent).

One cluster per module (its start is the slowest part); every scenario has topics of its
own and leaves the cluster whole (a failed node is started again on its log). Each kills,
stops or pauses the node that leads a partition the worker is busy with, then checks what
every scenario of the suite checks (all figures equal the batch reference, nothing lost,
nothing counted twice) and, for the notifications, that each expected id is on its topic
exactly once. Measured and reported, never asserted: the time from the fault until another
node leads the partition (``leader_moved_s``), until the worker has applied everything
(``recovery_s``), and until the node is back in every replica set (``replicas_back_s``).
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
from retention_tracker.streams.calendar import utc_now_ms
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


def applied(d: Deployment, partition: int) -> int:
    """The next offset of the input partition the state holds."""
    client = d.redis(timeout_s=2)
    try:
        return applied_per_partition(client, d).get(partition, 0)
    finally:
        client.close()


def leader_moved(cluster: KafkaCluster, topic: str, partition: int, victim: int,
                 since: float, timeout_s: float = 60) -> float:
    """Seconds from ``since`` (the fault) until another node leads the partition."""
    def moved() -> bool:
        with contextlib.suppress(Exception):  # a node may not answer yet
            return leader(cluster, topic, partition) not in (victim, -1)
        return False

    wait_for(moved, timeout_s, f"a new leader of {topic}/{partition}", 0.1)
    return round(time.monotonic() - since, 2)


def drained(d: Deployment, total: int, worker: ManagedProcess, since: float) -> float:
    """Seconds from ``since`` (the fault) until every record is applied: the time to
    recover (a fault that stalls the worker shows here; one it rides out costs nothing)."""
    d.wait_applied(total, timeout_s=180, worker=worker)
    return round(time.monotonic() - since, 2)


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


def input_partition_fault(cluster: KafkaCluster, d: Deployment, scenario: str, seed: int,
                          partition: int, fault: Callable[[int], None],
                          restore: Callable[[int], None], drain_first: bool) -> None:
    """A replay; once the worker applies ``partition``, ``fault`` on the node leading it;
    ``restore`` of that node before or after (``drain_first``) the backlog is applied;
    then the figures and the report."""
    raw = workload(days=20, seed=seed)
    total = produce(d.bootstrap, d.topic, event_messages(raw))
    end = topic_ends(d.bootstrap, d.topic)[partition]
    victim = leader(cluster, d.topic, partition)
    with LagMonitor(d, produced=total) as monitor, contextlib.ExitStack() as stack:
        worker, _ = d.start_worker(**SLOW_REPLAY)
        stack.enter_context(worker)
        wait_for(alive_predicate(worker, lambda: applied(d, partition) > 0), 90,
                 f"partition {partition} moving")
        left = end - applied(d, partition)
        started = time.monotonic()
        fault(victim)
        moved = leader_moved(cluster, d.topic, partition, victim, started)
        if drain_first:
            recovery = drained(d, total, worker, started)
        restore(victim)
        back = replicas_back(cluster, d.topic)
        if not drain_first:
            recovery = drained(d, total, worker, started)
    assert left > 0, "the fault came after the backlog of the partition was applied"
    finish(d, scenario, raw, total, recovery, monitor, node=victim,
           records_left_on_partition=left, leader_moved_s=moved, replicas_back_s=back)


def test_kill_9_of_the_leader_of_an_input_partition_mid_backlog(
        cluster: KafkaCluster, deployment: Deployment) -> None:
    """The node is lost with its page cache: the worker reads on from the new leader
    while the node is down, and it rejoins once the backlog is applied."""
    input_partition_fault(cluster, deployment, "K1 kill -9 of an input partition's leader",
                          71, 0, cluster.kill, cluster.restart, drain_first=True)


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
            with contextlib.suppress(TimeoutError):  # created by the worker as it starts
                return topic_ends(d.bootstrap, d.rekey_topic, timeout_s=5)[0] > 0
            return False

        wait_for(alive_predicate(worker, forwards_flowing), 90, "forwards on partition 0")
        victim = leader(cluster, d.rekey_topic, 0)
        fault = time.monotonic()
        cluster.kill(victim)
        assert d.applied_offsets() < total, "the fault came after the replay"
        moved = leader_moved(cluster, d.rekey_topic, 0, victim, fault)
        recovery = drained(d, total, worker, fault)
        cluster.restart(victim)
        back = replicas_back(cluster, d.rekey_topic)
    finish(d, "K2 kill -9 of a re-key partition's leader", raw, total, recovery, monitor,
           node=victim, leader_moved_s=moved, replicas_back_s=back)


USER_STEP_MS = 300_000
TICK_MS = 7_200_000


def inactive_users(t0: int, users: int) -> tuple[list[dict[str, Any]], set[str]]:
    """``users`` users with one session each, 5 minutes apart from t0, then a ticker whose
    session every 2 hours moves the event-time watermark 3 days past the last of them; in
    time order, so each user's notification (the default threshold, 2 days) falls due as
    the ticker's sessions are applied, 24 users per session from its 12th on. Returns the
    events and the expected notification ids."""
    events = [{"event_id": f"s{i}", "type": "session", "user_id": f"u{i:03d}",
               "ts": t0 + i * USER_STEP_MS} for i in range(users)]
    last = t0 + users * USER_STEP_MS
    events += [{"event_id": f"t{n}", "type": "session", "user_id": "ticker",
                "ts": last + n * TICK_MS} for n in range(1, 37)]
    expected = {notification_id("default", f"u{i:03d}", 2, t0 + i * USER_STEP_MS)
                for i in range(users)}
    return events, expected


def test_kill_9_of_the_leader_of_an_output_partition_while_notifications_are_sent(
        cluster: KafkaCluster, whole: KafkaCluster, redis_url: str, unique: str,
        tmp_path: Path) -> None:
    """The traffic up to the ticker's 14th session (the first ~50 notifications due), until
    a notification is on its topic; then the leader of one of its partitions is killed and
    the rest produced, so the ~250 notifications it brings due are sent during and after
    the failover."""
    # the ticker's last session an hour ago: the data runs up to now, as the figures expect
    t0 = utc_now_ms() - (300 * USER_STEP_MS + 36 * TICK_MS + 3_600_000)
    raw, expected = inactive_users(t0, users=300)
    messages = event_messages(raw)
    first = 300 + 14
    env = {**FAST_GROUP, "BATCH_MAX_RECORDS": "5", "CLOCK": "event"}
    with isolated_deployment(cluster.url, redis_url, unique, tmp_path, partitions=1) as d, \
            LagMonitor(d, produced=first) as monitor, contextlib.ExitStack() as stack:
        out = d.inactive_topic(2)
        total = produce(d.bootstrap, d.topic, messages[:first])
        worker, _ = d.start_worker(**env)
        stack.enter_context(worker)

        def sent() -> int:
            with contextlib.suppress(TimeoutError):  # created by the worker as it starts
                return sum(topic_ends(d.bootstrap, out, timeout_s=5).values())
            return 0

        wait_for(alive_predicate(worker, lambda: sent() > 0), 90, "first notification")
        victim = leader(cluster, out, 0)
        at_fault = sent()
        fault = time.monotonic()
        cluster.kill(victim)
        total += produce(d.bootstrap, d.topic, messages[first:])
        monitor.produced = total
        moved = leader_moved(cluster, out, 0, victim, fault)
        d.wait_applied(total, timeout_s=180, worker=worker)
        records = consume_all(d.bootstrap, out, len(expected), timeout_s=60)
        recovery = round(time.monotonic() - fault, 2)
        cluster.restart(victim)
        back = replicas_back(cluster, out)
        ids = Counter(orjson.loads(r.value)["notification_id"] for r in records)
        assert set(ids) == expected
        assert {i: n for i, n in ids.items() if n != 1} == {}, "an id sent more than once"
        finish(d, "K3 kill -9 of an output partition's leader", raw, total, recovery,
               monitor, node=victim, notifications=len(ids), sent_before_fault=at_fault,
               leader_moved_s=moved, replicas_back_s=back)


def test_a_broker_stopped_and_started_again_on_its_log(
        cluster: KafkaCluster, deployment: Deployment) -> None:
    """SIGTERM (a controlled shutdown: leadership moves first), then the node starts again
    on its log on disk and catches up while the worker replays."""
    input_partition_fault(cluster, deployment, "K4 broker stopped and restarted on its log",
                          74, 1, cluster.stop_node, cluster.restart, drain_first=False)
    # every node, the restarted one too, holds the topic's log on disk
    assert all(any((node.data_dir / "data").glob(f"{deployment.topic}-*"))
               for node in cluster.nodes)


def test_a_broker_paused_longer_than_its_session_then_resumed(
        cluster: KafkaCluster, deployment: Deployment) -> None:
    """SIGSTOP of a partition's leader for 8 s: the controller fences it after 4 s of
    silence and moves its leaderships; SIGCONT: it finds itself fenced, registers again and
    catches up as a follower."""
    paused: dict[int, float] = {}

    def pause(node: int) -> None:
        paused[node] = time.monotonic()
        cluster.pause(node)

    def resume(node: int) -> None:
        # the pause outlasts the broker session however fast the failover was
        wait_for(lambda: time.monotonic() - paused[node] >= 8, 10, "8 s of pause")
        cluster.resume(node)

    input_partition_fault(cluster, deployment, "K5 broker SIGSTOP 8 s then SIGCONT", 75, 2,
                          pause, resume, drain_first=False)
