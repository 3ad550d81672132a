"""The worker's pure CPU path alone: parse -> decode -> plan -> encode, no broker, no Redis.

What `retention bench` cannot separate: how much of the worker's time is the pure Python of
a batch. The bench's workload is cut into per-partition batches the way the worker sees
them; user records go through the real codec between batches, as they would through Redis
(the state cache aside). CPU time of this process, so a busy machine disturbs it less than
wall-clock rates. Used to measure each change to plan.py and user_state.py:

    python -m retention_tracker.bench.plan_cpu --events 200000 --batch 500
    python -m retention_tracker.bench.plan_cpu --events 200000 --batch 500 --by-user  # batch50
    python -m retention_tracker.bench.plan_cpu --events 100000 --profile  # + cProfile top 25
    python -m retention_tracker.bench.plan_cpu --events 200000 --default-gc  # CPython's gc
    python -m retention_tracker.bench.plan_cpu --events 200000 --return-events ''  # none
    python -m retention_tracker.bench.plan_cpu --events 200000 --engine python  # fallback
    python -m retention_tracker.bench.plan_cpu --events 200000 --engines 5  # A/B, 5 rounds
    python -m retention_tracker.bench.plan_cpu --events 378000 --users 60000 --codec 5

``--engines N`` replays the same batches N times with each engine in turn (python, native,
python, ...; a shared machine's load falls on both alike) and prints the medians.
``--codec N`` times the user record codec alone the same way, on the records the replay
left (every user's final state), after checking both engines write the same bytes.

It plans with the default settings' rules (RETURN_EVENTS=purchase) unless told otherwise.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
import zlib
from collections import Counter
from typing import Any

import orjson

from retention_tracker.agents.worker import tune_gc
from retention_tracker.config.settings import ConfigError, Settings, segment_rules
from retention_tracker.state.schema import render_stat
from retention_tracker.streams import engine
from retention_tracker.streams.calendar import AppCalendar
from retention_tracker.streams.events import parse_message
from retention_tracker.streams.plan import dedup_key_of, plan_batch
from retention_tracker.streams.segments import SegmentRules
from retention_tracker.streams.user_state import UserKey

from .workload import WorkloadSpec, build_workload

PARTITIONS = 4
NOW_MS = 1_800_000_000_000  # after the workload: no event is from the future


def messages_per_partition(events: list[dict[str, Any]], by_user: bool, per_message: int
                           ) -> list[list[bytes]]:
    """Single-event messages in delivery order, or arrays of one user's events."""
    parts: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    if not by_user:
        for event in events:
            parts[zlib.crc32(event["user_id"].encode()) % PARTITIONS].append(orjson.dumps(event))
        return parts
    run: list[dict[str, Any]] = []
    for event in [*events, None]:
        if run and (event is None or event["user_id"] != run[0]["user_id"]
                    or len(run) == per_message):
            parts[zlib.crc32(run[0]["user_id"].encode()) % PARTITIONS].append(orjson.dumps(run))
            run = []
        if event is not None:
            run.append(event)
    return parts


def replay(parts: list[list[bytes]], batch: int, stats: Counter[str] | None = None,
           event_clock: bool = False, rules: SegmentRules | None = None,
           records_out: list[bytes] | None = None) -> Counter[str]:
    """CPU seconds per phase over every partition's batches; ``stats``, when given, gets
    the plans' counts (accepted, duplicates, rejects), so a caller can see the harness
    planned every event (not timed). ``event_clock``: plan as a replaying worker does
    (CLOCK=event, as ``retention bench`` runs it); no notification pass runs between
    batches here, so every return after a gap takes the moment path (an upper bound).
    ``rules``: the value bars and RETURN_EVENTS (default: the default settings').
    ``records_out``, when given, gets every user's last record."""
    calendar = AppCalendar("UTC")
    rules = rules or segment_rules(Settings())
    seconds: Counter[str] = Counter()
    for messages in parts:
        records: dict[UserKey, bytes] = {}
        seen: set[bytes] = set()
        watermark = None
        for start in range(0, len(messages), batch):
            t0 = time.process_time()
            items = []
            for offset, message in enumerate(messages[start:start + batch], start):
                parsed = parse_message(message, NOW_MS, 1 << 20, 1000)
                items.extend((offset, index, event) for index, event in parsed.events)
            t1 = time.process_time()
            users = {(event.app, event.user_id) for _, _, event in items}
            decode_user = engine.codec().decode_user
            states = {u: decode_user(records[u]) if u in records else None for u in users}
            keys = [dedup_key_of(event) for _, _, event in items]
            t2 = time.process_time()
            plan = plan_batch(items, states, seen.intersection(keys), watermark, 400,
                              {app: calendar for app, _ in users}, rules, dedup_keys=keys,
                              event_clock=event_clock)
            t3 = time.process_time()
            encode_user = engine.codec().encode_user
            for user, state in plan.users.items():
                records[user] = encode_user(state)
            seen.update(plan.new_dedup_keys)
            watermark = plan.watermark_ms
            t4 = time.process_time()
            if stats is not None:
                stats.update({render_stat(key): n for key, n in plan.stats.items()})
            seconds.update({"parse": t1 - t0, "decode": t2 - t1, "plan": t3 - t2,
                            "encode": t4 - t3})
        if records_out is not None:
            records_out.extend(records.values())
    return seconds


def compare_engines(parts: list[list[bytes]], batch: int, rounds: int, event_clock: bool,
                    rules: SegmentRules, events: int) -> None:
    """Python and native in turn on the same batches, ``rounds`` times each: the medians
    of the plan phase and of the codec's phases (load: the records decoded, with the dedup
    keys; encode), in µs per event, and of the whole path (events per CPU-second)."""
    if not engine.native_built():
        raise SystemExit(f"plan_cpu: no native engine to compare: {engine.why_not_built()}")
    plan_us: dict[str, list[float]] = {engine.PYTHON: [], engine.NATIVE: []}
    codec_us: dict[str, list[float]] = {engine.PYTHON: [], engine.NATIVE: []}
    per_cpu_s: dict[str, list[float]] = {engine.PYTHON: [], engine.NATIVE: []}
    for _ in range(rounds):
        for name in (engine.PYTHON, engine.NATIVE):
            engine.select(name)
            seconds = replay(parts, batch, event_clock=event_clock, rules=rules)
            plan_us[name].append(seconds["plan"] / events * 1e6)
            codec_us[name].append((seconds["decode"] + seconds["encode"]) / events * 1e6)
            per_cpu_s[name].append(events / sum(seconds.values()))
    for name in (engine.PYTHON, engine.NATIVE):
        print(f"{name:>6}: plan {statistics.median(plan_us[name]):.2f} µs per event "
              f"(rounds: {', '.join(f'{v:.2f}' for v in plan_us[name])}); load + encode "
              f"{statistics.median(codec_us[name]):.2f} µs per event; whole path "
              f"{statistics.median(per_cpu_s[name]):,.0f} events per CPU-second")


def compare_codecs(records: list[bytes], rounds: int) -> None:
    """The codec alone, Python and native in turn ``rounds`` times: µs per record to encode
    every user's final state and to decode its record (medians), once both engines were
    seen to write the same bytes for each."""
    if not engine.native_built():
        raise SystemExit(f"plan_cpu: no native codec to compare: {engine.why_not_built()}")
    engine.select(engine.PYTHON)
    states = [engine.codec().decode_user(raw) for raw in records]
    written = {}
    for name in (engine.PYTHON, engine.NATIVE):
        engine.select(name)
        written[name] = [engine.codec().encode_user(state) for state in states]
    if written[engine.PYTHON] != written[engine.NATIVE] or written[engine.PYTHON] != records:
        raise SystemExit("plan_cpu: the engines' codecs wrote different records")
    timings: dict[str, dict[str, list[float]]] = {
        name: {"encode": [], "decode": []} for name in (engine.PYTHON, engine.NATIVE)}
    for _ in range(rounds):
        for name in (engine.PYTHON, engine.NATIVE):
            engine.select(name)
            encode_user, decode_user = engine.codec().encode_user, engine.codec().decode_user
            t0 = time.process_time()
            for state in states:
                encode_user(state)
            t1 = time.process_time()
            for raw in records:
                decode_user(raw)
            t2 = time.process_time()
            timings[name]["encode"].append((t1 - t0) / len(states) * 1e6)
            timings[name]["decode"].append((t2 - t1) / len(records) * 1e6)
    size = sum(map(len, records)) / len(records)
    print(f"{len(records):,} user records ({size:.1f} bytes on average), {rounds} rounds:")
    for name in (engine.PYTHON, engine.NATIVE):
        print(f"{name:>6}: " + ", ".join(
            f"{phase} {statistics.median(values):.2f} µs per record"
            for phase, values in timings[name].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, help="default: events / 10, as the bench")
    parser.add_argument("--batch", type=int, default=500, help="messages per partition batch")
    parser.add_argument("--by-user", action="store_true", help="arrays of <= 50 user events")
    parser.add_argument("--event-clock", action="store_true",
                        help="plan as with CLOCK=event (the worker bench's setting)")
    parser.add_argument("--return-events", default=None, metavar="TYPES",
                        help="RETURN_EVENTS to plan with (default: the setting's default)")
    parser.add_argument("--engine", choices=engine.ENGINES, default="auto",
                        help="the plan's engine (ENGINE; default auto: native when built)")
    parser.add_argument("--engines", type=int, default=0, metavar="ROUNDS",
                        help="A/B: replay ROUNDS times with each engine in turn, print medians")
    parser.add_argument("--codec", type=int, default=0, metavar="ROUNDS",
                        help="time the user record codec alone, each engine ROUNDS times")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--default-gc", action="store_true",
                        help="CPython's collector thresholds, not the worker's (tune_gc)")
    args = parser.parse_args()
    env = {} if args.return_events is None else {"RETURN_EVENTS": args.return_events}
    try:
        rules = segment_rules(Settings.from_env(env))
    except ConfigError as exc:
        parser.error(str(exc))
    workload = build_workload(WorkloadSpec(args.events, args.users or args.events // 10, 30))
    events = workload.by_user if args.by_user else workload.events
    parts = messages_per_partition(events, args.by_user, 50)
    if not args.default_gc:
        tune_gc()
    try:
        engine.select(args.engine)
    except engine.EngineError as exc:
        parser.error(str(exc))
    if args.codec:
        records: list[bytes] = []
        replay(parts, args.batch, event_clock=args.event_clock, rules=rules,
               records_out=records)
        compare_codecs(records, args.codec)
        return
    if args.engines:
        compare_engines(parts, args.batch, args.engines, args.event_clock, rules, len(events))
        return
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    seconds = replay(parts, args.batch, event_clock=args.event_clock, rules=rules)
    if profiler:
        profiler.disable()
    total = sum(seconds.values())
    shape = "by user, <=50 per message" if args.by_user else "single-event messages"
    returns = ",".join(sorted(rules.return_types)) or "none"
    print(f"{len(events):,} events ({shape}), {args.batch} messages per partition batch, "
          f"RETURN_EVENTS {returns}, engine {engine.running()}: "
          f"{len(events) / total:,.0f} events per CPU-second")
    print("  " + ", ".join(f"{phase} {value:.2f} s" for phase, value in seconds.items()))
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
