"""The risk-of-lapsing reads (state/at_risk.py) over state written by the real apply on a
real Redis: the fit kept per app, the report and one user's risk, each equal to the same
computation over the batch reference's summaries (bench/reference.py, lapse_reference.py)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from retention_tracker.bench import lapse_reference, reference
from retention_tracker.state.at_risk import (
    StoredFit,
    at_risk_report,
    at_risk_user_report,
    current_fit,
    refit_every_app,
)
from retention_tracker.state.queries import QueryError
from retention_tracker.streams import lapse_fit
from retention_tracker.streams.calendar import MS_PER_DAY, date_to_day
from retention_tracker.streams.events import Event
from retention_tracker.streams.lapse_model import summaries_on

from ..streams.real_apply import RealApply

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAYS = 120


def bgnbd_users(seed: int, users: int) -> list[Event]:
    """Users drawn from BG/NBD itself, on days: a weekly rate ~ Gamma(0.8, 1/2), active on a
    day with probability 1 - e^(-rate/7), gone after an active day with p ~ Beta(1, 4);
    first days spread over the first 90 days, the last event on day DAYS - 1 sets now."""
    rng = random.Random(seed)
    events = []
    for n in range(users):
        rate, dropout = rng.gammavariate(0.8, 2.0), rng.betavariate(1.0, 4.0)
        day = rng.randrange(90)
        while day < DAYS:
            events.append(Event("a", f"u{n}d{day}", "session", f"u{n}",
                                BASE_MS + day * MS_PER_DAY + rng.randrange(MS_PER_DAY)))
            if rng.random() < dropout:
                break
            day += 1
            while day < DAYS and rng.random() > 1 - pow(2.718281828, -rate / 7):
                day += 1
    events.append(Event("a", "now", "session", "clock", BASE_MS + (DAYS - 1) * MS_PER_DAY))
    return events


def reference_summaries(events: list[Event]) -> dict[tuple[int, int, int], int]:
    """(x, t_x days, T days) of every user as of the last event's day, from the reference."""
    anchored = {(x, t, date_to_day(first)): n
                for (x, t, first), n in reference.lapse_summaries(events, "a", "UTC").items()}
    return summaries_on(anchored, date_to_day(reference.local_day(
        max(e.ts_ms for e in events), "UTC")))


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return bgnbd_users(7, 400)


async def test_the_report_is_the_fit_over_the_reference_summaries(
        redis_url: str, events: list[Event]) -> None:
    async with RealApply(redis_url) as state:
        for start in range(0, len(events), 97):  # batches in arrival order, any cut
            await state.apply(events[start:start + 97], BASE_MS)
        report = (await at_risk_report(state.store, state.settings, "a")).as_json()
        kept = StoredFit.decode(await state.store.registry.read_lapse_fit("a") or b"")
        assert await refit_every_app(state.store, state.settings) == ["a"]
    summaries = reference_summaries(events)
    expected = lapse_fit.fit("bgnbd", summaries)
    assert report["model"] == "bgnbd" and report["time_unit"] == "week"
    assert report["users"] == 401 == sum(summaries.values())
    assert report["params"] == expected.params.as_json() == kept.params.as_json()
    assert report["log_likelihood"] == round(expected.log_likelihood, 4)
    assert report["as_of"] == report["now"] and report["now"].startswith("2024-04-29")  # day 119
    as_tuple = tuple(expected.params.as_json().values())
    alive = {cell: lapse_reference.p_alive("bgnbd", as_tuple, cell[0], cell[1] / 7,
                                           cell[2] / 7) for cell in summaries}
    at_risk = sum(n for cell, n in summaries.items() if alive[cell] < 0.5)
    assert report["at_risk"] == at_risk > 0
    assert sum(band["users"] for band in report["p_alive"]) == 401
    low = sum(n for cell, n in summaries.items() if alive[cell] < 0.1)
    assert report["p_alive"][0] == {"from": 0.0, "to": 0.1, "users": low}


async def test_one_users_risk_equals_the_papers_formulas(redis_url: str,
                                                         events: list[Event]) -> None:
    async with RealApply(redis_url) as state:
        await state.apply(events, BASE_MS)
        fit = await current_fit(state.store, state.settings, "a")
        params = tuple(fit.params.as_json().values())
        for user in ("u0", "u1", "u2", "u3"):
            got = (await at_risk_user_report(state.store, state.settings, "a", user)).as_json()
            days = sorted({reference.local_day(e.ts_ms, "UTC") for e in events
                           if e.user_id == user})
            x, t_x = len(days) - 1, (days[-1] - days[0]).days / 7
            big_t = (DAYS - 1 - (days[0] - days[0].replace(month=1, day=1)).days) / 7
            assert (got["x"], got["t_x"], got["T"]) == (x, round(t_x, 4), round(big_t, 4))
            p = lapse_reference.p_alive("bgnbd", params, x, t_x, big_t)  # type: ignore[arg-type]
            assert got["p_alive"] == pytest.approx(p, abs=1e-6)
            assert got["at_risk"] is (p < 0.5)
            assert got["expected_days_30"] == pytest.approx(lapse_reference.expected_days(
                "bgnbd", params, x, t_x, big_t, 30 / 7), abs=1e-5)  # type: ignore[arg-type]
        with pytest.raises(QueryError) as unknown:
            await at_risk_user_report(state.store, state.settings, "a", "nobody")
        assert unknown.value.param == "user"


async def test_another_model_for_the_app_is_fitted_on_the_next_read(
        redis_url: str, events: list[Event]) -> None:
    async with RealApply(redis_url) as state:
        await state.apply(events, BASE_MS)
        first = await current_fit(state.store, state.settings, "a")
        modified = replace(state.settings, app_at_risk_models={"a": "mbgnbd"})
        report = (await at_risk_report(state.store, modified, "a")).as_json()
        assert first.model == "bgnbd" and report["model"] == "mbgnbd"
        kept = StoredFit.decode(await state.store.registry.read_lapse_fit("a") or b"")
        assert kept.model == "mbgnbd"
        expected = lapse_fit.fit("mbgnbd", reference_summaries(events))
        assert report["params"] == expected.params.as_json()
        with pytest.raises(QueryError):
            await at_risk_report(state.store, state.settings, "no-such-app")
