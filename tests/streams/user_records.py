"""User states and records for the codec's tests (tests/streams/test_user_state.py, the
Python codec; tests/streams/test_codec_native.py, the native one held to it): any state,
states near int64's edges, and records of the older formats 3-6 built from the format-7
encoder's own parts."""

from __future__ import annotations

from hypothesis import strategies as st
from msgspec.structs import replace

from retention_tracker.streams.user_state import (
    ATTRIBUTES,
    Purchases,
    UserState,
    _put_varint,
    _zigzag,
    encode_user,
)

DAY_MS = 86_400_000


@st.composite
def states(draw: st.DrawFn) -> UserState:
    first_day = draw(st.integers(-30_000, 30_000))
    first_seen = draw(st.integers(0, 2**45))
    days = st.integers(first_day, first_day + 800)
    active = draw(st.frozensets(days, max_size=20)) | {first_day}
    names = draw(st.lists(st.sampled_from(ATTRIBUTES), unique=True))
    attributes = tuple(
        (name, draw(st.text(min_size=1, max_size=64)), draw(st.integers(0, 2**45)))
        for name in names)
    keys = draw(st.sets(st.tuples(days, st.sampled_from(["USD", "EUR", "BRL"])), max_size=4))
    purchases = tuple(
        (day, currency, Purchases(draw(st.integers(1, 500)), draw(st.integers(0, 10**13))))
        for day, currency in sorted(keys))
    episode = draw(st.none() | st.integers(first_seen - 10**9, first_seen + 10**11))
    marks = st.lists(st.integers(1, 90), unique=True, max_size=3).map(lambda x: tuple(sorted(x)))
    notified = draw(marks) if episode is not None else ()
    expired = draw(marks) if episode is not None else ()
    if not notified and not expired:
        # an episode is recorded only with a threshold sent or expired (winback.handle_moment
        # always marks one): without marks the codec stores no episode
        episode = None
    answer_keys = draw(st.sets(st.tuples(st.sampled_from(["nps", "csat", "a.b-c_1"]), days),
                               max_size=4))
    answers = tuple(
        (survey, day, draw(st.integers(0, 2**45)), draw(st.text(min_size=1, max_size=128)),
         draw(st.integers(0, 10)))
        for survey, day in sorted(answer_keys))
    kinds = draw(st.lists(st.sampled_from(["purchase", "bet", "level_up"]), unique=True))
    returns = tuple((kind, draw(st.frozensets(days, min_size=1, max_size=6)))
                    for kind in sorted(kinds))
    span_days = sorted(active) if draw(st.booleans()) else sorted(
        draw(st.frozensets(st.integers(first_day - 1, first_day + 800), max_size=20)))
    spans = tuple((day, day * DAY_MS + start, day * DAY_MS + start + width)
                  for day in span_days
                  for start in [draw(st.integers(0, DAY_MS - 1))]
                  for width in [draw(st.integers(0, DAY_MS - 1 - start))])
    known = spans and draw(st.booleans())
    if known:  # the spans run from first_seen to last_active (the codec leaves those out)
        first_seen = spans[0][1]
    risk_episode = draw(st.none() | st.integers(first_seen - 10**9, first_seen + 10**11))
    risk = {"at_risk_episode_ms": risk_episode, "at_risk_sent": draw(st.booleans()),
            "at_risk_moment_ms": draw(st.integers(first_seen - 10**9, first_seen + 10**11))
            } if risk_episode is not None else {}
    if draw(st.booleans()) and answers:  # a user known only by survey answers
        return UserState(0, 0, 0, frozenset(), frozenset(), answers=answers)
    return UserState(
        answers=answers,
        returns=returns,
        first_seen_ms=first_seen,
        last_active_ms=spans[-1][2] if known else first_seen + draw(st.integers(0, 10**11)),
        first_day=first_day,
        active_days=frozenset(active),
        install_days=draw(st.frozensets(days, max_size=5)),
        attributes=attributes,
        purchases=purchases,
        cost_units=draw(st.integers(0, 10**13)),
        session_days=draw(st.frozensets(st.sampled_from(sorted(active)))),
        notified_episode_ms=episode,
        notified_days=notified,
        expired_days=expired,
        utc_spans=spans if known else None,
        **risk,
    )


def shifted(state: UserState, days: int) -> UserState:
    """``state`` moved by ``days`` days, every day and time with it (spans stay on their
    days): near int64's edges where ``days`` is near ±10^14."""
    ms = days * DAY_MS

    def moved(found: frozenset[int]) -> frozenset[int]:
        return frozenset(day + days for day in found)

    episode, risk = state.notified_episode_ms, state.at_risk_episode_ms
    return replace(
        state,
        first_seen_ms=state.first_seen_ms + ms,
        last_active_ms=state.last_active_ms + ms,
        first_day=state.first_day + days,
        active_days=moved(state.active_days),
        install_days=moved(state.install_days),
        attributes=tuple((name, value, ts + ms) for name, value, ts in state.attributes),
        purchases=tuple((day + days, currency, p) for day, currency, p in state.purchases),
        session_days=moved(state.session_days),
        notified_episode_ms=None if episode is None else episode + ms,
        answers=tuple((survey, day + days, ts + ms, event_id, score)
                      for survey, day, ts, event_id, score in state.answers),
        returns=tuple((kind, moved(found)) for kind, found in state.returns),
        utc_spans=None if state.utc_spans is None else tuple(
            (day + days, first + ms, last + ms) for day, first, last in state.utc_spans),
        at_risk_episode_ms=None if risk is None else risk + ms,
        at_risk_moment_ms=state.at_risk_moment_ms + ms if risk is not None else 0,
    )


#: money at and beyond int64's edges (and one negative amount, which no record holds)
EDGE_MONEY = st.integers(0, 2**66) | st.sampled_from(
    [2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**70, -1])


@st.composite
def edge_states(draw: st.DrawFn) -> UserState:
    """Any state moved near int64's edges, with money there too."""
    state = shifted(draw(states()), draw(st.integers(-(10**14), 10**14)))
    purchases = tuple((day, currency, Purchases(draw(EDGE_MONEY), draw(EDGE_MONEY)))
                      for day, currency, _ in state.purchases)
    return replace(state, purchases=purchases, cost_units=draw(EDGE_MONEY))


# what a state without the parts the formats changed is: six zero codes in its record
_BARE = {"session_days": frozenset(), "notified_episode_ms": None, "notified_days": (),
         "expired_days": (), "answers": (), "returns": (), "utc_spans": None,
         "at_risk_episode_ms": None, "at_risk_moment_ms": 0, "at_risk_sent": False}
# the record's parts after the purchases and cost, in order, and the fields each holds
_PARTS = (("session_days",), ("notified_episode_ms", "notified_days", "expired_days"),
          ("answers",), ("returns",), ("utc_spans",),
          ("at_risk_episode_ms", "at_risk_moment_ms", "at_risk_sent"))


def older_record(state: UserState, version: int, sessions: int) -> bytes:
    """``state``'s record in format ``version`` (3-6), as those formats wrote it: a count
    of ``sessions`` events (not days) before 7; no UTC day spans or at-risk mark before 6;
    no answers or returns before 5; marks without the expired flag before 4 (the sent
    ones only). Built from the format-7 encoder's parts: one field group at a time on a
    bare state, the rest of its record equal."""
    bare = replace(state, **_BARE)
    raw = encode_user(bare)
    active = state.active_days
    tail = len(raw) - ((max(active) - state.first_day + 8) // 8 if active else 0)
    assert raw[tail - 6:tail] == bytes(6), "six empty parts before the bitmap"
    head, bitmap = raw[1:tail - 6], raw[tail:]
    parts = []
    for index, fields in enumerate(_PARTS):
        one = encode_user(replace(bare, **{f: getattr(state, f) for f in fields}))
        parts.append(one[1 + len(head) + index:len(one) - len(bitmap) - 5 + index])
    assert bytes([7]) + head + b"".join(parts) + bitmap == encode_user(state)
    count = bytearray()
    _put_varint(count, sessions)
    parts[0] = bytes(count)
    if version == 3:
        marks = bytearray()
        sent = state.notified_days if state.notified_episode_ms is not None else ()
        _put_varint(marks, len(sent))
        if sent:
            _put_varint(marks, _zigzag(state.notified_episode_ms - state.first_seen_ms))
            for day in sent:
                _put_varint(marks, day)
        parts[1] = bytes(marks)
    kept = {3: 2, 4: 2, 5: 4, 6: 6}[version]
    return bytes([version]) + head + b"".join(parts[:kept]) + bitmap


def read_as_older(state: UserState, version: int, sessions: int) -> UserState:
    """What ``older_record(state, version, sessions)`` reads as: any session counted is a
    session on every active day; what the format did not keep, absent or unknown."""
    found = replace(state, session_days=state.active_days if sessions else frozenset())
    if version <= 5:
        found = replace(found, utc_spans=None, at_risk_episode_ms=None, at_risk_moment_ms=0,
                        at_risk_sent=False)
    if version <= 4:
        found = replace(found, answers=(), returns=())
    if version == 3:
        sent = found.notified_days if found.notified_episode_ms is not None else ()
        found = replace(found, notified_episode_ms=found.notified_episode_ms if sent else None,
                        notified_days=sent, expired_days=())
    return found
