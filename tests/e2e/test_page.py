"""The worker's page in a real headless Chromium, and the reports people read at a glance.

One worker with simulated data serves the module: the page's rendered DOM must show the
JSON endpoints' numbers; the CLI's text must flag live numbers and refuse bad input in one
line; HTTP errors name the query parameter.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from retention_tracker.bench import reference
from retention_tracker.devstack.processes import ManagedProcess, wait_for
from retention_tracker.streams.calendar import utc_now_ms
from retention_tracker.streams.events import validate_event

from .harness import (
    Deployment,
    event_messages,
    get,
    isolated_deployment,
    produce,
    samples,
    simulated,
    yesterday_at,
)

pytestmark = pytest.mark.e2e
VIRTUAL_TIME_MS = 10_000  # two refreshes of the page (REFRESH_MS is 5 s)


@dataclass
class Served:
    deployment: Deployment
    base: str
    raw: list[dict[str, Any]]
    worker: ManagedProcess

    def json(self, path: str) -> Any:
        status, body = get(self.base + path)
        assert status == 200, body
        return orjson.loads(body)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.deployment.cli(*args, check=False, CLOCK="event")


@pytest.fixture(scope="module")
def served(kafka_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    name = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp(f"page-{name}")
    with isolated_deployment(kafka_url, redis_url, name, tmp) as d:
        # the last day runs to 18:00 UTC whenever the test runs, with CLOCK=event: "today"
        # holds the same events (a purchase at 10:54 among them) at any time of day
        raw = simulated(days=24, seed=5, end_ms=yesterday_at(18))
        sent = produce(d.bootstrap, d.topic, event_messages(raw))
        worker, port = d.start_worker(CLOCK="event", METRICS_REFRESH_S="1")
        with worker:
            d.wait_applied(sent, worker=worker)
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: get(f"{base}/retention/summary")[0] == 200, 30, "web server")
            yield Served(d, base, raw, worker)


# ---- the browser ----------------------------------------------------------------------------


def chromium(*args: str, profile: Path, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once. Missing Chromium fails: scripts/setup installs it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed: run scripts/setup as root (apt-get install "
                    "chromium)")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    # its own process group, so a hung run is stopped with all its helpers, by our PID
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout_s)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


class Elements(HTMLParser):
    """Every element with an id or data-* attribute: its attributes and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = {"tag": tag, **{k: v or "" for k, v in attrs}, "text": ""}
        self.found.append(node)
        if tag not in ("br", "img", "input", "meta", "link", "col"):
            self._open.append(node)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for node in self._open:
            node["text"] += data

    def by_id(self, ident: str) -> dict[str, Any]:
        (node,) = [n for n in self.found if n.get("id") == ident]
        return node


def rendered(served: Served, query: str, profile: Path, ready: bool = True,
             window: str | None = None) -> Elements:
    """The page's DOM once its data is drawn; ``window``: Chromium's window size (W,H)."""
    size = [f"--window-size={window}"] if window else []
    result = chromium(f"--virtual-time-budget={VIRTUAL_TIME_MS}", *size, "--dump-dom",
                      f"{served.base}/?{query}", profile=profile)
    assert result.returncode == 0, result.stderr[-2000:]
    page = Elements()
    page.feed(result.stdout)
    body = next(n for n in page.found if n["tag"] == "body")
    if ready:
        assert body.get("data-ready") == "1", body.get("data-error") or result.stdout[:2000]
    return page


def number(value: str) -> float | None:
    return None if value in ("", "null") else float(value)


def test_the_page_shows_the_json_endpoints_numbers(served: Served, tmp_path: Path) -> None:
    page = rendered(served, "app=default&kind=classic&granularity=week&period=week",
                    tmp_path / "profile")
    summary = served.json("/retention/summary?app=default")
    for key in ("dau", "wau", "mau", "installs", "new_users", "returning_users"):
        node = page.by_id(f"stat-{key}")
        assert int(node["data-value"]) == summary[key], key
        assert f"{summary[key]:,}" in node["text"], key
    assert "reinstalls" in page.by_id("installs-note")["text"]

    cohorts = served.json("/retention/cohorts?app=default&kind=classic&granularity=week")
    rows = [n["data-cohort"] for n in page.found if "data-cohort" in n]
    sizes = [int(n["data-size"]) for n in page.found if "data-size" in n]  # one per row
    assert dict(zip(rows, sizes, strict=True)) == {r["cohort"]: r["size"]
                                                    for r in cohorts["cohorts"]}
    assert len(rows) == len(cohorts["cohorts"]) >= 3
    first = cohorts["cohorts"][0]
    cells = [n for n in page.found if n.get("data-offset") and n["tag"] == "td"]
    cell = next(n for n in cells if n["data-offset"] == "1" and n["title"].startswith(
        first["cohort"] + " "))
    assert number(cell.get("data-value", "")) == first["values"][1]
    assert cell["text"] == f"{first['values'][1] * 100:.1f}%" + (
        "" if first["complete"][1] else "~")
    newest = cohorts["cohorts"][-1]
    assert sum("incomplete" in n["class"] for n in cells) >= 1 and not newest["complete"][0]

    kpis = served.json("/retention/kpis?app=default&period=week")["periods"]
    shown = {n["data-period"]: n for n in page.found if "data-period" in n}
    assert list(shown) == [p["period"] for p in kpis]
    crr = [n for n in page.found if n.get("data-field") == "crr"]
    assert [number(n.get("data-value", "")) for n in crr] == [p["crr"] for p in kpis]
    assert shown[kpis[-1]["period"]]["data-complete"] == "false"
    assert "not ended" in shown[kpis[-1]["period"]]["text"]

    headline = served.json("/retention/headline?app=default")["headline"]
    assert number(page.by_id("headline-d1").get("data-value", "")) == headline["d1"]
    assert headline["d1"] is not None

    # §9: the page's request fitted the model; the JSON reads the fit it kept
    at_risk = served.json("/retention/at-risk?app=default")
    flags = {n["data-flag"]: n for n in page.found if "data-flag" in n}
    assert int(flags["at_risk"]["data-users"]) == at_risk["at_risk"]
    assert int(flags["inactive_2d"]["data-users"]) == summary["winback"]["2"]["inactive"]
    assert number(flags["at_risk"]["data-value"]) == pytest.approx(
        at_risk["at_risk"] / at_risk["users_now"])
    assert at_risk["model"] in page.by_id("at-risk-as-of")["text"]


def test_the_page_shows_nps_money_split_and_live_points(served: Served, tmp_path: Path) -> None:
    page = rendered(served, "app=default&period=week", tmp_path / "profile")
    kpis = served.json("/retention/kpis?app=default&period=week")["periods"]
    for field in ("new_payers", "returning_payers"):
        shown = [number(n.get("data-value", "")) for n in page.found
                 if n.get("data-field") == field]
        assert shown == [p[field] for p in kpis], field
    money = [n["text"] for n in page.found if n.get("data-field") == "returning_revenue"]
    last = kpis[-1]["returning_revenue"]
    assert all(f"{v:,.2f} {c}" in money[-1] for c, v in last.items()) and last

    nps = served.json("/retention/nps?app=default&period=week")
    rows = {n["data-nps-period"]: n for n in page.found if "data-nps-period" in n}
    assert list(rows) == [r["period"] for r in nps["rows"]] and sum(
        r["answers"] for r in nps["rows"]) > 0
    assert "not ended" in rows[nps["live_period"]]["text"]

    # the day and the periods that have not ended are drawn apart (dashed, hollow points)
    assert page.by_id("chart-dau")["data-live"] == "DAU|installs"
    assert page.by_id("chart-stickiness")["data-live"] == "stickiness"
    ltv = served.json("/retention/cohorts?app=default&kind=ltv&granularity=week&currency=USD")
    live = [r["cohort"] for r in ltv["cohorts"][-8:] if not all(r["complete"])]
    assert page.by_id("chart-ltv")["data-live"].split("|") == live and live
    # offsets since install are whole periods, up to the widest row
    for chart in ("chart-ltv", "chart-roas"):
        ticks = [float(t) for t in page.by_id(chart)["data-ticks"].split(",")]
        assert all(t == int(t) for t in ticks) and min(ticks) >= 0 and max(ticks) <= 5, ticks


def test_an_app_without_data_is_named_not_replaced(served: Served, tmp_path: Path) -> None:
    page = rendered(served, "app=nosuchapp", tmp_path / "profile", ready=False)
    body = next(n for n in page.found if n["tag"] == "body")
    assert body.get("data-ready") == "0"
    assert body["data-error"] == "no such app: 'nosuchapp' (apps with data: default)"
    assert "no such app" in page.by_id("status")["text"]


def test_the_segment_picker_reads_the_segments_figures(served: Served, tmp_path: Path) -> None:
    page = rendered(served, "app=default&where=value%3Dpayer", tmp_path / "profile")
    summary = served.json("/retention/summary?app=default&where=value%3Dpayer")
    everyone = served.json("/retention/summary?app=default")
    assert int(page.by_id("stat-mau")["data-value"]) == summary["mau"] < everyone["mau"]
    assert "per app only" in page.by_id("winback-as-of")["text"]


def test_the_daily_charts_share_a_wide_row_equally(served: Served, tmp_path: Path) -> None:
    """On a wide screen the catalogue's daily charts stand side by side, each drawn at its
    own cell's width (drawn as each cell was added, the first took the whole row and the
    others were drawn over it)."""
    page = rendered(served, "app=default", tmp_path / "profile", window="1400,2300")
    charts = [c["id"] for c in served.json("/retention/figures")["charts"]]
    widths = [int(page.by_id(f"chart-{chart}")["data-width"]) for chart in charts]
    assert len(charts) == 3 and len(set(widths)) == 1 and sum(widths) < 1400, widths


def test_screenshot_of_the_page(served: Served, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    result = chromium(f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--window-size=1400,2300",
                      "--hide-scrollbars", f"--screenshot={shot}", f"{served.base}/",
                      profile=tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # drawn, not blank
    target = os.environ.get("RETENTION_SCREENSHOT")  # README's picture: docs/page.png
    if target:
        shutil.copyfile(shot, target)


def test_the_page_is_served_offline_with_its_library(served: Served) -> None:
    status, html = get(served.base + "/")
    assert status == 200 and b"<title>retention tracker</title>" in html
    for path in re.findall(rb'(?:src|href)="(/static/[^"]+)"', html):
        status, body = get(served.base + path.decode())
        assert status == 200 and body, path
    assert b"http" not in re.sub(rb"<!--.*?-->", b"", html)  # no CDN
    license_status, license_text = get(served.base + "/static/vendor/uplot-1.6.32/LICENSE")
    assert license_status == 200 and b"MIT" in license_text
    assert get(served.base + "/health") == (200, b'{"status":"OK"}')


def test_the_window_toggle_shows_retention_in_24_hour_windows(served: Served,
                                                              tmp_path: Path) -> None:
    """The page's "days" toggle: daily cohorts in 24-hour windows, the endpoint's rows, which
    are the reference's from the raw events; the CLI's --window 24h the same."""
    page = rendered(served, "app=default&kind=classic&granularity=week&window=24h",
                    tmp_path / "profile")
    doc = served.json("/retention/cohorts?app=default&kind=classic&granularity=day&window=24h")
    assert doc["window"] == "24h"
    events = [validate_event(e, utc_now_ms()) for e in served.raw]
    watermark = max(e.ts_ms for e in events)
    assert doc["cohorts"] == reference.triangle(events, "default", "day", "classic", "UTC",
                                                watermark, window="24h")
    rows = [n["data-cohort"] for n in page.found if "data-cohort" in n]
    assert rows == [r["cohort"] for r in doc["cohorts"]] and len(rows) >= 20  # daily
    first = doc["cohorts"][0]
    cell = next(n for n in page.found if n["tag"] == "td" and n.get("data-offset") == "1"
                and n["title"].startswith(first["cohort"] + " "))
    assert number(cell["data-value"]) == first["values"][1]
    shown = orjson.loads(served.cli("report", "--window", "24h", "--kind", "rolling",
                                    "--json").stdout)
    assert shown["cohorts"] == reference.triangle(events, "default", "day", "rolling", "UTC",
                                                  watermark, window="24h")
    text = served.cli("report", "--window", "24h").stdout
    assert "in 24h windows from each user's first event" in text.splitlines()[0]
    refused = served.cli("report", "--window", "24h", "--granularity", "week")
    assert "--window: 24-hour windows are counted for daily cohorts" in one_line(refused)
    status, body = get(served.base + "/retention/cohorts?window=7h")
    assert status == 400 and orjson.loads(body)["parameter"] == "window"
    figures = served.json("/retention/figures")
    assert [f["key"] for f in figures["daily"]][:3] == ["dau", "wau", "mau"]
    assert figures["windows"] == ["calendar", "24h"]


# ---- the JSON the page reads ----------------------------------------------------------------


def test_daily_series_equals_the_reference(served: Served) -> None:
    events = [validate_event(e, utc_now_ms()) for e in served.raw]
    watermark = max(e.ts_ms for e in events)
    expected = reference.daily_series(events, "default", "UTC")
    got = served.json("/retention/daily?app=default")["days"]
    assert len(got) == len(expected) >= 20
    for figures, (day, want) in zip(got, expected.items(), strict=True):
        complete = figures.pop("complete")
        assert complete == (reference.period_end_ms(day, "day", "UTC") <= watermark)
        assert figures == want, day
    assert served.json("/retention/apps")["apps"] == [
        {"app": "default", "timezone": "UTC", "currency": "USD", "thresholds": [2]}]


def test_pipeline_and_money_gauges(served: Served) -> None:
    pipeline = served.json("/retention/pipeline")
    assert sum(pipeline["accepted"]["default"].values()) > 0
    assert pipeline["duplicates"]["default"] > 0  # simulated() duplicates 5%
    assert set(pipeline["lag"]) == {f"{served.deployment.topic}/{p}" for p in range(4)}

    day = served.json("/retention/cohorts?app=default&kind=ltv&currency=USD")["cohorts"][-8]
    key = (("app", "default"), ("cohort", day["cohort"]), ("currency", "USD"), ("offset", "7"))
    texts: list[str] = []

    def exported() -> bool:  # the snapshot of Redis is refreshed every second
        texts[:] = [get(served.base + "/metrics")[1].decode()]
        return samples(texts[0], "retention_cohort_ltv").get(key) == day["values"][7]

    wait_for(exported, 30, "the cohort's LTV on /metrics")
    ltv = samples(texts[0], "retention_cohort_ltv")
    roas = samples(texts[0], "retention_cohort_roas")
    assert {dict(k)["offset"] for k in ltv} <= {"0", "1", "2", "3", "7", "14", "30"}
    assert len({dict(k)["cohort"] for k in ltv}) <= 35  # METRICS_COHORT_DAYS
    assert {dict(k)["currency"] for k in roas} == {"USD"}  # the currency of costs
    assert len({dict(k)["currency"] for k in ltv}) > 1  # simulated() pays in several


# ---- text people read, and bad input --------------------------------------------------------


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_summary_text_is_tables_with_live_numbers_flagged(served: Served) -> None:
    doc = served.json("/retention/summary?app=default")
    text = served.cli("summary").stdout
    assert "(day not ended yet: live numbers)" in text
    assert doc["revenue"], doc  # the last simulated day has a purchase (served's data)
    assert re.search(rf"stickiness\s+{doc['stickiness'] * 100:.1f}%", text)
    assert "{" not in text and "'" not in text.split("note:")[0]  # no Python reprs
    assert re.search(r"currency\s+revenue\s+ARPDAU\s+ARPPU", text)
    for currency, amount in doc["revenue"].items():
        assert re.search(rf"^{currency}\s+{amount:,.2f}\s", text, re.M)
    assert re.search(r"^threshold\s+users\s+inactive now\s+expired\s+notified\s+false alarms"
                     r"\s+reactivated\s+back in 7d$", text, re.M)
    assert re.search(r"^\s+quick\s+\d+\s+\d+\s+\d+", text, re.M)  # by churn type too
    assert "forwarded to their home partition: none" in text
    assert "reinstalls" in text

    past = served.cli("summary", "--date", "2001-01-01").stdout
    assert "day not ended" not in past and "no revenue" in past
    assert "not of 2001-01-01" in past  # win-back is live only, and says so
    assert re.search(r"stickiness\s+-\s", past)  # 0 of 0 is no rate
    as_json = orjson.loads(served.cli("summary", "--date", "2001-01-01", "--json").stdout)
    assert as_json["complete"] is True and as_json["winback_as_of"] == doc["winback_as_of"]


def test_kpis_flag_the_period_that_has_not_ended(served: Served) -> None:
    doc = orjson.loads(served.cli("kpis", "--json").stdout)
    assert [p["complete"] for p in doc["periods"]][-2:] == [True, False]
    text = served.cli("kpis").stdout.splitlines()
    assert text[-2].startswith(doc["periods"][-1]["period"] + "~")
    assert "has not ended yet" in text[-1]
    assert served.json("/retention/kpis?app=default")["periods"] == doc["periods"]


@pytest.mark.parametrize(
    ("args", "http", "expected"),
    [
        (["report", "--kind", "ltv", "--currency", "XYZ"], "cohorts?kind=ltv&currency=XYZ",
         "currency: no revenue in XYZ"),
        (["report", "--kind", "ltv", "--currency", "usd"], "cohorts?kind=ltv&currency=usd",
         "currency: 'usd' must be an ISO 4217 code"),
        (["report", "--kind", "roas", "--currency", "EUR"], "cohorts?kind=roas&currency=EUR",
         "currency: ROAS divides revenue by install costs, which are kept in USD"),
        (["report", "--from", "2026-02-01", "--to", "2026-01-01"],
         "cohorts?from=2026-02-01&to=2026-01-01", "from: 2026-02-01 is after the window's end"),
        (["rpr", "--from", "2026-02-01", "--to", "2026-01-01"],
         "rpr?from=2026-02-01&to=2026-01-01", "from: 2026-02-01 is after the window's end"),
        (["summary", "--where", "colour=red"], "summary?where=colour%3Dred",
         "where: 'colour=red': expected one of"),
        (["summary", "--date", "2026-02-30"], "summary?date=2026-02-30", "date"),
    ],
)
def test_bad_input_is_one_line_and_http_names_the_parameter(
    served: Served, args: list[str], http: str, expected: str
) -> None:
    result = served.cli(*args)
    if "--date" in args:  # a click-level flag check: usage error, exit 2
        assert result.returncode == 2 and "--date" in result.stderr
    else:
        assert f"--{expected}" in one_line(result)
    status, body = get(f"{served.base}/retention/{http}")
    error = orjson.loads(body)
    assert status == 400 and error["error"].startswith(expected), error
    assert "--" not in error["error"] and error["parameter"] == expected.split(":")[0]


def test_a_window_without_buyers_shows_no_rate(served: Served) -> None:
    text = served.cli("rpr", "--from", "2001-01-01", "--to", "2001-01-02").stdout
    assert "window 2001-01-01 to 2001-01-02: - (0 of 0 buyers)" in text
