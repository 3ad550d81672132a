"""The local stack the end-to-end tests stand on: processes by PID, topics, groups, Redis."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from retention_tracker.devstack.processes import SYSTEM_REDIS_PORT, start_process, wait_for
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.devstack.topics import ensure_topics

pytestmark = pytest.mark.e2e


async def test_topics_produce_and_group_consume(kafka_url: str, unique: str) -> None:
    bootstrap = kafka_url.removeprefix("kafka://")
    topic, dlq = f"events-{unique}", f"dlq-{unique}"
    await ensure_topics(kafka_url, {topic: 4, dlq: 1})
    await ensure_topics(bootstrap, {topic: 4, dlq: 1})  # idempotent, prefix optional
    with pytest.raises(ValueError, match="other partition counts"):
        await ensure_topics(bootstrap, {topic: 2})

    sent = {f"v{i}".encode(): f"user-{i % 10}".encode() for i in range(200)}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for v, k in sent.items()]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"group-{unique}",
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    started = time.monotonic()
    await consumer.start()
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    received: list[bytes] = []
    try:
        async with asyncio.timeout(20):
            while len(received) < len(sent):
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    for record in records:
                        assert record.key is not None and record.value is not None
                        partitions_of_key[record.key].add(tp.partition)
                        received.append(record.value)
        joined_s = time.monotonic() - started
        assert len(consumer.assignment()) == 4
        await consumer.commit()
    finally:
        await consumer.stop()

    assert sorted(received) == sorted(sent)
    assert all(len(parts) == 1 for parts in partitions_of_key.values())  # keyed: one partition
    assert len(set().union(*partitions_of_key.values())) > 1  # spread over the partitions
    print(f"group join + consume took {joined_s:.2f}s")


def test_redis_is_ours_and_answers(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
    finally:
        client.close()
    if not os.environ.get("REDIS_URL"):
        assert urlsplit(redis_url).port != SYSTEM_REDIS_PORT

    with pytest.raises(ValueError, match="6379"):
        start_redis(port=SYSTEM_REDIS_PORT, data_dir=tmp_path)

    process, url = start_redis(data_dir=tmp_path / "aof", appendonly=True)
    with process:
        assert urlsplit(url).port != SYSTEM_REDIS_PORT
        client = redis.Redis.from_url(url)
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        finally:
            client.close()
    assert not process.alive()


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for whoever reaps orphans (PID 1 here reaps
    about once a second; in a container without an init it may never do so)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # reaped meanwhile (the next kill(0) says so), or no /proc (macOS)
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# A parent that ignores SIGTERM (so stop() must escalate) and forks a grandchild into its
# process group; both PIDs go to the log so the test can check that neither survives.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("pids", os.getpid(), child.pid, flush=True)
time.sleep(60)
"""


def _pids_in_log(log: Path) -> list[int] | None:
    for line in log.read_text().splitlines():
        if line.startswith("pids "):
            return [int(pid) for pid in line.split()[1:]]
    return None


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    process = start_process([sys.executable, "-c", STUBBORN], "stubborn", dict(os.environ), log)
    wait_for(lambda: _pids_in_log(log) is not None, 10, "stubborn child")
    parent, grandchild = _pids_in_log(log) or []
    assert parent == process.pid and process.alive()

    assert process.stop(timeout_s=0.5) == -signal.SIGKILL  # SIGTERM ignored -> SIGKILL
    assert not process.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    # The grandchild died with the group (SIGKILL to the group is immediate but asynchronous).
    wait_for(lambda: _gone(grandchild), 5, "grandchild gone")
    assert process.stop() == -signal.SIGKILL  # idempotent


def test_graceful_stop_and_kill(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    with start_process(sleeper, "polite", dict(os.environ), tmp_path / "polite.log") as polite:
        assert polite.alive()
    assert polite.returncode == -signal.SIGTERM
    assert _gone(polite.pid)

    crashed = start_process(sleeper, "crashed", dict(os.environ), tmp_path / "crashed.log")
    assert crashed.kill() == -signal.SIGKILL
    assert _gone(crashed.pid)
    assert "starting crashed" in (tmp_path / "crashed.log").read_text()


ORPHANING_PARENT = """
import os, sys, time
from pathlib import Path
from retention_tracker.devstack.processes import start_process
child = start_process([sys.executable, "-c", "import time; time.sleep(60)"], "orphan",
                      dict(os.environ), Path(sys.argv[1]))
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not shutil.which("setpriv"),
    reason="parent-death signal needs Linux and util-linux setpriv",
)
def test_children_die_with_a_sigkilled_parent(tmp_path: Path) -> None:
    """What teardown and atexit cannot cover: the test process itself SIGKILLed (OOM)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANING_PARENT, str(tmp_path / "orphan.log")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        # setpriv execs the child: until it has, /proc shows setpriv's own command line
        wait_for(lambda: Path(f"/proc/{child}/cmdline").read_bytes().startswith(
            sys.executable.encode()), 5, "the child exec'd")
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: _gone(child), 5, "orphaned child gone")


def test_wait_for_names_what_timed_out() -> None:
    with pytest.raises(TimeoutError, match=r"the impossible not ready after 0.1s"):
        wait_for(lambda: False, 0.1, "the impossible")
