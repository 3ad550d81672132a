"""The benchmark's plumbing and its correctness gate, never its timings.

``retention bench --quick`` runs end to end on a real broker, Redis, worker and Faust
baseline, and two workers sharing the partitions (the horizontal run); the test asserts
that every deployment's figures matched the reference and that the JSON has every figure
BENCHMARKS.md is built from. Timings are not asserted: they depend
on the machine and on what else runs, and a flaky perf gate teaches people to ignore CI.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from retention_tracker.bench import (
    checks,
    contenders,
    horizontal,
    profile,
    reference,
    runner,
    workload,
)
from retention_tracker.bench.flink_job import flink_unavailable
from retention_tracker.streams import engine

pytestmark = pytest.mark.e2e

SHAPES = {"single", "batch50", "miskeyed"}
#: The Apache Flink job runs where Java 17 is found (CI: always; scripts/setup builds it).
FLINK = flink_unavailable() is None
CONTENDERS = {"raw", "faust", "worker"} | ({"flink"} if FLINK else set())
BASELINE_SHAPES = {"single", "batch50"}  # the Faust agent and the Flink job run on these only
RUN_KEYS = {"contender", "shape", "events", "window_events", "window_s", "events_per_s",
            "startup_s", "peak_rss_bytes"}
LATENCY_KEYS = {"p50_ms", "p99_ms", "max_ms", "events", "target_rate_events_per_s",
                "achieved_rate_events_per_s"}
MEMORY_KEYS = {"bytes_per_user_total", "bytes_per_user_records", "dedup_bytes_per_event",
               "dedup_bytes_per_user", "used_memory_drop_on_deleting_dedup_bytes", "families"}


@pytest.fixture(scope="module")
def bench_modules() -> dict[str, ModuleType]:
    return {"runner": runner, "workload": workload, "profile": profile, "checks": checks,
            "horizontal": horizontal}


def test_quick_bench_is_correct_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "retention_tracker.cli.bench", "--quick", "--no-progress",
         "--json-out", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=420,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    wide = [line for line in result.stdout.splitlines() if len(line) > runner.REPORT_WIDTH]
    assert wide == [] and "correctness: OK" in result.stdout  # the report fits a terminal
    doc: dict[str, Any] = orjson.loads(out.read_bytes())
    assert doc["correctness"]["ok"] is True
    assert doc["correctness"]["mismatches"] == []
    # 6 each: single, batch50, miskeyed, horizontal; 2 each for Flink on single and batch50
    assert len(doc["correctness"]["checks"]) == 24 + (4 if FLINK else 0)
    assert {"broker", "command", "machine", "code", "method", "workload", "produce", "throughput",
            "ratios", "horizontal", "latency", "latency_raw_consumer", "redis_memory",
            "worker_peak_rss_bytes", "engine"} <= doc.keys()
    events = doc["workload"]["events"]
    assert 15_000 <= events <= 25_000
    assert set(doc["throughput"]) == SHAPES
    for shape, runs in doc["throughput"].items():
        assert set(runs) == (CONTENDERS if shape in BASELINE_SHAPES else {"raw", "worker"})
        for run in runs.values():
            assert run.keys() >= RUN_KEYS
        assert runs["raw"]["events"] == runs["worker"]["events"] == events
        # what Redis spent the window on: the apply script is called, and costs something
        assert runs["worker"]["redis_commands"]["evalsha"]["calls_per_event"] > 0, shape
        # the ceiling has a window even when a quick topic fits in one fetch: never 0
        assert runs["raw"]["window_events"] > 0 and runs["raw"]["events_per_s"] > 0, shape
        assert doc["ratios"][shape]["worker_vs_raw"] > 0, shape
        if "flink" in runs:  # the whole topic, its figures among the checks above
            assert runs["flink"]["events"] == events and runs["flink"]["window_events"] > 0
            assert runs["flink"]["events_per_contender_cpu_s"] > 0
            assert doc["ratios"][shape]["worker_vs_flink_per_cpu_s"] > 0
        if "faust" in runs:
            assert runs["faust"]["events"] >= min(events,
                                                  runs["faust"]["measured_prefix_events"])
            # the Faust Table's changelog is compacted, as Faust's users run it on Kafka
            on_kafka = doc["broker"]["name"].startswith("Apache Kafka")
            assert runs["faust"]["changelog_cleanup_policy"] == (
                "compact" if on_kafka else None), doc["broker"]
    assert doc["forwarded_events"] == {"miskeyed": events}  # every one of them went home
    assert set(doc["ratios"]["miskeyed"]) == {"worker_vs_raw", "worker_vs_well_keyed"}
    assert doc["produce"]["batch50"]["events_per_message"] > 1
    assert set(doc["ratios"]["single"]) == {"worker_vs_raw", "worker_vs_faust"} | (
        {"worker_vs_flink", "worker_vs_flink_per_cpu_s"} if FLINK else set())
    assert ("per CPU-second, single: worker " in result.stdout) is FLINK
    assert doc["latency"].keys() >= LATENCY_KEYS
    for shape in SHAPES:
        assert doc["redis_memory"][shape].keys() >= MEMORY_KEYS
        assert doc["worker_peak_rss_bytes"][shape] > 0
    assert_horizontal(doc, events)
    assert "events/s" in result.stdout and "correctness: OK" in result.stdout
    assert "horizontal, 2 workers in one group" in result.stdout


def assert_horizontal(doc: dict[str, Any], events: int) -> None:
    """Two workers each owned partitions, none twice, all covered; every event is accounted
    for by exactly one of them (or applied before both had joined); their state equals the
    reference. Rates are reported, never judged."""
    horizontal = doc["horizontal"]
    assert horizontal["workers"] == 2
    assert horizontal["correctness_ok"] is True
    assert sum(check.startswith("worker-horizontal: ") for check in
               doc["correctness"]["checks"]) == 6
    workers = horizontal["per_worker"]
    assert set(workers) == {"worker-1", "worker-2"}
    owned = [set(run["partitions"]) for run in workers.values()]
    assert all(owned) and not owned[0] & owned[1]
    assert owned[0] | owned[1] == set(range(horizontal["partitions"]))
    assert horizontal["events"] == events
    assert sum(run["events"] for run in workers.values()) \
        + horizontal["events_applied_before_join"] == events
    assert 0 < horizontal["window_events"] <= events
    for run in workers.values():
        assert run.keys() >= RUN_KEYS
        assert 0 <= run["window_events"] <= run["events"]
        assert run["peak_rss_bytes"] > 0
    assert set(horizontal["core_share_in_window"]) == {"worker-1", "worker-2", "broker", "redis"}
    assert {"runqueue_wait_share_in_window", "machine_busy_cores_in_window",
            "other_processes_cores_in_window"} <= horizontal.keys()
    assert all(count >= 1 for count in horizontal["assignments_logged"].values())


def test_a_wrong_answer_fails_the_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bench_modules: dict[str, ModuleType]
) -> None:
    """Pretend the worker is wrong (the reference disagrees by one user in one cell): the
    bench must exit non-zero and say where, however fast the worker was."""
    original = reference.triangle

    def off_by_one(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        rows = original(*args, **kwargs)
        rows[0]["counts"][0] += 1
        return rows

    monkeypatch.setattr(reference, "triangle", off_by_one)
    runner = bench_modules["runner"]
    code, doc = runner.run(runner.Options(
        events=3_000, users=300, days=10, skip_baselines=True, skip_flink=True,
        latency_seconds=0.5,
        workdir=tmp_path / "work", progress=False, json_out=tmp_path / "bench.json",
    ))
    assert code == 1
    assert doc["correctness"]["ok"] is False
    assert "differ from the reference" in doc["error"]
    assert orjson.loads((tmp_path / "bench.json").read_bytes())["correctness"]["ok"] is False


def test_assignments_are_read_from_the_worker_log(
    tmp_path: Path, bench_modules: dict[str, ModuleType]
) -> None:
    """Ownership comes from the worker's own "assigned [...]" lines: aiokafka's lines about
    assigned partitions and other topics' partitions must not count, and every rebalance
    adds a line (so a line after the join means a rebalance)."""
    log = tmp_path / "worker.log"
    log.write_text(
        "[2026-01-01 00:00:00,000] [1] [INFO] Revoking previously assigned partitions set()\n"
        "[2026-01-01 00:00:01,000] [1] [INFO] Setting newly assigned partitions \n"
        "[2026-01-01 00:00:01,100] [1] [INFO] assigned ['b1-single/0', 'b1-single/1', "
        "'b1-single/2', 'b1-single/3'] \n"
        "[2026-01-01 00:00:04,100] [1] [INFO] assigned ['b1-single/1', 'b1-single/3', "
        "'b1-single-x/0'] \n"
        "[2026-01-01 00:00:09,100] [1] [INFO] assigned [] \n"
    )
    assignments = bench_modules["horizontal"].assignments
    assert assignments(log, "b1-single") == [frozenset({0, 1, 2, 3}), frozenset({1, 3}),
                                             frozenset()]
    assert assignments(tmp_path / "missing.log", "b1-single") == []


def test_a_skipped_horizontal_run_says_so(bench_modules: dict[str, ModuleType]) -> None:
    text = bench_modules["runner"].render({"horizontal": {"skipped": "--skip-horizontal"}})
    assert "horizontal: skipped (--skip-horizontal)" in text


def test_the_fallback_engine_is_never_the_workers_figure(
        bench_modules: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 29: the result records which engine the workers ran, and a run on the Python
    fallback says in its table that its figures are not the worker's."""
    monkeypatch.setenv("ENGINE", "python")
    found = contenders.worker_engine()
    assert (found["name"], found["worker_figure"]) == ("python", False)
    text = bench_modules["runner"].render({"engine": found})
    assert "NOT the worker's figures: the Python fallback ran" in text
    monkeypatch.setenv("ENGINE", "auto")
    auto = contenders.worker_engine()
    assert auto["worker_figure"] == engine.native_built()
    if engine.native_built():
        assert "NOT" not in bench_modules["runner"].render({"engine": auto})
    monkeypatch.setenv("ENGINE", "fast")
    with pytest.raises(contenders.BenchFailure, match="ENGINE='fast'"):
        contenders.worker_engine()


def test_workload_sizing_hits_the_asked_events_and_users(
    bench_modules: dict[str, ModuleType]
) -> None:
    workload = bench_modules["workload"]
    built = workload.build_workload(workload.WorkloadSpec(events=30_000, users=3_000, days=30))
    assert abs(len(built.events) - 30_000) < 3_000
    assert abs(built.distinct_users - 3_000) < 300
    users = [e["user_id"] for e in built.by_user]
    assert users == sorted(users)
    first = [e for e in built.events if e["user_id"] == users[0]]
    assert [e for e in built.by_user if e["user_id"] == users[0]] == first  # order kept
    assert date.fromtimestamp(built.config.start_ms / 1000).year == 2024  # fixed, reproducible


def test_profile_summary_ranks_self_and_inclusive_time(
    bench_modules: dict[str, ModuleType]
) -> None:
    collapsed = (
        "run (agents/ingest.py:120);process (agents/ingest.py:180);"
        "plan_batch (streams/plan.py:9) 6\n"
        "run (agents/ingest.py:120);process (agents/ingest.py:181);loads (x/events.py:3) 3\n"
        "run (agents/ingest.py:121) 1\n"
    )
    summary = bench_modules["profile"].summarise(collapsed)
    assert summary["samples"] == 10
    assert summary["self"][0] == {"function": "plan_batch (streams/plan.py)", "samples": 6,
                                  "share": 0.6}
    inclusive = {row["function"]: row["samples"] for row in summary["inclusive"]}
    assert "run (agents/ingest.py)" not in inclusive  # on every stack: the trunk
    assert inclusive["process (agents/ingest.py)"] == 9


def test_only_what_the_reference_computes_is_compared(
    bench_modules: dict[str, ModuleType]
) -> None:
    difference = bench_modules["checks"].difference
    want = {"dau": 3, "cohorts": [{"cohort": "2024-01-01", "counts": [3, 1]}]}
    assert difference({**want, "winback": {"2": 1}}, want) is None  # extra fields: not judged
    assert difference({"cohorts": want["cohorts"]}, want) == "dau: missing (expected 3)"
    wrong = {"dau": 3, "cohorts": [{"cohort": "2024-01-01", "counts": [3, 2]}]}
    assert difference(wrong, want) == "cohorts.[2024-01-01].counts.[1]: got 2, expected 1"
    assert difference({"dau": 3, "cohorts": []}, want) == "cohorts: 0 items, expected 1"
