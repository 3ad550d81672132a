"""Replay inputs: JSON-lines and CSV readers, validation and ordering, the mapping flag, and
the producer's message shaping (against a stand-in producer: no broker needed here)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from retention_tracker.cli import feeding
from retention_tracker.cli.feeding import (
    parse_mapping,
    prepare_replay,
    produce_events,
    read_csv,
    read_jsonl,
    simulated_stream,
)
from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.simulation import SimulationConfig, generate_events

NOW = 1_704_067_200_000 + 30 * MS_PER_DAY


def ev(event_id: str, ts: Any, user: str = "u1", kind: str = "session", **extra: Any) -> dict:
    return {"event_id": event_id, "type": kind, "user_id": user, "ts": ts, **extra}


def test_read_jsonl_rows_with_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = ev("e1", NOW - 1000)
    path.write_bytes(
        orjson.dumps(good) + b"\n\n{not json\n[1, 2]\n\xff\xfe\n"
        + orjson.dumps(ev("e2", "2024-01-02T03:04:05+02:00")) + b"\n"
    )
    rows = list(read_jsonl(path))
    assert rows == [
        (1, good, None),
        (3, None, "invalid_json"),
        (4, None, "not_an_object"),
        (5, None, "invalid_utf8"),
        (6, ev("e2", "2024-01-02T03:04:05+02:00"), None),
    ]


def test_read_csv_with_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "uid,time,event,event_id,amount,currency,platform,cost\n"
        "u1,1704067200000,install,e1,,,ios,1.5\n"
        'u1,2024-01-02T10:00:00+00:00,purchase,e2,4.99,USD,"ios",\n'
        "u2,1704067200000,session\n"
        "u3,2024-01-02T10:00:00,session,e4,,,,\n"
        "u4,1704067200000,purchase,e5,lots,USD,,\n",
        encoding="utf-8",
    )
    mapping = parse_mapping("user_id=uid, ts=time,type=event")
    assert mapping == {"user_id": "uid", "ts": "time", "type": "event"}
    rows = list(read_csv(path, mapping))
    assert rows[0] == (2, {"user_id": "u1", "ts": 1_704_067_200_000, "type": "install",
                           "event_id": "e1", "platform": "ios", "cost": 1.5}, None)
    assert rows[1] == (3, {"user_id": "u1", "ts": "2024-01-02T10:00:00+00:00",
                           "type": "purchase", "event_id": "e2", "amount": 4.99,
                           "currency": "USD", "platform": "ios"}, None)
    assert rows[2] == (4, None, "invalid_csv")
    assert rows[3][1] == {"user_id": "u3", "ts": "2024-01-02T10:00:00", "type": "session",
                          "event_id": "e4"}
    assert rows[4][1] is not None and rows[4][1]["amount"] == "lots"  # left for validation
    _, reasons = prepare_replay(rows, NOW)
    assert reasons == {"invalid_csv": 1, "naive_timestamp": 1, "invalid_field": 1}


def test_read_csv_refuses_a_mapped_column_that_is_not_there(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,ts\nu1,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="uid"):
        list(read_csv(path, {"user_id": "uid"}))


def test_prepare_replay_sorts_stably_and_counts_reasons() -> None:
    a = ev("a", NOW - 3000)
    b = ev("b", "2024-01-30T00:00:00+00:00")  # NOW - 2 days, given as ISO text
    c = ev("c", NOW - 3000, user="u2")  # same time as a: stays after it
    d = ev("d", NOW - 5000, extra_field=[1, 2])
    rows = [
        (1, a, None),
        (2, None, "invalid_json"),
        (3, b, None),
        (4, ev("x", "2024-01-01T00:00:00"), None),
        (5, c, None),
        (6, {"event_id": "y", "type": "login", "user_id": "u", "ts": NOW}, None),
        (7, d, None),
        (8, ev("z", NOW + 2 * MS_PER_DAY), None),
        (9, None, "invalid_json"),
    ]
    rejected: list[tuple[int, str, str]] = []
    valid, reasons = prepare_replay(rows, NOW, rejected=rejected)
    assert valid == [b, d, a, c]
    assert all(x is y for x, y in zip(valid, [b, d, a, c], strict=True))  # untouched originals
    assert reasons == {"invalid_json": 2, "naive_timestamp": 1, "unknown_type": 1,
                       "future_timestamp": 1}
    assert [line for line, _, _ in rejected] == [2, 4, 6, 8, 9]
    unsorted, _ = prepare_replay(rows, NOW, sort=False)
    assert unsorted == [a, b, c, d]
    # a custom activity type the worker accepts (ACTIVITY_EVENTS) is replayed, not refused
    _, reasons = prepare_replay(rows, NOW, activity_types=frozenset({"login"}))
    assert "unknown_type" not in reasons


def test_shuffled_simulated_history_replays_in_time_order(tmp_path: Path) -> None:
    cfg = SimulationConfig(installs_per_day=20, days=5, start_ms=NOW - 5 * MS_PER_DAY, seed=2,
                           late_rate=0.1)
    events = [e for e in generate_events(cfg) if isinstance(e, dict)]
    shuffled = list(events)
    random.Random(0).shuffle(shuffled)
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in shuffled) + b"\n")
    valid, reasons = prepare_replay(read_jsonl(path), NOW)
    assert not reasons
    assert sorted(orjson.dumps(e) for e in valid) == sorted(orjson.dumps(e) for e in events)
    assert [e["ts"] for e in valid] == sorted(e["ts"] for e in events)


@pytest.mark.parametrize("spec", ["user_id", "nope=x", "user_id=a,user_id=b", "ts="])
def test_parse_mapping_refuses_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_mapping(spec)


def test_parse_mapping_of_nothing_is_empty() -> None:
    assert parse_mapping("") == {}
    assert parse_mapping(" , ") == {}


class FakeProducer:
    """Records what produce_events sends; stands in for AIOKafkaProducer."""

    sent: ClassVar[list[tuple[str, bytes, bytes | None]]] = []

    def __init__(self, **config: Any) -> None:
        assert config["enable_idempotence"] is False
        FakeProducer.sent = []

    async def start(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        import asyncio

        FakeProducer.sent.append((topic, value, key))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def flush(self) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    monkeypatch.setattr(feeding, "AIOKafkaProducer", FakeProducer)
    return FakeProducer


async def test_produce_single_events_and_raw_malformed(fake_producer: type[FakeProducer]) -> None:
    items: list[dict[str, Any] | bytes] = [ev("1", 1), b"{bad", ev("2", 2, user="u2")]
    stats = await produce_events("x:1", "t", items, progress=False)
    assert fake_producer.sent == [
        ("t", orjson.dumps(items[0]), b"u1"),
        ("t", b"{bad", b"malformed"),
        ("t", orjson.dumps(items[2]), b"u2"),
    ]
    assert (stats.messages, stats.events, stats.malformed) == (3, 2, 1)
    assert stats.bytes == sum(len(v) for _, v, _ in fake_producer.sent)


async def test_produce_batches_consecutive_events_of_one_user(
    fake_producer: type[FakeProducer],
) -> None:
    items: list[dict[str, Any] | bytes] = [
        ev("1", 1), ev("2", 2), ev("3", 3), ev("4", 4, user="u2"), ev("5", 5),
        ev("6", 6, app="other"), b"oops", ev("7", 7), ev("8", 8),
    ]
    stats = await produce_events("x:1", "t", items, batch_size=2, progress=False)
    sent = [(orjson.loads(v) if k != b"malformed" else v, k) for _, v, k in fake_producer.sent]
    assert sent == [
        ([items[0], items[1]], b"u1"),
        ([items[2]], b"u1"),
        ([items[3]], b"u2"),
        ([items[4]], b"u1"),
        ([items[5]], b"u1"),  # same user_id in another app is another user
        (b"oops", b"malformed"),
        ([items[7], items[8]], b"u1"),
    ]
    assert (stats.messages, stats.events, stats.malformed) == (7, 8, 1)


async def test_simulated_stream_unpaced_is_the_simulation(
    fake_producer: type[FakeProducer],
) -> None:
    cfg = SimulationConfig(installs_per_day=5, days=2, start_ms=NOW - 2 * MS_PER_DAY,
                           malformed_rate=0.05)
    stats = await produce_events("x:1", "t", simulated_stream(cfg, 0), progress=False)
    expected = [e if isinstance(e, bytes) else orjson.dumps(e) for e in generate_events(cfg)]
    assert [v for _, v, _ in fake_producer.sent] == expected
    assert stats.messages == len(expected)
