"""Retry delays (streams/backoff.py): geometric, capped, jittered within the share."""

from __future__ import annotations

import random
from itertools import islice

from retention_tracker.streams.backoff import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    delays = list(islice(Backoff(0.1, 1.0, 2.0, jitter=0).delays(), 6))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_stays_within_its_share() -> None:
    rng = random.Random(7)
    delays = list(islice(Backoff(1.0, 1.0, 2.0, jitter=0.1).delays(rng), 200))
    assert all(0.9 <= d <= 1.1 for d in delays)
    assert len(set(delays)) > 100  # randomised, so restarted workers do not stampede
