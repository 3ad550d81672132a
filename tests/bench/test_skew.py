"""The skewed workload through real workers on a real broker and Redis: its figures, and the
whale's own, equal the batch reference; every partition is read to its end and the lag and
latency figures are there (their values are the benchmark's, never asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from retention_tracker.bench.skew import run
from retention_tracker.bench.workload import SkewSpec, WorkloadSpec

pytestmark = pytest.mark.e2e


def test_skewed_workload_through_a_worker_equals_the_reference(tmp_path: Path) -> None:
    results = run(WorkloadSpec(6_000, 600, 10), SkewSpec(whale_events=1_500), tmp_path,
                  progress=False, latency_seconds=1.0)
    assert results["correctness"]["mismatches"] == []
    assert results["correctness"]["ok"] is True
    assert any(check.startswith("whale summary") for check in results["correctness"]["checks"])
    assert results["heavy_event_share"] == pytest.approx(0.5, abs=0.001)
    assert results["whale_events_in_day"] == 1_500
    for name in ("uniform", "skewed"):
        partitions = results[name]["partitions"]
        assert len(partitions) == 4
        assert all(p["caught_up_at_s"] is not None for p in partitions.values()), name
        # a replay too quick for a steady window still has figures (from the spawn)
        assert results[name]["events_per_s"] > 0, name
        assert results[name]["worker_cpu_us_per_event"] is not None, name
    assert results["latency"]["events"] > 0 and results["latency"]["whale_share_of_events"] > 0
