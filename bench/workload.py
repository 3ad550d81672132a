"""The benchmark's fixed workload: simulated traffic sized by events, users and days.

The simulator is parameterised by installs per day and a retention curve, not by a total
event count, so :func:`simulation_config` solves for the curve that gives roughly the asked
number of events per user. The workload is deterministic (fixed seed and start instant):
two runs of the bench replay byte-identical topics, so their figures can be compared.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import asdict, dataclass
from typing import Any

from retention_tracker.streams.simulation import SimulationConfig, generate_events

#: 2024-01-01T00:00:00Z. A fixed start (not "now minus days") keeps the workload and the
#: reference figures identical from run to run, and far enough in the past that no event
#: is "from the future" for the worker's validation.
START_MS = 1_704_067_200_000
#: Session ranges tried in order; the first whose solved d1 stays plausible is used.
_SESSION_RANGES: tuple[tuple[int, int], ...] = (
    (1, 3), (1, 4), (2, 4), (2, 5), (3, 6), (4, 8), (6, 12), (10, 20),
)
_MAX_D1 = 0.5


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What the user asks for; the generated workload only approximates ``events``."""

    events: int
    users: int
    days: int
    seed: int = 0


@dataclass(slots=True)
class Workload:
    """The generated events in delivery order and the same events grouped by user."""

    spec: WorkloadSpec
    config: SimulationConfig
    events: list[dict[str, Any]]
    by_user: list[dict[str, Any]]
    distinct_users: int

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "requested": asdict(self.spec),
            "events": len(self.events),
            "distinct_users": self.distinct_users,
            "days": cfg.days,
            "simulation": {
                "installs_per_day": cfg.installs_per_day,
                "days": cfg.days,
                "seed": cfg.seed,
                "start_ms": cfg.start_ms,
                "d1": round(cfg.d1, 4),
                "decay": cfg.decay,
                "sessions_per_day": list(cfg.sessions_per_day),
                "purchase_rate": cfg.purchase_rate,
                "duplicate_rate": cfg.duplicate_rate,
                "late_rate": cfg.late_rate,
            },
        }


def _events_per_user(cfg: SimulationConfig, d1: float, sessions: tuple[int, int]) -> float:
    """Expected events per user of the simulator (its generation loop, in expectation).

    An install event unless missing; an install day plus each returning day n with
    probability min(1, d1 * n**-decay), averaged over the install days (late installers
    have fewer days left); each active day carries the sessions and maybe a purchase;
    every event is duplicated with ``duplicate_rate``. Reinstalls (1%) are ignored.
    """
    days = cfg.days
    curve = [min(1.0, d1 * n ** -cfg.decay) for n in range(1, days)]
    prefix = [0.0]
    for value in curve:
        prefix.append(prefix[-1] + value)
    returning = sum(prefix[days - 1 - k] for k in range(days)) / days
    per_day = (sessions[0] + sessions[1]) / 2 + cfg.purchase_rate
    generated = (1 - cfg.missing_install_rate) + (1 + returning) * per_day
    return generated * (1 + cfg.duplicate_rate)


def simulation_config(spec: WorkloadSpec) -> SimulationConfig:
    """A SimulationConfig for about ``spec.events`` events from ``spec.users`` users.

    Installs per day fix the user count; the sessions range and the day-1 retention d1
    (decay stays the simulator's 0.5) are solved by bisection for the events per user.
    """
    if spec.users < 1 or spec.days < 1 or spec.events < 1:
        raise ValueError("events, users and days must be >= 1")
    base = SimulationConfig(
        installs_per_day=max(1, round(spec.users / spec.days)), days=spec.days, seed=spec.seed,
        start_ms=START_MS,
    )
    users = base.installs_per_day * spec.days
    target = spec.events / users
    for sessions in _SESSION_RANGES:
        if _events_per_user(base, 0.0, sessions) > target:
            d1 = 0.0  # even one active day per user is too many: as close as it gets
            break
        if _events_per_user(base, _MAX_D1, sessions) >= target:
            low, high = 0.0, _MAX_D1
            for _ in range(40):
                mid = (low + high) / 2
                low, high = (mid, high) if _events_per_user(base, mid, sessions) < target else (
                    low, mid)
            d1 = (low + high) / 2
            break
    else:
        sessions, d1 = _SESSION_RANGES[-1], _MAX_D1
    return SimulationConfig(
        installs_per_day=base.installs_per_day, days=spec.days, seed=spec.seed,
        start_ms=START_MS, d1=max(d1, 0.001), sessions_per_day=sessions,
    )


def build_workload(spec: WorkloadSpec) -> Workload:
    """Generate the events once; ``by_user`` is the batched shape's order (see below)."""
    cfg = simulation_config(spec)
    events = [e for e in generate_events(cfg) if isinstance(e, dict)]
    # The batched topic carries JSON arrays of one user's events. In delivery order users
    # interleave, so consecutive same-user runs are ~1 event long and produce_events'
    # batching would send almost only 1-event arrays; grouping by user (a stable sort, so
    # each user's own delivery order is kept) is what an SDK's upload buffer looks like.
    by_user = sorted(events, key=lambda e: e["user_id"])
    return Workload(spec, cfg, events, by_user, len({e["user_id"] for e in events}))


# ---- skewed users (issue 31): a few users make most of the traffic --------------------------

MS_PER_DAY = 86_400_000
#: The campaign the whale's events carry, all of them: its segment holds the whale alone, so
#: the segment's figures are the whale's, checked against the reference like the app's.
WHALE_CAMPAIGN = "whale"


@dataclass(frozen=True, slots=True)
class SkewSpec:
    """Who makes the traffic: ``heavy_user_share`` of the users make ``heavy_event_share`` of
    the events, and one of them (the whale) makes ``whale_events`` in one day."""

    heavy_user_share: float = 0.01
    heavy_event_share: float = 0.5
    whale_events: int = 1_000_000
    purchase_share: float = 0.03  # of the heavy users' extra events: whales buy too
    seed: int = 0


@dataclass(frozen=True, slots=True)
class SkewFacts:
    """What a skewed workload is, for the report and for the tests of its property."""

    heavy_users: tuple[str, ...]  # the whale first
    whale_day_start_ms: int  # the whale's extra events lie in [start, start + 1 day)
    whale_events_in_day: int

    @property
    def whale(self) -> str:
        return self.heavy_users[0]


def skewed_workload(base: Workload, skew: SkewSpec) -> tuple[Workload, SkewFacts]:
    """``base`` with extra sessions (and some purchases) of a few heavy users added.

    The heavy users are drawn with a fixed seed; each gets the same share of the extra
    events but the whale, whose ``whale_events`` (at most the extra events) all fall in the
    24 hours from its first event, on its campaign alone (``WHALE_CAMPAIGN``, every one of
    its events). The others' extras fall within an hour after one of their own events. The
    extra count x solves (heavy + x) = share * (events + x), so the property holds to one
    event. Extras are merged by time into the base's delivery order; their ids are unique.
    """
    if not 0 < skew.heavy_user_share < 1 or not 0 < skew.heavy_event_share < 1:
        raise ValueError("heavy_user_share and heavy_event_share must lie in (0, 1)")
    rng = random.Random(skew.seed)
    first_ts: dict[str, int] = {}
    for event in base.events:
        first_ts[event["user_id"]] = min(first_ts.get(event["user_id"], event["ts"]),
                                         event["ts"])
    users = sorted(first_ts)
    heavy_count = max(1, round(len(users) * skew.heavy_user_share))
    end_ms = max(e["ts"] for e in base.events)
    # the whale starts early enough for its whole day to lie inside the workload's span
    early = [u for u in users if first_ts[u] <= end_ms - MS_PER_DAY] or users
    whale = rng.choice(early)
    others = rng.sample([u for u in users if u != whale], heavy_count - 1)
    heavy = (whale, *others)
    # copies of the whale's events on its own campaign: the base workload stays as it was
    base_events = [dict(e, campaign=WHALE_CAMPAIGN) if e["user_id"] == whale else e
                   for e in base.events]
    own_events: dict[str, list[dict[str, Any]]] = {u: [] for u in heavy}
    for event in base_events:
        if event["user_id"] in own_events:
            own_events[event["user_id"]].append(event)
    heavy_base = sum(len(own_events[u]) for u in heavy)
    total = len(base_events)
    extra = max(0, round((skew.heavy_event_share * total - heavy_base)
                         / (1 - skew.heavy_event_share)))
    whale_extra = min(skew.whale_events, extra) if others else extra
    extras: list[dict[str, Any]] = []
    whale_start = first_ts[whale]
    for n in range(whale_extra):
        ts = whale_start + (n * MS_PER_DAY) // max(1, whale_extra)
        extras.append(_extra_event(own_events[whale][0], n, ts, rng, skew.purchase_share))
    rest = extra - whale_extra
    for index, user in enumerate(others):
        share = rest // len(others) + (1 if index < rest % len(others) else 0)
        mine = own_events[user]
        for n in range(share):
            anchor = mine[rng.randrange(len(mine))]
            ts = anchor["ts"] + rng.randrange(3_600_000)
            extras.append(_extra_event(mine[0], n, ts, rng, skew.purchase_share))
    extras.sort(key=lambda e: e["ts"])
    events = list(heapq.merge(base_events, extras, key=lambda e: e["ts"]))
    by_user = sorted(events, key=lambda e: e["user_id"])
    workload = Workload(base.spec, base.config, events, by_user, base.distinct_users)
    return workload, SkewFacts(heavy, whale_start, whale_extra)


def _extra_event(like: dict[str, Any], n: int, ts: int, rng: random.Random,
                 purchase_share: float) -> dict[str, Any]:
    """One more event of ``like``'s user: a session, or a purchase in the user's currency."""
    event = {key: like[key] for key in ("user_id", "app", "platform", "country", "campaign")}
    event.update(event_id=f"{like['app']}-{like['user_id']}-x{n}", type="session", ts=ts)
    if rng.random() < purchase_share:
        event.update(type="purchase", amount=9.99, currency=like.get("currency", "USD"))
    return event
