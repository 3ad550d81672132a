"""Retry timing as a plain value, so the ingest loop's waiting can be read and tested alone."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.1
    maximum_s: float = 5.0
    factor: float = 2.0
    jitter: float = 0.1  # share of each delay randomised, so restarted workers do not stampede

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Endless delays: initial, initial*factor, ... capped at maximum."""
        rng = rng or random.Random()
        delay = self.initial_s
        while True:
            yield delay * (1 + self.jitter * (2 * rng.random() - 1))
            delay = min(delay * self.factor, self.maximum_s)
