"""Starting a worker process: preflight checks that fail in one line, then the Faust worker."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import cast

import faust
import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.exceptions import RedisClusterException

from retention_tracker.agents.rekey import partition_count_problem
from retention_tracker.config.settings import Settings, mask_url
from retention_tracker.state.connect import make_sync_client, redis_failure
from retention_tracker.state.layout import Layout, layout_problem
from retention_tracker.state.registry import timezone_problem
from retention_tracker.state.schema import Keyspace
from retention_tracker.streams import engine

EXIT_FATAL = 2
# CPython's young-generation threshold (700 container allocations) makes a batch of 20,000
# events run hundreds of collections, each walking every young list, dict, set and tuple a
# plan builds; none of them holds a cycle (the states and events are msgspec Structs with
# gc=False). A higher threshold collects the same garbage far less often: 13-20% of the pure
# path's CPU (BENCHMARKS.md "Second session of tries"). Cycles are still collected.
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """The worker's collector settings (also taken by bench/plan_cpu.py, so the pure path
    is measured as the worker runs it)."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()  # what was imported and built so far: never garbage, never walked again


def preflight(settings: Settings) -> str | None:
    """What stops this worker from running correctly, as one line; None when all is well."""
    where = mask_url(settings.redis_url)
    try:
        client = make_sync_client(settings)
        try:
            client.ping()
            keys = Keyspace(settings.key_prefix)
            # bytes replies (no decode_responses): redis-py types them bytes | str
            stored = cast("dict[bytes, bytes]", client.hgetall(keys.apps()))
            topology = cast("dict[bytes, bytes]", client.hgetall(keys.topology()))
            built_with = {k.decode(): int(v) for k, v in topology.items()}
            layout = cast("dict[bytes, bytes]", client.hgetall(keys.layout()))
        finally:
            client.close()
    except (redis.exceptions.RedisError, RedisClusterException) as exc:
        return redis_failure(exc, where)
    for app, zone in stored.items():
        problem = timezone_problem(app.decode(), zone.decode(),
                                   settings.timezone_of(app.decode()))
        if problem:
            return problem
    problem = layout_problem({k.decode(): int(v) for k, v in layout.items()},
                             Layout(keys, settings.user_buckets, settings.due_buckets).counts())
    if problem:
        return problem

    async def broker_problem() -> str | None:
        admin = AIOKafkaAdminClient(**settings.kafka_options(), request_timeout_ms=5000)
        try:
            await admin.start()
            topics = await admin.describe_topics()  # all topics: auto-creates nothing
        except KafkaError as exc:
            return f"cannot reach Kafka at {settings.kafka_broker}: {exc}"
        finally:
            await admin.close()
        consumed = {*settings.input_topics, settings.rekey_topic}
        counts = {t["topic"]: len(t["partitions"]) for t in topics
                  if t["error_code"] == 0 and t["topic"] in consumed}
        return partition_count_problem(counts, built_with, settings.key_prefix)

    return asyncio.run(broker_problem())


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    try:  # the plan's engine (ENGINE), said at start: a figure is the engine's that ran
        engine.select(settings.engine)
    except engine.EngineError as exc:
        print(f"retention: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    problem = preflight(settings)
    if problem:
        print(f"retention: error: {problem}", file=sys.stderr)
        return EXIT_FATAL
    print(f"retention: engine: {engine.describe()}", file=sys.stderr)
    from retention_tracker.agents.app import create_app, stop_reason

    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel)
    # Faust's terminal spinner (kept at WARNING and above) sets the root logger to DEBUG to
    # spin on every record: every debug call of aiokafka and redis-py then builds a record,
    # ~3% of a worker's CPU (BENCHMARKS.md "Throughput"). A service needs no spinner.
    worker.spinner = None
    tune_gc()
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    reason = stop_reason(app)
    if reason is not None:
        print(f"retention: error: {reason}", file=sys.stderr)
        return EXIT_FATAL
    return code
