"""(d) The Apache Flink contender: the DataStream job of ``bench/flink-job/`` on the bench's topic.

The job (Flink 2 from Maven Central, a local MiniCluster at parallelism 1, heap keyed state)
reads the topic to its end offsets and computes DAU per (app, day) and classic day-N retention
by daily cohort, exactly; this module builds it once with Maven into ``<venv>/flink-<version>``
(``scripts/setup`` does it; else the first bench run, with a progress line), runs it as a child
process measured by its PID like the worker, and checks its figures against the batch
reference (``bench/reference.py``) before its throughput counts.

Its window is timed by the job's own clock, as the Faust agent's is: from its first progress
line (1,024 events read) to the one that says every event of the topic was read; the events
before the first line do not count, so the MiniCluster's start and the first fetch stay out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from retention_tracker.devstack.java import java_binary, java_unavailable, pom_property
from retention_tracker.devstack.processes import start_process

from .checks import APP, TIMEZONE, Reference, Verdict
from .contenders import BenchFailure, RunResult, Stack, wait_progress
from .processes import peak_rss_bytes

SOURCE = Path(__file__).resolve().parent / "flink-job"
POM = SOURCE / "pom.xml"
MAIN_CLASS = "retention.flink.RetentionJob"
#: The JVM: a fixed heap ceiling (the state of 60,000 users is tens of MiB) and the JVM's
#: default collector (G1), as Flink's own scripts run it on Java 17.
JVM_OPTIONS = ("-Xms512m", "-Xmx1g", "-XX:+ExitOnOutOfMemoryError")
#: Checkpoints of the heap state to local files, this often: the worker commits its state
#: with its offsets at every batch, so a Flink that never checkpoints would do less work.
CHECKPOINT_MS = 1000
_EPOCH = date(1970, 1, 1)


def flink_version() -> str:
    """The pinned Flink version (``bench/flink-job/pom.xml``)."""
    return pom_property(POM, "flink.version")


def flink_home() -> Path:
    """Where the job's jar and its libs/ are built: inside the virtualenv, per version."""
    return Path(sys.prefix) / f"flink-{flink_version()}"


def _built_stamp() -> Path:
    """A file that says this very pom and source were built (a change rebuilds)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file() and "target" not in p.parts):
        digest.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
    return flink_home() / f".built-{digest.hexdigest()[:12]}"


def job_built() -> bool:
    """Whether this pom and source are built (running the job downloads nothing then)."""
    return _built_stamp().exists()


def flink_unavailable() -> str | None:
    """Why the Flink contender cannot run here (None: it can): no Java 17, or the job is not
    built and there is no Maven to build it."""
    problem = java_unavailable()
    if problem is not None:
        return problem
    if not job_built() and shutil.which("mvn") is None:
        return "the Flink job is not built and there is no mvn to build it (scripts/setup)"
    return None


def build_job(say: Callable[[str], None] | None = None) -> Path:
    """Build the job once per pom and source (the first time downloads Flink from Maven
    Central: tens of seconds); returns its home. A failed build raises BenchFailure with the
    end of Maven's log."""
    home = flink_home()
    stamp = _built_stamp()
    if stamp.exists():
        return home
    if say is not None:
        say(f"building the Flink {flink_version()} job with Maven into {home} (once)")
    home.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(home / "libs", ignore_errors=True)
    log = home / "build.log"
    with open(log, "wb") as out:
        built = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(POM), "package", "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-Dflink.build.dir={home}",
             f"-DoutputDirectory={home / 'libs'}"],
            stdout=out, stderr=subprocess.STDOUT, check=False)
    if built.returncode != 0:
        raise BenchFailure(f"building the Flink job failed; {log}:\n"
                           + log.read_text(errors="replace")[-2000:])
    for old in home.glob(".built-*"):
        old.unlink()
    stamp.touch()
    return home


@dataclass(slots=True)
class FlinkFigures:
    """The job's output: DAU per (app, day) and retained(cohort, N) per app; zeros absent."""

    dau: dict[tuple[str, date], int] = field(default_factory=dict)
    retained: dict[tuple[str, date, int], int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> FlinkFigures:
        """Lines ``dau APP DAY COUNT`` and ``retained APP COHORT N COUNT`` (tabs; days as
        days since 1970-01-01, what the job's Delta keys are)."""
        figures = cls()
        for line in text.splitlines():
            kind, app, *rest = line.split("\t")
            if kind == "dau":
                day, count = rest
                figures.dau[(app, _EPOCH + timedelta(days=int(day)))] = int(count)
            elif kind == "retained":
                cohort, offset, count = rest
                figures.retained[(app, _EPOCH + timedelta(days=int(cohort)), int(offset))] = \
                    int(count)
            else:
                raise ValueError(f"not a figure of the Flink job: {line!r}")
        return figures

    def triangle(self, app: str, widths: dict[date, int]) -> list[dict[str, Any]]:
        """The daily classic triangle as the reference lays it out (cohort, size, counts),
        each row as wide as ``widths`` says or as the job's figures reach, if further."""
        rows: dict[date, dict[int, int]] = {}
        for (figure_app, cohort, offset), count in self.retained.items():
            if figure_app == app:
                rows.setdefault(cohort, {})[offset] = count
        out = []
        for cohort in sorted(rows):
            cells = rows[cohort]
            width = max(widths.get(cohort, 0), max(cells) + 1)
            out.append({"cohort": cohort.isoformat(), "size": cells.get(0, 0),
                        "counts": [cells.get(n, 0) for n in range(width)]})
        return out


def check_figures(name: str, figures: FlinkFigures, expected: Reference) -> Verdict:
    """The job's DAU of every day and its daily classic triangle against the reference's:
    every cohort, size and cell, and nothing the reference does not have."""
    verdict = Verdict()
    want_rows = [{"cohort": row["cohort"], "size": row["size"], "counts": row["counts"]}
                 for row in expected.triangles[("day", "classic")]]
    widths = {date.fromisoformat(row["cohort"]): len(row["counts"]) for row in want_rows}
    verdict.check(f"{name}: daily classic triangle", figures.triangle(APP, widths), want_rows)
    got_dau = sorted((day.isoformat(), n) for (app, day), n in figures.dau.items() if app == APP)
    want_dau = sorted((day.isoformat(), n) for day, n in expected.dau.items() if n)
    verdict.check(f"{name}: DAU per day", [list(p) for p in got_dau], [list(p) for p in want_dau])
    return verdict


class _LogProgress:
    """The job's ``progress EVENTS EPOCH_MS`` lines, read as its log grows."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.offset = 0
        self.first: tuple[int, float] | None = None  # (events, unix seconds)
        self.last: tuple[int, float] = (0, 0.0)
        self.counts: dict[str, int] = {}  # "duplicates", "rejected" once the job ends

    def events(self) -> int:
        with open(self.log_path, "rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1  # a line still being written waits
        self.offset += complete
        for line in chunk[:complete].decode(errors="replace").splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "progress":
                point = (int(words[1]), int(words[2]) / 1000)
                self.first = self.first or point
                if point[0] > self.last[0]:  # the moment the count was reached, not repeated
                    self.last = point
            elif len(words) == 2 and words[0] in ("duplicates", "rejected"):
                self.counts[words[0]] = int(words[1])
        return self.last[0]


def flink_job(stack: Stack, topic: str, shape: str, expected_events: int
              ) -> tuple[RunResult, FlinkFigures]:
    """Run the job on ``topic`` until it has read ``expected_events`` and written its figures;
    returns its run (CPU of the JVM, broker and Redis in the window) and the figures."""
    home = build_job()
    name = f"flink-{shape}"
    out = stack.workdir / f"{name}.tsv"
    java = java_binary() or "java"
    args = [java, *JVM_OPTIONS, "-cp", f"{home / 'job.jar'}:{home / 'libs'}/*", MAIN_CLASS,
            "--bootstrap", stack.bootstrap, "--topic", topic, "--out", str(out),
            "--events", str(expected_events), "--timezone", TIMEZONE,
            "--checkpoint-ms", str(CHECKPOINT_MS),
            "--checkpoint-dir", str(stack.workdir / f"{name}-checkpoints")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAVA_TOOL", "FLINK_"))}
    spawned = time.time()
    process = start_process(args, name, env, stack.workdir / f"{name}.log", cwd=stack.workdir)
    progress = _LogProgress(process.log_path)
    bar = stack.bar(expected_events, f"flink job   {shape}")
    try:
        with process:
            meter = stack.cpu_meter(process.pid)
            wait_progress(process, progress.events, expected_events, bar, stack.stall_s,
                          "flink job", meter)
            rss = peak_rss_bytes(process.pid)
            deadline = time.monotonic() + stack.stall_s
            while process.alive() and time.monotonic() < deadline:  # writing its figures
                time.sleep(0.05)
            code = None if process.alive() else process.stop()  # reaps it
            if code != 0 or not out.exists():
                why = "still running" if code is None else f"exit {code}"
                raise BenchFailure(f"flink job: no figures {stack.stall_s:g} s after its last "
                                   f"event ({why}); log {process.log_path}:\n"
                                   f"{process.log_tail(2000)}")
    finally:
        bar.close()
    progress.events()  # the lines printed while it finished
    assert progress.first is not None
    first, last = progress.first, progress.last
    result = RunResult(
        "flink", shape, last[0], last[0] - first[0], last[1] - first[1], first[1] - spawned,
        rss, {"flink_version": flink_version(), "parallelism": 1, "state_backend": "hashmap",
              "checkpoint_interval_ms": CHECKPOINT_MS, "jvm_options": list(JVM_OPTIONS),
              **progress.counts},
        meter.used)
    return result, FlinkFigures.parse(out.read_text())


def main() -> int:
    """``python -m retention_tracker.bench.flink_job``: build the job (scripts/setup)."""
    problem = flink_unavailable()
    if problem is not None:
        print(f"flink job: not built: {problem}", file=sys.stderr)
        return 0
    try:
        build_job(lambda line: print(f"setup: {line}", file=sys.stderr))
    except BenchFailure as exc:
        print(f"flink job: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
