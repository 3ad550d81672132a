"""A dedup generation's bucket count: sized from the previous generation's ids, the legacy
count wherever ids from before counts were recorded may lie (``state/dedup.py``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from retention_tracker.state.dedup import (
    FIRST_BUCKETS,
    IDS_PER_BUCKET,
    LEGACY_BUCKETS,
    MAX_BUCKETS,
    DedupLayout,
    Recorded,
    bucket_of,
    generation_layout,
    sized,
)


@given(st.integers(min_value=0, max_value=10**9))
def test_sized_is_the_least_power_of_two_holding_the_ids_at_the_target(ids: int) -> None:
    buckets = sized(ids)
    assert 1 <= buckets <= MAX_BUCKETS and buckets & (buckets - 1) == 0
    if buckets < MAX_BUCKETS:
        assert buckets * IDS_PER_BUCKET >= ids  # at most the target a bucket on average
    if buckets > 1:
        assert buckets // 2 * IDS_PER_BUCKET < ids  # and no more buckets than that needs


def test_sized_examples() -> None:
    assert [sized(n) for n in (0, 1, 24, 25, 3_500, 200_000)] == [1, 1, 1, 2, 256, 16384]
    assert sized(10**12) == MAX_BUCKETS


@given(st.binary(min_size=12, max_size=12), st.integers(min_value=1, max_value=MAX_BUCKETS))
def test_an_id_has_one_bucket_among_any_count(key: bytes, buckets: int) -> None:
    assert 0 <= bucket_of(key, buckets) < buckets


def test_a_recorded_generation_is_read_and_written_with_its_count_whatever_the_setting() -> None:
    for forced in (None, 8):
        got = generation_layout(9, Recorded(32, 16, 900), forced, fresh=False)
        assert got == DedupLayout(9, 32, 16)


def test_a_new_generation_is_sized_from_the_previous_one() -> None:
    assert generation_layout(9, Recorded(None, 16, 3_500), None, fresh=False) == DedupLayout(
        9, 256, 16, record=True)
    assert generation_layout(9, Recorded(None, 16, 0), None, fresh=False) == DedupLayout(
        9, 1, 16, record=True)


def test_a_fresh_partition_starts_small() -> None:
    assert generation_layout(9, Recorded(None, None), None, fresh=True) == DedupLayout(
        9, FIRST_BUCKETS, LEGACY_BUCKETS, record=True)


def test_state_from_before_keeps_the_legacy_count_for_two_generations() -> None:
    """Upgraded mid-generation: ids of before lie in this generation's legacy buckets, and
    its count of ids misses them, so the next one is not sized from it either."""
    upgraded = generation_layout(9, Recorded(None, None), None, fresh=False)
    assert upgraded == DedupLayout(9, LEGACY_BUCKETS, LEGACY_BUCKETS, record=True,
                                   uncounted=True)
    second = generation_layout(10, Recorded(None, LEGACY_BUCKETS, 50, previous_uncounted=True),
                               None, fresh=False)
    assert second == DedupLayout(10, LEGACY_BUCKETS, LEGACY_BUCKETS, record=True)
    after = generation_layout(11, Recorded(None, LEGACY_BUCKETS, 50), None, fresh=False)
    assert after.current == sized(50)


def test_a_number_forces_every_new_generation_and_is_the_legacy_count() -> None:
    assert generation_layout(9, Recorded(None, 16, 3_500), 8, fresh=False) == DedupLayout(
        9, 8, 16, record=True)
    assert generation_layout(9, Recorded(None, None), 8, fresh=False) == DedupLayout(
        9, 8, 8, record=True, uncounted=True)
