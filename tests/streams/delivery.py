"""How the property tests deliver a stream (arrival order, random batches) and read the
counters back by their stored names: shared by the plan, win-back and at-risk properties."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping

from retention_tracker.state.schema import render_stat
from retention_tracker.streams.counters import Cell
from retention_tracker.streams.events import Event


def in_arrival_order(events: list[Event], delays: list[int]) -> list[Event]:
    """The events as they arrive, each ``delay`` ms after its time."""
    return [e for _, e in sorted(zip(delays, events, strict=True),
                                 key=lambda p: p[1].ts_ms + p[0])]


def random_batches(stream: list[Event], rng: random.Random, largest: int = 8
                   ) -> list[list[Event]]:
    """The stream cut into batches of 1 to ``largest`` events."""
    batches, i = [], 0
    while i < len(stream):
        size = rng.randint(1, largest)
        batches.append(stream[i : i + size])
        i += size
    return batches


def named(stats: Mapping[Cell, int]) -> Counter[str]:
    """Statistics by their stored names (state/schema.py), as the readers see them."""
    return Counter({render_stat(key): value for key, value in stats.items()})
