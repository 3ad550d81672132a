"""The simulator: deterministic, valid §1 events, and the defects it promises at its rates."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
import pytest

from retention_tracker.streams.events import parse_message, validate_event
from retention_tracker.streams.simulation import (
    MALFORMED_KINDS,
    MS_PER_DAY,
    SimulationConfig,
    generate_deliveries,
    generate_events,
    generate_malformed,
)

START = 1_704_067_200_000  # 2024-01-01T00:00Z
END = START + 10 * MS_PER_DAY


def config(**overrides: Any) -> SimulationConfig:
    base: dict[str, Any] = {"installs_per_day": 60, "days": 10, "start_ms": START, "seed": 7}
    return SimulationConfig(**{**base, **overrides})


def as_bytes(items: list[dict[str, Any] | bytes]) -> list[bytes]:
    return [i if isinstance(i, bytes) else orjson.dumps(i) for i in items]


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    cfg = config(malformed_rate=0.01, late_rate=0.05)
    first = as_bytes(list(generate_events(cfg)))
    assert first == as_bytes(list(generate_events(cfg)))
    assert first != as_bytes(list(generate_events(config(malformed_rate=0.01, seed=8))))


def test_every_event_is_valid_and_ids_are_unique_but_for_duplicates() -> None:
    cfg = config(apps=("game", "shop"))
    events = list(generate_events(cfg))
    assert events and all(isinstance(e, dict) for e in events)
    by_id: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in events:
        assert isinstance(raw, dict)
        event = validate_event(raw, END)
        assert START <= event.ts_ms < END
        key = (event.app, event.event_id)
        assert by_id.setdefault(key, raw) == raw  # a repeated id is an identical payload
        assert raw["event_id"] == f"{raw['app']}-{raw['user_id']}-{raw['event_id'].split('-')[-1]}"
    assert {e["app"] for e in events if isinstance(e, dict)} == {"game", "shop"}
    kinds = Counter(e["type"] for e in events if isinstance(e, dict))
    assert kinds["install"] and kinds["session"] and kinds["purchase"]
    purchases = [e for e in events if isinstance(e, dict) and e["type"] == "purchase"]
    assert all(e["amount"] in (0.99, 4.99, 19.99) and e["currency"] for e in purchases)
    installs = [e for e in events if isinstance(e, dict) and e["type"] == "install"]
    assert any(e.get("cost", 0) > 0 for e in installs)
    assert all(e["cost"] == 0 for e in installs if e["campaign"] == "organic" and "cost" in e)


def test_delivery_order_is_by_delivery_time() -> None:
    times = [t for t, _ in generate_deliveries(config(late_rate=0.1, duplicate_rate=0.05))]
    assert times == sorted(times)


def test_duplicates_at_about_the_configured_rate_and_shortly_after() -> None:
    cfg = config(installs_per_day=200, duplicate_rate=0.05, duplicate_max_seconds=300)
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    originals = copies = 0
    for delivered, item in generate_deliveries(cfg):
        assert isinstance(item, dict)
        if item["event_id"] in seen:
            first_delivered, first = seen[item["event_id"]]
            assert item == first and item is not first
            assert 0 < delivered - first_delivered <= 300_000
            copies += 1
        else:
            seen[item["event_id"]] = (delivered, item)
            originals += 1
    assert originals > 10_000
    assert copies / originals == pytest.approx(0.05, abs=0.01)


def test_late_events_come_after_events_with_later_timestamps() -> None:
    cfg = config(late_rate=0.05, late_max_hours=48, duplicate_rate=0.0)
    max_ts = 0
    overtaken = 0
    total = 0
    for delivered, item in generate_deliveries(cfg):
        assert isinstance(item, dict)
        assert 0 <= delivered - item["ts"] <= 48 * 3_600_000
        total += 1
        if item["ts"] < max_ts:
            overtaken += 1
        max_ts = max(max_ts, item["ts"])
    assert 0.02 < overtaken / total < 0.06  # almost every late event is overtaken


def test_no_late_events_means_time_order() -> None:
    items = list(generate_events(config(late_rate=0.0, duplicate_rate=0.0)))
    ts = [e["ts"] for e in items if isinstance(e, dict)]
    assert ts == sorted(ts)


def test_retention_follows_the_curve_and_some_installs_are_missing() -> None:
    cfg = config(installs_per_day=3000, days=8, d1=0.4, decay=0.5, missing_install_rate=0.05,
                 duplicate_rate=0.0, late_rate=0.0)
    first_day: dict[str, int] = {}
    active: dict[str, set[int]] = {}
    installed: set[str] = set()
    for e in generate_events(cfg):
        assert isinstance(e, dict)
        day = (e["ts"] - START) // MS_PER_DAY
        first_day.setdefault(e["user_id"], day)
        active.setdefault(e["user_id"], set()).add(day)
        if e["type"] == "install":
            installed.add(e["user_id"])
    cohort = [u for u, d in first_day.items() if d == 0]
    assert len(cohort) == 3000 and len(first_day) == 3000 * 8
    for n in (1, 4):
        share = sum(1 for u in cohort if n in active[u]) / len(cohort)
        assert share == pytest.approx(0.4 * n**-0.5, abs=0.03)
    assert 1 - len(installed) / len(first_day) == pytest.approx(0.05, abs=0.01)


@pytest.mark.parametrize("kind", sorted(MALFORMED_KINDS))
def test_each_malformed_kind_is_rejected_for_its_reason(kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(50):
        raw = generate_malformed(rng, ts_ms=START, kind=kind)
        parsed = parse_message(raw, END)
        assert not parsed.events
        assert [r.reason for r in parsed.rejects] == [MALFORMED_KINDS[kind]], raw


def test_random_malformed_kinds_are_all_rejected_and_deterministic() -> None:
    first = [generate_malformed(random.Random(3)) for _ in range(3)]
    assert first == [generate_malformed(random.Random(3)) for _ in range(3)]
    rng = random.Random(5)
    reasons = Counter()
    for _ in range(500):
        parsed = parse_message(generate_malformed(rng, ts_ms=START), END)
        assert not parsed.events and len(parsed.rejects) == 1
        reasons[parsed.rejects[0].reason] += 1
    assert set(reasons) == set(MALFORMED_KINDS.values())


def test_malformed_messages_in_the_stream_at_about_their_rate() -> None:
    items = list(generate_events(config(installs_per_day=200, malformed_rate=0.02)))
    bad = [i for i in items if isinstance(i, bytes)]
    assert len(bad) / (len(items) - len(bad)) == pytest.approx(0.02, abs=0.005)
    assert all(not parse_message(b, END).events for b in bad)


def test_default_start_ends_now() -> None:
    from retention_tracker.streams.calendar import utc_now_ms

    before = utc_now_ms()
    cfg = SimulationConfig(installs_per_day=5, days=3, late_rate=0.0, duplicate_rate=0.0)
    ts = [e["ts"] for e in generate_events(cfg) if isinstance(e, dict)]
    assert before - 3 * MS_PER_DAY <= min(ts) and max(ts) <= utc_now_ms()


@pytest.mark.parametrize(
    "bad",
    [
        {"days": 0},
        {"apps": ("no spaces",)},
        {"duplicate_rate": 1.5},
        {"sessions_per_day": (0, 2)},
        {"campaigns": (("organic", 1.0), ("unpriced", 1.0))},
        {"activity_types": ("session",)},
        {"activity_types": ("no spaces",)},
        {"activity_rate": -0.1},
    ],
)
def test_bad_configs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimulationConfig(**bad)


def test_output_is_pinned_for_a_fixed_config() -> None:
    """Every defect turned on, two apps: a refactor of the generator must keep this hash."""
    import hashlib

    cfg = SimulationConfig(
        apps=("game", "shop"), installs_per_day=40, days=6, start_ms=START, seed=11,
        late_rate=0.05, duplicate_rate=0.05, malformed_rate=0.02, reinstall_rate=0.1,
        missing_install_rate=0.05, purchase_rate=0.2,
    )
    digest = hashlib.sha256()
    count = 0
    for delivered, item in generate_deliveries(cfg):
        digest.update(delivered.to_bytes(8, "big"))
        digest.update(item if isinstance(item, bytes) else orjson.dumps(item))
        digest.update(b"\n")
        count += 1
    assert count == 2322
    assert digest.hexdigest() == "24c78b20f949ae7573d2df19071e84f78e95d8e26d49debc65cc19fe28b66ca7"


def test_survey_answers_at_about_their_rate_and_valid() -> None:
    """survey_rate: an NPS answer on about that share of active days (off by default, so
    the pinned stream above is unchanged)."""
    cfg = SimulationConfig(installs_per_day=50, days=10, start_ms=START, seed=4,
                           duplicate_rate=0.0, survey_rate=0.2)
    events = [e for e in generate_events(cfg) if isinstance(e, dict)]
    answers = [e for e in events if e["type"] == "survey"]
    active_days = {(e["user_id"], e["ts"] // 86_400_000) for e in events
                   if e["type"] != "survey"}
    assert 0.15 < len(answers) / len(active_days) < 0.25
    assert {validate_event(e, START + 11 * 86_400_000).score for e in answers} == set(range(11))


def test_custom_activity_types_at_about_their_rate_and_valid() -> None:
    """activity_types (ACTIVITY_EVENTS' names): events of one of them on about
    activity_rate of active days; none when no type is named (the pinned stream)."""
    cfg = SimulationConfig(installs_per_day=50, days=10, start_ms=START, seed=4,
                           duplicate_rate=0.0, activity_types=("bet", "level_up"),
                           activity_rate=0.4)
    events = [e for e in generate_events(cfg) if isinstance(e, dict)]
    custom = [e for e in events if e["type"] in ("bet", "level_up")]
    custom_days = {(e["user_id"], e["ts"] // MS_PER_DAY) for e in custom}
    active_days = {(e["user_id"], e["ts"] // MS_PER_DAY) for e in events
                   if e["type"] in ("install", "session")}
    assert custom_days <= active_days
    assert 0.33 < len(custom_days) / len(active_days) < 0.47
    assert {e["type"] for e in custom} == {"bet", "level_up"}
    for event in custom:
        validate_event(event, END + MS_PER_DAY, activity_types=frozenset({"bet", "level_up"}))
    assert not any(e["type"] in ("bet", "level_up") for e in generate_events(
        config(activity_rate=1.0)) if isinstance(e, dict))


def test_install_costs_can_be_turned_off() -> None:
    with_costs = [e for e in generate_events(config()) if isinstance(e, dict)]
    without = [e for e in generate_events(config(install_costs=False)) if isinstance(e, dict)]
    assert any(e.get("cost") for e in with_costs if e["type"] == "install")
    assert not any("cost" in e for e in without)
    assert [e["event_id"] for e in with_costs] == [e["event_id"] for e in without]
