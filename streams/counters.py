"""The domain's names for what it counts: every aggregate counter and pipeline statistic.

The pure plan and the win-back rules change counters; the figures read them. They name a
counter by a *cell*: a tuple whose head is a member of ``Measure`` (or ``Stat``) and whose
tail is the counter's coordinates (day, granularity, cohort, offset, currency, app ...).

Why a vocabulary here and the stored spelling elsewhere: ``streams/`` is pure and comes
before the Redis layer in the layer order, so it cannot import ``state/schema.py``; and the
strings a deployment keeps in Redis (``"coh:day"``, ``"acc:app:type"``)
are a storage format, not domain knowledge. ``state/schema.py`` renders cells to those
strings when a plan is applied and parses stored names back to cells for the figures, so
each name is spelt once. Cells are plain tuples headed by an ``IntEnum`` member: hashing one
is ``int``'s C hash, so the plan's hot loop builds and adds them up more cheaply than the
formatted strings it used to (the plan's CPU is measured by ``bench/plan_cpu.py``).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Measure(IntEnum):
    """One aggregate counter family. Daily measures: cell ``(measure, day, ...)``;
    period measures exist per granularity: cell ``(measure, granularity, ...)``."""

    # ---- daily: one counter per day (the tail after the measure) --------------------------
    DAU = 1  # (day): users active that day
    WAU_EDGE = 2  # (day): +1/-1 edges of 7-day covered runs (plan._window_edges)
    MAU_EDGE = 3  # (day): the same for 30 days
    INSTALLS = 4  # (day): users with an install that day
    NEW_USERS = 5  # (day): users first seen that day
    PAYERS = 6  # (day): users with a purchase that day
    REVENUE = 7  # (day, currency): money units
    # ---- per period of a granularity (the tail after measure and granularity) -------------
    COHORT_SIZE = 10  # (cohort)
    CLASSIC = 11  # (cohort, offset): users of the cohort active in cohort + offset
    ACTIVE = 12  # (period): users active in the period
    LOST = 13  # (period): users active in the period before, not in this one
    LAST_ACTIVE = 14  # (cohort, offset): users of the cohort last active in cohort + offset
    COST = 15  # (cohort): install cost units
    LTV = 16  # (cohort, offset, currency): revenue units of the cohort in cohort + offset
    PERIOD_REVENUE = 17  # (period, currency): revenue units
    FIRST_PAYMENT = 18  # (cohort, offset): users of the cohort first paying in cohort + offset
    PERIOD_PAYERS = 19  # (period): users paying in the period
    REPEAT_PAYERS = 20  # (period): users with two purchases or more in the period
    REPEAT_BUYERS = 21  # (cohort, n): buyers of the cohort with at least n (1, 2) purchases
    # survey answers (streams/nps.py), per week, month and year: class 0 detractor,
    # 1 passive, 2 promoter; retained 1 when the user is active in the next period
    NPS = 22  # (period, class, retained, survey): users' latest answers in the period
    NPS_COHORT = 23  # (cohort, offset, class, survey): the same, by the users' cohort
    # RETURN_EVENTS (streams/returning.py): retention on a chosen returning event type
    RETURNED = 24  # (cohort, offset, type): users of the cohort sending type in cohort+offset
    LAST_RETURN = 25  # (cohort, offset, type): users whose last period with type is that one
    # 24-hour windows from each user's first event (METRICS.md §4), daily cohorts only
    WINDOW24 = 26  # (cohort, window): users of the cohort with an activity in window N
    LAST_WINDOW24 = 27  # (cohort, window): users of the cohort last active in window N
    # ---- per app, neither daily nor per granularity ---------------------------------------
    # risk of lapsing (streams/lapse_model.py, METRICS.md §9), kept for all users only
    LAPSE = 28  # (x, t_x days, first day): users with x repeat active days, t_x days apart


#: The measures kept one per day (the others are kept per granularity).
DAILY_MEASURES = frozenset(m for m in Measure if m < Measure.COHORT_SIZE)
#: The measures kept once per app (not per day nor per granularity).
APP_MEASURES = frozenset({Measure.LAPSE})


class Stat(IntEnum):
    """One pipeline statistic (partition-wide counters, summed over partitions)."""

    ACCEPTED = 1  # (app, event type)
    REJECTED = 2  # (reason): dead-lettered
    DUPLICATE = 3  # (app)
    FORWARDED = 4  # (app, cause): read away from the user's home partition
    ROUTE = 5  # (arrival day, cause or "home"): where a batch's events were read
    INACTIVE = 6  # (app, days): users in an inactivity episode, net of returns
    EXPIRED = 7  # (app, days): moments found too late to publish
    SENT = 8  # (app, days, value segment, churn type)
    FALSE_ALARM = 9  # (app, days, value segment, churn type)
    REACTIVATED = 10  # (app, days, value segment, churn type)
    BACK_WITHIN_7D = 11  # (app, days, value segment, churn type)
    # risk of lapsing (METRICS.md §9, streams/at_risk.py), per app
    AT_RISK_SENT = 12  # (app): users.at_risk messages
    AT_RISK_EXPIRED = 13  # (app): at-risk moments found too late to publish
    AT_RISK_RETURNED = 14  # (app): users back after their at-risk moment was sent
    AT_RISK_BACK_7D = 15  # (app): of those, back within 7 days of the moment
    AT_RISK_FALSE_ALARM = 16  # (app): an activity dated before a sent moment arrived late


#: A counter named by the domain: ``(Measure | Stat, *coordinates)``.
Cell = tuple[Any, ...]
