"""The CLI fails in one readable line, never a traceback, on bad flags, settings and
unreachable services."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from retention_tracker.devstack.processes import free_port

RETENTION = [sys.executable, "-m", "retention_tracker.cli"]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RETENTION, *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HORIZON_DAYS": "abc"}, "HORIZON_DAYS='abc' is not an integer"),
        ({"TIMEZONE": "Mars/Olympus"}, "unknown IANA timezone 'Mars/Olympus'"),
        ({"CLOCK": "sundial"}, "CLOCK='sundial' must be one of wall, event"),
        ({"INACTIVITY_THRESHOLDS": "2,x"}, "INACTIVITY_THRESHOLDS='2,x'"),
        ({"CURRENCY": "dollars"}, "CURRENCY='dollars'"),
        ({"ACTIVITY_EVENTS": "bet,install"}, "ACTIVITY_EVENTS: 'install' is a built-in"),
        ({"AT_RISK_MODEL": "pareto"}, "AT_RISK_MODEL='pareto' must be one of bgnbd, mbgnbd"),
        ({"AT_RISK_THRESHOLD": "1.5"}, "AT_RISK_THRESHOLD=1.5 must lie strictly between"),
        ({"KAFKA_BROKER": "nonsense::::"}, "'nonsense::::' is not host:port"),
    ],
)
def test_a_bad_setting_stops_with_one_line(env: dict[str, str], expected: str) -> None:
    for command in (["report"], ["worker"]):
        assert expected in one_line_error(run(*command, **env))


def test_a_bad_flag_is_a_usage_error() -> None:
    result = run("report", "--granularity", "hour")
    assert result.returncode == 2
    assert "hour" in one_line_error(result)
    assert "not a date" in one_line_error(run("summary", "--date", "2024-13-45"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("localhost:6379", "must start with redis://, rediss:// or unix://"),
        ("redis://127.0.0.1:port/0", "is not a URL"),
        ("redis://:secret@127.0.0.1:99999/0", "redis://:***@127.0.0.1:99999/0"),
        ("redis://127.0.0.1:6379/zero", "the database ('zero') must be a number"),
    ],
)
def test_a_malformed_redis_url_is_one_line(url: str, expected: str) -> None:
    for command in (["summary"], ["worker"]):
        line = one_line_error(run(*command, REDIS_URL=url))
        assert expected in line and "secret" not in line


def test_unreachable_redis_is_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert "cannot reach Redis" in one_line_error(run("report", REDIS_URL=url))
    assert "cannot reach Redis" in one_line_error(run("worker", REDIS_URL=url))


def test_where_combinations_are_refused_in_one_line(redis_url: str) -> None:
    line = one_line_error(run("report", "--where", "platform=ios", "--where", "country=BR",
                              REDIS_URL=redis_url))
    assert "--where: one segment at a time" in line


def test_at_risk_of_an_unknown_app_or_user_is_one_line(redis_url: str, unique: str) -> None:
    line = one_line_error(run("at-risk", "--app", "nope", REDIS_URL=redis_url,
                              KEY_PREFIX=f"p-{unique}"))
    assert "no data for app 'nope'" in line
    client = redis.Redis.from_url(redis_url)
    client.hset(f"p-{unique}:apps", "casino", "UTC")
    try:
        line = one_line_error(run("at-risk", "--app", "casino", "--user", "u1",
                                  REDIS_URL=redis_url, KEY_PREFIX=f"p-{unique}"))
        assert line.endswith("--user: no activity of user 'u1' in app 'casino'")
    finally:
        client.delete(f"p-{unique}:apps")
        client.close()


@pytest.mark.parametrize(("key", "stored", "settings", "expected"), [
    # a second calendar for an app with data (METRICS.md §2)
    ("apps", {"casino": "Europe/Berlin"}, {"APP_TIMEZONES": "casino=Asia/Tokyo"},
     "'casino' has data in timezone 'Europe/Berlin'"),
    # other bucket counts than the state was built with (state.layout.layout_problem)
    ("layout", {"USER_BUCKETS": 1024, "DUE_BUCKETS": 64}, {"DUE_BUCKETS": "128"},
     "DUE_BUCKETS=128 but the state was built with 64"),
])
def test_worker_refuses_to_run_on_a_state_built_otherwise(
        redis_url: str, unique: str, key: str, stored: dict[str, object],
        settings: dict[str, str], expected: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.hset(f"p-{unique}:{key}", mapping=stored)  # type: ignore[arg-type]
    try:
        line = one_line_error(run("worker", REDIS_URL=redis_url, KEY_PREFIX=f"p-{unique}",
                                  **settings))
        assert expected in line
    finally:
        client.delete(f"p-{unique}:{key}")
        client.close()


def test_check_names_a_malformed_broker_address_in_its_settings_line() -> None:
    result = run("check", KAFKA_BROKER="nonsense::::")
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    assert "FAIL  settings" in result.stdout and "is not host:port" in result.stdout


def test_an_unreachable_broker_is_one_line_with_its_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    for command in (["tail", "users.inactive.2d"], ["simulate", "--days", "1"]):
        line = one_line_error(run(*command, KAFKA_BROKER=address))
        assert line == (f"retention: error: cannot reach Kafka at {address} (nothing answers "
                        "there, or it is not a Kafka broker; see KAFKA_BROKER)")
    checked = run("check", KAFKA_BROKER=address).stdout
    assert f"cannot reach Kafka at {address} (nothing" in checked
    assert "AddressFamily" not in checked


def test_tail_of_a_missing_topic_says_so_and_creates_nothing(kafka_url: str,
                                                              unique: str) -> None:
    topic = f"no.such.topic-{unique}"
    line = one_line_error(run("tail", topic, KAFKA_BROKER=kafka_url))
    assert f"topic {topic!r} does not exist" in line
    again = one_line_error(run("tail", topic, "--from-beginning", KAFKA_BROKER=kafka_url))
    assert "does not exist" in again  # the first look created no topic
