"""Home partitions: every user's events are applied in one partition, whatever the producer did.

User state is partition-local (a partition is a state shard), so an event read in any other
partition than its user's would give that user a second state and count it twice. The home
of a user is what Kafka's default partitioner gives for the key ``user_id`` (murmur2, as the
Java client and aiokafka compute it) over the shard count. Events read elsewhere (no key,
another key, another partitioner, an array mixing users) are forwarded to the re-key topic,
partition = home, and applied there by the same workers, the way Kafka Streams' repartition
topics work. Events already at home pay one memoised hash. Each forward carries the read
watermark of the partition it was read from (the ``watermark`` header), which its home
judges it against for the horizon (``streams/batch.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiokafka import ConsumerRecord
from aiokafka.partitioner import murmur2

from retention_tracker.config.settings import ConfigError
from retention_tracker.streams.batch import VALUE_COPY_MAX_BYTES, Forward, ParsedBatch
from retention_tracker.streams.events import NO_CUSTOM_TYPES, Event, parse_message

_MEMO_USERS = 1 << 18  # ~30 MB at most: cleared, not evicted one by one, when full

#: Re-key record header: the read watermark (ms) of the partition the event was read from,
#: as it was then; empty when it had none yet. Records forwarded before it existed lack it.
WATERMARK_HEADER = "watermark"


def home_partition(user_id: str, partitions: int) -> int:
    """Kafka's default partitioner for the key ``user_id`` (positive murmur2 modulo N)."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions


class Router:
    """Splits a partition's events into those at home and those to forward."""

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("a router needs at least one partition")
        self.partitions = partitions
        self._homes: dict[str, int] = {}

    def home(self, user_id: str) -> int:
        found = self._homes.get(user_id)
        if found is None:
            if len(self._homes) >= _MEMO_USERS:
                self._homes.clear()
            found = self._homes[user_id] = home_partition(user_id, self.partitions)
        return found

    def split(
        self,
        partition: int,
        key: bytes | None,
        offset: int,
        events: list[tuple[int, Event]],
        at_home: list[tuple[int, int, Event]],
        away: list[Forward],
    ) -> None:
        """Append one message's events to ``at_home`` (offset, index, event) or ``away``."""
        home = self.home
        for index, event in events:
            target = home(event.user_id)
            if target == partition:
                at_home.append((offset, index, event))
            else:
                away.append(Forward(offset, index, event, target, _cause(key, event, events)))


def _cause(key: bytes | None, event: Event, events: list[tuple[int, Event]]) -> str:
    """What the producer did that put this event away from home (and so how to fix it)."""
    if key is None:
        return "no_key"
    if key != event.user_id.encode():
        first = events[0][1].user_id
        mixed = any(e.user_id != first for _, e in events)
        return "mixed_array" if mixed else "other_key"
    return "other_partitioner"


def read_records(
    records: list[ConsumerRecord],
    partition: int,
    router: Router | None,
    now_ms: int,
    max_message_bytes: int,
    max_events_per_message: int,
    activity_types: frozenset[str] = NO_CUSTOM_TYPES,
) -> ParsedBatch:
    """Parse a partition's records and split their events by home. ``router`` None: the
    records were routed already (the re-key topic), every event is at home.
    ``activity_types``: the custom activity types accepted (ACTIVITY_EVENTS)."""
    batch = ParsedBatch(rekeyed=router is None)
    at_home, rejects = batch.at_home, batch.rejects
    for record in records:  # plain loops: the per-record path is the hot one
        parsed = parse_message(record.value, now_ms, max_message_bytes, max_events_per_message,
                               activity_types)
        if parsed.events:
            if router is None:
                offset = record.offset
                at_home.extend((offset, index, event) for index, event in parsed.events)
                for name, value in record.headers or ():
                    if name == WATERMARK_HEADER and (not value or value.isdigit()):
                        batch.carried[offset] = int(value) if value else None
            else:
                router.split(partition, record.key, record.offset, parsed.events, at_home,
                             batch.away)
            if batch.away and batch.away[-1].offset == record.offset:
                _original_values(record.value or b"", batch.away)
        for reject in parsed.rejects:
            rejects.append((record.offset, reject))
    return batch


def rekey_headers(forward: Forward, origin: str) -> list[tuple[str, bytes]]:
    """A forward's re-key record headers: why it was forwarded, where it was read (``origin``
    is ``topic/partition/``; with ``index``, for dead letters at home) and the read
    watermark it is judged against there."""
    watermark = b"" if forward.watermark_ms is None else str(forward.watermark_ms).encode()
    return [("cause", forward.cause.encode()),
            ("source", f"{origin}{forward.offset}".encode()),
            ("index", str(forward.index).encode()),
            (WATERMARK_HEADER, watermark)]


def _original_values(message: bytes, away: list[Forward]) -> None:
    """Fill in the sent form of this message's forwarded events (at the end of ``away``);
    the message is decoded a second time only when it has such events, which is rare. An
    event whose sent form is longer than ``VALUE_COPY_MAX_BYTES`` (fields the contract
    ignores made it so) is forwarded in its §1 form instead: the same event at home, in a
    record the producer can always send."""
    offset = away[-1].offset
    decoded = None
    for forward in reversed(away):
        if forward.offset != offset:
            break
        if forward.index < 0:
            value = message
        else:
            decoded = orjson.loads(message) if decoded is None else decoded
            value = orjson.dumps(decoded[forward.index])
        if len(value) > VALUE_COPY_MAX_BYTES:
            value = orjson.dumps(forward.event.to_json())
        forward.value = value


class PartitionCountChanged(ConfigError):
    """The topics' partition counts differ from the ones the state was built with."""


def partition_count_problem(
    actual: Mapping[str, int], stored: Mapping[str, int], key_prefix: str
) -> str | None:
    """One line saying why these topics cannot feed this state, or None. A partition number
    is a state shard: with another count, a user's home moves and its state would split."""
    shards = sorted(set(stored.values()))
    for topic, count in sorted(actual.items()):
        built = stored.get(topic, shards[0] if len(shards) == 1 else None)
        if built is not None and built != count:
            return (f"topic {topic} has {count} partitions but the state under KEY_PREFIX "
                    f"{key_prefix!r} was built with {built}: users would be split across "
                    f"partitions; re-shard by replaying into a fresh KEY_PREFIX "
                    f"(docs/operations.md 'Re-sharding')")
    if len(set(actual.values())) > 1:
        shown = ", ".join(f"{t}={n}" for t, n in sorted(actual.items()))
        return (f"input and re-key topics must have equal partition counts, a partition being "
                f"a state shard ({shown})")
    return None
