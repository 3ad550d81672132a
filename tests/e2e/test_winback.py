"""Win-back topics on real broker, Redis and workers, read by a real consumer: exactly the
expected notification ids, in replay and live mode, across kill -9; reactivation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2

from retention_tracker.agents.local_stack import wait_for
from retention_tracker.streams.calendar import utc_now_ms
from retention_tracker.streams.winback import notification_id

from .harness import Deployment, consume_all, event_messages, isolated_deployment, produce

pytestmark = pytest.mark.e2e
DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@pytest.fixture
def deployment(kafka_url: str, redis_url: str, unique: str, tmp_path: Path):
    with isolated_deployment(kafka_url, redis_url, unique, tmp_path, partitions=1) as d:
        yield d


def event(user: str, n: int, ts_ms: int, kind: str = "session", **extra: Any) -> dict[str, Any]:
    return {"event_id": f"{user}-{n}", "type": kind, "user_id": user, "ts": ts_ms, **extra}


def notifications(deployment: Deployment, days: int, expected: int) -> dict[str, dict[str, Any]]:
    """The topic's notifications by id, read to its end (extra ids show up). Delivery is at
    least once, so a copy of an id is not an extra notification."""
    records = consume_all(deployment.bootstrap, deployment.inactive_topic(days), expected,
                          timeout_s=20)
    return {orjson.loads(r.value)["notification_id"]: orjson.loads(r.value) for r in records}


def population(t0: int) -> tuple[list[dict[str, Any]], dict[int, set[str]]]:
    """20 users active for a few hours from t0; user c's late event moves its episode; a
    ticker user moves the event-time watermark 3 days on. Returns events and expected ids."""
    events, last = [], {}
    for i in range(20):
        user = f"u{i:02d}"
        kind = "purchase" if i % 5 == 0 else "session"
        extra = {"amount": 4.99} if kind == "purchase" else {}
        events.append(event(user, 0, t0 + i * HOUR_MS, "install", platform="ios"))
        events.append(event(user, 1, t0 + i * HOUR_MS + 60_000, kind, **extra))
        last[user] = t0 + i * HOUR_MS + 60_000
    events.append(event("c", 0, t0))
    events.append(event("c", 1, t0 + 12 * HOUR_MS))  # late: the t0 episode never fires
    last["c"] = t0 + 12 * HOUR_MS
    events.append(event("ticker", 0, t0 + 3 * DAY_MS))
    expected = {
        days: {notification_id("default", u, days, ms) for u, ms in last.items()}
        for days in (1, 2)
    }
    return events, expected


def test_replay_sends_exactly_the_expected_notifications_then_reactivation(
    deployment: Deployment,
) -> None:
    t0 = utc_now_ms() - 10 * DAY_MS
    events, expected = population(t0)
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(events))
    worker, _ = deployment.start_worker(CLOCK="event", INACTIVITY_THRESHOLDS="1,2")
    with worker:
        deployment.wait_applied(sent, worker=worker)
        for days in (1, 2):
            got = notifications(deployment, days, len(expected[days]))
            assert set(got) == expected[days], days
        payload = got[notification_id("default", "u00", 2, t0 + 60_000)]
        assert (payload["threshold_days"], payload["platform"], payload["value_segment"],
                payload["churn_type"], payload["purchases"]) == (2, "ios", "payer", "quick", 1)
        # u03 comes back: one reactivation naming both notifications
        back = produce(deployment.bootstrap, deployment.topic,
                       event_messages([event("u03", 9, t0 + 3 * DAY_MS + HOUR_MS)]))
        deployment.wait_applied(sent + back, worker=worker)
        (record,) = consume_all(deployment.bootstrap, deployment.reactivated_topic, 1)
        message = orjson.loads(record.value)
        episode = t0 + 3 * HOUR_MS + 60_000
        assert message["user_id"] == "u03" and message["threshold_days"] == [1, 2]
        assert message["notification_ids"] == [
            notification_id("default", "u03", d, episode) for d in (1, 2)]
        assert message["back_within_7d"] == {"1": True, "2": True}
        figures = deployment.cli_json("summary", CLOCK="event",
                                      INACTIVITY_THRESHOLDS="1,2")["winback"]
        assert {d: (f["notified"], f["reactivated"], f["inactive"], f["back_within_7d_share"])
                for d, f in figures.items()} == {"1": (21, 1, 20, 0.0476),
                                                 "2": (21, 1, 20, 0.0476)}


def test_kill_9_around_emission_keeps_the_set_of_ids_exact(deployment: Deployment) -> None:
    t0 = utc_now_ms() - 10 * DAY_MS
    events, expected = population(t0)
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(events))
    worker, _ = deployment.start_worker(CLOCK="event", INACTIVITY_THRESHOLDS="1,2",
                                        BATCH_MAX_RECORDS="5")
    with worker:
        wait_for(lambda: len(consume_all(deployment.bootstrap, deployment.inactive_topic(1),
                                         1, timeout_s=1)) > 0, 60, "first notification")
        worker.kill()
    restarted, _ = deployment.start_worker(1, CLOCK="event", INACTIVITY_THRESHOLDS="1,2")
    with restarted:
        deployment.wait_applied(sent, worker=restarted)
        for days in (1, 2):
            assert set(notifications(deployment, days, len(expected[days]))) == expected[days]


def test_live_mode_with_an_accelerated_clock(deployment: Deployment) -> None:
    now = utc_now_ms()
    # last active 47 h ago: 2-day inactive within an hour of (fast) wall clock
    events = [event(f"l{i}", 0, now - 47 * HOUR_MS + i * 60_000) for i in range(5)]
    events.append(event("fresh", 0, now))  # 2 days away: not due during the test
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(events))
    worker, _ = deployment.start_worker(CLOCK="wall", CLOCK_SPEED="600", WINBACK_TICK_MS="100")
    with worker:
        deployment.wait_applied(sent, worker=worker)
        expected = {notification_id("default", e["user_id"], 2, e["ts"]) for e in events[:5]}
        assert set(notifications(deployment, 2, len(expected))) == expected


def partition_of(key: str, partitions: int) -> int:
    """The default partitioner's choice (murmur2 of the key), as the producer makes it."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def test_two_workers_one_stopped_midway_still_send_exactly_the_set(
    kafka_url: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    t0 = utc_now_ms() - 10 * DAY_MS
    events, expected = population(t0)
    tickers = {}
    for n in range(100):  # one ticker per partition moves every partition's watermark
        tickers.setdefault(partition_of(f"ticker{n}", 4), f"ticker{n}")
    events += [event(user, 0, t0 + 3 * DAY_MS) for user in tickers.values()]
    fast = {"CLOCK": "event", "INACTIVITY_THRESHOLDS": "1,2", "SESSION_TIMEOUT_MS": "2000",
            "HEARTBEAT_MS": "500", "BATCH_MAX_RECORDS": "3"}
    with isolated_deployment(kafka_url, redis_url, unique, tmp_path) as d:
        first, _ = d.start_worker(0, **fast)
        second, _ = d.start_worker(1, **fast)
        with first, second:
            sent = produce(d.bootstrap, d.topic, event_messages(events))
            wait_for(lambda: d.applied_offsets() > 0, 60, "first batches")
            first.stop()
            d.wait_applied(sent, worker=second, timeout_s=120)
            for days in (1, 2):
                got = consume_all(d.bootstrap, d.inactive_topic(days), len(expected[days]),
                                  timeout_s=30)
                ids = {orjson.loads(r.value)["notification_id"] for r in got}
                assert ids == expected[days], days
