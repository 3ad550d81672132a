"""state/connect.py: the one line a Redis that could not be used is shown as."""

from __future__ import annotations

import redis

from retention_tracker.state.connect import redis_failure


def test_each_way_redis_fails_is_one_line_naming_where() -> None:
    where = "redis://***@10.0.0.5:6379"
    refused = redis_failure(redis.exceptions.AuthenticationError("invalid password"), where)
    assert refused == f"Redis at {where} refused the credentials: invalid password"
    away = redis_failure(redis.exceptions.ConnectionError("Connection refused"), where)
    assert away == f"cannot reach Redis at {where}: Connection refused"
    cluster = redis_failure(redis.exceptions.MovedError("3999 127.0.0.1:6381"), where)
    assert "set REDIS_CLUSTER=true" in cluster
