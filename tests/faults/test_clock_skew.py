"""Device clocks are wrong: hours ahead (under the 24 h tolerance) or behind they are just
event times, and the figures stay exact; more than 24 h ahead is dead-lettered."""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from retention_tracker.streams.calendar import utc_now_ms
from tests.e2e.harness import Deployment

from .support import (
    FAST_GROUP,
    FaultReport,
    LagMonitor,
    assert_figures_exact,
    produce_recorded,
    read_dead_letters,
    source_of,
    workload,
)

pytestmark = pytest.mark.e2e
HOUR_MS = 3_600_000


def test_device_clocks_hours_ahead_or_behind(deployment: Deployment) -> None:
    """Scenario 8: 40 % of the users have a device clock off by -12 h .. +23 h (all of a
    user's events shifted alike), so late-evening events move to the next day and the
    watermark runs up to 23 h ahead of the wall clock: still exact. Events 25 h to 3 days
    ahead (alone, or inside an array next to a good event) go to the DLQ as
    ``future_timestamp``."""
    d = deployment
    rng = random.Random(81)
    raw = workload(days=10, seed=81)
    buyers = {e["user_id"] for e in raw if e["event_id"].startswith("buyer-")}
    skew = {user: rng.randrange(-12 * HOUR_MS, 23 * HOUR_MS)
            for user in sorted({e["user_id"] for e in raw} - buyers) if rng.random() < 0.4}
    # a skewed user may start a cohort of its own (e.g. tomorrow): give it a buyer, see
    # support.workload on why every cohort needs one
    first = {}
    for e in raw:
        if e["user_id"] in skew and e["user_id"] not in first:
            first[e["user_id"]] = {"event_id": f"skew-buy-{e['user_id']}", "type": "purchase",
                                   "user_id": e["user_id"], "app": "default",
                                   "ts": e["ts"] + 1, "amount": 1.99, "currency": "USD"}
    shifted = [*raw, *first.values()]
    skewed = [{**e, "ts": e["ts"] + skew.get(e["user_id"], 0)} for e in shifted]
    now = utc_now_ms()
    ahead = [{"event_id": f"ahead-{h}", "type": "session", "user_id": f"clock-{h}",
              "ts": now + h * HOUR_MS} for h in (25, 30, 72)]
    fine = {"event_id": "almost", "type": "session", "user_id": "clock-a", "ts": now + 20 * HOUR_MS}
    messages: list[tuple[bytes, bytes]] = [(e["user_id"].encode(), orjson.dumps(e))
                                           for e in skewed]
    messages += [(e["user_id"].encode(), orjson.dumps(e)) for e in ahead]
    messages.append((b"clock-a", orjson.dumps([fine, {**fine, "event_id": "too-far",
                                                      "ts": now + 26 * HOUR_MS}])))
    metas = produce_recorded(d.bootstrap, d.topic, messages)
    produced = len(metas)
    expected = {(source_of(d.topic, m), -1) for m in metas[len(skewed):len(skewed) + 3]}
    expected.add((source_of(d.topic, metas[-1]), 1))
    with LagMonitor(d, produced=produced) as monitor, contextlib.ExitStack() as stack:
        worker, _ = d.start_worker(**FAST_GROUP)
        stack.enter_context(worker)
        started = time.monotonic()
        d.wait_applied(produced, worker=worker)
        applied_in = round(time.monotonic() - started, 2)
        letters = read_dead_letters(d.bootstrap, d.dlq, expected)
    assert {(x.source, x.index) for x in letters} == expected
    assert {x.reason for x in letters} == {"future_timestamp"}
    accepted: list[dict[str, Any]] = [*skewed, fine]
    assert max(e["ts"] for e in accepted) > now  # the watermark really runs ahead
    report = FaultReport("8 device clocks -12 h .. +23 h, and > 24 h ahead", produced, accepted,
                         recovery_s=applied_in, max_lag=monitor.max_lag,
                         extra={"users_skewed": len(skew)})
    assert_figures_exact(d, accepted)
    report.finish(d, expected_rejects=Counter(future_timestamp=len(expected)))
