"""Win-back on the event clock (METRICS.md §7): now moves event by event, so every episode of
a replayed history is handled, in order, however the stream is cut into batches; moments
found too late are expired, not sent; a late event dated before a sent moment is a false
alarm. Fixed examples, then a property against a plain simulation, on the real store."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_tracker.bench import reference
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar
from retention_tracker.streams.counters import Cell, Stat
from retention_tracker.streams.events import Event
from retention_tracker.streams.plan import dedup_key_of, plan_batch
from retention_tracker.streams.segments import DEFAULT_RULES
from retention_tracker.streams.user_state import UserState
from retention_tracker.streams.winback import (
    WinbackRules,
    event_clock_now_ms,
    iso_ms,
    notification_id,
    plan_notifications,
)

from .delivery import in_arrival_order, named, random_batches
from .real_apply import RealApply

# every plan here runs on each engine (tests/streams/conftest.py)
pytestmark = pytest.mark.usefixtures("engine")

HOUR_MS = 3_600_000
BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
UTC = AppCalendar("UTC")
UTC_APPS = {app: UTC for app in ("a", "b", "default")}  # every app of the tests, in UTC
RULES = WinbackRules(thresholds=(1, 2), max_delay_ms=MS_PER_DAY, quick_churn_days=7)


def session(user: str, n: int, ts_ms: int) -> Event:
    return Event("a", f"{user}-{n}", "session", user, ts_ms)


def plan(events: list[Event], states: dict | None = None, watermark: int | None = None,
         rules: WinbackRules = RULES):
    items = [(i, -1, e) for i, e in enumerate(events)]
    users = {(e.app, e.user_id) for e in events}
    return plan_batch(items, {u: (states or {}).get(u) for u in users}, set(), watermark, 400,
                      UTC_APPS, DEFAULT_RULES, winback=rules, event_clock=True)


# ---- fixed examples ----------------------------------------------------------------------


def test_a_gap_inside_one_batch_is_an_episode_and_its_end_a_return() -> None:
    """u is active at 0 h and 60 h; t's events every 6 h move now between. Both thresholds'
    moments (24 h, 48 h) come before u's return: two messages for episode 0 h, then one
    reactivation naming both, 60 h away."""
    events = [session("u", 0, BASE_MS)]
    events += [session("t", n, BASE_MS + n * 6 * HOUR_MS) for n in range(1, 10)]
    events.insert(-1, session("u", 1, BASE_MS + 60 * HOUR_MS))  # before t's 54 h event
    found = plan(events)
    sent = sorted((m["user_id"], m["threshold_days"]) for m in found.notifications)
    assert sent == [("u", 1), ("u", 2)]
    assert {m["notification_id"] for m in found.notifications} == {
        notification_id("a", "u", days, BASE_MS) for days in (1, 2)}
    (back,) = found.reactivations
    assert (back["user_id"], back["threshold_days"], back["days_away"]) == ("u", [1, 2], 2.5)
    assert back["back_within_7d"] == {"1": True, "2": True}
    stats = named(found.stats)
    assert stats["sent:a:1:free:quick"] == stats["sent:a:2:free:quick"] == 1
    assert stats["react:a:1:free:quick"] == stats["react:a:2:free:quick"] == 1
    assert stats["inactive:a:1"] == stats["inactive:a:2"] == 0  # +1 then -1
    assert found.users[("a", "u")].notified_days == ()  # cleared: the next lapse is new


def test_the_users_own_return_can_be_what_moves_now_past_its_moment() -> None:
    """Nobody else is active: u's return at 30 h is the event that brings now past its 24 h
    moment. In a live system the message would have gone out at 24 h: it is an episode."""
    found = plan([session("u", 0, BASE_MS), session("u", 1, BASE_MS + 30 * HOUR_MS)])
    assert [(m["threshold_days"], m["last_active"]) for m in found.notifications] == [
        (1, "2024-01-01T00:00:00.000+00:00")]
    assert [m["threshold_days"] for m in found.reactivations] == [[1]]


def test_a_moment_found_later_than_the_max_delay_is_expired_not_sent() -> None:
    """now jumps from 1 h to 80 h in one event: u's 24 h and 48 h moments are found 56 h
    and 32 h late. Neither is published; both are counted expired; u's return later makes
    no reactivation message (nothing was sent) but u is no longer inactive."""
    first = plan([session("u", 0, BASE_MS), session("t", 0, BASE_MS + HOUR_MS),
                  session("t", 1, BASE_MS + 80 * HOUR_MS)])
    assert first.notifications == []
    assert first.due[("a", "u")] == BASE_MS + MS_PER_DAY  # one entry: its earliest moment
    after = plan_notifications(
        [(("a", "u"), BASE_MS + MS_PER_DAY)],
        first.users, BASE_MS + 80 * HOUR_MS, UTC_APPS, DEFAULT_RULES, RULES,
        first.arrivals)
    assert after.due == {("a", "u"): None}  # both thresholds handled: the entry goes
    assert after.messages == []
    assert named(after.stats) == Counter({"expired:a:1": 1, "expired:a:2": 1, "inactive:a:1": 1,
                                   "inactive:a:2": 1})
    marked = after.users[("a", "u")]
    assert (marked.notified_days, marked.expired_days) == ((), (1, 2))
    back = plan([session("u", 9, BASE_MS + 81 * HOUR_MS)], {("a", "u"): marked},
                watermark=BASE_MS + 80 * HOUR_MS)
    assert back.reactivations == []
    assert named(back.stats)["inactive:a:1"] == named(back.stats)["inactive:a:2"] == -1
    assert not any(k.startswith(("react:", "false:")) for k in named(back.stats))


def test_the_max_delay_counts_from_when_now_reached_the_moment() -> None:
    """A long batch: u's 24 h moment is reached by t's 25 h event (1 h late), and the batch
    goes on to 90 h. Found by the pass after the batch, it is still fresh."""
    events = [session("u", 0, BASE_MS)] + [
        session("t", n, BASE_MS + n * HOUR_MS) for n in (1, 25, 60, 90)]
    batch = plan(events, rules=WinbackRules((1,), MS_PER_DAY, 7))
    after = plan_notifications([(("a", "u"), BASE_MS + MS_PER_DAY)], batch.users,
                               BASE_MS + 90 * HOUR_MS, UTC_APPS, DEFAULT_RULES,
                               WinbackRules((1,), MS_PER_DAY, 7), batch.arrivals)
    assert [m["user_id"] for m in after.messages] == ["u"]
    assert named(after.stats)["expired:a:1"] == 0


def test_one_due_entry_per_user_moves_from_threshold_to_threshold() -> None:
    """Issue 31: u's one entry is its 24 h moment; handled at 25 h, it moves to the 48 h
    moment; handled at 50 h, it goes. An entry of an episode handled already only moves."""
    first = plan([session("u", 0, BASE_MS), session("t", 0, BASE_MS + HOUR_MS)])
    assert first.due[("a", "u")] == BASE_MS + MS_PER_DAY
    at_25h = plan_notifications([(("a", "u"), BASE_MS + MS_PER_DAY)], first.users,
                                BASE_MS + 25 * HOUR_MS, UTC_APPS, DEFAULT_RULES, RULES)
    assert [m["threshold_days"] for m in at_25h.messages] == [1]
    assert at_25h.due == {("a", "u"): BASE_MS + 2 * MS_PER_DAY}
    again = plan_notifications([(("a", "u"), BASE_MS + MS_PER_DAY)], at_25h.users,
                               BASE_MS + 26 * HOUR_MS, UTC_APPS, DEFAULT_RULES, RULES)
    assert again.messages == [] and again.due == {("a", "u"): BASE_MS + 2 * MS_PER_DAY}
    at_50h = plan_notifications([(("a", "u"), BASE_MS + 2 * MS_PER_DAY)], at_25h.users,
                                BASE_MS + 50 * HOUR_MS, UTC_APPS, DEFAULT_RULES, RULES)
    assert [m["threshold_days"] for m in at_50h.messages] == [2]
    assert at_50h.due == {("a", "u"): None}


def test_a_late_event_before_a_sent_moment_is_a_false_alarm() -> None:
    """u's 24 h message went out; then an event of u dated 20 h arrives (late): u was not
    inactive for a day after all. A false alarm, never a reactivation."""
    notified = plan([session("u", 0, BASE_MS), session("t", 0, BASE_MS + 25 * HOUR_MS)],
                    rules=WinbackRules((1,), MS_PER_DAY, 7))
    after = plan_notifications([(("a", "u"), BASE_MS + MS_PER_DAY)], notified.users,
                               BASE_MS + 25 * HOUR_MS, UTC_APPS, DEFAULT_RULES,
                               WinbackRules((1,), MS_PER_DAY, 7), notified.arrivals)
    assert len(after.messages) == 1
    late = plan([session("u", 1, BASE_MS + 20 * HOUR_MS)], after.users,
                watermark=BASE_MS + 25 * HOUR_MS, rules=WinbackRules((1,), MS_PER_DAY, 7))
    assert late.reactivations == []
    assert named(late.stats)["false:a:1:free:quick"] == 1
    assert named(late.stats)["inactive:a:1"] == -1
    assert "react:a:1:free:quick" not in named(late.stats)


def test_live_clock_sends_fresh_moments_and_expires_old_ones() -> None:
    """Wall clock, first start on old data: a moment 23 h ago goes out, one 25 h ago not."""
    state = {("a", u): UserState(BASE_MS, BASE_MS + h * HOUR_MS, 0, frozenset({0}),
                                 frozenset()) for u, h in (("fresh", 2), ("stale", 0))}
    now = BASE_MS + 2 * HOUR_MS + MS_PER_DAY + 23 * HOUR_MS
    due = [(("a", "fresh"), BASE_MS + 26 * HOUR_MS), (("a", "stale"), BASE_MS + MS_PER_DAY)]
    found = plan_notifications(due, state, now, UTC_APPS, DEFAULT_RULES,
                               WinbackRules((1,), MS_PER_DAY, 7))
    assert [m["user_id"] for m in found.messages] == ["fresh"]
    assert named(found.stats)["expired:a:1"] == 1
    assert found.users[("a", "stale")].expired_days == (1,)


def test_no_thresholds_no_win_back() -> None:
    found = plan([session("u", 0, BASE_MS), session("u", 1, BASE_MS + 30 * MS_PER_DAY)],
                 rules=WinbackRules((), MS_PER_DAY, 7))
    assert found.notifications == [] and found.reactivations == []
    assert not any(k.startswith(("sent:", "inactive:", "expired:")) for k in named(found.stats))


# ---- the property: any batching gives the plain simulation's episodes ----------------------


@dataclass
class Outcome:
    """Episodes as (user, days, episode last_active ms), by what became of them."""

    sent: set[tuple[str, int, int]] = field(default_factory=set)
    expired: Counter[int] = field(default_factory=Counter)  # per threshold
    returns: set[tuple[str, int, int]] = field(default_factory=set)
    false_alarms: Counter[int] = field(default_factory=Counter)
    sessions: set[tuple[str, int, int, int]] = field(default_factory=set)  # + payload's


async def replay(store: RedisStore, batches: list[list[Event]], rules: WinbackRules
                 ) -> Outcome:
    """The worker's event-clock loop on one partition: each batch planned and applied, then
    the pass over the due set at the new watermark."""
    out = Outcome()
    stats: Counter[Cell] = Counter()
    offset = 0
    for batch in batches:
        items = [(offset + i, -1, e) for i, e in enumerate(batch)]
        offset += len(batch)
        loaded = await store.load_batch(0, ["t"], [(e.app, e.user_id) for e in batch],
                                        [dedup_key_of(e) for e in batch], BASE_MS)
        found = plan_batch(items, loaded.states, loaded.seen_dedup_keys, loaded.watermark_ms,
                           400, UTC_APPS, DEFAULT_RULES, winback=rules, event_clock=True)
        assert await store.apply_plan(0, loaded, {"t": offset}, found)
        messages = list(found.notifications)
        returns = list(found.reactivations)
        stats.update(found.stats)
        now = found.watermark_ms or 0
        due = await store.due.due_entries(0, now)
        if due:
            users = [u for u, _ in due]
            held = await store.load_batch(0, [], users, [], BASE_MS)
            passed = plan_notifications(due, held.states, now, UTC_APPS, DEFAULT_RULES,
                                        rules, found.arrivals, found.known_ms)
            assert await store.apply_notifications(0, held, passed)
            messages += passed.messages
            stats.update(passed.stats)
        for m in messages:
            key = (m["user_id"], m["threshold_days"], _ms(m["last_active"]))
            assert key not in out.sent, f"sent twice: {key}"
            out.sent.add(key)
            out.sessions.add((*key, m["sessions"]))
        for m in returns:
            out.returns |= {(m["user_id"], d, _ms(m["last_active"])) for d in m["threshold_days"]}
    for key, value in stats.items():
        kind = key[0]
        if kind in (Stat.FALSE_ALARM, Stat.EXPIRED):
            (out.false_alarms if kind is Stat.FALSE_ALARM else out.expired)[key[2]] += value
    out.false_alarms, out.expired = +out.false_alarms, +out.expired
    return out


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """A few users with gaps of hours to days, delivered roughly in time order: each event
    may arrive up to 30 h late. Some events are purchases (activity, but no session day),
    and some are delivered twice, the copy up to 50 h after the original."""
    events = []
    for u in range(draw(st.integers(1, 5))):
        ts = BASE_MS + draw(st.integers(0, 48)) * HOUR_MS
        for n in range(draw(st.integers(1, 8))):
            event = session(f"u{u}", n, ts)
            if draw(st.integers(0, 3)) == 0:
                event = msgspec.structs.replace(event, type="purchase", amount=1.0)
            events.append(event)
            ts += draw(st.sampled_from([1, 5, 20, 26, 40, 50, 75])) * HOUR_MS
    events += [e for e in list(events) if draw(st.integers(0, 4)) == 0]  # copies
    delays = [draw(st.sampled_from([0, 0, 0, 2, 30, 50])) * HOUR_MS for _ in events]
    return in_arrival_order(events, delays)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=histories(), seed=st.integers(0, 2**32 - 1))
def test_any_batching_gives_the_simulations_episodes(redis_url: str, stream: list[Event],
                                                     seed: int) -> None:
    rng = random.Random(seed)
    batches = random_batches(stream, rng)
    expected = reference.inactivity_episodes(reference.dedup(stream), RULES.thresholds,
                                             RULES.max_delay_ms)

    async def scenario() -> Outcome:
        async with RealApply(redis_url, thresholds=RULES.thresholds, shards=1,
                             state_cache_users=rng.choice([0, 50])) as state:
            return await replay(state.store, batches, RULES)

    got = asyncio.run(scenario())
    assert got.sent == expected["sent"]
    assert got.expired == Counter(d for _, d, _ in expected["expired"])
    assert got.returns == expected["returns"]
    assert got.false_alarms == Counter(d for _, d, _ in expected["false_alarms"])
    assert got.sessions == expected["sessions"]  # the payload's distinct session days


@given(ts_ms=st.integers(0, 253_402_300_799_999))  # 1970 to the end of year 9999
def test_payload_times_are_utc_iso_8601_to_the_millisecond(ts_ms: int) -> None:
    """Exact, from integers (``datetime.fromtimestamp(ts_ms / 1000)`` goes through a float
    and is a millisecond off for some instants past 2100)."""
    exact = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ts_ms)
    assert iso_ms(ts_ms) == exact.isoformat(timespec="milliseconds")


def test_each_app_at_its_own_thresholds() -> None:
    """APP_INACTIVITY_THRESHOLDS: app "fast" notifies after 1 day, the others after 2 (the
    global thresholds); the event clock finds both moments inside one batch; the due moments
    of the notifier are those of each app's thresholds only."""
    rules = WinbackRules(thresholds=(2,), max_delay_ms=3 * MS_PER_DAY, per_app={"fast": (1,)})
    assert rules.every_threshold == (1, 2) and rules.thresholds_of("slow") == (2,)
    events = [Event("fast", "f1", "session", "u", BASE_MS),
              Event("slow", "s1", "session", "u", BASE_MS),
              Event("fast", "x", "session", "later", BASE_MS + 3 * MS_PER_DAY - HOUR_MS)]
    plan = plan_batch([(i, -1, e) for i, e in enumerate(events)],
                      {(e.app, e.user_id): None for e in events}, set(), None, 400,
                      {"fast": UTC, "slow": UTC}, DEFAULT_RULES, winback=rules,
                      event_clock=True)
    assert plan.due == {("fast", "later"): BASE_MS + 4 * MS_PER_DAY - HOUR_MS,
                        ("fast", "u"): BASE_MS + MS_PER_DAY,
                        ("slow", "u"): BASE_MS + 2 * MS_PER_DAY}
    due = [(user, due_ms) for user, due_ms in plan.due.items() if due_ms is not None]
    notified = plan_notifications(due, plan.users, plan.watermark_ms or 0,
                                  {"fast": UTC, "slow": UTC}, DEFAULT_RULES, rules)
    assert sorted((m["app"], m["threshold_days"]) for m in notified.messages) == [
        ("fast", 1), ("slow", 2)]


def test_a_caught_up_partition_follows_the_streams_watermark() -> None:
    """METRICS.md §2: with a backlog, a partition's own watermark (its backlog may still
    cancel a moment); caught up, the stream's, never behind its own."""
    assert event_clock_now_ms(100, 900, caught_up=False) == 100
    assert event_clock_now_ms(100, 900, caught_up=True) == 900
    assert event_clock_now_ms(100, None, caught_up=True) == 100
    assert event_clock_now_ms(None, None, caught_up=True) == 0  # nothing read anywhere yet
