"""Risk of lapsing (METRICS.md §9), pure: the BG/NBD model (Fader, Hardie & Lee 2005) and its
modification MBG/NBD (Batislam, Denizel & Filiztekin 2007) over a histogram of per-user
summaries (x, t_x, T): the log likelihood, its maximum, P(alive), the expected active days
ahead, and the moment P(alive) falls below a threshold.

Every formula is written in logs (``gammaln``, ``logaddexp``, ``expit``): a daily user has
x in the hundreds, where the paper's products of powers overflow a float. The batch
reference (``bench/lapse_reference.py``) evaluates the paper's product form instead, and the
tests hold the two equal on the paper's own data.

Time unit: weeks (x counts repeat active days, t_x and T are days / 7), as in the paper.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import expit, gammaln, hyp2f1

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
Floats = NDArray[np.float64]


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


def _columns(summaries: Summaries) -> tuple[Floats, Floats, Floats, Floats]:
    """x, t_x (weeks), T (weeks), users as arrays, cells with no user left out."""
    cells = [(x, t, big_t, n) for (x, t, big_t), n in summaries.items() if n]
    if not cells:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    table = np.array(cells, dtype=np.float64)
    return table[:, 0], table[:, 1] / DAYS_PER_WEEK, table[:, 2] / DAYS_PER_WEEK, table[:, 3]


def _log_odds_dead(model: Model, params: LapseParams, x: Floats, t_x: Floats, big_t: Floats
                   ) -> Floats:
    """log of P(dead, history) / P(alive, history): the odds that P(alive) = 1 / (1 + odds)
    and the likelihood's second term share. BG/NBD: no dropout before a repeat (x = 0 ->
    -inf, odds 0)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    shift = 0.0 if model == "mbgnbd" else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = (math.log(a) - np.log(b + x - shift)
                + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x)))
    if model == "bgnbd":
        odds = np.where(x > 0, odds, -np.inf)
    return np.asarray(odds, dtype=np.float64)


def _cell_log_likelihoods(model: Model, params: LapseParams, x: Floats, t_x: Floats,
                          big_t: Floats) -> Floats:
    """Each summary's log likelihood: P(history | alive at T) + P(history, dead after t_x)
    (FHL 2005 eq. 6; Batislam et al. 2007 eq. 4), in logs."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    extra = 1.0 if model == "mbgnbd" else 0.0  # MBG/NBD: a dropout chance at every day
    alive = (gammaln(r + x) - math.lgamma(r) + r * math.log(alpha)
             + math.lgamma(a + b) + gammaln(b + x + extra) - math.lgamma(b)
             - gammaln(a + b + x + extra) - (r + x) * np.log(alpha + big_t))
    return np.asarray(alive + np.logaddexp(0.0, _log_odds_dead(model, params, x, t_x, big_t)),
                      dtype=np.float64)


def log_likelihood(model: Model, params: LapseParams, summaries: Summaries) -> float:
    """The sample's log likelihood: the sum over users of their summary's."""
    x, t_x, big_t, users = _columns(summaries)
    return float(np.dot(users, _cell_log_likelihoods(model, params, x, t_x, big_t)))


def fit(model: Model, summaries: Summaries,
        start: LapseParams = LapseParams(1.0, 1.0, 1.0, 1.0)) -> LapseFit:
    """Maximum likelihood over log parameters (they are positive): Nelder-Mead, which needs
    no gradient and is robust on this four-parameter surface, then polished by L-BFGS-B.
    The mean log likelihood is minimised so tolerances do not scale with the users."""
    x, t_x, big_t, users = _columns(summaries)
    total = float(users.sum())
    if not total:
        raise ValueError("no users to fit")

    def negative_mean(log_params: Floats) -> float:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = -float(np.dot(users, _cell_log_likelihoods(
                model, LapseParams(*map(float, np.exp(log_params))), x, t_x, big_t))) / total
        return value if math.isfinite(value) else math.inf

    guess = np.log([start.r, start.alpha, start.a, start.b])
    coarse = minimize(negative_mean, guess, method="Nelder-Mead",
                      options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 8000, "maxfev": 8000})
    fine = minimize(negative_mean, coarse.x, method="L-BFGS-B",
                    options={"ftol": 1e-15, "gtol": 1e-10})
    best = fine.x if fine.fun <= coarse.fun else coarse.x
    params = LapseParams(*map(float, np.exp(best)))
    return LapseFit(model, params, log_likelihood(model, params, summaries), int(total))


def p_alive(model: Model, params: LapseParams, x: int, t_x: float, big_t: float) -> float:
    """P(alive | x, t_x, T) (FHL 2005 eq. 11; Batislam et al. 2007 eq. 6); t_x, T in weeks."""
    return float(p_alive_of(model, params, np.array([x], dtype=np.float64),
                            np.array([t_x]), np.array([big_t]))[0])


def p_alive_of(model: Model, params: LapseParams, x: Floats, t_x: Floats, big_t: Floats
               ) -> Floats:
    """P(alive) of many summaries at once."""
    return np.asarray(expit(-_log_odds_dead(model, params, x, t_x, big_t)), dtype=np.float64)


def expected_days(model: Model, params: LapseParams, x: int, t_x: float, big_t: float,
                  weeks: float = NEXT_30_DAYS_WEEKS) -> float:
    """E[active days in (T, T + weeks] | x, t_x, T] (FHL 2005 eq. 10; for MBG/NBD the
    same with the dropout chance at the first activity): P(alive) times the expectation of
    a user alive at T, whose rate and survival the history updated."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    extra = 1.0 if model == "mbgnbd" else 0.0
    z = weeks / (alpha + big_t + weeks)
    ratio_log = (r + x) * (math.log(alpha + big_t) - math.log(alpha + big_t + weeks))
    hyp = float(hyp2f1(r + x, b + x + extra, a + b + x - 1 + extra, z))
    alive_mean = (a + b + x - 1 + extra) / (a - 1) * (1 - math.exp(ratio_log) * hyp)
    return alive_mean * p_alive(model, params, x, t_x, big_t)


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
