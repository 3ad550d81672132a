"""Value segments at their bars (METRICS.md §7: vip at or above the revenue or purchase-count
bar, in the app's currency; payer with a purchase; free otherwise), worked by hand."""

from __future__ import annotations

import pytest

from retention_tracker.streams.calendar import AppCalendar
from retention_tracker.streams.events import Event
from retention_tracker.streams.plan import add_events
from retention_tracker.streams.segments import (
    DEFAULT_RULES,
    SegmentRules,
    value_segment,
)

BASE_MS = 1_704_067_200_000


def segment_of(purchases: list[tuple[float, str]], rules: SegmentRules = DEFAULT_RULES) -> str:
    events = [Event("a", "s", "session", "u", BASE_MS)]
    events += [Event("a", f"p{i}", "purchase", "u", BASE_MS + i, amount=amount, currency=cur)
               for i, (amount, cur) in enumerate(purchases)]
    return value_segment(add_events(None, events, AppCalendar("UTC"), rules), rules)


@pytest.mark.parametrize(("purchases", "expected"), [
    ([], "free"),
    ([(0, "USD")], "payer"),  # a purchase of 0 still makes a payer
    ([(100, "USD")], "vip"),  # at the revenue bar (100 USD by default)
    ([(99.9999, "USD")], "payer"),
    ([(60, "USD"), (40, "USD")], "vip"),
    ([(500, "EUR")], "payer"),  # other currencies do not count toward the bar (no FX)
    ([(1, "EUR")] * 10, "vip"),  # at the purchase-count bar (10), any currency
    ([(1, "USD")] * 9, "payer"),
])
def test_value_segment_bars(purchases: list[tuple[float, str]], expected: str) -> None:
    assert segment_of(purchases) == expected


def test_bars_and_currency_decide_the_segment() -> None:
    """The bars of Settings(currency="EUR", vip_revenue=50, vip_purchases=3): see
    tests/config/test_settings.py for how settings become these rules."""
    rules = SegmentRules(default_currency="EUR", vip_revenue_units=500_000, vip_purchases=3)
    assert segment_of([(50, "EUR")], rules) == "vip"
    assert segment_of([(50, "USD")], rules) == "payer"
    assert segment_of([(1, "USD")] * 3, rules) == "vip"
    assert SegmentRules("USD", 1_000_000, 10) == DEFAULT_RULES  # docs/configuration.md: 100 USD, 10
