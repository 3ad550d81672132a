"""Terminal rendering of reports: tables that fit the terminal's width."""

from __future__ import annotations

import shutil
from typing import Any


def triangle_table(report: dict[str, Any], width: int | None = None) -> str:
    """The cohort triangle as text; incomplete cells carry a trailing '~'."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    rows = report["cohorts"]
    head = (
        f"{report['kind']} retention, app {report['app']}, by {report['granularity']}, "
        f"{report['timezone']}, as of {report['as_of']}"
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
            cell = f"{value * 100:.1f}%" + ("" if complete else "~")
            line += f" {cell:>{cell_w}}"
        lines.append(line)
    hidden = max(len(r["values"]) for r in rows) - offsets
    if hidden > 0:
        lines.append(f"({hidden} more offsets: widen the terminal or use --json)")
    return "\n".join(lines)


def key_values(doc: dict[str, Any]) -> str:
    width = max(len(k) for k in doc)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in doc.items())
