"""Hand-worked examples of the plan (streams/plan.py), applied by the real Lua on a real
Redis and read back through the queries: each expected number is worked out from
METRICS.md, so a bug fails here deterministically, not only when hypothesis finds it."""

from __future__ import annotations

import random
from datetime import date

import pytest

from retention_tracker.state.queries import cohort_report, kpis_report, summary_report
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar, date_to_day
from retention_tracker.streams.counters import Measure, Stat
from retention_tracker.streams.events import Event
from retention_tracker.streams.plan import dedup_key, dedup_key_of, plan_batch

from .real_apply import RealApply

# every plan here runs on each engine (tests/streams/conftest.py)
pytestmark = pytest.mark.usefixtures("engine")

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
UTC = AppCalendar("UTC")
UTC_APPS = {app: UTC for app in ("a", "b", "default")}  # every app of the tests, in UTC


def day(n: int) -> int:
    return BASE_MS + n * MS_PER_DAY


def test_duplicates_inside_one_batch_count_once_in_the_plan() -> None:
    """§1: a second event with the same (app, event_id) is ignored and counted, also when
    both copies arrive in one batch (no earlier batch has remembered the id)."""
    buy = Event("a", "b1", "purchase", "u", day(0), amount=2.5, currency="USD")
    other = Event("a", "b1", "purchase", "u", day(3), amount=9.0)  # same id, other content
    plan = plan_batch([(0, -1, buy), (1, -1, buy), (2, -1, other)], {("a", "u"): None},
                      set(), None, 400, UTC_APPS)
    assert plan.stats == {(Stat.ACCEPTED, "a", "purchase"): 1, (Stat.DUPLICATE, "a"): 2}
    assert plan.new_dedup_keys == [dedup_key("a", "b1")]
    deltas = plan.deltas["a"][("all", "value=payer")]
    d0 = date_to_day(date(2024, 1, 1))
    assert deltas[Measure.DAU, d0] == 1
    assert deltas[Measure.REVENUE, d0, "USD"] == 25_000  # 2.5 in 1/10,000ths, once
    assert (Measure.DAU, d0 + 3) not in deltas


async def test_duplicates_inside_one_batch_count_once_in_redis(redis_url: str) -> None:
    """§1: copies of a purchase are remembered by id, counted as duplicates and pay once;
    copies of a session change nothing by construction (a day is active or not), so their
    id is not kept: they count as accepted events, and no dedup key is written for them."""
    async with RealApply(redis_url) as state:
        copies = [Event("a", "s1", "session", "u", day(0))] * 3
        assert await state.apply(copies, day(0)) == []
        summary = (await summary_report(state.store, state.settings, "a",
                                        date(2024, 1, 1))).as_json()
        assert (summary["dau"], summary["new_users"]) == (1, 1)
        assert +await state.store.reads.read_stats() == {"acc:a:session": 3}
        assert [k async for k in state.client.scan_iter(match="*:dd:*")] == []
        buys = [Event("a", "b1", "purchase", "u", day(0), amount=1.5, currency="USD")] * 3
        assert await state.apply(buys, day(0)) == []
        summary = (await summary_report(state.store, state.settings, "a",
                                        date(2024, 1, 1))).as_json()
        assert (summary["dau"], summary["revenue"]) == (1, {"USD": 1.5})
        assert +await state.store.reads.read_stats() == {"acc:a:session": 3, "acc:a:purchase": 1,
                                                   "dup:a": 2}
        assert len([k async for k in state.client.scan_iter(match="*:dd:*")]) == 1


def test_only_events_whose_effect_adds_up_are_remembered() -> None:
    """Purchases and installs with a cost have a dedup key; sessions, custom activities,
    installs without cost and survey answers have none (their copies change nothing)."""
    kept = [Event("a", "p", "purchase", "u", day(0), amount=0.0),
            Event("a", "i", "install", "u", day(0), cost=0.5)]
    not_kept = [Event("a", "s", "session", "u", day(0)), Event("a", "b", "bet", "u", day(0)),
                Event("a", "i0", "install", "u", day(0)), Event("a", "i1", "install", "u",
                                                                day(0), cost=0.0),
                Event("a", "q", "survey", "u", day(0), score=9)]
    assert [dedup_key_of(e) for e in kept] == [dedup_key("a", "p"), dedup_key("a", "i")]
    assert [dedup_key_of(e) for e in not_kept] == [None] * len(not_kept)


async def test_weekly_cohorts_are_iso_weeks_and_count_each_offset(redis_url: str) -> None:
    """§2/§4 by week: weeks start on Monday (Jan 1 2024 is one). u comes on Sunday Jan 7
    (week 2024-W01) and again in W03 and W04; v comes on Monday Jan 8 (W02) and in W04.
    Now is Jan 24 (W04): W01's cells at +0..+3 are u, -, u, u; W02's: v, -, v."""
    events = [Event("a", "u0", "session", "u", day(6)), Event("a", "u1", "session", "u", day(15)),
              Event("a", "u2", "session", "u", day(22)), Event("a", "v0", "session", "v", day(7)),
              Event("a", "v1", "session", "v", day(23))]
    async with RealApply(redis_url) as state:
        await state.apply(events, day(23))
        rows = (await cohort_report(state.store, state.settings, "a", "week")).as_json()["cohorts"]
        assert [(r["cohort"], r["size"], r["counts"]) for r in rows] == [
            ("2024-W01", 1, [1, 0, 1, 1]), ("2024-W02", 1, [1, 0, 1])]
        rolling = (await cohort_report(state.store, state.settings, "a", "week",
                                       "rolling")).as_json()
        assert [r["counts"] for r in rolling["cohorts"]] == [[1, 1, 1, 1], [1, 1, 1]]


async def test_late_first_event_moves_user_to_earlier_cohort(redis_url: str) -> None:
    async with RealApply(redis_url) as state:
        await state.apply([Event("a", "1", "install", "u", day(5)),
                           Event("a", "2", "session", "u", day(6))], day(6))
        report = (await cohort_report(state.store, state.settings, "a")).as_json()
        assert [r["cohort"] for r in report["cohorts"]] == ["2024-01-06"]
        await state.apply([Event("a", "3", "session", "u", day(1))], day(7))  # uploaded late
        rows = (await cohort_report(state.store, state.settings, "a")).as_json()["cohorts"]
        # cohort Jan 2, active on Jan 2, 6 and 7: offsets 0, 4 and 5
        assert [(r["cohort"], r["counts"]) for r in rows] == [("2024-01-02", [1, 0, 0, 0, 1, 1])]


async def test_events_older_than_horizon_are_rejected_not_counted(redis_url: str) -> None:
    async with RealApply(redis_url, horizon_days=31) as state:
        await state.apply([Event("a", "1", "session", "u", day(100))], day(100))
        old = Event("a", "2", "session", "v", day(0))
        assert await state.apply([old], day(100)) == [old]
        assert await state.store.reads.read_family("a", "coh:day") == {
            str(date_to_day(date(2024, 4, 10))): 1}
        assert (await state.store.reads.read_stats())["rej:too_old"] == 1


async def test_summary_counts_reinstall_days_and_new_users_once(redis_url: str) -> None:
    async with RealApply(redis_url) as state:
        await state.apply([
            Event("a", "1", "install", "u", day(0)),
            Event("a", "2", "install", "u", day(3)),
            Event("a", "3", "session", "w", day(3)),
        ], day(3))
        got = (await summary_report(state.store, state.settings, "a", date(2024, 1, 4))).as_json()
        # on Jan 4: u reinstalls (1 install, not new), w comes for the first time (new, no
        # install event): DAU 2, of them 1 new and 1 returning
        assert (got["installs"], got["new_users"], got["dau"], got["returning_users"]) == (
            1, 1, 2, 1)
        assert (got["wau"], got["mau"], got["stickiness"]) == (2, 2, 1.0)


async def test_crr_worked_example_50_start_65_end_25_new_is_80_percent(redis_url: str) -> None:
    """METRICS.md §6: 50 customers at the start, 65 at the end, 25 of them new: CRR = 80%."""
    week = 7 * MS_PER_DAY
    events = [Event("a", f"p{u}", "session", f"old{u}", BASE_MS + u) for u in range(50)]
    events += [Event("a", f"k{u}", "session", f"old{u}", BASE_MS + week + u) for u in range(40)]
    events += [Event("a", f"n{u}", "install", f"new{u}", BASE_MS + week + u) for u in range(25)]
    random.Random(0).shuffle(events)
    async with RealApply(redis_url) as state:
        await state.apply(events, day(8))
        kpis = (await kpis_report(state.store, state.settings, "a", "week")).as_json()
        second = kpis["periods"][1]
    assert (second["period"], second["active"], second["new_users"]) == ("2024-W02", 65, 25)
    assert (second["crr"], second["churn"]) == (0.8, 0.2)


async def test_money_is_exact_to_the_cent_and_duplicates_pay_once(redis_url: str) -> None:
    buy = Event("a", "b1", "purchase", "u", day(1), amount=0.1, currency="USD")
    async with RealApply(redis_url) as state:
        await state.apply([buy, Event("a", "i1", "install", "u", day(2), cost=0.3)], day(2))
        await state.apply([buy, Event("a", "b2", "purchase", "u", day(1), amount=0.2)], day(2))
        got = (await summary_report(state.store, state.settings, "a", date(2024, 1, 2))).as_json()
        assert got["revenue"] == {"USD": 0.3}  # not 0.30000000000000004
        roas = (await cohort_report(state.store, state.settings, "a", "day", "roas")).as_json()
        assert roas["cohorts"][0]["cac"] == 0.3 and roas["cohorts"][0]["values"][0] == 1.0


def test_the_lapse_summaries_move_with_each_new_active_day_in_all_users_only() -> None:
    """§9: a user is one count at (x, t_x days, first day). Days 0 and 3, then a late day 1
    (x grows, t_x does not), then a day -2 (the first day moves: every coordinate does); a
    second session on a known day moves nothing."""
    d0 = date_to_day(date(2024, 1, 1))
    ev = [Event("a", f"e{n}", "session", "u", day(n), platform="ios") for n in (0, 3, 1, -2)]
    first = plan_batch([(0, -1, ev[0]), (1, -1, ev[1])], {("a", "u"): None}, set(), None, 400,
                       UTC_APPS)
    assert first.deltas["a"][("all",)] == {(Measure.LAPSE, 1, 3, d0): 1}
    user = first.users["a", "u"]
    late = plan_batch([(2, -1, ev[2])], {("a", "u"): user}, set(), None, 400, UTC_APPS)
    assert late.deltas["a"][("all",)] == {(Measure.LAPSE, 1, 3, d0): -1,
                                          (Measure.LAPSE, 2, 3, d0): 1}
    earlier = plan_batch([(3, -1, ev[3])], {("a", "u"): late.users["a", "u"]}, set(), None,
                         400, UTC_APPS)
    assert earlier.deltas["a"][("all",)] == {(Measure.LAPSE, 2, 3, d0): -1,
                                             (Measure.LAPSE, 3, 5, d0 - 2): 1}
    again = Event("a", "e9", "session", "u", day(3) + 1000)
    same = plan_batch([(4, -1, again)], {("a", "u"): earlier.users["a", "u"]}, set(), None,
                      400, UTC_APPS)
    assert ("all",) not in same.deltas.get("a", {})
    assert not any(cell[0] is Measure.LAPSE for segments, group in first.deltas["a"].items()
                   if segments != ("all",) for cell in group)  # not per platform or value
