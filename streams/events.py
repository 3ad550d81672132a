"""Kafka message bytes -> validated Events, or Rejects that carry a machine-readable reason.

This is the contract's section 1 as code. It never raises on input: whatever arrives is
either an Event or a Reject, so the pipeline never stops on bad data.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from retention_tracker.streams.calendar import MS_PER_DAY

APP_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")  # with .match: \Z, unlike $, refuses "a\n"
EVENT_TYPES = ("install", "session", "purchase", "survey")
#: A survey answer (METRICS.md §8): a score, not activity.
SURVEY = "survey"
DEFAULT_SURVEY = "nps"  # the survey an answer without a ``survey`` name belongs to
MAX_SCORE = 10
#: Survey names label counters and metrics: spelt like app names (the contract's "string
#: <= 64", narrowed so a name never needs escaping in a stored field or a label).
SURVEY_NAME_RE = APP_NAME_RE
#: Custom activity types (ACTIVITY_EVENTS: bet, deposit, level_up ...) count as activity like
#: a session; their names are spelt like app names (they label counters and metrics).
ACTIVITY_TYPE_RE = APP_NAME_RE
NO_CUSTOM_TYPES: frozenset[str] = frozenset()
FUTURE_TOLERANCE_MS = MS_PER_DAY
CURRENCY_RE = re.compile(r"[A-Z]{3}\Z")  # an ISO 4217 code; with .match
# money above this per event is a bug or an attack, and sums must fit Redis' 64-bit counters
MAX_MONEY = 1_000_000_000
# calendar arithmetic needs a real date; the future is bounded by the clock check
MIN_TS_MS = 0
_ATTRIBUTES = ("platform", "country", "campaign")

# The closed set of reasons; counters are labelled by these, so cardinality stays bounded.
REJECT_REASONS = (
    "empty_message",
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "too_many_events",
    "missing_field",
    "invalid_field",
    "unknown_type",
    "negative_amount",
    "naive_timestamp",
    "invalid_timestamp",
    "future_timestamp",
    "too_old",
)
# Why an event was read away from its user's home partition (and forwarded there), most
# telling first: another closed set, labelling the forwarded counters.
FORWARD_CAUSES = ("mixed_array", "no_key", "other_key", "other_partitioner")


class Event(msgspec.Struct, frozen=True, gc=False):
    """An accepted event (§1). A msgspec Struct, not a dataclass: a frozen dataclass costs
    ~1 µs to build (one object.__setattr__ per field), a Struct ~0.1 µs, on the per-event
    path. ``gc=False``: it holds only strings and numbers, never a cycle."""

    app: str
    event_id: str
    type: str
    user_id: str
    ts_ms: int
    platform: str | None = None
    country: str | None = None
    campaign: str | None = None
    cost: float | None = None
    amount: float | None = None
    currency: str | None = None
    score: int | None = None  # survey answers only
    survey: str | None = None  # survey answers only: which survey (default "nps")

    def to_json(self) -> dict[str, Any]:
        """The canonical §1 form, as replay and the simulator produce it."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,
            "user_id": self.user_id,
            "app": self.app,
            "ts": self.ts_ms,
        }
        for name in ("platform", "country", "campaign", "cost", "amount", "currency", "score",
                     "survey"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    detail: str
    index: int = -1  # position in a JSON array message, -1 for the whole message


class InvalidEvent(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _bounded_str(obj: dict[str, Any], name: str, max_len: int, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", name)
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise InvalidEvent("invalid_field", f"{name} must be a string of 1-{max_len} chars")
    return value


def _number_value(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent("invalid_field", f"{name} must be a number")
    if not math.isfinite(value):
        raise InvalidEvent("invalid_field", f"{name} must be finite")
    if value < 0:
        raise InvalidEvent("negative_amount", f"{name} must be >= 0")
    if value > MAX_MONEY:
        raise InvalidEvent("invalid_field", f"{name} must be at most {MAX_MONEY}")
    return value


def parse_ts_ms(value: Any) -> int:
    """ISO-8601 with an offset, or integer epoch milliseconds; anything else is invalid."""
    if isinstance(value, bool):
        raise InvalidEvent("invalid_timestamp", "ts must be ISO-8601 or epoch milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and 10 <= len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent("invalid_timestamp", "ts is not ISO-8601") from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise InvalidEvent("naive_timestamp", "ts has no UTC offset")
        return int(parsed.timestamp() * 1000)
    raise InvalidEvent("invalid_timestamp", "ts must be ISO-8601 or epoch milliseconds")


def validate_event(obj: Any, now_ms: int, default_app: str = "default",
                   activity_types: frozenset[str] = NO_CUSTOM_TYPES) -> Event:
    """One decoded JSON value -> Event, or InvalidEvent with the reason. ``activity_types``:
    the custom activity types (ACTIVITY_EVENTS) accepted besides the built-in ones."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_an_object", "an event must be a JSON object")
    event_id = _bounded_str(obj, "event_id", 128, required=True)
    kind = obj.get("type")
    if kind is None:
        raise InvalidEvent("missing_field", "type")
    if kind not in EVENT_TYPES and not (isinstance(kind, str) and kind in activity_types):
        raise InvalidEvent("unknown_type", "type must be install, session, purchase, survey "
                           "or one of ACTIVITY_EVENTS")
    user_id = _bounded_str(obj, "user_id", 128, required=True)
    app = obj.get("app", default_app)
    if not isinstance(app, str) or not APP_NAME_RE.match(app):
        raise InvalidEvent("invalid_field", "app must be 1-64 chars of [A-Za-z0-9._-]")
    if "ts" not in obj or obj["ts"] is None:
        raise InvalidEvent("missing_field", "ts")
    ts_ms = parse_ts_ms(obj["ts"])
    if ts_ms > now_ms + FUTURE_TOLERANCE_MS:
        raise InvalidEvent("future_timestamp", "ts is more than 24 h ahead of the clock")
    if ts_ms < MIN_TS_MS:
        raise InvalidEvent("invalid_timestamp", "ts is before 1970")
    attributes = {name: _bounded_str(obj, name, 64, required=False) for name in _ATTRIBUTES}
    cost, amount, currency = _money(kind, obj.get("cost"), obj.get("amount"),
                                    obj.get("currency"))
    score, survey = _answer(obj.get("score"), obj.get("survey")) if kind == SURVEY else (
        None, None)
    return Event(
        app=app,
        event_id=event_id,  # type: ignore[arg-type]
        type=kind,
        user_id=user_id,  # type: ignore[arg-type]
        ts_ms=ts_ms,
        cost=cost,
        amount=amount,
        currency=currency,
        platform=attributes["platform"],
        country=attributes["country"],
        campaign=attributes["campaign"],
        score=score,
        survey=survey,
    )


def _money(kind: str, cost: Any, amount: Any, currency: Any
           ) -> tuple[float | None, float | None, str | None]:
    """The checked (cost, amount, currency) of an event of type ``kind``: cost counts on
    installs only, amount and currency on purchases only, but a bad amount or currency
    is refused on any type."""
    cost = _number_value(cost, "cost") if kind == "install" else None
    amount = _number_value(amount, "amount")
    if kind == "purchase" and amount is None:
        raise InvalidEvent("missing_field", "amount")
    if currency is not None and (not isinstance(currency, str) or not CURRENCY_RE.match(currency)):
        raise InvalidEvent("invalid_field", "currency must be an ISO 4217 code")
    if kind != "purchase":
        return cost, None, None
    return cost, amount, currency


def _answer(score: Any, survey: Any) -> tuple[int, str]:
    """A survey answer's checked (score, survey): ``score`` an integer 0-10 (required),
    ``survey`` a name (default "nps")."""
    if score is None:
        raise InvalidEvent("missing_field", "score")
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= MAX_SCORE:
        raise InvalidEvent("invalid_field", f"score must be an integer 0-{MAX_SCORE}")
    if survey is None:
        return score, DEFAULT_SURVEY
    if not isinstance(survey, str) or not SURVEY_NAME_RE.match(survey):
        raise InvalidEvent("invalid_field", "survey must be 1-64 chars of [A-Za-z0-9._-]")
    return score, survey


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    events: list[tuple[int, Event]]  # (index in the message, event); index -1 for a single object
    rejects: list[Reject]


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Attribute = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class _WireEvent(msgspec.Struct):
    """An event as it travels, for the fast reader: msgspec decodes the JSON and checks the
    fields' types and lengths in C. The money fields stay untyped (``Any``) and go through
    the same checks as in ``validate_event``, so both readers agree to the bit on them."""

    event_id: _Id
    type: str
    user_id: _Id
    ts: int | str
    app: str = "default"
    platform: _Attribute | None = None
    country: _Attribute | None = None
    campaign: _Attribute | None = None
    cost: Any = None
    amount: Any = None
    currency: Any = None
    score: Any = None
    survey: Any = None


_WIRE = msgspec.json.Decoder(list[_WireEvent] | _WireEvent)
_KNOWN_TYPES = frozenset(EVENT_TYPES)


def _accepted(wire: _WireEvent, now_ms: int, activity_types: frozenset[str]) -> Event:
    """The Event of a decoded wire event that ``validate_event`` would accept; any doubt
    raises InvalidEvent, and the caller then reads the message with ``validate_event``,
    which gives the reason."""
    kind = wire.type
    if ((kind not in _KNOWN_TYPES and kind not in activity_types)
            or not APP_NAME_RE.match(wire.app)):
        raise InvalidEvent("invalid_field", "read again by validate_event")
    ts_ms = parse_ts_ms(wire.ts)
    if ts_ms > now_ms + FUTURE_TOLERANCE_MS or ts_ms < MIN_TS_MS:
        raise InvalidEvent("invalid_timestamp", "read again by validate_event")
    cost, amount, currency = _money(kind, wire.cost, wire.amount, wire.currency)
    score, survey = _answer(wire.score, wire.survey) if kind == SURVEY else (None, None)
    return Event(wire.app, wire.event_id, kind, wire.user_id, ts_ms, wire.platform,
                 wire.country, wire.campaign, cost, amount, currency, score, survey)


def _read_fast(raw: bytes, now_ms: int, max_events: int, activity_types: frozenset[str]
               ) -> ParsedMessage | None:
    """Well-formed messages in one C pass (decoding and typing) plus the few checks left;
    None when anything is off (a bad field, too many events, not JSON), and the message
    is then read by ``validate_event``, whose reasons are the contract's."""
    if not raw.isascii():  # msgspec skips unknown fields unread: check their UTF-8 here
        try:
            raw.decode()
        except UnicodeDecodeError:
            return None
    try:
        decoded = _WIRE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # deep nesting
        return None
    try:
        if isinstance(decoded, list):
            if not decoded or len(decoded) > max_events:
                return None
            return ParsedMessage(
                [(index, _accepted(wire, now_ms, activity_types))
                 for index, wire in enumerate(decoded)], [])
        return ParsedMessage([(-1, _accepted(decoded, now_ms, activity_types))], [])
    except InvalidEvent:
        return None


def parse_message(
    raw: bytes | None, now_ms: int, max_bytes: int = 1 << 20, max_events: int = 1000,
    activity_types: frozenset[str] = NO_CUSTOM_TYPES, fast: bool = True,
) -> ParsedMessage:
    """Decode one Kafka message value: one event object, or a JSON array of them.
    ``activity_types``: the custom activity types accepted (ACTIVITY_EVENTS). A
    well-formed message takes the fast reader; any other (and, with ``fast`` False, every
    one) is read object by object by ``validate_event``. Both give the same result for
    every input (tests/streams/test_events.py holds them to it)."""
    if not raw:
        return ParsedMessage([], [Reject("empty_message", "null or empty message")])
    if len(raw) > max_bytes:
        return ParsedMessage([], [Reject("too_large", f"{len(raw)} bytes > {max_bytes}")])
    if fast:
        parsed = _read_fast(raw, now_ms, max_events, activity_types)
        if parsed is not None:
            return parsed
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "invalid_utf8" if "utf-8" in str(exc).lower() else "invalid_json"
        return ParsedMessage([], [Reject(reason, str(exc)[:200])])
    if isinstance(decoded, list):
        if len(decoded) > max_events:
            return ParsedMessage(
                [], [Reject("too_many_events", f"{len(decoded)} events > {max_events}")]
            )
        items = list(enumerate(decoded))
    else:
        items = [(-1, decoded)]
    events: list[tuple[int, Event]] = []
    rejects: list[Reject] = []
    for index, obj in items:
        try:
            events.append((index, validate_event(obj, now_ms, "default", activity_types)))
        except InvalidEvent as exc:
            rejects.append(Reject(exc.reason, exc.detail, index))
    if not items:
        rejects.append(Reject("empty_message", "empty JSON array"))
    return ParsedMessage(events, rejects)
