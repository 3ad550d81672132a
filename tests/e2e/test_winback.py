"""Win-back topics on real broker, Redis and workers, read by a real consumer: exactly the
expected notification ids, in replay and live mode, across kill -9; reactivation."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2

from retention_tracker.bench import reference
from retention_tracker.devstack.processes import wait_for
from retention_tracker.streams.calendar import MS_PER_DAY, utc_now_ms
from retention_tracker.streams.winback import notification_id

from .harness import (
    Deployment,
    consume_all,
    event_messages,
    isolated_deployment,
    produce,
    read_topic,
)

pytestmark = pytest.mark.e2e
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
    ticker user, active every 2 hours, moves the event-time watermark 3 days on (so each
    moment is found at most 2 hours late: fresh). Returns events and expected ids."""
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
    events += [event("ticker", n, t0 + n * 2 * HOUR_MS) for n in range(1, 37)]
    expected = {
        days: {notification_id("default", u, days, ms) for u, ms in last.items()}
        for days in (1, 2)
    }
    return events, expected


def test_replay_sends_exactly_the_expected_notifications_then_reactivation(
    deployment: Deployment,
) -> None:
    t0 = utc_now_ms() - 10 * MS_PER_DAY
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
                       event_messages([event("u03", 9, t0 + 3 * MS_PER_DAY + HOUR_MS)]))
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
    t0 = utc_now_ms() - 10 * MS_PER_DAY
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
    t0 = utc_now_ms() - 10 * MS_PER_DAY
    events, expected = population(t0)
    tickers = {}
    for n in range(100):  # one ticker per partition moves every partition's watermark
        tickers.setdefault(partition_of(f"ticker{n}", 4), f"ticker{n}")
    ticks = [e for e in events if e["user_id"] == "ticker"]
    ticks += [event(user, n, t0 + n * 2 * HOUR_MS)  # every 2 hours for 3 days: fresh
              for n in range(1, 37) for user in tickers.values()]
    # in time order: a ticker event arriving after later ones would be a late event, and
    # its user's earlier activity a (false) episode
    events = [e for e in events if e["user_id"] != "ticker"] + sorted(ticks,
                                                                      key=lambda e: e["ts"])
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


def gappy_history(t0: int, users: int, seed: int) -> list[dict[str, Any]]:
    """Users active with gaps of hours to days over ~20 days, and a ticker every hour (so
    the event clock finds each moment within the hour), in time order like a replay."""
    rng = random.Random(seed)
    events = [event("ticker", n, t0 + n * HOUR_MS) for n in range(24 * 21)]
    for u in range(users):
        ts = t0 + rng.randrange(48) * HOUR_MS
        for n in range(rng.randint(2, 9)):
            events.append(event(f"g{u:03d}", n, ts))
            ts += rng.choice([2, 10, 20, 30, 50, 70, 100]) * HOUR_MS
            if ts > t0 + 20 * MS_PER_DAY:
                break
    return sorted(events, key=lambda e: e["ts"])


def reference_episodes(events: list[dict[str, Any]], max_delay_ms: int = MS_PER_DAY
                       ) -> dict[str, set[tuple[str, int, int]]]:
    now = utc_now_ms()
    stream = [e for e in (reference.read_event(x, now) for x in events) if e]
    return reference.inactivity_episodes(stream, (1, 2), max_delay_ms)


def test_replayed_history_notifies_every_episode_and_every_return(
    deployment: Deployment,
) -> None:
    """The event clock on a replay cut into batches of 200 records: exactly the episodes and
    returns a plain reading of the contract finds (gaps inside one batch included), one
    message each, and the figures count them."""
    t0 = utc_now_ms() - 30 * MS_PER_DAY
    events = gappy_history(t0, users=60, seed=17)
    expected = reference_episodes(events)
    assert len(expected["sent"]) > 100 and len(expected["returns"]) > 50  # a real workload
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(events))
    env = {"CLOCK": "event", "INACTIVITY_THRESHOLDS": "1,2", "BATCH_MAX_RECORDS": "200"}
    with deployment.start_worker(**env)[0] as worker:
        deployment.wait_applied(sent, worker=worker)
        got: set[tuple[str, int, int]] = set()
        for days in (1, 2):
            for record in read_topic(deployment.bootstrap, deployment.inactive_topic(days)):
                note = orjson.loads(record.value)
                got.add((note["user_id"], days, iso_to_ms(note["last_active"])))
        backs = [orjson.loads(r.value)
                 for r in read_topic(deployment.bootstrap, deployment.reactivated_topic)]
        figures = deployment.cli_json("summary", **env)["winback"]
    assert got == expected["sent"]
    returns = {(b["user_id"], days, iso_to_ms(b["last_active"])) for b in backs
               for days in b["threshold_days"]}
    assert returns == expected["returns"]
    assert len(backs) == len({(b["user_id"], b["last_active"]) for b in backs})  # one each
    for days in (1, 2):
        count = sum(1 for _, d, _ in expected["sent"] if d == days)
        assert figures[str(days)]["notified"] == count
        assert figures[str(days)]["reactivated"] == sum(
            1 for _, d, _ in expected["returns"] if d == days)
        assert figures[str(days)]["expired"] == sum(
            1 for _, d, _ in expected["expired"] if d == days)


def partition_ends(events: list[dict[str, Any]], partitions: int) -> dict[int, int]:
    """The time of each partition's last event (users placed by the default partitioner)."""
    ends: dict[int, int] = {}
    for e in events:
        home = partition_of(e["user_id"], partitions)
        ends[home] = max(ends.get(home, e["ts"]), e["ts"])
    return ends


def test_a_caught_up_partition_fires_its_last_moments_on_the_streams_watermark(
    kafka_url: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    """Issue 26 item 3, METRICS.md §2: users with known gaps over 4 partitions, replayed
    with the event clock and a delay long enough that nothing is stale. The ticker keeps
    one partition going while the others' last events come before some of their users'
    moments: once caught up, those partitions follow the stream's watermark, so every
    episode is notified exactly once and every return reactivated, as a plain reading of
    the contract over the whole stream finds."""
    t0 = utc_now_ms() - 30 * MS_PER_DAY
    events = gappy_history(t0, users=120, seed=29)
    expected = reference_episodes(events, max_delay_ms=365 * MS_PER_DAY)
    assert expected["expired"] == set() and len(expected["returns"]) > 100
    ends = partition_ends(events, 4)
    waiting = {(user, days, last) for user, days, last in expected["sent"]
               if last + days * MS_PER_DAY > ends[partition_of(user, 4)]}
    assert len(waiting) >= 3, "no moment after its partition's last event: not the case"
    env = {"CLOCK": "event", "INACTIVITY_THRESHOLDS": "1,2", "WINBACK_MAX_DELAY": "365d",
           "BATCH_MAX_RECORDS": "200", "WINBACK_TICK_MS": "200"}
    with isolated_deployment(kafka_url, redis_url, unique, tmp_path) as d:
        sent = produce(d.bootstrap, d.topic, event_messages(events))
        with d.start_worker(**env)[0] as worker:
            d.wait_applied(sent, worker=worker)

            def notified() -> list[dict[str, Any]]:
                return [orjson.loads(r.value) | {"days": days} for days in (1, 2)
                        for r in read_topic(d.bootstrap, d.inactive_topic(days))]

            def counted() -> bool:
                assert worker.alive(), f"worker died; see {worker.log_path}"
                figures = d.cli_json("summary", **env)["winback"]
                return sum(f["notified"] for f in figures.values()) >= len(expected["sent"])

            wait_for(counted, 60, "every episode notified")
            notes = notified()
            backs = [orjson.loads(r.value) for r in read_topic(d.bootstrap,
                                                               d.reactivated_topic)]
            figures = d.cli_json("summary", **env)["winback"]
    got = {(n["user_id"], n["days"], iso_to_ms(n["last_active"])) for n in notes}
    assert waiting <= got, sorted(waiting - got)[:5]
    assert got == expected["sent"]
    assert len(notes) == len({n["notification_id"] for n in notes})  # exactly one each
    returns = {(b["user_id"], days, iso_to_ms(b["last_active"])) for b in backs
               for days in b["threshold_days"]}
    assert returns == expected["returns"]
    for days in (1, 2):
        assert figures[str(days)]["notified"] == sum(1 for _, k, _ in got if k == days)
        assert figures[str(days)]["expired"] == 0


def test_wall_clock_worker_on_old_history_publishes_nothing(deployment: Deployment) -> None:
    """A first start on two-month-old data: every moment is weeks behind the wall clock.
    Nothing is published; each is counted as expired, and the users as inactive."""
    t0 = utc_now_ms() - 60 * MS_PER_DAY
    events = [event(f"o{u:02d}", n, t0 + u * HOUR_MS + n * 3 * MS_PER_DAY)
              for u in range(12) for n in range(3)]
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(events))
    env = {"CLOCK": "wall", "INACTIVITY_THRESHOLDS": "1,2", "WINBACK_TICK_MS": "100"}
    with deployment.start_worker(**env)[0] as worker:
        deployment.wait_applied(sent, worker=worker)

        def all_expired() -> bool:
            figures = deployment.cli_json("summary", **env)["winback"]
            return all(figures[d]["expired"] == 12 for d in ("1", "2"))

        wait_for(all_expired, 60, "every user's moments counted expired")
        figures = deployment.cli_json("summary", **env)["winback"]
    for days in ("1", "2"):
        assert (figures[days]["notified"], figures[days]["inactive"]) == (0, 12)
        assert read_topic(deployment.bootstrap, deployment.inactive_topic(int(days))) == []


def test_a_late_event_before_the_moment_is_a_false_alarm(deployment: Deployment) -> None:
    """Live: u was last seen 30 h ago, so its 1-day message goes out; then u's event from
    20 h ago arrives (a phone that was offline). A false alarm: counted, no reactivation."""
    now = utc_now_ms()
    sent = produce(deployment.bootstrap, deployment.topic,
                   event_messages([event("u", 0, now - 30 * HOUR_MS)]))
    env = {"CLOCK": "wall", "INACTIVITY_THRESHOLDS": "1", "WINBACK_TICK_MS": "100"}
    with deployment.start_worker(**env)[0] as worker:
        deployment.wait_applied(sent, worker=worker)
        wait_for(lambda: len(read_topic(deployment.bootstrap, deployment.inactive_topic(1)))
                 == 1, 30, "the 1-day message")
        sent += produce(deployment.bootstrap, deployment.topic,
                        event_messages([event("u", 1, now - 20 * HOUR_MS)]))
        deployment.wait_applied(sent, worker=worker)
        figures = deployment.cli_json("summary", **env)["winback"]["1"]
        assert read_topic(deployment.bootstrap, deployment.reactivated_topic) == []
    assert (figures["notified"], figures["false_alarms"], figures["reactivated"],
            figures["inactive"]) == (1, 1, 0, 0)
    assert figures["by_churn_type"]["quick"]["false_alarms"] == 1


def iso_to_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)
