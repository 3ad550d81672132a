"""The worker's HTTP side: /retention/* equal the CLI, /metrics carries the Redis figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from retention_tracker.devstack.processes import wait_for

from .harness import Deployment, event_messages, get, produce, samples, simulated

pytestmark = pytest.mark.e2e


def test_http_views_and_metrics_match_the_cli(deployment: Deployment) -> None:
    events = simulated(days=10)
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(events))
    worker, port = deployment.start_worker(CLOCK="event", METRICS_REFRESH_S="1")
    base = f"http://127.0.0.1:{port}"
    with worker:
        deployment.wait_applied(sent, worker=worker)
        wait_for(lambda: get(f"{base}/retention/summary")[0] == 200, 30, "web server")
        for query, args in [
            ("granularity=week&kind=rolling", ["--granularity", "week", "--kind", "rolling"]),
            ("granularity=day&from=2000-01-01", ["--from", "2000-01-01"]),
        ]:
            status, body = get(f"{base}/retention/cohorts?{query}")
            assert status == 200
            cli: dict[str, Any] = deployment.cli_json("report", *args, CLOCK="event")
            assert orjson.loads(body)["cohorts"] == cli["cohorts"]

        def agrees_with_cli(path: str, *args: str) -> Callable[[], bool]:
            """The HTTP answer equals the CLI's read of the same state. The worker's
            notifier may still be sending win-back messages after the last record is
            applied (its counts move between two reads): asked again until it is idle."""
            def agree() -> bool:
                status, body = get(f"{base}{path}")
                assert status == 200, body
                return bool(orjson.loads(body) == deployment.cli_json(*args, CLOCK="event"))
            return agree

        wait_for(agrees_with_cli("/retention/summary", "summary"), 60, "summary as the CLI's")
        summary = deployment.cli_json("summary", CLOCK="event")
        # §9: the HTTP answer fits and keeps the model, the CLI reads the one kept; the fit
        # is the heaviest answer (seconds on a loaded machine)
        status, body = get(f"{base}/retention/at-risk?refit=1", timeout_s=60)
        assert status == 200, body  # the answer itself when it is not one (seen once, loaded)
        assert orjson.loads(body)["users"] > 0, body
        wait_for(agrees_with_cli("/retention/at-risk", "at-risk"), 60, "at-risk as the CLI's")
        user = next(e["user_id"] for e in events if isinstance(e, dict))
        wait_for(agrees_with_cli(f"/retention/at-risk?user={user}", "at-risk", "--user", user),
                 60, "a user's at-risk answer as the CLI's")
        status, body = get(f"{base}/retention/cohorts?granularity=hour")
        assert status == 400 and b"granularity" in body
        status, body = get(f"{base}/retention/summary?app=nope")
        assert status == 400 and b"no data for app" in body

        def metrics_show_dau() -> bool:
            status, body = get(f"{base}/metrics")
            assert status == 200, body
            text = body.decode()
            return samples(text, "retention_dau").get((("app", "default"),)) == summary["dau"]

        wait_for(metrics_show_dau, 30, "retention_dau on /metrics")
        text = get(f"{base}/metrics")[1].decode()
        accepted = samples(text, "retention_events_accepted_total")
        assert sum(accepted.values()) > 0
        retention = samples(text, "retention_cohort_retention")
        assert {dict(k)["kind"] for k in retention} == {"classic", "rolling"}
        assert samples(text, "retention_worker_records_total")[()] == sent
