"""docker-compose.yml checked without Docker: services, dependencies, mounts, ports, the
workers' settings, and the Prometheus / Grafana files it mounts. ``docker compose config``
is not run (no Compose CLI here, CI included): instead the file is validated against the
Compose specification's JSON schema, vendored at a pinned commit (compose-spec/)."""

from __future__ import annotations

import copy
import glob
import json
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from retention_tracker.config.settings import SETTINGS_DOC
from retention_tracker.devstack.apache_kafka import (
    PER_NODE,
    SERVER_PROPERTIES,
    kafka_version,
    read_properties,
)
from retention_tracker.devstack.redis_server import HASH_MAX_LISTPACK_ENTRIES

from .promql import REPO

COMPOSE = REPO / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "compose-spec" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of a service's volumes, short or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append((volume["type"], volume.get("source", ""), volume["target"]))
            continue
        source, _, rest = volume.partition(":")
        target = rest.split(":")[0]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        found.append((kind, source, target))
    return found


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repo file a container path of a bind mount comes from (longest mount wins)."""
    best: tuple[int, Path] | None = None
    wanted = PurePosixPath(container_path)
    for kind, source, target in mounts(service):
        if kind != "bind":
            continue
        target_path = PurePosixPath(target)
        if wanted == target_path or target_path in wanted.parents:
            relative = wanted.relative_to(target_path)
            candidate = (REPO / source / relative).resolve()
            if best is None or len(target_path.parts) > best[0]:
                best = (len(target_path.parts), candidate)
    return best[1] if best else None


def flag(service: dict[str, Any], name: str) -> str:
    command = service.get("command", [])
    args = command.split() if isinstance(command, str) else command
    for arg in args:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"no {name} in {command}")


def test_every_service_has_an_image_or_a_build(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        assert "image" in service or "build" in service, name


def test_the_stack_has_its_services(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "worker", "simulator", "prometheus", "alertmanager",
            "alert-webhook", "grafana"} <= set(services(compose))


def test_dependencies_exist(compose: dict[str, Any]) -> None:
    names = set(services(compose))
    for name, service in services(compose).items():
        depends = service.get("depends_on", [])
        targets = set(depends) if isinstance(depends, (list, dict)) else set()
        assert targets <= names, (name, targets - names)
        assert name not in targets


def test_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services(compose).items():
        for kind, source, _target in mounts(service):
            if kind == "bind":
                assert (REPO / source).exists(), f"{name}: {source} is not in the repo"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_published_ports_do_not_collide(compose: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host = str(port.get("published", ""))
            else:
                parts = str(port).split(":")
                host = parts[-2] if len(parts) >= 2 else ""
            if not host:
                continue  # an ephemeral host port cannot collide
            assert host not in seen, f"port {host} of {name} is also published by {seen[host]}"
            seen[host] = name


def test_tracker_containers_get_only_known_settings(compose: dict[str, Any]) -> None:
    known = {doc.env for doc in SETTINGS_DOC}
    tracker = {n: s for n, s in services(compose).items() if "build" in s}
    assert "worker" in tracker
    for name, service in tracker.items():
        env = service.get("environment", {})
        keys = set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
        assert keys <= known, (name, sorted(keys - known))


def test_prometheus_config_and_rules_are_mounted(compose: dict[str, Any]) -> None:
    prometheus = services(compose)["prometheus"]
    config_path = flag(prometheus, "--config.file")
    config_file = host_path(prometheus, config_path)
    assert config_file is not None and config_file.is_file(), config_path
    config = yaml.safe_load(config_file.read_text())
    for pattern in config["rule_files"]:
        matched = glob.glob(str(config_file.parent / pattern))
        assert matched, f"rule_files {pattern} matches nothing next to {config_file}"
    # every replica of the worker is scraped, on the worker's port
    port = services(compose)["worker"]["environment"]["WEB_PORT"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["retention-worker"]["dns_sd_configs"][0]
    assert (sd["names"], sd["type"], str(sd["port"])) == (["worker"], "A", port)
    # alerts go to the compose alertmanager
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]


def test_alertmanager_config_is_mounted_and_its_webhook_exists(compose: dict[str, Any]) -> None:
    alertmanager = services(compose)["alertmanager"]
    config_file = host_path(alertmanager, flag(alertmanager, "--config.file"))
    assert config_file is not None and config_file.is_file()
    config = yaml.safe_load(config_file.read_text())
    urls = [hook["url"] for receiver in config["receivers"]
            for hook in receiver.get("webhook_configs", [])]
    assert urls and all(url.startswith("http://alert-webhook:") for url in urls)
    webhook = services(compose)["alert-webhook"]
    script = host_path(webhook, webhook["command"][-1])
    assert script is not None and script.is_file()


def test_grafana_provisioning_points_at_the_dashboards(compose: dict[str, Any]) -> None:
    grafana = services(compose)["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning is not None and provisioning.is_dir()
    sources = [yaml.safe_load(p.read_text()) for p in (provisioning / "datasources").glob("*.yml")]
    prometheus = [s for f in sources for s in f["datasources"] if s["type"] == "prometheus"]
    assert prometheus and prometheus[0]["url"] == "http://prometheus:9090"
    providers = [yaml.safe_load(p.read_text()) for p in (provisioning / "dashboards").glob("*.yml")]
    paths = [p["options"]["path"] for f in providers for p in f["providers"]]
    assert paths
    for path in paths:
        folder = host_path(grafana, path)
        assert folder is not None and folder.resolve() == (REPO / "dashboards").resolve()
        assert {p.stem for p in folder.glob("*.json")} >= {"live", "retention", "pipeline"}


def compose_validator() -> Any:
    """A validator of the vendored Compose specification schema (compose-spec/README.md);
    without jsonschema (the test extra) the test fails: nothing else checks the file here."""
    try:
        import jsonschema
    except ImportError:
        pytest.fail("jsonschema is missing: install the test extra (scripts/setup does)")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in compose_validator().iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    """The validation is not vacuous: misspelt keys and wrong types fail it."""
    validator = compose_validator()
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["enviroment"] = {"X": "1"}
    broken["services"]["redis"]["ports"] = "6379:6379"
    paths = {tuple(map(str, e.absolute_path)) for e in validator.iter_errors(broken)}
    assert ("services", "worker") in paths and ("services", "redis", "ports") in paths


def test_published_ports_listen_on_loopback_unless_told_otherwise(
    compose: dict[str, Any],
) -> None:
    published = 0
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("${PUBLISH_HOST:-127.0.0.1}:"), (
                name, port)
            published += 1
    assert published >= 4
    assert "ports" not in services(compose)["worker"]  # reached inside the network only


def test_the_workers_get_their_tokens_and_prometheus_scrapes_with_one(
    compose: dict[str, Any],
) -> None:
    env = services(compose)["worker"]["environment"]
    assert env["API_TOKEN"] == "${API_TOKEN:-}"
    assert env["METRICS_TOKEN"] == "${METRICS_TOKEN:-}"
    prometheus = services(compose)["prometheus"]
    config_file = host_path(prometheus, flag(prometheus, "--config.file"))
    assert config_file is not None
    config = yaml.safe_load(config_file.read_text())
    job = {j["job_name"]: j for j in config["scrape_configs"]}["retention-worker"]
    assert job["authorization"]["type"] == "Bearer"
    assert (config_file.parent / job["authorization"]["credentials_file"]).is_file()


def test_the_image_holds_every_package_and_no_test_or_local_extra() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert folders <= copied, sorted(folders - copied)
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("[" not in line for line in installs), installs
    runtime = " ".join(pyproject["project"]["dependencies"])
    for package in pyproject["project"]["optional-dependencies"]["local"]:
        assert package.split(">")[0] not in runtime, package


def kafka_setting(variable: str) -> str:
    """The broker setting an apache/kafka image variable sets: KAFKA_ dropped, lower case,
    ``___`` -> ``-``, ``__`` -> ``_``, ``_`` -> ``.``."""
    name = variable.removeprefix("KAFKA_").lower()
    return name.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")


def test_compose_kafka_and_the_test_brokers_share_one_settings_file(
    compose: dict[str, Any],
) -> None:
    """deploy/kafka/server.properties is the image's file input; the variables add only
    what the tests' brokers add per node (devstack PER_NODE), and the image is the version
    the tests run (deploy/kafka/pom.xml)."""
    kafka = services(compose)["kafka"]
    assert host_path(kafka, "/mnt/shared/config/server.properties") == SERVER_PROPERTIES.resolve()
    shared = read_properties()
    assert {"message.max.bytes", "group.initial.rebalance.delay.ms",
            "offsets.topic.replication.factor"} <= set(shared)
    variables = {kafka_setting(v) for v in kafka["environment"] if v.startswith("KAFKA_")}
    assert variables == set(PER_NODE)
    assert not variables & set(shared)
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"


def test_the_variable_mapping_follows_the_image() -> None:
    assert kafka_setting("KAFKA_LOG_DIRS") == "log.dirs"
    assert kafka_setting("KAFKA_SOME__NAME") == "some_name"
    assert kafka_setting("KAFKA_SOME___NAME") == "some-name"


def test_compose_redis_keeps_hashes_as_the_test_redis_does(compose: dict[str, Any]) -> None:
    """The counters' hashes turn into hash tables past the same number of fields in the
    shipped stack as in the tests and the benchmarks (devstack/redis_server.py says why)."""
    command = services(compose)["redis"]["command"]
    at = command.index("--hash-max-listpack-entries")
    assert command[at + 1] == str(HASH_MAX_LISTPACK_ENTRIES)
