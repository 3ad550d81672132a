"""What Redis did for a stretch of a run, from its own counters: the commands it ran (``INFO
commandstats``: calls and microseconds per command), its key lookups (``INFO stats``
keyspace hits and misses) and its CPU (``INFO cpu``), read before and after and divided
by the events of the stretch.

A Redis CPU figure per event says how much, not why. The scaled run compares two sizes of
state: which command's calls per event or microseconds per call differ says where the
difference is. Commands a script runs (``redis.call``) are counted as their own commands
too, and their time is inside the script's ``evalsha`` time as well: the script's own
work (argument decoding, Lua) is its time less theirs. The bench's own reads (progress
polls: ``hget`` of the stored offsets; ``info``, ``memory``) show up too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

#: INFO stats fields kept: key lookups, commands, bytes in and out.
STATS = ("keyspace_hits", "keyspace_misses", "total_commands_processed",
         "total_net_input_bytes", "total_net_output_bytes")
#: INFO cpu fields kept (seconds; the main thread's is the one that runs commands).
CPU = ("used_cpu_sys", "used_cpu_user", "used_cpu_sys_main_thread", "used_cpu_user_main_thread")


@dataclass(frozen=True, slots=True)
class RedisCounters:
    """One reading: per command (calls, usec), and the kept INFO stats and cpu fields."""

    commands: dict[str, tuple[int, int]]
    stats: dict[str, float]

    @classmethod
    def read(cls, client: redis.Redis) -> RedisCounters:
        commands = {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
                    for name, v in client.info("commandstats").items()}
        info = {**client.info("stats"), **client.info("cpu")}
        return cls(commands, {name: float(info[name]) for name in (*STATS, *CPU)
                              if name in info})

    def since(self, before: RedisCounters, events: int) -> dict[str, Any]:
        """The difference from ``before``, per event of the ``events`` done in between:
        per command its calls and µs per event and µs per call (busiest first), and
        keyspace hits and misses, commands and Redis CPU µs per event."""
        per_event = max(events, 1)
        commands = {}
        for name, (calls, usec) in self.commands.items():
            calls -= before.commands.get(name, (0, 0))[0]
            usec -= before.commands.get(name, (0, 0))[1]
            if calls > 0:
                commands[name] = {"calls": calls, "usec": usec,
                                  "calls_per_event": round(calls / per_event, 4),
                                  "usec_per_event": round(usec / per_event, 3),
                                  "usec_per_call": round(usec / calls, 2)}
        delta = {name: value - before.stats.get(name, 0.0) for name, value in self.stats.items()}
        cpu_s = sum(delta.get(name, 0.0) for name in ("used_cpu_sys", "used_cpu_user"))
        return {
            "events": events,
            "commands": dict(sorted(commands.items(), key=lambda kv: -kv[1]["usec"])),
            "keyspace_hits_per_event": round(delta.get("keyspace_hits", 0) / per_event, 3),
            "keyspace_misses_per_event": round(delta.get("keyspace_misses", 0) / per_event, 3),
            "commands_per_event": round(delta.get("total_commands_processed", 0) / per_event, 3),
            "net_in_bytes_per_event": round(delta.get("total_net_input_bytes", 0) / per_event, 1),
            "net_out_bytes_per_event": round(delta.get("total_net_output_bytes", 0) / per_event,
                                             1),
            "cpu_us_per_event": round(cpu_s / per_event * 1e6, 2),
            "main_thread_cpu_us_per_event": round(sum(
                delta.get(name, 0.0) for name in ("used_cpu_sys_main_thread",
                                                  "used_cpu_user_main_thread"))
                / per_event * 1e6, 2),
        }


def render(figures: dict[str, Any], top: int = 8) -> str:
    """The busiest commands as ``name calls/event x µs/call = µs/event``, on one line."""
    parts = [f"{name} {c['calls_per_event']:.3g} x {c['usec_per_call']:.3g}="
             f"{c['usec_per_event']:.3g}" for name, c in list(figures["commands"].items())[:top]]
    return (f"Redis {figures['cpu_us_per_event']} µs CPU/event; keyspace hits "
            f"{figures['keyspace_hits_per_event']}, misses {figures['keyspace_misses_per_event']}"
            f" per event; commands (calls/event x µs/call = µs/event): " + ", ".join(parts))


class CounterMeter:
    """:class:`RedisCounters` read at :meth:`start` and :meth:`stop`, like the CPU meter
    beside it (a replay's window opens and closes at once for both)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.started: RedisCounters | None = None
        self.stopped: RedisCounters | None = None

    def start(self) -> None:
        self.started = RedisCounters.read(self.client)

    def stop(self) -> None:
        self.stopped = RedisCounters.read(self.client)

    def per_event(self, events: int) -> dict[str, Any] | None:
        """:meth:`RedisCounters.since` over the window (None if it never opened)."""
        if self.started is None or self.stopped is None:
            return None
        return self.stopped.since(self.started, events)
