"""The local broker: Apache Kafka where it can run, the Tansu fallback elsewhere, saying why;
and the fallback still runs the worker exactly (the one test that keeps it working)."""

from __future__ import annotations

from pathlib import Path

import pytest

from retention_tracker.devstack.apache_kafka import kafka_unavailable
from retention_tracker.devstack.broker import start_broker
from tests.e2e.harness import event_messages, isolated_deployment, produce
from tests.faults.support import FAST_GROUP, assert_figures_exact, workload

pytestmark = pytest.mark.e2e


def test_without_java_the_local_broker_is_tansu_and_says_why(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder without java
    monkeypatch.delenv("JAVA_HOME", raising=False)
    problem = kafka_unavailable()
    assert problem is not None and "no Java 17" in problem
    with start_broker(log_dir=tmp_path) as broker:
        assert broker.name == "Tansu" and not broker.is_kafka
        assert "fallback" in broker.why and "no Java 17" in broker.why
        assert broker.worker_env == {"KAFKA_IDEMPOTENCE": "false"}
    assert not any(p.alive() for p in broker.processes)


def test_where_java_17_and_the_jars_are_the_local_broker_is_apache_kafka(
        tmp_path: Path) -> None:
    problem = kafka_unavailable()
    if problem:
        pytest.skip(f"Apache Kafka cannot run here: {problem}")
    with start_broker(log_dir=tmp_path) as broker:
        assert broker.name.startswith("Apache Kafka 4.") and broker.is_kafka
        assert broker.worker_env == {}  # idempotent producers, as deployed
        assert broker.processes and all(p.alive() for p in broker.processes)
    assert not any(p.alive() for p in broker.processes)


def test_the_tansu_fallback_runs_the_worker_exactly(redis_url: str, unique: str,
                                                    tmp_path: Path) -> None:
    with start_broker(log_dir=tmp_path, kind="tansu") as broker, \
            isolated_deployment(broker.url, redis_url, unique, tmp_path) as deployment:
        raw = workload(days=8)
        sent = produce(deployment.bootstrap, deployment.topic, event_messages(raw))
        worker, _port = deployment.start_worker(CLOCK="event", **FAST_GROUP,
                                                **broker.worker_env)
        with worker:
            deployment.wait_applied(sent, worker=worker)
        assert_figures_exact(deployment, raw)
