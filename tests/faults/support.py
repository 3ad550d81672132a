"""What the fault-injection scenarios share: workloads, a dedicated Redis that can be killed,
in-process queries, a lag sampler, Kafka helpers and the per-scenario report.

Every scenario ends the same way: all produced records applied (offsets in Redis), then every
figure compared with the batch reference (``assert_reports_match`` of the e2e suite, run on
in-process queries) and a report of what was produced, accepted, rejected, lost and double
counted. ``lost`` and ``double_counted`` compare the accepted-event counters, which the worker
writes in the same Redis call as the state, with the reference's deduplicated events.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from retention_tracker.bench import reference
from retention_tracker.cli.main import cli
from retention_tracker.devstack.processes import ManagedProcess, wait_for
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.state.schema import Keyspace
from retention_tracker.streams.calendar import utc_now_ms
from retention_tracker.streams.events import validate_event
from retention_tracker.streams.plan import adds_up
from tests.e2e.harness import Deployment
from tests.e2e.test_worker_exact import (
    MS_PER_DAY,
    assert_reports_match,
    inactive_users,
    simulated,
)

#: Short group timeouts: a killed worker's partitions go to the others once its session
#: expires (Kafka allows sessions down to group.min.session.timeout.ms, 1 s in
#: deploy/kafka/server.properties); on the Tansu fallback a JoinGroup is also answered only
#: after half the session timeout (devstack/tansu.py).
FAST_GROUP = {"SESSION_TIMEOUT_MS": "2000", "HEARTBEAT_MS": "500"}

#: Every report of this session, for the terminal summary (tests/faults/conftest.py).
REPORTS: list[dict[str, Any]] = []


# ---- a Redis of the test's own ------------------------------------------------------------


class OwnRedis:
    """A redis-server only this test uses, so it may be stopped, killed and restarted on the
    SAME port and data directory (the worker's REDIS_URL stays valid), AOF on, fsync everysec.
    Every process it started is stopped by PID in ``close`` (the fixture's teardown)."""

    def __init__(self, data_dir: Path, appendonly: bool = True) -> None:
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.processes: list[ManagedProcess] = []
        process, self.url = start_redis(data_dir=data_dir, appendonly=appendonly)
        self.processes.append(process)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    @property
    def process(self) -> ManagedProcess:
        return self.processes[-1]

    def stop(self) -> None:
        """SIGTERM: Redis fsyncs its AOF and exits (a clean restart or a planned outage)."""
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL: no shutdown, whatever the OS has not written is gone with the process."""
        self.process.kill()

    def start(self) -> None:
        process, url = start_redis(port=self.port, data_dir=self.data_dir,
                                   appendonly=self.appendonly)
        assert url == self.url
        self.processes.append(process)

    def aof_files(self) -> list[Path]:
        """The AOF increment files (Redis 7 multi-part AOF), oldest first."""
        return sorted((self.data_dir / "appendonlydir").glob("*.incr.aof"))

    def close(self) -> None:
        for process in self.processes:
            process.stop()


def quick_client(url: str) -> redis.Redis:
    """One try per call and short timeouts: for probes that must not hang on a dead Redis."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1,
                                retry=Retry(NoBackoff(), 0))


# ---- workloads ------------------------------------------------------------------------------


def workload(days: int = 20, seed: int = 3, installs_per_day: int = 25
             ) -> list[dict[str, Any]]:
    """``tests.e2e.test_worker_exact.simulated`` (5 % duplicates, 10 % late events), plus,
    for every day, one purchase by a user first seen that day, so every cohort has a buyer.

    Why: ``retention rpr`` listed only cohorts with a buyer while the reference lists every
    non-empty cohort (see ``test_core_bugs.test_rpr_lists_cohorts_without_buyers``); whether
    a workload has such a cohort depends on the weekday the suite runs, and these scenarios
    are about faults, so they do not depend on that path."""
    raw = simulated(days=days, seed=seed, installs_per_day=installs_per_day)
    first_seen: dict[str, int] = {}
    first_position: dict[str, int] = {}
    for position, event in enumerate(raw):
        user = event["user_id"]
        first_seen[user] = min(first_seen.get(user, event["ts"]), event["ts"])
        first_position.setdefault(user, position)
    buyer_of_day: dict[int, str] = {}
    for user, ts in sorted(first_seen.items()):
        buyer_of_day.setdefault(ts // MS_PER_DAY, user)
    buys = {
        first_position[user]: {
            "event_id": f"buyer-{day}", "type": "purchase", "user_id": user, "app": "default",
            "ts": first_seen[user] + 1, "amount": 0.99, "currency": "USD",
        }
        for day, user in buyer_of_day.items()
    }
    out: list[dict[str, Any]] = []
    for position, event in enumerate(raw):
        out.append(event)
        if position in buys:
            out.append(buys[position])
    return out


def valid_events(raw: Iterable[dict[str, Any]]) -> list[Any]:
    now = utc_now_ms()
    return [validate_event(e, now) for e in raw]


def read_stats(deployment: Deployment) -> Counter[str]:
    """The worker's counters (acc:, dup:, rej:, ...) summed over partitions, read directly."""
    client = deployment.redis(timeout_s=2)
    keys = Keyspace(f"rt-{deployment.name}")
    total: Counter[str] = Counter()
    try:
        for shard in client.smembers(keys.shards()):
            for name, value in client.hgetall(keys.stats(int(shard))).items():
                total[name.decode()] += int(value)
    finally:
        client.close()
    return total


def applied_per_partition(client: redis.Redis | redis.RedisCluster, deployment: Deployment
                          ) -> dict[int, int]:
    keys = Keyspace(f"rt-{deployment.name}")
    out = {}
    for shard in client.smembers(keys.shards()):
        value = client.hget(keys.meta(int(shard)), f"off:{deployment.topic}")
        out[int(shard)] = int(value) if value else 0
    return out


# ---- the figures ----------------------------------------------------------------------------


class InProcessQueries:
    """The ``retention`` CLI invoked in this interpreter (click's CliRunner) with the
    deployment's environment: the same code path as ``Deployment.cli_json`` without an
    interpreter start per query, so the 24 queries of ``assert_reports_match`` take well
    under a second instead of ~20 s."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    def cli_json(self, *args: str, **extra: str) -> Any:
        result = CliRunner().invoke(cli, [*args, "--json"], env=self.deployment.env(**extra))
        if result.exit_code != 0:
            raise AssertionError(f"retention {' '.join(args)}: {result.output}") from (
                result.exception)
        return orjson.loads(result.stdout)


def wait_moments_handled(deployment: Deployment, raw: list[dict[str, Any]],
                         worker: ManagedProcess, timeout_s: float = 60) -> None:
    """Until the worker has handled (sent or expired) every 2-day inactivity moment the
    wall clock has passed: its notification passes run after its batches are applied, and
    on a caught-up partition only after EVENT_CLOCK_IDLE_MS, so the figures' check of the
    inactive users (``assert_figures_exact``) waits for them."""
    events = valid_events(raw)
    queries = InProcessQueries(deployment)

    def handled() -> bool:
        inactive = queries.cli_json("summary")["winback"]["2"]["inactive"]
        return bool(inactive >= inactive_users(events, utc_now_ms()))

    wait_for(alive_predicate(worker, handled), timeout_s, "every passed moment handled")


def assert_figures_exact(deployment: Deployment, raw: list[dict[str, Any]]) -> None:
    """Every figure of ``tests.e2e.test_worker_exact.assert_reports_match`` equals the
    reference computed from ``raw`` (every item a valid §1 event, duplicates included)."""
    assert_reports_match(InProcessQueries(deployment), raw)  # type: ignore[arg-type]


# ---- lag and recovery -----------------------------------------------------------------------


class LagMonitor:
    """Samples applied records every 50 ms in a thread: the maximum lag (records produced
    and not yet applied) over the scenario. A sample that fails (Redis down) is skipped."""

    def __init__(self, deployment: Deployment, produced: int = 0, interval_s: float = 0.05
                 ) -> None:
        self.deployment = deployment
        self.produced = produced
        self.max_lag = 0
        self.interval_s = interval_s
        self.failed_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lag-monitor")

    def _run(self) -> None:
        client = self.deployment.redis(timeout_s=2)
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    applied = sum(applied_per_partition(client, self.deployment).values())
                except (redis.RedisError, redis.exceptions.RedisClusterException):
                    self.failed_samples += 1
                    continue
                self.max_lag = max(self.max_lag, self.produced - applied)
        finally:
            client.close()

    def __enter__(self) -> LagMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---- worker metrics -------------------------------------------------------------------------


def metric(port: int, name: str, **labels: str) -> float | None:
    """A sample of the worker's /metrics (summed over the other labels); None if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    found = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found = (found or 0.0) + sample.value
    return found


# ---- Kafka ----------------------------------------------------------------------------------


def produce_recorded(bootstrap: str, topic: str,
                     messages: Iterable[tuple[bytes | None, bytes | None]]
                     ) -> list[RecordMetadata]:
    """Send (key, value) messages, wait for every ack; the (partition, offset) of each."""

    async def run() -> list[RecordMetadata]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                                    max_request_size=4 << 20)
        await producer.start()
        try:
            futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
            return list(await asyncio.gather(*futures))
        finally:
            await producer.stop()

    return asyncio.run(run())


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: str  # topic/partition/offset of the rejected record
    index: int  # position in a JSON array, -1 for the whole message
    reason: str
    value: bytes | None
    via: str | None = None  # the re-key record it was read from, when forwarded home first
    size: int | None = None  # the length of the record's value (the dead letter: its head)
    key: bytes | None = None


def read_dead_letters(bootstrap: str, topic: str, expected: set[tuple[str, int]],
                      timeout_s: float = 30) -> list[DeadLetter]:
    """Read the DLQ from the beginning until every expected (source, index) pair was seen
    (dead letters are at-least-once, so pairs may repeat) or the deadline passes."""

    async def run() -> list[DeadLetter]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        letters: list[DeadLetter] = []
        try:
            async with asyncio.timeout(timeout_s):
                while not expected <= {(d.source, d.index) for d in letters}:
                    for part in (await consumer.getmany(timeout_ms=300)).values():
                        for record in part:
                            headers = {k: v.decode() for k, v in record.headers}
                            letters.append(DeadLetter(
                                headers["source"], int(headers["index"]), headers["reason"],
                                record.value, headers.get("via"), int(headers["size"]),
                                record.key))
        except TimeoutError:
            pass
        finally:
            await consumer.stop()
        return letters

    return asyncio.run(run())


def source_of(topic: str, meta: RecordMetadata) -> str:
    return f"{topic}/{meta.partition}/{meta.offset}"


# ---- the report -----------------------------------------------------------------------------


@dataclass
class FaultReport:
    scenario: str
    messages_produced: int
    raw: list[dict[str, Any]]  # the valid events produced (duplicates included)
    # valid events produced again on purpose (all copies): those whose effect adds up are
    # counted as duplicates, the others accepted again (METRICS.md §1)
    resent: list[dict[str, Any]] = field(default_factory=list)
    recovery_s: float | None = None
    max_lag: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def finish(self, deployment: Deployment, expected_rejects: Counter[str] | None = None
               ) -> dict[str, Any]:
        """Compare the counters with the reference, print the report, assert nothing was
        lost or double counted, and that duplicates and rejects were counted exactly.
        Copies of events whose effect adds up are duplicates; copies of the others are
        accepted again (they change no figure: ``assert_figures_exact`` proves it), so the
        accepted purchases, not all accepted events, must equal the reference's."""
        stats = read_stats(deployment)
        produced = valid_events(self.raw)
        unique = reference.dedup(produced)
        expected = Counter(f"acc:{e.app}:{e.type}" for e in unique)
        got = Counter({k: v for k, v in stats.items() if k.startswith("acc:")})
        lost = sum((expected - got).values())
        double = sum(v for k, v in (got - expected).items() if k.endswith(":purchase"))
        duplicates = sum(v for k, v in stats.items() if k.startswith("dup:"))
        expected_duplicates = (sum(map(adds_up, produced)) - sum(map(adds_up, unique))
                               + sum(map(adds_up, valid_events(self.resent))))
        rejected = {k[4:]: v for k, v in sorted(stats.items()) if k.startswith("rej:") and v}
        report = {
            "scenario": self.scenario,
            "messages_produced": self.messages_produced,
            "valid_events_produced": len(self.raw) + len(self.resent),
            "accepted": sum(got.values()),
            "duplicates": duplicates,
            "rejected": rejected,
            "lost": lost,
            "double_counted": double,
            "recovery_s": self.recovery_s,
            "max_lag": self.max_lag,
            **self.extra,
        }
        print(f"fault report: {json.dumps(report)}")
        REPORTS.append(report)
        assert (lost, double) == (0, 0), report
        assert duplicates == expected_duplicates, report
        assert rejected == dict(sorted((expected_rejects or Counter()).items())), report
        return report


def blocked_scripts(client: redis.Redis) -> int:
    """Clients held by CLIENT PAUSE in a script call: the worker's batches in flight."""
    return sum(1 for c in client.client_list()
               if "b" in c["flags"] and c["cmd"] in ("evalsha", "eval"))


def alive_predicate(process: ManagedProcess, check: Callable[[], bool]) -> Callable[[], bool]:
    """``check`` for wait_for, failing at once (with the log's path) if ``process`` died."""

    def predicate() -> bool:
        if not process.alive():
            raise AssertionError(f"{process.name} died; see {process.log_path}")
        return check()

    return predicate

