"""Issue 20's figures through a real worker: custom activity types (ACTIVITY_EVENTS),
retention on a returning event (RETURN_EVENTS), NPS by period, cohort and churn, yearly
KPIs and money from new against returning users, the app's own currency and thresholds,
read over HTTP and compared with the batch reference."""

from __future__ import annotations

import random
from typing import Any

import pytest

from retention_tracker.bench import reference
from retention_tracker.devstack.processes import wait_for
from retention_tracker.streams.calendar import MS_PER_DAY, utc_now_ms

from .harness import Deployment, event_messages, get, get_json, produce, samples, simulated

pytestmark = pytest.mark.e2e


def casino_traffic() -> list[dict[str, Any]]:
    """Simulated traffic with answers, where a tenth of the sessions are bets, plus users
    known only by answers (two of them at the same instant: the larger id wins), answers to
    a second survey and an unnamed custom type (dead-lettered)."""
    raw = simulated(days=20, seed=7, survey_rate=0.1)
    for event in raw:
        if event["type"] == "session" and event["event_id"].endswith("7"):
            event["type"] = "bet"
    now = utc_now_ms()
    rng = random.Random(20)
    for n in range(12):
        ts = now - rng.randrange(20) * MS_PER_DAY
        raw.append({"event_id": f"web-{n}", "type": "survey", "user_id": f"web{n % 5}",
                    "ts": ts, "score": rng.randrange(11), "platform": "web"})
        raw.append({"event_id": f"web-{n}b", "type": "survey", "user_id": f"web{n % 5}",
                    "ts": ts, "score": rng.randrange(11), "survey": "csat"})
    for event_id, score in (("tie-b", 0), ("tie-a", 10)):  # equal times: "tie-b" counts
        raw.append({"event_id": event_id, "type": "survey", "user_id": "web9",
                    "ts": now - 3 * MS_PER_DAY, "score": score})
    raw.append({"event_id": "x-1", "type": "spin", "user_id": "u000001", "ts": now - 1000})
    random.Random(1).shuffle(raw)  # any arrival order
    return raw


def test_nps_yearly_kpis_and_custom_types_equal_the_reference(deployment: Deployment) -> None:
    raw = casino_traffic()
    sent = produce(deployment.bootstrap, deployment.topic, event_messages(raw))
    worker, port = deployment.start_worker(CLOCK="event", METRICS_REFRESH_S="1",
                                           ACTIVITY_EVENTS="bet", RETURN_EVENTS="purchase,bet",
                                           APP_CURRENCIES="default=EUR",
                                           APP_INACTIVITY_THRESHOLDS="default=1/3")
    base = f"http://127.0.0.1:{port}"
    now = utc_now_ms()
    events = [e for e in (reference.read_event(obj, now, activity_types=("bet",))
                          for obj in raw) if e is not None]
    watermark = max(e.ts_ms for e in events)

    def report(path: str) -> Any:
        return get_json(f"{base}{path}")

    with worker:
        deployment.wait_applied(sent, worker=worker)
        wait_for(lambda: get(f"{base}/retention/apps")[0] == 200, 30, "web server")
        accepted = report("/retention/pipeline")["accepted"]["default"]
        assert accepted["bet"] > 0 and accepted["survey"] > 0
        assert report("/retention/pipeline")["rejected"]["unknown_type"] == 1
        for period in ("week", "month", "year"):
            for by in ("period", "churn", "cohort"):
                for survey in ("nps", "csat") if by == "period" else ("nps",):
                    got = report(f"/retention/nps?period={period}&by={by}&survey={survey}")
                    assert got["rows"] == reference.nps(events, "default", period, "UTC",
                                                        survey, by=by, now_ms=watermark), (
                        period, by, survey)
                    assert got["rows"], (period, by, survey)  # something to compare
            got = report(f"/retention/kpis?period={period}")["periods"]
            assert got == reference.kpis(events, "default", period, "UTC", now_ms=watermark)
        for granularity in ("day", "week", "month"):
            for kind in ("classic", "rolling"):
                for returning in ("purchase", "bet"):
                    got = report(f"/retention/cohorts?granularity={granularity}&kind={kind}"
                                 f"&returning={returning}")
                    assert got["returning"] == returning
                    assert got["cohorts"] == reference.triangle(
                        events, "default", granularity, kind, "UTC", watermark,
                        returning=returning), (granularity, kind, returning)
        got = report("/retention/nps?period=week&where=value=free")["rows"]
        assert got == reference.nps(events, "default", "week", "UTC", where={"value": "free"})
        [app] = report("/retention/apps")["apps"]
        assert (app["currency"], app["thresholds"]) == ("EUR", [1, 3])
        assert list(report("/retention/summary")["winback"]) == ["1", "3"]
        roas = report("/retention/cohorts?kind=roas&granularity=week")  # costs in EUR
        assert roas["currency"] == "EUR" and roas["cohorts"] == reference.money_triangle(
            events, "default", "week", "roas", "UTC", watermark, "EUR", default_currency="EUR")
        week = report("/retention/kpis?period=week")["periods"][-2]
        assert week["new_payers"] + week["returning_payers"] == week["payers"]

        def metrics_show_nps() -> bool:
            text = get(f"{base}/metrics")[1].decode()
            answers = samples(text, "retention_nps_answers")
            return any(v > 0 for v in answers.values()) and bool(
                samples(text, "retention_period_payers"))

        wait_for(metrics_show_nps, 30, "NPS and the money split on /metrics")
