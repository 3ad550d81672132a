"""Terminal rendering of reports: tables that fit the terminal's width."""

from __future__ import annotations

import shutil
from typing import Any


def triangle_table(report: dict[str, Any], width: int | None = None) -> str:
    """The cohort triangle as text; incomplete cells carry a trailing '~'."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    rows = report["cohorts"]
    what = report["kind"] + (" retention" if report["kind"] in ("classic", "rolling") else "")
    head = (
        f"{what}, app {report['app']}, by {report['granularity']}, {report['timezone']}, "
        f"as of {report['as_of']}"
        + (f", {report['currency']}" if "currency" in report else "")
        + (f", segment {report['segment']}" if "segment" in report else "")
    )
    if not rows:
        return head + "\n(no cohorts)"
    label_w = max(len("cohort"), *(len(r["cohort"]) for r in rows))
    size_w = max(len("size"), *(len(str(r["size"])) for r in rows))
    cell_w = 7
    fit = max(1, (width - label_w - size_w - 2) // (cell_w + 1))
    offsets = min(fit, max(len(r["values"]) for r in rows))
    lines = [head]
    header = f"{'cohort':<{label_w}} {'size':>{size_w}}"
    header += "".join(f" {'+' + str(n):>{cell_w}}" for n in range(offsets))
    lines.append(header)
    for row in rows:
        line = f"{row['cohort']:<{label_w}} {row['size']:>{size_w}}"
        for value, complete in list(zip(row["values"], row["complete"], strict=True))[:offsets]:
            cell = _cell(report["kind"], value) + ("" if complete else "~")
            line += f" {cell:>{cell_w}}"
        lines.append(line)
    hidden = max(len(r["values"]) for r in rows) - offsets
    if hidden > 0:
        lines.append(f"({hidden} more offsets: widen the terminal or use --json)")
    return "\n".join(lines)


def _cell(kind: str, value: float | None) -> str:
    if value is None:
        return "-"
    if kind == "ltv":
        return f"{value:.2f}"
    return f"{value * 100:.1f}%"


def key_values(doc: dict[str, Any]) -> str:
    width = max(len(k) for k in doc)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in doc.items())


def _table(head: str, columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    lines = [head, "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.1f}%"


def _money(amounts: dict[str, float]) -> str:
    return " ".join(f"{v:,.2f} {cur}" for cur, v in amounts.items()) or "0"


def kpis_table(doc: dict[str, Any]) -> str:
    head = f"KPIs of app {doc['app']} by {doc['period']}, {doc['timezone']}"
    if "segment" in doc:
        head += f", segment {doc['segment']}"
    columns = ["period", "active", "new", "returning", "CRR", "churn", "revenue", "payers", "RPR"]
    rows = [[p["period"], p["active"], p["new_users"], p["returning"], _pct(p["crr"]),
             _pct(p["churn"]), _money(p["revenue"]), p["payers"], _pct(p["rpr"])]
            for p in doc["periods"]]
    return _table(head, columns, rows)


def rpr_text(doc: dict[str, Any]) -> str:
    life = doc["lifetime"]
    lines = [f"repeat purchase rate, app {doc['app']}: lifetime {_pct(life['rpr'])} "
             f"({life['repeat_buyers']} of {life['buyers']} buyers)"]
    if "window" in doc:
        w = doc["window"]
        lines.append(f"window {w['from'] or '...'} to {w['to'] or '...'}: {_pct(w['rpr'])} "
                     f"({w['repeat_buyers']} of {w['buyers']} buyers)")
    rows = [[c["cohort"], c["buyers"], c["repeat_buyers"], _pct(c["rpr"])]
            for c in doc["cohorts"]]
    return "\n".join(lines) + "\n" + _table("by cohort", ["cohort", "buyers", "repeat", "RPR"],
                                             rows)


def segments_table(doc: dict[str, Any]) -> str:
    columns = ["segment", "users", "D1", "D1 mean7", "D7", "D7 mean7", "D30", "D30 mean7"]
    rows = [[s["segment"], s["users"], _pct(s["d1"]), _pct(s["d1_mean7"]), _pct(s["d7"]),
             _pct(s["d7_mean7"]), _pct(s["d30"]), _pct(s["d30_mean7"])] for s in doc["segments"]]
    return _table(f"value segments of app {doc['app']}, as of {doc['as_of']}", columns, rows)
