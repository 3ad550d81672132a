"""The checks of the queries' parameters: a bad one is one readable line (``QueryError``)
before anything is read. ``state/queries.py`` calls them; the CLI and HTTP show the line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from retention_tracker.config.settings import Settings
from retention_tracker.streams.calendar import GRANULARITIES
from retention_tracker.streams.catalogue import CALENDAR, WINDOWS
from retention_tracker.streams.events import CURRENCY_RE
from retention_tracker.streams.figures import KINDS, MONEY_KINDS, VALUE_SEGMENTS, Coordinates
from retention_tracker.streams.plan import ALL_USERS


class QueryError(ValueError):
    """A bad query parameter or an unknown app: shown to the user as one line.

    ``param`` names the parameter at fault the way HTTP spells it (``from``, ``where``); the
    CLI shows it as its flag (``--from``), so neither side names the other's syntax."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def shown(self, prefix: str = "") -> str:
        """The line to show: ``prefix`` is ``"--"`` for the CLI, empty for HTTP."""
        return f"{prefix}{self.param}: {self}" if self.param else str(self)


SEGMENT_ATTRIBUTES = ("platform", "country", "campaign", "value")


def segment_of(where: Sequence[str] = ()) -> str:
    """``--where attr=value`` -> the segment whose counters the state keeps. One attribute
    at a time: combinations would need counters per combination (docs/architecture.md
    "Money and segments")."""
    if not where:
        return ALL_USERS
    if len(where) > 1:
        raise QueryError(
            "one segment at a time: the state keeps counters per single attribute value, "
            "not per combination (see docs/architecture.md 'Money and segments')", "where",
        )
    name, sep, value = where[0].partition("=")
    if not sep or name not in SEGMENT_ATTRIBUTES or not value:
        raise QueryError(f"{where[0]!r}: expected one of "
                         f"{', '.join(SEGMENT_ATTRIBUTES)} as attr=value", "where")
    if name == "value" and value not in VALUE_SEGMENTS:
        raise QueryError(f"value=...: one of {', '.join(VALUE_SEGMENTS)}", "where")
    return f"{name}={value}"


def check_window(date_from: date | None, date_to: date | None) -> None:
    """A reversed window is a typo, not an empty answer."""
    if date_from and date_to and date_from > date_to:
        raise QueryError(
            f"{date_from.isoformat()} is after the window's end ({date_to.isoformat()})", "from")


def money_currency(
    settings: Settings, app: str, kind: str, currency: str | None,
    ltv_cells: Mapping[Coordinates, int]) -> str:
    """The currency of an ltv or roas triangle: one the app has revenue in (or the app's
    currency); ROAS only in the app's currency, the one install costs are kept in (no FX)."""
    own = settings.currency_of(app)
    currency = currency or own
    if not CURRENCY_RE.match(currency):
        raise QueryError(f"{currency!r} must be an ISO 4217 code such as USD", "currency")
    if kind == "roas" and currency != own:
        raise QueryError(
            f"ROAS divides revenue by install costs, which are kept in {own} (the app's "
            f"currency); ROAS in {currency} would need exchange rates", "currency")
    known = {cell[-1] for cell, v in ltv_cells.items() if v} | {own}
    if currency not in known:
        raise QueryError(f"no revenue in {currency} for app {app!r} "
                         f"(currencies: {', '.join(sorted(known))})", "currency")
    return currency


def check_cohort_query(settings: Settings, granularity: str, kind: str, returning: str | None,
                       window: str) -> None:
    """A cohort triangle's granularity, kind, returning event type and window."""
    if window not in WINDOWS:
        raise QueryError(f"one of {', '.join(WINDOWS)}", "window")
    if window != CALENDAR and (granularity != "day" or kind not in KINDS or returning):
        raise QueryError("24-hour windows are counted for daily cohorts' classic or rolling "
                         "retention on any activity (granularity day)", "window")
    if granularity not in GRANULARITIES:
        raise QueryError(f"one of {', '.join(GRANULARITIES)}", "granularity")
    if kind not in KINDS + MONEY_KINDS:
        raise QueryError(f"one of {', '.join(KINDS + MONEY_KINDS)}", "kind")
    if returning is not None:
        if returning not in settings.return_events:
            named = ", ".join(settings.return_events) or "none"
            raise QueryError(f"{returning!r} is not in RETURN_EVENTS (set: {named}): its days "
                             "are not kept", "returning")
        if kind not in KINDS:
            raise QueryError("retention on a returning event is classic or rolling", "kind")
