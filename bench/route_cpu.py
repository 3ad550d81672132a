"""What routing costs a well-keyed event: the CPU of reading a partition's records with the
router (every event at home, as from a producer keyed by user_id) against without it, on
the same records, in this process (no broker: the difference is the per-event routing).

    python -m retention_tracker.bench.route_cpu
"""

from __future__ import annotations

import statistics
import time

import orjson
from aiokafka import ConsumerRecord

from retention_tracker.agents.rekey import Router, home_partition, read_records

N, PARTS, USERS, BATCH = 200_000, 4, 20_000, 5000
NOW_MS = 1_767_225_600_000


def records() -> list[ConsumerRecord]:
    """Single-event messages of partition 0, each keyed by a user whose home it is."""
    found: list[ConsumerRecord] = []
    i = 0
    while len(found) < N:
        user = f"user-{i % USERS}"
        i += 1
        if home_partition(user, PARTS) != 0:
            continue
        event = {"event_id": f"e{i}", "app": "a", "type": "session", "user_id": user,
                 "ts": "2026-01-01T10:00:00Z"}
        found.append(ConsumerRecord("t", 0, len(found), NOW_MS, 0, user.encode(),
                                    orjson.dumps(event), None, 0, 0, []))
    return found


def read_all(recs: list[ConsumerRecord], router: Router | None) -> float:
    started = time.process_time()
    for k in range(0, N, BATCH):
        read_records(recs[k:k + BATCH], 0, router, NOW_MS, 1 << 20, 1000)
    return time.process_time() - started


def main() -> None:
    recs, router = records(), Router(PARTS)
    read_all(recs, router), read_all(recs, None)  # warm: the router's memo, the allocator
    on, off = [], []
    for _ in range(7):  # interleaved, medians
        on.append(read_all(recs, router))
        off.append(read_all(recs, None))
    with_us = statistics.median(on) / N * 1e6
    without_us = statistics.median(off) / N * 1e6
    print(f"read_records, {N:,} single-event records: with routing {with_us:.3f} us/event, "
          f"without {without_us:.3f} us/event; routing costs {with_us - without_us:.3f} us")


if __name__ == "__main__":
    main()
