"""The stored schema, in one place: every Redis key name, hash field and counter spelling.

The strings below, and the counters' names declared with the figures
(``streams/catalogue.py``, ``STORED_NAMES``), are the on-disk format of existing
deployments. Changing one silently splits a deployment's state into an old half nobody
reads and a new half that starts from zero, so they stay exactly as they were first
written (three-letter family names and all); new names may be added, old ones never
respelt. Everything else in the tracker names these things through this module: the pure
domain by the typed cells of ``streams/counters.py`` (rendered here, ``render_cell`` /
``render_stat``), the Redis layer and the readers by the builders and parsers below, and
the Lua scripts (``state/scripts.py``) by the constants this module hands them. Nothing
outside this module slices a stored name.

Every key of a Kafka partition carries the hash tag ``{<partition>}``, so one partition's
state lives in one Redis Cluster slot and each batch is a single atomic script call there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from retention_tracker.streams.calendar import PERIOD_GRANULARITIES
from retention_tracker.streams.catalogue import DAILY_STORED, STORED_NAMES
from retention_tracker.streams.counters import (
    APP_MEASURES,
    DAILY_MEASURES,
    Cell,
    Measure,
    Stat,
)
from retention_tracker.streams.user_state import UserKey

# ---- the partition's meta hash (written only by the apply script) ----------------------------

#: Field of the partition version, bumped by every applied write (the fence).
META_VERSION = "v"
#: Field of the partition's event-time watermark (ms).
META_WATERMARK = "wm"
#: Field of the partition's read watermark (ms): the latest event time read from its input
#: partitions, events kept or forwarded; what those events are judged against for the
#: horizon (METRICS.md §1: the tracker's routing never makes an event late).
META_READ_WATERMARK = "rwm"
#: Field of the token of the last write (the state cache's check that nobody else wrote).
META_TOKEN = "tok"
#: Prefix of the per-topic next-offset fields: ``off:<topic>``.
META_OFFSET_PREFIX = "off:"


# ---- a dedup generation's sizes (``Keyspace.dedup_sizes``, written only by the apply script)

#: Field of the generation's bucket count (``state/dedup.py``), recorded by its first write.
SIZES_BUCKETS = "b"
#: Field of the ids the generation kept since its count was recorded.
SIZES_IDS = "n"
#: Field set when the count was recorded on state from before counts were recorded: ids
#: the generation held then are not in ``SIZES_IDS``.
SIZES_UNCOUNTED = "u"


def text(value: bytes | str) -> str:
    """A name or value as read: bytes from this project's clients (they never decode
    replies), text from one that does."""
    return value.decode() if isinstance(value, bytes) else value


def offset_field(topic: str) -> str:
    """The meta field holding the next offset of ``topic`` applied with the state."""
    return f"{META_OFFSET_PREFIX}{topic}"


# ---- key names ----------------------------------------------------------------------------


#: The kinds of due entries: a user's next inactivity moment (win-back, METRICS.md §7) and
#: the moment its P(alive) falls below AT_RISK_THRESHOLD (§9).
DUE_NEXT = "next"
DUE_RISK = "risk"


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Every Redis key name the tracker uses; nothing else builds one."""

    prefix: str

    def meta(self, shard: int) -> str:
        return f"{self.prefix}:{{{shard}}}:meta"

    def stats(self, shard: int) -> str:
        return f"{self.prefix}:{{{shard}}}:stats"

    def users(self, shard: int, app: str, bucket: int) -> str:
        return f"{self.prefix}:{{{shard}}}:u:{app}:{bucket}"

    def aggregate(self, shard: int, app: str, segment: str, family: str) -> str:
        """Counters of one family for one segment ('all', 'platform=ios', 'value=vip')."""
        return f"{self.prefix}:{{{shard}}}:a:{app}:{segment}:{family}"

    def dedup(self, shard: int, generation: int, bucket: int) -> str:
        """One bucket of a dedup generation's ids (``state/dedup.py``)."""
        return f"{self.prefix}:{{{shard}}}:dd:{generation}:{bucket}"

    def dedup_sizes(self, shard: int, generation: int) -> str:
        """A dedup generation's bucket count and ids kept (``SIZES_*`` fields): how its
        ids are found, and how many buckets the next generation gets. It expires with the
        generation's buckets (refreshed by the same writes)."""
        return f"{self.prefix}:{{{shard}}}:ddn:{generation}"

    def due_bucket(self, shard: int, kind: str, bucket: int) -> str:
        """One of the partition's ``DUE_BUCKETS`` small sorted sets of a kind (``DUE_NEXT``,
        ``DUE_RISK``): users by their moment, few enough for Redis to keep a listpack
        (~30 B an entry against ~120 B in one big set's skiplist)."""
        return f"{self.prefix}:{{{shard}}}:due:{kind}:{bucket}"

    def due_index(self, shard: int, kind: str) -> str:
        """Bucket numbers of a kind's non-empty due buckets, each scored by its earliest
        entry: where a due page starts."""
        return f"{self.prefix}:{{{shard}}}:due:{kind}:index"

    def due(self, shard: int) -> str:
        """Before the due buckets, users by their next inactivity moment in one sorted set
        (``streams.winback.next_moment_ms``): merged into the buckets when a worker takes
        the partition (``RedisStore.adopt_due_sets``)."""
        return f"{self.prefix}:{{{shard}}}:due:{DUE_NEXT}"

    def due_per_threshold(self, shard: int, days: int) -> str:
        """Before issue 31, users by the moment they become inactive for ``days``, one set
        per threshold: merged into the buckets like ``due``."""
        return f"{self.prefix}:{{{shard}}}:due:{days}"

    def due_at_risk(self, shard: int) -> str:
        """Before the due buckets, users by the moment their P(alive) falls below
        AT_RISK_THRESHOLD (METRICS.md §9) in one sorted set: merged like ``due``."""
        return f"{self.prefix}:{{{shard}}}:due:{DUE_RISK}"

    def apps(self) -> str:
        """app -> timezone, fixed by the app's first accepted event."""
        return f"{self.prefix}:apps"

    def shards(self) -> str:
        return f"{self.prefix}:shards"

    def lapse_fits(self) -> str:
        """app -> its fitted risk-of-lapsing model (METRICS.md §9) as JSON: model, params,
        log_likelihood, users, as_of_ms (``state/at_risk.py``)."""
        return f"{self.prefix}:fits"

    def layout(self) -> str:
        """The bucket counts the state was built with (``USER_BUCKETS``, ``DUE_BUCKETS``): a
        key's bucket is a hash modulo the count, so another count would lose what is
        written (``state.layout.layout_problem``)."""
        return f"{self.prefix}:layout"

    def topology(self) -> str:
        """topic -> partition count the state was built with (a partition is a shard)."""
        return f"{self.prefix}:topology"


#: What each kind of partition key is called in memory reports (``<prefix>:{p}:<kind>:...``).
KEY_KINDS = {"u": "user_records", "dd": "dedup_ids", "ddn": "dedup_sizes",
             "a": "aggregates"}


def key_kind(key: str, prefix: str) -> str:
    """``<prefix>:{p}:u:app:b`` -> ``user_records``; kinds without a report name (meta,
    stats, due, ...) keep their own, so a new key family shows up instead of hiding."""
    parts = key[len(prefix) + 1:].split(":")
    kind = parts[1] if len(parts) > 1 else parts[0]
    return KEY_KINDS.get(kind, kind)


def due_member(user: UserKey) -> str:
    """A user's member in the due sets."""
    return f"{user[0]}\x00{user[1]}"


def parse_due_member(member: bytes) -> UserKey:
    app, _, user_id = member.decode().partition("\x00")
    return app, user_id


# ---- aggregate counters: families and fields ------------------------------------------------

#: The one family holding every daily measure, each field ``<measure>:<day>[:<currency>]``.
DAILY_FAMILY = "daily"
#: The stored names are declared with the figures (streams/catalogue.py, STORED_NAMES).
_DAILY_FIELD_PREFIX = {m: f"{name}:" for m, name in DAILY_STORED.items()}
_DAILY_OF_NAME = {name: m for m, name in DAILY_STORED.items()}
#: Period families are ``<name>:<granularity>``, fields the coordinates joined by ':'.
_PERIOD_FAMILY = {(m, g): f"{name}:{g}" for m, name in STORED_NAMES.items()
                  if m not in DAILY_MEASURES | APP_MEASURES for g in PERIOD_GRANULARITIES}
#: Families kept once per app, fields the coordinates joined by ':'.
_APP_FAMILY = {m: STORED_NAMES[m] for m in APP_MEASURES}
#: Coordinates that are text (a currency, a survey name); every other one is an integer.
_TEXT_LAST = frozenset({Measure.REVENUE, Measure.LTV, Measure.PERIOD_REVENUE, Measure.NPS,
                        Measure.NPS_COHORT, Measure.RETURNED, Measure.LAST_RETURN})


def family_name(measure: Measure, granularity: str | None = None) -> str:
    """The family (last part of the aggregate key) holding ``measure``."""
    if measure in DAILY_MEASURES:
        return DAILY_FAMILY
    if measure in APP_MEASURES:
        return _APP_FAMILY[measure]
    assert granularity is not None, f"{measure.name} is kept per granularity"
    return _PERIOD_FAMILY[measure, granularity]


def field_name(measure: Measure, *coordinates: object) -> str:
    """The hash field of one counter of ``measure``: its coordinates after the granularity."""
    joined = ":".join(map(str, coordinates))
    prefix = _DAILY_FIELD_PREFIX.get(measure)
    return joined if prefix is None else prefix + joined


def field_pattern(measure: Measure) -> str:
    """A glob over every field of a daily measure (``rev:*``)."""
    return _DAILY_FIELD_PREFIX[measure] + "*"


#: Rendered cells, reused: a worker writes the same recent days and cohorts batch after
#: batch, and a dict lookup costs a fraction of formatting. Emptied when full.
_RENDERED: dict[Cell, tuple[str, str]] = {}
_RENDERED_MAX = 1 << 18


def render_cell(cell: Cell) -> tuple[str, str]:
    """A plan's cell -> (family, field) as stored. Called once per non-zero delta."""
    found = _RENDERED.get(cell)
    if found is None:
        if len(_RENDERED) >= _RENDERED_MAX:
            _RENDERED.clear()
        found = _RENDERED[cell] = _render_cell(cell)
    return found


def _render_cell(cell: Cell) -> tuple[str, str]:
    head = cell[0]
    prefix = _DAILY_FIELD_PREFIX.get(head)
    if prefix is not None:
        return DAILY_FAMILY, prefix + ":".join(map(str, cell[1:]))
    if head in APP_MEASURES:
        return _APP_FAMILY[head], ":".join(map(str, cell[1:]))
    return _PERIOD_FAMILY[head, cell[1]], ":".join(map(str, cell[2:]))


def _coordinates(measure: Measure, parts: list[str]) -> tuple[Any, ...]:
    if measure in _TEXT_LAST:
        return (*map(int, parts[:-1]), parts[-1])
    return tuple(map(int, parts))


def parse_daily(fields: Mapping[str, int]) -> Counter[Cell]:
    """The daily family as read -> ``(measure, day[, currency]) -> count``; fields of no
    known measure are left out."""
    cells: Counter[Cell] = Counter()
    for name, value in fields.items():
        kind, _, rest = name.partition(":")
        measure = _DAILY_OF_NAME.get(kind)
        if measure is not None:
            cells[(measure, *_coordinates(measure, rest.split(":")))] += value
    return cells


def parse_family(measure: Measure, fields: Mapping[str, int]) -> Counter[tuple[Any, ...]]:
    """One period family as read -> coordinates (cohort, offset, currency ...) -> count."""
    cells: Counter[tuple[Any, ...]] = Counter()
    for name, value in fields.items():
        cells[_coordinates(measure, name.split(":"))] += value
    return cells


# ---- pipeline statistics (the partition's stats hash) -------------------------------------

_STAT_PREFIX = {
    Stat.ACCEPTED: "acc", Stat.REJECTED: "rej", Stat.DUPLICATE: "dup", Stat.FORWARDED: "fwd",
    Stat.ROUTE: "route", Stat.INACTIVE: "inactive", Stat.EXPIRED: "expired", Stat.SENT: "sent",
    Stat.FALSE_ALARM: "false", Stat.REACTIVATED: "react", Stat.BACK_WITHIN_7D: "back7",
    Stat.AT_RISK_SENT: "risk_sent", Stat.AT_RISK_EXPIRED: "risk_expired",
    Stat.AT_RISK_RETURNED: "risk_back", Stat.AT_RISK_BACK_7D: "risk_back7",
    Stat.AT_RISK_FALSE_ALARM: "risk_false",
}
_STAT_FIELD_PREFIX = {s: f"{name}:" for s, name in _STAT_PREFIX.items()}
_STAT_OF_NAME = {name: s for s, name in _STAT_PREFIX.items()}
#: The at-risk stats (METRICS.md §9), whose tail is (app).
AT_RISK_STATS = (Stat.AT_RISK_SENT, Stat.AT_RISK_EXPIRED, Stat.AT_RISK_RETURNED,
                 Stat.AT_RISK_BACK_7D, Stat.AT_RISK_FALSE_ALARM)
#: The win-back stats whose tail is (app, days, value segment[, churn type]).
WINBACK_STATS = (Stat.SENT, Stat.FALSE_ALARM, Stat.REACTIVATED, Stat.BACK_WITHIN_7D)


def render_stat(key: Cell) -> str:
    """``(Stat, *tail)`` -> the stats field as stored (``acc:<app>:<type>``)."""
    return _STAT_FIELD_PREFIX[key[0]] + ":".join(map(str, key[1:]))


def stat_name(stat: Stat, *tail: object) -> str:
    """The stats field of one statistic."""
    return render_stat((stat, *tail))


def parse_stat(name: str) -> Cell | None:
    """A stats field as read -> ``(Stat, *tail)`` (days and arrival days as integers), or
    None for a field of no known statistic (or a malformed one: a reader never fails on
    a field it cannot use)."""
    try:
        return _parse_stat(name)
    except ValueError:
        return None


def _parse_stat(name: str) -> Cell | None:
    kind, _, rest = name.partition(":")
    stat = _STAT_OF_NAME.get(kind)
    if stat is None:
        return None
    if stat in (Stat.ACCEPTED, Stat.FORWARDED):
        app, _, last = rest.rpartition(":")
        return stat, app, last
    if stat in (Stat.REJECTED, Stat.DUPLICATE, *AT_RISK_STATS):
        return stat, rest
    first, _, last = rest.partition(":")
    if stat is Stat.ROUTE:
        return stat, int(first), last
    if stat in (Stat.INACTIVE, Stat.EXPIRED):
        return stat, first, int(last)
    app, days, *labels = rest.split(":")
    return (stat, app, int(days), *labels)


def parse_stats(fields: Mapping[str, int]) -> Counter[Cell]:
    """The stats hash as read -> ``(Stat, *tail) -> count`` (unknown fields left out)."""
    out: Counter[Cell] = Counter()
    for name, value in fields.items():
        key = parse_stat(name)
        if key is not None:
            out[key] += value
    return out


def render_stats(stats: Iterable[tuple[Cell, int]]) -> list[tuple[str, int]]:
    """Typed statistics -> (field, delta) as stored, zero deltas left out."""
    return [(render_stat(key), delta) for key, delta in stats if delta]
