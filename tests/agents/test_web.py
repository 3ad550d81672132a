"""agents/web.py without a server: the bearer-token check and the report routes (the real
server's answers are tests/e2e/test_api_tokens.py and test_http.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from retention_tracker.agents.web import authorized


def request(**headers: str) -> Any:
    return SimpleNamespace(headers=headers)


def test_no_token_configured_lets_everyone_in() -> None:
    assert authorized(request(), "")
    assert authorized(request(Authorization="Bearer whatever"), "")


def test_only_the_bearer_token_itself_is_let_in() -> None:
    assert authorized(request(Authorization="Bearer s3cret"), "s3cret")
    assert authorized(request(Authorization="bearer s3cret"), "s3cret")  # scheme: any case
    assert not authorized(request(), "s3cret")
    assert not authorized(request(Authorization="Bearer s3cre"), "s3cret")
    assert not authorized(request(Authorization="Bearer s3cretX"), "s3cret")
    assert not authorized(request(Authorization="Basic s3cret"), "s3cret")
    assert not authorized(request(Authorization="s3cret"), "s3cret")
