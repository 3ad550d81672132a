"""A real Prometheus for the end-to-end tests: started on a free port, scraping workers."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retention_tracker.devstack.processes import ManagedProcess, free_port, start_process, wait_for

from ..dashboards.promql import RULE_FILES


@dataclass
class Prometheus:
    process: ManagedProcess
    url: str

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float) -> dict[frozenset[tuple[str, str]], float]:
        data = self.api("/api/v1/query", query=expr, time=f"{at:.3f}")
        if data["resultType"] == "scalar":
            return {frozenset(): float(data["result"][1])}
        return {
            frozenset(item["metric"].items()): float(item["value"][1]) for item in data["result"]
        }

    def ready(self) -> bool:
        if not self.process.alive():
            raise AssertionError(f"prometheus exited; see {self.process.log_path}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def targets_up(self, count: int) -> bool:
        targets = self.api("/api/v1/targets", state="active")["activeTargets"]
        return len(targets) == count and all(t["health"] == "up" for t in targets)


def start_prometheus(binary: str, directory: Path, ports: list[int],
                     scrape: dict[str, Any] | None = None) -> Prometheus:
    """A Prometheus with the repo's rules, scraping the given worker ports every second;
    ``scrape``: more settings of the scrape job (e.g. its ``authorization``)."""
    directory.mkdir(parents=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [{
            "job_name": "retention-worker",
            "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}],
            **(scrape or {}),
        }],
    }
    config_file = directory / "prometheus.yml"
    config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
    for _attempt in range(3):  # the free port may be taken before Prometheus binds it
        port = free_port()
        process = start_process(
            [binary, f"--config.file={config_file}", f"--storage.tsdb.path={directory}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            f"prometheus-{directory.name}", dict(os.environ), directory / "prometheus.log",
        )
        server = Prometheus(process, f"http://127.0.0.1:{port}")
        try:
            wait_for(server.ready, 30, f"prometheus {directory.name}")
            return server
        except AssertionError:
            process.stop()
        except BaseException:
            process.stop()
            raise
    raise AssertionError(f"prometheus did not start; see {directory / 'prometheus.log'}")
