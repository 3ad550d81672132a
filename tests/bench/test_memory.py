"""The memory harness's copies: each delivered after its event and within the dedup
window (a copy later than the window would be counted again, by the contract), so its
figures can equal the batch reference's."""

from __future__ import annotations

from collections import Counter

from retention_tracker.bench.memory import with_copies
from retention_tracker.bench.workload import WorkloadSpec, build_workload

HOUR_MS = 3_600_000


def test_each_copy_comes_after_its_event_and_within_the_given_time() -> None:
    events = build_workload(WorkloadSpec(3_000, 300, 10)).events
    out = with_copies(events, 0.1, 24 * HOUR_MS)
    delivered = Counter(map(id, out))  # a copy is the same event object delivered again
    assert sorted(delivered.values()) == [1] * (len(events) - 301) + [2] * 301
    first: dict[int, tuple[int, int]] = {}  # event -> its position and arrival
    arrival, spread = 0, []
    for position, event in enumerate(out):
        arrival = max(arrival, event["ts"])  # the latest event time delivered so far
        if id(event) in first:
            where, arrived = first[id(event)]
            assert arrival <= arrived + 24 * HOUR_MS  # within a day of the event's arrival
            spread.append(position - where)
        else:
            first[id(event)] = position, arrival
    assert min(spread) > 0 and max(spread) > 50  # mostly in a later batch
