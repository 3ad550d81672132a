"""users.at_risk on a real broker, Redis and worker, read by a real consumer (METRICS.md §9):
a replay on the event clock sends exactly one message per user whose P(alive) fell below
the threshold, with the expected id, none for users the model never lets lapse, and counts
the return of one of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from retention_tracker.state.at_risk import StoredFit
from retention_tracker.state.schema import Keyspace
from retention_tracker.streams.at_risk import notification_id
from retention_tracker.streams.calendar import MS_PER_DAY, utc_now_ms
from retention_tracker.streams.lapse_model import LapseParams

from .harness import Deployment, consume_all, event_messages, isolated_deployment, produce

pytestmark = pytest.mark.e2e
HOUR_MS = 3_600_000
PAPER = LapseParams(0.243, 4.414, 0.793, 2.426)


@pytest.fixture
def deployment(kafka_url: str, redis_url: str, unique: str, tmp_path: Path):
    with isolated_deployment(kafka_url, redis_url, unique, tmp_path, partitions=1) as d:
        yield d


def event(user: str, n: int, ts_ms: int) -> dict[str, Any]:
    return {"event_id": f"{user}-{n}", "type": "session", "user_id": user, "ts": ts_ms}


def test_replay_sends_one_at_risk_message_per_lapsing_user(deployment: Deployment) -> None:
    """Users w0..w5 play on days 0, 7 and 14 at 10:00: under the paper's fit they are at risk
    from day 56 (docs/metrics.md, "Risk of lapsing, worked"); w0 comes back on day 58. One
    user plays only on day 0 (never at risk under BG/NBD); a ticker plays every 6 hours for
    60 days (always well above the threshold) and moves the event-time watermark."""
    day0 = (utc_now_ms() - 70 * MS_PER_DAY) // MS_PER_DAY * MS_PER_DAY
    events, last = [], {}
    for i in range(6):
        user = f"w{i}"
        for n, day in enumerate((0, 7, 14)):
            events.append(event(user, n, day0 + day * MS_PER_DAY + 10 * HOUR_MS))
        last[user] = day0 + 14 * MS_PER_DAY + 10 * HOUR_MS
    events.append(event("w0", 9, day0 + 58 * MS_PER_DAY + 12 * HOUR_MS))
    events.append(event("once", 0, day0 + 10 * HOUR_MS))
    events += [event("ticker", n, day0 + n * 6 * HOUR_MS) for n in range(1, 4 * 60)]
    events.sort(key=lambda e: e["ts"])
    client = redis.Redis.from_url(deployment.redis_url)
    try:  # the app's fit, kept before the worker starts (it never refits here)
        client.hset(Keyspace(f"rt-{deployment.name}").lapse_fits(), "default",
                    StoredFit("bgnbd", PAPER, -1.0, 8, day0).encode())
    finally:
        client.close()
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(events))
    worker, _ = deployment.start_worker(CLOCK="event", AT_RISK_REFIT_SECONDS="0",
                                        BATCH_MAX_RECORDS="2", INACTIVITY_THRESHOLDS="")
    with worker:
        deployment.wait_applied(sent, worker=worker)
        records = consume_all(deployment.bootstrap, deployment.at_risk_topic, 6, timeout_s=30)
    client = redis.Redis.from_url(deployment.redis_url)
    try:
        stats = {k.decode(): int(v) for k, v in client.hgetall(
            Keyspace(f"rt-{deployment.name}").stats(0)).items() if k.startswith(b"risk_")}
    finally:
        client.close()
    messages = [orjson.loads(r.value) for r in records]
    expected = {notification_id("default", user, ms) for user, ms in last.items()}
    assert {m["notification_id"] for m in messages} == expected  # none for once, ticker
    assert len(messages) == len(expected)  # one each: the replay never crashed
    for message, record in zip(messages, records, strict=True):
        assert record.key == message["user_id"].encode()
        assert (message["x"], message["t_x"], message["T"]) == (2, 2.0, 8.0)
        assert message["p_alive"] < 0.5 and message["model"] == "bgnbd"
        assert message["at_risk_since"].endswith("T00:00:00.000+00:00")
    # w0 came back two days after its moment: a return within 7 days
    assert stats == {"risk_sent:default": 6, "risk_back:default": 1,
                     "risk_back7:default": 1}
    report = deployment.cli_json("at-risk", CLOCK="event")
    assert report["messages"] == {"sent": 6, "expired": 0, "returned": 1,
                                  "back_within_7d": 1, "false_alarms": 0}
    assert report["params"] == PAPER.as_json()  # the kept fit, not refitted
