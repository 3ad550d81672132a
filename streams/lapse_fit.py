"""Fitting the risk-of-lapsing models (METRICS.md §9, ``streams/lapse_model.py``): the
log likelihood of an app's summaries, its maximum, and the expected active days ahead.

numpy and scipy here (``gammaln``, ``hyp2f1``, the optimiser): the likelihood is evaluated
hundreds of times a fit over every cell of the summaries at once. The log odds of being dead
are ``lapse_model.log_odds_dead``'s, vectorised.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import hyp2f1

from retention_tracker.streams.lapse_model import (
    DAYS_PER_WEEK,
    NEXT_30_DAYS_WEEKS,
    LapseFit,
    LapseParams,
    Model,
    Summaries,
    p_alive,
)

Floats = NDArray[np.float64]


def _columns(summaries: Summaries) -> tuple[Floats, Floats, Floats, Floats]:
    """x, t_x (weeks), T (weeks), users as arrays, cells with no user left out. Sorted: the
    sums, and so the optimiser's path, do not depend on the order the cells were read in."""
    cells = sorted((x, t, big_t, n) for (x, t, big_t), n in summaries.items() if n)
    if not cells:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    table = np.array(cells, dtype=np.float64)
    return table[:, 0], table[:, 1] / DAYS_PER_WEEK, table[:, 2] / DAYS_PER_WEEK, table[:, 3]


def _log_odds_dead_of(model: Model, params: LapseParams, x: Floats, t_x: Floats,
                      big_t: Floats) -> Floats:
    """``lapse_model.log_odds_dead`` of many summaries: the likelihood's second term over
    its first."""
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
    (FHL 2005 eq. 6; Batislam et al. 2007 eq. 4), in logs.

    The ratios of gamma functions are sums over the integer x (Gamma(r + x) / Gamma(r) =
    r (r + 1) ... (r + x - 1)), taken once per value of x: the difference of two
    ``gammaln`` of parameters near 1e14 (where a fit to a sample with nearly no dropout
    goes) loses every digit, and the optimiser chased the rounding errors."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    extra = 1 if model == "mbgnbd" else 0  # MBG/NBD: a dropout chance at the first day too
    counts = x.astype(np.int64)
    steps = np.arange(int(counts.max(initial=0)) + extra, dtype=np.float64)
    rate = np.concatenate(([0.0], np.cumsum(np.log(r + steps))))  # log Gamma(r+n)/Gamma(r)
    # log B(a, b + n) / B(a, b) = sum over k < n of log((b + k) / (a + b + k))
    stay = np.concatenate(([0.0], np.cumsum(np.log(b + steps) - np.log(a + b + steps))))
    alive = (rate[counts] + r * math.log(alpha) + stay[counts + extra]
             - (r + x) * np.log(alpha + big_t))
    return np.asarray(alive + np.logaddexp(0.0, _log_odds_dead_of(model, params, x, t_x, big_t)),
                      dtype=np.float64)


def log_likelihood(model: Model, params: LapseParams, summaries: Summaries) -> float:
    """The sample's log likelihood: the sum over users of their summary's."""
    x, t_x, big_t, users = _columns(summaries)
    return float(np.dot(users, _cell_log_likelihoods(model, params, x, t_x, big_t)))


#: Where the search starts. The surface has a ridge to "no dropout" (a -> 0) that a search
#: from (1, 1, 1, 1) can end on when the sample has nearly no dropout (the simulator's users
#: never leave for good), while the maximum is at "a constant dropout" (a, b -> infinity):
#: each start is searched and the best end kept.
STARTS = (LapseParams(1.0, 1.0, 1.0, 1.0), LapseParams(1.0, 10.0, 1.0, 10.0),
          LapseParams(10.0, 20.0, 10.0, 100.0))


def fit(model: Model, summaries: Summaries,
        starts: tuple[LapseParams, ...] = STARTS) -> LapseFit:
    """Maximum likelihood over log parameters (they are positive): from each start
    Nelder-Mead, which needs no gradient, then polished by L-BFGS-B; the best end wins.
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

    ends = []
    for start in starts:
        guess = np.log([start.r, start.alpha, start.a, start.b])
        coarse = minimize(negative_mean, guess, method="Nelder-Mead", options={
            "xatol": 1e-7, "fatol": 1e-12, "maxiter": 8000, "maxfev": 8000})
        fine = minimize(negative_mean, coarse.x, method="L-BFGS-B",
                        options={"ftol": 1e-15, "gtol": 1e-10})
        ends += [(float(coarse.fun), tuple(coarse.x)), (float(fine.fun), tuple(fine.x))]
    best = min(ends)[1]
    params = LapseParams(*(math.exp(v) for v in best))
    return LapseFit(model, params, log_likelihood(model, params, summaries), int(total))


def expected_days(model: Model, params: LapseParams, x: int, t_x: float, big_t: float,
                  weeks: float = NEXT_30_DAYS_WEEKS) -> float:
    """E[active days in (T, T + weeks] | x, t_x, T] (FHL 2005 eq. 10; for MBG/NBD the
    same with the dropout chance at the first activity): P(alive) times the expectation of
    a user alive at T, whose rate and survival the history updated."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1) < 1e-6:  # a removable singularity: (a - 1) divides a bracket that is 0
        a = 1 + 1e-6
    extra = 1.0 if model == "mbgnbd" else 0.0
    z = weeks / (alpha + big_t + weeks)
    ratio_log = (r + x) * (math.log(alpha + big_t) - math.log(alpha + big_t + weeks))
    hyp = float(hyp2f1(r + x, b + x + extra, a + b + x - 1 + extra, z))
    alive_mean = (a + b + x - 1 + extra) / (a - 1) * (1 - math.exp(ratio_log) * hyp)
    return alive_mean * p_alive(model, params, x, t_x, big_t)


