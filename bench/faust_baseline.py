"""The idiomatic baseline: a plain Faust agent that counts events per user in a Faust Table.

This is what a Faust tutorial would write for "keep a per-user figure": ``async for`` over
the stream, one Table update per event (each update also goes to the table's changelog
topic). It answers "what does the obvious Faust design cost on this machine?", the number
docs/architecture.md's choice of an aiokafka loop is measured against.

Run as a script in its own process, configured by environment variables, because a Faust
worker owns its event loop, signals and logging::

    BENCH_BROKER=kafka://127.0.0.1:P BENCH_TOPIC=t BENCH_REDIS=redis://... \
    BENCH_PROGRESS_KEY=k BENCH_TOTAL=1000 BENCH_APP_ID=id BENCH_DATADIR=/tmp/x \
    python bench/faust_baseline.py

On Apache Kafka the Table is what Faust's users run: every update goes to its changelog
topic, which Faust creates compacted (``cleanup.policy=compact``; the bench reads it back
and reports it as ``changelog_cleanup_policy``). Progress is written to the Redis hash
``BENCH_PROGRESS_KEY`` (``count``, ``first_ts``, ``first_count``, ``last_ts``, wall-clock
seconds): counting processed events says when it is done on either broker (the Tansu
fallback can undercount ListOffsets(latest), so lag read from it would not). The parent
stops this process by PID once ``count`` reaches
``BENCH_TOTAL``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
import orjson
import redis

from retention_tracker.bench.processes import FAUST_TABLE

#: Events between two progress writes: often enough for a smooth progress bar, rare enough
#: (one Redis round trip per 1000 events) not to weigh on the figure being measured.
REPORT_EVERY = 1000


def build_app(env: dict[str, str]) -> faust.App:
    """The Faust app, its topic, table and agent, from the BENCH_* variables."""
    total = int(env["BENCH_TOTAL"])
    progress_key = env["BENCH_PROGRESS_KEY"]
    client = redis.Redis.from_url(env["BENCH_REDIS"])
    partitions = int(env.get("BENCH_PARTITIONS", "4"))
    use_table = env.get("BENCH_TABLE", "1") == "1"
    app = faust.App(
        env["BENCH_APP_ID"],
        broker=env["BENCH_BROKER"],
        store="memory://",
        datadir=env["BENCH_DATADIR"],
        autodiscover=False,
        web_enabled=False,
        topic_partitions=partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=2.0,
        broker_heartbeat_interval=0.5,
    )
    topic = app.topic(
        env["BENCH_TOPIC"], key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw", partitions=partitions,
    )
    counts = app.Table(FAUST_TABLE, default=int, partitions=partitions)
    seen = {"count": 0, "reported": 0}

    def report(now: float, done: bool = False) -> None:
        fields: dict[str, Any] = {"count": seen["count"], "last_ts": now}
        if seen["reported"] == 0:
            fields.update(first_ts=now, first_count=seen["count"])
        if done:
            fields["done"] = 1
        client.hset(progress_key, mapping=fields)
        seen["reported"] = seen["count"]

    @app.agent(topic)
    async def count_events(stream: AsyncIterator[bytes]) -> None:
        async for value in stream:
            decoded = orjson.loads(value)
            items = decoded if isinstance(decoded, list) else (decoded,)
            if use_table:
                for event in items:
                    counts[event["user_id"]] += 1
            seen["count"] += len(items)
            if seen["reported"] == 0:
                report(time.time())  # the first processed message starts the window
            elif seen["count"] >= total:
                report(time.time(), done=True)
            elif seen["count"] - seen["reported"] >= REPORT_EVERY:
                report(time.time())

    return app


def main() -> None:
    app = build_app(dict(os.environ))
    loglevel = os.environ.get("BENCH_LOGLEVEL", "warning")
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()


if __name__ == "__main__":
    main()
