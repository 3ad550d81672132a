"""One user's state and its compact binary form (a Redis hash field value).

Per user we keep only what the counters need to be updated exactly when any event,
however late, arrives: first and last activity, the set of active days as a bitmap
anchored at the first-seen day, the days with an install event, the attributes with the
time of the event they came from, purchases summed per (day, currency), install cost, and
the user's survey answers (the latest per survey and day: enough to find the latest per
week, month or year whatever the arrival order) and, per type of RETURN_EVENTS, the days
the user sent one. A typical free user costs ~20 bytes of
value; see docs/architecture.md "Memory".

A user known only by survey answers (they make no one active, METRICS.md §1) has a record
with no active day: ``UserState.seen`` is false, and only its answers mean anything.
"""

from __future__ import annotations

import msgspec

_FORMAT_VERSION = 5
# 3: before expired thresholds (no flag bit on notified days); 4: before survey answers
_READABLE_VERSIONS = (3, 4, 5)
_DEFAULT_SURVEY = "nps"  # stored as an empty name: the one nearly every answer has
ATTRIBUTES = ("platform", "country", "campaign")
UserKey = tuple[str, str]  # (app, user_id): who a state belongs to
#: One survey answer kept: (survey, local day, ts_ms, event_id, score), the latest of the
#: user's answers to that survey on that day (equal times: the larger event_id).
Answer = tuple[str, int, int, str, int]
MONEY_UNITS = 10_000  # amounts are kept as integer 1/10,000ths: sums are exact


class Purchases(msgspec.Struct, frozen=True, gc=False):
    """A user's purchases on one local day in one currency."""

    count: int
    units: int


class UserState(msgspec.Struct, frozen=True, gc=False):
    """Frozen msgspec Structs, like ``Event``: built once or more per changed user and
    batch, where a frozen dataclass's field-by-field ``__init__`` cost ~1.5 µs. ``gc=False``:
    only numbers, strings and immutable containers of them, never a cycle."""

    first_seen_ms: int
    last_active_ms: int
    first_day: int  # local day of first_seen_ms in the app's calendar
    active_days: frozenset[int]
    install_days: frozenset[int]
    # attribute -> (value, ts_ms of the earliest event carrying it)
    attributes: tuple[tuple[str, str, int], ...] = ()
    purchases: tuple[tuple[int, str, Purchases], ...] = ()  # (day, currency, totals), sorted
    cost_units: int = 0
    sessions: int = 0
    # win-back (METRICS.md §7): last_active_ms of the episode handled, the thresholds (days)
    # whose message was sent, and those whose moment was found too late to publish (expired)
    notified_episode_ms: int | None = None
    notified_days: tuple[int, ...] = ()
    expired_days: tuple[int, ...] = ()
    answers: tuple[Answer, ...] = ()  # sorted by (survey, day)
    # RETURN_EVENTS: per event type named there, the days the user sent one, by type
    returns: tuple[tuple[str, frozenset[int]], ...] = ()

    @property
    def seen(self) -> bool:
        """Has the user any activity? (False: known only by survey answers.)"""
        return bool(self.active_days)

    def handled(self, days: int) -> bool:
        """Was threshold ``days`` of the current episode sent or expired already?"""
        return self.notified_episode_ms == self.last_active_ms and (
            days in self.notified_days or days in self.expired_days)

    @property
    def last_day(self) -> int:
        return max(self.active_days)

    def purchase_count(self, first_day: int | None = None, last_day: int | None = None
                       ) -> int:
        """Purchases on the local days ``first_day``..``last_day`` (None: no bound)."""
        return sum(p.count for day, _, p in self.purchases
                   if (first_day is None or day >= first_day)
                   and (last_day is None or day <= last_day))

    def attribute(self, name: str) -> str | None:
        for key, value, _ in self.attributes:
            if key == name:
                return value
        return None


def _put_varint(out: bytearray, value: int) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value // 2 if not value & 1 else -(value + 1) // 2


def encode_user(state: UserState) -> bytes:
    out = bytearray([_FORMAT_VERSION])
    _put_varint(out, _zigzag(state.first_seen_ms))
    _put_varint(out, state.last_active_ms - state.first_seen_ms)
    _put_varint(out, _zigzag(state.first_day))
    _put_varint(out, len(state.install_days))
    for day in sorted(state.install_days):
        _put_varint(out, day - state.first_day)
    _put_varint(out, len(state.attributes))
    for name, value, ts_ms in state.attributes:
        raw = value.encode()
        out.append(ATTRIBUTES.index(name))
        _put_varint(out, len(raw))
        out += raw
        _put_varint(out, _zigzag(ts_ms - state.first_seen_ms))
    _put_varint(out, len(state.purchases))
    for day, currency, totals in state.purchases:
        _put_varint(out, day - state.first_day)
        out += currency.encode()[:3].ljust(3)
        _put_varint(out, totals.count)
        _put_varint(out, totals.units)
    _put_varint(out, state.cost_units)
    _put_varint(out, state.sessions)
    marks: list[int] = []  # low bit of each: expired, not sent
    if state.notified_episode_ms is not None:
        marks = [d * 2 for d in state.notified_days] + [d * 2 + 1 for d in state.expired_days]
    _put_varint(out, len(marks))
    if marks:
        _put_varint(out, _zigzag((state.notified_episode_ms or 0) - state.first_seen_ms))
        for mark in marks:
            _put_varint(out, mark)
    _encode_answers(out, state)
    _put_varint(out, len(state.returns))
    for kind, days in state.returns:
        raw = kind.encode()
        _put_varint(out, len(raw))
        out += raw
        _put_varint(out, len(days))
        for day in sorted(days):
            _put_varint(out, _zigzag(day - state.first_day))
    span = max(state.active_days) - state.first_day + 1 if state.active_days else 0
    bitmap = bytearray((span + 7) // 8)
    for day in state.active_days:
        offset = day - state.first_day
        bitmap[offset >> 3] |= 1 << (offset & 7)
    out += bitmap
    return bytes(out)


def _encode_answers(out: bytearray, state: UserState) -> None:
    _put_varint(out, len(state.answers))
    for survey, day, ts_ms, event_id, score in state.answers:
        name = b"" if survey == _DEFAULT_SURVEY else survey.encode()
        raw = event_id.encode()
        _put_varint(out, len(name))
        out += name
        _put_varint(out, _zigzag(day - state.first_day))
        _put_varint(out, _zigzag(ts_ms - state.first_seen_ms))
        _put_varint(out, len(raw))
        out += raw
        out.append(score)


def _decode_answers(data: bytes, pos: int, first_day: int, first_seen_ms: int
                    ) -> tuple[list[Answer], int]:
    count, pos = _get_varint(data, pos)
    answers: list[Answer] = []
    for _ in range(count):
        length, pos = _get_varint(data, pos)
        survey = data[pos:pos + length].decode() or _DEFAULT_SURVEY
        day, pos = _get_varint(data, pos + length)
        ts, pos = _get_varint(data, pos)
        length, pos = _get_varint(data, pos)
        event_id = data[pos:pos + length].decode()
        pos += length
        answers.append((survey, first_day + _unzigzag(day), first_seen_ms + _unzigzag(ts),
                        event_id, data[pos]))
        pos += 1
    return answers, pos


def _decode_returns(data: bytes, pos: int, first_day: int
                    ) -> tuple[list[tuple[str, frozenset[int]]], int]:
    count, pos = _get_varint(data, pos)
    returns = []
    for _ in range(count):
        length, pos = _get_varint(data, pos)
        kind = data[pos:pos + length].decode()
        days, pos = _get_varint(data, pos + length)
        found = []
        for _ in range(days):
            offset, pos = _get_varint(data, pos)
            found.append(first_day + _unzigzag(offset))
        returns.append((kind, frozenset(found)))
    return returns, pos


def _decode_marks(data: bytes, pos: int, first_seen_ms: int, flagged: bool
                  ) -> tuple[int | None, list[int], list[int], int]:
    """The win-back marks: the episode handled, thresholds sent and (v4) expired, each mark
    flagged in its low bit; before v4 every mark was a sent one."""
    count, pos = _get_varint(data, pos)
    episode_ms = None
    notified: list[int] = []
    expired: list[int] = []
    if count:
        delta, pos = _get_varint(data, pos)
        episode_ms = first_seen_ms + _unzigzag(delta)
        for _ in range(count):
            mark, pos = _get_varint(data, pos)
            if not flagged:
                notified.append(mark)
            elif mark & 1:
                expired.append(mark >> 1)
            else:
                notified.append(mark >> 1)
    return episode_ms, notified, expired, pos


def _decode_active_days(data: bytes, pos: int, first_day: int) -> list[int]:
    """The rest of the record: a bitmap of active days from the first day on."""
    active = []
    for index, byte in enumerate(data[pos:]):
        while byte:
            low = byte & -byte
            active.append(first_day + index * 8 + low.bit_length() - 1)
            byte ^= low
    return active


def decode_user(data: bytes) -> UserState:
    if not data or data[0] not in _READABLE_VERSIONS:
        raise ValueError(f"unknown user record format {data[:1]!r}")
    flagged = data[0] >= 4
    first_seen, pos = _get_varint(data, 1)
    first_seen_ms = _unzigzag(first_seen)
    span_ms, pos = _get_varint(data, pos)
    first_day, pos = _get_varint(data, pos)
    first_day = _unzigzag(first_day)
    count, pos = _get_varint(data, pos)
    installs = []
    for _ in range(count):
        offset, pos = _get_varint(data, pos)
        installs.append(first_day + offset)
    count, pos = _get_varint(data, pos)
    attributes = []
    for _ in range(count):
        name = ATTRIBUTES[data[pos]]
        length, pos = _get_varint(data, pos + 1)
        value = data[pos : pos + length].decode()
        ts_delta, pos = _get_varint(data, pos + length)
        attributes.append((name, value, first_seen_ms + _unzigzag(ts_delta)))
    count, pos = _get_varint(data, pos)
    purchases = []
    for _ in range(count):
        offset, pos = _get_varint(data, pos)
        currency = data[pos : pos + 3].decode().rstrip()
        n, pos = _get_varint(data, pos + 3)
        units, pos = _get_varint(data, pos)
        purchases.append((first_day + offset, currency, Purchases(n, units)))
    cost_units, pos = _get_varint(data, pos)
    sessions, pos = _get_varint(data, pos)
    episode_ms, notified, expired, pos = _decode_marks(data, pos, first_seen_ms, flagged)
    answers: list[Answer] = []
    returns: list[tuple[str, frozenset[int]]] = []
    if data[0] >= 5:
        answers, pos = _decode_answers(data, pos, first_day, first_seen_ms)
        returns, pos = _decode_returns(data, pos, first_day)
    active = _decode_active_days(data, pos, first_day)
    return UserState(
        first_seen_ms=first_seen_ms,
        last_active_ms=first_seen_ms + span_ms,
        first_day=first_day,
        active_days=frozenset(active),
        install_days=frozenset(installs),
        attributes=tuple(attributes),
        purchases=tuple(purchases),
        cost_units=cost_units,
        sessions=sessions,
        notified_episode_ms=episode_ms,
        notified_days=tuple(notified),
        expired_days=tuple(expired),
        answers=tuple(answers),
        returns=tuple(returns),
    )
