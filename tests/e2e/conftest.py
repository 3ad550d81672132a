"""The e2e suite's shared fixture: an isolated tracker on the session's broker and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Deployment, isolated_deployment


@pytest.fixture
def deployment(kafka_url: str, redis_url: str, unique: str, tmp_path: Path
               ) -> Iterator[Deployment]:
    with isolated_deployment(kafka_url, redis_url, unique, tmp_path) as d:
        yield d
