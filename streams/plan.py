"""The pure heart: a batch of events + the users' current state -> a plan of state changes.

Every aggregate counter is a sum over users of what each user contributes to it. So when a
user's state changes, the exact counter update is ``contributions(new) - contributions(old)``:
that is what makes the figures independent of arrival order, late events included (a late
first event moves the user to an earlier cohort, and the delta moves every cell with it).
No I/O here: the Redis layer loads the inputs and applies the plan atomically.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .calendar import GRANULARITIES, AppCalendar, period_of_day
from .events import Event
from .user_state import UserState

MS_PER_DAY = 86_400_000
WAU_DAYS = 7
MAU_DAYS = 30

UserKey = tuple[str, str]  # (app, user_id)
CounterKey = tuple[str, str]  # (family, field), e.g. ("daily", "dau:19700")


def dedup_key(app: str, event_id: str) -> bytes:
    """96-bit digest of (app, event_id): fixed size whatever the id length (collisions ~1e-13
    at 1e8 ids per window)."""
    return hashlib.blake2b(f"{app}\x00{event_id}".encode(), digest_size=12).digest()


def _window_days(days: Iterable[int], width: int) -> set[int]:
    """Days d whose trailing window [d-width+1, d] holds at least one of ``days``."""
    covered: set[int] = set()
    for day in days:
        covered.update(range(day, day + width))
    return covered


def user_contributions(state: UserState, calendar: AppCalendar) -> Counter[CounterKey]:
    """What one user adds to every aggregate counter of its app (see METRICS.md §3-§4)."""
    contrib: Counter[CounterKey] = Counter()
    days = state.active_days
    for day in days:
        contrib["daily", f"dau:{day}"] += 1
    for day in _window_days(days, WAU_DAYS):
        contrib["daily", f"wau:{day}"] += 1
    for day in _window_days(days, MAU_DAYS):
        contrib["daily", f"mau:{day}"] += 1
    for day in state.install_days:
        contrib["daily", f"ins:{day}"] += 1
    contrib["daily", f"new:{state.first_day}"] += 1
    last_day = state.last_day
    for granularity in GRANULARITIES:
        cohort = period_of_day(state.first_day, granularity)
        contrib[f"coh:{granularity}", str(cohort)] += 1
        for period in {period_of_day(day, granularity) for day in days}:
            contrib[f"cls:{granularity}", f"{cohort}:{period - cohort}"] += 1
        last = period_of_day(last_day, granularity) - cohort
        contrib[f"last:{granularity}", f"{cohort}:{last}"] += 1
    return contrib


def add_events(
    state: UserState | None, events: Iterable[Event], calendar: AppCalendar
) -> UserState:
    """The user's state after these (accepted, deduplicated) events, in any order."""
    first_ms = state.first_seen_ms if state else None
    last_ms = state.last_active_ms if state else None
    active = set(state.active_days) if state else set()
    installs = set(state.install_days) if state else set()
    for event in events:
        day = calendar.day_of(event.ts_ms)
        active.add(day)
        if event.type == "install":
            installs.add(day)
        if first_ms is None or event.ts_ms < first_ms:
            first_ms = event.ts_ms
        if last_ms is None or event.ts_ms > last_ms:
            last_ms = event.ts_ms
    assert first_ms is not None and last_ms is not None, "add_events needs at least one event"
    return UserState(
        first_seen_ms=first_ms,
        last_active_ms=last_ms,
        first_day=calendar.day_of(first_ms),
        active_days=frozenset(active),
        install_days=frozenset(installs),
    )


@dataclass(slots=True)
class Plan:
    """Everything one batch changes; applied atomically with the batch's offsets."""

    users: dict[UserKey, UserState] = field(default_factory=dict)
    deltas: dict[str, Counter[CounterKey]] = field(default_factory=dict)  # app -> deltas
    new_dedup_keys: list[bytes] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    too_old: list[tuple[int, int, Event]] = field(default_factory=list)  # (offset, index, ev)
    watermark_ms: int | None = None


def plan_batch(
    events: Iterable[tuple[int, int, Event]],
    states: Mapping[UserKey, UserState | None],
    seen_dedup_keys: set[bytes],
    watermark_ms: int | None,
    horizon_days: int,
    calendar_of: Callable[[str], AppCalendar],
) -> Plan:
    """Plan one partition batch. ``events`` are (offset, index in message, event) in offset
    order; ``states`` must hold every user of the batch (None for a new user)."""
    plan = Plan(watermark_ms=watermark_ms)
    horizon_ms = horizon_days * MS_PER_DAY
    seen = set(seen_dedup_keys)
    accepted: dict[UserKey, list[Event]] = {}
    for offset, index, event in events:
        key = dedup_key(event.app, event.event_id)
        if key in seen:
            plan.stats[f"dup:{event.app}"] += 1
            continue
        if plan.watermark_ms is not None and event.ts_ms < plan.watermark_ms - horizon_ms:
            plan.too_old.append((offset, index, event))
            plan.stats["rej:too_old"] += 1
            continue
        seen.add(key)
        plan.new_dedup_keys.append(key)
        plan.stats[f"acc:{event.app}:{event.type}"] += 1
        if plan.watermark_ms is None or event.ts_ms > plan.watermark_ms:
            plan.watermark_ms = event.ts_ms
        accepted.setdefault((event.app, event.user_id), []).append(event)
    for user_key, user_events in accepted.items():
        app = user_key[0]
        calendar = calendar_of(app)
        old = states[user_key]
        new = add_events(old, user_events, calendar)
        if new == old:
            continue
        plan.users[user_key] = new
        delta = plan.deltas.setdefault(app, Counter())
        delta.update(user_contributions(new, calendar))
        if old is not None:
            delta.subtract(user_contributions(old, calendar))
    for delta in plan.deltas.values():
        for key in [k for k, v in delta.items() if v == 0]:
            del delta[key]
    return plan
