"""Who a user is, commercially: value segment bars and money units (METRICS.md §5, §7), and
which events count as a return (RETURN_EVENTS)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from retention_tracker.streams.user_state import MONEY_UNITS, UserState


def money_units(amount: float) -> int:
    """An amount as exact integer units (what every sum is kept in)."""
    return int((Decimal(str(amount)) * MONEY_UNITS).to_integral_value())


def money(units: int, divisor: int = 1) -> float:
    """Units / divisor in currency, rounded to 4 places in decimal (as the ledger would)."""
    return float(round(Decimal(units) / (MONEY_UNITS * divisor), 4))


@dataclass(frozen=True, slots=True)
class SegmentRules:
    """How users are segmented by value (METRICS.md §7 value_segment) and money defaults."""

    default_currency: str = "USD"
    vip_revenue_units: int = 100 * MONEY_UNITS
    vip_purchases: int = 10
    # RETURN_EVENTS: the event types whose days a user's record keeps, for retention on a
    # chosen returning event (streams/returning.py); they flow with these rules
    return_types: frozenset[str] = frozenset()
    # the apps with their own currency or VIP bars (APP_CURRENCIES, APP_VIP_*): their rules
    per_app: Mapping[str, SegmentRules] = field(default_factory=dict)

    def for_app(self, app: str) -> SegmentRules:
        """The rules of ``app``: its own, else these (the global defaults)."""
        return self.per_app.get(app, self)


DEFAULT_RULES = SegmentRules()


def value_segment(state: UserState, rules: SegmentRules) -> str:
    if not state.purchases:  # most users: no sum to take
        return "free"
    purchases = state.purchase_count()
    revenue = sum(p.units for _, cur, p in state.purchases if cur == rules.default_currency)
    if revenue >= rules.vip_revenue_units or purchases >= rules.vip_purchases:
        return "vip"
    return "payer"


