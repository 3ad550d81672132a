"""Every figure the tracker shows, declared once: its name in rows and JSON, its gauge and
help, its label, its unit and how it is derived from the stored counters.

The surfaces iterate this module instead of naming figures: ``streams/figures.py`` computes
the daily rows from the derivations, the Prometheus collector builds its families from the
gauge names and helps, the CLI and the page (through ``/retention/figures``) label and
format them, the dashboard builder draws the charts declared here. Adding a daily figure is
one entry here plus, when it needs a counter of its own, the plan's contribution to it
(and its stored name below). The independent reference (``bench/reference.py``) computes
the same figures its own way, by name, and the property tests hold the two equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from retention_tracker.streams.counters import DAILY_MEASURES, Measure

GAUGE_PREFIX = "retention_"
USERS, SHARE, MONEY = "users", "share", "money"  # units: a count, a 0..1 ratio, an amount

# ---- how a daily figure is derived ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Count:
    """The day's counter of ``measure``."""

    measure: Measure


@dataclass(frozen=True, slots=True)
class Edges:
    """The sum of ``measure``'s edge counters up to the day (WAU/MAU as run edges)."""

    measure: Measure


@dataclass(frozen=True, slots=True)
class Ratio:
    """``part / whole`` of two figures declared before it (0 when ``whole`` is 0)."""

    part: str
    whole: str


@dataclass(frozen=True, slots=True)
class Difference:
    """``minuend - subtrahend`` of two figures declared before it."""

    minuend: str
    subtrahend: str


Derivation = Count | Edges | Ratio | Difference


@dataclass(frozen=True, slots=True)
class DailyFigure:
    """One figure of a day (METRICS.md §3, §5): a number per app and day."""

    key: str  # in rows, JSON, and the gauge's name after the prefix
    label: str  # the CLI's and the page's
    help: str  # the gauge's
    derived: Derivation
    unit: str = USERS
    note: str = ""  # what the CLI shows beside it
    money: bool = False  # shown with the money of the day rather than with the users

    @property
    def gauge(self) -> str:
        return GAUGE_PREFIX + self.key


DAILY_FIGURES: tuple[DailyFigure, ...] = (
    DailyFigure("dau", "DAU", "distinct users active today (app timezone)", Count(Measure.DAU)),
    DailyFigure("wau", "WAU", "distinct users active in the 7 days ending today",
                Edges(Measure.WAU_EDGE)),
    DailyFigure("mau", "MAU", "distinct users active in the 30 days ending today",
                Edges(Measure.MAU_EDGE)),
    DailyFigure("stickiness", "stickiness", "DAU / MAU today", Ratio("dau", "mau"), SHARE,
                "DAU / MAU"),
    DailyFigure("installs", "installs", "distinct users with an install event today",
                Count(Measure.INSTALLS), note="see note"),
    DailyFigure("new_users", "new users", "users first seen today", Count(Measure.NEW_USERS),
                note="see note"),
    DailyFigure("returning_users", "returning users", "DAU minus new users today",
                Difference("dau", "new_users"), note="DAU - new users"),
    DailyFigure("payers", "payers", "distinct users with a purchase today",
                Count(Measure.PAYERS), money=True),
)
FIGURE = {figure.key: figure for figure in DAILY_FIGURES}
#: The counters the daily figures read: each day's own, and the edges summed up to a day.
DAY_MEASURES = tuple(f.derived.measure for f in DAILY_FIGURES if isinstance(f.derived, Count))
RUN_MEASURES = tuple(f.derived.measure for f in DAILY_FIGURES if isinstance(f.derived, Edges))


@dataclass(frozen=True, slots=True)
class CurrencyFigure:
    """One money figure of a day, per currency (METRICS.md §5): the day's revenue, divided
    by the figure ``per`` when given (ARPDAU = revenue / DAU)."""

    key: str
    label: str
    help: str
    per: str | None = None

    @property
    def gauge(self) -> str:
        return GAUGE_PREFIX + self.key


CURRENCY_FIGURES: tuple[CurrencyFigure, ...] = (
    CurrencyFigure("revenue", "revenue", "revenue today, per currency"),
    CurrencyFigure("arpdau", "ARPDAU", "revenue today / DAU, per currency", "dau"),
    CurrencyFigure("arppu", "ARPPU", "revenue today / payers, per currency", "payers"),
)
#: The day's payers: the money block's own line.
PAYERS = FIGURE["payers"]


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart of daily figures, on the page and on the live dashboard: ``series`` are
    figure keys, those in ``right`` against a second axis; a ``ratio`` draws part/whole of
    two figures instead. The dashboard also draws ``dashboard_only`` and ``last_week`` a
    week back."""

    id: str
    title: str
    series: tuple[str, ...] = ()
    dashboard_only: tuple[str, ...] = ()  # series the dashboard draws too, the page not
    right: tuple[str, ...] = ()
    ratio: tuple[str, str] | None = None
    stacked: bool = False
    last_week: tuple[str, ...] = ()
    page: bool = True  # also drawn on the page (the dashboard draws every chart)
    unit: str = USERS


DAILY_CHARTS: tuple[Chart, ...] = (
    Chart("dau", "DAU against installs", ("dau", "installs"), ("returning_users",),
          ("installs",), last_week=("dau",)),
    Chart("new_share", "Share of DAU that is new", ratio=("new_users", "dau"), page=False,
          unit=SHARE),
    Chart("new", "New vs returning users", ("new_users", "returning_users"), stacked=True),
    Chart("stickiness", "Stickiness (DAU / MAU)", ("stickiness",), unit=SHARE),
    Chart("wau_mau", "WAU and MAU", ("wau", "mau"), page=False),
    Chart("wau_over_mau", "WAU / MAU", ratio=("wau", "mau"), page=False, unit=SHARE),
)


# ---- cohort families ---------------------------------------------------------------------------

CALENDAR, HOURS24 = "calendar", "24h"
WINDOWS = (CALENDAR, HOURS24)


@dataclass(frozen=True, slots=True)
class CohortFamily:
    """Where a retention triangle's cells come from (METRICS.md §4): classic cells are
    counted per offset; rolling ones are the suffix sums of each user's last offset."""

    window: str  # calendar periods, or 24-hour windows from each user's first event
    kind: str  # classic or rolling
    measure: Measure
    help: str


COHORT_FAMILIES: tuple[CohortFamily, ...] = (
    CohortFamily(CALENDAR, "classic", Measure.CLASSIC,
                 "users of the cohort active in period c+N"),
    CohortFamily(CALENDAR, "rolling", Measure.LAST_ACTIVE,
                 "users of the cohort last active in period c+N"),
    CohortFamily(HOURS24, "classic", Measure.WINDOW24,
                 "users of the daily cohort with an activity in [first_seen + N x 24h, "
                 "first_seen + (N+1) x 24h)"),
    CohortFamily(HOURS24, "rolling", Measure.LAST_WINDOW24,
                 "users of the daily cohort whose last activity is in window N"),
)
COHORT_FAMILY = {(f.window, f.kind): f for f in COHORT_FAMILIES}
#: Cohort gauges of the 24-hour family (daily cohorts only).
COHORT24_GAUGES = {
    "retention_cohort_retention_24h": "share of a daily cohort with an activity in the 24-hour "
    "window N after its first event (classic), or in window N or later (rolling)",
    "retention_cohort_complete_24h": "1 when window N has ended for every user the cohort's "
    "day could hold (the end of the day plus (N+1) x 24h)",
}


# ---- stored names ----------------------------------------------------------------------------

#: Each counter's stored name: daily measures are fields ``<name>:<day>[:<currency>]`` of one
#: family, the others families ``<name>:<granularity>``. The on-disk format of existing
#: deployments: names may be added, never respelt (``state/schema.py`` builds and parses
#: them).
STORED_NAMES: dict[Measure, str] = {
    Measure.DAU: "dau", Measure.WAU_EDGE: "wae", Measure.MAU_EDGE: "mae",
    Measure.INSTALLS: "ins", Measure.NEW_USERS: "new", Measure.PAYERS: "pay",
    Measure.REVENUE: "rev",
    Measure.COHORT_SIZE: "coh", Measure.CLASSIC: "cls", Measure.ACTIVE: "act",
    Measure.LOST: "lost", Measure.LAST_ACTIVE: "last", Measure.COST: "cost",
    Measure.LTV: "ltv", Measure.PERIOD_REVENUE: "prev", Measure.FIRST_PAYMENT: "fpay",
    Measure.PERIOD_PAYERS: "ppay", Measure.REPEAT_PAYERS: "prep", Measure.REPEAT_BUYERS: "rpc",
    Measure.NPS: "nps", Measure.NPS_COHORT: "npsc", Measure.RETURNED: "ret",
    Measure.LAST_RETURN: "lret", Measure.WINDOW24: "w24", Measure.LAST_WINDOW24: "lw24",
    Measure.LAPSE: "lapse",
}
assert set(STORED_NAMES) == set(Measure), "every counter needs a stored name"
assert len(set(STORED_NAMES.values())) == len(STORED_NAMES), "stored names are unique"
DAILY_STORED = {m: name for m, name in STORED_NAMES.items() if m in DAILY_MEASURES}


def catalogue_json() -> dict[str, Any]:
    """The catalogue as ``/retention/figures`` lists it, for the page."""
    def plain(figure: object) -> dict[str, Any]:
        doc: dict[str, Any] = asdict(figure)  # type: ignore[call-overload]
        derived = doc.pop("derived", None)
        if derived is not None:  # a share is shown as '-' when its whole is 0
            doc["whole"] = derived.get("whole")
        doc.pop("help", None)
        return doc

    return {
        "daily": [plain(f) for f in DAILY_FIGURES],
        "currency": [plain(f) for f in CURRENCY_FIGURES],
        "charts": [plain(c) for c in DAILY_CHARTS if c.page],
        "windows": list(WINDOWS),
    }
