"""Is "at risk" (METRICS.md §9) a better signal than "inactive 2 days" (§7)? Measured on a
simulated history (streams/simulation.py) replayed up to a cut day:

    python -m retention_tracker.bench.at_risk_usefulness [--installs 200] [--days 120]
        [--cut 89] [--seed 5] [--heterogeneous]

Every user first seen by the end of the cut day is summarised as of then (x, t_x, T, from
the batch reference's summaries), both models are fitted on those summaries, and each flag
is judged against what the user did next: "lapsed" = not active in the 30 days after the cut.
Flags: at risk under BG/NBD and under MBG/NBD (P(alive) < threshold at the cut) and inactive
2 days (last activity 48 h or more before the end of the cut day); each both as a state ("is
flagged at the cut") and as a moment ("became flagged on the cut day": the message a push
service would get that day). Precision = lapsed among flagged, recall = flagged among lapsed,
per segment (all, platform, churn type of §7).

``--heterogeneous`` replaces the simulator's one retention curve for everyone by users of
their own: each user keeps each of its returns with a chance drawn per user (a third keep
all, a third half, a third one in twenty), the kind of mixture BG/NBD is made for. The
default simulator has none (every user of a day follows the same curve), the harder case
for a model of heterogeneous users.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from retention_tracker.bench import reference
from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.lapse_fit import fit
from retention_tracker.streams.lapse_model import (
    MODELS,
    LapseParams,
    Model,
    at_risk_day,
    p_alive,
)
from retention_tracker.streams.simulation import SimulationConfig, generate_events

FUTURE_DAYS = 30
QUICK_CHURN_DAYS = 7
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class UserHistory:
    """One user's active days (days since START_MS) and §7 churn type at the cut."""

    platform: str
    first_ms: int
    last_ms: int  # last activity by the end of the cut day
    days: frozenset[int]  # active days by the end of the cut day
    back: bool  # active in the FUTURE_DAYS after the cut day


def histories(events: Iterable[dict[str, object]], cut: int) -> dict[str, UserHistory]:
    """Per user: the history up to the end of day ``cut`` and whether it came back after."""
    cut_end = START_MS + (cut + 1) * MS_PER_DAY
    raw: dict[str, list[int]] = {}
    platform: dict[str, str] = {}
    for item in events:
        for _, event in reference.read_message(orjson.dumps(item), 2**62):
            if event.type == "survey":
                continue
            raw.setdefault(event.user_id, []).append(event.ts_ms)
            if event.platform and event.user_id not in platform:
                platform[event.user_id] = event.platform
    out = {}
    for user, stamps in raw.items():
        before = [ts for ts in stamps if ts < cut_end]
        if not before:
            continue
        after = [ts for ts in stamps
                 if cut_end <= ts < cut_end + FUTURE_DAYS * MS_PER_DAY]
        out[user] = UserHistory(platform.get(user, "?"), min(before), max(before),
                                frozenset((ts - START_MS) // MS_PER_DAY for ts in before),
                                bool(after))
    return out


def summary(history: UserHistory, cut: int) -> tuple[int, int, int]:
    """(x, t_x days, T days) as of day ``cut``."""
    first, last = min(history.days), max(history.days)
    return len(history.days) - 1, last - first, cut - first


def segments(history: UserHistory) -> list[str]:
    lived = history.last_ms - history.first_ms
    churn = "quick" if lived < QUICK_CHURN_DAYS * MS_PER_DAY else "late"
    return ["all", f"platform={history.platform}", f"churn_type={churn}"]


Flag = Callable[[UserHistory], bool]


def flags(params: dict[Model, LapseParams], cut: int, threshold: float) -> dict[str, Flag]:
    """Every flag judged: name -> is this user flagged (at the cut / on the cut day)."""
    cut_end = START_MS + (cut + 1) * MS_PER_DAY
    out: dict[str, Flag] = {
        "inactive.2d (state)": lambda h: h.last_ms + 2 * MS_PER_DAY <= cut_end,
        # inactive-2 moment reached during the cut day
        "inactive.2d (that day)": lambda h: cut_end - MS_PER_DAY
        < h.last_ms + 2 * MS_PER_DAY <= cut_end,
    }
    for model in MODELS:
        fitted = params[model]

        def state(h: UserHistory, model: Model = model, fitted: LapseParams = fitted) -> bool:
            x, t_x, big_t = summary(h, cut)
            return p_alive(model, fitted, x, t_x / 7, big_t / 7) < threshold

        def moment(h: UserHistory, model: Model = model, fitted: LapseParams = fitted) -> bool:
            x, t_x, big_t = summary(h, cut)
            return at_risk_day(model, fitted, x, t_x, cut - big_t, threshold) == cut

        out[f"at risk {model} (state)"] = state
        out[f"at risk {model} (that day)"] = moment
    return out


def table(users: dict[str, UserHistory], named: dict[str, Flag]) -> list[dict[str, object]]:
    """Per segment and flag: flagged, lapsed among them, precision, recall."""
    rows = []
    every = sorted({s for h in users.values() for s in segments(h)},
                   key=lambda s: (s != "all", s))
    for segment in every:
        members = [h for h in users.values() if segment in segments(h)]
        lapsed = sum(not h.back for h in members)
        for name, flag in named.items():
            flagged = [h for h in members if flag(h)]
            hits = sum(not h.back for h in flagged)
            rows.append({"segment": segment, "flag": name, "users": len(members),
                         "lapsed": lapsed, "flagged": len(flagged),
                         "precision": round(hits / len(flagged), 3) if flagged else None,
                         "recall": round(hits / lapsed, 3) if lapsed else None})
    return rows


def heterogeneous_events(cfg: SimulationConfig, seed: int) -> list[dict[str, object]]:
    """The simulator's events with each user's later days kept with a chance of its own
    (1, 1/2 or 1/20): a mixture of heavy, light and fading users."""
    rng = random.Random(seed)
    factor: dict[str, float] = {}
    first_day: dict[str, int] = {}
    kept = []
    for item in generate_events(cfg):
        assert isinstance(item, dict)
        user, day = str(item["user_id"]), (int(item["ts"]) - START_MS) // MS_PER_DAY  # type: ignore[call-overload]
        if user not in factor:
            factor[user] = rng.choice((1.0, 0.5, 0.05))
            first_day[user] = day
        if day == first_day[user] or rng.random() < factor[user]:
            kept.append(item)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--installs", type=int, default=200)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--cut", type=int, default=89)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--heterogeneous", action="store_true")
    args = parser.parse_args()
    if args.cut + FUTURE_DAYS >= args.days:
        parser.error("--cut plus 30 days must end before --days")
    cfg = SimulationConfig(installs_per_day=args.installs, days=args.days, seed=args.seed,
                           start_ms=START_MS)
    events = (heterogeneous_events(cfg, args.seed) if args.heterogeneous
              else list(generate_events(cfg)))
    users = histories((e for e in events if isinstance(e, dict)), args.cut)
    sample: dict[tuple[int, int, int], int] = {}
    for history in users.values():
        key = summary(history, args.cut)
        sample[key] = sample.get(key, 0) + 1
    params = {}
    for model in MODELS:
        fitted = fit(model, sample)
        params[model] = fitted.params
        print(f"{model}: {fitted.params.as_json()} log likelihood "
              f"{fitted.log_likelihood:.1f} over {fitted.users} users")
    print()
    print("| segment | flag | users | lapsed | flagged | precision | recall |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in table(users, flags(params, args.cut, args.threshold)):
        if row["segment"] in ("all", "churn_type=quick", "churn_type=late", "platform=ios"):
            print("| " + " | ".join("-" if v is None else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
