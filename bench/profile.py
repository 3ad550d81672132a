"""Where the worker's time goes: py-spy attached to a worker during an extra replay.

The profiled replay is not one of the measured runs (sampling costs a little, and attaching
happens mid-window), so it never distorts the throughput table. py-spy writes collapsed
stacks ("raw" format, one ``frame;frame;... count`` line per distinct stack); we aggregate
them by function, both self time (the sampled frame) and inclusive time (anywhere on the
stack), which is what decides what to optimise.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from retention_tracker.devstack.processes import ManagedProcess, start_process, wait_for

from .contenders import BenchFailure, Census, Deployment, RunResult, worker_replay

TRUNK_SHARE = 0.95
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy_binary() -> str | None:
    """py-spy next to this interpreter (the venv), else on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def _function(frame: str) -> str:
    """``process (streams/plan.py:120)`` -> ``process (streams/plan.py)``: one row per
    function, whatever line in it was sampled; paths shortened to the last two parts."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = "/".join(Path(match["file"]).parts[-2:])
    return f"{match['func']} ({path})"


def summarise(collapsed: str, top: int = 20) -> dict[str, Any]:
    """Top functions by self and by inclusive share of the samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        count = int(match["count"])
        frames = [_function(f) for f in match["stack"].split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "share": round(n / total, 4)}
            for name, n in counter.most_common(top)
        ]

    # The trunk (interpreter start, click, Faust's worker, the event loop) is on every stack
    # and says nothing; inclusive rows start below it.
    branches = Counter({name: n for name, n in inclusive.items() if n < TRUNK_SHARE * total})
    return {"samples": total, "self": rows(own), "inclusive": rows(branches)}


def profile_replay(deployment: Deployment, census: Census, out_path: Path, rate_hz: int = 100
                   ) -> tuple[RunResult, dict[str, Any]]:
    """Replay ``deployment.topic`` in a fresh worker with py-spy attached once it applies."""
    binary = py_spy_binary()
    if binary is None:
        raise BenchFailure("--profile needs py-spy (pip install py-spy)")
    stack = deployment.stack
    spies: list[ManagedProcess] = []

    def attach(worker: ManagedProcess) -> None:
        spies.append(start_process(
            [binary, "record", "--pid", str(worker.pid), "--rate", str(rate_hz), "--format",
             "raw", "--nonblocking", "--output", str(out_path)],
            "py-spy", dict(os.environ), stack.workdir / "py-spy.log", cwd=stack.workdir,
        ))

    try:
        result, _memory = worker_replay(deployment, "single", census, on_first_progress=attach)
        # The worker is stopped now; py-spy notices its target is gone and writes the file.
        for spy in spies:
            wait_for(lambda spy=spy: not spy.alive(), 60, "py-spy writing its profile")
    finally:
        for spy in spies:
            spy.stop()
    if not out_path.exists():
        raise BenchFailure(f"py-spy wrote no profile; see {stack.workdir / 'py-spy.log'}")
    summary = summarise(out_path.read_text(errors="replace"))
    summary["collapsed_stacks"] = str(out_path)
    return result, summary
