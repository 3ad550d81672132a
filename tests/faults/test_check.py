"""``retention check`` (cli/check.py): one line per check, exit 1 on any FAIL, never a
traceback, never a password."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner, Result

from retention_tracker.cli.check import check
from retention_tracker.config.settings import mask_url
from retention_tracker.devstack.processes import free_port
from retention_tracker.devstack.redis_server import start_redis
from retention_tracker.devstack.topics import ensure_topics
from retention_tracker.state.schema import Keyspace
from retention_tracker.streams import engine
from tests.e2e.harness import Deployment

pytestmark = pytest.mark.e2e


def run(deployment: Deployment, *args: str, **env: str) -> Result:
    result = CliRunner().invoke(check, list(args), env=deployment.env(**env))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def lines(result: Result) -> dict[str, tuple[str, str]]:
    """check name -> (status, detail), from the text output."""
    out = {}
    for line in result.output.splitlines():
        status, rest = line.split(None, 1)
        for name in ("redis persistence", "redis memory", "redis encodings", "input topics",
                     "dlq topic",
                     "rekey topic", "output topics", "settings", "engine", "redis", "broker",
                     "timezones", "keying"):
            if rest.startswith(name + " "):
                out[name] = (status, rest[len(name):].strip())
                break
        else:
            raise AssertionError(f"unexpected line {line!r}")
    return out


def test_a_good_setup_passes(deployment: Deployment) -> None:
    result = run(deployment)
    assert result.exit_code == 0, result.output
    found = lines(result)
    assert [s for s, _ in found.values() if s not in ("ok", "warn")] == []
    assert found["input topics"] == ("ok", f"{deployment.topic} (4 partitions)")
    assert found["dlq topic"] == ("ok", f"{deployment.dlq} exists")
    assert found["rekey topic"] == ("ok", f"{deployment.rekey_topic} will be created on start")
    assert found["keying"] == ("ok", "no events read in the last 2 days")
    if engine.native_built():  # CI builds it (tests/streams/test_engine.py)
        assert found["engine"] == ("ok", "native (Cython, streams/_native.pyx)")
    assert "will be created on start" in found["output topics"][1]
    assert found["redis persistence"][0] == "warn"  # the session Redis runs without an AOF
    assert "appendonly is off" in found["redis persistence"][1]
    assert found["redis encodings"] == ("ok", "hash-max-listpack-entries 64")


def test_hashes_kept_as_long_listpacks_warn(deployment: Deployment, tmp_path: Path) -> None:
    server, url = start_redis(data_dir=tmp_path / "redis")
    with server:
        client = redis.Redis.from_url(url)
        try:
            client.config_set("hash-max-listpack-entries", 512)  # Redis' own default
        finally:
            client.close()
        result = run(deployment, REDIS_URL=url)
    assert result.exit_code == 0, result.output  # slower, not wrong: a warning
    status, detail = lines(result)["redis encodings"]
    assert status == "warn" and detail.startswith("hash-max-listpack-entries 512:")


def test_json_lists_every_check(deployment: Deployment, tmp_path: Path) -> None:
    server, url = start_redis(data_dir=tmp_path / "aof", appendonly=True)
    with server:
        result = run(deployment, "--json", REDIS_URL=url)
    assert result.exit_code == 0, result.output
    checks: list[dict[str, Any]] = orjson.loads(result.output)
    assert [c["check"] for c in checks] == [
        "settings", "engine", "redis", "redis persistence", "redis memory", "redis encodings",
        "broker", "input topics", "dlq topic", "rekey topic", "output topics", "timezones",
        "keying"]
    assert all(set(c) == {"check", "status", "detail"} for c in checks)
    persistence = next(c for c in checks if c["check"] == "redis persistence")
    assert persistence == {"check": "redis persistence", "status": "ok",
                           "detail": "appendonly yes, appendfsync everysec"}


def test_wrong_redis_port_fails_in_one_line_without_the_password(deployment: Deployment
                                                                 ) -> None:
    port = free_port()
    result = run(deployment, REDIS_URL=f"redis://tracker:hunter2@127.0.0.1:{port}/0")
    assert result.exit_code == 1
    found = lines(result)
    status, detail = found["redis"]
    assert status == "FAIL" and f"redis://tracker:***@127.0.0.1:{port}/0" in detail
    assert found["timezones"][0] == "skip"
    assert found["broker"][0] == "ok"
    assert "hunter2" not in result.output


def test_as_a_process_no_traceback_on_stderr(deployment: Deployment) -> None:
    env = deployment.env(REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    done = subprocess.run(
        [sys.executable, "-c", "from retention_tracker.cli.check import check; check()"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == ""
    assert "FAIL  redis " in done.stdout and "hunter2" not in done.stdout


def test_timezone_conflict_fails(deployment: Deployment) -> None:
    client = redis.Redis.from_url(deployment.redis_url)
    client.hset(Keyspace(f"rt-{deployment.name}").apps(), mapping={
        "default": "Europe/Paris", "casino": "UTC"})
    client.close()
    result = run(deployment, TIMEZONE="UTC")
    assert result.exit_code == 1
    status, detail = lines(result)["timezones"]
    assert status == "FAIL"
    assert "'default' has data in timezone 'Europe/Paris'" in detail and "'UTC'" in detail
    assert "casino" not in detail
    fixed = run(deployment, TIMEZONE="UTC", APP_TIMEZONES="default=Europe/Paris")
    assert fixed.exit_code == 0
    assert lines(fixed)["timezones"] == ("ok", "2 app(s) with data, timezones agree")


def test_bad_settings_fail_in_one_line(deployment: Deployment) -> None:
    result = run(deployment, TIMEZONE="Mars/Olympus")
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert failed == ["FAIL  settings   TIMEZONE: unknown IANA timezone 'Mars/Olympus'"]


def test_engine_native_where_not_built_fails_in_one_line(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_built", None)
    monkeypatch.setattr(engine, "_why_not", "no compiler")
    result = run(deployment, ENGINE="native")
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith("FAIL  engine")
    assert "ENGINE=native but the native engine was not built (no compiler)" in failed[0]


def test_missing_and_unequal_input_topics_fail(deployment: Deployment) -> None:
    other = f"other-{deployment.name}"
    asyncio.run(ensure_topics(deployment.bootstrap, {other: 2}))
    unequal = run(deployment, INPUT_TOPICS=f"{deployment.topic},{other}")
    assert unequal.exit_code == 1
    status, detail = lines(unequal)["input topics"]
    assert status == "FAIL" and "equal partition counts" in detail and f"{other}=2" in detail
    missing = run(deployment, INPUT_TOPICS=f"{deployment.topic},absent-{deployment.name}")
    assert lines(missing)["input topics"][0] == "FAIL"
    looping = run(deployment, DLQ_TOPIC=deployment.topic)
    assert lines(looping)["dlq topic"][0] == "FAIL"
    assert lines(run(deployment, REKEY_TOPIC=deployment.topic))["rekey topic"][0] == "FAIL"


def test_unreachable_broker_fails(deployment: Deployment) -> None:
    result = run(deployment, KAFKA_BROKER=f"kafka://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    found = lines(result)
    assert found["broker"][0] == "FAIL" and "cannot reach Kafka" in found["broker"][1]
    assert {found[n][0] for n in ("input topics", "dlq topic", "rekey topic", "output topics")
            } == {"skip"}


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://u:p%40ss@h:6379/0", "redis://u:***@h:6379/0"),
    ("rediss://:secret@h/1", "rediss://:***@h/1"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("kafka://a:1,kafka://user:pw@b:2", "kafka://a:1,kafka://user:***@b:2"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked

