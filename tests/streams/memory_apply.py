"""A dict standing in for Redis in pure tests: applies plans exactly as the Lua script does
(states replaced, counters incremented, dedup ids remembered), with no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from retention_tracker.streams.calendar import AppCalendar
from retention_tracker.streams.events import Event
from retention_tracker.streams.figures import (
    cohort_rows,
    day_summary,
    kpi_rows,
    last_day_with_data,
    money_of_day,
    money_rows,
)
from retention_tracker.streams.plan import UserKey, dedup_key, plan_batch
from retention_tracker.streams.user_state import UserState, decode_user, encode_user


@dataclass
class MemoryState:
    timezone: str = "UTC"
    horizon_days: int = 400
    users: dict[UserKey, bytes] = field(default_factory=dict)
    counters: dict[str, Counter[str]] = field(default_factory=dict)  # "app|family" -> fields
    seen: set[bytes] = field(default_factory=set)
    watermark_ms: int | None = None

    def calendar(self, _app: str) -> AppCalendar:
        return AppCalendar(self.timezone)

    def apply(self, batch: Iterable[Event]) -> list[Event]:
        """Plan and apply one batch; returns the events rejected as too old."""
        items = [(offset, -1, event) for offset, event in enumerate(batch)]
        states: dict[UserKey, UserState | None] = {}
        for _, _, event in items:
            raw = self.users.get((event.app, event.user_id))
            # through the codec, as Redis would
            states[event.app, event.user_id] = decode_user(raw) if raw else None
        keys = {dedup_key(e.app, e.event_id) for _, _, e in items}
        plan = plan_batch(
            items, states, keys & self.seen, self.watermark_ms, self.horizon_days, self.calendar
        )
        for user, state in plan.users.items():
            self.users[user] = encode_user(state)
        for app, groups in plan.deltas.items():
            for segments, deltas in groups.items():
                for (family, name), delta in deltas.items():
                    for segment in segments:
                        self.counters.setdefault(f"{app}|{segment}|{family}", Counter())[
                            name] += delta
        self.seen.update(plan.new_dedup_keys)
        self.watermark_ms = plan.watermark_ms
        return [event for _, _, event in plan.too_old]

    def family(self, app: str, family: str, segment: str = "all") -> Counter[str]:
        found = self.counters.get(f"{app}|{segment}|{family}", Counter())
        return Counter({k: v for k, v in found.items() if v})  # as Redis: zeros deleted

    def triangle(self, app: str, granularity: str, kind: str, now_ms: int, segment: str = "all"
                 ) -> list[dict[str, Any]]:
        cells = self.family(app, ("cls:" if kind == "classic" else "last:") + granularity,
                            segment)
        return cohort_rows(
            self.family(app, f"coh:{granularity}", segment),
            cells,
            kind,
            granularity,
            self.calendar(app),
            now_ms,
            last_day_with_data(self.family(app, "daily", segment)),
        )

    def money_triangle(self, app: str, granularity: str, kind: str, now_ms: int,
                       currency: str = "USD", segment: str = "all") -> list[dict[str, Any]]:
        cells = self.family(app, ("fpay:" if kind == "payer_conversion" else "ltv:") + granularity,
                            segment)
        return money_rows(
            self.family(app, f"coh:{granularity}", segment), cells,
            self.family(app, f"cost:{granularity}", segment), kind, granularity, currency,
            self.calendar(app), now_ms, last_day_with_data(self.family(app, "daily", segment)),
        )

    def kpis(self, app: str, period: str, segment: str = "all") -> list[dict[str, Any]]:
        families = {name: self.family(app, f"{name}:{period}", segment)
                    for name in ("act", "coh", "lost", "ppay", "prep", "prev")}
        periods = [int(p) for p in families["act"]]
        return kpi_rows(families, period, min(periods), max(periods)) if periods else []

    def summary(self, app: str, day: int, segment: str = "all") -> dict[str, Any]:
        daily = self.family(app, "daily", segment)
        doc = day_summary(app, day, daily)
        doc.update(money_of_day(daily, day, doc["dau"]))
        return doc
