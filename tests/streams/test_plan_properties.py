"""Property tests: incremental plans over any batching, order and duplication of the events
give exactly the batch reference's figures, for every cohort, offset and granularity."""

from __future__ import annotations

import random
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_tracker.streams import reference
from retention_tracker.streams.calendar import AppCalendar, date_to_day
from retention_tracker.streams.events import Event

from .memory_apply import MemoryState

DAY_MS = 86_400_000
BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
ZONES = ["UTC", "America/New_York", "Asia/Tokyo"]


@st.composite
def event_lists(draw: st.DrawFn) -> list[Event]:
    n_users = draw(st.integers(1, 8))
    n_events = draw(st.integers(1, 60))
    events = []
    for i in range(n_events):
        user = draw(st.integers(0, n_users - 1))
        # spread over ~75 days with hour-level detail, so weeks, months and DST all occur
        ts = BASE_MS + draw(st.integers(0, 75 * 24)) * 3_600_000 + draw(st.integers(0, 3599999))
        kind = draw(st.sampled_from(["install", "session", "session", "purchase"]))
        money = st.sampled_from([0, 0.99, 4.99, 19.99, 120.0, 0.0001])
        events.append(
            Event(
                app=draw(st.sampled_from(["a", "b"])),
                event_id=f"e{i}",
                type=kind,
                user_id=f"u{user}",
                ts_ms=ts,
                platform=draw(st.sampled_from([None, None, "ios", "android"])),
                country=draw(st.sampled_from([None, "BR", "DE"])),
                cost=draw(money) if kind == "install" else None,
                amount=draw(money) if kind == "purchase" else None,
                currency=draw(st.sampled_from([None, "USD", "EUR"])) if kind == "purchase"
                else None,
            )
        )
    return events


def deliver(events: list[Event], rng: random.Random, dup_share: float) -> list[list[Event]]:
    """Shuffle, duplicate some events, and cut the stream into random batches."""
    stream = list(events) + [e for e in events if rng.random() < dup_share]
    rng.shuffle(stream)
    batches, i = [], 0
    while i < len(stream):
        size = rng.randint(1, 12)
        batches.append(stream[i : i + size])
        i += size
    return batches


SEGMENTS = {"all": None, "platform=ios": {"platform": "ios"}, "country=DE": {"country": "DE"},
            "value=payer": {"value": "payer"}, "value=vip": {"value": "vip"}}


def assert_same_figures(state: MemoryState, events: list[Event], tz: str, now_ms: int) -> None:
    for app in ("a", "b"):
        for segment, where in SEGMENTS.items():
            for granularity in ("day", "week", "month"):
                for kind in ("classic", "rolling"):
                    expected = reference.triangle(events, app, granularity, kind, tz, now_ms,
                                                  where=where)
                    got = state.triangle(app, granularity, kind, now_ms, segment)
                    assert got == expected, (app, segment, granularity, kind)
                for kind in ("ltv", "payer_conversion", "roas"):
                    for currency in ("USD", "EUR"):
                        expected = reference.money_triangle(
                            events, app, granularity, kind, tz, now_ms, currency, where=where)
                        got = state.money_triangle(app, granularity, kind, now_ms, currency,
                                                   segment)
                        assert got == expected, (app, segment, granularity, kind, currency)
            for period in ("week", "month"):
                expected = reference.kpis(events, app, period, tz, where=where)
                assert state.kpis(app, period, segment) == expected, (app, segment, period)
            for day, figures in reference.daily_series(events, app, tz, where=where).items():
                got = state.summary(app, date_to_day(day), segment)
                assert got == figures, (app, segment, day)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=event_lists(),
    seed=st.integers(0, 2**32),
    tz=st.sampled_from(ZONES),
    dup_share=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_any_order_batching_and_duplicates_give_reference_figures(
    events: list[Event], seed: int, tz: str, dup_share: float
) -> None:
    state = MemoryState(timezone=tz)
    for batch in deliver(events, random.Random(seed), dup_share):
        assert state.apply(batch) == []
    now_ms = BASE_MS + 60 * DAY_MS  # some cells complete, some not
    assert_same_figures(state, events, tz, now_ms)


@settings(max_examples=60, deadline=None)
@given(events=event_lists(), seed=st.integers(0, 2**32))
def test_replaying_applied_batches_changes_nothing(events: list[Event], seed: int) -> None:
    """A crash that replays already-applied events (same ids) leaves every figure as is."""
    state = MemoryState()
    batches = deliver(events, random.Random(seed), 0.0)
    for batch in batches:
        state.apply(batch)
    before = {k: +v for k, v in state.counters.items()}
    for batch in batches[: len(batches) // 2 + 1]:
        state.apply(batch)
    assert {k: +v for k, v in state.counters.items()} == before


def test_late_first_event_moves_user_to_earlier_cohort() -> None:
    state = MemoryState()
    day = lambda n: BASE_MS + n * DAY_MS  # noqa: E731
    state.apply([Event("a", "1", "install", "u", day(5)), Event("a", "2", "session", "u", day(6))])
    assert [r["cohort"] for r in state.triangle("a", "day", "classic", day(9))] == ["2024-01-06"]
    state.apply([Event("a", "3", "session", "u", day(1))])  # uploaded late
    rows = state.triangle("a", "day", "classic", day(9))
    assert [(r["cohort"], r["counts"]) for r in rows] == [("2024-01-02", [1, 0, 0, 0, 1, 1])]


def test_events_older_than_horizon_are_rejected_not_counted() -> None:
    state = MemoryState(horizon_days=31)
    state.apply([Event("a", "1", "session", "u", BASE_MS + 100 * DAY_MS)])
    old = Event("a", "2", "session", "v", BASE_MS)
    assert state.apply([old]) == [old]
    assert state.family("a", "coh:day") == {str(date_to_day(date(2024, 4, 10))): 1}


def test_summary_counts_reinstall_days_and_new_users_once() -> None:
    state = MemoryState()
    cal = AppCalendar("UTC")
    state.apply([
        Event("a", "1", "install", "u", BASE_MS),
        Event("a", "2", "install", "u", BASE_MS + 3 * DAY_MS),
        Event("a", "3", "session", "w", BASE_MS + 3 * DAY_MS),
    ])
    d3 = cal.day_of(BASE_MS + 3 * DAY_MS)
    got = state.summary("a", d3)
    assert (got["installs"], got["new_users"], got["dau"], got["returning_users"]) == (1, 1, 2, 1)
    assert got["date"] == (date(2024, 1, 1) + timedelta(days=3)).isoformat()


def test_crr_worked_example_50_start_65_end_25_new_is_80_percent() -> None:
    """METRICS.md §6: 50 customers at the start, 65 at the end, 25 of them new: CRR = 80%."""
    state = MemoryState()
    week = 7 * DAY_MS
    events = [Event("a", f"p{u}", "session", f"old{u}", BASE_MS + u) for u in range(50)]
    events += [Event("a", f"k{u}", "session", f"old{u}", BASE_MS + week + u) for u in range(40)]
    events += [Event("a", f"n{u}", "install", f"new{u}", BASE_MS + week + u) for u in range(25)]
    random.Random(0).shuffle(events)
    state.apply(events)
    second = state.kpis("a", "week")[1]
    assert (second["period"], second["active"], second["new_users"]) == ("2024-W02", 65, 25)
    assert (second["crr"], second["churn"]) == (0.8, 0.2)


def test_money_is_exact_to_the_cent_and_duplicates_pay_once() -> None:
    state = MemoryState()
    buy = Event("a", "b1", "purchase", "u", BASE_MS + DAY_MS, amount=0.1, currency="USD")
    state.apply([buy, Event("a", "i1", "install", "u", BASE_MS + 2 * DAY_MS, cost=0.3)])
    state.apply([buy, Event("a", "b2", "purchase", "u", BASE_MS + DAY_MS, amount=0.2)])
    day = date_to_day(date(2024, 1, 2))
    assert state.summary("a", day)["revenue"] == {"USD": 0.3}  # not 0.30000000000000004
    ltv = state.money_triangle("a", "day", "roas", BASE_MS + 5 * DAY_MS)
    assert ltv[0]["cac"] == 0.3 and ltv[0]["values"][0] == 1.0
