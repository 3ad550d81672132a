"""How a partition's dedup ids are spread over hashes: a bucket count per generation.

Ids live in rotating generations (``RedisStore.dedup_generation``), each spread over
buckets, Redis hashes named by ``bucket_of``. A hash costs ~90 B of key overhead, so the
count must follow the ids kept: too many buckets and a few ids each pay that overhead
(48 B an id at 1,024 buckets for ~3,500 ids a partition, BENCHMARKS.md "Dedup and due
sets"); too few and the hashes grow past ``hash-max-listpack-entries`` (64 in the
tracker's Redis, docs/operations.md "Redis configuration") and become hashtables (~63 B an
id). No fixed count suits every deployment, and changing a count moves ids to other
buckets, so each generation gets its own: chosen when the partition's worker first writes
the generation, from the ids its previous generation kept, and recorded with it
(``Keyspace.dedup_sizes``) in that same apply call. Lookups read each generation with its
recorded count.

State written before counts were recorded has none: it is read with ``legacy_buckets``
(the fixed ``DEDUP_BUCKETS`` of then), and a generation that may hold such ids keeps that
count when it is first recorded, so a worker upgraded mid-generation still finds them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``DEDUP_BUCKETS``'s default before counts were recorded per generation: what ids
#: written then are read with unless DEDUP_BUCKETS names another number.
LEGACY_BUCKETS = 1024
#: A partition's first generation, with nothing to size it from: ~12,000 ids stay
#: listpacks in it (a history replayed into a fresh state lands in one generation when the
#: clock is the wall's: `retention bench`'s 6,600 ids a partition cost 44 B a user at 64
#: buckets, hashtables); a small deployment's first window pays some key overhead, and the
#: next generation is sized from what this one kept.
FIRST_BUCKETS = 256
#: Ids a bucket should hold on average. Each id is a 12-byte digest with an empty value,
#: well inside ``hash-max-listpack-value`` (64). Counts are powers of two, so a bucket
#: holds 12-24 ids on average; 24 leaves the fullest buckets and a generation's growth
#: room under ``hash-max-listpack-entries`` (64 in the tracker's Redis), while the key
#: overhead stays ~4-8 B an id.
IDS_PER_BUCKET = 24
#: The most buckets a generation gets (~100,000,000 ids a partition and generation).
MAX_BUCKETS = 1 << 20


def bucket_of(key: bytes, buckets: int) -> int:
    """The bucket of an id (a digest: its first bytes are uniform) among ``buckets``."""
    return int.from_bytes(key[:4], "little") % buckets


def legacy_buckets(forced: int | None) -> int:
    """The count ids written before counts were recorded are read with: DEDUP_BUCKETS
    then (``forced``: DEDUP_BUCKETS now when a number, None for ``auto``)."""
    return forced or LEGACY_BUCKETS


def sized(ids: int) -> int:
    """Buckets for a generation expected to keep ``ids`` ids: the least power of two that
    holds them at ``IDS_PER_BUCKET`` a bucket or fewer, within 1 and ``MAX_BUCKETS``."""
    buckets = 1
    while buckets * IDS_PER_BUCKET < ids and buckets < MAX_BUCKETS:
        buckets *= 2
    return buckets


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the load read of the two generations a batch looks ids up in."""

    #: the current generation's recorded bucket count (None: not recorded yet)
    current: int | None
    #: the previous generation's recorded bucket count (None: none recorded)
    previous: int | None
    #: ids the previous generation kept after its count was recorded
    previous_ids: int = 0
    #: the previous generation was recorded on state from before: ids it held then are
    #: not in ``previous_ids``
    previous_uncounted: bool = False


@dataclass(frozen=True, slots=True)
class DedupLayout:
    """The bucket counts a batch reads its two generations with, and writes with."""

    generation: int
    #: the current generation's count: ids are written with it (and were looked up with
    #: it once recorded; before, with the legacy count, which finds any id from before)
    current: int
    #: the previous generation's count: ids are looked up with it
    previous: int
    #: the apply records ``current`` (the generation's first write)
    record: bool = False
    #: recorded on state from before whose ids it does not count (``Recorded``)
    uncounted: bool = False


def generation_layout(generation: int, recorded: Recorded, forced: int | None, fresh: bool
                      ) -> DedupLayout:
    """The counts of a batch in ``generation``. ``forced``: DEDUP_BUCKETS when a number
    (every new generation gets it; ids from before counts were recorded are read with it),
    None for ``auto``. ``fresh``: the partition was never written (no ids from before).

    A generation not recorded yet is recorded by this batch's apply (the fence makes it
    the first): sized from the previous generation's ids; at ``FIRST_BUCKETS`` on a fresh
    partition; and at the legacy count when the previous one is not recorded on a written
    partition (state from before, whose ids this generation may already hold, or a
    partition idle for a whole generation) or was recorded on such state (its count of
    ids misses those from before)."""
    legacy = legacy_buckets(forced)
    previous = recorded.previous or legacy
    if recorded.current is not None:
        return DedupLayout(generation, recorded.current, previous)
    uncounted = recorded.previous is None and not fresh
    if forced is not None:
        current = forced
    elif uncounted or recorded.previous_uncounted:
        current = legacy
    elif recorded.previous is not None:
        current = sized(recorded.previous_ids)
    else:
        current = FIRST_BUCKETS
    return DedupLayout(generation, current, previous, record=True, uncounted=uncounted)
