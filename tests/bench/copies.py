"""What the harnesses' workloads must count as duplicates (METRICS.md §1)."""

from __future__ import annotations

from typing import Any

from retention_tracker.streams.events import validate_event
from retention_tracker.streams.plan import adds_up


def remembered_copies(events: list[dict[str, Any]]) -> int:
    """Copies of events that add up (purchases, costed installs): the duplicates. A copy
    of any other event is accepted again."""
    kept = [e for e in events if adds_up(validate_event(e, 1 << 62))]
    return len(kept) - len({(e.get("app", "default"), e["event_id"]) for e in kept})
