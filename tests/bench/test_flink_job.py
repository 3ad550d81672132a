"""The Apache Flink contender: its figures read back and judged, and the real job on Kafka.

The job runs where Java 17 is found and ``scripts/setup`` built it (CI: always; a test that
would have to download Flink skips instead, with the reason). Its figures must equal the batch
reference on a workload produced in reverse order, where every returning user's cohort moves
to an earlier day again and again: the retractions of the job's deltas are exercised.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from retention_tracker.bench.checks import Reference
from retention_tracker.bench.contenders import Stack, run_async
from retention_tracker.bench.flink_job import (
    FlinkFigures,
    check_figures,
    flink_job,
    flink_unavailable,
    job_built,
)
from retention_tracker.bench.workload import WorkloadSpec, build_workload
from retention_tracker.cli.feeding import produce_events
from retention_tracker.devstack.topics import ensure_topics

DAY0 = 19_723  # 2024-01-01 in days since 1970-01-01, the bench's first day

EXAMPLE = "\n".join([
    f"dau\tdefault\t{DAY0}\t2", f"dau\tdefault\t{DAY0 + 1}\t2",
    f"retained\tdefault\t{DAY0}\t0\t2", f"retained\tdefault\t{DAY0}\t1\t1",
    f"retained\tdefault\t{DAY0 + 1}\t0\t1", f"dau\tother\t{DAY0}\t7",
])


def example_reference() -> Reference:
    """What EXAMPLE's app "default" shows: 2 users came on day 0, one of them back on day 1
    with one new user; the reference lists day 2 with DAU 0 (no one), the job omits zeros."""
    rows = [{"cohort": "2024-01-01", "size": 2, "counts": [2, 1]},
            {"cohort": "2024-01-02", "size": 1, "counts": [1, 0]}]
    return Reference(0, {("day", "classic"): rows}, {},
                     {date(2024, 1, 1): 2, date(2024, 1, 2): 2, date(2024, 1, 3): 0})


def test_the_output_is_read_per_app_with_days_as_dates() -> None:
    figures = FlinkFigures.parse(EXAMPLE + "\n")
    assert figures.dau[("default", date(2024, 1, 2))] == 2
    assert figures.dau[("other", date(2024, 1, 1))] == 7
    assert figures.retained[("default", date(2024, 1, 1), 1)] == 1
    with pytest.raises(ValueError, match="not a figure"):
        FlinkFigures.parse("wau\tdefault\t1\t2")


def test_equal_figures_pass_and_every_kind_of_difference_fails() -> None:
    expected = example_reference()
    assert check_figures("flink", FlinkFigures.parse(EXAMPLE), expected).ok
    wrong_cell = EXAMPLE.replace(f"\t{DAY0}\t1\t1", f"\t{DAY0}\t1\t2")
    extra_offset = EXAMPLE + f"\nretained\tdefault\t{DAY0 + 1}\t2\t1"
    extra_day = EXAMPLE + f"\ndau\tdefault\t{DAY0 + 5}\t1"
    missing_day = EXAMPLE.replace(f"dau\tdefault\t{DAY0 + 1}\t2\n", "")
    for text in (wrong_cell, extra_offset, extra_day, missing_day):
        verdict = check_figures("flink", FlinkFigures.parse(text), expected)
        assert not verdict.ok and verdict.mismatches, text


@pytest.mark.e2e
def test_the_flink_job_on_kafka_equals_the_reference_in_reverse_order(
        kafka_url: str, unique: str, tmp_path: Path) -> None:
    problem = flink_unavailable() or (None if job_built() else
                                      "the Flink job is not built (scripts/setup builds it)")
    if problem and not os.environ.get("CI"):
        pytest.skip(f"not set up here: {problem}")
    assert problem is None  # CI: scripts/setup must have built the job
    workload = build_workload(WorkloadSpec(4_000, 400, 20, seed=3))
    events = list(reversed(workload.events))
    duplicates = len(events) - len({e["event_id"] for e in events})
    assert duplicates > 0  # the dedup by event id is exercised too
    stack = Stack(kafka_url, "redis://unused", tmp_path, unique, progress=False, stall_s=60)
    topic = f"flink-{unique}"
    run_async(lambda: ensure_topics(stack.bootstrap, {topic: 4}))
    run_async(lambda: produce_events(stack.bootstrap, topic, events, progress=False))

    run, figures = flink_job(stack, topic, "reversed", len(events))

    verdict = check_figures("flink-reversed", figures, Reference.of(events))
    assert verdict.ok, verdict.mismatches
    assert run.events == len(events) and run.extra["duplicates"] == duplicates
    assert run.extra["rejected"] == 0
    assert 0 < run.window_events < len(events) and run.cpu_s["contender"] > 0
