"""A worker watched over time: its resident memory and every partition's lag, once a second.

A replay's totals (events/s, peak RSS) cannot say whether memory kept growing or a partition
stood still while the others moved; a series can. The scaled run reads the worker's RSS
from it (flat or growing?), the skewed run each partition's lag and its longest stall.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .contenders import Deployment
from .processes import status_bytes


@dataclass(slots=True)
class Sample:
    at_s: float  # since the sampler started
    rss_bytes: int | None
    offsets: dict[int, int]  # next offset stored with the state, per partition


@dataclass(slots=True)
class WorkerSampler:
    """Samples one worker process and its deployment's stored offsets every ``every_s``
    in a thread of the bench, from :meth:`start` (given the worker's pid) to :meth:`stop`."""

    deployment: Deployment
    every_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, pid: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(pid,), name="sampler",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, pid: int) -> None:
        client = self.deployment.stack.redis()
        started = time.perf_counter()
        try:
            while True:
                stopping = self._stop.is_set()  # one more sample after stop: the ends
                rss = status_bytes(pid, "VmRSS")
                offsets = self.deployment.stored_offsets(client)
                self.samples.append(Sample(time.perf_counter() - started, rss, offsets))
                if stopping:
                    return
                self._stop.wait(self.every_s)
        finally:
            client.close()

    def rss_series(self) -> list[tuple[float, int]]:
        return [(round(s.at_s, 1), s.rss_bytes) for s in self.samples
                if s.rss_bytes is not None]

    def rss_figures(self) -> dict[str, Any]:
        """The RSS series and how it moved: the first and last sample, the peak, and the
        growth over the second half of the run (flat memory grows ~0 there)."""
        series = self.rss_series()
        if not series:
            return {"series": []}
        half = [rss for at, rss in series if at >= series[-1][0] / 2]
        return {
            "series": series,
            "first_bytes": series[0][1],
            "last_bytes": series[-1][1],
            "peak_bytes": max(rss for _, rss in series),
            "second_half_growth_bytes": half[-1] - half[0],
        }

    def lag_figures(self, ends: dict[int, int]) -> dict[str, Any]:
        """Per partition: its lag (records behind ``ends``) at each sample, when it caught
        up, and its longest stall, the longest time its stored offset stood still while it
        still had records to read (a partition starved by a heavy one's batches shows it)."""
        out: dict[str, Any] = {}
        for partition, end in sorted(ends.items()):
            lags: list[tuple[float, int]] = []
            stall = moved_at = 0.0
            last: int | None = None
            caught: float | None = None
            for sample in self.samples:
                offset = sample.offsets.get(partition, 0)
                lags.append((round(sample.at_s, 1), end - offset))
                if offset != last:
                    moved_at, last = sample.at_s, offset
                elif offset < end:
                    stall = max(stall, sample.at_s - moved_at)
                if offset >= end and caught is None:
                    caught = round(sample.at_s, 1)
            out[str(partition)] = {"records": end, "caught_up_at_s": caught,
                                   "longest_stall_s": round(stall, 1), "lag": lags}
        return out
