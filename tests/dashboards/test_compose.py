"""docker-compose.yml checked without Docker: services, dependencies, mounts, ports, the
workers' settings, and the Prometheus / Grafana files it mounts. ``docker compose config``
runs too when a Compose CLI is installed (it needs no engine)."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from retention_tracker.streams.settings import SETTINGS_DOC

from .promql import REPO

COMPOSE = REPO / "docker-compose.yml"


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


def test_docker_compose_config() -> None:
    """``docker compose config`` parses and interpolates the file without an engine."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True
                                        ).returncode != 0:
        pytest.skip("no Docker Compose CLI (docker compose) on this machine")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
