"""Synthetic app traffic: deterministic §1 events with the defects real pipelines see.

Pure on purpose (no Kafka, no files, no clock unless ``start_ms`` is left unset): the same
seed gives the same events byte for byte, so an end-to-end test can replay a stream and
compare the worker's figures with the reference computed from the very same list. The
defects the tracker must absorb are built in and tunable: missing installs, reinstalls,
exact duplicates, late (out-of-order) deliveries and malformed messages. The whole event
model can be on: install costs, purchases, survey answers (``survey_rate``) and custom
activity types (``activity_types``, the names of ACTIVITY_EVENTS), each one off on demand.

Generation walks the simulated days in order and keeps only the undelivered tail (late
events and duplicates) in a heap, so memory stays proportional to one day of traffic plus
the users' schedules, and a million events take a few seconds.
"""

from __future__ import annotations

import heapq
import random
import time
from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import orjson

from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.events import ACTIVITY_TYPE_RE, APP_NAME_RE, EVENT_TYPES

HOUR_MS = 3_600_000

Weights = tuple[tuple[str, float], ...]

# Malformed kind -> the reason ``events.parse_message`` gives it (tests check the pairing).
MALFORMED_KINDS: dict[str, str] = {
    "bad_json": "invalid_json",
    "missing_field": "missing_field",
    "naive_ts": "naive_timestamp",
    "negative_amount": "negative_amount",
    "unknown_type": "unknown_type",
}
_MALFORMED_KIND_NAMES = tuple(MALFORMED_KINDS)
_UNKNOWN_TYPES = ("login", "level_up", "ad_view", "Session", "INSTALL")
# A fixed default so generate_malformed stays deterministic without a clock (2023-11-14).
_DEFAULT_MALFORMED_TS = 1_700_000_000_000


def power_law_retention(d1: float, decay: float) -> Callable[[int], float]:
    """Share of a cohort active on day N: d1 * N**-decay, the usual shape of mobile curves."""

    def curve(n: int) -> float:
        return float(d1 * n**-decay)

    return curve


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """Every knob of the synthetic traffic; defaults look like a small mobile game.

    Weights are (value, weight) pairs rather than mappings so the config stays hashable
    and immutable. ``retention`` overrides the d1/decay power law with any curve of the
    day offset N >= 1 (values are clamped to [0, 1]); it is applied independently per
    user and day, which is what makes day-N retention follow it in expectation.
    """

    apps: tuple[str, ...] = ("default",)
    installs_per_day: int = 200
    days: int = 30
    start_ms: int | None = None  # None: now minus ``days`` (read once per generation)
    seed: int = 0
    d1: float = 0.35
    decay: float = 0.5
    retention: Callable[[int], float] | None = None
    sessions_per_day: tuple[int, int] = (1, 3)  # inclusive range, per active day
    purchase_rate: float = 0.03  # probability of a purchase per active day
    purchase_amounts: tuple[tuple[float, float], ...] = ((0.99, 0.6), (4.99, 0.3), (19.99, 0.1))
    currencies: Weights = (("USD", 0.85), ("EUR", 0.1), ("BRL", 0.05))
    platforms: Weights = (("ios", 0.45), ("android", 0.5), ("web", 0.05))
    countries: Weights = (
        ("US", 0.3), ("BR", 0.15), ("DE", 0.1), ("IN", 0.2), ("JP", 0.1), ("GB", 0.08),
        ("FR", 0.07),
    )
    campaigns: Weights = (
        ("organic", 0.4), ("fb_summer", 0.25), ("google_uac", 0.2), ("tiktok", 0.15),
    )
    campaign_costs: tuple[tuple[str, float], ...] = (
        ("organic", 0.0), ("fb_summer", 1.75), ("google_uac", 2.4), ("tiktok", 0.9),
    )
    missing_install_rate: float = 0.02  # users whose install event never arrives
    reinstall_rate: float = 0.01  # users who send a second install on a later active day
    duplicate_rate: float = 0.01  # events delivered twice with an identical payload
    duplicate_max_seconds: float = 600.0  # the copy arrives up to this long after the original
    late_rate: float = 0.01  # events delivered after later events, up to late_max_hours late
    late_max_hours: float = 72.0
    malformed_rate: float = 0.0  # extra malformed messages, per generated event
    survey_rate: float = 0.0  # probability of an NPS survey answer per active day (§8)
    # custom activity (ACTIVITY_EVENTS): per active day, with ``activity_rate``, 1-3 events of
    # one of these types; none by default (a type not named in ACTIVITY_EVENTS dead-letters)
    activity_types: tuple[str, ...] = ()
    activity_rate: float = 0.5
    install_costs: bool = True  # paid installs carry their campaign's cost (CAC, ROAS)

    def __post_init__(self) -> None:
        if not self.apps or any(not APP_NAME_RE.match(a) for a in self.apps):
            raise ValueError("apps must be 1-64 chars of [A-Za-z0-9._-]")
        if len(set(self.apps)) != len(self.apps):
            raise ValueError("apps must be distinct")
        if self.days < 1 or self.installs_per_day < 0:
            raise ValueError("days must be >= 1 and installs_per_day >= 0")
        low, high = self.sessions_per_day
        if not 1 <= low <= high:
            raise ValueError("sessions_per_day must be (low, high) with 1 <= low <= high")
        for name in ("purchase_rate", "missing_install_rate", "reinstall_rate",
                     "duplicate_rate", "late_rate", "malformed_rate", "survey_rate",
                     "activity_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.late_max_hours <= 0 or self.duplicate_max_seconds <= 0:
            raise ValueError("late_max_hours and duplicate_max_seconds must be > 0")
        for name in ("purchase_amounts", "currencies", "platforms", "countries", "campaigns"):
            pairs = getattr(self, name)
            if not pairs or any(w < 0 for _, w in pairs) or sum(w for _, w in pairs) <= 0:
                raise ValueError(f"{name} needs at least one positive weight")
        if any(amount < 0 for amount, _ in self.purchase_amounts):
            raise ValueError("purchase_amounts must be >= 0")
        if any(not ACTIVITY_TYPE_RE.match(t) or t in EVENT_TYPES for t in self.activity_types):
            raise ValueError("activity_types must be custom type names (not built-in ones)")
        costs = dict(self.campaign_costs)
        missing = [c for c, _ in self.campaigns if c not in costs]
        if missing or any(c < 0 for c in costs.values()):
            raise ValueError(f"campaign_costs must give a cost >= 0 for every campaign: {missing}")

    def curve(self) -> Callable[[int], float]:
        return self.retention or power_law_retention(self.d1, self.decay)


def resolved_start_ms(cfg: SimulationConfig, now_ms: int | None = None) -> int:
    """The first simulated instant: ``cfg.start_ms`` or ``days`` before now (ending now)."""
    if cfg.start_ms is not None:
        return cfg.start_ms
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return now - cfg.days * MS_PER_DAY


class _Picker:
    """Weighted choice by bisect on cumulative weights: rng.choices is several times slower."""

    __slots__ = ("cumulative", "total", "values")

    def __init__(self, pairs: Sequence[tuple[Any, float]]) -> None:
        self.values = [v for v, _ in pairs]
        self.cumulative = list(accumulate(w for _, w in pairs))
        self.total = self.cumulative[-1]

    def pick(self, rng: random.Random) -> Any:
        index = bisect(self.cumulative, rng.random() * self.total)
        return self.values[min(index, len(self.values) - 1)]


def generate_malformed(
    rng: random.Random, *, ts_ms: int | None = None, kind: str | None = None
) -> bytes:
    """One malformed message of a random (or the given) kind, see ``MALFORMED_KINDS``.

    Apart from its defect the message is plausible, with a ``ts`` near the traffic around it
    (``ts_ms``), so it is rejected for the intended reason and not as too old or future.
    """
    if kind is None:
        kind = _MALFORMED_KIND_NAMES[rng.randrange(len(_MALFORMED_KIND_NAMES))]
    elif kind not in MALFORMED_KINDS:
        raise ValueError(f"unknown malformed kind {kind!r}; one of {_MALFORMED_KIND_NAMES}")
    ts = _DEFAULT_MALFORMED_TS if ts_ms is None else ts_ms
    obj: dict[str, Any] = {
        "event_id": f"bad-{rng.getrandbits(48):012x}",
        "type": "session",
        "user_id": f"u{rng.randrange(1_000_000):06d}",
        "ts": ts,
    }
    if kind == "bad_json":
        raw = orjson.dumps(obj)
        return raw[: rng.randrange(1, len(raw) - 1)]  # any proper prefix of an object is invalid
    if kind == "missing_field":
        del obj[("event_id", "type", "user_id", "ts")[rng.randrange(4)]]
    elif kind == "naive_ts":
        naive = datetime.fromtimestamp(ts / 1000, UTC).replace(tzinfo=None)
        obj["ts"] = naive.isoformat(timespec="milliseconds")
    elif kind == "negative_amount":
        obj.update(type="purchase", amount=-round(rng.uniform(0.01, 50.0), 2), currency="USD")
    else:  # unknown_type
        obj["type"] = _UNKNOWN_TYPES[rng.randrange(len(_UNKNOWN_TYPES))]
    return orjson.dumps(obj)


class _User:
    """What a user keeps between active days; slots because there are ~100k of them."""

    __slots__ = ("app", "campaign", "country", "currency", "next_n", "platform", "reinstall_day",
                 "user_id")

    def __init__(self, app: str, user_id: str, platform: str, country: str, campaign: str,
                 currency: str) -> None:
        self.app = app
        self.user_id = user_id
        self.platform = platform
        self.country = country
        self.campaign = campaign
        self.currency = currency
        self.next_n = 0
        self.reinstall_day = -1


Delivery = tuple[int, int, "dict[str, Any] | bytes"]  # (delivery ms, sequence, item)


class _Traffic:
    """One generation's state: the rng, the pickers, the users' schedules, the undelivered tail.

    Each day consumes the rng in one fixed order (new users, returning users, then the
    deliveries of everything made that day): that order is what a seed's output depends on.
    """

    __slots__ = ("activity", "amounts", "campaigns", "cfg", "costs", "countries", "currencies",
                 "curve", "next_user", "pending", "platforms", "rand", "rng", "seq")

    def __init__(self, cfg: SimulationConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.rand = self.rng.random
        curve_fn = cfg.curve()
        self.curve = [0.0] + [min(1.0, max(0.0, curve_fn(n))) for n in range(1, cfg.days)]
        self.platforms, self.countries = _Picker(cfg.platforms), _Picker(cfg.countries)
        self.campaigns, self.currencies = _Picker(cfg.campaigns), _Picker(cfg.currencies)
        self.amounts = _Picker(cfg.purchase_amounts)
        self.costs = dict(cfg.campaign_costs)
        self.pending: list[Delivery] = []  # delivered after the day being generated
        self.activity: list[list[_User]] = [[] for _ in range(cfg.days)]  # returning users
        self.next_user = dict.fromkeys(cfg.apps, 0)
        self.seq = 0

    def day(self, day: int, day_start: int) -> list[Delivery]:
        """The deliveries due before the end of ``day``, sorted; later ones go to ``pending``."""
        day_end = day_start + MS_PER_DAY
        made: list[dict[str, Any]] = []  # the day's events, in generation order
        for app in self.cfg.apps:
            for _ in range(self.cfg.installs_per_day):
                self._new_user(app, day, day_start, day_end, made)
        for user in self.activity[day]:
            first = day_start + int(self.rand() * MS_PER_DAY)
            if user.reinstall_day == day:
                made.append(_new_event(user, "install", first))  # no cost: not a paid install
            self._active_day(user, first, day_end, made)
        self.activity[day] = []  # free the schedule as the days pass
        today = self._deliver(made, day_end)
        pending = self.pending
        while pending and pending[0][0] < day_end:
            today.append(heapq.heappop(pending))
        today.sort()  # (time, unique seq): never compares the payloads
        return today

    def _new_user(self, app: str, day: int, day_start: int, day_end: int,
                  made: list[dict[str, Any]]) -> None:
        """A user installing on ``day``: their first active day and the days they return."""
        rng, rand, cfg = self.rng, self.rand, self.cfg
        number = self.next_user[app]
        self.next_user[app] = number + 1
        user = _User(app, f"u{number:06d}", self.platforms.pick(rng), self.countries.pick(rng),
                     self.campaigns.pick(rng), self.currencies.pick(rng))
        t0 = day_start + int(rand() * MS_PER_DAY)
        if rand() >= cfg.missing_install_rate:
            install = _new_event(user, "install", t0)
            if cfg.install_costs:
                install["cost"] = self.costs[user.campaign]
            made.append(install)
        self._active_day(user, t0, day_end, made)
        curve, activity = self.curve, self.activity
        returns = [day + n for n in range(1, cfg.days - day) if rand() < curve[n]]
        for d in returns:
            activity[d].append(user)
        if returns and rand() < cfg.reinstall_rate:
            user.reinstall_day = returns[int(rand() * len(returns))]

    def _active_day(self, user: _User, first_ms: int, day_end: int,
                    made: list[dict[str, Any]]) -> None:
        """Sessions (and maybe a purchase) from ``first_ms`` to the end of the day."""
        rand = self.rand
        s_low, s_high = self.cfg.sessions_per_day
        span = day_end - first_ms
        sessions = [first_ms + int(rand() * span)
                    for _ in range(s_low + int(rand() * (s_high - s_low + 1)))]
        for ts in sessions:
            made.append(_new_event(user, "session", ts))
        if rand() < self.cfg.purchase_rate:
            bought = min(sessions[0] + int(rand() * 600_000), day_end - 1)
            buy = _new_event(user, "purchase", bought)
            buy["amount"] = self.amounts.pick(self.rng)
            buy["currency"] = user.currency
            made.append(buy)
        if self.cfg.survey_rate and rand() < self.cfg.survey_rate:  # no draw when off
            answered = min(sessions[-1] + int(rand() * 600_000), day_end - 1)
            answer = _new_event(user, "survey", answered)
            answer["score"] = min(10, int(rand() * 12))  # 10 a little more often
            made.append(answer)
        custom = self.cfg.activity_types
        if custom and self.cfg.activity_rate and rand() < self.cfg.activity_rate:  # as above
            kind = custom[int(rand() * len(custom))]
            for _ in range(1 + int(rand() * 3)):
                made.append(_new_event(user, kind, first_ms + int(rand() * span)))

    def _deliver(self, made: list[dict[str, Any]], day_end: int) -> list[Delivery]:
        """Delivery times for the day's events, with late ones, duplicates and malformed ones.

        Returns what is delivered before ``day_end``; the rest is pushed onto ``pending``.
        """
        cfg, rng, rand, pending = self.cfg, self.rng, self.rand, self.pending
        late_rate, dup_rate, bad_rate = cfg.late_rate, cfg.duplicate_rate, cfg.malformed_rate
        late_span = cfg.late_max_hours * HOUR_MS
        dup_span = cfg.duplicate_max_seconds * 1000
        seq = self.seq
        today: list[Delivery] = []
        for event in made:
            ts = event["ts"]
            delivered = ts + 1 + int(rand() * late_span) if rand() < late_rate else ts
            seq += 1
            item = (delivered, seq, event)
            if delivered < day_end:
                today.append(item)
            else:
                heapq.heappush(pending, item)
            if dup_rate and rand() < dup_rate:
                again = delivered + 1 + int(rand() * dup_span)
                seq += 1
                copy = (again, seq, dict(event))
                if again < day_end:
                    today.append(copy)
                else:
                    heapq.heappush(pending, copy)
            if bad_rate and rand() < bad_rate:
                seq += 1
                today.append((ts, seq, generate_malformed(rng, ts_ms=ts)))
        self.seq = seq
        return today


def _new_event(user: _User, kind: str, ts: int) -> dict[str, Any]:
    """The user's next §1 event: ids count up per user, so a duplicate is a copied dict."""
    n = user.next_n
    user.next_n = n + 1
    return {
        "event_id": f"{user.app}-{user.user_id}-{n}", "type": kind,
        "user_id": user.user_id, "app": user.app, "ts": ts, "platform": user.platform,
        "country": user.country, "campaign": user.campaign,
    }


def generate_deliveries(cfg: SimulationConfig) -> Iterator[tuple[int, dict[str, Any] | bytes]]:
    """(delivery time ms, item) in delivery order; ``generate_events`` without the times.

    The live simulator paces on the delivery time, so it is exposed. Items are §1 event
    dicts, plus malformed ``bytes`` messages when ``cfg.malformed_rate`` > 0.
    """
    traffic = _Traffic(cfg)
    start = resolved_start_ms(cfg)
    for day in range(cfg.days):
        for delivered, _, item in traffic.day(day, start + day * MS_PER_DAY):
            yield delivered, item
    pending = traffic.pending
    while pending:
        delivered, _, payload = heapq.heappop(pending)
        yield delivered, payload


def generate_events(cfg: SimulationConfig) -> Iterator[dict[str, Any] | bytes]:
    """§1 event dicts in the order they would be DELIVERED, deterministic for ``cfg.seed``.

    Late events come out after events with later ``ts``; a duplicate is an equal (copied)
    dict delivered again shortly after its original. With ``malformed_rate`` > 0 the stream
    also carries malformed ``bytes`` messages to be sent as they are; at the default 0 every
    item is a dict that ``events.validate_event`` accepts.
    """
    for _, item in generate_deliveries(cfg):
        yield item


def expected_day_retention(cfg: SimulationConfig, n: int) -> float:
    """The configured share of a cohort active on day ``n`` (1.0 for n = 0), for checks."""
    if n == 0:
        return 1.0
    return min(1.0, max(0.0, cfg.curve()(n)))


__all__ = [
    "MALFORMED_KINDS",
    "SimulationConfig",
    "expected_day_retention",
    "generate_deliveries",
    "generate_events",
    "generate_malformed",
    "power_law_retention",
    "resolved_start_ms",
]
