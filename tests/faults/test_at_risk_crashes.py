"""kill -9 of the worker while it sends ``users.at_risk`` messages (METRICS.md §9): after the
restarts every episode's notification id is on the topic (none missing, none foreign, a
redelivered copy identical to the first, as §7 lets a consumer drop it by id), and the
at-risk counters and every figure equal the plain reference's, each episode counted once."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from retention_tracker.bench import reference
from retention_tracker.devstack.processes import wait_for
from retention_tracker.state.at_risk import StoredFit
from retention_tracker.streams.at_risk import notification_id
from retention_tracker.streams.calendar import MS_PER_DAY, utc_now_ms
from retention_tracker.streams.lapse_model import LapseParams
from tests.e2e.harness import (
    Deployment,
    consume_all,
    event_messages,
    isolated_deployment,
    produce,
)

from .support import (
    FAST_GROUP,
    FaultReport,
    alive_predicate,
    assert_figures_exact,
    quick_client,
    read_stats,
    wait_moments_handled,
)

pytestmark = pytest.mark.e2e
HOUR_MS = 3_600_000
PAPER = LapseParams(0.243, 4.414, 0.793, 2.426)
USERS = 60


@pytest.fixture
def deployment(kafka_url: str, redis_url: str, unique: str, tmp_path: Path
               ) -> Iterator[Deployment]:
    """One partition: the ticker moves the event-time watermark of every user's partition."""
    with isolated_deployment(kafka_url, redis_url, unique, tmp_path, partitions=1) as d:
        yield d


def event(user: str, n: int, ts_ms: int) -> dict[str, Any]:
    return {"event_id": f"{user}-{n}", "type": "session", "user_id": user, "ts": ts_ms}


def lapsing_history(day0: int, end_ms: int) -> list[dict[str, Any]]:
    """User i plays on days s, s+7 and s+14 at 10:00 (s = i mod 30): under the paper's fit
    it is at risk from day s+56 (docs/metrics.md, "Risk of lapsing, worked"), so the
    moments come over 30 days of the replay; every 5th is back on day s+58 (within 7 days
    of its moment), every 7th on day s+70. A ticker every 6 hours up to ``end_ms`` moves
    the event-time watermark, so each moment is found within 6 hours of it: fresh whatever
    the batching (batches of up to 4 records give the reference's episodes of one record
    at a time for this history; the worker reads 2 at a time)."""
    events = [event("ticker", n, day0 + n * 6 * HOUR_MS)
              for n in range((end_ms - day0) // (6 * HOUR_MS) + 1)]
    for i in range(USERS):
        user, start = f"w{i:02d}", i % 30
        for n, day in enumerate((0, 7, 14)):
            events.append(event(user, n, day0 + (start + day) * MS_PER_DAY + 10 * HOUR_MS))
        for n, back in ((5, 58), (7, 70)):
            if i % n == 0:
                events.append(event(user, n, day0 + (start + back) * MS_PER_DAY + 12 * HOUR_MS))
    return sorted(events, key=lambda e: e["ts"])


def recorded(deployment: Deployment) -> int:
    """At-risk messages the worker sent and recorded so far."""
    return read_stats(deployment)["risk_sent:default"]


def test_kill_9_while_at_risk_messages_are_sent(deployment: Deployment) -> None:
    """Scenario 16: two SIGKILLs while the moments of a replay on the event clock are being
    sent (after a random share of the messages, from a printed seed: FAULT_SEED), a
    restart after each; the third life finishes."""
    seed = int(os.environ.get("FAULT_SEED", random.randrange(1 << 30)))
    print(f"FAULT_SEED={seed}")
    rng = random.Random(seed)
    now = utc_now_ms()
    day0 = (now - 110 * MS_PER_DAY) // MS_PER_DAY * MS_PER_DAY
    raw = lapsing_history(day0, now - HOUR_MS)  # up to now: the figures' last periods run on
    stream = [e for e in (reference.read_event(x, now) for x in raw) if e]
    expected = reference.at_risk_episodes([[e] for e in stream], "bgnbd",
                                          (PAPER.r, PAPER.alpha, PAPER.a, PAPER.b), 0.5,
                                          MS_PER_DAY)
    assert len(expected["sent"]) == USERS and not expected["expired"]
    client = quick_client(deployment.redis_url)
    try:  # the app's fit, kept before the worker starts (it never refits here)
        client.hset(deployment.keys.lapse_fits(), "default",
                    StoredFit("bgnbd", PAPER, -1.0, USERS, day0).encode())
    finally:
        client.close()
    total = produce(deployment.bootstrap, deployment.topic, event_messages(raw))
    first = rng.randrange(5, 25)
    targets = [first, first + rng.randrange(10, 25)]  # apart: each life sends some
    env = {**FAST_GROUP, "CLOCK": "event", "AT_RISK_REFIT_SECONDS": "0",
           "BATCH_MAX_RECORDS": "2"}
    killed_at: list[int] = []
    with contextlib.ExitStack() as stack:
        for life, target in enumerate(targets):
            worker, _ = deployment.start_worker(index=life, **env)
            stack.enter_context(worker)
            wait_for(alive_predicate(worker, lambda t=target: recorded(deployment) >= t),
                     90, f"{target} at-risk messages recorded by life {life}")
            worker.kill()
            killed_at.append(recorded(deployment))
        worker, _ = deployment.start_worker(index=len(targets), **env)
        stack.enter_context(worker)
        deployment.wait_applied(total, worker=worker)
        wait_for(alive_predicate(worker, lambda: recorded(deployment) >= USERS), 60,
                 "every at-risk message recorded")
        wait_moments_handled(deployment, raw, worker)
        report = deployment.cli_json("at-risk", CLOCK="event")
    records = consume_all(deployment.bootstrap, deployment.at_risk_topic, USERS)
    copies: dict[str, list[bytes]] = {}
    for record in records:
        copies.setdefault(orjson.loads(record.value)["notification_id"], []).append(
            record.value)
    assert set(copies) == {notification_id("default", user, ms)
                           for user, ms in expected["sent"]}
    assert all(len(set(values)) == 1 for values in copies.values())  # copies, identical
    redelivered = len(records) - len(copies)
    assert report["messages"] == {
        "sent": USERS, "expired": 0, "returned": len(expected["returns"]),
        "back_within_7d": len(expected["back_7d"]),
        "false_alarms": len(expected["false_alarms"])}
    assert all(n < USERS for n in killed_at), killed_at  # each kill while sending
    FaultReport("16 worker kill -9 x2 while sending users.at_risk", total, raw,
                extra={"seed": seed, "at_risk_messages_at_kills": killed_at,
                       "redelivered_copies": redelivered}).finish(deployment)
    assert_figures_exact(deployment, raw)
