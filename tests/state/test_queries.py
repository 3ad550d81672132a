"""Hand-worked examples of the queries (state/queries.py) over state written by the real
apply on a real Redis: what `retention report/summary/segments/rpr` and /metrics serve.
Expected numbers are worked out from METRICS.md in the comments, not by the code."""

from __future__ import annotations

from datetime import date

import pytest

from retention_tracker.bench import reference
from retention_tracker.state.queries import (
    QueryError,
    cohort_report,
    headline_report,
    live_figures,
    repeat_purchase_report,
    segment_of,
    summary_report,
    value_segments_report,
)
from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.events import Event

from ..streams.real_apply import RealApply

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
HOUR_MS = 3_600_000


def day(n: int, hour: int = 12) -> int:
    return BASE_MS + n * MS_PER_DAY + hour * HOUR_MS


def headline_events() -> list[Event]:
    """Daily cohorts on days 0..8 of 4 users each, of whom 0,1,2,3,4,0,1,2,4 come back on
    day 1; one more user on day 10 moves "now" (CLOCK=event) to day 10, so day 1 of the
    day-8 cohort (day 9) is complete."""
    events = []
    for cohort, back in enumerate((0, 1, 2, 3, 4, 0, 1, 2, 4)):
        for n in range(4):
            user = f"c{cohort}u{n}"
            events.append(Event("a", f"{user}-0", "install", user, day(cohort)))
            if n < back:
                events.append(Event("a", f"{user}-1", "session", user, day(cohort + 1)))
    return [*events, Event("a", "late-0", "session", "late", day(10))]


async def test_headline_d1_against_the_7_cohorts_before_it(redis_url: str) -> None:
    async with RealApply(redis_url) as state:
        await state.apply(headline_events(), day(10))
        # D1 of the day-8 cohort: 4/4; the 7 before it (days 1..7): 13 of 28 = 0.4643.
        # D7: the latest cohort with day 7 over is day 2 (its day 9 ended on day 10); no
        # one of cohorts 0..2 is active 7 days on: 0 against the 2 before it, also 0.
        # D30: no cohort is 30 days old.
        live = (await live_figures(state.store, state.settings)).apps["a"]
        assert live.headline == {1: (1.0, 0.4643), 7: (0.0, 0.0), 30: None}
        segments = (await value_segments_report(state.store, state.settings, "a")).as_json()
        by_value = {s["segment"]: s for s in segments["segments"]}
        assert by_value["free"] == {
            "segment": "free", "users": 37, "d1": 1.0, "d1_mean7": 0.4643,
            "d7": 0.0, "d7_mean7": 0.0, "d30": None, "d30_mean7": None,
        }
        assert by_value["payer"]["users"] == by_value["vip"]["users"] == 0
        assert by_value["payer"]["d1"] is None


async def test_headline_counts_the_last_cohort_when_the_stream_stops(redis_url: str) -> None:
    """METRICS.md §4 with a clock we move (CLOCK=event: the watermark, moved by another
    app's event): app b's daily cohorts of 4 on days 0..8, half of each back the next day,
    until its events stop on day 8. Once day 9 is over, D1 of the day-8 cohort is complete
    and 0 of 4: the headline shows it (ingestion stopped), not the day-7 cohort's 2 of 4."""
    events = []
    for cohort in range(9):
        for n in range(4):
            user = f"b{cohort}u{n}"
            events.append(Event("b", f"{user}-0", "install", user, day(cohort)))
            if n < 2 and cohort < 8:
                events.append(Event("b", f"{user}-1", "session", user, day(cohort + 1)))
    async with RealApply(redis_url) as state:
        await state.apply(events, day(9))
        stopped = (await headline_report(state.store, state.settings, "b")).as_json()
        # now is the watermark, day 8: D1 of the day-8 cohort (day 9) is not over yet; the
        # latest complete D1 is the day-7 cohort's: 2 of 4
        assert stopped["headline"]["d1"] == 0.5
        await state.apply([Event("z", "clock", "session", "other", day(12))], day(12))
        stopped = (await headline_report(state.store, state.settings, "b")).as_json()
        assert (stopped["headline"]["d1"], stopped["headline"]["d1_mean7"]) == (0.0, 0.5)
        segments = (await value_segments_report(state.store, state.settings, "b")).as_json()
        assert segments["segments"][2]["d1"] == 0.0  # free users: all of app b
        live = (await live_figures(state.store, state.settings)).apps["b"]
        assert live.headline[1] == (0.0, 0.5)  # /metrics already counted it


async def test_classic_and_rolling_reports(redis_url: str) -> None:
    """Cohort Jan 1: x active Jan 1 only, y Jan 1 and 3, z Jan 1 and 2; now is Jan 3.
    Classic: day 0: 3, day 1: z, day 2: y. Rolling: day >= 0: 3, >= 1: y and z, >= 2: y."""
    events = [Event("a", "x0", "session", "x", day(0)), Event("a", "y0", "session", "y", day(0)),
              Event("a", "y2", "session", "y", day(2)), Event("a", "z0", "session", "z", day(0)),
              Event("a", "z1", "session", "z", day(1), platform="ios")]
    async with RealApply(redis_url) as state:
        await state.apply(events, day(2))
        store, cfg = state.store, state.settings
        classic = (await cohort_report(store, cfg, "a", "day", "classic")).as_json()["cohorts"]
        assert classic == [{"cohort": "2024-01-01", "size": 3, "counts": [3, 1, 1],
                            "values": [1.0, 0.3333, 0.3333], "complete": [True, True, False]}]
        rolling = (await cohort_report(store, cfg, "a", "day", "rolling")).as_json()["cohorts"]
        assert [(r["counts"], r["values"]) for r in rolling] == [([3, 2, 1],
                                                                  [1.0, 0.6667, 0.3333])]
        week = (await cohort_report(store, cfg, "a", "week", "rolling")).as_json()["cohorts"]
        assert [(r["cohort"], r["counts"], r["complete"]) for r in week] == [
            ("2024-W01", [3], [False])]
        ios = (await cohort_report(store, cfg, "a", "day", "classic",
                                   where=["platform=ios"])).as_json()["cohorts"]
        # only z is ios (from its one event carrying a platform); its data ends on Jan 2
        assert [(r["size"], r["counts"]) for r in ios] == [(1, [1, 1])]


async def test_summary_windows_and_money(redis_url: str) -> None:
    """x is active on Jan 1 and 2, y on Jan 2 only: WAU(d) counts d-6..d, so both are in it
    up to Jan 8 and gone on Jan 9; MAU (d-29..d) keeps them up to Jan 31. y pays 3 + 1.5 USD
    and 2 EUR on Jan 2: revenue per currency, 1 payer, ARPDAU over the day's 2 users."""
    events = [Event("a", "x0", "session", "x", day(0)),
              Event("a", "y0", "install", "y", day(1)),
              Event("a", "x1", "session", "x", day(1, hour=1)),
              Event("a", "p1", "purchase", "y", day(1), amount=3, currency="USD"),
              Event("a", "p2", "purchase", "y", day(1, hour=13), amount=1.5),
              Event("a", "p3", "purchase", "y", day(1, hour=14), amount=2, currency="EUR")]
    async with RealApply(redis_url) as state:
        await state.apply(events, day(1))
        store, cfg = state.store, state.settings
        jan2 = (await summary_report(store, cfg, "a", date(2024, 1, 2))).as_json()
        worked = {
            "app": "a", "date": "2024-01-02", "dau": 2, "wau": 2, "mau": 2, "stickiness": 1.0,
            "installs": 1, "new_users": 1, "returning_users": 1,
            "revenue": {"EUR": 2.0, "USD": 4.5}, "payers": 1,
            "arpdau": {"EUR": 1.0, "USD": 2.25}, "arppu": {"EUR": 2.0, "USD": 4.5},
            "complete": False,  # now (event clock) is y's last event, on Jan 2
            "forwarded": dict.fromkeys(("mixed_array", "no_key", "other_key",
                                        "other_partitioner"), 0),
        }
        assert {k: jan2.get(k) for k in worked} == worked
        # every figure of the day, those worked out above and any declared since, as the
        # independent reference computes them from the same events
        figures = reference.summary(events, "a", date(2024, 1, 2), "UTC", now_ms=day(1))
        assert {k: v for k, v in jan2.items()
                if k not in ("winback", "winback_as_of", "forwarded")} == figures
        expected = {"2024-01-08": (2, 2), "2024-01-09": (0, 2), "2024-01-31": (0, 2),
                    "2024-02-01": (0, 0)}
        jan1 = (await summary_report(store, cfg, "a", date(2024, 1, 1))).as_json()
        assert (jan1["dau"], jan1["wau"], jan1["mau"], jan1["new_users"]) == (1, 1, 1, 1)
        for on, (wau, mau) in expected.items():
            got = (await summary_report(store, cfg, "a", date.fromisoformat(on))).as_json()
            assert (got["dau"], got["wau"], got["mau"]) == (0, wau, mau), on
        payer = (await summary_report(store, cfg, "a", date(2024, 1, 2),
                                      where=["value=payer"])).as_json()
        assert (payer["segment"], payer["dau"], payer["payers"]) == ("value=payer", 1, 1)
        # win-back (threshold 2 days): x last active Jan 2 01:00, y Jan 2 14:00; now is
        # y's last event, so nobody is due yet
        assert jan2["winback"]["2"]["inactive"] == 0


async def test_repeat_purchase_rate(redis_url: str) -> None:
    """§5: u buys twice on Jan 2 and once on Jan 10, v once on Jan 3. Lifetime: 2 buyers,
    1 repeat (u). Window Jan 3..9: only v buys: 1 buyer, 0 repeat."""
    events = [Event("a", "1", "purchase", "u", day(1), amount=1),
              Event("a", "2", "purchase", "u", day(1, hour=13), amount=1),
              Event("a", "3", "purchase", "u", day(9), amount=1),
              Event("a", "4", "purchase", "v", day(2), amount=1)]
    async with RealApply(redis_url) as state:
        await state.apply(events, day(9))
        got = (await repeat_purchase_report(state.store, state.settings, "a", "day",
                                           date(2024, 1, 3), date(2024, 1, 9))).as_json()
    assert got["lifetime"] == {"buyers": 2, "repeat_buyers": 1, "rpr": 0.5}
    assert got["cohorts"] == [
        {"cohort": "2024-01-02", "buyers": 1, "repeat_buyers": 1, "rpr": 1.0},
        {"cohort": "2024-01-03", "buyers": 1, "repeat_buyers": 0, "rpr": 0.0},
    ]
    assert got["window"] == {"from": "2024-01-03", "to": "2024-01-09", "buyers": 1,
                             "repeat_buyers": 0, "rpr": 0.0}


def test_segment_of_one_attribute_at_a_time() -> None:
    assert segment_of(()) == "all"
    assert segment_of(["campaign=fb_summer"]) == "campaign=fb_summer"
    assert segment_of(["value=free"]) == "value=free"
    for bad in (["platform=ios", "country=BR"], ["value=whale"], ["colour=red"], ["platform"]):
        with pytest.raises(QueryError):
            segment_of(bad)


async def test_unknown_app_is_a_query_error(redis_url: str) -> None:
    async with RealApply(redis_url) as state:
        with pytest.raises(QueryError, match="no data for app 'nope'"):
            (await cohort_report(state.store, state.settings, "nope")).as_json()


async def test_payer_retention_on_metrics_and_its_refusals(redis_url: str) -> None:
    """RETURN_EVENTS (RealApply names purchase and bet): a day-0 cohort of two, one of whom
    pays on day 1: 1 of 2 paid back on day 1; a type not named is refused, as are money
    kinds with a returning event."""
    events = [Event("a", "i1", "install", "p1", day(0)),
              Event("a", "i2", "install", "p2", day(0)),
              Event("a", "b1", "purchase", "p1", day(1), amount=1.0),
              Event("a", "s2", "session", "p2", day(1)), Event("a", "x", "session", "z", day(3))]
    async with RealApply(redis_url) as state:
        await state.apply(events, day(3))
        live = (await live_figures(state.store, state.settings)).apps["a"]
        [row, *_] = live.returning["purchase"]
        assert (row.cohort, row.counts[:2]) == ("2024-01-01", (0, 1))
        assert live.returning["bet"][0].counts[:2] == (0, 0)
        with pytest.raises(QueryError, match="not in RETURN_EVENTS") as refused:
            await cohort_report(state.store, state.settings, "a", returning="session")
        assert refused.value.param == "returning"
        with pytest.raises(QueryError, match="classic or rolling"):
            await cohort_report(state.store, state.settings, "a", kind="ltv",
                                returning="purchase")
