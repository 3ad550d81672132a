"""API_TOKEN and METRICS_TOKEN: the reports and /metrics answer 401 without their bearer
token, each token opens only its own door, and the page and /health stay open."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from retention_tracker.agents.local_stack import wait_for

from .harness import Deployment, isolated_deployment

pytestmark = pytest.mark.e2e

API_TOKEN = "api-secret-1"
METRICS_TOKEN = "metrics-secret-2"


@pytest.fixture
def deployment(kafka_url: str, redis_url: str, unique: str, tmp_path: Path):
    with isolated_deployment(kafka_url, redis_url, unique, tmp_path) as d:
        yield d


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
