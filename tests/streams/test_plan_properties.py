"""Property tests: incremental plans, applied by the real Lua scripts on a real Redis, over
any batching, order and duplication of the events give exactly the batch reference's
figures, for every family, segment, granularity (24-hour windows too), money curve, KPI and
win-back due moment.

The dedup window and the horizon are modelled from the contract (§1, §2): copies delivered
inside the window are duplicates, copies delivered after twice the window count again, and
an event older than the horizon behind its partition's watermark at its arrival is
rejected (``too_old``). ``accepted_events`` derives from that which events the reference
must count; the hand-worked examples beside this (test_figures, test_queries, test_plan)
pin each figure without hypothesis.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from datetime import date, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_tracker.bench import reference
from retention_tracker.config.settings import Settings
from retention_tracker.state.queries import (
    QueryError,
    cohort_report,
    kpis_report,
    nps_report,
    read_daily,
    read_measure,
    repeat_purchase_report,
    summary_report,
)
from retention_tracker.streams.calendar import MS_PER_DAY, date_to_day
from retention_tracker.streams.counters import Measure
from retention_tracker.streams.events import Event
from retention_tracker.streams.figures import day_summary
from retention_tracker.streams.plan import adds_up

from .delivery import random_batches
from .real_apply import RealApply

# every plan here runs on each engine (tests/streams/conftest.py)
pytestmark = pytest.mark.usefixtures("engine")

BASE_MS = 1_701_648_000_000  # 2023-12-04T00:00:00Z, a Monday
ZONES = ["UTC", "America/New_York", "Asia/Tokyo"]
APPS = ("a", "b")
WINDOW_DAYS = 7
# ~0.9 s an example on 2 cores; scripts/mutation lowers it for its thousands of runs
PROPERTY_EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "35"))
# app "b" has its own currency and VIP bars; "a" the global defaults (USD, 100, 10)
PER_APP = {"app_currencies": {"b": "EUR"}, "app_vip_revenue": {"b": 20.0},
           "app_vip_purchases": {"b": 3}, "app_inactivity_thresholds": {"b": (1, 3)}}
# every kind of segment the state keeps: attribute values, and each value segment
SEGMENTS = {"all": None, "platform=ios": {"platform": "ios"},
            "platform=android": {"platform": "android"}, "country=DE": {"country": "DE"},
            "campaign=fb": {"campaign": "fb"}, "value=payer": {"value": "payer"},
            "value=vip": {"value": "vip"}, "value=free": {"value": "free"}}


@st.composite
def event_lists(draw: st.DrawFn) -> list[Event]:
    n_users = draw(st.integers(1, 8))
    n_events = draw(st.integers(1, 50))
    events = []
    for i in range(n_events):
        user = draw(st.integers(0, n_users - 1))
        # spread over ~105 days with hour-level detail, so weeks, months, a new year and
        # DST all occur
        ts = BASE_MS + draw(st.integers(0, 105 * 24)) * 3_600_000 + draw(st.integers(0, 3599999))
        # "bet": a custom activity type (ACTIVITY_EVENTS), activity like a session; "survey":
        # an answer, no activity, on a coarse grid of times so equal times occur
        kind = draw(st.sampled_from(["install", "session", "session", "purchase", "bet",
                                     "survey"]))
        money = st.sampled_from([0, 0.99, 4.99, 19.99, 120.0, 0.0001])
        if kind == "survey":  # users 0..n_users+1: some are known only by their answers
            user = draw(st.integers(0, n_users + 1))
            ts = (BASE_MS + draw(st.integers(0, 4)) * 20 * MS_PER_DAY
                  + draw(st.sampled_from([10, 10, 11])) * 3_600_000)
        event = Event(
                app=draw(st.sampled_from(APPS)),
                event_id=f"e{i}",
                type=kind,
                user_id=f"u{user}",
                ts_ms=ts,
                platform=draw(st.sampled_from([None, None, "ios", "android"])),
                country=draw(st.sampled_from([None, "BR", "DE"])),
                campaign=draw(st.sampled_from([None, None, "fb", "tt"])),
                cost=draw(money) if kind == "install" else None,
                amount=draw(money) if kind == "purchase" else None,
                currency=draw(st.sampled_from([None, "USD", "EUR"])) if kind == "purchase"
                else None,
                score=draw(st.integers(0, 10)) if kind == "survey" else None,
                survey=draw(st.sampled_from(["nps", "nps", "csat"])) if kind == "survey"
                else None,
            )
        answers = [e for e in events if e.type == "survey"]
        if kind == "survey" and answers and draw(st.booleans()):
            # another answer of an earlier answerer at the same time: the larger id wins
            same = answers[draw(st.integers(0, len(answers) - 1))]
            event = msgspec.structs.replace(event, app=same.app, user_id=same.user_id,
                                            ts_ms=same.ts_ms, survey=same.survey)
        events.append(event)
    return events


def deliver(events: list[Event], rng: random.Random, dup_share: float) -> list[list[Event]]:
    """Shuffle, duplicate some events, and cut the stream into random batches."""
    stream = list(events) + [e for e in events if rng.random() < dup_share]
    rng.shuffle(stream)
    return random_batches(stream, rng, 12)


def accepted_events(
    rounds: list[list[list[Event]]], shard_of: callable, horizon_days: int
) -> tuple[list[Event], Counter[str]]:
    """What the contract accepts from deliveries in rounds more than twice the dedup window
    apart (so each round forgets the ids of the one before): per partition, in arrival
    order, a copy of an id accepted in this round is a duplicate when the event's effect
    adds up (a purchase, an install with a cost: §1 remembers those), an event older than
    the horizon behind the latest accepted time is too old, anything else counts (a copy
    of another event is accepted again, and left out of the events returned: the
    reference's dedup would drop it, as it changes no figure). An id
    accepted again in a later round counts again: it gets a new id for the reference, whose
    own dedup is global; the suffix starts with NUL so that the new id sorts against every
    other id as the original does (NPS breaks ties of equal times by the larger event_id:
    with "@1", "e1@1" sorted after "e14" where "e1" sorts before it). Returns those events
    and the stats the worker must count."""
    accepted: list[Event] = []
    stats: Counter[str] = Counter()
    watermark: dict[int, int] = {}
    ever: set[tuple[str, str]] = set()
    for number, batches in enumerate(rounds):
        seen: set[tuple[str, str]] = set()
        for event in (e for batch in batches for e in batch):
            shard, key = shard_of(event), (event.app, event.event_id)
            if key in seen and adds_up(event):
                stats[f"dup:{event.app}"] += 1
                continue
            if shard in watermark and event.ts_ms < watermark[shard] - horizon_days * MS_PER_DAY:
                stats["rej:too_old"] += 1
                continue
            stats[f"acc:{event.app}:{event.type}"] += 1
            watermark[shard] = max(watermark.get(shard, event.ts_ms), event.ts_ms)
            if key in seen:  # a copy that changes nothing, not remembered
                continue
            seen.add(key)
            accepted.append(msgspec.structs.replace(event, event_id=f"{event.event_id}\x00{number}")
                            if key in ever else event)
            ever.add(key)
    return accepted, stats


async def assert_same_figures(state: RealApply, events: list[Event], tz: str,
                              apps: set[str]) -> None:
    """Every figure the queries serve equals the reference over the accepted events, for
    every app delivered (an app whose events were all rejected has empty figures)."""
    store, cfg = state.store, state.settings
    now_ms = await store.reads.watermark_ms()  # CLOCK=event: now is the latest event applied
    assert now_ms == max(e.ts_ms for e in events)
    rules = {app: reference_rules(cfg, app) for app in apps}
    for app in sorted(apps):
        # §9: the lapse summaries (x, t_x days, first day) -> users
        assert +await read_measure(store, app, Measure.LAPSE, None) == {
            (x, t_x, date_to_day(first)): n
            for (x, t_x, first), n in reference.lapse_summaries(events, app, tz).items()}, app
        for segment, where in SEGMENTS.items():
            query_where = () if where is None else (segment,)
            for granularity in ("day", "week", "month"):
                for kind in ("classic", "rolling"):
                    expected = reference.triangle(events, app, granularity, kind, tz, now_ms,
                                                  where=where, **rules[app])
                    got = (await cohort_report(store, cfg, app, granularity, kind,
                                              where=query_where)).as_json()
                    assert got["cohorts"] == expected, (app, segment, granularity, kind)
                    if granularity == "day":  # 24-hour windows (METRICS.md §4)
                        expected = reference.triangle(events, app, "day", kind, tz, now_ms,
                                                      where=where, **rules[app], window="24h")
                        got = (await cohort_report(store, cfg, app, granularity, kind,
                                                  where=query_where, window="24h")).as_json()
                        assert got["cohorts"] == expected, (app, segment, "24h", kind)
                    returns = {"all": ("purchase", "bet"), "platform=ios": ("purchase",)}
                    for returning in returns.get(segment, ()):
                        expected = reference.triangle(events, app, granularity, kind, tz,
                                                      now_ms, where=where, **rules[app],
                                                      returning=returning)
                        got = (await cohort_report(store, cfg, app, granularity, kind,
                                                  where=query_where,
                                                  returning=returning)).as_json()
                        assert got["cohorts"] == expected, (app, segment, granularity, kind,
                                                            returning)
                own = cfg.currency_of(app)  # app "b" has its own (APP_CURRENCIES)
                for kind, currency in (("ltv", "USD"), ("ltv", "EUR"), ("roas", own),
                                       ("payer_conversion", own)):
                    expected = reference.money_triangle(
                        events, app, granularity, kind, tz, now_ms, currency, where=where,
                        **rules[app])
                    try:
                        got = (await cohort_report(store, cfg, app, granularity, kind,
                                                  where=query_where, currency=currency)).as_json()
                    except QueryError as refused:  # a currency without revenue: refused
                        assert currency != own, refused
                        assert all(not any(r["values"]) for r in expected), refused
                        continue
                    assert got["cohorts"] == expected, (app, segment, granularity, kind,
                                                        currency)
            for period in ("week", "month", "year"):
                expected = reference.kpis(events, app, period, tz, where=where, **rules[app],
                                          now_ms=now_ms)
                got = (await kpis_report(store, cfg, app, period, where=query_where)).as_json()
                assert got["periods"] == expected, (app, segment, period)
            await assert_same_nps(state, events, tz, app, segment, where, now_ms)
            rpr = (await repeat_purchase_report(store, cfg, app, "week",
                                                where=query_where)).as_json()
            assert rpr["lifetime"] == reference.repeat_purchase_rate(
                events, app, tz, where=where, **rules[app]), segment
            assert {c["cohort"]: {k: v for k, v in c.items() if k != "cohort"}
                    for c in rpr["cohorts"]} == reference.repeat_purchase_by_cohort(
                        events, app, "week", tz, where=where, **rules[app]), segment
            daily = await read_daily(store, app, segment)
            series = reference.daily_series(events, app, tz, where=where, **rules[app])
            for day, figures in series.items():
                got = day_summary(app, date_to_day(day), daily)
                assert got == figures, (app, segment, day)
            if series:  # the query path of the last day too, win-back figures aside
                last = max(series)
                got = (await summary_report(store, cfg, app, last, where=query_where)).as_json()
                got.pop("winback", None)
                got.pop("segment", None)
                got.pop("winback_as_of", None)
                got.pop("forwarded", None)  # how producers keyed: tests/faults/test_keying
                ended = reference.day_start_ms(last + timedelta(days=1), tz) <= now_ms
                assert got.pop("complete") is ended, (app, segment, last)
                assert got == series[last], (app, segment, last)
    # win-back: each user is due at last_active + K days (§7), and "inactive now" counts
    # the users whose moment has come by now
    last_active: dict[tuple[str, str], int] = {}
    for event in events:
        if event.type == "survey":  # an answer makes no one active (§1)
            continue
        user = (event.app, event.user_id)
        last_active[user] = max(last_active.get(user, event.ts_ms), event.ts_ms)
    # (each app at its own thresholds: "b" has APP_INACTIVITY_THRESHOLDS 1 and 3)
    assert await state.due() == {  # one entry per user, at its earliest threshold
        user: ts + cfg.inactivity_thresholds_of(user[0])[0] * MS_PER_DAY
        for user, ts in last_active.items() if cfg.inactivity_thresholds_of(user[0])
    }
    for app in sorted(apps):
        if any(e.app == app for e in events):
            winback = (await summary_report(store, cfg, app, date(2024, 1, 1))).as_json()["winback"]
            assert list(winback) == [str(d) for d in cfg.inactivity_thresholds_of(app)]
            for days in cfg.inactivity_thresholds_of(app):
                inactive = sum(1 for (a, _), ts in last_active.items()
                               if a == app and ts + days * MS_PER_DAY <= now_ms)
                assert winback[str(days)]["inactive"] == inactive, (app, days)


def reference_rules(cfg: Settings, app: str) -> dict[str, Any]:
    """The app's currency and VIP bars (APP_CURRENCIES, APP_VIP_*), as the reference takes
    them."""
    return {"default_currency": cfg.currency_of(app),
            "vip_revenue": str(cfg.app_vip_revenue.get(app, cfg.vip_revenue)),
            "vip_purchases": cfg.app_vip_purchases.get(app, cfg.vip_purchases)}


async def assert_same_nps(state: RealApply, events: list[Event], tz: str, app: str,
                          segment: str, where: dict[str, str] | None, now_ms: int) -> None:
    """§8: NPS per period for every segment; per cohort and for churned against retained
    answerers for all users and the free ones (where users known only by answers count)."""
    query_where = () if where is None else (segment,)
    rules = {app: reference_rules(state.settings, app)}
    for period in ("week", "month", "year"):
        for by in ("period", "cohort", "churn"):
            if by != "period" and segment not in ("all", "value=free"):
                continue
            for survey in ("nps", "csat") if segment == "all" else ("nps",):
                got = (await nps_report(state.store, state.settings, app, period, survey,
                                        query_where, by)).as_json()
                expected = reference.nps(events, app, period, tz, survey, by=by, where=where,
                                         **rules[app], now_ms=now_ms)
                assert got["rows"] == expected, (app, segment, period, by, survey)


async def run_example(redis_url: str, events: list[Event], seed: int, tz: str,
                      dup_share: float, horizon_days: int, cache_users: int) -> None:
    rng = random.Random(seed)
    first = deliver(events, rng, dup_share)
    # a second round of some events after twice the dedup window: they count again
    second = deliver([e for e in events if rng.random() < 0.3], rng, 0.0)
    async with RealApply(redis_url, timezone=tz, horizon_days=horizon_days,
                         per_app=PER_APP,
                         dedup_window_days=WINDOW_DAYS, state_cache_users=cache_users) as state:
        expected, stats = accepted_events([first, second], state.shard_of, horizon_days)
        arrival = BASE_MS
        rejected: Counter[tuple[str, str]] = Counter()
        for batch in first:
            rejected.update((e.app, e.event_id) for e in await state.apply(batch, arrival))
        # a restart re-reads the first records of shard 0 from Kafka: offsets skip them
        replayed = [e for b in first for e in b if state.shard_of(e) == 0][:10]
        if replayed:
            assert await state.apply_at(0, replayed, 0, arrival) == []
        arrival += (2 * WINDOW_DAYS + 1) * MS_PER_DAY
        for batch in second:
            rejected.update((e.app, e.event_id) for e in await state.apply(batch, arrival))
        assert sum(rejected.values()) == stats["rej:too_old"]
        assert +await state.store.reads.read_stats() == +stats
        if expected:
            await assert_same_figures(state, expected, tz, {e.app for e in events})


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    events=event_lists(),
    seed=st.integers(0, 2**32),
    tz=st.sampled_from(ZONES),
    dup_share=st.sampled_from([0.0, 0.3, 1.0]),
    horizon_days=st.sampled_from([400, 400, 20]),
    cache_users=st.sampled_from([0, 1000]),
)
def test_any_order_batching_and_duplicates_give_reference_figures(
    redis_url: str, events: list[Event], seed: int, tz: str, dup_share: float,
    horizon_days: int, cache_users: int,
) -> None:
    asyncio.run(run_example(redis_url, events, seed, tz, dup_share, horizon_days, cache_users))
