"""The reports, as every surface gets them: frozen values that the pure builders
(``streams/figures.py``, ``streams/builders.py``) build once and the surfaces only render:
HTTP and ``--json`` as ``as_json()``, the CLI's text tables from the fields, the Prometheus
collector from ``LiveFigures``.

A report's fields are in the order its JSON shows them. A triangle's rows are typed
(``CohortRow``, ``MoneyRow``: read by attribute, shown by the same ``as_json()``); the other
rows (a day, a period) are the mappings the figures module computes, keyed by the
catalogue's names, shown as they are. A field whose metadata says ``omit_none`` is left out
of the JSON when it is None (a segment for all users, a currency for a kind that has none),
``flatten`` merges a mapping into the report, ``hidden`` is data the JSON does not show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

Row = Mapping[str, Any]  # figures of one day or period, as figures.py builds them

OMIT_NONE = {"omit_none": True}
FLATTEN = {"flatten": True}
HIDDEN = {"hidden": True}


def _plain(value: object) -> object:
    """A field's JSON form: reports nested in it rendered too, tuples as lists."""
    if isinstance(value, Report):
        return value.as_json()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Report:
    """What every report shares: its JSON form, the one HTTP and ``--json`` show."""

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.metadata.get("hidden") or (value is None and spec.metadata.get("omit_none")):
                continue
            if spec.metadata.get("flatten"):
                doc.update(_plain(value))  # type: ignore[call-overload]
            else:
                doc[spec.name] = _plain(value)
        return doc


@dataclass(frozen=True, slots=True)
class CohortRow(Report):
    """One cohort of a retention triangle (or of payer conversion): its users counted at
    each offset, their share of its size, and whether each cell has ended (METRICS.md §4)."""

    period: int = field(metadata=HIDDEN)  # the cohort's period number: compared, not its label
    cohort: str  # the period's label, as shown
    size: int
    counts: tuple[int, ...]
    values: tuple[float, ...]
    complete: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class MoneyRow(Report):
    """One cohort of a money curve (METRICS.md §5): cumulative revenue by offset, per user
    (LTV) or per unit of install cost (ROAS, None without costs). ``cac`` is ROAS's alone,
    shown (null without costs) only when ``roas``."""

    period: int = field(metadata=HIDDEN)
    cohort: str
    size: int
    cac: float | None
    revenue: tuple[float, ...]
    values: tuple[float | None, ...]
    complete: tuple[bool, ...]
    roas: bool = field(default=False, metadata=HIDDEN)

    def as_json(self) -> dict[str, Any]:
        doc = Report.as_json(self)  # (no bare super() in a slotted dataclass)
        if not self.roas:
            del doc["cac"]
        return doc


TriangleRow = CohortRow | MoneyRow


@dataclass(frozen=True, slots=True)
class CohortReport(Report):
    app: str
    granularity: str
    kind: str
    timezone: str
    segment: str | None = field(default=None, metadata=OMIT_NONE)
    currency: str | None = field(default=None, metadata=OMIT_NONE)
    as_of: str = ""
    cohorts: tuple[TriangleRow, ...] = ()
    # RETURN_EVENTS: the event type a user must send in a period to count as back in it
    returning: str | None = field(default=None, metadata=OMIT_NONE)
    # "24h": retention in 24-hour windows from each user's first event (None: calendar)
    window: str | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class SummaryReport(Report):
    """One day. Win-back totals and forwarded events exist for all users only (they are
    live totals, not per segment)."""

    figures: Row = field(metadata=FLATTEN)  # day_summary
    complete: bool
    segment: str | None = field(default=None, metadata=OMIT_NONE)
    winback: Mapping[str, Any] | None = field(default=None, metadata=OMIT_NONE)
    winback_as_of: str | None = field(default=None, metadata=OMIT_NONE)
    forwarded: Mapping[str, int] | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class DailyReport(Report):
    app: str
    as_of: str
    timezone: str
    segment: str | None = field(default=None, metadata=OMIT_NONE)
    days: tuple[Row, ...] = ()


@dataclass(frozen=True, slots=True)
class CatalogueReport(Report):
    """The figures the tracker shows (streams/catalogue.py): the page labels and formats
    the daily figures and draws the charts from it, naming none of them itself."""

    catalogue: Mapping[str, Any] = field(metadata=FLATTEN)


@dataclass(frozen=True, slots=True)
class AppsReport(Report):
    apps: tuple[Row, ...]
    currency: str
    thresholds: tuple[int, ...]
    segment_attributes: tuple[str, ...]
    value_segments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HeadlineReport(Report):
    app: str
    as_of: str
    timezone: str
    segment: str | None = field(default=None, metadata=OMIT_NONE)
    headline: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PipelineReport(Report):
    """Pipeline health from Redis; ``lag`` is the answering worker's own (HTTP adds it)."""

    as_of: str
    accepted: Mapping[str, Mapping[str, int]]
    rejected: Mapping[str, int]
    duplicates: Mapping[str, int]
    forwarded: Mapping[str, Mapping[str, int]]
    watermarks: Mapping[str, str]
    lag: Mapping[str, int] | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class KpisReport(Report):
    app: str
    period: str
    timezone: str
    segment: str | None = field(default=None, metadata=OMIT_NONE)
    periods: tuple[Row, ...] = ()


@dataclass(frozen=True, slots=True)
class NpsReport(Report):
    """Satisfaction (METRICS.md §8) of one survey by week, month or year: ``rows`` per
    period (``by="period"``), per cohort (``by="cohort"``) or per period split between the
    answerers active in the next period and the others (``by="churn"``). ``live_period``:
    the period holding now, when a row is of it (its figures are live numbers)."""

    app: str
    period: str
    survey: str
    by: str
    timezone: str
    segment: str | None = field(default=None, metadata=OMIT_NONE)
    as_of: str = ""
    surveys: tuple[str, ...] = ()  # every survey with answers (in this segment)
    live_period: str | None = field(default=None, metadata=OMIT_NONE)
    rows: tuple[Row, ...] = ()


@dataclass(frozen=True, slots=True)
class RepeatPurchaseReport(Report):
    app: str
    granularity: str
    timezone: str
    segment: str | None = field(default=None, metadata=OMIT_NONE)
    lifetime: Row = field(default_factory=dict)
    cohorts: tuple[Row, ...] = ()
    window: Row | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class ValueSegmentsReport(Report):
    app: str
    timezone: str
    as_of: str
    segments: tuple[Row, ...] = ()


@dataclass(frozen=True, slots=True)
class AppFigures(Report):
    """One app's live figures on /metrics: today's summary and money, recent daily cohorts,
    the headline, win-back."""

    winback: Mapping[str, Any]
    summary: Row
    cohorts: Mapping[str, tuple[CohortRow, ...]]  # kind -> rows
    money: Mapping[str, Mapping[str, tuple[MoneyRow, ...]]]  # kind -> currency -> rows
    headline: Mapping[int, Any]
    headline_size: Mapping[int, Any]
    # week, month, year -> the current period's revenue and payers, new vs returning users
    periods: Mapping[str, Row] = field(default_factory=dict)
    # week, month, year -> survey -> {"current": figures, "retained"/"churned": of the
    # previous period's answerers, split by activity in the current one}
    nps: Mapping[str, Mapping[str, Mapping[str, Row]]] = field(default_factory=dict)
    # RETURN_EVENTS type -> recent daily cohorts' classic retention on that type
    returning: Mapping[str, tuple[CohortRow, ...]] = field(default_factory=dict)
    # kind -> recent daily cohorts' retention in 24-hour windows (METRICS.md §4)
    cohorts24: Mapping[str, tuple[CohortRow, ...]] = field(default_factory=dict)
    # (threshold, Stat) -> value segment -> churn type -> count: the win-back counters,
    # every known label at zero (streams/figures.winback_counts)
    winback_counts: Mapping[tuple[int, Any], Mapping[str, Mapping[str, int]]] = field(
        default_factory=dict)


@dataclass(frozen=True, slots=True)
class LiveFigures(Report):
    """What a metrics snapshot holds: every app's figures and the pipeline statistics."""

    now_ms: int
    apps: Mapping[str, AppFigures]
    stats: Mapping[Any, int]  # (Stat, *tail) -> count (streams/counters.py)


@dataclass(frozen=True, slots=True)
class ReplayReport(Report):
    """What ``retention replay`` produced from files, and the lines it refused, by reason."""

    produced_events: int
    messages: int
    seconds: float
    rejected: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class AtRiskReport(Report):
    """The app's risk-of-lapsing model (METRICS.md §9) and where its users stand now:
    ``p_alive`` counts users by band of P(alive), ``at_risk`` those below the threshold."""

    app: str
    model: str
    time_unit: str
    users: int
    params: Mapping[str, float]
    log_likelihood: float
    as_of: str
    now: str
    threshold: float
    users_now: int  # users with activity now (the fit's ``users`` were at ``as_of``)
    at_risk: int
    at_risk_share: float
    p_alive: tuple[Row, ...] = ()
    messages: Mapping[str, int] = field(default_factory=dict)  # users.at_risk counts


@dataclass(frozen=True, slots=True)
class AtRiskUserReport(Report):
    """One user's summary and risk: x repeat active days, t_x and T in weeks."""

    app: str
    user_id: str
    model: str
    x: int
    t_x: float
    T: float  # the paper's name, as METRICS.md §9 spells the field
    p_alive: float
    expected_days_30: float
    at_risk: bool
