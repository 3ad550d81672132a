"""Grafana dashboards as code: builds ``dashboards/*.json`` with the Grafana Foundation SDK.

    python -m dashboards.build           # (re)write the checked-in JSON files
    python dashboards/build.py --check   # exit 1 if a checked-in file differs from the code

Each dashboard is one function in ``DASHBOARDS`` (file stem -> builder); a new dashboard
is one more entry there. Every PromQL query goes
through :func:`query`, which also records the label set the query must return
(``EXPECTED_LABELS``): ``tests/e2e/test_prometheus.py`` runs every query against a real
Prometheus scraping real workers and checks the labels.

Aggregation rule (see ``agents/metrics.py``): the global figures (every name not starting
with ``retention_worker_``) are read from Redis and are the same on every worker, so they are
combined with ``max by (app, ...)`` -- ``sum`` would multiply them by the number of workers.
The per-worker series (``retention_worker_*``) describe one process and are ``sum``-med.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import prometheus as prom_m

from retention_tracker.config.settings import Settings
from retention_tracker.streams.catalogue import (
    CURRENCY_FIGURES,
    DAILY_CHARTS,
    DAILY_FIGURES,
    FIGURE,
    KPI,
    KPI_SPLITS,
    MONEY,
    SHARE,
    USERS,
    Chart,
)

OUT_DIR = Path(__file__).resolve().parent
DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: Cohort offsets shown as triangle columns: the worker's default METRICS_OFFSETS, less 0
#: (day 0 is the whole cohort, shown as the ``size`` column instead).
OFFSETS = [n for n in Settings().metrics_offsets if n > 0]
#: expr -> labels every series it returns must carry (exactly), filled by ``query``.
EXPECTED_LABELS: dict[str, frozenset[str]] = {}
#: Absolute retention bands for the coloured triangle cells (share of the cohort).
RETENTION_BANDS = [(None, "red"), (0.05, "orange"), (0.1, "yellow"), (0.2, "light-green"),
                   (0.35, "green")]


def query(expr: str, legend: str = "", labels: tuple[str, ...] = (), *, instant: bool = False,
          table: bool = False, ref: str = "A") -> prom_b.Dataquery:
    """A Prometheus target; ``labels`` is exactly the label set its series carry."""
    known = EXPECTED_LABELS.setdefault(expr, frozenset(labels))
    if known != frozenset(labels):
        raise ValueError(f"{expr!r} declared with labels {sorted(labels)} and {sorted(known)}")
    target = prom_b.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        target = target.legend_format(legend)
    if table:
        target = target.format(prom_m.PromQueryFormat.TABLE)
    return target.instant() if instant or table else target.range()


def refs(*targets: prom_b.Dataquery) -> list[prom_b.Dataquery]:
    """Give the targets of one panel the ref ids A, B, C..."""
    return [t.ref_id(chr(ord("A") + i)) for i, t in enumerate(targets)]


# ---- variables -----------------------------------------------------------------------------


def datasource_variable() -> dash_b.DatasourceVariable:
    return dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus")


def app_variable(multi: bool) -> dash_b.QueryVariable:
    variable = (
        dash_b.QueryVariable("app")
        .label("App")
        .datasource(DATASOURCE)
        .query(f"label_values({DAILY_FIGURES[0].gauge}, app)")
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        variable = variable.multi(True).include_all(True).all_value(".*")
    return variable


def base(title: str, uid: str, description: str, multi_app: bool) -> dash_b.Dashboard:
    return (
        dash_b.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["retention-tracker"])
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("30s")
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
        .with_variable(app_variable(multi_app))
    )


# ---- panels --------------------------------------------------------------------------------

Panel = cogbuilder.Builder[dash_m.Panel]


def with_panels(board: dash_b.Dashboard, panels: list[Panel]) -> dash_b.Dashboard:
    """``board`` with ``panels`` added in order: the builder lays each out after the last."""
    for panel in panels:
        board = board.with_panel(panel)
    return board


def stat(title: str, targets: list[prom_b.Dataquery], unit: str = "short", width: int = 4,
         description: str = "") -> stat_b.Panel:
    panel = (
        stat_b.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .targets(refs(*targets))
        .unit(unit)
        .height(4)
        .span(width)
        .graph_mode(common_m.BigValueGraphMode.AREA)
        .color_mode(common_m.BigValueColorMode.NONE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return panel.description(description) if description else panel


def timeseries(title: str, targets: list[prom_b.Dataquery], unit: str = "short",
               width: int = 12, description: str = "", stacked: bool = False) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .targets(refs(*targets))
        .unit(unit)
        .height(8)
        .span(width)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common_m.LegendDisplayMode.LIST)
            .placement(common_m.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if stacked:
        panel = panel.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
    return panel.description(description) if description else panel


def right_axis(panel: ts_b.Panel, series: str) -> ts_b.Panel:
    """Draw the series named ``series`` (its legend) against a second y axis on the right."""
    return panel.override_by_name(
        series, [dash_m.DynamicConfigValue(id_val="custom.axisPlacement", value="right")]
    )


def thresholds(steps: list[tuple[float | None, str]]) -> dash_b.ThresholdsConfig:
    return dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(
        [dash_m.Threshold(value=value, color=color) for value, color in steps]
    )


def transform(id_val: str, options: dict[str, object]) -> dash_m.DataTransformerConfig:
    return dash_m.DataTransformerConfig(id_val=id_val, options=options)


# ---- Live ----------------------------------------------------------------------------------


def app_gauge(metric: str, selector: str = 'app="$app"') -> str:
    return f"max by (app) ({metric}{{{selector}}})"


def live() -> dash_b.Dashboard:
    """A stat per daily figure of the catalogue, then its charts (streams/catalogue.py)."""
    board = base(
        "Retention tracker / Live", "retention-live",
        "Today's activity of one app, in the app's timezone. The daily figures grow during "
        "the day and restart at midnight: compare them with the same time last week.",
        multi_app=False,
    )
    for figure in DAILY_FIGURES:
        if not figure.money:
            board = board.with_panel(stat(
                figure.label if figure.label.isupper() else figure.label.capitalize(),
                [query(app_gauge(figure.gauge), "{{app}}", ("app",))], _UNITS[figure.unit],
                description=figure.help))
    for chart in DAILY_CHARTS:
        board = board.with_panel(_daily_chart(chart))
    return board


_UNITS = {USERS: "short", SHARE: "percentunit"}


def _daily_chart(chart: Chart) -> ts_b.Panel:
    """One chart of the catalogue: its figures (a week back too, for ``last_week``), or
    the ratio of two; those in ``right`` against a right axis."""
    targets = []
    if chart.ratio is not None:
        part, whole = (FIGURE[key] for key in chart.ratio)
        targets.append(query(f"{app_gauge(part.gauge)} / {app_gauge(whole.gauge)}",
                             f"{part.label} / {whole.label}", ("app",)))
    for key in (*chart.series, *chart.dashboard_only):
        figure = FIGURE[key]
        targets.append(query(app_gauge(figure.gauge), figure.label, ("app",)))
        if key in chart.last_week:
            targets.append(query(f'max by (app) ({figure.gauge}{{app="$app"}} offset 1w)',
                                 f"{figure.label} same time last week", ("app",)))
    panel = timeseries(chart.title, targets, unit=_UNITS[chart.unit], stacked=chart.stacked)
    for key in chart.right:
        panel = right_axis(panel, FIGURE[key].label)
    return panel


# ---- Retention -----------------------------------------------------------------------------


def triangle_expr(kind: str, suffix: str = "") -> str:
    """Complete cells of the daily cohort triangle, plus each cohort's size as offset=size;
    ``suffix`` "_24h": the triangle of 24-hour windows."""
    return (
        f'max by (cohort, offset) (retention_cohort_retention{suffix}{{app="$app", '
        f'kind="{kind}", offset!="0"}}) and on (cohort, offset) '
        f'(max by (cohort, offset) (retention_cohort_complete{suffix}{{app="$app"}}) == 1) '
        'or label_replace(max by (cohort) (retention_cohort_size{app="$app"}), '
        '"offset", "size", "", "")'
    )


def returning_expr() -> str:
    """Complete cells of the daily cohorts' retention on the returning event chosen in the
    ``returning`` variable, plus each cohort's size as offset=size."""
    return (
        'max by (cohort, offset) (retention_cohort_returning{app="$app", type="$returning", '
        'offset!="0"}) and on (cohort, offset) '
        '(max by (cohort, offset) (retention_cohort_complete{app="$app"}) == 1) '
        'or label_replace(max by (cohort) (retention_cohort_size{app="$app"}), '
        '"offset", "size", "", "")'
    )


def returning_variable() -> dash_b.QueryVariable:
    """The returning event types (RETURN_EVENTS) the workers export."""
    return (
        dash_b.QueryVariable("returning")
        .label("Returning event")
        .datasource(DATASOURCE)
        .query("label_values(retention_cohort_returning, type)")
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
    )


def triangle(kind: str, description: str, expr: str | None = None,
             title: str | None = None) -> table_b.Panel:
    corner = "cohort\\offset"  # the name groupingToMatrix gives the row-label column
    order = {corner: 0, "size": 1, **{str(n): i + 2 for i, n in enumerate(OFFSETS)}}
    names = {corner: "cohort", **{str(n): f"D{n}" for n in OFFSETS}}
    plain = [
        dash_m.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "auto"}),
        dash_m.DynamicConfigValue(id_val="unit", value="none"),
    ]
    return (
        table_b.Panel()
        .title(title or f"Daily cohorts, {kind} retention")
        .description(description)
        .datasource(DATASOURCE)
        .targets([query(expr or triangle_expr(kind), "", ("cohort", "offset"), table=True)])
        .unit("percentunit")
        .decimals(1)
        .min(0)
        .thresholds(thresholds(RETENTION_BANDS))
        .color_scheme(dash_b.FieldColor().mode(dash_m.FieldColorModeId.THRESHOLDS))
        .cell_options(common_m.TableColoredBackgroundCellOptions(
            mode=common_m.TableCellBackgroundDisplayMode.BASIC))
        .with_transformation(transform("groupingToMatrix", {
            "rowField": "cohort", "columnField": "offset", "valueField": "Value",
            "emptyValue": "null",
        }))
        .with_transformation(transform("sortBy", {"sort": [{"field": corner, "desc": False}]}))
        .with_transformation(transform("organize", {"indexByName": order, "renameByName": names}))
        .override_by_name(corner, plain)
        .override_by_name("size", [*plain, dash_m.DynamicConfigValue(id_val="decimals", value=0)])
        .height(14)
        .span(12)
    )


def retention() -> dash_b.Dashboard:
    board = base(
        "Retention tracker / Retention", "retention-cohorts",
        "Daily cohort retention of one app. Only complete cells (day N has ended) are "
        "shown; `retention report` gives the live values of incomplete ones.",
        multi_app=False,
    )
    for day in ("d1", "d7", "d30"):
        expr = f'max by (app, day, stat) (retention_headline_retention{{app="$app", day="{day}"}})'
        board = board.with_panel(stat(
            f"{day.upper()} retention", [query(expr, "{{stat}}", ("app", "day", "stat"))],
            "percentunit", width=8,
            description=f"latest: {day.upper()} of the most recent daily cohort whose day "
            f"{day[1:]} is complete; mean7: the mean over the 7 such cohorts before it "
            "(the latest is not part of its own baseline).",
        ))
    board = board.with_panel(timeseries(
        "Headline retention: latest cohort vs the 7 before it",
        [query('max by (app, day, stat) (retention_headline_retention{app="$app"})',
               "{{day}} {{stat}}", ("app", "day", "stat"))],
        unit="percentunit", width=24,
        description="A latest value well below its mean7 is what the RetentionHeadlineDrop "
        "alert fires on.",
    ))
    board = with_panels(board, _satisfaction())
    board = board.with_panel(triangle(
        "classic", "Share of each daily cohort active on day N exactly (classic retention).",
    ))
    board = board.with_panel(triangle(
        "rolling", "Share of each daily cohort active on day N or later (rolling retention).",
    ))
    board = board.with_panel(triangle(
        "classic", "Share of each daily cohort with an activity in the 24-hour window N after "
        "its first event, [first_seen + N x 24h, first_seen + (N+1) x 24h): day N counted "
        "from each user's own hour, as Amplitude and Mixpanel offer beside calendar days. "
        "`retention report --window 24h` has rolling and live cells.",
        triangle_expr("classic", "_24h"), "Daily cohorts, classic retention in 24-hour windows",
    ))
    board = board.with_variable(returning_variable())
    board = board.with_panel(triangle(
        "classic", "Share of each daily cohort that sent the returning event chosen above "
        "(RETURN_EVENTS: purchase for payer retention, or a game event) on day N exactly: "
        "`retention report --returning TYPE` has weeks, months, rolling and live cells.",
        returning_expr(), "Daily cohorts, retention on the returning event $returning",
    ))
    return board


def _satisfaction() -> list[Panel]:
    """METRICS.md §8: NPS now, and of last period's answerers who stayed against those who
    left (satisfaction paired with churn)."""
    survey = ("app", "period", "survey")
    return [
        timeseries(
            "Satisfaction (NPS) this week, month and year",
            [query('max by (app, period, survey) (retention_nps{app="$app"})',
                   "{{period}} {{survey}}", survey),
             query('max by (app, period, survey) (retention_nps_answers{app="$app"})',
                   "answers {{period}} {{survey}}", survey)],
            width=12,
            description="NPS = promoters (9-10) minus detractors (0-6) per 100 answers, each "
            "user's latest answer in the period so far; answers on the right axis. "
            "`retention nps` has every period, cohort and segment.",
        ).override_by_regexp("answers .*", [
            dash_m.DynamicConfigValue(id_val="custom.axisPlacement", value="right")]),
        timeseries(
            "NPS of last period's answerers: retained vs churned",
            [query('max by (app, period, survey, group) (retention_nps_previous{app="$app"})',
                   "{{period}} {{survey}} {{group}}", (*survey, "group"))],
            width=12,
            description="Of the users who answered in the previous week, month or year: "
            "the NPS of those active again in the current one (retained) and of the others "
            "(churned, so far). Unhappy users leave: a gap here says satisfaction drives "
            "churn.",
        ),
    ]


# ---- Pipeline ------------------------------------------------------------------------------

RATE = "$__rate_interval"


def quantiles(histogram: str) -> list[prom_b.Dataquery]:
    return [
        query(
            f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket[{RATE}])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def per_worker_rate(counter: str) -> str:
    return f"sum by (instance) (rate({counter}[{RATE}]))"


def pipeline() -> dash_b.Dashboard:
    board = base(
        "Retention tracker / Pipeline", "retention-pipeline",
        "Health of the workers: throughput, rejects, lag, latency, freshness, Redis.",
        multi_app=True,
    )
    panels = (_pipeline_stats() + _pipeline_throughput() + _pipeline_event_outcomes()
              + _pipeline_lag_and_latency() + _pipeline_freshness())
    return with_panels(board, panels)


def _pipeline_stats() -> list[Panel]:
    """The headline figures: workers, lag, freshness, throughput, Redis errors."""
    return [
        stat(
            "Workers reporting", [query("count(retention_worker_assigned_partitions)")],
            description="Workers whose /metrics Prometheus scrapes.",
        ),
        stat(
            "Consumer lag (records)", [query("sum(retention_worker_consumer_lag)")],
        ),
        stat(
            "Watermark age", [query("time() - max(retention_watermark_seconds)")], unit="s",
            description="Now minus the latest event time applied, over all partitions.",
        ),
        stat(
            "Oldest snapshot", [query("time() - min(retention_worker_snapshot_timestamp_seconds)")],
            unit="s", description="Age of the oldest Redis snapshot a worker serves on /metrics.",
        ),
        stat(
            "Records/s", [query(f"sum(rate(retention_worker_records_total[{RATE}]))")],
            unit="short",
        ),
        stat(
            "Redis errors/s",
            [query(f"sum(rate(retention_worker_redis_errors_total[{RATE}]))")], unit="short",
        ),
    ]


def _pipeline_throughput() -> list[Panel]:
    """Events accepted, records processed, and how Kafka batches them."""
    return [
        timeseries(
            "Events accepted/s by type",
            [query(
                f'sum by (type) (max by (app, type) '
                f'(rate(retention_events_accepted_total{{app=~"$app"}}[{RATE}])))',
                "{{type}}", ("type",),
            )],
            unit="short", description="Accepted events (global, from Redis), summed over apps.",
        ),
        timeseries(
            "Kafka records processed/s",
            [
                query(per_worker_rate("retention_worker_records_total"), "{{instance}}",
                      ("instance",)),
                query(f"sum(rate(retention_worker_records_total[{RATE}]))", "all workers"),
            ],
            unit="short",
        ),
        right_axis(timeseries(
            "Partition batches applied/s",
            [
                query(per_worker_rate("retention_worker_batches_total"), "{{instance}}",
                      ("instance",)),
                query(f"sum(rate(retention_worker_records_total[{RATE}])) / "
                      f"sum(rate(retention_worker_batches_total[{RATE}]))", "records per batch"),
            ],
            unit="short", description="Batches per second by worker, and the mean batch size "
            "(right axis): small batches under load mean the workers poll faster than Kafka fills.",
        ), "records per batch"),
    ]


def _pipeline_event_outcomes() -> list[Panel]:
    """Events not applied as sent: dead-lettered, duplicate, forwarded."""
    return [
        timeseries(
            "Dead-lettered events/s by reason",
            [query(f"max by (reason) (rate(retention_events_rejected_total[{RATE}]))",
                   "{{reason}}", ("reason",))],
            unit="short", stacked=True,
        ),
        timeseries(
            "Duplicate events/s",
            [query(f'max by (app) (rate(retention_events_duplicate_total{{app=~"$app"}}[{RATE}]))',
                   "{{app}}", ("app",))],
            unit="short",
        ),
        timeseries(
            "Events forwarded to their home partition/s by cause",
            [query(
                f'sum by (cause) (max by (app, cause) '
                f'(rate(retention_events_forwarded_total{{app=~"$app"}}[{RATE}])))',
                "{{cause}}", ("cause",),
            ), query(per_worker_rate("retention_worker_forwarded_total"), "sent by {{instance}}",
                     ("instance",))],
            unit="short",
            description="Events read in another partition than their user's home (no key, "
            "another key, an array mixing users, another partitioner), forwarded through the "
            "re-key topic, by cause (global) and by the worker that sent them (a crash between "
            "forwarding and applying sends a batch again: the copies count as duplicates). The "
            "figures stay exact, but each costs a second trip through Kafka. `retention check` "
            "names the producer fix.",
        ),
    ]


def _pipeline_lag_and_latency() -> list[Panel]:
    """How far behind the workers are, and how long a batch takes."""
    return [
        timeseries(
            "Consumer lag by topic",
            [query("sum by (topic) (retention_worker_consumer_lag)", "{{topic}}", ("topic",))],
            description="Records behind the end of the partitions, summed over workers.",
        ),
        timeseries(
            "Consumer lag by worker",
            [query("sum by (instance) (retention_worker_consumer_lag)", "{{instance}}",
                   ("instance",))],
        ),
        timeseries(
            "Batch time (parse, plan, apply)", quantiles("retention_worker_batch_seconds"),
            unit="s",
        ),
        timeseries(
            "Event to state latency", quantiles("retention_worker_event_to_state_seconds"),
            unit="s", description="From a record's Kafka timestamp to its batch applied in Redis.",
        ),
    ]


def _pipeline_freshness() -> list[Panel]:
    """How fresh the applied events and served snapshots are; Redis errors."""
    return [
        timeseries(
            "Watermark age by partition",
            [query("time() - max by (partition) (retention_watermark_seconds)", "{{partition}}",
                   ("partition",))],
            unit="s", description="Now minus the latest event time applied in each partition.",
        ),
        timeseries(
            "Snapshot age by worker",
            [query("time() - max by (instance) (retention_worker_snapshot_timestamp_seconds)",
                   "{{instance}}", ("instance",))],
            unit="s", description="How old the Redis figures each worker serves are.",
        ),
        timeseries(
            "Redis, Kafka send and snapshot errors/s",
            [
                query(per_worker_rate("retention_worker_redis_errors_total"),
                      "Redis {{instance}}", ("instance",)),
                query(per_worker_rate("retention_worker_snapshot_errors_total"),
                      "snapshot {{instance}}", ("instance",)),
                query(per_worker_rate("retention_worker_send_errors_total"),
                      "Kafka sends {{instance}}", ("instance",)),
                query(per_worker_rate("retention_worker_version_conflicts_total"),
                      "version conflicts {{instance}}", ("instance",)),
            ],
            unit="short",
        ),
        timeseries(
            "Partitions per worker",
            [query("sum by (instance) (retention_worker_assigned_partitions)", "{{instance}}",
                   ("instance",))],
        ),
    ]


# ---- Money ----------------------------------------------------------------------------------


def money() -> dash_b.Dashboard:
    """METRICS.md §5: does the traffic pay? Today's revenue and what a user is worth."""
    board = base(
        "Retention tracker / Money", "retention-money",
        "Revenue, payers, ARPDAU and ARPPU today, per currency (no FX conversion).",
        multi_app=False,
    )
    per_currency = ("app", "currency")
    for money_figure in CURRENCY_FIGURES:
        board = board.with_panel(timeseries(
            f"{money_figure.label.capitalize()} today by currency"
            if money_figure.label.islower() else f"{money_figure.label} by currency",
            [query(app_gauge(money_figure.gauge).replace("by (app)", "by (app, currency)"),
                   "{{currency}}", per_currency)],
        ))
    dau = DAILY_FIGURES[0]  # users active today: what the money's daily figures are against
    for figure in DAILY_FIGURES:
        if figure.money:
            board = board.with_panel(timeseries(
                f"{figure.label.capitalize()} against {dau.label} today",
                [query(app_gauge(figure.gauge), figure.label, ("app",)),
                 query(app_gauge(dau.gauge), dau.label, ("app",))],
                description=f"{figure.help.capitalize()}, against the users active today.",
            ))
    splits = {k.split.gauge: k.split.total for k in KPI_SPLITS if k.split is not None}
    for gauge, total in splits.items():
        kpi, by = KPI[total], ["app", "period", "users"]  # the KPI its splits are parts of
        if kpi.unit == MONEY:
            by.append("currency")
        board = board.with_panel(timeseries(
            f"{kpi.label.capitalize()} this week, month and year: new vs returning users",
            [query(f'max by ({", ".join(by)}) ({gauge}{{app="$app"}})',
                   " ".join(f"{{{{{label}}}}}" for label in by[1:]), tuple(by))],
            description=f"The current week, month and year so far: {kpi.help}, from the "
            "users first seen in it (new) and from the others (returning). `retention kpis "
            "--period week|month|year` has every period.",
        ))
    board = board.with_panel(cohort_money(
        "LTV by daily cohort and day N", "retention_cohort_ltv", "short",
        "Cumulative revenue per user of each recent daily cohort by day N, one row per "
        "cohort and currency (no FX). Live cells included: `retention report --kind ltv` "
        "marks the incomplete ones.",
    ))
    return board.with_panel(cohort_money(
        "ROAS by daily cohort and day N", "retention_cohort_roas", "percentunit",
        "LTV / CAC of each recent daily cohort by day N, in the currency of install costs "
        "(CURRENCY). Below 100%: the cohort has not paid back its acquisition cost yet.",
    ))


def cohort_money(title: str, metric: str, unit: str, description: str) -> table_b.Panel:
    """A cohort x offset table of a money gauge; rows are "cohort currency"."""
    corner = "row\\offset"  # the name groupingToMatrix gives the row-label column
    order = {corner: 0, **{str(n): i + 1 for i, n in enumerate(Settings().metrics_offsets)}}
    names = {corner: "cohort", **{str(n): f"D{n}" for n in Settings().metrics_offsets}}
    expr = (f'label_join(max by (cohort, currency, offset) ({metric}{{app="$app"}}), '
            '"row", " ", "cohort", "currency")')
    return (
        table_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets([query(expr, "", ("cohort", "currency", "offset", "row"), table=True)])
        .unit(unit)
        .decimals(2)
        .with_transformation(transform("groupingToMatrix", {
            "rowField": "row", "columnField": "offset", "valueField": "Value",
            "emptyValue": "null",
        }))
        .with_transformation(transform("sortBy", {"sort": [{"field": corner, "desc": True}]}))
        .with_transformation(transform("organize", {"indexByName": order, "renameByName": names}))
        .override_by_name(corner, [
            dash_m.DynamicConfigValue(id_val="unit", value="none")])
        .height(12)
        .span(12)
    )


# ---- Win-back -------------------------------------------------------------------------------


def winback() -> dash_b.Dashboard:
    """METRICS.md §7: who lapsed, what was sent, who came back."""
    board = base(
        "Retention tracker / Win-back", "retention-winback",
        "Inactivity notifications for push services and the users they brought back.",
        multi_app=False,
    )
    panels = (_winback_inactivity() + _at_risk() + _winback_flows() + _winback_back_by()
              + _winback_sending())
    return with_panels(board, panels)


#: Every label of the win-back counters, which are global (read from Redis): ``max`` them.
WINBACK_EVERY = "max by (app, threshold, segment, churn_type)"


def _winback_inactivity() -> list[Panel]:
    """Who is inactive now, and the share of the notified who came back."""
    per_threshold = ("app", "threshold")
    return [
        timeseries(
            "Users inactive now, by threshold",
            [query(app_gauge("retention_inactive_users").replace("by (app)",
                                                                 "by (app, threshold)"),
                   "{{threshold}} d", per_threshold)],
            description="Users whose last activity is at least the threshold ago.",
        ),
        timeseries(
            "Back within 7 days of the notification",
            [query(app_gauge("retention_winback_back_within_7d_share").replace(
                "by (app)", "by (app, threshold)"), "{{threshold}} d", per_threshold)],
            unit="percentunit",
            description="Share of notified users active again within 7 days: does win-back work?",
        ),
    ]


def _at_risk() -> list[Panel]:
    """METRICS.md §9: the users the model holds at risk beside those inactive 2 days, both
    as a share of the users with activity."""
    tracked = f'clamp_min({app_gauge("retention_tracked_users")}, 1)'
    inactive = app_gauge("retention_inactive_users", 'app="$app", threshold="2"')
    return [
        timeseries(
            "At risk against inactive 2 days (share of users)",
            [query(f'{app_gauge("retention_at_risk_users")} / {tracked}', "at risk", ("app",)),
             query(f"{inactive} / {tracked}", "inactive 2 d", ("app",))],
            unit="percentunit", width=24,
            description="At risk: P(alive) below AT_RISK_THRESHOLD under the app's kept "
            "BG/NBD (or MBG/NBD) fit; inactive 2 d: last activity 2 days ago or more. "
            "Empty until the app's model is fitted (AT_RISK_REFIT_SECONDS or retention "
            "at-risk).",
        ),
        timeseries(
            "At-risk messages and returns/s",
            [query('max by (outcome) (rate(retention_at_risk_messages_total{app="$app"}'
                   f'[{RATE}]))', "{{outcome}}", ("outcome",))],
            width=24,
            description="users.at_risk episodes by outcome: sent; expired (found later than "
            "WINBACK_MAX_DELAY, not sent); returned (active again after a sent moment) and, "
            "of those, back within 7 days of it; false alarms (a late event dated before "
            "a sent moment). Max over the workers: each exports the same Redis counts.",
        ),
    ]


def _winback_flows() -> list[Panel]:
    """Notifications sent, reactivations and false alarms per second."""
    return [
        timeseries(
            f"{title} by threshold and segment",
            [query(f'sum by (threshold, segment) ({WINBACK_EVERY} '
                   f'(rate({metric}_total{{app="$app"}}[{RATE}])))',
                   "{{threshold}} d {{segment}}", ("threshold", "segment"))],
            description="False alarm: a late event dated before the moment showed the user "
            "was not inactive after all (never counted as a reactivation)."
            if metric == "retention_false_alarms" else "",
        )
        for metric, title in (("retention_notifications_sent", "Notifications sent/s"),
                              ("retention_reactivations", "Reactivations/s"),
                              ("retention_false_alarms", "False alarms/s"))
    ]


def _winback_back_by() -> list[Panel]:
    """The all-time share back within 7 days, by churn type and by value segment."""
    return [
        timeseries(
            f"Back within 7 days by {title}",
            [query(f'sum by ({label}) ({WINBACK_EVERY} (retention_reactivations_within_7d_total'
                   f'{{app="$app"}})) / clamp_min(sum by ({label}) ({WINBACK_EVERY} '
                   f'(retention_notifications_sent_total{{app="$app"}})), 1)',
                   f"{{{{{label}}}}}", (label,))],
            unit="percentunit",
            description="All-time share of notified users active again within 7 days of "
            "their moment (0 while none was notified).",
        )
        for label, title in (("churn_type", "churn type (quick: gone within QUICK_CHURN_DAYS)"),
                             ("segment", "value segment"))
    ]


def _winback_sending() -> list[Panel]:
    """Moments too old to send, and which workers send (and fail)."""
    return [
        timeseries(
            "Expired moments/s by threshold",
            [query(f'max by (app, threshold) '
                   f'(rate(retention_notifications_expired_total{{app="$app"}}[{RATE}]))',
                   "{{threshold}} d", ("app", "threshold"))],
            description="Inactivity moments found more than WINBACK_MAX_DELAY behind now (a "
            "backfill, a first start on old data, an outage): counted, never sent, so push "
            "services are not flooded with stale messages.",
        ),
        timeseries(
            "Notifications sent/s per worker",
            [query(f"sum by (instance) (rate(retention_worker_notifications_total[{RATE}]))",
                   "{{instance}}", ("instance",)),
             query(f"sum by (instance) (rate(retention_worker_notify_errors_total[{RATE}]))",
                   "errors {{instance}}", ("instance",))],
            description="Which workers emit (each partition's due users are sent by its owner), "
            "and failed passes, retried on the next tick.",
        ),
    ]


# ---- output --------------------------------------------------------------------------------

#: file stem -> builder
DASHBOARDS: dict[str, Callable[[], dash_b.Dashboard]] = {
    "live": live,
    "retention": retention,
    "pipeline": pipeline,
    "money": money,
    "winback": winback,
}


def render(name: str) -> str:
    """The JSON text of one dashboard, stable byte for byte (sorted keys, final newline)."""
    model = DASHBOARDS[name]().build()
    return json.dumps(json.loads(JSONEncoder().encode(model)), indent=2, sort_keys=True) + "\n"


def rendered() -> dict[Path, str]:
    return {OUT_DIR / f"{name}.json": render(name) for name in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a checked-in file is out of date")
    args = parser.parse_args(argv)
    drift = []
    for path, text in rendered().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            drift.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    stale = sorted(p.name for p in OUT_DIR.glob("*.json") if p.stem not in DASHBOARDS)
    if stale:
        print(f"not built by this module (remove them): {', '.join(stale)}", file=sys.stderr)
        return 1
    if drift:
        print(f"out of date, run python -m dashboards.build: {', '.join(drift)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
