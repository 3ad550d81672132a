"""Satisfaction (streams/nps.py): score classes, the latest answer per period whatever the
arrival order, and what a user's answers contribute (the plan's deltas of them are checked
against the reference in test_plan_properties)."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date

import pytest

from retention_tracker.streams.calendar import AppCalendar, date_to_day
from retention_tracker.streams.counters import Cell, Measure
from retention_tracker.streams.events import Event
from retention_tracker.streams.nps import (
    DETRACTOR,
    PASSIVE,
    PROMOTER,
    add_answers,
    add_nps_contributions,
    latest_per_period,
    nps_figures,
    score_class,
)
from retention_tracker.streams.plan import plan_batch
from retention_tracker.streams.user_state import UserState

# every plan here runs on each engine (tests/streams/conftest.py)
pytestmark = pytest.mark.usefixtures("engine")

UTC = AppCalendar("UTC")
UTC_APPS = {app: UTC for app in ("a", "b", "default")}  # every app of the tests, in UTC
MONDAY_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000
MONDAY = date_to_day(date(2024, 1, 1))


def answer(event_id: str, ts_ms: int, score: int, survey: str = "nps", user: str = "u") -> Event:
    return Event("a", event_id, "survey", user, ts_ms, score=score, survey=survey)


def test_score_classes_and_the_nps_formula() -> None:
    assert [score_class(s) for s in range(11)] == [DETRACTOR] * 7 + [PASSIVE] * 2 + [PROMOTER] * 2
    assert nps_figures({PROMOTER: 5, PASSIVE: 3, DETRACTOR: 2}) == {
        "answers": 10, "promoters": 5, "passives": 3, "detractors": 2, "nps": 30.0}
    assert nps_figures({})["nps"] is None  # no answers: no NPS
    assert nps_figures({DETRACTOR: 3})["nps"] == -100.0


def test_the_latest_answer_wins_in_any_order_equal_times_by_the_larger_id() -> None:
    events = [answer("b", MONDAY_MS + 5, 3), answer("a", MONDAY_MS + 5, 10),
              answer("c", MONDAY_MS + 1, 9), answer("z", MONDAY_MS + 2 * DAY_MS, 7),
              answer("q", MONDAY_MS + 9, 0, survey="csat")]
    kept = {add_answers((), order, UTC) for order in itertools.permutations(events)}
    assert len(kept) == 1  # every arrival order keeps the same answers
    # one at a time, in batches: the same again
    one_by_one: tuple = ()
    for event in reversed(events):
        one_by_one = add_answers(one_by_one, [event], UTC)
    assert {one_by_one} == kept
    [answers] = kept
    # per (survey, day): "b" beats "a" at equal times; "z" is another day
    assert [(a[0], a[1], a[3], a[4]) for a in answers] == [
        ("csat", MONDAY, "q", 0), ("nps", MONDAY, "b", 3), ("nps", MONDAY + 2, "z", 7)]
    assert latest_per_period(answers, "week") == {("nps", 2818): 7, ("csat", 2818): 0}
    assert latest_per_period(answers, "year") == {("nps", 2024): 7, ("csat", 2024): 0}


def test_answers_count_by_period_cohort_and_activity_in_the_next_period() -> None:
    week = 2818  # ISO week 2024-W01
    state = UserState(MONDAY_MS, MONDAY_MS + 7 * DAY_MS, MONDAY,
                      frozenset({MONDAY, MONDAY + 7}), frozenset(),
                      answers=(("nps", MONDAY + 1, MONDAY_MS + DAY_MS, "s1", 9),
                               ("nps", MONDAY + 7, MONDAY_MS + 7 * DAY_MS, "s2", 4)))
    contrib: Counter[Cell] = Counter()
    add_nps_contributions(contrib, state, None)
    weekly = {cell[2:]: n for cell, n in contrib.items() if cell[1] == "week"}
    assert weekly == {
        (week, PROMOTER, 1, "nps"): 1,  # answered in W01, active in W02: retained
        (week + 1, DETRACTOR, 0, "nps"): 1,  # W02, not active in W03: churned so far
        (week, 0, PROMOTER, "nps"): 1,  # cohort W01, offset 0
        (week, 1, DETRACTOR, "nps"): 1,  # cohort W01, offset 1
    }
    scoped: Counter[Cell] = Counter()
    add_nps_contributions(scoped, state, frozenset({MONDAY + 8}))  # a change in W02
    assert {c[2] for c in scoped if c[1] == "week"} == {week, week + 1}


def test_a_user_known_only_by_answers_counts_in_periods_not_cohorts() -> None:
    """METRICS.md §1: an answer creates no cohort; the user's later activity gives it one,
    and the answer moves with it (the plan's contributions(new) - contributions(old))."""
    survey = answer("s1", MONDAY_MS + 3600_000, 10)
    plan = plan_batch([(0, -1, survey)], {("a", "u"): None}, set(), None, 400,
                      UTC_APPS)
    only = plan.users["a", "u"]
    assert not only.seen and plan.due == {}  # no activity: no inactivity moment either
    cells = plan.deltas["a"][("all", "value=free")]
    assert {c[0] for c in cells} == {Measure.NPS}
    assert cells[Measure.NPS, "week", 2818, PROMOTER, 0, "nps"] == 1
    session = Event("a", "e1", "session", "u", MONDAY_MS + 8 * DAY_MS)  # W02: retained now
    later = plan_batch([(1, -1, session)], {("a", "u"): only}, set(), plan.watermark_ms, 400,
                       UTC_APPS)
    state = later.users["a", "u"]
    assert state.seen and state.answers == only.answers
    assert state.first_day == MONDAY + 8
    assert later.due == {("a", "u"): session.ts_ms + 2 * DAY_MS}  # its moment at 2 days
    moved = later.deltas["a"][("all", "value=free")]
    assert moved[Measure.NPS, "week", 2818, PROMOTER, 0, "nps"] == -1
    assert moved[Measure.NPS, "week", 2818, PROMOTER, 1, "nps"] == 1
    assert moved[Measure.NPS_COHORT, "week", 2819, -1, PROMOTER, "nps"] == 1  # answered before
    assert moved[Measure.COHORT_SIZE, "week", 2819] == 1
