"""One user's state and its compact binary form (a Redis hash field value).

Per user we keep only what the counters need to be updated exactly when any event,
however late, arrives: first and last activity, the set of active days as a bitmap
anchored at the first-seen day, the days with an install event, the attributes with the
time of the event they came from, purchases summed per (day, currency), install cost, the
days with a session (the win-back payload's count), the user's survey answers (the latest
per survey and day: enough to find the latest per week, month or year whatever the
arrival order) and, per type of RETURN_EVENTS, the days
the user sent one, and per UTC day with activity its earliest and latest event (what the
24-hour windows need, streams/windows24.py). A typical free user costs ~30 bytes of
value; see docs/architecture.md "Memory".

A user known only by survey answers (they make no one active, METRICS.md §1) has a record
with no active day: ``UserState.seen`` is false, and only its answers mean anything.
"""

from __future__ import annotations

import msgspec

from retention_tracker.streams.calendar import MS_PER_DAY

_FORMAT_VERSION = 7
# 3: before expired thresholds (no flag bit on notified days); 4: before survey answers;
# 5: before the UTC day spans (24-hour windows) and the at-risk mark; 6: a count of session
# events where 7 keeps the days with a session (read as: every active day, if any session)
_READABLE_VERSIONS = (3, 4, 5, 6, 7)
_DEFAULT_SURVEY = "nps"  # stored as an empty name: the one nearly every answer has
ATTRIBUTES = ("platform", "country", "campaign")
UserKey = tuple[str, str]  # (app, user_id): who a state belongs to
#: Per UTC day with activity: (UTC day, earliest ts_ms, latest ts_ms) of its events.
Span = tuple[int, int, int]
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
    # the days with a session (app calendar): the win-back payload's ``sessions`` is their
    # number, which a copy of a session cannot change (METRICS.md §7); ``shared_days`` makes
    # it the active days' own frozenset when equal (the usual: a record stores one code byte)
    session_days: frozenset[int] = frozenset()
    # win-back (METRICS.md §7): last_active_ms of the episode handled, the thresholds (days)
    # whose message was sent, and those whose moment was found too late to publish (expired)
    notified_episode_ms: int | None = None
    notified_days: tuple[int, ...] = ()
    expired_days: tuple[int, ...] = ()
    answers: tuple[Answer, ...] = ()  # sorted by (survey, day)
    # RETURN_EVENTS: per event type named there, the days the user sent one, by type
    returns: tuple[tuple[str, frozenset[int]], ...] = ()
    # 24-hour windows (streams/windows24.py): per UTC day with activity, its earliest and
    # latest event, sorted by day; None: unknown (a record from before format 6)
    utc_spans: tuple[Span, ...] | None = ()
    # risk of lapsing (METRICS.md §9, streams/at_risk.py): last_active_ms of the episode
    # whose at-risk moment was handled, that moment, and whether its message was sent
    # (else it was found too late: expired)
    at_risk_episode_ms: int | None = None
    at_risk_moment_ms: int = 0
    at_risk_sent: bool = False

    @property
    def seen(self) -> bool:
        """Has the user any activity? (False: known only by survey answers.)"""
        return bool(self.active_days)

    def handled(self, days: int) -> bool:
        """Was threshold ``days`` of the current episode sent or expired already?"""
        return self.notified_episode_ms == self.last_active_ms and (
            days in self.notified_days or days in self.expired_days)

    @property
    def sessions(self) -> int:
        """The win-back payload's ``sessions``: distinct days with a session (§7)."""
        return len(self.session_days)

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
    """``value`` (>= 0) 7 bits a byte, low first, the high bit set where more follow. A
    negative number has no varint: ValueError (where the loop would run forever), tested
    only past the first byte so the usual one-byte value costs nothing more."""
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return
        if value < 0:
            raise ValueError("a user record cannot hold a negative number here")
        out.append(byte | 0x80)


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
    _encode_session_days(out, state)
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
    _encode_spans(out, state)
    _encode_at_risk_mark(out, state)
    span = max(state.active_days) - state.first_day + 1 if state.active_days else 0
    bitmap = bytearray((span + 7) // 8)
    for day in state.active_days:
        offset = day - state.first_day
        bitmap[offset >> 3] |= 1 << (offset & 7)
    out += bitmap
    return bytes(out)


def _encode_spans(out: bytearray, state: UserState) -> None:
    """The UTC day spans: a code (0: unknown; else 1 + count * 2 + 1 when the days are
    written, 0 when they are the active days, as in an app on UTC), then per span its day
    (if written, from the previous one), the ms of its day its earliest event is at and
    its latest - earliest, but what first_seen and last_active say already: the first
    span's earliest is first_seen, the last's latest last_active. A middle span's earliest
    carries a flag in its low bit: 1 when a width follows (0: one event, or several at
    the same ms)."""
    spans = state.utc_spans
    if spans is None:
        _put_varint(out, 0)
        return
    assert not spans or (spans[0][1] == state.first_seen_ms
                         and spans[-1][2] == state.last_active_ms), "spans span the user"
    active = state.active_days  # the usual (an app on UTC): the spans' days are these
    explicit = len(spans) != len(active) or any(day not in active for day, _, _ in spans)
    _put_varint(out, 1 + len(spans) * 2 + explicit)
    previous, last = state.first_day, len(spans) - 1
    for index, (day, first_ms, last_ms) in enumerate(spans):
        if explicit:
            _put_varint(out, _zigzag(day - previous))
            previous = day
        if index == 0:
            if index != last:
                _put_varint(out, last_ms - first_ms)
        elif index == last:
            _put_varint(out, first_ms - day * MS_PER_DAY)
        else:
            _put_varint(out, (first_ms - day * MS_PER_DAY) * 2 + (last_ms != first_ms))
            if last_ms != first_ms:
                _put_varint(out, last_ms - first_ms)


#: A span as read: (ms of its day of the earliest event, latest - earliest), each None when
#: first_seen or last_active gives it.
_RawSpan = tuple[int | None, int | None]


def _decode_spans(data: bytes, pos: int, first_day: int
                  ) -> tuple[list[_RawSpan] | None, list[int] | None, int]:
    """The spans as written (None: unknown), and their days when written (None: they are
    the active days, from the bitmap after)."""
    code, pos = _get_varint(data, pos)
    if not code:
        return None, None, pos
    count, explicit = divmod(code - 1, 2)
    days: list[int] | None = [] if explicit else None
    found: list[_RawSpan] = []
    previous, last = first_day, count - 1
    for index in range(count):
        if days is not None:
            delta, pos = _get_varint(data, pos)
            previous += _unzigzag(delta)
            days.append(previous)
        earliest: int | None = None
        width: int | None = None
        if index == 0:
            if index != last:
                width, pos = _get_varint(data, pos)
        elif index == last:
            earliest, pos = _get_varint(data, pos)
        else:
            flagged, pos = _get_varint(data, pos)
            earliest, width = flagged >> 1, 0
            if flagged & 1:
                width, pos = _get_varint(data, pos)
        found.append((earliest, width))
    return found, days, pos


def _spans(days: list[int], found: list[_RawSpan], first_seen_ms: int, last_active_ms: int
           ) -> tuple[Span, ...]:
    spans = []
    for day, (earliest, width) in zip(days, found, strict=True):
        first_ms = first_seen_ms if earliest is None else day * MS_PER_DAY + earliest
        spans.append((day, first_ms, last_active_ms if width is None else first_ms + width))
    return tuple(spans)


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


def shared_days(days: set[int] | frozenset[int], active_days: frozenset[int]
                ) -> frozenset[int]:
    """``days`` (a subset of the active days) as a frozenset, the active days' own object
    when equal: a cached state then holds one set where most users have one."""
    return active_days if days == active_days else frozenset(days)


def _encode_session_days(out: bytearray, state: UserState) -> None:
    """The session days (format 7), as one bit per active day: a code 0 (none), 1 (every
    active day: the usual, one byte) or 2 + the length of a mask whose bit i says whether
    the i-th active day (ascending) had a session."""
    days = state.session_days
    if not days or days == state.active_days:
        _put_varint(out, 1 if days else 0)
        return
    mask = bytearray((len(state.active_days) + 7) // 8)
    for index, day in enumerate(sorted(state.active_days)):
        if day in days:
            mask[index >> 3] |= 1 << (index & 7)
    _put_varint(out, 2 + len(mask))
    out += mask


def _decode_session_days(data: bytes, pos: int) -> tuple[bytes | int, int]:
    """What ``_encode_session_days`` wrote: the code 0 or 1, or the mask (resolved once the
    active days are read, ``_session_days``). Before format 7 this is a count of session
    events."""
    code, pos = _get_varint(data, pos)
    if data[0] < 7 or code < 2:
        return code, pos
    return data[pos:pos + code - 2], pos + code - 2


def _session_days(found: bytes | int, active: list[int], active_days: frozenset[int],
                  days_kept: bool) -> frozenset[int]:
    """The session days from ``_decode_session_days``'s value and the active days. A record
    before format 7 counted session events, which cannot be turned into days: any session
    reads as a session on every active day (an upper bound, exact for users who had one on
    each: docs/architecture.md "Memory"). ``active``: the active days ascending, as read."""
    if isinstance(found, int):
        every = found == 1 if days_kept else found > 0
        return active_days if every else frozenset()
    return frozenset(day for index, day in enumerate(active)
                     if found[index >> 3] >> (index & 7) & 1)


def _encode_at_risk_mark(out: bytearray, state: UserState) -> None:
    """The at-risk mark (format 6): 0 for none, else 1 (expired) or 2 (sent), then the
    episode and its moment from first_seen, zigzagged."""
    if state.at_risk_episode_ms is None:
        _put_varint(out, 0)
        return
    _put_varint(out, 1 + state.at_risk_sent)
    _put_varint(out, _zigzag(state.at_risk_episode_ms - state.first_seen_ms))
    _put_varint(out, _zigzag(state.at_risk_moment_ms - state.first_seen_ms))


def _decode_at_risk_mark(data: bytes, pos: int, first_seen_ms: int
                         ) -> tuple[int | None, int, bool, int]:
    """``_encode_at_risk_mark`` read back: episode (None: no mark), moment, sent, and the
    position after it."""
    mark, pos = _get_varint(data, pos)
    if not mark:
        return None, 0, False, pos
    episode, pos = _get_varint(data, pos)
    moment, pos = _get_varint(data, pos)
    return first_seen_ms + _unzigzag(episode), first_seen_ms + _unzigzag(moment), mark == 2, pos


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
    session_mask, pos = _decode_session_days(data, pos)
    episode_ms, notified, expired, pos = _decode_marks(data, pos, first_seen_ms, flagged)
    answers: list[Answer] = []
    returns: list[tuple[str, frozenset[int]]] = []
    if data[0] >= 5:
        answers, pos = _decode_answers(data, pos, first_day, first_seen_ms)
        returns, pos = _decode_returns(data, pos, first_day)
    found: list[_RawSpan] | None = None  # before format 6: not kept, unknown
    span_days: list[int] | None = None
    if data[0] >= 6:
        found, span_days, pos = _decode_spans(data, pos, first_day)
    risk_episode, risk_moment, risk_sent = None, 0, False
    if data[0] >= 6:
        risk_episode, risk_moment, risk_sent, pos = _decode_at_risk_mark(data, pos,
                                                                         first_seen_ms)
    active = _decode_active_days(data, pos, first_day)
    active_days = frozenset(active)
    spans = None if found is None else _spans(
        active if span_days is None else span_days, found, first_seen_ms,
        first_seen_ms + span_ms)
    return UserState(
        first_seen_ms=first_seen_ms,
        last_active_ms=first_seen_ms + span_ms,
        first_day=first_day,
        active_days=active_days,
        install_days=frozenset(installs),
        attributes=tuple(attributes),
        purchases=tuple(purchases),
        cost_units=cost_units,
        session_days=_session_days(session_mask, active, active_days, data[0] >= 7),
        notified_episode_ms=episode_ms,
        notified_days=tuple(notified),
        expired_days=tuple(expired),
        answers=tuple(answers),
        returns=tuple(returns),
        utc_spans=spans,
        at_risk_episode_ms=risk_episode,
        at_risk_moment_ms=risk_moment,
        at_risk_sent=risk_sent,
    )
