"""The worker's HTTP side: /retention/* equal the CLI, /metrics carries the Redis figures."""

from __future__ import annotations

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
        status, body = get(f"{base}/retention/summary")
        summary = deployment.cli_json("summary", CLOCK="event")
        assert (status, orjson.loads(body)) == (200, summary)
        # §9: the HTTP answer fits and keeps the model, the CLI reads the one kept
        status, body = get(f"{base}/retention/at-risk?refit=1")
        assert status == 200, body  # the answer itself when it is not one (seen once, loaded)
        at_risk = orjson.loads(body)
        assert at_risk["users"] > 0, body
        assert at_risk == deployment.cli_json("at-risk", CLOCK="event")
        user = next(e["user_id"] for e in events if isinstance(e, dict))
        status, body = get(f"{base}/retention/at-risk?user={user}")
        assert (status, orjson.loads(body)) == (
            200, deployment.cli_json("at-risk", "--user", user, CLOCK="event"))
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
