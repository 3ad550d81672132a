"""Message bytes -> Events or Rejects (streams/events.py): what is accepted, with which
values, and the reason of each refusal. docs/metrics.md "Events in" has the reasons table;
tests/faults/test_hostile_input.py throws hostile bytes at the same parser."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention_tracker.streams.events import (
    REJECT_REASONS,
    Event,
    InvalidEvent,
    parse_message,
    parse_ts_ms,
    validate_event,
)

NOW = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def base(**fields: object) -> dict[str, object]:
    return {"event_id": "e1", "type": "session", "user_id": "u1", "ts": NOW, **fields}


def test_a_full_purchase() -> None:
    event = validate_event(base(type="purchase", ts="2024-01-01T01:00:00+01:00", app="shop",
                                amount=4.99, currency="EUR", platform="ios", extra=[1]), NOW)
    assert event == Event("shop", "e1", "purchase", "u1", NOW, platform="ios", amount=4.99,
                          currency="EUR")


def test_defaults_and_fields_that_only_count_on_their_type() -> None:
    event = validate_event(base(cost=3, amount=2, currency="EUR"), NOW, default_app="d")
    assert (event.app, event.cost, event.amount, event.currency) == ("d", None, None, None)
    assert validate_event(base(type="install", cost=3), NOW).cost == 3


def test_timestamps() -> None:
    assert parse_ts_ms("2024-01-01T00:00:00Z") == NOW
    assert parse_ts_ms("2024-01-01T09:00:00+09:00") == NOW
    assert parse_ts_ms(NOW) == NOW
    for value, reason in [("2024-01-01T00:00:00", "naive_timestamp"),
                          ("soon", "invalid_timestamp"), (True, "invalid_timestamp"),
                          (1.5, "invalid_timestamp"), ("2024-13-01T00:00:00Z",
                                                       "invalid_timestamp")]:
        with pytest.raises(InvalidEvent) as caught:
            parse_ts_ms(value)
        assert caught.value.reason == reason, value


@pytest.mark.parametrize(("fields", "reason"), [
    ({"event_id": None}, "missing_field"),
    ({"event_id": ""}, "invalid_field"),
    ({"event_id": "x" * 129}, "invalid_field"),
    ({"type": None}, "missing_field"),
    ({"type": "login"}, "unknown_type"),
    ({"user_id": 7}, "invalid_field"),
    ({"app": "a b"}, "invalid_field"),
    ({"app": "a\n"}, "invalid_field"),
    ({"ts": None}, "missing_field"),
    ({"ts": NOW + 24 * 3_600_000 + 1}, "future_timestamp"),
    ({"ts": -1}, "invalid_timestamp"),
    ({"type": "purchase"}, "missing_field"),
    ({"type": "purchase", "amount": -0.01}, "negative_amount"),
    ({"type": "purchase", "amount": "1"}, "invalid_field"),
    ({"type": "purchase", "amount": True}, "invalid_field"),
    ({"type": "purchase", "amount": 1e10}, "invalid_field"),
    ({"type": "purchase", "amount": 1, "currency": "EURO"}, "invalid_field"),
    ({"type": "install", "cost": -1}, "negative_amount"),
    ({"country": "x" * 65}, "invalid_field"),
])
def test_each_refusal_has_its_reason(fields: dict[str, object], reason: str) -> None:
    assert reason in REJECT_REASONS
    with pytest.raises(InvalidEvent) as caught:
        validate_event(base(**fields), NOW)
    assert caught.value.reason == reason


def test_the_future_tolerance_is_24_hours() -> None:
    assert validate_event(base(ts=NOW + 24 * 3_600_000), NOW).ts_ms == NOW + 24 * 3_600_000


def test_messages_arrays_and_positions() -> None:
    good = base()
    parsed = parse_message(orjson.dumps([good, base(type="x"), good]), NOW)
    assert [index for index, _ in parsed.events] == [0, 2]
    assert [(r.reason, r.index) for r in parsed.rejects] == [("unknown_type", 1)]
    single = parse_message(orjson.dumps(good), NOW)
    assert [index for index, _ in single.events] == [-1]
    assert parse_message(b"x" * 11, NOW, max_bytes=10).rejects[0].reason == "too_large"
    assert parse_message(orjson.dumps([good] * 3), NOW,
                         max_events=2).rejects[0].reason == "too_many_events"
    assert parse_message(b"\xff\xfe", NOW).rejects[0].reason == "invalid_utf8"
    assert parse_message(None, NOW).rejects[0].reason == "empty_message"


names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=20)


@given(st.builds(
    Event, app=st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True), event_id=names,
    type=st.sampled_from(["install", "session"]), user_id=names,
    ts_ms=st.integers(0, NOW), platform=st.none() | names,
))
def test_the_canonical_json_of_an_event_parses_back_to_it(event: Event) -> None:
    parsed = parse_message(orjson.dumps(event.to_json()), NOW)
    assert parsed.rejects == []
    assert parsed.events == [(-1, event)]


# ---- the fast reader (msgspec) against the plain one ------------------------------------
# parse_message reads a well-formed message in one msgspec pass and falls back to
# validate_event for anything else; both must give the same ParsedMessage for every input.

_FIELD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
    st.text(max_size=3), st.text(min_size=60, max_size=140), st.sampled_from(
        ["session", "install", "purchase", "survey", "bet", "EUR", "eur", "EUR\n", "a b",
         "2024-01-01T00:00:00+00:00", "2024-01-01T00:00:00", "1e3", "", "\ud7ff"]),
    st.integers(NOW - 500 * 86_400_000, NOW + 2 * 86_400_000),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                         max_size=2),
)
_FIELDS = ("event_id", "type", "user_id", "ts", "app", "platform", "country", "campaign",
           "cost", "amount", "currency", "score", "survey", "extra")
_CUSTOM = frozenset({"bet", "level_up"})  # ACTIVITY_EVENTS for these properties


@st.composite
def _objects(draw: st.DrawFn) -> dict[str, object]:
    """A valid event with some fields removed or replaced by anything."""
    obj: dict[str, object] = base(type=draw(st.sampled_from(
        ["session", "install", "purchase", "survey", "bet", "level_up", "deposit"])))
    if obj["type"] == "purchase":
        obj["amount"] = draw(st.integers(0, 10**9) | st.floats(0, 1e9))
    if obj["type"] == "survey":
        obj["score"] = draw(st.integers(-1, 11))
        if draw(st.booleans()):
            obj["survey"] = draw(st.sampled_from(["nps", "csat.v2", "", "a b", 7]))
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=4)):
        if draw(st.booleans()):
            obj.pop(name, None)
        else:
            obj[name] = draw(_FIELD_VALUES)
    return obj


def _both_readers(raw: bytes, max_events: int = 1000) -> None:
    fast = parse_message(raw, NOW, 1 << 20, max_events, _CUSTOM)
    plain = parse_message(raw, NOW, 1 << 20, max_events, _CUSTOM, fast=False)
    assert fast == plain
    # the same values, to the type: an int amount stays an int, a float a float
    for (_, a), (_, b) in zip(fast.events, plain.events, strict=True):
        assert [type(v) for v in (a.cost, a.amount, a.ts_ms, a.score)] == [
            type(v) for v in (b.cost, b.amount, b.ts_ms, b.score)]


def _json(value: object) -> bytes:
    """The stdlib encoder: NaN, Infinity and ints of any size, as producers send them."""
    return json.dumps(value).encode()


@given(obj=_objects())
def test_fast_and_plain_readers_agree_on_objects(obj: dict[str, object]) -> None:
    _both_readers(_json(obj))


@given(objs=st.lists(_objects(), max_size=5), max_events=st.integers(1, 6))
def test_fast_and_plain_readers_agree_on_arrays(objs: list[dict[str, object]],
                                                max_events: int) -> None:
    _both_readers(_json(objs), max_events)


@given(raw=st.binary(max_size=300))
def test_fast_and_plain_readers_agree_on_bytes(raw: bytes) -> None:
    _both_readers(raw)


@pytest.mark.parametrize("raw", [
    b'{"event_id":"e","type":"session","user_id":"u","ts":100000000000000000000000}',
    b'{"event_id":"e","type":"session","user_id":"u","ts":1e3}',
    b'{"event_id":"e","type":"session","user_id":"u","ts":1,"type":"bet"}',
    b'{"event_id":"e","type":"purchase","user_id":"u","ts":1,"amount":5}',
    b'{"event_id":"e","type":"purchase","user_id":"u","ts":1,"amount":5.0,"currency":"EU"}',
    b'{"event_id":"e","type":"session","user_id":"u","ts":1,"currency":7}',
    b'{"event_id":"e","type":"session","user_id":"u","ts":1,"app":null}',
    b'{"event_id":"e","type":"session","user_id":"u","ts":1,"platform":""}',
    b'[{"event_id":"e","type":"session","user_id":"u","ts":1},{"event_id":""}]',
    b'\xef\xbb\xbf{"event_id":"e","type":"session","user_id":"u","ts":1}',
    b'[]',
    b'{"event_id":"e","type":"session","user_id":"u","ts":1,"unknown\xff":1}',
    b'{"event_id":"e","type":"session","user_id":"u","ts":1,"x":"\\ud800"}',
    b'{"event_id":"e","type":"session","user_id":"u","ts":1,"x":[01]}',
    b'{"event_id":"e","type":"survey","user_id":"u","ts":1,"score":9}',
    b'{"event_id":"e","type":"survey","user_id":"u","ts":1,"score":9.0,"survey":"x"}',
    b'{"event_id":"e","type":"survey","user_id":"u","ts":1,"score":true}',
    b'{"event_id":"e","type":"survey","user_id":"u","ts":1,"score":3,"amount":-1}',
    b'{"event_id":"e","type":"bet","user_id":"u","ts":1,"score":3}',
    b'{"event_id":"e","type":"deposit","user_id":"u","ts":1}',
])
def test_fast_and_plain_readers_agree_on_edges(raw: bytes) -> None:
    _both_readers(raw)


def test_deep_nesting_falls_back_to_the_plain_reader() -> None:
    _both_readers(b"[" * 5000 + b"]" * 5000)


def test_custom_activity_types_are_accepted_only_when_named() -> None:
    """ACTIVITY_EVENTS (METRICS.md §1): a named custom type is an event like a session; any
    other type, or a type that is no string at all, stays unknown_type."""
    casino = frozenset({"bet", "deposit"})
    parsed = parse_message(orjson.dumps([base(type="bet"), base(event_id="e2", type="spin"),
                                         base(event_id="e3", type=["bet"])]), NOW,
                           activity_types=casino)
    assert [event.type for _, event in parsed.events] == ["bet"]
    assert [(r.index, r.reason) for r in parsed.rejects] == [(1, "unknown_type"),
                                                             (2, "unknown_type")]
    with pytest.raises(InvalidEvent, match="unknown_type"):
        validate_event(base(type="bet"), NOW)  # not named: unknown
    deposit = validate_event(base(type="deposit", amount=5, cost=1), NOW, "d", casino)
    assert (deposit.amount, deposit.cost) == (None, None)  # money counts on its own types


def test_survey_answers_carry_a_score_and_a_survey_name() -> None:
    """§1: score an integer 0-10 (required), survey 1-64 chars (default nps); no money."""
    answer = validate_event(base(type="survey", score=9, amount=3), NOW)
    assert (answer.type, answer.score, answer.survey, answer.amount) == ("survey", 9, "nps",
                                                                         None)
    assert validate_event(base(type="survey", score=0, survey="csat"), NOW).survey == "csat"
    assert validate_event(base(type="survey", score=10, survey=None), NOW).survey == "nps"
    assert answer.to_json()["score"] == 9 and answer.to_json()["survey"] == "nps"
    for fields, reason in (({}, "missing_field"), ({"score": 11}, "invalid_field"),
                           ({"score": -1}, "invalid_field"), ({"score": 7.5}, "invalid_field"),
                           ({"score": 9.0}, "invalid_field"), ({"score": True}, "invalid_field"),
                           ({"score": "9"}, "invalid_field"),
                           ({"score": 9, "survey": "a b"}, "invalid_field"),
                           ({"score": 9, "survey": "x" * 65}, "invalid_field")):
        with pytest.raises(InvalidEvent, match=reason):
            validate_event(base(type="survey", **fields), NOW)
