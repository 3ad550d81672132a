"""One user's state and its compact binary form (a Redis hash field value).

Per user we keep only what the counters need to be updated exactly when any event,
however late, arrives: first and last activity, the set of active days as a bitmap
anchored at the first-seen day, and the days with an install event. A typical user
costs ~15 bytes of value; see README "Memory".
"""

from __future__ import annotations

from dataclasses import dataclass

_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class UserState:
    first_seen_ms: int
    last_active_ms: int
    first_day: int  # local day of first_seen_ms in the app's calendar
    active_days: frozenset[int]
    install_days: frozenset[int]

    @property
    def last_day(self) -> int:
        return max(self.active_days)


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
    span = max(state.active_days) - state.first_day + 1
    bitmap = bytearray((span + 7) // 8)
    for day in state.active_days:
        offset = day - state.first_day
        bitmap[offset >> 3] |= 1 << (offset & 7)
    out += bitmap
    return bytes(out)


def decode_user(data: bytes) -> UserState:
    if not data or data[0] != _FORMAT_VERSION:
        raise ValueError(f"unknown user record format {data[:1]!r}")
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
    active = []
    for index, byte in enumerate(data[pos:]):
        while byte:
            low = byte & -byte
            active.append(first_day + index * 8 + low.bit_length() - 1)
            byte ^= low
    return UserState(
        first_seen_ms=first_seen_ms,
        last_active_ms=first_seen_ms + span_ms,
        first_day=first_day,
        active_days=frozenset(active),
        install_days=frozenset(installs),
    )
