"""What a new user meets following the README (issue 30): `retention simulate` fills every
figure (survey answers, the custom types of ACTIVITY_EVENTS, install costs), payer retention
answers without a setting, a rate over nobody is null, not 0, over HTTP and the CLI, and
`retention tail` of the dead-letter topic shows each letter's reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from retention_tracker.devstack.processes import wait_for
from retention_tracker.streams.simulation import MALFORMED_KINDS

from .harness import Deployment, get, get_json, topic_ends

pytestmark = pytest.mark.e2e

CUSTOM = "bet,spin"  # level_up is one of the simulator's malformed unknown types


def test_simulate_fills_every_panel_and_payers_return_by_default(
        deployment: Deployment) -> None:
    setup = {"ACTIVITY_EVENTS": CUSTOM, "INACTIVITY_THRESHOLDS": "2,30", "CLOCK": "event"}
    deployment.cli("simulate", "--days", "8", "--installs-per-day", "25",
                   "--seconds-per-day", "0", "--seed", "5", "--malformed-rate", "0.005",
                   **setup)
    sent = sum(topic_ends(deployment.bootstrap, deployment.topic).values())
    worker, port = deployment.start_worker(**setup)
    base = f"http://127.0.0.1:{port}"

    def http(path: str) -> Any:
        return get_json(base + path)

    with worker:
        deployment.wait_applied(sent, worker=worker)
        wait_for(lambda: get(f"{base}/retention/apps")[0] == 200, 30, "web server")
        pipeline = http("/retention/pipeline")
        accepted = pipeline["accepted"]["default"]
        assert accepted["bet"] > 0 and accepted["spin"] > 0 and accepted["survey"] > 0
        assert sum(pipeline["rejected"].values()) > 0
        assert set(pipeline["rejected"]) <= set(MALFORMED_KINDS.values())
        # what a dead letter says, as `retention tail` shows it: the reason is in its headers
        tail = deployment.cli("tail", deployment.dlq, "--from-beginning", "--limit", "1")
        letter = orjson.loads(tail.stdout)
        assert letter["headers"]["reason"] in pipeline["rejected"]
        assert letter["headers"]["source"].startswith(deployment.topic + "/")
        # NPS: answers in the simulated weeks, on the CLI and over HTTP
        nps = deployment.cli_json("nps", **setup)
        assert sum(row["answers"] for row in nps["rows"]) > 0
        assert http("/retention/nps")["rows"] == nps["rows"]
        # payer retention, no RETURN_EVENTS set (purchase by default)
        payers = deployment.cli_json("report", "--returning", "purchase", **setup)
        assert payers["cohorts"] and any(any(c["counts"][1:]) for c in payers["cohorts"])
        # install costs: ROAS has figures
        roas = deployment.cli_json("report", "--kind", "roas", "--granularity", "week", **setup)
        assert any(v is not None for c in roas["cohorts"] for v in c["values"])
        # nobody has been away 30 days in 8: no rate (null in JSON, '-' on the CLI)
        winback = http("/retention/summary")["winback"]
        assert winback["30"]["notified"] == 0 and winback["30"]["back_within_7d_share"] is None
        assert winback["2"]["notified"] > 0
        assert winback["2"]["back_within_7d_share"] is not None
        text = deployment.cli("summary", **setup).stdout
        [row] = [line for line in text.splitlines() if line.lstrip().startswith("30d ")]
        assert row.split()[-1] == "-"
