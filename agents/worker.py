"""Starting a worker process: preflight checks that fail in one line, then the Faust worker."""

from __future__ import annotations

import asyncio
import sys

import faust
import redis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from retention_tracker.streams.settings import Settings
from retention_tracker.streams.store import Keyspace

EXIT_FATAL = 2


def preflight(settings: Settings) -> str | None:
    """What stops this worker from running correctly, as one line; None when all is well."""
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
        client.ping()
        stored = client.hgetall(Keyspace(settings.key_prefix).apps())
    except redis.exceptions.AuthenticationError as exc:
        return f"Redis at {settings.redis_url} refused the credentials: {exc}"
    except redis.exceptions.RedisError as exc:
        return f"cannot reach Redis at {settings.redis_url}: {exc}"
    for app, zone in stored.items():
        wanted = settings.timezone_of(app.decode())
        if zone.decode() != wanted:
            return (
                f"app {app.decode()!r} has data in timezone {zone.decode()!r} but this worker "
                f"is configured with {wanted!r}; fix TIMEZONE/APP_TIMEZONES"
            )

    async def broker_reachable() -> str | None:
        producer = AIOKafkaProducer(**settings.kafka_options(), request_timeout_ms=5000)
        try:
            await producer.start()
        except KafkaError as exc:
            return f"cannot reach Kafka at {settings.kafka_broker}: {exc}"
        finally:
            await producer.stop()
        return None

    return asyncio.run(broker_reachable())


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    problem = preflight(settings)
    if problem:
        print(f"retention: error: {problem}", file=sys.stderr)
        return EXIT_FATAL
    from .app import create_app

    fatal: list[str] = []
    app = create_app(settings, fatal)
    worker = faust.Worker(app, loglevel=loglevel)
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    if fatal:
        print(f"retention: error: {fatal[0]}", file=sys.stderr)
        return EXIT_FATAL
    return code
