"""Risk of lapsing read back (METRICS.md §9): an app's summaries from Redis, its model fitted
and kept (refit on a schedule by the worker, on demand by the CLI and HTTP), and the reports
of ``retention at-risk`` and ``/retention/at-risk``.

The fit runs in a thread: a few hundred evaluations of the likelihood over the app's
summaries must not hold the worker's event loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import orjson

from retention_tracker.config.settings import Settings
from retention_tracker.state.queries import QueryError, app_calendar, now_ms, read_measure
from retention_tracker.state.schema import parse_stats
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.at_risk import MESSAGE_COUNTS
from retention_tracker.streams.counters import Measure
from retention_tracker.streams.figures import iso_time, rate
from retention_tracker.streams.lapse_model import (
    DAYS_PER_WEEK,
    LapseParams,
    Model,
    distribution,
    p_alive,
    summaries_on,
)
from retention_tracker.streams.plan import lapse_cell
from retention_tracker.streams.reports import AtRiskReport, AtRiskUserReport

TIME_UNIT = "week"


@dataclass(frozen=True, slots=True)
class StoredFit:
    """A fit as kept in Redis: the model, its parameters, the log likelihood and users it was
    fitted over, and the "now" whose day gave every user's T."""

    model: Model
    params: LapseParams
    log_likelihood: float
    users: int
    as_of_ms: int

    def encode(self) -> bytes:
        return orjson.dumps({"model": self.model, "params": self.params.as_json(),
                             "log_likelihood": self.log_likelihood, "users": self.users,
                             "as_of_ms": self.as_of_ms})

    @classmethod
    def decode(cls, raw: bytes) -> StoredFit:
        doc = orjson.loads(raw)
        return cls(doc["model"], LapseParams(**doc["params"]), doc["log_likelihood"],
                   doc["users"], doc["as_of_ms"])


async def read_summaries(store: RedisStore, app: str) -> Counter[tuple[int, int, int]]:
    """(x, t_x days, first active day) -> users, summed over the partitions."""
    cells = await read_measure(store, app, Measure.LAPSE, None)
    return Counter({(x, t_x, first): n for (x, t_x, first), n in cells.items() if n})


async def refit(store: RedisStore, settings: Settings, app: str) -> StoredFit:
    """Fit the app's model (AT_RISK_MODEL) over every user's summary as of now, and keep it."""
    from retention_tracker.streams.lapse_fit import fit  # numpy and scipy: only to fit

    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    summaries = summaries_on(await read_summaries(store, app), calendar.day_of(now))
    if not summaries:
        raise QueryError(f"app {app!r} has no user to fit")
    model: Model = settings.at_risk_model_of(app)  # type: ignore[assignment]
    fitted = await asyncio.to_thread(fit, model, summaries)
    stored = StoredFit(model, fitted.params, fitted.log_likelihood, fitted.users, now)
    await store.registry.write_lapse_fit(app, stored.encode())
    return stored


async def current_fit(store: RedisStore, settings: Settings, app: str, refit_now: bool = False
                      ) -> StoredFit:
    """The app's kept fit; fitted now when asked, when there is none, or when the kept one
    is of another model than the app's setting."""
    raw = None if refit_now else await store.registry.read_lapse_fit(app)
    kept = StoredFit.decode(raw) if raw else None
    if kept is None or kept.model != settings.at_risk_model_of(app):
        return await refit(store, settings, app)
    return kept


async def refit_every_app(store: RedisStore, settings: Settings) -> list[str]:
    """The worker's schedule (AT_RISK_REFIT_SECONDS): refit each app with data; returns the
    apps refitted."""
    done = []
    for app in sorted(await store.registry.app_timezones()):
        try:
            await refit(store, settings, app)
        except QueryError:  # no user yet (answers only)
            continue
        done.append(app)
    return done


@dataclass(frozen=True, slots=True)
class RiskNow:
    """Every user's P(alive) now under a kept fit, one entry per summary: what the report
    and the metrics snapshot show."""

    now_ms: int
    alive: list[float]
    users: list[int]
    threshold: float

    @property
    def at_risk(self) -> int:
        return sum(n for p, n in zip(self.alive, self.users, strict=True) if p < self.threshold)

    @property
    def tracked(self) -> int:
        return sum(self.users)


async def risk_now(store: RedisStore, settings: Settings, app: str, kept: StoredFit
                   ) -> RiskNow:
    calendar = await app_calendar(store, settings, app)
    now = await now_ms(store, settings)
    cells = list(summaries_on(await read_summaries(store, app), calendar.day_of(now)).items())
    alive = [p_alive(kept.model, kept.params, x, t / DAYS_PER_WEEK, big_t / DAYS_PER_WEEK)
             for (x, t, big_t), _ in cells]
    return RiskNow(now, alive, [n for _, n in cells], settings.at_risk_threshold)


async def at_risk_report(store: RedisStore, settings: Settings, app: str,
                         refit_now: bool = False) -> AtRiskReport:
    """The model, and every user's P(alive) now under it by band."""
    await app_calendar(store, settings, app)  # an unknown app: one line, before any fit
    kept = await current_fit(store, settings, app, refit_now)
    risk = await risk_now(store, settings, app, kept)
    return AtRiskReport(
        app=app, model=kept.model, time_unit=TIME_UNIT, users=kept.users,
        params=kept.params.as_json(), log_likelihood=round(kept.log_likelihood, 4),
        as_of=iso_time(kept.as_of_ms), now=iso_time(risk.now_ms),
        threshold=settings.at_risk_threshold, users_now=risk.tracked, at_risk=risk.at_risk,
        at_risk_share=rate(risk.at_risk, risk.tracked),
        p_alive=tuple(distribution(risk.alive, risk.users)),
        messages=await message_counts(store, app),
    )




async def message_counts(store: RedisStore, app: str) -> dict[str, int]:
    """The app's users.at_risk counts: sent, expired, returned (and within 7 days of the
    moment), false alarms."""
    stats = parse_stats(await store.reads.read_stats())
    return {name: stats.get((stat, app), 0) for stat, name in MESSAGE_COUNTS.items()}


async def at_risk_figures(store: RedisStore, settings: Settings) -> dict[str, dict[str, int]]:
    """For the metrics snapshot, per app with a kept fit (none is fitted here): the users
    with activity and those at risk now."""
    out = {}
    for app in sorted(await store.registry.app_timezones()):
        raw = await store.registry.read_lapse_fit(app)
        if raw:
            risk = await risk_now(store, settings, app, StoredFit.decode(raw))
            out[app] = {"users": risk.tracked, "at_risk": risk.at_risk}
    return out


async def at_risk_user_report(store: RedisStore, settings: Settings, app: str, user_id: str
                              ) -> AtRiskUserReport:
    """One user's x, t_x, T, P(alive) and expected active days in the next 30 days."""
    from retention_tracker.streams.lapse_fit import expected_days

    calendar = await app_calendar(store, settings, app)
    state = await store.reads.read_user(app, user_id)
    cell = lapse_cell(state) if state is not None else None
    if cell is None:
        raise QueryError(f"no activity of user {user_id!r} in app {app!r}", "user")
    kept = await current_fit(store, settings, app)
    now = await now_ms(store, settings)
    ((x, t_x_days, t_days),) = summaries_on({cell[1:]: 1}, calendar.day_of(now))
    t_x, big_t = t_x_days / DAYS_PER_WEEK, t_days / DAYS_PER_WEEK
    alive = p_alive(kept.model, kept.params, x, t_x, big_t)
    return AtRiskUserReport(
        app=app, user_id=user_id, model=kept.model, x=x, t_x=round(t_x, 4), T=round(big_t, 4),
        p_alive=round(alive, 6),
        expected_days_30=round(expected_days(kept.model, kept.params, x, t_x, big_t), 6),
        at_risk=alive < settings.at_risk_threshold,
    )
