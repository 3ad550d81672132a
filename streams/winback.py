"""Inactivity and reactivation (METRICS.md §7), pure: which notifications are due, their
payloads and deterministic ids, and the reactivation of a notified user.

An episode is identified by the user's ``last_active_ms`` when it is notified, so the id
``notification_id(app, user, days, episode)`` is the same however often a crash makes the
worker send it again; push services drop repeats by that id.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .calendar import AppCalendar, period_label
from .events import Event
from .segments import SegmentRules, value_segment
from .user_state import MONEY_UNITS, UserState

MS_PER_DAY = 86_400_000
BACK_WITHIN_DAYS = 7

UserKey = tuple[str, str]


def notification_id(app: str, user_id: str, days: int, episode_ms: int) -> str:
    raw = f"{app}\x00{user_id}\x00{days}\x00{episode_ms}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def iso_ms(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")


def churn_type(state: UserState, quick_churn_days: int) -> str:
    """Quick churners (gone within a week of arriving) come back about half as often."""
    lived_ms = state.last_active_ms - state.first_seen_ms
    return "quick" if lived_ms < quick_churn_days * MS_PER_DAY else "late"


def notification_payload(
    app: str,
    user_id: str,
    days: int,
    state: UserState,
    calendar: AppCalendar,
    rules: SegmentRules,
    quick_churn_days: int,
) -> dict[str, Any]:
    episode = state.last_active_ms
    revenue = sum(p.units for _, cur, p in state.purchases if cur == rules.default_currency)
    return {
        "notification_id": notification_id(app, user_id, days, episode),
        "app": app,
        "user_id": user_id,
        "threshold_days": days,
        "last_active": iso_ms(episode),
        "inactive_since": iso_ms(episode + days * MS_PER_DAY),
        "first_seen": iso_ms(state.first_seen_ms),
        "cohort": period_label(state.first_day, "day"),
        "active_days": len(state.active_days),
        "sessions": state.sessions,
        "purchases": sum(p.count for _, _, p in state.purchases),
        "revenue": round(revenue / MONEY_UNITS, 4),
        "currency": rules.default_currency,
        "platform": state.attribute("platform"),
        "country": state.attribute("country"),
        "campaign": state.attribute("campaign"),
        "churn_type": churn_type(state, quick_churn_days),
        "value_segment": value_segment(state, rules),
    }


@dataclass(slots=True)
class NotificationPlan:
    """What one emission pass sends and records, applied atomically after the sends."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    users: dict[UserKey, UserState] = field(default_factory=dict)
    sent: list[tuple[int, UserKey]] = field(default_factory=list)  # (days, user): leave due set
    stats: Counter[str] = field(default_factory=Counter)


def plan_notifications(
    due: Iterable[tuple[int, UserKey, int]],
    states: Mapping[UserKey, UserState | None],
    now_ms: int,
    calendar_of: Callable[[str], AppCalendar],
    rules: SegmentRules,
    quick_churn_days: int,
) -> NotificationPlan:
    """``due`` holds (days, user, due_ms) read from the due sets. A user is notified when its
    record agrees that ``last_active + days`` has passed; an entry the record contradicts
    (the user was active since) is dropped from the due set without a message."""
    plan = NotificationPlan()
    for days, user, due_ms in sorted(due, key=lambda d: (d[2], d[0], d[1])):
        state = plan.users.get(user) or states.get(user)
        plan.sent.append((days, user))
        if state is None or state.last_active_ms + days * MS_PER_DAY != due_ms:
            continue  # stale entry: a newer last activity has its own entry
        if due_ms > now_ms:
            plan.sent.pop()
            continue
        if state.notified_episode_ms == state.last_active_ms and days in state.notified_days:
            continue  # already sent in this episode (a retried pass)
        app, user_id = user
        payload = notification_payload(
            app, user_id, days, state, calendar_of(app), rules, quick_churn_days
        )
        plan.messages.append(payload)
        notified = state.notified_days if state.notified_episode_ms == state.last_active_ms else ()
        plan.users[user] = replace(
            state,
            notified_episode_ms=state.last_active_ms,
            notified_days=tuple(sorted({*notified, days})),
        )
        plan.stats[f"sent:{app}:{days}:{payload['value_segment']}"] += 1
        plan.stats[f"inactive:{app}:{days}"] += 1
    return plan


def reactivation(
    user: UserKey,
    old: UserState,
    new: UserState,
    events: Iterable[Event],
    rules: SegmentRules,
) -> tuple[UserState, dict[str, Any] | None]:
    """A notified user active again after its episode: one users.reactivated message, and
    the notified marks cleared (the next lapse is a new episode)."""
    episode = old.notified_episode_ms
    if episode is None or new.last_active_ms <= episode:
        return new, None
    back_ms = min(e.ts_ms for e in events if e.ts_ms > episode)
    app, user_id = user
    days_crossed = list(old.notified_days)
    message = {
        "notification_ids": [notification_id(app, user_id, d, episode) for d in days_crossed],
        "app": app,
        "user_id": user_id,
        "threshold_days": days_crossed,
        "last_active": iso_ms(episode),
        "returned_at": iso_ms(back_ms),
        "days_away": round((back_ms - episode) / MS_PER_DAY, 2),
        "back_within_7d": {
            str(d): back_ms - (episode + d * MS_PER_DAY) <= BACK_WITHIN_DAYS * MS_PER_DAY
            for d in days_crossed
        },
        "value_segment": value_segment(new, rules),
    }
    return replace(new, notified_episode_ms=None, notified_days=()), message
