"""One partition batch, from its parsed records to everything it causes, with no I/O.

The ingest loop reads a batch (``ParsedBatch``: events with the position they were read
at, rejects, events to forward to their home partition), loads the users' state, and
calls ``outcome_of``: the plan of state changes, the dead letters, the forwards and every
counter they move, for the part of the batch not applied before. It then only sends and
applies what that outcome says.

Every event is judged for the horizon against the watermark of the partition it was first
read from, as it was when the event was read (METRICS.md §1): the tracker's own routing
never makes an event late. That watermark is the partition's *read watermark*, the latest
event time read from its inputs (events kept or forwarded); a forwarded event carries the
value it was read at to its home (``Forward.watermark_ms``, the re-key record's
``watermark`` header), and one too old for it is rejected where it was read. The home's
own watermark, moved by every event it accepts, would be at the end of a long backlog
before the forwards came back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.counters import Stat
from retention_tracker.streams.events import Event, Reject
from retention_tracker.streams.plan import Plan, plan_batch
from retention_tracker.streams.segments import DEFAULT_RULES, SegmentRules
from retention_tracker.streams.user_state import UserKey, UserState
from retention_tracker.streams.winback import DEFAULT_WINBACK, WinbackRules

AT_HOME = "home"  # the route of an event read in its user's home partition
TOO_OLD = "too_old"
OLDER_THAN_THE_HORIZON = "older than the horizon"
#: The most bytes of a consumed message the worker copies into a record it produces (a dead
#: letter's value, a forward's value): half of what a producer sends in one request and a
#: broker takes in one record by default (aiokafka's ``max_request_size``, Kafka's
#: ``message.max.bytes``: 1 MiB), so every record the worker produces fits, whatever
#: MAX_MESSAGE_BYTES lets in. Larger values are cut (a dead letter; its ``size`` header says
#: how long the original was, its ``source`` where to read it whole) or re-encoded in their
#: §1 form (a forward, whose ignored fields made it large).
VALUE_COPY_MAX_BYTES = 512 << 10
#: The same for a dead letter's key: the rejected record's own key, which nothing bounds.
KEY_COPY_MAX_BYTES = 4 << 10


@dataclass(slots=True)
class Forward:
    """An event read at ``offset`` (``index`` in its message) that belongs to ``partition``.
    ``value``: the event as the producer sent it (the message's bytes for a single event,
    its object in the array re-encoded otherwise), so a dead letter at home keeps it; its
    §1 form when that is longer than ``VALUE_COPY_MAX_BYTES``."""

    offset: int
    index: int
    event: Event
    partition: int
    cause: str
    value: bytes = b""
    #: the read watermark of the partition it was read from, before it (None: none yet)
    watermark_ms: int | None = None


@dataclass(slots=True)
class ParsedBatch:
    """One partition batch, parsed and routed: what to apply here, reject, and forward.
    ``rekeyed``: read from the re-key topic (every event at home, forwarded there), with
    ``carried``: per offset, the watermark its event was first read at (None: none yet);
    a record forwarded before that was carried has no entry."""

    at_home: list[tuple[int, int, Event]] = field(default_factory=list)  # (offset, index, ev)
    rejects: list[tuple[int, Reject]] = field(default_factory=list)  # (offset, reject)
    away: list[Forward] = field(default_factory=list)
    rekeyed: bool = False
    carried: dict[int, int | None] = field(default_factory=dict)

    def from_offset(self, start: int) -> ParsedBatch:
        """The part read at ``start`` or later (what was read before is applied already)."""
        return ParsedBatch(
            [item for item in self.at_home if item[0] >= start],
            [item for item in self.rejects if item[0] >= start],
            [f for f in self.away if f.offset >= start],
            self.rekeyed,
            self.carried,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected event or message: where it was read and why."""

    offset: int
    index: int  # position in a JSON array message, -1 for the whole message
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class BatchRules:
    """What decides a batch's outcome besides its events and state: set once per worker."""

    horizon_days: int
    segments: SegmentRules = DEFAULT_RULES
    winback: WinbackRules = DEFAULT_WINBACK
    event_clock: bool = False


@dataclass(slots=True)
class BatchOutcome:
    """Everything a batch causes. ``plan.stats`` holds every counter it moves: accepted,
    duplicates, rejects by reason and (read at the source, not at home) routes."""

    plan: Plan
    dead_letters: list[DeadLetter]
    forwards: list[Forward]


def outcome_of(
    batch: ParsedBatch,
    dedup_keys: Sequence[bytes | None],
    states: Mapping[UserKey, UserState | None],
    seen_dedup_keys: set[bytes],
    watermark_ms: int | None,
    calendars: Mapping[str, AppCalendar],
    rules: BatchRules,
    arrival_ms: int | None,
    read_watermark_ms: int | None = None,
) -> BatchOutcome:
    """The outcome of ``batch`` (already cut to what was not applied before);
    ``dedup_keys`` are its at-home events' ``dedup_key_of``, in order. ``arrival_ms``: when
    it was read at its source, for the route counters; None for the re-key topic, whose
    events were counted where they were read first. ``watermark_ms`` and ``read_watermark_ms``: the
    partition's watermark and read watermark as stored before the batch."""
    if batch.rekeyed:  # judged where they were read; a record without it: at home
        judged = [batch.carried.get(offset, watermark_ms) for offset, _, _ in batch.at_home]
        read_after = None  # the re-key topic is no input: its events were read elsewhere
    else:
        judged, read_after = read_watermarks(batch, read_watermark_ms)
    plan = plan_batch(batch.at_home, states, seen_dedup_keys, watermark_ms, rules.horizon_days,
                      calendars, rules.segments, dedup_keys, rules.winback,
                      event_clock=rules.event_clock, judged_ms=judged)
    plan.read_watermark_ms = read_after
    letters = [DeadLetter(offset, r.index, r.reason, r.detail) for offset, r in batch.rejects]
    # a forward too old for the watermark it carries would be rejected at home: it is
    # rejected here instead, counted once with this batch (a copy forwarded again after a
    # crash would be rejected, and counted, again at home; dedup keeps no rejected id)
    horizon_ms = rules.horizon_days * MS_PER_DAY
    forwards = []
    for f in batch.away:
        if f.watermark_ms is not None and f.event.ts_ms < f.watermark_ms - horizon_ms:
            letters.append(DeadLetter(f.offset, f.index, TOO_OLD, OLDER_THAN_THE_HORIZON))
        else:
            forwards.append(f)
    for letter in letters:
        plan.stats[Stat.REJECTED, letter.reason] += 1
    letters += [DeadLetter(offset, index, TOO_OLD, OLDER_THAN_THE_HORIZON)
                for offset, index, _ in plan.too_old]  # counted by the plan itself
    letters.sort(key=lambda letter: (letter.offset, letter.index))
    if arrival_ms is not None:  # every event read away from home counts by its cause
        _count_routes(plan, len(batch.at_home), batch.away, arrival_ms)
    return BatchOutcome(plan, letters, forwards)


def read_watermarks(batch: ParsedBatch, watermark_ms: int | None
                    ) -> tuple[list[int | None], int | None]:
    """An input batch's events in the order they were read (kept and forwarded, by offset
    and index in the message): the read watermark each is judged against (the latest event
    time read before it, from ``watermark_ms`` on), for the kept ones as a list in
    ``at_home`` order and for the forwarded ones in ``Forward.watermark_ms``; and the read
    watermark after the batch. It depends on what was read only, not on when the forwards
    come home nor on which worker reads: the batch read again after a crash gives the
    same values."""
    judged: list[int | None] = []
    away = batch.away
    pending = 0  # the next forward not given its watermark yet
    for offset, index, event in batch.at_home:
        while pending < len(away) and (away[pending].offset, away[pending].index) < (
                offset, index):
            watermark_ms = _judge_forward(away[pending], watermark_ms)
            pending += 1
        judged.append(watermark_ms)
        if watermark_ms is None or event.ts_ms > watermark_ms:
            watermark_ms = event.ts_ms
    for forward in away[pending:]:
        watermark_ms = _judge_forward(forward, watermark_ms)
    return judged, watermark_ms


def _judge_forward(forward: Forward, watermark_ms: int | None) -> int | None:
    """Give a forward the read watermark before it; the read watermark after it."""
    forward.watermark_ms = watermark_ms
    ts_ms = forward.event.ts_ms
    return ts_ms if watermark_ms is None or ts_ms > watermark_ms else watermark_ms


def _count_routes(plan: Plan, at_home: int, away: list[Forward], arrival_ms: int) -> None:
    """Where a batch's events were read, for ``retention check`` (by arrival day) and the
    forwarded counters (by app and cause), applied atomically with the batch."""
    day = arrival_ms // MS_PER_DAY
    if at_home:
        plan.stats[Stat.ROUTE, day, AT_HOME] += at_home
    for f in away:
        plan.stats[Stat.ROUTE, day, f.cause] += 1
        plan.stats[Stat.FORWARDED, f.event.app, f.cause] += 1
