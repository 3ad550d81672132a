"""The native user record codec (streams/_codec.pyx) held to the Python one
(streams/user_state.py), the oracle: the same bytes for every state, the same state for
every record of formats 3-7, and the same error where the Python codec raises one.

The usual states must be taken natively (``encode_native`` / ``decode_native`` not None):
a codec that handed everything to Python would pass the equality alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from retention_tracker.streams import engine, user_state
from retention_tracker.streams.user_state import Purchases, UserState

from .user_records import DAY_MS, edge_states, older_record, read_as_older, states

pytestmark = pytest.mark.skipif(not engine.native_built(),
                                reason=f"the native engine is not built: {engine.why_not_built()}")

if engine.native_built():
    from retention_tracker.streams import _codec

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, day 19723
USUAL = UserState(BASE_MS, BASE_MS + 3 * DAY_MS + 5, 19723, frozenset({19723, 19726}),
                  frozenset({19723}), attributes=(("country", "DE", BASE_MS),),
                  session_days=frozenset({19723, 19726}),
                  utc_spans=((19723, BASE_MS, BASE_MS), (19726, BASE_MS + 3 * DAY_MS + 5,
                                                         BASE_MS + 3 * DAY_MS + 5)))


def outcome(call: Callable[[], object]) -> object:
    """What a call gives: its value, or its error's type and message."""
    try:
        return call()
    except Exception as exc:
        return type(exc), str(exc)


@settings(deadline=None, max_examples=300)
@given(states())
def test_every_state_is_encoded_natively_byte_for_byte(state: UserState) -> None:
    raw = _codec.encode_native(state)
    assert raw is not None, "a usual state went to the Python codec"
    assert raw == user_state.encode_user(state)
    decoded = _codec.decode_native(raw)
    assert decoded is not None, "a format-7 record went to the Python codec"
    assert decoded == user_state.decode_user(raw) == state


@settings(deadline=None, max_examples=300)
@given(edge_states())
def test_states_at_int64s_edges_give_the_python_bytes_or_error(state: UserState) -> None:
    """Times near ±2^63 ms, money at and beyond int64 (and negative): what does not fit
    goes to the Python codec whole, never a wrapped number."""
    native = outcome(lambda: _codec.encode_user(state))
    assert native == outcome(lambda: user_state.encode_user(state))
    if isinstance(native, bytes):
        assert outcome(lambda: _codec.decode_user(native)) == outcome(
            lambda: user_state.decode_user(native))


def test_money_up_to_int64_is_native_and_beyond_it_is_pythons() -> None:
    for units in (2**63 - 1, 2**63, 2**64, 2**80):
        state = replace(USUAL, cost_units=units,
                        purchases=((19726, "USD", Purchases(2**63 - 1, units)),))
        raw = user_state.encode_user(state)
        assert (_codec.encode_native(state) is not None) == (units < 2**63)
        assert _codec.encode_user(state) == raw
        assert _codec.decode_user(raw) == state
    negative = replace(USUAL, cost_units=-1)
    with pytest.raises(ValueError, match="cannot hold a negative number"):
        _codec.encode_user(negative)
    with pytest.raises(ValueError, match="cannot hold a negative number"):
        user_state.encode_user(negative)


@settings(deadline=None, max_examples=300)
@given(states(), st.integers(3, 6), st.integers(0, 300))
def test_older_formats_are_read_natively_as_python_reads_them(
        state: UserState, version: int, sessions: int) -> None:
    raw = older_record(state, version, sessions)
    decoded = _codec.decode_native(raw)
    assert decoded is not None, f"a format-{version} record went to the Python codec"
    assert decoded == user_state.decode_user(raw) == read_as_older(state, version, sessions)


@settings(deadline=None, max_examples=300)
@given(states(), st.data())
def test_a_damaged_record_reads_as_python_reads_it(state: UserState, data: st.DataObject
                                                   ) -> None:
    """Cut short or one byte changed: the same state, or the same error."""
    raw = bytearray(user_state.encode_user(state))
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw) - 1)):]
    else:
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    damaged = bytes(raw)
    assert outcome(lambda: _codec.decode_user(damaged)) == outcome(
        lambda: user_state.decode_user(damaged))


@pytest.mark.parametrize("days", [set, list, tuple, lambda d: [*d, *d]])
def test_days_in_other_containers_give_the_python_bytes(days: Callable[[frozenset[int]], Any]
                                                       ) -> None:
    """A state built by hand with sets, lists or repeated days: the Python codec's bytes
    (or its error), whichever codec writes them."""
    state = replace(USUAL, active_days=days(USUAL.active_days),
                    install_days=days(USUAL.install_days), session_days=days({19723}),
                    returns=(("purchase", days({19726})),))
    assert outcome(lambda: _codec.encode_user(state)) == outcome(
        lambda: user_state.encode_user(state))


def test_session_days_on_every_active_day_share_the_active_days_set() -> None:
    decoded = _codec.decode_native(user_state.encode_user(USUAL))
    assert decoded is not None and decoded.session_days is decoded.active_days


def test_the_engine_selects_the_codec_with_the_plan() -> None:
    before = engine.running()
    try:
        engine.select(engine.NATIVE)
        assert engine.codec() is _codec
        engine.select(engine.PYTHON)
        assert engine.codec() is user_state
    finally:
        engine.select(before)
