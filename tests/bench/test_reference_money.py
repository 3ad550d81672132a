"""Hand-computed checks of the batch reference's money, segments and period KPIs.

METRICS.md sections 1 (attributes), 5 (money) and 6 (period KPIs). Every expected number here
was worked out by hand from the contract, not by running the code.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from retention_tracker.bench.reference import (
    daily_series,
    kpis,
    money_triangle,
    repeat_purchase_by_cohort,
    repeat_purchase_rate,
    summary,
    triangle,
    user_profiles,
)
from retention_tracker.streams.events import Event

_ids = itertools.count()


def ms(iso: str) -> int:
    """Epoch milliseconds of an ISO-8601 string with an offset, exactly."""
    return (datetime.fromisoformat(iso) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )


def ev(
    user: str,
    iso: str,
    kind: str = "session",
    app: str = "a",
    eid: str | None = None,
    **fields: object,
) -> Event:
    """An event at `iso` (UTC if no offset is given)."""
    if "+" not in iso[10:]:
        iso += "+00:00"
    return Event(
        app=app,
        event_id=eid if eid is not None else f"m{next(_ids)}",
        type=kind,
        user_id=user,
        ts_ms=ms(iso),
        **fields,  # type: ignore[arg-type]
    )


def buy(user: str, iso: str, amount: float, currency: str | None = None, **kw: object) -> Event:
    return ev(user, iso, "purchase", amount=amount, currency=currency, **kw)  # type: ignore[arg-type]


def money_keys(figures: dict) -> tuple:
    return (figures["revenue"], figures["payers"], figures["arpdau"], figures["arppu"])


# --------------------------------------------------------------------------------------
# A tiny shop over three UTC days: LTV, payer conversion, ROAS, daily money


def shop() -> list[Event]:
    return [
        # p1's first purchase is listed before its install (uploaded first): still cohort 01-01.
        buy("p1", "2024-01-01T12:00", 4.99, "USD", eid="p1-buy"),
        ev("p1", "2024-01-01T10:00", "install", cost=2.0, platform="ios"),
        # A redelivered copy of that purchase with other content: ignored.
        buy("p1", "2024-01-02T12:00", 100, "USD", eid="p1-buy"),
        buy("p1", "2024-01-02T09:00", 0.1),  # no currency: the default, USD
        buy("p1", "2024-01-03T09:00", 7, "EUR"),
        ev("p2", "2024-01-01T11:00", "install", cost=1.0, platform="android"),
        ev("p2", "2024-01-03T11:00"),
        # p3 never installs (no cost); p4's install is free.
        buy("p3", "2024-01-02T08:00", 0.2, "USD"),
        buy("p3", "2024-01-03T08:00", 0.1, "USD"),
        ev("p4", "2024-01-02T10:00", "install", cost=0.0),
        buy("p4", "2024-01-03T10:00", 1.5, "EUR"),
        # Another app, same event id as p1's purchase: neither a duplicate nor app "a".
        buy("p1", "2024-01-01T12:00", 50, "USD", app="b", eid="p1-buy"),
        ev("p9", "2024-01-05T12:00", "install", app="b", cost=9.0),
    ]


NOW = ms("2024-01-03T00:00:00+00:00")  # 01-01 and 01-02 have ended, 01-03 has not


def test_ltv_by_day_per_currency():
    usd = money_triangle(shop(), "a", "day", "ltv", "UTC", NOW)  # currency defaults to USD
    assert usd == [
        {
            "cohort": "2024-01-01",
            "size": 2,  # p1, p2
            "revenue": [4.99, 5.09, 5.09],  # p1: 4.99 on day 0, 0.1 on day 1 (EUR on day 2)
            "values": [2.495, 2.545, 2.545],
            "complete": [True, True, False],
        },
        {
            "cohort": "2024-01-02",
            "size": 2,  # p3, p4
            "revenue": [0.2, 0.3],  # exact: not 0.30000000000000004
            "values": [0.1, 0.15],
            "complete": [True, False],
        },
    ]
    eur = money_triangle(shop(), "a", "day", "ltv", "UTC", NOW, "EUR")
    assert [(r["cohort"], r["revenue"], r["values"]) for r in eur] == [
        ("2024-01-01", [0.0, 0.0, 7.0], [0.0, 0.0, 3.5]),
        ("2024-01-02", [0.0, 1.5], [0.0, 0.75]),
    ]
    # With EUR as the app's currency, p1's currency-less 0.1 is EUR.
    eur_app = money_triangle(shop(), "a", "day", "ltv", "UTC", NOW, "EUR", default_currency="EUR")
    assert eur_app[0]["revenue"] == [0.0, 0.1, 7.1]
    assert eur_app[0]["values"] == [0.0, 0.05, 3.55]
    assert money_triangle(shop(), "a", "day", "ltv", "UTC", NOW, "GBP")[0]["values"] == [0.0] * 3


def test_payer_conversion_counts_any_currency():
    rows = money_triangle(shop(), "a", "day", "payer_conversion", "UTC", NOW)
    assert rows == [
        {
            "cohort": "2024-01-01",
            "size": 2,
            "counts": [1, 1, 1],  # p1 from day 0; p2 never buys
            "values": [0.5, 0.5, 0.5],
            "complete": [True, True, False],
        },
        {
            "cohort": "2024-01-02",
            "size": 2,
            "counts": [1, 2],  # p3 on day 0, p4 (in EUR) on day 1
            "values": [0.5, 1.0],
            "complete": [True, False],
        },
    ]
    # The currency argument does not matter for payer conversion.
    assert money_triangle(shop(), "a", "day", "payer_conversion", "UTC", NOW, "EUR") == rows


def test_roas_and_cac():
    rows = money_triangle(shop(), "a", "day", "roas", "UTC", NOW)
    assert rows == [
        {
            "cohort": "2024-01-01",
            "size": 2,
            "cac": 1.5,  # (2.0 + 1.0) / 2
            "revenue": [4.99, 5.09, 5.09],
            "values": [1.6633, 1.6967, 1.6967],  # 4.99 / 3 and 5.09 / 3
            "complete": [True, True, False],
        },
        {
            "cohort": "2024-01-02",
            "size": 2,
            "cac": None,  # p3 has no install, p4's cost 0: nothing spent
            "revenue": [0.2, 0.3],
            "values": [None, None],
            "complete": [True, False],
        },
    ]


def test_week_cohort_sums_exactly():
    now = ms("2024-01-08T00:00:00+00:00")  # 2024-W01 (Mon 01-01 .. Sun 01-07) has ended
    (ltv,) = money_triangle(shop(), "a", "week", "ltv", "UTC", now)
    # 4.99 + 0.1 + 0.2 + 0.1 = 5.39 (the float sum is 5.390000000000001).
    assert ltv == {
        "cohort": "2024-W01",
        "size": 4,
        "revenue": [5.39],
        "values": [1.3475],
        "complete": [True],
    }
    (roas,) = money_triangle(shop(), "a", "week", "roas", "UTC", now)
    assert (roas["cac"], roas["values"]) == (0.75, [1.7967])  # 3.0 / 4; 5.39 / 3.0
    (conversion,) = money_triangle(shop(), "a", "month", "payer_conversion", "UTC", now)
    assert (conversion["cohort"], conversion["counts"], conversion["values"]) == (
        "2024-01",
        [3],
        [0.75],
    )


def test_money_triangle_cohort_filters_and_errors():
    rows = money_triangle(
        shop(), "a", "day", "ltv", "UTC", NOW, "USD", date(2024, 1, 2), date(2024, 1, 2)
    )
    assert [(r["cohort"], r["revenue"]) for r in rows] == [("2024-01-02", [0.2, 0.3])]
    assert money_triangle(shop(), "nope", "day", "ltv", "UTC", NOW) == []
    with pytest.raises(ValueError):
        money_triangle(shop(), "a", "day", "arpu", "UTC", NOW)
    with pytest.raises(ValueError):
        money_triangle(shop(), "a", "year", "ltv", "UTC", NOW)


def test_daily_money():
    events = shop()
    day1 = summary(events, "a", date(2024, 1, 1), "UTC")
    assert day1["dau"] == 2
    assert money_keys(day1) == ({"USD": 4.99}, 1, {"USD": 2.495}, {"USD": 4.99})
    day2 = summary(events, "a", date(2024, 1, 2), "UTC")
    assert day2["dau"] == 3  # p1, p3, p4
    assert money_keys(day2) == ({"USD": 0.3}, 2, {"USD": 0.1}, {"USD": 0.15})
    day3 = summary(events, "a", date(2024, 1, 3), "UTC")
    assert day3["dau"] == 4
    # EUR 7 + 1.5; payers p1, p3, p4 over all currencies, so ARPPU divides by 3 in both.
    assert money_keys(day3) == (
        {"EUR": 8.5, "USD": 0.1},
        3,
        {"EUR": 2.125, "USD": 0.025},
        {"EUR": 2.8333, "USD": 0.0333},
    )
    assert money_keys(summary(events, "a", date(2024, 1, 5), "UTC")) == ({}, 0, {}, {})
    eur_app = summary(events, "a", date(2024, 1, 2), "UTC", default_currency="EUR")
    assert eur_app["revenue"] == {"EUR": 0.1, "USD": 0.2}
    # The first nine keys are unchanged, and the series carries the same figures.
    assert daily_series(events, "a", "UTC")[date(2024, 1, 3)] == day3


def test_a_free_purchase_makes_a_payer_but_no_revenue_entry():
    events = [ev("u", "2024-01-01T10:00"), buy("u", "2024-01-01T11:00", 0, "EUR")]
    day = summary(events, "a", date(2024, 1, 1), "UTC")
    assert money_keys(day) == ({}, 1, {}, {})
    (row,) = money_triangle(events, "a", "day", "payer_conversion", "UTC", 0)
    assert row["counts"] == [1]


# --------------------------------------------------------------------------------------
# Repeat purchase rate


def repeat_buyers() -> list[Event]:
    return [
        buy("r1", "2024-01-01T10:00", 1),
        buy("r1", "2024-01-01T23:30", 1),  # same UTC day; in Tokyo already 01-02
        buy("r2", "2024-01-01T12:00", 1),
        buy("r2", "2024-01-05T12:00", 1),
        buy("r3", "2024-01-03T12:00", 1, eid="r3-buy"),
        buy("r3", "2024-01-04T12:00", 1, eid="r3-buy"),  # duplicate: r3 bought once
        ev("r4", "2024-01-03T12:00"),  # never buys
    ]


def test_repeat_purchase_rate_lifetime_and_windows():
    events = repeat_buyers()
    rpr = repeat_purchase_rate
    assert rpr(events, "a", "UTC") == {"buyers": 3, "repeat_buyers": 2, "rpr": 0.6667}
    # Two purchases on one day are a repeat.
    one_day = rpr(events, "a", "UTC", date(2024, 1, 1), date(2024, 1, 1))
    assert one_day == {"buyers": 2, "repeat_buyers": 1, "rpr": 0.5}
    assert rpr(events, "a", "UTC", date_from=date(2024, 1, 2)) == {
        "buyers": 2,  # r2 (01-05), r3
        "repeat_buyers": 0,
        "rpr": 0.0,
    }
    assert rpr(events, "a", "UTC", date_to=date(2024, 1, 4)) == {
        "buyers": 3,
        "repeat_buyers": 1,
        "rpr": 0.3333,
    }
    assert rpr(events, "a", "UTC", date(2024, 1, 6)) == {
        "buyers": 0,
        "repeat_buyers": 0,
        "rpr": 0.0,
    }
    # Days are local: in Tokyo r1's second purchase is on 01-02.
    tokyo = rpr(events, "a", "Asia/Tokyo", date(2024, 1, 1), date(2024, 1, 1))
    assert tokyo == {"buyers": 2, "repeat_buyers": 0, "rpr": 0.0}
    assert rpr(events, "a", "Asia/Tokyo") == rpr(events, "a", "UTC")


def test_repeat_purchase_by_cohort_is_lifetime():
    events = repeat_buyers()
    assert repeat_purchase_by_cohort(events, "a", "day", "UTC") == {
        "2024-01-01": {"buyers": 2, "repeat_buyers": 2, "rpr": 1.0},  # r1, r2
        "2024-01-03": {"buyers": 1, "repeat_buyers": 0, "rpr": 0.0},  # r3 (and r4, no purchase)
    }
    assert repeat_purchase_by_cohort(events, "a", "week", "UTC") == {
        "2024-W01": {"buyers": 3, "repeat_buyers": 2, "rpr": 0.6667},
    }
    assert repeat_purchase_by_cohort(events, "a", "day", "UTC", date(2024, 1, 2)) == {
        "2024-01-03": {"buyers": 1, "repeat_buyers": 0, "rpr": 0.0},
    }


# --------------------------------------------------------------------------------------
# Period KPIs: the contract's CRR example


def crr_example() -> list[Event]:
    events = [ev(f"u{i}", "2024-03-05T12:00") for i in range(50)]  # 2024-W10 (Mar 4-10)
    events += [ev(f"u{i}", "2024-03-12T12:00") for i in range(40)]  # W11: u0..u39 stay
    events += [ev(f"n{i}", "2024-03-13T12:00", "install", platform="ios") for i in range(25)]
    events += [
        buy("u0", "2024-03-14T09:00", 10, "USD"),
        buy("u0", "2024-03-14T18:00", 5.5),  # same day, default currency: a repeat
        buy("n0", "2024-03-15T12:00", 3, "EUR"),
        ev("u0", "2024-03-25T12:00"),  # W13 (W12 has no data at all)
        ev("u1", "2024-04-01T12:00"),  # W14, and April
    ]
    return events


def kpi_row(period, active, new, returning, crr, churn, revenue=None, payers=0, rpr=0.0,
            split=({}, {}, 0, 0)):
    """``split``: new_revenue, returning_revenue, new_payers, returning_payers."""
    return {
        "period": period,
        "active": active,
        "new_users": new,
        "returning": returning,
        "crr": crr,
        "churn": churn,
        "revenue": revenue or {},
        "payers": payers,
        "rpr": rpr,
        "new_revenue": split[0],
        "returning_revenue": split[1],
        "new_payers": split[2],
        "returning_payers": split[3],
    }


def test_weekly_crr_is_80_percent_as_in_the_contract():
    rows = kpis(crr_example(), "a", "week", "UTC")
    assert rows == [
        kpi_row("2024-W10", 50, 50, 0, None, None),  # nothing before: S = 0
        # S = 50, E = 65, Nn = 25: CRR = 40 / 50; u40..u49 lost: churn 10 / 50.
        # u0 (first seen in W10) paid 15.5 USD, n0 (new in W11) 3 EUR
        kpi_row("2024-W11", 65, 25, 40, 0.8, 0.2, {"EUR": 3.0, "USD": 15.5}, 2, 0.5,
                ({"EUR": 3.0}, {"USD": 15.5}, 1, 1)),
        kpi_row("2024-W12", 0, 0, 0, 0.0, 1.0),  # a gap week is a row; everyone lost
        kpi_row("2024-W13", 1, 0, 1, None, None),  # u0 back, but S = 0
        # u1 was not active in W13 yet counts as retained (the marketers' formula);
        # u0 is lost.
        kpi_row("2024-W14", 1, 0, 1, 1.0, 1.0),
    ]


def test_monthly_kpis_and_segment():
    assert kpis(crr_example(), "a", "month", "UTC") == [
        kpi_row("2024-03", 75, 75, 0, None, None, {"EUR": 3.0, "USD": 15.5}, 2, 0.5,
                ({"EUR": 3.0, "USD": 15.5}, {}, 2, 0)),
        # S = 75; u1 returns: CRR 1 / 75, the other 74 are lost.
        kpi_row("2024-04", 1, 0, 1, 0.0133, 0.9867),
    ]
    # Only the n-users are on iOS: their one week, with n0's purchase.
    assert kpis(crr_example(), "a", "week", "UTC", where={"platform": "ios"}) == [
        kpi_row("2024-W11", 25, 25, 0, None, None, {"EUR": 3.0}, 1, 0.0,
                ({"EUR": 3.0}, {}, 1, 0)),
    ]
    assert kpis(crr_example(), "nope", "week", "UTC") == []
    with pytest.raises(ValueError):
        kpis(crr_example(), "a", "day", "UTC")


def test_yearly_kpis_split_money_between_new_and_returning_users():
    """A calendar year is a KPI period; u0, first seen in 2024, is a returning user of 2025."""
    events = [*crr_example(), ev("u0", "2025-01-02T12:00"), ev("u7", "2024-12-31T23:00"),
              buy("u0", "2025-01-02T13:00", 2), ev("z1", "2025-02-01T00:00"),
              buy("z1", "2025-02-01T01:00", 1)]
    assert kpis(events, "a", "year", "UTC") == [
        kpi_row("2024", 75, 75, 0, None, None, {"EUR": 3.0, "USD": 15.5}, 2, 0.5,
                ({"EUR": 3.0, "USD": 15.5}, {}, 2, 0)),
        # S = 75 users of 2024; u0 came back, z1 is new; u0 paid 2, z1 paid 1
        kpi_row("2025", 2, 1, 1, 0.0133, 0.9867, {"USD": 3.0}, 2, 0.0,
                ({"USD": 1.0}, {"USD": 2.0}, 1, 1)),
    ]


# --------------------------------------------------------------------------------------
# User attributes and segments


def test_attributes_come_from_the_earliest_event_that_carries_them():
    events = [
        ev("a1", "2024-01-05T10:00", platform="ios", country="DE"),
        ev("a1", "2024-01-01T10:00", platform="android"),  # older, listed later: wins
        ev("a1", "2023-12-31T10:00"),  # the earliest event carries nothing
        ev("a1", "2024-01-03T10:00", campaign="summer"),
        ev("a2", "2024-01-02T10:00", platform="web"),
        ev("a2", "2024-01-02T10:00", platform="android"),  # same instant: smallest wins
        ev("a3", "2024-01-02T10:00"),
    ]
    expected = {
        "a1": {"platform": "android", "country": "DE", "campaign": "summer", "value": "free"},
        "a2": {"platform": "android", "country": None, "campaign": None, "value": "free"},
        "a3": {"platform": None, "country": None, "campaign": None, "value": "free"},
    }
    for order in itertools.permutations(events):
        assert user_profiles(order, "a") == expected
    # a1 is active on 01-05 through an event that says ios, but a1 is an android user.
    jan5 = date(2024, 1, 5)
    assert summary(events, "a", jan5, "UTC", where={"platform": "android"})["dau"] == 1
    assert summary(events, "a", jan5, "UTC", where={"platform": "ios"})["dau"] == 0
    assert summary(events, "a", jan5, "UTC", where={"country": "DE"})["dau"] == 1


def platforms() -> list[Event]:
    return [
        ev("i1", "2024-01-01T10:00", "install", platform="ios"),
        ev("i1", "2024-01-02T10:00"),
        ev("i2", "2024-01-01T11:00"),
        ev("i2", "2024-01-02T11:00", platform="ios"),  # ios from its first carrying event
        ev("d1", "2024-01-01T12:00", "install", platform="android"),
        ev("d1", "2024-01-03T12:00"),
        buy("d1", "2024-01-03T13:00", 5, "USD"),
        ev("d2", "2024-01-02T12:00"),  # no platform at all
    ]


def test_segment_changes_dau_cohort_sizes_and_the_last_period():
    events = platforms()
    now = ms("2024-01-10T00:00:00+00:00")
    everyone = triangle(events, "a", "day", "classic", "UTC", now)
    assert [(r["cohort"], r["size"], r["counts"]) for r in everyone] == [
        ("2024-01-01", 3, [3, 2, 1]),  # i1, i2, d1; day 1: i1, i2; day 2: d1
        ("2024-01-02", 1, [1, 0]),  # d2
    ]
    ios = {"platform": "ios"}
    # Only i1 and i2: one cohort, and offsets end at the segment's last day (01-02).
    assert triangle(events, "a", "day", "classic", "UTC", now, where=ios) == [
        {
            "cohort": "2024-01-01",
            "size": 2,
            "counts": [2, 2],
            "values": [1.0, 1.0],
            "complete": [True, True],
        }
    ]
    series = daily_series(events, "a", "UTC", where=ios)
    assert list(series) == [date(2024, 1, 1), date(2024, 1, 2)]
    assert [s["dau"] for s in series.values()] == [2, 2]  # everyone: 3, 3
    assert [s["new_users"] for s in series.values()] == [2, 0]
    assert [s["dau"] for s in daily_series(events, "a", "UTC").values()] == [3, 3, 1]
    jan3 = date(2024, 1, 3)
    assert money_keys(summary(events, "a", jan3, "UTC")) == (
        {"USD": 5.0},
        1,
        {"USD": 5.0},
        {"USD": 5.0},
    )
    assert summary(events, "a", jan3, "UTC", where=ios)["dau"] == 0
    assert money_keys(summary(events, "a", jan3, "UTC", where=ios)) == ({}, 0, {}, {})
    android = money_triangle(events, "a", "day", "ltv", "UTC", now, where={"platform": "android"})
    assert [(r["cohort"], r["size"], r["revenue"]) for r in android] == [
        ("2024-01-01", 1, [0.0, 0.0, 5.0])
    ]
    # Attributes combine with AND; the value segment is one of them.
    assert triangle(events, "a", "day", "classic", "UTC", now, where={**ios, "value": "free"}) == (
        triangle(events, "a", "day", "classic", "UTC", now, where=ios)
    )
    nobody = {"platform": "ios", "value": "payer"}
    assert triangle(events, "a", "day", "classic", "UTC", now, where=nobody) == []
    assert daily_series(events, "a", "UTC", where=nobody) == {}
    assert summary(events, "a", jan3, "UTC", where={"country": "DE"})["dau"] == 0
    with pytest.raises(ValueError):
        summary(events, "a", jan3, "UTC", where={"os": "ios"})
    with pytest.raises(ValueError):
        summary(events, "a", jan3, "UTC", where={"value": "whale"})


def spenders() -> list[Event]:
    day = "2024-02-01T"
    events = [
        # v1: 30.61 + 51.9 + 17.49 = 100 exactly (the float sum is 99.99999999999999): vip.
        buy("v1", day + "01:00", 30.61, "USD"),
        buy("v1", day + "02:00", 51.9, "USD"),
        buy("v1", day + "03:00", 17.49, "USD"),
    ]
    events += [buy("v2", f"{day}{h:02d}:00", 0.5, "USD") for h in range(10)]  # vip by count
    # v3: 8 USD in 8 purchases and 200 EUR in a 9th: neither bar in USD.
    events += [buy("v3", f"{day}{h:02d}:30", 1, "USD") for h in range(8)]
    events.append(buy("v3", day + "12:00", 200, "EUR"))
    events.append(buy("v4", day + "13:00", 99.99))  # the default currency, just below
    events.append(ev("v5", day + "14:00"))
    return events


def test_value_segments():
    def segments(**kw: object) -> dict[str, str]:
        return {u: p["value"] for u, p in user_profiles(spenders(), "a", **kw).items()}  # type: ignore[arg-type]

    assert segments() == {"v1": "vip", "v2": "vip", "v3": "payer", "v4": "payer", "v5": "free"}
    # With EUR as the app's currency v3's 200 EUR counts, v1's explicit USD does not,
    # and v4's currency-less 99.99 is EUR.
    assert segments(default_currency="EUR") == {
        "v1": "payer",
        "v2": "vip",
        "v3": "vip",
        "v4": "payer",
        "v5": "free",
    }
    assert segments(vip_revenue=Decimal("99.99"))["v4"] == "vip"
    assert segments(vip_purchases=3) == {
        "v1": "vip",
        "v2": "vip",
        "v3": "vip",
        "v4": "payer",
        "v5": "free",
    }
    feb1 = date(2024, 2, 1)
    vip = summary(spenders(), "a", feb1, "UTC", where={"value": "vip"})
    assert (vip["dau"], vip["revenue"], vip["payers"]) == (2, {"USD": 105.0}, 2)
    assert vip["arpdau"] == {"USD": 52.5}
    payer = summary(spenders(), "a", feb1, "UTC", where={"value": "payer"})
    assert (payer["dau"], payer["revenue"]) == (2, {"EUR": 200.0, "USD": 107.99})
    free = summary(spenders(), "a", feb1, "UTC", where={"value": "free"})
    assert (free["dau"], free["revenue"], free["payers"], free["arppu"]) == (1, {}, 0, {})
    eur_vip = summary(spenders(), "a", feb1, "UTC", where={"value": "vip"}, default_currency="EUR")
    assert (eur_vip["dau"], eur_vip["revenue"]) == (2, {"EUR": 200.0, "USD": 13.0})  # v2, v3
    rows = triangle(spenders(), "a", "day", "classic", "UTC", 0, where={"value": "vip"})
    assert [(r["cohort"], r["size"]) for r in rows] == [("2024-02-01", 2)]


# --------------------------------------------------------------------------------------
# Order and duplicates


def random_shop(seed: int) -> list[Event]:
    rng = random.Random(seed)
    base = ms("2024-01-01T00:00:00+00:00")
    events = []
    for i in range(600):
        kind = rng.choice(["install", "session", "session", "purchase", "purchase"])
        events.append(
            Event(
                app=rng.choice(["a", "a", "a", "b"]),
                event_id=f"s{i}",
                type=kind,
                user_id=f"u{rng.randrange(40)}",
                ts_ms=base + rng.randrange(70 * 24 * 3600 * 1000),
                platform=rng.choice([None, "ios", "android"]),
                country=rng.choice([None, "DE", "BR"]),
                cost=rng.choice([0, 0.5, 1.25]) if kind == "install" else None,
                amount=rng.choice([0.99, 4.99, 19.99, 0.1]) if kind == "purchase" else None,
                currency=rng.choice([None, "USD", "EUR"]) if kind == "purchase" else None,
            )
        )
    return events


def all_figures(events: list[Event]) -> list:
    now = ms("2024-02-15T00:00:00+00:00")
    out: list = []
    for where in (None, {"platform": "ios"}, {"value": "vip"}, {"value": "payer"}):
        for granularity in ("day", "week", "month"):
            for kind in ("ltv", "payer_conversion", "roas"):
                for currency in ("USD", "EUR"):
                    out.append(
                        money_triangle(
                            events,
                            "a",
                            granularity,
                            kind,
                            "Europe/Berlin",
                            now,
                            currency,
                            where=where,
                            vip_revenue=Decimal("30"),
                            vip_purchases=4,
                        )
                    )
            out.append(repeat_purchase_by_cohort(events, "a", granularity, "Europe/Berlin"))
        for period in ("week", "month"):
            out.append(kpis(events, "a", period, "Europe/Berlin", where=where))
        out.append(daily_series(events, "a", "Europe/Berlin", where=where))
        out.append(repeat_purchase_rate(events, "a", "Europe/Berlin", where=where))
    out.append(user_profiles(events, "a"))
    return out


def test_order_and_duplicates_change_no_money_figure():
    events = random_shop(3)
    shuffled = events + events[::7]
    random.Random(4).shuffle(shuffled)
    # A duplicate that comes first would win; keep each original ahead of its copies.
    first_index = {e.event_id: i for i, e in reversed(list(enumerate(shuffled)))}
    shuffled.sort(key=lambda e: first_index[e.event_id])
    assert all_figures(shuffled) == all_figures(events)


def test_money_invariants():
    events = random_shop(5)
    for granularity in ("day", "week", "month"):
        ltv = money_triangle(events, "a", granularity, "ltv", "UTC", 0)
        conv = money_triangle(events, "a", granularity, "payer_conversion", "UTC", 0)
        roas = money_triangle(events, "a", granularity, "roas", "UTC", 0)
        retention = triangle(events, "a", granularity, "classic", "UTC", 0)
        assert [r["size"] for r in ltv] == [r["size"] for r in retention]
        for a, b, c in zip(ltv, conv, roas, strict=True):
            assert all(x <= y for x, y in itertools.pairwise(a["revenue"]))
            assert all(x <= y for x, y in itertools.pairwise(b["counts"]))
            assert b["counts"][-1] <= b["size"]
            assert c["revenue"] == a["revenue"]
    # The daily revenue adds up to the lifetime revenue of every cohort together.
    total = sum(
        Decimal(str(s["revenue"].get("USD", 0))) for s in daily_series(events, "a", "UTC").values()
    )
    cohorts = money_triangle(events, "a", "month", "ltv", "UTC", 0)
    assert total == sum(Decimal(str(r["revenue"][-1])) for r in cohorts)
