"""API_TOKEN and METRICS_TOKEN: the reports and /metrics answer 401 without their bearer
token, each token opens only its own door, and the page and /health stay open."""

from __future__ import annotations

import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from retention_tracker.devstack.processes import wait_for

from ..dashboards.promql import REPO, require_tool
from .harness import Deployment
from .prometheus import Prometheus, start_prometheus

pytestmark = pytest.mark.e2e

API_TOKEN = "api-secret-1"
METRICS_TOKEN = "metrics-secret-2"


def get(url: str, token: str | None = None, scheme: str = "Bearer"
        ) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"{scheme} {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def serving(base: str) -> bool:
    try:
        return get(f"{base}/health")[0] == 200
    except OSError:  # not listening yet
        return False


def test_each_endpoint_wants_its_own_token(deployment: Deployment) -> None:
    worker, port = deployment.start_worker(API_TOKEN=API_TOKEN, METRICS_TOKEN=METRICS_TOKEN)
    base = f"http://127.0.0.1:{port}"
    with worker:
        wait_for(lambda: serving(base), 60, "the worker's web server")
        for path in ("/retention/apps", "/retention/pipeline", "/retention/summary"):
            status, headers = get(base + path)
            assert status == 401, path
            assert headers.get("WWW-Authenticate", "").startswith("Bearer"), path
            assert get(base + path, "wrong")[0] == 401, path
            assert get(base + path, METRICS_TOKEN)[0] == 401, path  # not the metrics one
            assert get(base + path, API_TOKEN, scheme="Basic")[0] == 401, path
        assert get(f"{base}/retention/apps", API_TOKEN)[0] == 200
        assert get(f"{base}/retention/pipeline", API_TOKEN)[0] == 200
        assert get(f"{base}/metrics")[0] == 401
        assert get(f"{base}/metrics", API_TOKEN)[0] == 401
        assert get(f"{base}/metrics", METRICS_TOKEN)[0] == 200
        assert get(f"{base}/")[0] == 200  # the page holds no data; it asks for the token
        assert get(f"{base}/static/page.js")[0] == 200


def test_without_tokens_the_api_is_open(deployment: Deployment) -> None:
    worker, port = deployment.start_worker()
    base = f"http://127.0.0.1:{port}"
    with worker:
        wait_for(lambda: serving(base), 60, "the worker's web server")
        assert get(f"{base}/retention/apps")[0] == 200
        assert get(f"{base}/metrics")[0] == 200


def test_prometheus_scrapes_with_the_metrics_token_from_a_file(
    deployment: Deployment, tmp_path: Path,
) -> None:
    """What deploy/prometheus/prometheus.yml does: the token in a credentials file. With
    the right token the target is up; with another, down (401), and never a partial up."""
    binary = require_tool("prometheus")
    right, wrong = tmp_path / "right_token", tmp_path / "wrong_token"
    right.write_text(METRICS_TOKEN + "\n")
    wrong.write_text("not-it\n")
    worker, port = deployment.start_worker(METRICS_TOKEN=METRICS_TOKEN)
    with ExitStack() as stack:
        stack.enter_context(worker)
        wait_for(lambda: serving(f"http://127.0.0.1:{port}"), 60, "the worker's web server")
        servers = {}
        for name, token in (("right", right), ("wrong", wrong)):
            server = start_prometheus(binary, tmp_path / name, [port], scrape={
                "authorization": {"type": "Bearer", "credentials_file": str(token)}})
            stack.callback(server.process.stop)
            servers[name] = server
        wait_for(lambda: servers["right"].targets_up(1), 60, "the scrape with the token")
        wait_for(lambda: target_health(servers["wrong"]) == "down", 60, "a refused scrape")
        assert "401" in target_error(servers["wrong"])


def target_health(server: Prometheus) -> str:
    targets = server.api("/api/v1/targets", state="active")["activeTargets"]
    return targets[0]["health"] if targets else "none"


def target_error(server: Prometheus) -> str:
    return str(server.api("/api/v1/targets", state="active")["activeTargets"][0]["lastError"])


def test_the_compose_scrape_config_works_without_a_token(
    deployment: Deployment, tmp_path: Path,
) -> None:
    """deploy/prometheus ships an empty metrics_token: a worker that asks for none is up."""
    binary = require_tool("prometheus")
    shipped = REPO / "deploy" / "prometheus" / "metrics_token"
    assert shipped.read_text() == ""
    worker, port = deployment.start_worker()
    with ExitStack() as stack:
        stack.enter_context(worker)
        server = start_prometheus(binary, tmp_path / "empty", [port], scrape={
            "authorization": {"type": "Bearer", "credentials_file": str(shipped)}})
        stack.callback(server.process.stop)
        wait_for(lambda: server.targets_up(1), 60, "the scrape with an empty token file")
