"""The pieces of the Apache Kafka launcher that need no broker: ids, settings, Java."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from retention_tracker.devstack.apache_kafka import (
    PER_NODE,
    _cluster_id,
    kafka_unavailable,
    kafka_version,
    read_properties,
)


def test_cluster_ids_are_kafka_uuids_never_read_as_an_option() -> None:
    ids = {_cluster_id() for _ in range(3000)}  # one in 64 raw draws starts with a dash
    assert len(ids) == 3000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_the_shared_settings_leave_each_node_its_identity() -> None:
    shared = read_properties()
    assert not set(PER_NODE) & set(shared)
    assert int(shared["message.max.bytes"]) >= 2 << 20  # a 1 MiB dead letter fits
    assert kafka_version().startswith("4.")


def test_properties_files_skip_comments(tmp_path: Path) -> None:
    path = tmp_path / "x.properties"
    path.write_text("# comment\n! also\n\na.b = 1\nc=x=y\n")
    assert read_properties(path) == {"a.b": "1", "c": "x=y"}


@pytest.mark.parametrize(("shown", "says"), [('openjdk version "1.8.0_402"', "is 8"),
                                              ('openjdk version "11.0.2" 2019', "is 11")])
def test_an_old_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: str,
                              says: str) -> None:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text(f"#!/bin/sh\necho '{shown}' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    problem = kafka_unavailable()
    assert problem is not None and "no Java 17" in problem and says in problem


def test_java_17_with_the_jars_is_enough() -> None:
    if not os.environ.get("CI") and kafka_unavailable():
        pytest.skip(f"not set up here: {kafka_unavailable()}")
    assert kafka_unavailable() is None  # CI: scripts/setup must have made Kafka runnable
