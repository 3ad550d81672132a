"""Real Tansu + real Redis + real `retention worker` processes: replay, crash, bad input."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from retention_tracker.bench import reference
from retention_tracker.cli.feeding import prepare_replay, read_jsonl
from retention_tracker.devstack.processes import wait_for
from retention_tracker.streams.calendar import MS_PER_DAY, utc_now_ms

from .harness import Deployment, consume_all, event_messages, produce, simulated

pytestmark = pytest.mark.e2e


def expected_figures(raw: list[dict[str, Any]]) -> tuple[list[Any], int]:
    """The reference's input, read by the reference's own reader of §1 (not the worker's
    parser): the valid events, and the latest time among them (the watermark)."""
    now = utc_now_ms()
    events = [e for e in (reference.read_event(obj, now) for obj in raw) if e is not None]
    return events, max(e.ts_ms for e in events)


def inactive_users(events: list[Any], now_ms: int, days: int = 2) -> int:
    """§7: users whose last_active + K days has passed by now (notified or about to be)."""
    last: dict[str, int] = {}
    for event in events:
        if event.type == "survey":  # an answer makes no one active (§1)
            continue
        last[event.user_id] = max(last.get(event.user_id, event.ts_ms), event.ts_ms)
    return sum(1 for ts in last.values() if ts + days * MS_PER_DAY <= now_ms)


def assert_reports_match(deployment: Deployment, raw: list[dict[str, Any]]) -> None:
    events, watermark = expected_figures(raw)
    last_day = reference.local_day(watermark, "UTC")
    for granularity in ("day", "week", "month"):
        for kind in ("classic", "rolling"):
            got = deployment.cli_json(
                "report", "--granularity", granularity, "--kind", kind, CLOCK="event"
            )
            expected = reference.triangle(events, "default", granularity, kind, "UTC", watermark)
            assert got["cohorts"] == expected, (granularity, kind)
        for kind in ("ltv", "payer_conversion", "roas"):
            got = deployment.cli_json(
                "report", "--granularity", granularity, "--kind", kind, CLOCK="event"
            )
            expected = reference.money_triangle(
                events, "default", granularity, kind, "UTC", watermark, "USD"
            )
            assert got["cohorts"] == expected, (granularity, kind)
    rpr = deployment.cli_json("rpr", "--granularity", "week", "--from",
                              (last_day - timedelta(days=10)).isoformat(), "--to",
                              last_day.isoformat())
    assert rpr["lifetime"] == reference.repeat_purchase_rate(events, "default", "UTC")
    by_cohort = reference.repeat_purchase_by_cohort(events, "default", "week", "UTC")
    assert {c.pop("cohort"): c for c in rpr["cohorts"]} == by_cohort
    window = {k: v for k, v in rpr["window"].items() if k not in ("from", "to")}
    assert window == reference.repeat_purchase_rate(
        events, "default", "UTC", last_day - timedelta(days=10), last_day)
    segments = {s["segment"]: s["users"] for s in deployment.cli_json("segments")["segments"]}
    for value, users in segments.items():
        rows = reference.triangle(events, "default", "day", "classic", "UTC", watermark,
                                  where={"value": value})
        assert users == sum(r["size"] for r in rows), value
    nps = deployment.cli_json("nps", "--period", "month", "--by", "churn", CLOCK="event")
    assert nps["rows"] == reference.nps(events, "default", "month", "UTC", by="churn",
                                        now_ms=watermark)
    for period in ("week", "month", "year"):
        before = utc_now_ms()
        got = deployment.cli_json("kpis", "--period", period)  # wall clock: now is now
        after = utc_now_ms()
        # the command's "now" is between the two: at midnight a period may end in between
        assert got["periods"] in [reference.kpis(events, "default", period, "UTC", now_ms=at)
                                  for at in (before, after)], period
        assert not got["periods"][-1]["complete"]  # the data runs up to now
    for where in ({"platform": "ios"}, {"value": "payer"}):
        flag = "=".join(next(iter(where.items())))
        got = deployment.cli_json("report", "--where", flag, CLOCK="event")
        expected = reference.triangle(events, "default", "day", "classic", "UTC", watermark,
                                      where=where)
        assert got["cohorts"] == expected, where
    for day in (last_day, reference.local_day(watermark - 3 * MS_PER_DAY, "UTC")):
        before = utc_now_ms()
        got = deployment.cli_json("summary", "--date", day.isoformat())
        after = utc_now_ms()
        # inactive now (wall clock): handled (sent or expired), or due and not yet handled;
        # the moments of a few users may pass while the command runs (tests/e2e/test_winback)
        inactive = got.pop("winback")["2"]["inactive"]
        assert inactive_users(events, before) <= inactive <= inactive_users(events, after)
        got.pop("forwarded")  # how producers keyed, not a figure: tests/faults/test_keying
        assert got.pop("winback_as_of")  # live totals, labelled as such
        assert got == reference.summary(events, "default", day, "UTC", now_ms=after)


def test_shuffled_file_replay_equals_reference(deployment: Deployment, tmp_path: Path) -> None:
    raw = simulated()
    shuffled = list(raw)
    random.Random(1).shuffle(shuffled)
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in shuffled) + b"\nnot json\n")
    worker, _port = deployment.start_worker()
    with worker:
        result = deployment.cli("replay", str(path))
        assert "invalid_json" in result.stdout + result.stderr
        valid, _ = prepare_replay(read_jsonl(path), utc_now_ms())
        deployment.wait_applied(len(valid), worker=worker)
        assert_reports_match(deployment, raw)


def test_kill_9_mid_replay_then_restart_gives_exact_figures(deployment: Deployment) -> None:
    raw = simulated(days=25, seed=11)
    messages = event_messages(raw)
    produce(deployment.bootstrap, deployment.topic, messages)
    worker, _ = deployment.start_worker(BATCH_MAX_RECORDS="50")
    with worker:
        wait_for(lambda: deployment.applied_offsets() > len(messages) // 4, 60, "some progress")
        worker.kill()
    assert 0 < deployment.applied_offsets() < len(messages)
    restarted, _ = deployment.start_worker(index=1)
    with restarted:
        deployment.wait_applied(len(messages), worker=restarted)
        assert_reports_match(deployment, raw)


def test_bad_input_goes_to_dead_letters_and_good_events_count(deployment: Deployment) -> None:
    now = utc_now_ms()
    good = {"event_id": "g1", "type": "session", "user_id": "u1", "ts": now - 1000}
    array = [
        {"event_id": "g2", "type": "install", "user_id": "u2", "ts": now - 2000},
        {"event_id": "b1", "type": "session", "user_id": "u2", "ts": "2024-01-01T10:00:00"},
        {"event_id": "g3", "type": "session", "user_id": "u2", "ts": now - 500},
    ]
    bad = [
        (b"x", b"{not json"),
        (b"x", orjson.dumps({"event_id": "b2", "type": "session", "user_id": 5, "ts": now})),
        (b"x", orjson.dumps({"event_id": "b3", "type": "purchase", "user_id": "u",
                             "ts": now, "amount": -1})),
        (b"x", orjson.dumps({"event_id": "b4", "type": "login", "user_id": "u", "ts": now})),
        (b"x", b"[" + b"1," * 400_000 + b"1]"),  # ~800 kB of array: too many events
        (b"x", b"\xff\xfe"),
        (b"x", None),
    ]
    sent = produce(deployment.bootstrap, deployment.topic,
                   [(b"u1", orjson.dumps(good)), (b"u2", orjson.dumps(array)), *bad])
    worker, _ = deployment.start_worker()
    with worker:
        deployment.wait_applied(sent, worker=worker)
        letters = consume_all(deployment.bootstrap, deployment.dlq, expected=8)
        assert len(letters) == 8  # no crash here: each bad message or element exactly once
        reasons = sorted(dict(r.headers)["reason"].decode() for r in letters)
        assert reasons == sorted([
            "naive_timestamp", "invalid_json", "invalid_field", "negative_amount",
            "unknown_type", "too_many_events", "invalid_utf8", "empty_message",
        ])
        naive = next(r for r in letters if dict(r.headers)["reason"] == b"naive_timestamp")
        assert naive.value == orjson.dumps(array)  # original bytes, and which element
        assert dict(naive.headers)["index"] == b"1"
        summary = deployment.cli_json("summary")
        assert (summary["dau"], summary["installs"]) == (2, 1)
        assert worker.alive()


def test_partition_keys_are_hash_tagged_per_partition(deployment: Deployment) -> None:
    raw = simulated(days=3, seed=5)
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(raw))
    worker, _ = deployment.start_worker()
    with worker:
        deployment.wait_applied(sent, worker=worker)
    client = redis.Redis.from_url(deployment.redis_url)
    keys = [k.decode() for k in client.scan_iter(match=f"rt-{deployment.name}:{{*")]
    client.close()
    tags = {k.split("{")[1].split("}")[0] for k in keys}
    assert tags == {"0", "1", "2", "3"}
