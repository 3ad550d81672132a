"""Every figure the tracker shows, declared once: its name in rows and JSON, its gauge and
help, its label, its unit and how it is derived from the stored counters.

The surfaces iterate this module instead of naming figures: ``streams/figures.py`` computes
the daily rows and the period KPI rows from the derivations, the Prometheus collector
builds its families from the gauge names and helps, the CLI and the page (through
``/retention/figures``) label and format them, the dashboard builder draws the charts
declared here. Adding a daily figure or a KPI is one entry here plus, when it needs a
counter of its own, the plan's contribution to it (and its stored name below). The
independent reference (``bench/reference.py``) computes the same figures its own way, by
name, and the property tests hold the two equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from retention_tracker.streams.counters import DAILY_MEASURES, Measure

GAUGE_PREFIX = "retention_"
USERS, SHARE, MONEY = "users", "share", "money"  # units: a count, a 0..1 ratio, an amount

# ---- how a figure is derived: a day's, a period's --------------------------------------------


@dataclass(frozen=True, slots=True)
class Count:
    """The day's counter of ``measure``."""

    measure: Measure


@dataclass(frozen=True, slots=True)
class Edges:
    """The sum of ``measure``'s edge counters up to the day (WAU/MAU as run edges)."""

    measure: Measure


@dataclass(frozen=True, slots=True)
class PeriodCount:
    """A counter of period P's families (METRICS.md §6): ``measure``'s cell of P, of the
    period before it with ``previous`` (S, the users active in P-1), or with ``own_cohort``
    a cohort family's cell of P's own cohort in P itself (offset 0: P's new users, who pay
    nothing before their first event). Per currency when the figure is money."""

    measure: Measure
    previous: bool = False
    own_cohort: bool = False


@dataclass(frozen=True, slots=True)
class Ratio:
    """``part / whole`` to 4 places, of figures declared before it or of a period's
    counters; ``empty`` when ``whole`` is 0: 0.0 (stickiness, RPR) or None (CRR and churn
    without S, METRICS.md §6)."""

    part: str | PeriodCount
    whole: str | PeriodCount
    empty: float | None = 0.0


@dataclass(frozen=True, slots=True)
class Difference:
    """``minuend - subtrahend`` of two figures declared before it; of money, per currency
    (the currencies of ``minuend``, those with a non-zero difference)."""

    minuend: str
    subtrahend: str


Derivation = Count | Edges | Ratio | Difference
KpiDerivation = PeriodCount | Ratio | Difference


def terms(derived: Derivation | KpiDerivation) -> tuple[str | PeriodCount, ...]:
    """What a derivation reads: figures of the row (declared before the figure it derives)
    and a period's counters. A day's counters (``Count``, ``Edges``) are not terms."""
    if isinstance(derived, Ratio):
        return derived.part, derived.whole
    if isinstance(derived, Difference):
        return derived.minuend, derived.subtrahend
    return (derived,) if isinstance(derived, PeriodCount) else ()


def share_whole(derived: Derivation | KpiDerivation) -> str | None:
    """The figure of the row a share is divided by: the share is shown '-' when that is 0
    (0 of 0 is no rate, though the share says 0.0). None for other derivations, and for a
    share of counters (CRR, churn: None themselves then)."""
    return derived.whole if isinstance(derived, Ratio) and isinstance(derived.whole, str) \
        else None


@dataclass(frozen=True, slots=True)
class DailyFigure:
    """One figure of a day (METRICS.md §3, §5): a number per app and day."""

    key: str  # in rows, JSON, and the gauge's name after the prefix
    label: str  # the CLI's and the page's
    help: str  # the gauge's
    derived: Derivation
    unit: str = USERS
    note: str = ""  # what the CLI shows beside it
    money: bool = False  # shown on the money of the day's line and panels, not with the users

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


# ---- period KPIs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Split:
    """A KPI that is the part of the period's KPI ``total`` brought by its new users (first
    seen in it, ``users`` "new") or by returning ones (first seen before, "returning"),
    METRICS.md §6: the CLI's second table, and the current period's gauge ``gauge``
    labelled ``users``."""

    total: str
    users: str

    @property
    def gauge(self) -> str:
        return f"{GAUGE_PREFIX}period_{self.total}"


@dataclass(frozen=True, slots=True)
class Kpi:
    """One figure of a week, month or year (METRICS.md §6) in the KPI rows, in row order."""

    key: str  # in rows and JSON
    label: str  # the CLI's and the page's
    help: str  # the page's column title
    derived: KpiDerivation
    unit: str = USERS
    split: Split | None = None


_S = PeriodCount(Measure.ACTIVE, previous=True)  # users active in the period before
KPIS: tuple[Kpi, ...] = (
    Kpi("active", "active", "users active in the period", PeriodCount(Measure.ACTIVE)),
    Kpi("new_users", "new", "users first seen in the period", PeriodCount(Measure.COHORT_SIZE)),
    Kpi("returning", "returning", "active users first seen before the period (active - new)",
        Difference("active", "new_users")),
    Kpi("crr", "CRR", "customer retention rate: (active - new) / users active in the period "
        "before", Ratio("returning", _S, None), SHARE),
    Kpi("churn", "churn", "users active in the period before and not in this one / users "
        "active in the period before", Ratio(PeriodCount(Measure.LOST), _S, None), SHARE),
    Kpi("revenue", "revenue", "revenue of the period, per currency",
        PeriodCount(Measure.PERIOD_REVENUE), MONEY),
    Kpi("payers", "payers", "users with a purchase in the period",
        PeriodCount(Measure.PERIOD_PAYERS)),
    Kpi("rpr", "RPR", "repeat purchase rate: payers with two purchases or more / payers",
        Ratio(PeriodCount(Measure.REPEAT_PAYERS), "payers"), SHARE),
    Kpi("new_revenue", "new revenue", "revenue of the period's new users, per currency",
        PeriodCount(Measure.LTV, own_cohort=True), MONEY, Split("revenue", "new")),
    Kpi("returning_revenue", "returning revenue",
        "revenue of returning users (first seen before the period), per currency",
        Difference("revenue", "new_revenue"), MONEY, Split("revenue", "returning")),
    Kpi("new_payers", "new payers", "payers among the period's new users",
        PeriodCount(Measure.FIRST_PAYMENT, own_cohort=True), split=Split("payers", "new")),
    Kpi("returning_payers", "returning payers", "payers among returning users",
        Difference("payers", "new_payers"), split=Split("payers", "returning")),
)
KPI = {kpi.key: kpi for kpi in KPIS}
#: The KPIs split between new and returning users (the CLI's second table, the gauges).
KPI_SPLITS = tuple(k for k in KPIS if k.split is not None)
#: The families the period KPIs are computed from, read per granularity.
KPI_MEASURES = tuple(dict.fromkeys(
    t.measure for k in KPIS for t in terms(k.derived) if isinstance(t, PeriodCount)))


def with_inputs(wanted: tuple[Kpi, ...]) -> tuple[Kpi, ...]:
    """``wanted`` and the KPIs they are derived from, in row order: what computing the
    ``wanted`` ones takes (the current period's splits read only their own counters)."""
    names = {k.key for k in wanted}
    for kpi in reversed(KPIS):  # a KPI reads only KPIs declared before it
        if kpi.key in names:
            names.update(t for t in terms(kpi.derived) if isinstance(t, str))
    return tuple(k for k in KPIS if k.key in names)


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


# ---- gauges ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GaugeFamily:
    """A gauge family of the metrics snapshot (METRICS.md §10): its name, its labels and
    its help. The daily and currency figures' are derived from their declarations above;
    the others are declared here, and the collector (``agents/metrics.py``) exports these
    and no other."""

    name: str
    labels: tuple[str, ...]
    help: str


GAUGES: tuple[GaugeFamily, ...] = (
    *(GaugeFamily(f.gauge, ("app",), f.help) for f in DAILY_FIGURES),
    *(GaugeFamily(f.gauge, ("app", "currency"), f.help) for f in CURRENCY_FIGURES),
    GaugeFamily("retention_cohort_size", ("app", "cohort"), "users of a recent daily cohort"),
    GaugeFamily("retention_cohort_retention", ("app", "kind", "cohort", "offset"),
                "share of a daily cohort active on day N (classic) or on day N or later "
                "(rolling)"),
    GaugeFamily("retention_cohort_complete", ("app", "cohort", "offset"),
                "1 when the cohort's day N has ended"),
    GaugeFamily("retention_cohort_retention_24h", ("app", "kind", "cohort", "offset"),
                "share of a daily cohort with an activity in the 24-hour window N after its "
                "first event (classic), or in window N or later (rolling)"),
    GaugeFamily("retention_cohort_complete_24h", ("app", "cohort", "offset"),
                "1 when window N has ended for every user the cohort's day could hold (the "
                "end of the day plus (N+1) x 24h)"),
    GaugeFamily("retention_cohort_returning", ("app", "type", "cohort", "offset"),
                "share of a daily cohort that sent an event of the type (RETURN_EVENTS, e.g. "
                "purchase) on day N: retention on a returning event"),
    GaugeFamily("retention_cohort_ltv", ("app", "cohort", "offset", "currency"),
                "cumulative revenue per user of a recent daily cohort by day N, per currency"),
    GaugeFamily("retention_cohort_roas", ("app", "cohort", "offset", "currency"),
                "LTV / CAC of a recent daily cohort by day N (in the currency of install "
                "costs)"),
    GaugeFamily("retention_headline_retention", ("app", "day", "stat"),
                "D1/D7/D30 classic retention: latest complete cohort and mean of the 7 "
                "complete cohorts before it"),
    GaugeFamily("retention_headline_cohort_size", ("app", "day"),
                "users of the cohort the headline D1/D7/D30 is of (the latest whose day N has "
                "ended): the drop alert ignores small ones"),
    GaugeFamily("retention_period_revenue", ("app", "period", "users", "currency"),
                "revenue of the current week, month or year, per currency, of its new users "
                "(first seen in it) or of returning users"),
    GaugeFamily("retention_period_payers", ("app", "period", "users"),
                "users paying in the current week, month or year: its new users or returning "
                "users"),
    GaugeFamily("retention_nps", ("app", "period", "survey"),
                "NPS (promoters - detractors, per 100 answers) of the current week, month or "
                "year so far, per survey"),
    GaugeFamily("retention_nps_answers", ("app", "period", "survey"),
                "survey answers in the current week, month or year so far (each user's "
                "latest per period)"),
    GaugeFamily("retention_nps_previous", ("app", "period", "survey", "group"),
                "NPS of the previous week, month or year's answerers, those active in the "
                "current period (retained) against the others (churned)"),
    GaugeFamily("retention_watermark_seconds", ("partition",),
                "latest event time applied, per partition"),
    GaugeFamily("retention_inactive_users", ("app", "threshold"),
                "users inactive for at least the threshold now"),
    GaugeFamily("retention_winback_back_within_7d_share", ("app", "threshold"),
                "share of notified users active again within 7 days of their notification"),
    GaugeFamily("retention_worker_snapshot_timestamp_seconds", (),
                "when the Redis figures were last read"),
    GaugeFamily("retention_at_risk_users", ("app",),
                "users whose P(alive) is below AT_RISK_THRESHOLD now under the app's kept "
                "BG/NBD (or MBG/NBD) fit"),
    GaugeFamily("retention_tracked_users", ("app",),
                "users with activity (the population of the at-risk model)"),
)

@dataclass(frozen=True, slots=True)
class CounterFamily:
    """A counter family of the metrics snapshot (METRICS.md §10), summed over the workers'
    stats in Redis: its name without ``_total``, its labels and its help. The collector
    exports these and no other."""

    name: str
    labels: tuple[str, ...]
    help: str


_WINBACK_LABELS = ("app", "threshold", "segment", "churn_type")
COUNTERS: tuple[CounterFamily, ...] = (
    CounterFamily("retention_events_accepted", ("app", "type"),
                  "events accepted, by app and type"),
    CounterFamily("retention_events_rejected", ("reason",), "events dead-lettered, by reason"),
    CounterFamily("retention_events_duplicate", ("app",),
                  "copies of remembered events (purchases, installs with a cost) ignored, by "
                  "app; a copy of another event changes nothing and counts as accepted"),
    CounterFamily("retention_events_forwarded", ("app", "cause"),
                  "events read away from their user's home partition and forwarded there, by "
                  "app and cause (no_key, other_key, mixed_array, other_partitioner)"),
    CounterFamily("retention_notifications_sent", _WINBACK_LABELS,
                  "inactivity notifications sent, by threshold, value segment and churn type"),
    CounterFamily("retention_notifications_expired", ("app", "threshold"),
                  "inactivity moments found later than WINBACK_MAX_DELAY behind now (a "
                  "backfill, an outage): counted, not sent"),
    CounterFamily("retention_false_alarms", _WINBACK_LABELS,
                  "notifications shown wrong by a late event dated before their moment, by "
                  "threshold, value segment and churn type"),
    CounterFamily("retention_reactivations", _WINBACK_LABELS,
                  "notified users active again after the moment, by threshold, value "
                  "segment and churn type"),
    CounterFamily("retention_reactivations_within_7d", _WINBACK_LABELS,
                  "of those, back within 7 days of the moment"),
    CounterFamily("retention_at_risk_messages", ("app", "outcome"),
                  "users.at_risk episodes by outcome: sent, expired (found later than "
                  "WINBACK_MAX_DELAY), returned (back after a sent moment), back_within_7d (of "
                  "those, within 7 days of it), false_alarms (a late event dated before a sent "
                  "moment)"),
)
assert len({g.name for g in GAUGES} | {c.name for c in COUNTERS}) == len(GAUGES) + len(COUNTERS), \
    "metric names are unique"


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
    def plain(figure: DailyFigure | CurrencyFigure | Kpi | Chart) -> dict[str, Any]:
        doc: dict[str, Any] = asdict(figure)
        if isinstance(figure, DailyFigure | Kpi):  # a share is shown '-' when its whole is 0
            del doc["derived"]
            doc["whole"] = share_whole(figure.derived)
        return doc

    return {
        "daily": [plain(f) for f in DAILY_FIGURES],
        "currency": [plain(f) for f in CURRENCY_FIGURES],
        "kpis": [plain(k) for k in KPIS],
        "charts": [plain(c) for c in DAILY_CHARTS if c.page],
        "windows": list(WINDOWS),
    }
