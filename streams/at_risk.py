"""At-risk moments and messages (METRICS.md §9), pure: when a user's P(alive) falls below
AT_RISK_THRESHOLD if it stays away, the ``users.at_risk`` message of that moment (fresh or
expired, like §7), and the user's return after it.

An episode is the user's ``last_active_ms``, as in §7: one message per (user, episode), with
a ``notification_id`` derived from it, however often a crash makes the worker send it again.

The moment depends on the app's fitted parameters, which a refit changes. The rule: a user's
moment is computed under the fit the worker holds when the user is touched, that is when a
batch gives it a new active day or a new last activity (``schedule``), and again when its due
entry comes up (``plan_at_risk``): a moment that the current fit puts later than now is
rescheduled without a message; one at or before now is handled at once, fresh or expired
against the moment the current fit gives. So a refit never sends a second message for an
episode (the record keeps the episode handled), and one that brings moments forward shows
them when their entries come up. Moments are looked for after each batch and every tick,
not between the events of one batch (a gap that opens and closes inside a batch is no
at-risk episode).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from msgspec.structs import replace

from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar, period_label
from retention_tracker.streams.counters import Cell, Stat
from retention_tracker.streams.lapse_model import DAYS_PER_WEEK, LapseParams, Model, at_risk_day
from retention_tracker.streams.lapse_model import p_alive as p_alive_of
from retention_tracker.streams.segments import SegmentRules, value_segment
from retention_tracker.streams.user_state import UserKey, UserState
from retention_tracker.streams.winback import BACK_WITHIN_DAYS, churn_type, iso_ms

AppFit = tuple[Model, LapseParams]

#: The app's users.at_risk counters by the names the CLI, HTTP and gauges give them.
MESSAGE_COUNTS = {Stat.AT_RISK_SENT: "sent", Stat.AT_RISK_EXPIRED: "expired",
                  Stat.AT_RISK_RETURNED: "returned", Stat.AT_RISK_BACK_7D: "back_within_7d",
                  Stat.AT_RISK_FALSE_ALARM: "false_alarms"}


@dataclass(frozen=True, slots=True)
class AtRiskRules:
    """The threshold, how far behind now a moment may be and its message still go out
    (WINBACK_MAX_DELAY), the quick-churn bar, and each app's fit (apps without one have no
    at-risk moments)."""

    threshold: float = 0.5
    max_delay_ms: int = MS_PER_DAY
    quick_churn_days: int = 7
    fits: Mapping[str, AppFit] = field(default_factory=dict)


def handled(state: UserState) -> bool:
    """Was the at-risk moment of the user's current episode sent or expired already?"""
    return state.at_risk_episode_ms is not None and \
        state.at_risk_episode_ms == state.last_active_ms


def moment_ms(state: UserState, fit: AppFit | None, threshold: float, calendar: AppCalendar
              ) -> int | None:
    """When the user is at risk if it stays away: the start of the first local day whose
    P(alive) is below the threshold, never before its last activity; None without a fit,
    without activity, or when the model never lets it lapse."""
    if fit is None or not state.seen:
        return None
    x, t_x_days = len(state.active_days) - 1, state.last_day - state.first_day
    day = at_risk_day(fit[0], fit[1], x, t_x_days, state.first_day, threshold)
    if day is None:
        return None
    return max(calendar.day_start_ms(day), state.last_active_ms)


def schedule(users: Mapping[UserKey, UserState], before: Mapping[UserKey, UserState | None],
             rules: AtRiskRules, calendars: Mapping[str, AppCalendar]
             ) -> dict[UserKey, int | None]:
    """The due entries a batch moves: per changed user of an app with a fit, with a new
    active day or a new last activity, its moment under the fit (None: drop its entry, if
    it can have one). Apps without a fit move none (an entry left from an earlier fit is
    dropped when it comes up)."""
    out: dict[UserKey, int | None] = {}
    for user, new in users.items():
        old = before.get(user)
        fit = rules.fits.get(user[0])
        if fit is None or (old is not None and old.seen
                           and old.last_active_ms == new.last_active_ms
                           and len(old.active_days) == len(new.active_days)):
            continue  # no model, or the same days and last activity: the same moment
        moment = None if handled(new) else moment_ms(new, fit, rules.threshold,
                                                     calendars[user[0]])
        if moment is not None or (old is not None and old.seen):
            out[user] = moment
    return out


def count_returns(users: dict[UserKey, UserState], before: Mapping[UserKey, UserState | None],
                  stats: Counter[Cell], calendars: Mapping[str, AppCalendar]) -> None:
    """Users active again after their handled episode: for a sent moment, a return when the
    first day back is the moment's day or later (back within 7 days of it, or not), else a
    false alarm (an activity dated before the moment arrived late); the mark is cleared in
    ``users``, so the next lapse is a new episode. By day: the states hold days."""
    for user, new in users.items():
        old = before.get(user)
        episode = old.at_risk_episode_ms if old is not None else None
        if old is None or episode is None or new.last_active_ms <= episode:
            continue
        if old.at_risk_sent:
            calendar = calendars[user[0]]
            later = [day for day in new.active_days if day > old.last_day]
            back_day = min(later) if later else old.last_day
            moment_day = calendar.day_of(old.at_risk_moment_ms)
            if back_day >= moment_day:
                stats[Stat.AT_RISK_RETURNED, user[0]] += 1
                if back_day - moment_day <= BACK_WITHIN_DAYS:
                    stats[Stat.AT_RISK_BACK_7D, user[0]] += 1
            else:
                stats[Stat.AT_RISK_FALSE_ALARM, user[0]] += 1
        users[user] = replace(new, at_risk_episode_ms=None, at_risk_moment_ms=0,
                              at_risk_sent=False)


def notification_id(app: str, user_id: str, episode_ms: int) -> str:
    raw = f"{app}\x00{user_id}\x00at_risk\x00{episode_ms}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def payload(user: UserKey, state: UserState, moment: int, fit: AppFit, rules: AtRiskRules,
            calendar: AppCalendar, segments: SegmentRules) -> dict[str, Any]:
    """The users.at_risk message: the user's summary on the moment's day, its P(alive) and
    expected active days in the next 30 then, and the §7 labels."""
    from retention_tracker.streams.lapse_fit import expected_days  # scipy: only to send

    app, user_id = user
    model, params = fit
    x, t_x_days = len(state.active_days) - 1, state.last_day - state.first_day
    t_x = t_x_days / DAYS_PER_WEEK
    big_t = max(calendar.day_of(moment) - state.first_day, t_x_days) / DAYS_PER_WEEK
    return {
        "notification_id": notification_id(app, user_id, state.last_active_ms),
        "app": app,
        "user_id": user_id,
        "model": model,
        "threshold": rules.threshold,
        "p_alive": round(p_alive_of(model, params, x, t_x, big_t), 6),
        "expected_days_30": round(expected_days(model, params, x, t_x, big_t), 6),
        "x": x,
        "t_x": round(t_x, 4),
        "T": round(big_t, 4),
        "last_active": iso_ms(state.last_active_ms),
        "at_risk_since": iso_ms(moment),
        "first_seen": iso_ms(state.first_seen_ms),
        "cohort": period_label(state.first_day, "day"),
        "value_segment": value_segment(state, segments),
        "churn_type": churn_type(state, rules.quick_churn_days),
    }


@dataclass(slots=True)
class AtRiskPlan:
    """What one pass over the due at-risk entries sends and records: messages, marked
    users, entries to drop (``done``) and to move later (``later``), counters."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    users: dict[UserKey, UserState] = field(default_factory=dict)
    done: list[UserKey] = field(default_factory=list)
    later: dict[UserKey, int] = field(default_factory=dict)
    stats: Counter[Cell] = field(default_factory=Counter)


def plan_at_risk(due: Iterable[tuple[UserKey, int]], states: Mapping[UserKey, UserState | None],
                 now_ms: int, rules: AtRiskRules, calendars: Mapping[str, AppCalendar],
                 segments: SegmentRules) -> AtRiskPlan:
    """Handle the entries that came up (``due``: (user, due_ms)), each recomputed under the
    current fit (the module's rule)."""
    plan = AtRiskPlan()
    for user, _due_ms in sorted(due, key=lambda entry: (entry[1], entry[0])):
        state = states.get(user)
        app = user[0]
        fit = rules.fits.get(app)
        calendar = calendars[app]
        moment = None if state is None or handled(state) else moment_ms(
            state, fit, rules.threshold, calendar)
        if state is None or fit is None or moment is None:
            plan.done.append(user)
            continue
        if moment > now_ms:
            plan.later[user] = moment
            continue
        plan.done.append(user)
        fresh = now_ms - moment <= rules.max_delay_ms
        if fresh:
            plan.messages.append(payload(user, state, moment, fit, rules, calendar,
                                         segments.for_app(app)))
            plan.stats[Stat.AT_RISK_SENT, app] += 1
        else:
            plan.stats[Stat.AT_RISK_EXPIRED, app] += 1
        plan.users[user] = replace(state, at_risk_episode_ms=state.last_active_ms,
                                   at_risk_moment_ms=moment, at_risk_sent=fresh)
    return plan
