"""BG/NBD and MBG/NBD (streams/lapse_model.py) on the paper's own data, against the
published fit and the independent product-form reference (bench/lapse_reference.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention_tracker.bench import lapse_reference as reference
from retention_tracker.streams import lapse_fit
from retention_tracker.streams import lapse_model as model
from retention_tracker.streams.lapse_model import LapseParams

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "cdnow_sample_summaries.csv"
#: Fader, Hardie & Lee (2005), section 5, on the same 2,357 customers
PAPER = LapseParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
PAPER_LOG_LIKELIHOOD = -9582.4


def cdnow() -> dict[tuple[int, int, int], int]:
    rows = [line for line in FIXTURE.read_text().splitlines()
            if line and not line.startswith("#")][1:]
    return {(x, t, big_t): n for x, t, big_t, n in (map(int, row.split(",")) for row in rows)}


@pytest.fixture(scope="module")
def summaries() -> dict[tuple[int, int, int], int]:
    return cdnow()


@pytest.fixture(scope="module")
def fits(summaries: dict[tuple[int, int, int], int]) -> dict[str, model.LapseFit]:
    return {name: lapse_fit.fit(name, summaries) for name in model.MODELS}


def test_the_fixture_is_the_papers_sample(summaries: dict[tuple[int, int, int], int]) -> None:
    assert sum(summaries.values()) == 2357
    assert max(big_t for _, _, big_t in summaries) == 272  # 1997-01-01 .. 1997-09-30


def test_bgnbd_fit_equals_the_papers(fits: dict[str, model.LapseFit]) -> None:
    fit = fits["bgnbd"]
    for name, published in PAPER.as_json().items():
        assert getattr(fit.params, name) == pytest.approx(published, rel=0.01), name
    assert fit.log_likelihood == pytest.approx(PAPER_LOG_LIKELIHOOD, abs=0.05)
    assert fit.users == 2357


@pytest.mark.parametrize("name", model.MODELS)
def test_fit_equals_the_independent_fit(name: str, fits: dict[str, model.LapseFit],
                                        summaries: dict[tuple[int, int, int], int]) -> None:
    """Another optimiser over the paper's product form finds the same maximum, and the two
    likelihoods agree at it (MBG/NBD has no published CDNOW fit: this is its check)."""
    fit = fits[name]
    independent = reference.fit(name, summaries)
    for ours, theirs in zip(fit.params.as_json().values(), independent, strict=True):
        assert ours == pytest.approx(theirs, rel=0.01)
    assert fit.log_likelihood == pytest.approx(
        reference.log_likelihood(name, independent, summaries), abs=1e-3)
    as_tuple = tuple(fit.params.as_json().values())
    assert lapse_fit.log_likelihood(name, fit.params, summaries) == pytest.approx(
        reference.log_likelihood(name, as_tuple, summaries), rel=1e-12)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", model.MODELS)
def test_every_customers_p_alive_equals_the_reference(
        name: str, fits: dict[str, model.LapseFit],
        summaries: dict[tuple[int, int, int], int]) -> None:
    params = fits[name].params
    as_tuple = (params.r, params.alpha, params.a, params.b)
    worst = max(abs(model.p_alive(name, params, x, t / 7, big_t / 7)
                    - reference.p_alive(name, as_tuple, x, t / 7, big_t / 7))
                for x, t, big_t in summaries)
    assert worst < 0.005
    assert worst < 1e-9  # in fact the same numbers, written two ways


def test_the_papers_worked_expectation(fits: dict[str, model.LapseFit]) -> None:
    """FHL 2005 section 5: the customer with x = 2, t_x = 30.43, T = 38.86 makes 1.226
    repeat purchases in the next 39 weeks."""
    assert lapse_fit.expected_days("bgnbd", fits["bgnbd"].params, 2, 30.43, 38.86, 39) == \
        pytest.approx(1.226, abs=0.001)


@pytest.mark.parametrize("name", model.MODELS)
def test_expected_days_equal_the_reference(name: str, fits: dict[str, model.LapseFit],
                                           summaries: dict[tuple[int, int, int], int]) -> None:
    params = fits[name].params
    as_tuple = (params.r, params.alpha, params.a, params.b)
    for x, t, big_t in list(summaries)[::37]:
        ours = lapse_fit.expected_days(name, params, x, t / 7, big_t / 7)
        theirs = reference.expected_days(name, as_tuple, x, t / 7, big_t / 7, 30 / 7)
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_bgnbd_keeps_one_day_users_alive_mbgnbd_does_not(
        fits: dict[str, model.LapseFit]) -> None:
    assert model.p_alive("bgnbd", fits["bgnbd"].params, 0, 0, 30) == 1.0
    assert model.at_risk_after_weeks("bgnbd", fits["bgnbd"].params, 0, 0, 0.5) is None
    assert model.p_alive("mbgnbd", fits["mbgnbd"].params, 0, 0, 30) < 1.0


def test_a_heavy_user_stays_finite() -> None:
    """Hundreds of repeat days: the paper's products overflow, the logs do not."""
    params = LapseParams(2.0, 0.5, 0.3, 3.0)
    assert 0.0 <= model.p_alive("bgnbd", params, 390, 400 / 7, 420 / 7) < 1e-4
    assert model.p_alive("bgnbd", params, 390, 400 / 7, 400 / 7) > 0.9
    assert math.isfinite(lapse_fit.expected_days("bgnbd", params, 390, 400 / 7, 401 / 7))


positive = st.floats(0.05, 20.0)


@given(st.sampled_from(model.MODELS), positive, positive, positive, positive,
       st.integers(0, 200), st.floats(0, 50), st.floats(0.05, 0.95))
def test_the_crossing_is_where_p_alive_falls_below_the_threshold(
        name: model.Model, r: float, alpha: float, a: float, b: float, x: int, t_x: float,
        threshold: float) -> None:
    params = LapseParams(r, alpha, a, b)
    if name == "bgnbd" and x == 0:
        assert model.at_risk_after_weeks(name, params, x, t_x, threshold) is None
        return
    crossing = model.at_risk_after_weeks(name, params, x, t_x, threshold)
    assert crossing is not None and crossing >= t_x
    after = model.p_alive(name, params, x, t_x, crossing * 1.001 + 1e-6)
    assert after < threshold + 1e-9
    if crossing > t_x:  # P(alive) falls in T: above the threshold before the crossing
        assert model.p_alive(name, params, x, t_x, crossing) == pytest.approx(threshold)
        assert model.p_alive(name, params, x, t_x, (crossing + t_x) / 2) >= threshold - 1e-9


def test_summaries_on_a_day_turn_first_days_into_ages() -> None:
    anchored = {(0, 0, 100): 3, (2, 5, 98): 1, (1, 1, 104): 2, (4, 9, 90): 0}
    assert model.summaries_on(anchored, 103) == {(0, 0, 3): 3, (2, 5, 5): 1, (1, 1, 1): 2}


def test_the_distribution_bands() -> None:
    bands = model.distribution([0.05, 0.5, 0.99, 1.0], [1, 2, 3, 4])
    assert sum(b["users"] for b in bands) == 10
    assert bands[0]["users"] == 1 and bands[5]["users"] == 2 and bands[-1]["users"] == 7


@given(st.sampled_from(model.MODELS), positive, positive, positive, positive,
       st.integers(0, 60), st.integers(0, 200), st.floats(0.05, 0.95))
def test_the_at_risk_day_is_the_first_day_below_the_threshold(
        name: model.Model, r: float, alpha: float, a: float, b: float, x: int,
        t_x_days: int, threshold: float) -> None:
    params = LapseParams(r, alpha, a, b)
    x = min(x, t_x_days)  # at most one repeat day per day after the first
    day = model.at_risk_day(name, params, x, t_x_days, 1000, threshold)
    crossing = model.at_risk_after_weeks(name, params, x, t_x_days / 7, threshold)
    if crossing is None or crossing > model.NEVER_WEEKS:
        assert day is None
        return

    def p(on: int) -> float:
        return model.p_alive(name, params, x, t_x_days / 7, (on - 1000) / 7)

    assert day is not None and day >= 1000 + t_x_days
    assert p(day) < threshold
    assert day == 1000 + t_x_days or p(day - 1) >= threshold


@pytest.mark.parametrize("name", model.MODELS)
def test_the_likelihood_stays_exact_towards_a_constant_dropout(
        name: model.Model, summaries: dict[tuple[int, int, int], int]) -> None:
    """a, b -> infinity with a / (a + b) = p is a constant dropout chance: the likelihood
    at a = 1e14 p is the one at a = 1e6 p (differences of gammaln there lost every digit,
    and a fit on a sample without dropout chased them to a positive "log likelihood")."""
    far = lapse_fit.log_likelihood(name, LapseParams(0.5, 5.0, 0.05e14, 0.95e14), summaries)
    near = lapse_fit.log_likelihood(name, LapseParams(0.5, 5.0, 0.05e6, 0.95e6), summaries)
    assert far == pytest.approx(near, abs=0.05)
    assert far < 0


def test_a_sample_without_dropout_is_fitted_from_every_start() -> None:
    """Users who never leave (the simulator's): the search from (1, 1, 1, 1) alone ends on
    the ridge a -> 0 for MBG/NBD; the best of the starts is kept."""
    rng = random.Random(3)
    sample: dict[tuple[int, int, int], int] = {}
    for _ in range(3000):
        first, rate = rng.randrange(60), rng.uniform(0.02, 0.4)
        days = [d for d in range(first + 1, 90) if rng.random() < rate]
        key = (len(days), (days[-1] - first) if days else 0, 89 - first)
        sample[key] = sample.get(key, 0) + 1
    for name in model.MODELS:
        best = lapse_fit.fit(name, sample)
        for start in lapse_fit.STARTS:
            assert best.log_likelihood >= lapse_fit.fit(
                name, sample, (start,)).log_likelihood - 1e-6
        assert best.log_likelihood < 0
