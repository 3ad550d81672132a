"""What Redis spent its CPU on during a contender's window: ``INFO commandstats`` taken at
both ends, per command the calls and microseconds per event.

The bench's Redis CPU column says how much; this says on what (the apply script and the
commands it calls, the notifier's due pages, the snapshot's reads), so a change in Redis
CPU per event can be traced to a command. Commands a Lua script calls are counted both
under their own names and inside the script's (EVALSHA) time. The bench's own polling of
the applied offsets (an HGETALL every 20 ms) is in the figures too, and small.
"""

from __future__ import annotations

from typing import Any

import redis

#: Commands shown per shape in the printed report (all of them go to the JSON).
SHOWN = 5


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Every command's (calls, usec) so far."""
    info: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in info.items()}


class CommandMeter:
    """``INFO commandstats`` between :meth:`start` and :meth:`stop`."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.started: dict[str, tuple[int, int]] = {}
        self.used: dict[str, tuple[int, int]] = {}

    def start(self) -> None:
        self.started = command_stats(self.client)

    def stop(self) -> None:
        now = command_stats(self.client)
        used = {name: (calls - self.started.get(name, (0, 0))[0],
                       usec - self.started.get(name, (0, 0))[1])
                for name, (calls, usec) in now.items()}
        self.used = {name: pair for name, pair in used.items() if pair[0] > 0}

    def per_event(self, events: int) -> dict[str, dict[str, float]]:
        """Per command: calls and µs per event, the costliest first."""
        if not events:
            return {}
        ranked = sorted(self.used.items(), key=lambda item: -item[1][1])
        return {name: {"calls_per_event": round(calls / events, 3),
                       "us_per_event": round(usec / events, 3)}
                for name, (calls, usec) in ranked}


def summary(per_event: dict[str, dict[str, float]], shown: int = SHOWN) -> str:
    """The costliest commands in one line: ``evalsha 6.1 µs (0.02 calls)``, ..."""
    return ", ".join(f"{name} {figures['us_per_event']:.2f} µs ({figures['calls_per_event']:g})"
                     for name, figures in list(per_event.items())[:shown])
