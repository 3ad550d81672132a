"""The worker's collector settings (agents/worker.py ``tune_gc``): the thresholds it sets
and the start-up objects it freezes, so the young collections walk only what a batch built."""

from __future__ import annotations

import gc

from retention_tracker.agents.worker import GC_THRESHOLDS, tune_gc


def test_tune_gc_sets_the_worker_thresholds_and_freezes_what_exists() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]  # fewer young collections, not more
        assert gc.get_freeze_count() > 0
        cycle: list[object] = []
        cycle.append(cycle)  # a cycle made after start-up is still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
