"""Inactivity and reactivation (METRICS.md §7), pure: which notifications are due, their
payloads and deterministic ids, and the reactivation of a notified user.

An episode is identified by the user's ``last_active_ms`` when it is notified, so the id
``notification_id(app, user, days, episode)`` is the same however often a crash makes the
worker send it again; push services drop repeats by that id.
"""

from __future__ import annotations

import functools
import hashlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgspec.structs import replace

from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar, day_to_date
from retention_tracker.streams.counters import Cell, Stat
from retention_tracker.streams.events import Event
from retention_tracker.streams.segments import SegmentRules, money, value_segment
from retention_tracker.streams.user_state import UserKey, UserState

BACK_WITHIN_DAYS = 7



def notification_id(app: str, user_id: str, days: int, episode_ms: int) -> str:
    raw = f"{app}\x00{user_id}\x00{days}\x00{episode_ms}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def iso_ms(ts_ms: int) -> str:
    """``datetime.isoformat`` in UTC to the millisecond: the date from a cache, the time of
    day from three small tables (a payload carries three times; datetime's took ~1.5 µs
    each in a replay, an f-string of its five fields 3x what the tables take)."""
    day, ms_of_day = divmod(ts_ms, MS_PER_DAY)
    minute, ms_of_minute = divmod(ms_of_day, 60_000)
    second, ms = divmod(ms_of_minute, 1000)
    return _iso_date(day) + _HOURS_MINUTES[minute] + _SECONDS[second] + _MILLIS[ms]


#: What follows a time's date: "T00:00:".."T23:59:", "00.".."59.", "000+00:00".."999+00:00".
_HOURS_MINUTES = tuple(f"T{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60))
_SECONDS = tuple(f"{second:02d}." for second in range(60))
_MILLIS = tuple(f"{ms:03d}+00:00" for ms in range(1000))


@functools.lru_cache(maxsize=1 << 16)
def _iso_date(day: int) -> str:
    """A day number's date, ``YYYY-MM-DD``: a pass's times fall on few distinct days."""
    return day_to_date(day).isoformat()


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
    attributes = {key: value for key, value, _ in state.attributes}
    return {
        "notification_id": notification_id(app, user_id, days, episode),
        "app": app,
        "user_id": user_id,
        "threshold_days": days,
        "last_active": iso_ms(episode),
        "inactive_since": iso_ms(episode + days * MS_PER_DAY),
        "first_seen": iso_ms(state.first_seen_ms),
        "cohort": _iso_date(state.first_day),  # period_label(first_day, "day"), cached
        "active_days": len(state.active_days),
        "sessions": state.sessions,
        "purchases": state.purchase_count() if state.purchases else 0,
        "revenue": money(revenue) if revenue else 0.0,
        "currency": rules.default_currency,
        "platform": attributes.get("platform"),
        "country": attributes.get("country"),
        "campaign": attributes.get("campaign"),
        "churn_type": churn_type(state, quick_churn_days),
        "value_segment": value_segment(state, rules),
    }


@dataclass(frozen=True, slots=True)
class WinbackRules:
    """Win-back settings: the thresholds (days, ascending; empty: win-back off), how far
    behind "now" a moment may be and its message still go out, and the quick-churn bar.
    ``per_app``: the apps with thresholds of their own (APP_INACTIVITY_THRESHOLDS)."""

    thresholds: tuple[int, ...] = (2,)
    max_delay_ms: int = MS_PER_DAY
    quick_churn_days: int = 7
    per_app: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def thresholds_of(self, app: str) -> tuple[int, ...]:
        """The app's thresholds: its own, else the global ones."""
        return self.per_app.get(app, self.thresholds)

    @property
    def every_threshold(self) -> tuple[int, ...]:
        """Every threshold some app has (ascending): the due sets and topics there are;
        empty: win-back is off everywhere."""
        return tuple(sorted({*self.thresholds, *(d for t in self.per_app.values() for d in t)}))


DEFAULT_WINBACK = WinbackRules()


def event_clock_now_ms(own_ms: int | None, stream_ms: int | None, caught_up: bool) -> int:
    """"Now" for a partition's due users with the event clock (METRICS.md §2): its own
    watermark while it has a backlog (an event still to be read there may cancel a moment);
    once caught up, the stream's (the latest event time accepted on any partition), so a
    moment after the partition's last event does not wait for traffic that will not come
    to it while the other partitions' events are later."""
    own = own_ms or 0
    return max(own, stream_ms or 0) if caught_up else own


def moment_reached_ms(arrivals: Sequence[int], moment_ms: int, now_ms: int) -> int:
    """When "now" first reached ``moment_ms``. With the event clock, now moves event by
    event: ``arrivals`` are a batch's watermarks after each accepted event, in arrival
    order (so non-decreasing), and the first one at or past the moment is when it came. Live
    (or a moment no arrival reached): ``now_ms``."""
    index = bisect_left(arrivals, moment_ms)
    return arrivals[index] if index < len(arrivals) else now_ms


def next_moment_ms(state: UserState, thresholds: Sequence[int]) -> int | None:
    """The user's one due entry: the earliest inactivity moment of its episode not handled
    yet (``thresholds`` ascending), None when every one was (or there is none). One entry
    per user, not one per threshold (issue 31: ~115 B of Redis each): when it comes due,
    the thresholds are read from the record again."""
    for days in thresholds:
        if not state.handled(days):
            return state.last_active_ms + days * MS_PER_DAY
    return None


@dataclass(slots=True)
class NotificationPlan:
    """What one emission pass sends and records, applied atomically after the sends."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    users: dict[UserKey, UserState] = field(default_factory=dict)
    # users whose due entry moves: their next moment, None to drop it (next_moment_ms)
    due: dict[UserKey, int | None] = field(default_factory=dict)
    stats: Counter[Cell] = field(default_factory=Counter)


def handle_moment(
    user: UserKey,
    state: UserState,
    days: int,
    reached_ms: int,
    calendar: AppCalendar,
    rules: SegmentRules,
    winback: WinbackRules,
    messages: list[dict[str, Any]],
    stats: Counter[Cell],
) -> UserState:
    """The user became inactive-``days`` in its current episode, and "now" reached that
    moment at ``reached_ms``: publish the message while fresh, else count it expired (a
    backfill or an outage must not flood the push services). Returns the marked state."""
    app, user_id = user
    moment_ms = state.last_active_ms + days * MS_PER_DAY
    same_episode = state.notified_episode_ms == state.last_active_ms
    notified = state.notified_days if same_episode else ()
    expired = state.expired_days if same_episode else ()
    stats[Stat.INACTIVE, app, days] += 1
    if reached_ms - moment_ms > winback.max_delay_ms:
        stats[Stat.EXPIRED, app, days] += 1
        expired = tuple(sorted({*expired, days}))
    else:
        payload = notification_payload(app, user_id, days, state, calendar, rules,
                                       winback.quick_churn_days)
        messages.append(payload)
        stats[Stat.SENT, app, days, payload["value_segment"], payload["churn_type"]] += 1
        notified = tuple(sorted({*notified, days}))
    return replace(state, notified_episode_ms=state.last_active_ms, notified_days=notified,
                   expired_days=expired)


def plan_notifications(
    due: Iterable[tuple[UserKey, int]],
    states: Mapping[UserKey, UserState | None],
    now_ms: int,
    calendars: Mapping[str, AppCalendar],
    rules: SegmentRules,
    winback: WinbackRules,
    arrivals: Sequence[int] = (),
    known_ms: Mapping[UserKey, int] | None = None,
) -> NotificationPlan:
    """``due`` holds (user, due_ms) read from the due set, oldest first. Each user's
    thresholds whose moment ``last_active + days`` has passed by ``now_ms`` and that its
    episode has not handled yet are handled, in order; its entry then moves to its next
    moment, or goes (``next_moment_ms``). The record decides, not the entry: one from an
    earlier episode or threshold (a retried pass, a moment handled inside a batch) only
    moves. ``arrivals``: the last batch's watermarks (event clock), to tell when each
    moment came; ``known_ms``: for its users, when their last activity arrived (no moment
    comes before)."""
    plan = NotificationPlan()
    for user, due_ms in sorted(due, key=lambda entry: (entry[1], entry[0])):
        state = plan.users.get(user) or states.get(user)
        if state is None or not state.seen:
            plan.due[user] = None
            continue
        thresholds = winback.thresholds_of(user[0])
        for days in thresholds:
            moment_ms = state.last_active_ms + days * MS_PER_DAY
            if moment_ms > now_ms:
                break
            if state.handled(days):
                continue  # already sent or expired in this episode
            reached_ms = moment_reached_ms(arrivals, moment_ms, now_ms)
            if known_ms and user in known_ms:
                reached_ms = max(reached_ms, known_ms[user])
            state = handle_moment(user, state, days, reached_ms, calendars[user[0]],
                                  rules.for_app(user[0]), winback, plan.messages, plan.stats)
            plan.users[user] = state
        next_ms = next_moment_ms(state, thresholds)
        if next_ms != due_ms:
            plan.due[user] = next_ms
    return plan


def return_of(
    user: UserKey,
    old: UserState,
    new: UserState,
    events: Iterable[Event],
    rules: SegmentRules,
    winback: WinbackRules,
    stats: Counter[Cell],
) -> tuple[UserState, dict[str, Any] | None]:
    """A user whose episode was handled is active again after it. Per threshold sent: an
    event dated after the moment is a return (one users.reactivated message names them
    all); one dated before it shows the message was a false alarm (it arrived late), never
    a reactivation. The marks are cleared: the next lapse is a new episode."""
    episode = old.notified_episode_ms
    if episode is None or new.last_active_ms <= episode:
        return new, None
    # the first of them to arrive decides (events are in arrival order): what came after
    # it belongs to the next episode, however it is dated
    back_ms = next(e.ts_ms for e in events if e.ts_ms > episode)
    app, user_id = user
    segment = value_segment(new, rules)
    churn = churn_type(old, winback.quick_churn_days)
    returned = [d for d in old.notified_days if back_ms >= episode + d * MS_PER_DAY]
    for days in (*old.notified_days, *old.expired_days):
        stats[Stat.INACTIVE, app, days] -= 1
    for days in old.notified_days:
        if days not in returned:
            stats[Stat.FALSE_ALARM, app, days, segment, churn] += 1
    back_within = {
        str(d): back_ms - (episode + d * MS_PER_DAY) <= BACK_WITHIN_DAYS * MS_PER_DAY
        for d in returned
    }
    for days in returned:
        stats[Stat.REACTIVATED, app, days, segment, churn] += 1
        if back_within[str(days)]:
            stats[Stat.BACK_WITHIN_7D, app, days, segment, churn] += 1
    cleared = replace(new, notified_episode_ms=None, notified_days=(), expired_days=())
    if not returned:
        return cleared, None
    message = {
        "notification_ids": [notification_id(app, user_id, d, episode) for d in returned],
        "app": app,
        "user_id": user_id,
        "threshold_days": returned,
        "last_active": iso_ms(episode),
        "returned_at": iso_ms(back_ms),
        "days_away": round((back_ms - episode) / MS_PER_DAY, 2),
        "back_within_7d": back_within,
        "value_segment": segment,
        "churn_type": churn,
    }
    return cleared, message
