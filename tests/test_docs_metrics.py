"""docs/metrics.md says what each figure means, with worked examples; this keeps them true.

Every ```json metrics-example``` block of the document is run here: its events go through
the production path (the parser, ``plan.plan_batch``, the Lua apply on the session's real
redis-server, the query layer; win-back: the plan and the notifier's pure planning on the
event clock) and through the batch reference (``retention_tracker.bench.reference``), and
both must give the figures the document states. The document's tables of reasons, causes
and metric names must match the code's closed sets.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from retention_tracker.bench import lapse_reference, reference
from retention_tracker.config.settings import SETTINGS_DOC
from retention_tracker.state.at_risk import StoredFit, at_risk_report, at_risk_user_report
from retention_tracker.state.queries import (
    cohort_report,
    headline_report,
    kpis_report,
    nps_report,
    pipeline_report,
    repeat_purchase_report,
    summary_report,
    value_segments_report,
)
from retention_tracker.streams.calendar import MS_PER_DAY, AppCalendar, date_to_day
from retention_tracker.streams.catalogue import COUNTERS, GAUGES
from retention_tracker.streams.counters import Stat
from retention_tracker.streams.events import (
    FORWARD_CAUSES,
    REJECT_REASONS,
    Event,
    parse_message,
)
from retention_tracker.streams.figures import winback_counts
from retention_tracker.streams.lapse_model import LapseParams, at_risk_day
from retention_tracker.streams.plan import adds_up, dedup_key_of, lapse_cell, plan_batch
from retention_tracker.streams.segments import DEFAULT_RULES
from retention_tracker.streams.user_state import UserState
from retention_tracker.streams.winback import WinbackRules, plan_notifications

from .streams.real_apply import RealApply

DOC = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
EXAMPLES = {
    block["example"]: block
    for block in (json.loads(text) for text in
                  re.findall(r"```json metrics-example\n(.*?)\n```", DOC, flags=re.DOTALL))
}
FAR_FUTURE_MS = 4_102_444_800_000  # 2100: no event of the examples is "in the future"


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def events_of(example: dict[str, Any]) -> list[Event]:
    """The example's §1 JSON read by the production parser and by the reference's own
    reader, which must agree (and accept every event)."""
    events = []
    custom = frozenset(example.get("activity_events", ()))  # ACTIVITY_EVENTS
    for obj in example["events"]:
        raw = orjson.dumps(obj)
        parsed = parse_message(raw, FAR_FUTURE_MS, activity_types=custom)
        assert not parsed.rejects, (obj, parsed.rejects)
        [(_, event)] = parsed.events
        assert reference.read_message(raw, FAR_FUTURE_MS,
                                      activity_types=custom) == [(-1, event)], obj
        events.append(event)
    return events


def subset(got: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for key, value in expected.items():
        assert key in got, (where, key)
        assert got[key] == value, (where, key, got[key], value)


def by_label(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


def test_the_examples_are_there() -> None:
    assert set(EXAMPLES) == {"dead-letters", "first-week", "winback", "casino",
                             "satisfaction", "windows-24h", "at-risk"}


# ---- the closed sets the document lists -------------------------------------------------


def table_names(heading: str) -> list[str]:
    """The first column of the markdown table under the row ``| <heading> |``."""
    lines = DOC[DOC.index(f"| {heading} |"):].splitlines()[2:]
    names = []
    for line in lines:
        if not line.startswith("|"):
            break
        names.append(line.split("|")[1].strip().strip("`"))
    return names


def test_the_reasons_table_is_the_closed_set_of_reasons() -> None:
    assert table_names("reason") == list(REJECT_REASONS)


def test_the_causes_table_is_the_closed_set_of_forward_causes() -> None:
    assert sorted(table_names("cause")) == sorted(FORWARD_CAUSES)


def test_every_exported_metric_is_defined() -> None:
    for name in [*(g.name for g in GAUGES), *(c.name for c in COUNTERS)]:
        assert f"`{name}" in DOC, name


def test_every_setting_named_exists() -> None:
    settings = {doc.env for doc in SETTINGS_DOC}
    named = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`", DOC)) | {
        n for n in re.findall(r"`([A-Z]{4,})`", DOC)}
    assert named, "the document names its settings"
    assert named <= settings, named - settings


# ---- dead letters -----------------------------------------------------------------------


def test_dead_letter_example() -> None:
    example = EXAMPLES["dead-letters"]
    now = ms(example["now"])
    for message in example["messages"]:
        raw = message["raw"].encode()
        parsed = parse_message(raw, now)
        reasons = message["reasons"]
        accepted = message.get("accepted", 0 if reasons else 1)
        assert [r.reason for r in parsed.rejects] == reasons, message["raw"]
        assert len(parsed.events) == accepted, message["raw"]
        # the reference's reader, which knows no reasons, rejects and accepts the same
        read = reference.read_message(raw, now)
        assert sum(e is not None for _, e in read) == accepted, message["raw"]
        assert sum(e is None for _, e in read) == len(reasons), message["raw"]


def test_too_old_is_behind_the_watermark_by_more_than_the_horizon() -> None:
    """The one reason the plan gives, not the parser: 400 days behind the watermark."""
    watermark = ms("2024-01-10T00:00:00+00:00")
    old = Event("a", "x", "session", "u", watermark - 400 * MS_PER_DAY - 1)
    edge = Event("a", "y", "session", "u", watermark - 400 * MS_PER_DAY)
    plan = plan_batch([(0, -1, old), (1, -1, edge)], {("a", "u"): None}, set(), watermark,
                      400, {"a": AppCalendar("UTC")})
    assert [e for _, _, e in plan.too_old] == [old]
    assert sum(v for k, v in plan.stats.items() if "too_old" in k) == 1


# ---- a first week: every figure, through Redis and through the reference ------------------


def reference_headline(rows: list[dict[str, Any]], n: int) -> tuple[float, float | None] | None:
    """§4 read plainly: the latest cohort whose day n is complete, and the mean of the 7
    such cohorts before it."""
    done = [r for r in rows if len(r["complete"]) > n and r["complete"][n]]
    if not done:
        return None
    before = [r["counts"][n] / r["size"] for r in done[-8:-1]]
    return (round(done[-1]["counts"][n] / done[-1]["size"], 4),
            round(sum(before) / len(before), 4) if before else None)


async def check_first_week(state: RealApply, events: list[Event]) -> None:
    example = EXAMPLES["first-week"]
    tz = example["timezone"]
    store, cfg = state.store, state.settings
    now = max(e.ts_ms for e in events)
    assert await store.reads.watermark_ms() == now
    for check in example["expect"]:
        figure = check["figure"]
        if figure == "pipeline":
            got = (await pipeline_report(store, cfg)).as_json()
            assert got["accepted"]["a"] == check["accepted"]
            assert got["duplicates"]["a"] == check["duplicates"]
            # every event is accepted or a duplicate; only copies that add up are duplicates
            assert sum(check["accepted"].values()) + check["duplicates"] == len(events)
            assert check["duplicates"] == (sum(map(adds_up, events))
                                           - sum(map(adds_up, reference.dedup(events))))
        elif figure == "summary":
            day = date.fromisoformat(check["date"])
            subset((await summary_report(store, cfg, "a", day)).as_json(), check["values"],
                   check["date"])
            subset(reference.summary(events, "a", day, tz, now_ms=now), check["values"],
                   f"reference {check['date']}")
        elif figure == "cohorts":
            g, kind, seg = check["granularity"], check["kind"], check.get("where")
            currency = check.get("currency")
            got = (await cohort_report(store, cfg, "a", g, kind, where=(seg,) if seg else (),
                                      currency=currency)).as_json()
            where = dict([seg.split("=")]) if seg else None
            if kind in reference.KINDS:
                ref = reference.triangle(events, "a", g, kind, tz, now, where=where)
            else:
                ref = reference.money_triangle(events, "a", g, kind, tz, now,
                                               currency or "USD", where=where)
            assert got["cohorts"] == ref, check
            rows = by_label(got["cohorts"], "cohort")
            assert set(rows) == set(check["rows"]), check
            for label, expected in check["rows"].items():
                subset(rows[label], expected, f"{g} {kind} {label}")
        elif figure == "headline":
            got = (await headline_report(store, cfg, "a")).as_json()["headline"]
            subset(got, check["values"], "headline")
            rows = reference.triangle(events, "a", "day", "classic", tz, now)
            for n in (1, 7, 30):
                pair = reference_headline(rows, n)
                assert (got[f"d{n}"], got[f"d{n}_mean7"]) == (pair or (None, None)), n
        elif figure == "repeat_purchase":
            got = (await repeat_purchase_report(store, cfg, "a", "week")).as_json()
            assert got["lifetime"] == check["lifetime"]
            assert reference.repeat_purchase_rate(events, "a", tz) == check["lifetime"]
        elif figure == "kpis":
            got = (await kpis_report(store, cfg, "a", check["period"])).as_json()["periods"]
            assert got == reference.kpis(events, "a", check["period"], tz, now_ms=now)
            rows = by_label(got, "period")
            assert set(rows) == set(check["rows"])
            for label, expected in check["rows"].items():
                subset(rows[label], expected, f"kpis {label}")
        elif figure == "segments":
            got = (await value_segments_report(store, cfg, "a")).as_json()
            assert {s["segment"]: s["users"] for s in got["segments"]} == check["users"]
            profiles = reference.user_profiles(reference.dedup(events), "a")
            ref = Counter(p["value"] for p in profiles.values())
            assert {v: ref.get(v, 0) for v in check["users"]} == check["users"]
        else:
            pytest.fail(f"no check for figure {figure!r}")


async def test_first_week_in_one_batch(redis_url: str) -> None:
    events = events_of(EXAMPLES["first-week"])
    async with RealApply(redis_url, timezone=EXAMPLES["first-week"]["timezone"]) as state:
        await state.apply(events, events[-1].ts_ms)
        await check_first_week(state, events)


async def test_first_week_one_event_at_a_time_backwards(redis_url: str) -> None:
    """Any arrival order and batching: the same figures."""
    events = events_of(EXAMPLES["first-week"])
    async with RealApply(redis_url, timezone=EXAMPLES["first-week"]["timezone"]) as state:
        for event in reversed(events):
            await state.apply([event], max(e.ts_ms for e in events))
        await check_first_week(state, events)


# ---- game events and a new year -----------------------------------------------------------


async def check_example(name: str, state: RealApply, events: list[Event]) -> None:
    """The checks of the examples after the first week: pipeline, summary, kpis, nps."""
    example = EXAMPLES[name]
    tz = example["timezone"]
    store, cfg = state.store, state.settings
    now = max(e.ts_ms for e in events)
    for check in example["expect"]:
        figure = check["figure"]
        if figure == "pipeline":
            got = (await pipeline_report(store, cfg)).as_json()
            assert got["accepted"]["a"] == check["accepted"]
        elif figure == "summary":
            day = date.fromisoformat(check["date"])
            subset((await summary_report(store, cfg, "a", day)).as_json(), check["values"],
                   check["date"])
            subset(reference.summary(events, "a", day, tz, now_ms=now), check["values"],
                   f"reference {check['date']}")
        elif figure == "cohorts":  # retention, on any activity or a returning event
            g, kind, returning = check["granularity"], check["kind"], check.get("returning")
            assert returning is None or returning in example["return_events"]
            assert set(example.get("return_events", ())) <= set(cfg.return_events)
            window = check.get("window", "calendar")  # "24h": 24-hour windows
            got = (await cohort_report(store, cfg, "a", g, kind, returning=returning,
                                       window=window)).as_json()["cohorts"]
            assert got == reference.triangle(events, "a", g, kind, tz, now,
                                             returning=returning, window=window), check
            rows = by_label(got, "cohort")
            assert set(rows) >= set(check["rows"]), check
            for label, expected in check["rows"].items():
                subset(rows[label], expected, f"{g} {kind} {returning} {label}")
        elif figure == "nps":
            seg, by = check.get("where"), check.get("by", "period")
            survey = check.get("survey", "nps")
            got = (await nps_report(store, cfg, "a", check["period"], survey,
                                    (seg,) if seg else (), by)).as_json()["rows"]
            assert got == check["rows"], check
            where = dict([seg.split("=")]) if seg else None
            assert reference.nps(events, "a", check["period"], tz, survey, by=by, where=where,
                                 now_ms=now) == check["rows"], check
        elif figure == "kpis":
            got = (await kpis_report(store, cfg, "a", check["period"])).as_json()["periods"]
            assert got == reference.kpis(events, "a", check["period"], tz, now_ms=now)
            rows = by_label(got, "period")
            assert set(rows) == set(check["rows"])
            for label, expected in check["rows"].items():
                subset(rows[label], expected, f"kpis {label}")
        else:
            pytest.fail(f"no check for figure {figure!r}")


def test_an_activity_type_not_named_is_unknown() -> None:
    raw = orjson.dumps({"event_id": "x", "type": "spin", "user_id": "c1", "ts": 0})
    custom = frozenset(EXAMPLES["casino"]["activity_events"])
    assert [r.reason for r in parse_message(raw, FAR_FUTURE_MS, activity_types=custom)
            .rejects] == ["unknown_type"]
    assert reference.read_message(raw, FAR_FUTURE_MS, activity_types=custom) == [(-1, None)]


async def test_casino_in_one_batch_and_backwards(redis_url: str) -> None:
    events = events_of(EXAMPLES["casino"])
    async with RealApply(redis_url, timezone=EXAMPLES["casino"]["timezone"]) as state:
        await state.apply(events, events[-1].ts_ms)
        await check_example("casino", state, events)
    async with RealApply(redis_url, timezone=EXAMPLES["casino"]["timezone"]) as state:
        for event in reversed(events):
            await state.apply([event], events[-1].ts_ms)
        await check_example("casino", state, events)


async def test_windows_24h_in_one_batch_and_one_at_a_time_backwards(redis_url: str) -> None:
    events = events_of(EXAMPLES["windows-24h"])
    now = max(e.ts_ms for e in events)
    async with RealApply(redis_url) as state:
        await state.apply(events, now)
        await check_example("windows-24h", state, events)
    async with RealApply(redis_url) as state:
        for event in reversed(events):  # the late install first: nothing to re-base
            await state.apply([event], now)
        await check_example("windows-24h", state, events)
    async with RealApply(redis_url) as state:
        for event in events:  # the late install last: every window of w3 re-based
            await state.apply([event], now)
        await check_example("windows-24h", state, events)


async def test_satisfaction_in_one_batch_and_one_at_a_time_backwards(redis_url: str) -> None:
    events = events_of(EXAMPLES["satisfaction"])
    async with RealApply(redis_url) as state:
        await state.apply(events, events[-1].ts_ms)
        await check_example("satisfaction", state, events)
    async with RealApply(redis_url) as state:
        for event in reversed(events):
            await state.apply([event], events[-1].ts_ms)
        await check_example("satisfaction", state, events)


# ---- win-back on the event clock ------------------------------------------------------------


def winback_run(events: list[Event], thresholds: tuple[int, ...]) -> dict[str, Any]:
    """One event per batch, on the event clock, the notifier's pass after each batch (as a
    worker with CLOCK=event does): the plan's and the notifier's messages and counters."""
    calendar = AppCalendar("UTC")
    rules = WinbackRules(thresholds=thresholds)
    states: dict[tuple[str, str], UserState | None] = {}
    due: dict[tuple[str, str], int | None] = {}
    seen: set[bytes] = set()
    watermark: int | None = None
    stats: Counter[str] = Counter()
    sent: list[dict[str, object]] = []
    returned: list[dict[str, object]] = []
    for offset, event in enumerate(events):
        user = (event.app, event.user_id)
        plan = plan_batch([(offset, -1, event)], {user: states.get(user)}, seen, watermark,
                          400, {"a": calendar}, DEFAULT_RULES,
                          [dedup_key_of(event)], rules, event_clock=True)
        seen.update(plan.new_dedup_keys)
        watermark = plan.watermark_ms
        assert watermark is not None
        states.update(plan.users)
        stats.update(plan.stats)
        sent += plan.notifications
        returned += plan.reactivations
        due.update(plan.due)
        notified = plan_notifications(
            [(u, at) for u, at in due.items() if at is not None and at <= watermark], states,
            watermark, {"a": calendar}, DEFAULT_RULES, rules, plan.arrivals, plan.known_ms)
        states.update(notified.users)
        stats.update(notified.stats)
        sent += notified.messages
        due.update(notified.due)
    return {"states": states, "stats": stats, "sent": sent, "returned": returned,
            "now": watermark}


def test_winback_example() -> None:
    example = EXAMPLES["winback"]
    events = events_of(example)
    thresholds = tuple(example["thresholds"])
    run = winback_run(events, thresholds)
    episodes = reference.inactivity_episodes(events, thresholds, MS_PER_DAY)
    for days in thresholds:
        expected = example["expect"][str(days)]
        counts = winback_counts(run["stats"], "a", thresholds)

        def total(kind: Stat, days: int = days, counts: Any = counts) -> int:
            return sum(n for per in counts[days, kind].values() for n in per.values())

        notified = [m for m in run["sent"] if m["threshold_days"] == days]
        reactivated = [m for m in run["returned"] if days in m["threshold_days"]]
        expired = run["stats"].get((Stat.EXPIRED, "a", days), 0)
        inactive = sum(1 for s in run["states"].values()
                       if s is not None and s.last_active_ms + days * MS_PER_DAY <= run["now"])
        got = {
            "notified": len(notified), "expired": expired, "reactivated": len(reactivated),
            "back_within_7d": total(Stat.BACK_WITHIN_7D), "false_alarms": total(Stat.FALSE_ALARM),
            "inactive": inactive,
            "back_within_7d_share": round(total(Stat.BACK_WITHIN_7D) / len(notified), 4),
        }
        assert got == expected, days
        assert total(Stat.SENT) == len(notified) and total(Stat.REACTIVATED) == len(reactivated)
        # the reference, read plainly from §7
        assert len({e for e in episodes["sent"] if e[1] == days}) == expected["notified"]
        assert len({e for e in episodes["expired"] if e[1] == days}) == expected["expired"]
        assert len({e for e in episodes["returns"] if e[1] == days}) == expected["reactivated"]
        assert len({e for e in episodes["false_alarms"]
                    if e[1] == days}) == expected["false_alarms"]
        # ids are per episode: no message sent twice
        assert len({m["notification_id"] for m in notified}) == len(notified)


def test_a_day_is_24_hours_in_utc() -> None:
    """The worked examples count gaps in 24-hour days."""
    assert timedelta(days=1) // timedelta(milliseconds=1) == MS_PER_DAY


# ---- risk of lapsing (§9) ---------------------------------------------------------------------


async def test_at_risk_example_one_event_at_a_time_backwards(redis_url: str) -> None:
    """The document's parameters kept as the app's fit; each user's x, t_x, T, P(alive),
    expected days and at-risk day as the document states, P(alive) also by the papers'
    product form over the reference's summaries."""
    example = EXAMPLES["at-risk"]
    events = events_of(example)
    params = LapseParams(**example["params"])
    now = max(event.ts_ms for event in events)
    async with RealApply(redis_url, timezone=example["timezone"]) as state:
        for event in reversed(events):
            await state.apply([event], now)
        fit = StoredFit("bgnbd", params, 0.0, 4, now)
        await state.store.registry.write_lapse_fit("a", fit.encode())
        report = (await at_risk_report(state.store, state.settings, "a")).as_json()
        assert report["params"] == example["params"]
        assert {key: report[key] for key in example["report"]} == example["report"]
        for user, expected in example["users"].items():
            got = (await at_risk_user_report(state.store, state.settings, "a", user)).as_json()
            for key in ("x", "t_x", "T", "at_risk"):
                assert got[key] == expected[key], (user, key)
            for key in ("p_alive", "expected_days_30"):
                assert got[key] == pytest.approx(expected[key], abs=5e-5), (user, key)
            state_of = await state.store.reads.read_user("a", user)
            assert state_of is not None
            _, x, t_x_days, first_day = lapse_cell(state_of)  # type: ignore[misc]
            day = at_risk_day("bgnbd", params, x, t_x_days, first_day, 0.5)
            shown = expected["at_risk_day"]
            assert day == (None if shown is None else date_to_day(date.fromisoformat(shown)))
    today = reference.local_day(now, example["timezone"])
    as_tuple = (params.r, params.alpha, params.a, params.b)
    summaries = reference.lapse_summaries(events, "a", example["timezone"])
    assert sum(summaries.values()) == len(example["users"])
    for x, t_x, first in summaries:
        big_t = (today - first).days
        p = lapse_reference.p_alive("bgnbd", as_tuple, x, t_x / 7, big_t / 7)
        assert any(u["x"] == x and u["T"] == round(big_t / 7, 4)
                   and u["p_alive"] == pytest.approx(p, abs=5e-5)
                   for u in example["users"].values()), (x, t_x, first)
