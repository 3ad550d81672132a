"""The skewed workload's property: 1% of the users make half of the events, the whale's in
one day, on a campaign of its own; the uniform workload it is built on stays as it was."""

from __future__ import annotations

from collections import Counter

import pytest

from retention_tracker.bench.workload import (
    MS_PER_DAY,
    WHALE_CAMPAIGN,
    SkewSpec,
    WorkloadSpec,
    build_workload,
    skewed_workload,
)


@pytest.mark.parametrize(("events", "users", "whale"), [(20_000, 2_000, 5_000),
                                                        (6_000, 300, 100_000)])
def test_one_percent_of_users_make_half_of_the_events(events: int, users: int,
                                                      whale: int) -> None:
    base = build_workload(WorkloadSpec(events, users, 10))
    before = [dict(e) for e in base.events]
    skewed, facts = skewed_workload(base, SkewSpec(whale_events=whale))
    per_user = Counter(e["user_id"] for e in skewed.events)
    assert len(facts.heavy_users) == round(base.distinct_users * 0.01)
    assert set(per_user) == {e["user_id"] for e in base.events}  # no new users
    heavy = sum(per_user[u] for u in facts.heavy_users)
    assert abs(heavy - len(skewed.events) / 2) <= 1
    # the whale: its extra events (at most the asked count) in the 24 h from its first one
    extras = [e for e in skewed.events if e["user_id"] == facts.whale and "-x" in e["event_id"]]
    assert len(extras) == facts.whale_events_in_day == min(whale, len(extras))
    assert all(facts.whale_day_start_ms <= e["ts"] < facts.whale_day_start_ms + MS_PER_DAY
               for e in extras)
    assert {e["campaign"] for e in skewed.events if e["user_id"] == facts.whale} == {
        WHALE_CAMPAIGN}
    assert len({e["event_id"] for e in skewed.events}) == len(
        {e["event_id"] for e in base.events}) + len(skewed.events) - len(base.events)
    assert base.events == before  # the uniform workload is not changed under its user


def test_the_whale_gets_its_count_when_the_extra_events_allow() -> None:
    base = build_workload(WorkloadSpec(20_000, 2_000, 10))
    _, facts = skewed_workload(base, SkewSpec(whale_events=3_000))
    assert facts.whale_events_in_day == 3_000


def test_shares_outside_zero_and_one_are_refused() -> None:
    base = build_workload(WorkloadSpec(2_000, 200, 10))
    with pytest.raises(ValueError, match="heavy_user_share"):
        skewed_workload(base, SkewSpec(heavy_event_share=1.0))
