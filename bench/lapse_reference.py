"""The batch reference for METRICS.md §9: BG/NBD and MBG/NBD written the paper's way.

Independent of ``streams/lapse_model.py`` on purpose: the likelihood and P(alive) are the
papers' products of gamma and beta functions and powers (FHL 2005 eq. 6 and 11; Batislam,
Denizel & Filiztekin 2007 eq. 4 and 6) evaluated with ``math`` alone, not the production
code's logs and numpy; the fit is a plain Nelder-Mead written here, not scipy's. It is meant
for small samples (the paper's 2,357 customers, a test's simulated app): the products
overflow for users with hundreds of repeat days, which the production form handles.

Summaries are ``{(x, t_x_days, T_days): customers}``; times are turned to weeks here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

Params = tuple[float, float, float, float]  # r, alpha, a, b


def _beta(p: float, q: float) -> float:
    return math.gamma(p) * math.gamma(q) / math.gamma(p + q)


def likelihood(model: str, params: Params, x: int, t_x: float, big_t: float) -> float:
    """One customer's likelihood (t_x, T in weeks)."""
    r, alpha, a, b = params
    rate_part = math.gamma(r + x) * alpha ** r / math.gamma(r)
    if model == "bgnbd":
        alive = _beta(a, b + x) / _beta(a, b) * rate_part / (alpha + big_t) ** (r + x)
        dead = (_beta(a + 1, b + x - 1) / _beta(a, b) * rate_part / (alpha + t_x) ** (r + x)
                if x > 0 else 0.0)
    else:  # mbgnbd: a dropout chance at the first activity too
        alive = _beta(a, b + x + 1) / _beta(a, b) * rate_part / (alpha + big_t) ** (r + x)
        dead = _beta(a + 1, b + x) / _beta(a, b) * rate_part / (alpha + t_x) ** (r + x)
    return alive + dead


def log_likelihood(model: str, params: Params, summaries: Mapping[tuple[int, int, int], int]
                   ) -> float:
    return sum(n * math.log(likelihood(model, params, x, t / 7, big_t / 7))
               for (x, t, big_t), n in summaries.items())


def p_alive(model: str, params: Params, x: int, t_x: float, big_t: float) -> float:
    """P(alive | x, t_x, T), the papers' closed form (t_x, T in weeks)."""
    r, alpha, a, b = params
    if model == "bgnbd":
        if x == 0:
            return 1.0
        return 1 / (1 + a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))
    return 1 / (1 + a / (b + x) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))


def nelder_mead(f: Callable[[Sequence[float]], float], start: Sequence[float],
                step: float = 0.5, tolerance: float = 1e-10, rounds: int = 5000
                ) -> list[float]:
    """The textbook simplex (reflect, expand, contract, shrink), minimising ``f``."""
    n = len(start)
    simplex = [list(start)] + [
        [v + (step if i == j else 0.0) for j, v in enumerate(start)] for i in range(n)]
    values = [f(p) for p in simplex]
    for _ in range(rounds):
        order = sorted(range(n + 1), key=values.__getitem__)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        if values[-1] - values[0] < tolerance:
            break
        centre = [sum(p[j] for p in simplex[:-1]) / n for j in range(n)]
        worst = simplex[-1]

        def toward(weight: float, centre: list[float] = centre, worst: list[float] = worst
                   ) -> list[float]:
            return [c + weight * (w - c) for c, w in zip(centre, worst, strict=True)]

        reflected = toward(-1.0)
        fr = f(reflected)
        if fr < values[0]:
            expanded = toward(-2.0)
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = toward(0.5)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                best = simplex[0]
                simplex = [best] + [[(b + v) / 2 for b, v in zip(best, p, strict=True)]
                                    for p in simplex[1:]]
                values = [values[0]] + [f(p) for p in simplex[1:]]
    return simplex[min(range(n + 1), key=values.__getitem__)]


def fit(model: str, summaries: Mapping[tuple[int, int, int], int],
        start: Params = (0.5, 5.0, 0.5, 2.0)) -> Params:
    """Maximum likelihood by Nelder-Mead over the log parameters, restarted from its
    answer until it stops moving (a simplex can stall on a ridge)."""
    users = sum(summaries.values())

    def negative(log_params: Sequence[float]) -> float:
        try:
            params = tuple(math.exp(v) for v in log_params)
            return -log_likelihood(model, params, summaries) / users  # type: ignore[arg-type]
        except (OverflowError, ValueError, ZeroDivisionError):
            return math.inf

    point = [math.log(v) for v in start]
    for _ in range(4):
        point = nelder_mead(negative, point, step=0.1)
    r, alpha, a, b = (math.exp(v) for v in point)
    return r, alpha, a, b


def _hyp2f1(a: float, b: float, c: float, z: float, terms: int = 100_000) -> float:
    """Gauss's series, summed until its terms stop counting (|z| < 1)."""
    total, term = 1.0, 1.0
    for k in range(terms):
        term *= (a + k) * (b + k) / ((c + k) * (k + 1)) * z
        total += term
        if abs(term) < 1e-15 * abs(total):
            break
    return total


def expected_days(model: str, params: Params, x: int, t_x: float, big_t: float,
                  weeks: float) -> float:
    """E[repeat days in (T, T + weeks] | x, t_x, T] (FHL 2005 eq. 10; the MBG/NBD analogue
    with b + 1 and a + b where BG/NBD has b and a + b - 1), the papers' form."""
    r, alpha, a, b = params
    extra = 1 if model == "mbgnbd" else 0
    hyp = _hyp2f1(r + x, b + x + extra, a + b + x - 1 + extra,
                  weeks / (alpha + big_t + weeks))
    alive_mean = ((a + b + x - 1 + extra) / (a - 1)
                  * (1 - ((alpha + big_t) / (alpha + big_t + weeks)) ** (r + x) * hyp))
    return alive_mean * p_alive(model, params, x, t_x, big_t)
