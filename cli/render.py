"""Terminal rendering of reports: tables that fit the terminal's width. The reports are the
ones HTTP and ``--json`` show (streams/reports.py); only the rendering differs."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

from retention_tracker.streams.catalogue import (
    CURRENCY_FIGURES,
    DAILY_FIGURES,
    KPI_SPLITS,
    KPIS,
    MONEY,
    SHARE,
    DailyFigure,
    Kpi,
    share_whole,
)
from retention_tracker.streams.reports import (
    AtRiskReport,
    AtRiskUserReport,
    CohortReport,
    KpisReport,
    NpsReport,
    RepeatPurchaseReport,
    SummaryReport,
    ValueSegmentsReport,
)


def triangle_table(report: CohortReport, width: int | None = None) -> str:
    """The cohort triangle as text; incomplete cells carry a trailing '~'."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    rows = report.cohorts
    what = report.kind + (" retention" if report.kind in ("classic", "rolling") else "")
    head = (
        f"{what}, app {report.app}, by {report.granularity}, {report.timezone}, "
        f"as of {report.as_of}"
        + (f", {report.currency}" if report.currency is not None else "")
        + (f", segment {report.segment}" if report.segment is not None else "")
        + (f", back = sent {report.returning}" if report.returning is not None else "")
        + (f", in {report.window} windows from each user's first event"
           if report.window is not None else "")
    )
    if not rows:
        return head + "\n(no cohorts)"
    label_w = max(len("cohort"), *(len(r.cohort) for r in rows))
    size_w = max(len("size"), *(len(str(r.size)) for r in rows))
    cell_w = 7
    fit = max(1, (width - label_w - size_w - 2) // (cell_w + 1))
    offsets = min(fit, max(len(r.values) for r in rows))
    lines = [head]
    header = f"{'cohort':<{label_w}} {'size':>{size_w}}"
    header += "".join(f" {'+' + str(n):>{cell_w}}" for n in range(offsets))
    lines.append(header)
    for row in rows:
        line = f"{row.cohort:<{label_w}} {row.size:>{size_w}}"
        for value, complete in list(zip(row.values, row.complete, strict=True))[:offsets]:
            cell = _cell(report.kind, value) + ("" if complete else "~")
            line += f" {cell:>{cell_w}}"
        lines.append(line)
    hidden = max(len(r.values) for r in rows) - offsets
    if hidden > 0:
        lines.append(f"({hidden} more offsets: widen the terminal or use --json)")
    return "\n".join(lines)


def _cell(kind: str, value: float | None) -> str:
    if value is None:
        return "-"
    if kind == "ltv":
        return f"{value:.2f}"
    return f"{value * 100:.1f}%"


INSTALLS_NOTE = ("installs count users with an install event that day, new users those first\n"
                 "seen that day: they differ on reinstalls and on install events that never "
                 "arrived")
LIVE_MARK = "~"


def summary_text(report: SummaryReport) -> str:
    """A day's figures, then money and win-back as aligned tables; live numbers flagged."""
    doc = report.figures
    head = f"summary of app {doc['app']} on {doc['date']}"
    if report.segment is not None:
        head += f", segment {report.segment}"
    if not report.complete:
        head += " (day not ended yet: live numbers)"
    people = [[f.label, _figure(f, doc), f.note] for f in DAILY_FIGURES if not f.money]
    blocks = [_table(head, ["figure", "value", ""], people, left=(0, 2)),
              f"note: {INSTALLS_NOTE}", _money_block(doc)]
    if report.winback is not None and report.winback_as_of is not None:
        blocks.append(_winback_block(report.winback, report.winback_as_of,
                                     doc["date"] if report.complete else None))
    if report.forwarded is not None:
        blocks.append(_forwarded_line(report.forwarded))
    return "\n\n".join(blocks)


def _figure(figure: DailyFigure | Kpi, doc: Mapping[str, Any]) -> Any:
    """A figure of a row as shown by its unit: a share as % ('-' when its whole in the
    row is 0, or when it is None), money per currency, users as they are."""
    value = doc[figure.key]
    if figure.unit == SHARE:
        whole = share_whole(figure.derived)
        return _pct(value) if whole is None else _share(value, doc[whole])
    return _money(value) if figure.unit == MONEY else value


def _money_block(doc: Mapping[str, Any]) -> str:
    head = f"money on {doc['date']}" + "".join(
        f", {figure.label}: {doc[figure.key]}" for figure in DAILY_FIGURES if figure.money)
    revenue, *divided = CURRENCY_FIGURES
    if not doc[revenue.key]:
        return head + f", no {revenue.label}"
    rows = [[currency, f"{amount:,.2f}", *(_amount(doc[f.key].get(currency)) for f in divided)]
            for currency, amount in doc[revenue.key].items()]
    return _table(head, ["currency", revenue.label, *(f.label for f in divided)], rows,
                  left=(0,))


def _amount(value: float | None) -> str | None:
    return None if value is None else f"{value:,.4f}"


def _winback_block(winback: Mapping[str, Any], as_of: str, past_day: str | None) -> str:
    """Win-back figures exist as live totals only: a past day's summary says so."""
    head = f"win-back: live totals as of {as_of}"
    if past_day:
        head += f", not of {past_day} (the tracker keeps no history of them)"
    rows = []
    for days, found in winback.items():
        rows.append([f"{days}d", "all", found["inactive"], found["expired"],
                     *_winback_cells(found)])
        for group in ("by_segment", "by_churn_type"):
            for value, part in found[group].items():
                rows.append(["", value, "", "", *_winback_cells(part)])
    columns = ["threshold", "users", "inactive now", "expired", "notified", "false alarms",
               "reactivated", "back in 7d"]
    return _table(head, columns, rows, left=(1,))


def _winback_cells(found: dict[str, Any]) -> list[Any]:
    return [found["notified"], found["false_alarms"], found["reactivated"],
            _share(found["back_within_7d_share"], found["notified"])]


def _forwarded_line(forwarded: Mapping[str, int]) -> str:
    """How many events producers sent away from their user's partition (all time)."""
    total = sum(forwarded.values())
    if not total:
        return "forwarded to their home partition: none (every event was keyed by its user)"
    causes = ", ".join(f"{cause} {n:,}" for cause, n in forwarded.items() if n)
    return (f"forwarded to their home partition: {total:,} events ({causes}); figures are "
            "exact, `retention check` says how to fix the producer")


def _table(head: str, columns: list[str], rows: list[list[Any]], left: tuple[int, ...] = ()
           ) -> str:
    """Columns right-aligned (numbers line up), those in ``left`` left-aligned (labels);
    None shows as '-'."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c)
              for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if i in left else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    return "\n".join([head, line(columns), *(line(r) for r in cells)])


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.1f}%"


def _share(value: float | None, whole: int) -> str | None:
    """A rate as %, or '-' when its denominator is 0 (0 of 0 is no rate, not 0%)."""
    return _pct(value) if whole else None


def _money(amounts: dict[str, float]) -> str:
    return " ".join(f"{v:,.2f} {cur}" for cur, v in amounts.items()) or "0"


def kpis_table(report: KpisReport) -> str:
    """Period KPIs (streams/catalogue.py), then the ones split between new and returning
    users; a period that has not ended carries '~' (its CRR and churn are live)."""
    head = f"KPIs of app {report.app} by {report.period}, {report.timezone}"
    if report.segment is not None:
        head += f", segment {report.segment}"
    tables = [(head, [k for k in KPIS if k.split is None]),
              ("revenue and payers of the period's new users vs returning users", KPI_SPLITS)]
    text = "\n\n".join(
        _table(title, ["period", *(k.label for k in kpis)],
               [[p["period"] + ("" if p["complete"] else LIVE_MARK),
                 *(_figure(k, p) for k in kpis)] for p in report.periods])
        for title, kpis in tables)
    if any(not p["complete"] for p in report.periods):
        text += (f"\n{LIVE_MARK} the period has not ended yet: its CRR and churn are live "
                 "numbers, not results")
    return text


def rpr_text(report: RepeatPurchaseReport) -> str:
    life = report.lifetime
    lines = [f"repeat purchase rate, app {report.app}: lifetime "
             f"{_share(life['rpr'], life['buyers']) or '-'} "
             f"({life['repeat_buyers']} of {life['buyers']} buyers)"]
    if report.window is not None:
        w = report.window
        lines.append(f"window {w['from'] or '...'} to {w['to'] or '...'}: "
                     f"{_share(w['rpr'], w['buyers']) or '-'} "
                     f"({w['repeat_buyers']} of {w['buyers']} buyers)")
    rows = [[c["cohort"], c["buyers"], c["repeat_buyers"], _share(c["rpr"], c["buyers"])]
            for c in report.cohorts]
    return "\n".join(lines) + "\n" + _table("by cohort", ["cohort", "buyers", "repeat", "RPR"],
                                             rows)


def segments_table(report: ValueSegmentsReport) -> str:
    columns = ["segment", "users", "D1", "D1 mean7", "D7", "D7 mean7", "D30", "D30 mean7"]
    rows = [[s["segment"], s["users"], _pct(s["d1"]), _pct(s["d1_mean7"]), _pct(s["d7"]),
             _pct(s["d7_mean7"]), _pct(s["d30"]), _pct(s["d30_mean7"])] for s in report.segments]
    return _table(f"value segments of app {report.app}, as of {report.as_of}", columns, rows)


def _nps_cells(figures: Mapping[str, Any]) -> list[Any]:
    nps = figures["nps"]
    return [figures["answers"], figures["promoters"], figures["passives"],
            figures["detractors"], "-" if nps is None else f"{nps:+.1f}"]


def nps_text(report: NpsReport) -> str:
    """NPS by period, cohort, or churned against retained answerers; live rows carry '~'."""
    head = (f"NPS of survey {report.survey}, app {report.app}, by {report.period}"
            + (" cohort" if report.by == "cohort" else "")
            + f", {report.timezone}, as of {report.as_of}"
            + (f", segment {report.segment}" if report.segment is not None else ""))
    figures = ["answers", "promoters", "passives", "detractors", "NPS"]
    if not report.rows:
        others = ", ".join(s for s in report.surveys if s != report.survey)
        return head + "\n(no answers)" + (f"; surveys with answers: {others}" if others else "")
    if report.by == "cohort":
        rows = [[r["cohort"], *_nps_cells(r)] for r in report.rows]
        return _table(head, ["cohort", *figures], rows)
    if report.by == "churn":
        rows = [[r["period"] + ("" if r["complete"] else LIVE_MARK), group,
                 *_nps_cells(r[group])] for r in report.rows for group in ("retained", "churned")]
        text = _table(head + "\nanswerers active in the next period (retained) or not (churned)",
                      ["period", "group", *figures], rows, left=(1,))
        if any(not r["complete"] for r in report.rows):
            text += f"\n{LIVE_MARK} the next period has not ended yet: live numbers"
        return text
    rows = [[r["period"] + (LIVE_MARK if r["period"] == report.live_period else ""),
             *_nps_cells(r)] for r in report.rows]
    text = _table(head, ["period", *figures], rows)
    if report.live_period is not None:
        text += f"\n{LIVE_MARK} the period has not ended yet: live numbers"
    return text


def at_risk_text(report: AtRiskReport | AtRiskUserReport) -> str:
    """The app's model and its users by P(alive), or one user's risk (METRICS.md §9)."""
    if isinstance(report, AtRiskUserReport):
        return (f"user {report.user_id} of app {report.app} ({report.model}): x={report.x} "
                f"repeat days, t_x={report.t_x} T={report.T} weeks, P(alive)="
                f"{report.p_alive:.3f}, expected active days in the next 30: "
                f"{report.expected_days_30:.2f}" + (", AT RISK" if report.at_risk else ""))
    params = ", ".join(f"{name}={value:.4g}" for name, value in report.params.items())
    head = (f"{report.model} of app {report.app}, fitted {report.as_of} over {report.users} "
            f"users: {params}, log likelihood {report.log_likelihood:.2f}\n"
            f"at risk (P(alive) < {report.threshold:g}) as of {report.now}: {report.at_risk} "
            f"({_pct(report.at_risk_share)})")
    rows = [[f"{band['from']:.1f}-{band['to']:.1f}", band["users"]] for band in report.p_alive]
    sent = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in report.messages.items())
    return _table(head, ["P(alive)", "users"], rows, left=(0,)) + f"\nusers.at_risk: {sent}"
