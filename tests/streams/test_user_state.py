"""The user-state codec (streams/user_state.py): a Redis hash field value per user.

Round trip for any state (survey answers and answers-only users included), the exact bytes
of a small one (worked by hand from the format), records of formats 3 to 6 still decode,
and anything else is refused. Once per engine: the codec the engine runs
(``engine.codec()``; the native one is also held to the Python one byte for byte in
tests/streams/test_codec_native.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from retention_tracker.streams import engine
from retention_tracker.streams.user_state import UserState

from .user_records import DAY_MS, older_record, read_as_older, states

pytestmark = pytest.mark.usefixtures("engine")
BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, day 19723


def encode_user(state: UserState) -> bytes:
    return engine.codec().encode_user(state)


def decode_user(data: bytes) -> UserState:
    return engine.codec().decode_user(data)


def test_a_small_state_in_bytes() -> None:
    """Version 7; first_seen 1000 ms zigzagged (2000 = 0xD0 0x0F as a varint); 172,799,007
    ms to last_active (2 days + 7 ms - 1000 ms); first day 0; one install at offset 0; no
    attributes, purchases or cost; a session on day 0 only (code 2 + a 1-byte mask, 0b01:
    the first of the two active days); no win-back marks; no survey answers; no
    RETURN_EVENTS days; two UTC day spans on the active days (code 1 + 2 x 2, days not
    written): the first's earliest is first_seen, its width 0; the last's latest is
    last_active, its earliest 7 ms into day 2; no at-risk mark; the active days 0 and 2 as
    the bitmap 0b101."""
    state = UserState(1000, 2 * DAY_MS + 7, 0, frozenset({0, 2}), frozenset({0}),
                      session_days=frozenset({0}),
                      utc_spans=((0, 1000, 1000), (2, 2 * DAY_MS + 7, 2 * DAY_MS + 7)))
    raw = encode_user(state)
    assert raw == bytes([7, 0xD0, 0x0F, 0x9F, 0xE8, 0xB2, 0x52, 0, 1, 0, 0, 0, 0, 3, 0b01, 0,
                         0, 0, 5, 0, 7, 0, 0b101])
    assert decode_user(raw) == state
    # in a timezone ahead of UTC, local day 0 began in UTC day -1: the spans' days are
    # written (code 1 + 1 x 2 + 1), day -1 from the first day (zigzag 1); the one span is
    # first_seen to last_active
    ahead = UserState(-DAY_MS + 5, -DAY_MS + 8, 0, frozenset({0}), frozenset(),
                      utc_spans=((-1, -DAY_MS + 5, -DAY_MS + 8),))
    assert encode_user(ahead)[-6:] == bytes([0, 0, 4, 1, 0, 0b1])
    assert decode_user(encode_user(ahead)) == ahead


def test_an_answer_in_bytes() -> None:
    """One answer to the default survey (stored as an empty name) on the first day, 1 ms
    after first_seen (zigzag 2), event id "s1", score 9; then the bitmap."""
    state = UserState(1000, 1000, 0, frozenset({0}), frozenset(),
                      answers=(("nps", 0, 1001, "s1", 9),))
    raw = encode_user(state)
    # no RETURN_EVENTS, no spans (code 2: none, known), no at-risk mark
    assert raw[-12:] == bytes([1, 0, 0, 2, 2]) + b"s1" + bytes([9, 0, 2, 0, 0b1])
    assert decode_user(raw) == state
    named = UserState(1000, 1000, 0, frozenset({0}), frozenset(),
                      answers=(("csat", -3, 5, "x", 0),))  # before the first activity
    assert decode_user(encode_user(named)) == named


def test_a_user_known_only_by_answers() -> None:
    """No activity: no first day to anchor, no bitmap; only the answers mean anything."""
    state = UserState(0, 0, 0, frozenset(), frozenset(),
                      answers=(("nps", 19723, BASE_MS, "s", 10), ("nps", 19730, BASE_MS, "t", 3)))
    assert not state.seen
    assert decode_user(encode_user(state)) == state


@settings(deadline=None)  # a shared 2-core machine: one example may take 200 ms under load
@given(states())
def test_any_state_round_trips(state: UserState) -> None:
    assert decode_user(encode_user(state)) == state


@settings(deadline=None)
@given(states(), st.integers(3, 6), st.integers(0, 300))
def test_any_state_in_an_older_format_reads_as_that_format_kept_it(
        state: UserState, version: int, sessions: int) -> None:
    """Formats 3-6 (user_records.older_record): what each did not keep reads as absent or
    unknown, a count of session events as a session on every active day."""
    assert decode_user(older_record(state, version, sessions)) == read_as_older(
        state, version, sessions)


@pytest.mark.parametrize("wrong", [{"cost_units": -1}, {"last_active_ms": BASE_MS - 1}])
def test_a_negative_number_is_refused_not_looped_on(wrong: dict[str, int]) -> None:
    """The format has no negative varint: a clear error (the loop once ran forever)."""
    state = UserState(BASE_MS, BASE_MS, 19723, frozenset({19723}), frozenset())
    with pytest.raises(ValueError, match="cannot hold a negative number"):
        encode_user(replace(state, **wrong))


def test_an_episode_without_marks_is_not_stored() -> None:
    state = UserState(BASE_MS, BASE_MS, 19723, frozenset({19723}), frozenset(),
                      notified_episode_ms=BASE_MS)
    assert decode_user(encode_user(state)).notified_episode_ms is None


def test_format_3_records_still_decode() -> None:
    """Version 3 wrote the notified days as they are (no expired flag in the low bit)."""
    state = UserState(BASE_MS, BASE_MS + 5, 19723, frozenset({19723}), frozenset(),
                      notified_episode_ms=BASE_MS + 5, notified_days=(2,), expired_days=(7,))
    assert decode_user(encode_user(state)) == state
    old = bytearray(encode_user(UserState(BASE_MS, BASE_MS, 19723, frozenset({19723}),
                                          frozenset(), notified_episode_ms=BASE_MS,
                                          notified_days=(1,))))
    old[0] = 3
    del old[-5:-1]  # format 3 had no answers, returns, spans, at-risk mark (before the bitmap)
    index = old.rindex(2)  # the one notified day, flagged form, just before the bitmap byte
    old[index] = 1
    decoded = decode_user(bytes(old))
    assert (decoded.notified_days, decoded.expired_days) == ((1,), ())
    assert decoded.active_days == frozenset({19723})


def test_format_4_records_still_decode() -> None:
    """Version 4 had no survey answers: the same record without their count."""
    state = UserState(BASE_MS, BASE_MS + 5, 19723, frozenset({19723, 19725}), frozenset(),
                      session_days=frozenset({19723, 19725}), notified_episode_ms=BASE_MS + 5,
                      notified_days=(2,))
    new = encode_user(state)
    assert new[-5:-3] == bytes(2)  # no answers, no returns; spans, the at-risk mark, the bitmap
    old = bytes([4]) + new[1:-5] + new[-1:]
    assert decode_user(old) == replace(state, utc_spans=None)


def test_format_5_records_decode_with_their_windows_unknown() -> None:
    """Version 5 kept no UTC day spans and no at-risk mark: the record reads with
    ``utc_spans`` None (the 24-hour windows of that user unknown, docs/architecture.md
    "Memory"), kept so when written again."""
    state = UserState(BASE_MS, BASE_MS + 5, 19723, frozenset({19723}), frozenset(),
                      utc_spans=((19723, BASE_MS, BASE_MS + 5),))
    new = encode_user(state)
    assert new[-3:-1] == bytes([3, 0])  # one span, first_seen to last_active; no mark
    old = bytes([5]) + new[1:-3] + new[-1:]
    decoded = decode_user(old)
    assert decoded == replace(state, utc_spans=None)
    assert decode_user(encode_user(decoded)) == decoded


def test_session_days_cost_one_byte_when_they_are_the_active_days() -> None:
    """The usual user had a session on every active day: code 1, and the decoded state
    shares the active days' frozenset (a cached state holds one set). No session: code 0."""
    every = UserState(BASE_MS, BASE_MS + 2 * DAY_MS, 19723, frozenset({19723, 19725}),
                      frozenset(), session_days=frozenset({19723, 19725}))
    none = replace(every, session_days=frozenset())
    assert len(encode_user(every)) == len(encode_user(none))
    decoded = decode_user(encode_user(every))
    assert decoded.session_days is decoded.active_days and decoded.sessions == 2
    assert decode_user(encode_user(none)).sessions == 0


@pytest.mark.parametrize(("count", "days"), [(0, frozenset()), (1, {19723, 19725}),
                                             (9, {19723, 19725})])
def test_format_6_session_counts_read_as_every_active_day(count: int, days: set[int]) -> None:
    """Format 6 kept a count of session events, which cannot be turned into days: none
    reads as none, any reads as a session on every active day (an upper bound of the
    days, exact for a user with a session on each; docs/architecture.md "Memory")."""
    state = UserState(BASE_MS, BASE_MS + 2 * DAY_MS, 19723, frozenset({19723, 19725}),
                      frozenset())
    new = bytearray(encode_user(state))
    every = encode_user(replace(state, session_days=state.active_days))
    # the one byte where they differ: the session days' code, where format 6 had the count
    [index] = [i for i, (a, b) in enumerate(zip(new, every, strict=True)) if a != b]
    new[0], new[index] = 6, count
    assert decode_user(bytes(new)).session_days == days


def test_an_at_risk_mark_in_bytes() -> None:
    """Sent (2), the episode 5 ms after first_seen (zigzag 10), the moment 2 days after
    (zigzag 2 x 172,800,000 as a varint); then the bitmap."""
    state = UserState(BASE_MS, BASE_MS + 5, 19723, frozenset({19723}), frozenset(),
                      at_risk_episode_ms=BASE_MS + 5, at_risk_moment_ms=BASE_MS + 172_800_000,
                      at_risk_sent=True)
    raw = encode_user(state)
    assert raw[-8:] == bytes([2, 10, 0x80, 0xE0, 0xE5, 0xA4, 0x01, 0b1])
    assert decode_user(raw) == state
    expired = replace(state, at_risk_sent=False)
    assert decode_user(encode_user(expired)) == expired


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\x02\x00\x00", b"\x08" + bytes(12), b"{}"])
def test_other_formats_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="unknown user record format"):
        decode_user(raw)


def test_the_state_answers_its_questions() -> None:
    state = UserState(BASE_MS, BASE_MS + 9, 19723, frozenset({19723, 19730}), frozenset(),
                      attributes=(("country", "DE", BASE_MS),),
                      notified_episode_ms=BASE_MS + 9, notified_days=(2,), expired_days=(7,))
    assert state.last_day == 19730
    assert (state.attribute("country"), state.attribute("platform")) == ("DE", None)
    assert state.handled(2) and state.handled(7) and not state.handled(30)
    later = UserState(BASE_MS, BASE_MS + 10, 19723, frozenset({19723}), frozenset(),
                      notified_episode_ms=BASE_MS + 9, notified_days=(2,))
    assert not later.handled(2)  # another episode: last_active moved since
