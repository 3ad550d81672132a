"""A worker that must stop says why in one line and exits 2: the reason propagates as an
exception to the process's exit, whichever task found it."""

from __future__ import annotations

import orjson
import pytest
import redis

from retention_tracker.devstack.processes import wait_for

from .harness import Deployment, produce

pytestmark = pytest.mark.e2e


def session(app: str, user: str, event_id: str) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "app": app, "type": "session", "user_id": user,
            "ts": "2026-01-05T10:00:00Z"}
    return user.encode(), orjson.dumps(body)


def test_a_timezone_conflict_met_while_running_stops_the_worker_in_one_line(
    deployment: Deployment,
) -> None:
    sent = produce(deployment.bootstrap, deployment.topic, [session("casino", "u1", "e1")])
    worker, _port = deployment.start_worker(TIMEZONE="UTC")
    with worker:
        deployment.wait_applied(sent, worker=worker)
        # another worker (another configuration) took the app "slots" in Tokyo's calendar
        client = redis.Redis.from_url(deployment.redis_url)
        client.hset(deployment.keys.apps(), "slots", "Asia/Tokyo")
        client.close()
        produce(deployment.bootstrap, deployment.topic, [session("slots", "u2", "e2")])
        wait_for(lambda: not worker.alive(), 60, "the worker to stop")
    assert worker.returncode == 2
    log = worker.log_path.read_text(errors="replace")
    last = log.strip().splitlines()[-1]
    assert last.startswith("retention: error: app 'slots' has data in timezone 'Asia/Tokyo'")
    assert "TIMEZONE/APP_TIMEZONES give 'UTC'; fix the setting" in last
    assert "Traceback" not in log, log[-3000:]
    assert deployment.applied_offsets() == 1  # the conflicting event was not applied
