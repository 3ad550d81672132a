"""Risk of lapsing (METRICS.md §9), pure: the BG/NBD model (Fader, Hardie & Lee 2005) and its
modification MBG/NBD (Batislam, Denizel & Filiztekin 2007) for one user: P(alive | x, t_x,
T) and the moment it falls below a threshold; the parameters, and the summaries they are
fitted over. The fit itself and the expected days ahead are ``streams/lapse_fit.py``'s
(numpy and scipy, which this module does without so that the worker and the settings do
not load them).

Every formula is written in logs: a daily user has x in the hundreds, where the paper's
products of powers overflow a float. The batch reference (``bench/lapse_reference.py``)
evaluates the paper's product form instead, and the tests hold the two equal on the paper's
own data. Time unit: weeks (x counts repeat active days, t_x and T are days / 7), as in
the paper.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Model = Literal["bgnbd", "mbgnbd"]
MODELS: tuple[Model, ...] = ("bgnbd", "mbgnbd")
DAYS_PER_WEEK = 7
#: "expected active days in the next 30 days": t = 30 days, in weeks
NEXT_30_DAYS_WEEKS = 30 / DAYS_PER_WEEK

#: One cell of the summaries the fit reads: (x, t_x days, T days) -> users.
Summaries = Mapping[tuple[int, int, int], int]
#: One cell of the summaries the plan keeps: (x, t_x days, first active day) -> users; the
#: first day rather than T, so a cell does not move as days pass (``summaries_on``).
AnchoredSummaries = Mapping[tuple[int, int, int], int]


@dataclass(frozen=True, slots=True)
class LapseParams:
    """The four parameters: purchase (here: active-day) rate ~ Gamma(r, alpha) per week,
    dropout probability ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def as_json(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True, slots=True)
class LapseFit:
    """A maximum-likelihood fit: the model, its parameters, the log likelihood at them and
    the number of users it was fitted over."""

    model: Model
    params: LapseParams
    log_likelihood: float
    users: int


def summaries_on(anchored: AnchoredSummaries, today: int) -> Counter[tuple[int, int, int]]:
    """(x, t_x days, first day) -> (x, t_x days, T days) on local day ``today``. T is never
    below t_x (an event up to 24 h ahead of the clock may be dated after today)."""
    out: Counter[tuple[int, int, int]] = Counter()
    for (x, t_x_days, first_day), users in anchored.items():
        if users:
            out[x, t_x_days, max(today - first_day, t_x_days)] += users
    return out


def log_odds_dead(model: Model, params: LapseParams, x: int, t_x: float, big_t: float
                  ) -> float:
    """log of P(dead, history) / P(alive, history), so P(alive) = 1 / (1 + odds); -inf
    for BG/NBD with no repeat day (it has no dropout before one)."""
    if model == "bgnbd" and x == 0:
        return -math.inf
    shift = 0 if model == "mbgnbd" else 1
    return (math.log(params.a) - math.log(params.b + x - shift)
            + (params.r + x) * (math.log(params.alpha + big_t) - math.log(params.alpha + t_x)))


def p_alive(model: Model, params: LapseParams, x: int, t_x: float, big_t: float) -> float:
    """P(alive | x, t_x, T) (FHL 2005 eq. 11; Batislam et al. 2007 eq. 6); t_x, T in weeks."""
    odds = log_odds_dead(model, params, x, t_x, big_t)
    if odds > 0:  # 1 / (1 + e^odds) without overflowing e^odds
        return math.exp(-odds) / (1 + math.exp(-odds))
    return 1 / (1 + math.exp(odds))


def at_risk_after_weeks(model: Model, params: LapseParams, x: int, t_x: float,
                        threshold: float) -> float | None:
    """The T (weeks since the first active day) from which P(alive | x, t_x, T) is below
    ``threshold``, or None when it never is (BG/NBD with no repeat day). P(alive) =
    1 / (1 + k ((alpha + T) / (alpha + t_x))^(r + x)) falls as T grows, so the crossing
    has a closed form; it is never before t_x (the last activity)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold {threshold} must lie strictly between 0 and 1")
    if model == "bgnbd" and x == 0:
        return None
    k_log = math.log(params.a) - math.log(params.b + x - (0 if model == "mbgnbd" else 1))
    # 1 / (1 + k q^(r+x)) < p  <=>  (r + x) log q > log(1/p - 1) - log k
    q_log = (math.log(1 / threshold - 1) - k_log) / (params.r + x)
    crossing = (params.alpha + t_x) * math.exp(q_log) - params.alpha
    return max(crossing, t_x)


def distribution(values: Iterable[float], users: Iterable[int],
                 edges: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
                 ) -> list[dict[str, float | int]]:
    """Users by P(alive) band [lower, upper): the shape of the app's risk at a glance."""
    bounds = (0.0, *edges, 1.0)
    counts = [0] * (len(bounds) - 1)
    for value, count in zip(values, users, strict=True):
        band = next(i for i in range(len(counts)) if value < bounds[i + 1] or i == len(counts) - 1)
        counts[band] += count
    return [{"from": low, "to": high, "users": n}
            for low, high, n in zip(bounds, bounds[1:], counts, strict=False)]


#: A crossing further than this (a thousand years) is no moment to schedule.
NEVER_WEEKS = 52_000


def at_risk_day(model: Model, params: LapseParams, x: int, t_x_days: int, first_day: int,
                threshold: float) -> int | None:
    """The first local day, from the last active one on, whose P(alive) (T = that day -
    the first active day) is below ``threshold``: the day a user with this summary becomes
    at risk if it stays away, so the moment can be scheduled like the inactivity ones (the
    start of that day). None: never (BG/NBD with no repeat day), or not within
    ``NEVER_WEEKS``. The closed-form crossing is checked against P(alive) on the days
    beside it, so rounding never moves it a day."""
    crossing = at_risk_after_weeks(model, params, x, t_x_days / DAYS_PER_WEEK, threshold)
    if crossing is None or crossing > NEVER_WEEKS:
        return None
    last_day = first_day + t_x_days

    def below(day: int) -> bool:
        weeks = (day - first_day) / DAYS_PER_WEEK
        return p_alive(model, params, x, t_x_days / DAYS_PER_WEEK, weeks) < threshold

    day = max(last_day, first_day + math.floor(crossing * DAYS_PER_WEEK) + 1)
    while day > last_day and below(day - 1):
        day -= 1
    while not below(day):
        day += 1
    return day
