"""Is the fast answer right, and what does it cost in Redis?

Correctness: the worker's figures, read back through the same query code as ``retention
report --json`` / ``retention summary --json`` (with ``CLOCK=event``), must equal the batch
reference (``bench/reference.py``) computed from the very same workload. A throughput
figure of a worker that got the numbers wrong is worthless, so a mismatch fails the bench.

Memory: INFO ``used_memory`` before and after a replay gives the total cost; ``MEMORY
USAGE`` per key splits it into user records, dedup ids and aggregate counters; deleting the
dedup keys and watching ``used_memory`` drop double-checks the dedup share.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import redis

from retention_tracker.bench import reference
from retention_tracker.config.settings import Settings
from retention_tracker.state.connect import make_store
from retention_tracker.state.queries import cohort_report, summary_report
from retention_tracker.state.schema import key_kind, parse_stat
from retention_tracker.streams.counters import Stat
from retention_tracker.streams.events import Event, validate_event

from .contenders import Deployment

APP = "default"
TIMEZONE = "UTC"
#: Triangles compared: both kinds and all granularities are covered without paying for all
#: six reference computations (each re-reads the whole workload).
TRIANGLES = (("day", "classic"), ("day", "rolling"), ("week", "classic"), ("month", "rolling"))
_FAR_FUTURE_MS = 1 << 62  # validation only: the workload lies in the past


@dataclass(slots=True)
class Reference:
    """The batch reference's figures for the workload, computed once, compared many times."""

    watermark_ms: int
    triangles: dict[tuple[str, str], list[dict[str, Any]]]
    summaries: dict[date, dict[str, Any]]
    dau: dict[date, int]  # every day from the first to the last with data (the Flink job's)

    @classmethod
    def of(cls, raw_events: list[dict[str, Any]]) -> Reference:
        events: list[Event] = [validate_event(e, _FAR_FUTURE_MS) for e in raw_events]
        watermark = max(e.ts_ms for e in events)
        triangles = {
            (g, k): reference.triangle(events, APP, g, k, TIMEZONE, watermark)
            for g, k in TRIANGLES
        }
        last_day = reference.local_day(watermark, TIMEZONE)
        summaries = {
            day: reference.summary(events, APP, day, TIMEZONE)
            for day in (last_day, last_day - timedelta(days=7))
        }
        dau = {day: figures["dau"]
               for day, figures in reference.daily_series(events, APP, TIMEZONE).items()}
        return cls(watermark, triangles, summaries, dau)


@dataclass(slots=True)
class Verdict:
    ok: bool = True
    checks: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def check(self, name: str, got: Any, want: Any) -> None:
        self.checks.append(name)
        found = difference(got, want)
        if found:
            self.ok = False
            self.mismatches.append(f"{name}: {found}")

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": self.checks, "mismatches": self.mismatches}


def verify(deployment: Deployment, expected: Reference) -> Verdict:
    """Compare the deployment's reports with the reference; collect every difference."""
    settings = Settings.from_env(deployment.env())

    async def read() -> tuple[dict[Any, Any], dict[Any, Any]]:
        store = make_store(settings)
        try:
            triangles = {
                (g, k): (await cohort_report(store, settings, APP, g, k)).as_json()["cohorts"]
                for g, k in TRIANGLES
            }
            summaries = {
                day: (await summary_report(store, settings, APP, day)).as_json()
                for day in expected.summaries
            }
        finally:
            await store.client.aclose()
        return triangles, summaries

    triangles, summaries = asyncio.run(read())
    verdict = Verdict()
    for key, rows in expected.triangles.items():
        verdict.check(f"{deployment.name}: report --granularity {key[0]} --kind {key[1]}",
                      triangles[key], rows)
    for day, doc in expected.summaries.items():
        verdict.check(f"{deployment.name}: summary --date {day.isoformat()}", summaries[day], doc)
    return verdict


def forwarded_events(deployment: Deployment) -> int:
    """Events the worker read away from their user's home partition and forwarded there
    (its FORWARDED statistics, summed over partitions)."""
    client: redis.Redis = deployment.stack.redis()
    try:
        return sum(
            int(value)
            for p in range(deployment.stack.partitions)
            for field, value in client.hgetall(deployment.keys.stats(p)).items()
            if (parse_stat(field.decode()) or (None,))[0] is Stat.FORWARDED
        )
    finally:
        client.close()


def difference(got: Any, want: Any, path: str = "") -> str | None:
    """Where ``got`` first differs from ``want``, or None if it has everything ``want`` has.

    Only what the reference computes is compared: a report may carry more fields than the
    reference models (the worker's reports grow faster than the reference), and those are
    not the reference's to judge. Everything the reference does give must be equal.
    """
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{path or 'document'}: got {_short(got)}, expected an object"
        for key, value in want.items():
            if key not in got:
                return f"{path}{key}: missing (expected {_short(value)})"
            found = difference(got[key], value, f"{path}{key}.")
            if found:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            size = len(got) if isinstance(got, list) else "not a list"
            return f"{path.rstrip('.') or 'list'}: {size} items, expected {len(want)}"
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            label = b.get("cohort", index) if isinstance(b, dict) else index
            found = difference(a, b, f"{path}[{label}].")
            if found:
                return found
        return None
    if got != want:
        return f"{path.rstrip('.')}: got {_short(got)}, expected {_short(want)}"
    return None


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- memory --------------------------------------------------------------------------------


def key_families(client: redis.Redis, prefix: str) -> tuple[list[str], dict[str, Any]]:
    """Every key under ``prefix`` and, per key kind (``schema.key_kind``), how many keys
    and their bytes by ``MEMORY USAGE key SAMPLES 0`` (every field, not an estimate)."""
    keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    families: dict[str, Any] = {}
    for start in range(0, len(keys), 1000):  # pipelines of a bounded size: a big keyspace
        chunk = keys[start:start + 1000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(chunk, pipe.execute(), strict=True):
            family = families.setdefault(key_kind(key, prefix),
                                         {"keys": 0, "bytes": 0, "example_key": key})
            family["keys"] += 1
            family["bytes"] += int(size or 0)
    return keys, families


def redis_memory(deployment: Deployment, used: dict[str, int], users: int, events: int
                 ) -> dict[str, Any]:
    """Bytes per tracked user, split by key family; then the dedup keys are deleted to see
    how much ``used_memory`` drops (the replay's state is otherwise left as it was)."""
    client: redis.Redis = deployment.stack.redis()
    prefix = deployment.prefix
    try:
        keys, families = key_families(client, prefix)
        encodings = {}
        for family, marker in (("user_records", ":u:"), ("dedup_ids", ":dd:")):
            sample = next((k for k in keys if marker in k), None)
            if sample is not None:
                encodings[family] = {
                    "encoding": client.object("encoding", sample).decode(),
                    "fields_in_sample_key": int(client.hlen(sample)),
                }
        limits = {}
        with contextlib.suppress(redis.exceptions.ResponseError):  # CONFIG may be disabled
            limits = {k: int(v) for k, v in client.config_get("hash-max-listpack-*").items()}
        dedup_keys = [k for k in keys if ":dd:" in k]
        before_delete = int(client.info("memory")["used_memory"])
        for start in range(0, len(dedup_keys), 500):
            client.delete(*dedup_keys[start:start + 500])
        after_delete = int(client.info("memory")["used_memory"])
    finally:
        client.close()
    delta = used["after"] - used["before"]
    dedup = families.get("dedup_ids", {"bytes": 0})["bytes"]
    return {
        "distinct_users": users,
        "events": events,
        "used_memory_delta_bytes": delta,
        "bytes_per_user_total": round(delta / users, 1) if users else None,
        "families": families,
        "bytes_per_user_records": round(
            families.get("user_records", {"bytes": 0})["bytes"] / users, 1) if users else None,
        "dedup_bytes_memory_usage": dedup,
        "dedup_bytes_per_event": round(dedup / events, 1) if events else None,
        "dedup_bytes_per_user": round(dedup / users, 1) if users else None,
        "used_memory_drop_on_deleting_dedup_bytes": before_delete - after_delete,
        "encodings": encodings,
        "hash_listpack_limits": limits,
    }
