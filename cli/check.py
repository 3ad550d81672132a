"""``retention check``: is this environment fit to run a worker? One line per check.

It reads the same settings as a worker (``Settings.from_env``) and checks, in order: the
settings themselves; the plan's engine (native, or the Python fallback); Redis (reachable,
authenticated, its version, persistence and eviction policy on every master; for a Redis
Cluster its state and slot coverage); the broker (reachable); the input topics (exist, equal
partition counts, the counts the state was built with); the DLQ, re-key and output topics
(exist, or the worker creates them on start); the app timezones recorded in Redis against
the configured ones; how the producers key their events (the share of recent events
forwarded to their home partition).
Each check prints ``ok``, ``warn``, ``FAIL`` (or ``skip`` when an earlier failure makes it
impossible) and what exactly is wrong; the exit status is 1 if
any check FAILed. ``--json`` prints the same as a list of objects. Passwords in URLs are
masked, and never appear in any message.

Nothing is written: Redis is only read, and the broker is asked for the metadata of all
topics, which creates none (a metadata request naming a topic would auto-create it).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import click
import orjson
import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.exceptions import RedisClusterException

from retention_tracker.agents.rekey import partition_count_problem
from retention_tracker.cli.feeding import kafka_problem, quiet_kafka_logs
from retention_tracker.config.settings import ConfigError, Settings, mask_url
from retention_tracker.devstack.redis_server import HASH_MAX_LISTPACK_ENTRIES
from retention_tracker.state.connect import SyncClient, make_sync_client, redis_failure
from retention_tracker.state.registry import timezone_problem
from retention_tracker.state.schema import Keyspace, parse_stat, text
from retention_tracker.streams import engine
from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.counters import Stat
from retention_tracker.streams.events import FORWARD_CAUSES

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
TIMEOUT_S = 5.0
FORWARDED_WARN_SHARE = 0.01  # above this share of recent events, producers need fixing


@dataclass(frozen=True, slots=True)
class _Stored:
    """What the checks need from Redis, read once."""

    timezones: dict[str, str]
    partition_counts: dict[str, int]
    routes: Counter[str]  # events by where they were read (home or a forward cause), 2 days


@dataclass(frozen=True, slots=True)
class Check:
    check: str
    status: str
    detail: str


def _secrets(*urls: str) -> list[str]:
    found = []
    for url in urls:
        for part in url.split(","):
            try:
                password = urlsplit(part.strip()).password
            except ValueError:
                continue
            if password:
                found += [password, unquote(password)]
    return found


class _Report:
    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.checks: list[Check] = []

    def add(self, name: str, status: str, detail: str) -> None:
        for secret in self.secrets:  # whatever a library put in its message
            detail = detail.replace(secret, "***")
        self.checks.append(Check(name, status, " ".join(detail.split())))


def _redis_checks(settings: Settings, report: _Report) -> _Stored | None:
    """Reachability, version, persistence, eviction (on every master of a cluster), and for
    a cluster its state and slot coverage; returns what the later checks need (None when
    Redis could not be read)."""
    where = mask_url(settings.redis_url)
    try:
        client = make_sync_client(settings, TIMEOUT_S, retries=False)
    except ValueError as exc:
        report.add("redis", FAIL, f"REDIS_URL {where} is not usable: {exc}")
        return None
    except (redis.exceptions.RedisError, RedisClusterException) as exc:
        report.add("redis", FAIL, redis_failure(exc, where))
        return None
    try:
        client.ping()
        server = _one(client.info("server"))
        persistence = _per_master(client, lambda **on: client.info("persistence", **on))
        memory = _per_master(client, lambda **on: client.info("memory", **on))
        cluster = _cluster_layout(client) if isinstance(client, redis.RedisCluster) else None
        stored = _read_stored(client, Keyspace(settings.key_prefix))
        try:
            config = _per_master(client, lambda **on: {
                **client.config_get("appendfsync", **on), **client.config_get("save", **on),
                **client.config_get("hash-max-*-entries", **on)})
        except redis.exceptions.ResponseError:  # CONFIG is often disabled on managed Redis
            config = {}
    except (redis.exceptions.RedisError, RedisClusterException) as exc:
        report.add("redis", FAIL, redis_failure(exc, where))
        return None
    finally:
        client.close()
    kind = f"Redis Cluster ({len(persistence)} masters)" if cluster else "Redis"
    report.add("redis", OK, f"{kind} {server.get('redis_version', '?')} at {where} answers PING")
    if cluster is not None:
        report.add(*cluster.state_check())
        report.add(*cluster.slots_check())
    _persistence_check(report, persistence, config)
    _memory_check(report, memory)
    _encoding_check(report, config)
    return stored


def _one(reply: Any) -> dict[str, Any]:
    """An INFO reply: one node's dict (a cluster client may key it by node)."""
    if reply and all(isinstance(v, dict) for v in reply.values()):
        return dict(next(iter(reply.values())))
    return dict(reply)


def _per_master(client: SyncClient, read: Callable[..., Any]) -> dict[str, dict[str, Any]]:
    """``read`` on the single Redis, or on every master of a cluster: master -> reply."""
    if isinstance(client, redis.RedisCluster):
        masters = client.get_primaries()
        replies = read(target_nodes=masters)
        if len(masters) == 1:
            replies = {masters[0].name: replies}
        return {name: dict(reply) for name, reply in sorted(replies.items())}
    return {"redis": dict(read())}


def _agreed(values: dict[str, Any]) -> tuple[Any, list[str]]:
    """The value most masters have, and the masters with another one."""
    common = Counter(map(str, values.values())).most_common(1)[0][0]
    return common, sorted(name for name, v in values.items() if str(v) != common)


def _except(others: list[str]) -> str:
    return f" (not on {', '.join(others)})" if others else ""


def _persistence_check(report: _Report, persistence: dict[str, dict[str, Any]],
                       config: dict[str, dict[str, Any]]) -> None:
    aof, others = _agreed({n: int(p.get("aof_enabled", 0)) for n, p in persistence.items()})
    if aof == "1" and not others:
        fsync, odd = _agreed({n: c.get("appendfsync", "?") for n, c in config.items()}) \
            if config else ("?", [])
        if fsync == "no" or odd:
            report.add("redis persistence", WARN,
                       f"appendonly yes but appendfsync {fsync}{_except(odd)}: the OS decides "
                       "when writes reach the disk, a machine crash can lose many seconds of "
                       "state and offsets")
        else:
            report.add("redis persistence", OK, f"appendonly yes, appendfsync {fsync}")
        return
    without = [n for n, p in persistence.items() if not int(p.get("aof_enabled", 0))]
    snapshots = {c.get("save") for n, c in config.items() if n in without}
    save = next(iter(snapshots)) if len(snapshots) == 1 else None
    what = (f"only RDB snapshots (save {save!r}) survive" if save
            else "nothing survives" if save == "" else "at most RDB snapshots survive")
    on = "" if len(persistence) == 1 else f" on {', '.join(without)}"
    report.add("redis persistence", WARN,
               f"appendonly is off{on}: after a Redis restart {what}; all state and offsets "
               "written since are lost (set appendonly yes)")


def _memory_check(report: _Report, memory: dict[str, dict[str, Any]]) -> None:
    evicting = {n: str(m.get("maxmemory_policy", "noeviction")) for n, m in memory.items()
                if int(m.get("maxmemory", 0) or 0)
                and m.get("maxmemory_policy", "noeviction") != "noeviction"}
    if evicting:
        policy, _ = _agreed(evicting)
        on = "" if len(memory) == 1 else f" on {', '.join(sorted(evicting))}"
        report.add("redis memory", WARN,
                   f"maxmemory-policy {policy}{on}: under memory pressure Redis evicts keys, and "
                   "an evicted state key silently corrupts the figures (use noeviction)")
    else:
        policy, _ = _agreed({n: m.get("maxmemory_policy", "noeviction")
                             for n, m in memory.items()})
        report.add("redis memory", OK, f"maxmemory-policy {policy}")


def _encoding_check(report: _Report, config: dict[str, dict[str, Any]]) -> None:
    """Redis keeps a hash of up to ``hash-max-listpack-entries`` fields as a listpack that
    each HINCRBY scans: above the tested value the counters cost Redis 1.4-2x the CPU per
    event (devstack/redis_server.py). No line where CONFIG is disabled (managed Redis)."""
    limits: dict[str, int] = {}
    for name, values in config.items():
        limit = values.get("hash-max-listpack-entries", values.get("hash-max-ziplist-entries"))
        if limit is not None:
            limits[name] = int(limit)
    if not limits:
        return
    limit, others = _agreed(limits)
    high = sorted(n for n, value in limits.items() if value > HASH_MAX_LISTPACK_ENTRIES)
    if high:
        on = "" if len(limits) == 1 else f" on {', '.join(high)}"
        report.add("redis encodings", WARN,
                   f"hash-max-listpack-entries {limit}{on}: the counters' hashes stay "
                   "listpacks scanned on every update, Redis spends 1.4-2x the CPU per event "
                   f"(set {HASH_MAX_LISTPACK_ENTRIES}; docs/operations.md)")
    else:
        report.add("redis encodings", OK, f"hash-max-listpack-entries {limit}{_except(others)}")


CLUSTER_SLOTS = 16384


@dataclass(frozen=True, slots=True)
class _ClusterLayout:
    """What CLUSTER INFO and CLUSTER SLOTS say, as one seed node sees it."""

    info: dict[str, Any]
    replicas: dict[str, int]  # master -> its replicas
    covered: int  # slots served by a master

    def state_check(self) -> tuple[str, str, str]:
        i = self.info
        state = str(i.get("cluster_state", "?"))
        detail = (f"cluster_state {state}, {i.get('cluster_size', '?')} masters with slots, "
                  f"{i.get('cluster_known_nodes', '?')} nodes known, slots "
                  f"pfail {i.get('cluster_slots_pfail', '?')} fail "
                  f"{i.get('cluster_slots_fail', '?')}")
        if state != "ok":
            return "redis cluster", FAIL, detail + ": the cluster refuses queries"
        if int(i.get("cluster_slots_pfail", 0) or 0):
            return "redis cluster", WARN, detail + ": a node may be failing"
        return "redis cluster", OK, detail

    def slots_check(self) -> tuple[str, str, str]:
        shown = f"{self.covered}/{CLUSTER_SLOTS} slots served by {len(self.replicas)} masters"
        if self.covered < CLUSTER_SLOTS:
            return ("redis slots", FAIL,
                    f"{shown}: keys of the other slots cannot be read or written")
        alone = sorted(m for m, n in self.replicas.items() if n == 0)
        counts = sorted(set(self.replicas.values()))
        each = f"each with {counts[0]} replica(s)" if len(counts) == 1 else \
            f"with {counts[0]}-{counts[-1]} replicas"
        if alone:
            return ("redis slots", WARN,
                    f"{shown}, {each}: {', '.join(alone)} have no replica, so their failure "
                    "stops the cluster until they are back (and loses what their disk lost)")
        return "redis slots", OK, f"{shown}, {each}"


def _cluster_layout(client: redis.RedisCluster) -> _ClusterLayout:
    info = _one(client.cluster_info())
    slots: Any = client.cluster_slots()
    if slots and all(isinstance(v, dict) and "primary" not in v for v in slots.values()):
        slots = next(iter(slots.values()))  # keyed by the node asked
    replicas: dict[str, int] = {}
    covered = 0
    for (start, end), owner in slots.items():
        covered += int(end) - int(start) + 1
        host, port = owner["primary"][:2]
        name = f"{text(host)}:{port}"
        replicas[name] = max(replicas.get(name, 0), len(owner.get("replicas", [])))
    return _ClusterLayout(info, replicas, covered)


def _read_stored(client: SyncClient, keys: Keyspace) -> _Stored:
    today = int(time.time() * 1000) // MS_PER_DAY
    recent = {today - 1, today}
    routes: Counter[str] = Counter()
    shards = sorted(int(s) for s in client.smembers(keys.shards()))
    pipe = client.pipeline(transaction=False)  # in a cluster: every master at once
    for shard in shards:
        pipe.hgetall(keys.stats(shard))
    for stats in pipe.execute():
        for name, value in stats.items():
            stat = parse_stat(text(name))
            if stat is not None and stat[0] is Stat.ROUTE and stat[1] in recent:
                routes[stat[2]] += int(value)
    return _Stored(
        timezones={text(k): text(v) for k, v in client.hgetall(keys.apps()).items()},
        partition_counts={text(k): int(v) for k, v in
                          client.hgetall(keys.topology()).items()},
        routes=routes,
    )


async def _topics(settings: Settings) -> tuple[int, dict[str, int]]:
    admin = AIOKafkaAdminClient(**settings.kafka_options(),
                                request_timeout_ms=int(TIMEOUT_S * 1000))
    try:
        async with asyncio.timeout(2 * TIMEOUT_S):
            await admin.start()
            cluster = await admin.describe_cluster()
            topics = {
                t["topic"]: len(t["partitions"])
                for t in await admin.describe_topics()  # all topics: auto-creates nothing
                if t["error_code"] == 0
            }
        return len(cluster.get("brokers", [])), topics
    finally:
        await admin.close()


def _kafka_checks(settings: Settings, report: _Report, stored: _Stored | None) -> None:
    where = mask_url(settings.kafka_broker)
    try:
        with quiet_kafka_logs():
            brokers, topics = asyncio.run(_topics(settings))
    except (KafkaError, OSError, TimeoutError) as exc:
        report.add("broker", FAIL, kafka_problem(exc, where))
        for name in ("input topics", "dlq topic", "rekey topic", "output topics"):
            report.add(name, SKIP, "not checked: the broker is unreachable")
        return
    report.add("broker", OK, f"Kafka at {where} answers ({brokers} broker(s))")

    inputs = list(settings.input_topics)
    missing = [t for t in inputs if t not in topics]
    counts = {t: topics[t] for t in inputs if t in topics}
    if settings.rekey_topic in topics:
        counts[settings.rekey_topic] = topics[settings.rekey_topic]
    problem = partition_count_problem(
        counts, stored.partition_counts if stored else {}, settings.key_prefix)
    if missing:
        report.add("input topics", FAIL,
                   f"input topic(s) {', '.join(missing)} do not exist (create them, best keyed "
                   "by user_id; the worker does not)")
    elif problem:
        report.add("input topics", FAIL, problem)
    else:
        shown = ", ".join(f"{t} ({counts[t]} partitions)" for t in inputs)
        report.add("input topics", OK, shown)

    def state(topic: str) -> str:
        return f"{topic} exists" if topic in topics else f"{topic} will be created on start"

    if settings.dlq_topic in inputs:
        report.add("dlq topic", FAIL,
                   f"DLQ_TOPIC {settings.dlq_topic} is an input topic: rejected messages "
                   "would be consumed again")
    else:
        report.add("dlq topic", OK, state(settings.dlq_topic))
    if settings.rekey_topic in (*inputs, settings.dlq_topic):
        report.add("rekey topic", FAIL,
                   f"REKEY_TOPIC {settings.rekey_topic} is also an input or the DLQ topic")
    else:
        report.add("rekey topic", OK, state(settings.rekey_topic))
    outputs = [settings.reactivated_topic,
               *(settings.inactive_topic(d) for d in settings.every_inactivity_threshold)]
    clash = [t for t in outputs if t in (*inputs, settings.dlq_topic, settings.rekey_topic)]
    if clash:
        report.add("output topics", FAIL,
                   f"output topic(s) {', '.join(clash)} also used as input or DLQ topic")
    else:
        report.add("output topics", OK, "; ".join(state(t) for t in outputs))


def _keying_check(report: _Report, stored: _Stored | None) -> None:
    """Events away from their home partition are forwarded (and counted exactly), but each
    costs a second trip through Kafka: say so when producers send many."""
    if stored is None:
        report.add("keying", SKIP, "not checked: Redis could not be read")
        return
    total = sum(stored.routes.values())
    away = {c: stored.routes[c] for c in FORWARD_CAUSES if stored.routes[c]}
    share = sum(away.values()) / total if total else 0.0
    if share > FORWARDED_WARN_SHARE:
        causes = ", ".join(f"{c} {n}" for c, n in sorted(away.items(), key=lambda x: -x[1]))
        report.add("keying", WARN,
                   f"{share:.1%} of the last 2 days' events were read away from their user's "
                   f"partition and forwarded ({causes}): key each message by its user_id, "
                   "with Kafka's default (murmur2) partitioner, one user per message")
    elif total:
        report.add("keying", OK, f"{share:.1%} of the last 2 days' {total} events forwarded")
    else:
        report.add("keying", OK, "no events read in the last 2 days")


def _timezone_checks(settings: Settings, report: _Report, stored_all: _Stored | None
                     ) -> None:
    if stored_all is None:
        report.add("timezones", SKIP, "not checked: Redis could not be read")
        return
    stored = stored_all.timezones
    conflicts = [problem for app, zone in sorted(stored.items())
                 if (problem := timezone_problem(app, zone, settings.timezone_of(app)))]
    if conflicts:
        report.add("timezones", FAIL,
                   "; ".join(conflicts) + " (a worker would refuse to start)")
    elif stored:
        report.add("timezones", OK, f"{len(stored)} app(s) with data, timezones agree")
    else:
        report.add("timezones", OK, f"no app has data under key prefix {settings.key_prefix!r}")


def _engine_check(settings: Settings, report: _Report) -> None:
    """Which engine a worker with these settings runs (ENGINE, streams/engine.py): the
    fallback is a warning (it is exact, only slower), ENGINE=native unbuilt a failure."""
    try:
        native = engine.resolve(settings.engine)
    except engine.EngineError as exc:
        report.add("engine", FAIL, str(exc))
        return
    report.add("engine", OK if native is not None else WARN, engine.describe(settings.engine))


def run_checks() -> list[Check]:
    """Every check, in order; never raises for an expected failure."""
    report = _Report(_secrets(os.environ.get("REDIS_URL", ""), os.environ.get("KAFKA_BROKER", "")))
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        report.add("settings", FAIL, str(exc))
        for name in ("engine", "redis", "broker", "timezones", "keying"):
            report.add(name, SKIP, "not checked: the settings are invalid")
        return report.checks
    report.add("settings", OK,
               f"group {settings.group_id!r}, key prefix {settings.key_prefix!r}, input "
               f"{', '.join(settings.input_topics)}")
    _engine_check(settings, report)
    stored = _redis_checks(settings, report)
    _kafka_checks(settings, report, stored)
    _timezone_checks(settings, report, stored)
    _keying_check(report, stored)
    return report.checks


@click.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable list of checks")
def check(as_json: bool) -> None:
    """Check the settings, Redis, the broker, the topics and the app timezones; exit 1 if
    anything FAILs."""
    checks = run_checks()
    if as_json:
        click.echo(orjson.dumps([asdict(c) for c in checks]).decode())
    else:
        width = max(len(c.check) for c in checks)
        for c in checks:
            click.echo(f"{c.status:<4}  {c.check:<{width}}  {c.detail}")
    if any(c.status == FAIL for c in checks):
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover - `python -m retention_tracker.cli.check`
    check()
