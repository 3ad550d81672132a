"""Putting events onto the input topic: the producer, replay-file readers and the live pacer.

The ``retention simulate``, ``retention replay`` and ``retention demo`` commands are thin
wrappers around these functions. Files are read as (line, object, error) rows so a bad
line is counted with its reason instead of stopping the replay, the same way the worker
dead-letters bad messages instead of stopping.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from tqdm import tqdm

from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.events import InvalidEvent, validate_event
from retention_tracker.streams.simulation import SimulationConfig, generate_deliveries

Row = tuple[int, dict[str, Any] | None, str | None]  # (line number, object, error reason)

MALFORMED_KEY = b"malformed"
# §1 fields: a CSV column of the same name is read unless the mapping names another one.
EVENT_FIELDS = (
    "event_id", "type", "user_id", "app", "ts", "platform", "country", "campaign", "cost",
    "amount", "currency",
)
_NUMERIC_FIELDS = frozenset({"cost", "amount"})
_CHUNK = 2000  # send futures awaited together; two chunks in flight keep the pipe full
_MIN_SLEEP_S = 0.005  # pacing sleeps shorter than this cost more than they smooth


class TopicMissing(Exception):
    """A command was asked to read a topic the broker does not have."""


@contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """aiokafka logs every refused connection; a command says it once, in its own line."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def kafka_problem(exc: BaseException, where: str) -> str:
    """One readable line for a Kafka failure: an unreachable broker by the address it was
    given (``where``, KAFKA_BROKER masked), not by aiokafka's resolved address tuples."""
    if isinstance(exc, KafkaConnectionError | OSError | TimeoutError):
        return (f"cannot reach Kafka at {where} (nothing answers there, or it is not a "
                "Kafka broker; see KAFKA_BROKER)")
    return f"Kafka at {where}: {exc or type(exc).__name__}"


@dataclass(slots=True)
class ProduceStats:
    """What one run of ``produce_events`` put on the topic."""

    messages: int = 0
    events: int = 0  # event objects sent (a batch message carries several)
    malformed: int = 0  # raw bytes items, sent as they were given
    bytes: int = 0  # message values only, without keys and protocol overhead
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.events} events in {self.messages} messages ({self.malformed} malformed), "
            f"{self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s, {self.events_per_s:,.0f} events/s"
        )


async def _items(
    events: Iterable[dict[str, Any] | bytes] | AsyncIterable[dict[str, Any] | bytes],
) -> AsyncIterator[dict[str, Any] | bytes]:
    if isinstance(events, AsyncIterable):
        async for item in events:
            yield item
    else:
        for item in events:
            yield item


def _user_of(event: dict[str, Any]) -> tuple[Any, Any]:
    return event.get("app"), event.get("user_id")


def _key(event: dict[str, Any]) -> bytes | None:
    user = event.get("user_id")
    return None if user is None else str(user).encode()


async def produce_events(
    bootstrap_servers: str,
    topic: str,
    events: Iterable[dict[str, Any] | bytes] | AsyncIterable[dict[str, Any] | bytes],
    batch_size: int = 1,
    progress: bool = True,
    rate_per_s: float | None = None,
    client_options: dict[str, Any] | None = None,
    placement: Callable[[dict[str, Any]], tuple[bytes | None, int]] | None = None,
) -> ProduceStats:
    """Send events keyed by ``user_id``; return what was sent once the broker acked all of it.

    ``batch_size`` 1 sends one JSON object per message. Above 1, consecutive events of the
    same user (app and user_id) go as one JSON array of up to ``batch_size`` events, like a
    mobile SDK's upload; a user's events never change order, so the worker sees the same
    per-partition sequence either way. ``bytes`` items are sent as they are, keyed
    ``b"malformed"``, to exercise the dead-letter path. ``events`` may be an async
    iterable (the live pacer). ``rate_per_s`` caps events per second. ``placement`` overrides
    the key and partition of each message (given its first event): a mis-keyed producer.

    Idempotence stays off because the embedded broker does not implement InitProducerId;
    duplicates from a retried send are harmless since the worker deduplicates event ids.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError("rate_per_s must be > 0")
    stats = ProduceStats()
    total = len(events) if hasattr(events, "__len__") else None  # type: ignore[arg-type]
    producer = await _started_producer(bootstrap_servers, client_options)
    bar = tqdm(
        total=total, unit="ev", unit_scale=True, smoothing=0.1, dynamic_ncols=True,
        disable=not progress or not sys.stderr.isatty(),
    )
    started = time.perf_counter()
    sender = _Sender(producer, topic, stats, bar, rate_per_s, placement)
    batch = sender.batch
    try:
        async for item in _items(events):
            if isinstance(item, bytes | bytearray):
                await sender.send_batch()
                stats.malformed += 1
                await sender.send(bytes(item), MALFORMED_KEY, 0)
            elif batch_size == 1:
                await sender.send_events(orjson.dumps(item), item, 1)
            else:
                if batch and (len(batch) >= batch_size or _user_of(batch[0]) != _user_of(item)):
                    await sender.send_batch()
                batch.append(item)
        await sender.finish()
    finally:
        await producer.stop()
        bar.close()
    stats.seconds = time.perf_counter() - started
    return stats


async def _started_producer(bootstrap_servers: str,
                            client_options: dict[str, Any] | None) -> AIOKafkaProducer:
    """A started producer with ``produce_events``' settings (acks all, no idempotence)."""
    producer = AIOKafkaProducer(
        **{"bootstrap_servers": bootstrap_servers, **(client_options or {})},
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        compression_type=None,
        max_batch_size=256 * 1024,  # above the 16 kB default, much faster on Tansu
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # a failed start leaves a client and connections behind
        raise
    return producer


class _Sender:
    """Sends messages for ``produce_events`` and counts them in ``stats``.

    Send futures are awaited a chunk at a time with two chunks in flight, and with
    ``rate_per_s`` each send waits until the events so far are due. ``batch`` holds the
    same user's events not yet sent as one array.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, stats: ProduceStats, bar: tqdm,
                 rate_per_s: float | None,
                 placement: Callable[[dict[str, Any]], tuple[bytes | None, int]] | None) -> None:
        self.producer = producer
        self.topic = topic
        self.stats = stats
        self.bar = bar
        self.rate_per_s = rate_per_s
        self.placement = placement
        self.chunk: list[asyncio.Future[Any]] = []
        self.in_flight: deque[list[asyncio.Future[Any]]] = deque()
        self.batch: list[dict[str, Any]] = []
        self.loop = asyncio.get_running_loop()
        self.paced_from = self.loop.time()

    async def send(self, value: bytes, key: bytes | None, n_events: int,
                   partition: int | None = None) -> None:
        stats = self.stats
        placed = {} if partition is None else {"partition": partition}
        self.chunk.append(await self.producer.send(self.topic, value, key=key, **placed))
        stats.messages += 1
        stats.bytes += len(value)
        stats.events += n_events
        self.bar.update(n_events or 1)
        if len(self.chunk) >= _CHUNK:
            self.in_flight.append(self.chunk)
            self.chunk = []
            if len(self.in_flight) > 1:
                await asyncio.gather(*self.in_flight.popleft())
        if self.rate_per_s is not None:
            ahead = ((stats.events + stats.malformed) / self.rate_per_s
                     - (self.loop.time() - self.paced_from))
            if ahead > _MIN_SLEEP_S:
                await asyncio.sleep(ahead)

    async def send_events(self, value: bytes, first: dict[str, Any], n_events: int) -> None:
        if self.placement is None:
            await self.send(value, _key(first), n_events)
        else:
            key, partition = self.placement(first)
            await self.send(value, key, n_events, partition)

    async def send_batch(self) -> None:
        if self.batch:
            await self.send_events(orjson.dumps(self.batch), self.batch[0], len(self.batch))
            self.batch.clear()

    async def finish(self) -> None:
        """Send what is batched, then wait for every ack; a failed send raises here."""
        await self.send_batch()
        await self.producer.flush()
        for pending in (*self.in_flight, self.chunk):
            await asyncio.gather(*pending)  # surfaces a failed send


async def simulated_stream(
    cfg: SimulationConfig, seconds_per_day: float
) -> AsyncIterator[dict[str, Any] | bytes]:
    """The simulator's items, paced so one simulated day passes every ``seconds_per_day``.

    Pacing follows the delivery time (not ``ts``), so late events and duplicates arrive
    late in wall time too, as they would live. ``seconds_per_day`` <= 0 means no pacing.
    """
    loop = asyncio.get_running_loop()
    origin_ms: int | None = None
    t0 = loop.time()
    for delivered_ms, item in generate_deliveries(cfg):
        if origin_ms is None:
            origin_ms = delivered_ms
        if seconds_per_day > 0:
            due = (delivered_ms - origin_ms) / MS_PER_DAY * seconds_per_day
            ahead = due - (loop.time() - t0)
            if ahead > _MIN_SLEEP_S:
                await asyncio.sleep(ahead)
        yield item


def read_jsonl(path: str | Path) -> Iterator[Row]:
    """Rows of a JSON-lines file; blank lines are skipped, lines count from 1.

    Undecodable lines give ``invalid_json`` (or ``invalid_utf8``, the reasons the worker's
    dead-letter topic uses), a JSON value that is not an object gives ``not_an_object``.
    """
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                utf8 = "utf-8" in str(exc).lower()
                yield number, None, "invalid_utf8" if utf8 else "invalid_json"
                continue
            if isinstance(obj, dict):
                yield number, obj, None
            else:
                yield number, None, "not_an_object"


def _csv_value(name: str, raw: str) -> Any:
    if name in _NUMERIC_FIELDS:
        try:
            return float(raw)
        except ValueError:
            return raw  # validate_event then says invalid_field, which is more precise
    if name == "ts" and raw.isascii() and raw.isdigit():
        return int(raw)
    return raw


def read_csv(path: str | Path, mapping: dict[str, str] | None = None) -> Iterator[Row]:
    """Rows of a CSV file with a header line; ``mapping`` maps §1 field -> CSV column.

    Fields not in the mapping are read from a column of their own name if there is one.
    Empty cells are absent fields (CSV cannot say "missing" otherwise). ``amount`` and
    ``cost`` become floats, an all-digit ``ts`` becomes epoch milliseconds. A row with the
    wrong number of cells, or that the csv module cannot parse, gives ``invalid_csv``. A
    mapped column that is not in the header raises ValueError before any row.
    """
    mapping = mapping or {}
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValueError(f"{path}: unreadable CSV header: {exc}") from None
        index = {column: i for i, column in enumerate(header)}
        absent = sorted(c for c in mapping.values() if c not in index)
        if absent:
            raise ValueError(f"{path}: no column {', '.join(map(repr, absent))} in the header "
                             f"{header}")
        columns = [(f, index[mapping.get(f, f)]) for f in EVENT_FIELDS
                   if mapping.get(f, f) in index]
        width = len(header)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error:
                yield reader.line_num, None, "invalid_csv"
                continue
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            if len(cells) != width:
                yield reader.line_num, None, "invalid_csv"
                continue
            if not all(cell.isascii() for cell in cells) and not _utf8(cells):
                yield reader.line_num, None, "invalid_utf8"
                continue
            obj = {name: _csv_value(name, cells[i]) for name, i in columns if cells[i] != ""}
            yield reader.line_num, obj, None


def _utf8(cells: list[str]) -> bool:
    try:
        for cell in cells:
            cell.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from surrogateescape: the bytes were bad
        return False
    return True


def prepare_replay(
    rows: Iterable[Row],
    now_ms: int,
    sort: bool = True,
    rejected: list[tuple[int, str, str]] | None = None,
    activity_types: frozenset[str] = frozenset(),
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Validate replay rows; return the valid objects (by event time if ``sort``) and the
    count of rejected rows by reason.

    Sorting is our documented choice: the worker rejects events older than the horizon
    behind its watermark, so a history file in arbitrary row order could lose its oldest
    events, while in time order it replays to exact figures. The sort is stable, and the
    original dicts are returned untouched so every field passes through as written.
    ``rejected``, if given, collects (line, reason, detail) for the CLI to show examples;
    ``activity_types``: the custom activity types the worker accepts (ACTIVITY_EVENTS).
    """
    reasons: Counter[str] = Counter()
    valid: list[tuple[int, dict[str, Any]]] = []
    for line, obj, error in rows:
        if error is not None or obj is None:
            reason, detail = error or "not_an_object", "unparseable row"
        else:
            try:
                event = validate_event(obj, now_ms, "default", activity_types)
            except InvalidEvent as exc:
                reason, detail = exc.reason, exc.detail
            else:
                valid.append((event.ts_ms, obj))
                continue
        reasons[reason] += 1
        if rejected is not None:
            rejected.append((line, reason, detail))
    if sort:
        valid.sort(key=lambda pair: pair[0])
    return [obj for _, obj in valid], reasons


def parse_mapping(spec: str) -> dict[str, str]:
    """``"user_id=uid,ts=time"`` -> ``{"user_id": "uid", "ts": "time"}`` (a CLI flag).

    Only §1 field names may be mapped, each once, so a typo fails loudly instead of
    silently reading nothing.
    """
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, column = item.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise ValueError(f"mapping: expected field=column, got {item!r}")
        if name not in EVENT_FIELDS:
            raise ValueError(f"mapping: unknown field {name!r}; one of {', '.join(EVENT_FIELDS)}")
        if name in mapping:
            raise ValueError(f"mapping: field {name!r} mapped twice")
        mapping[name] = column
    return mapping


async def tail_topic(
    bootstrap_servers: str,
    topic: str,
    from_beginning: bool,
    limit: int,
    group: str | None,
    emit: Callable[[str], None],
    client_options: dict[str, Any] | None = None,
) -> int:
    """Consume ``topic`` and emit each message as one JSON line with its key and offset:
    what a push service subscribed to ``users.inactive.2d`` receives. The headers, when a
    message has some, come along: a dead letter's ``reason`` and ``detail`` are there.
    A topic the broker does not have raises ``TopicMissing`` rather than waiting for ever
    (the worker creates its output topics when it starts)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        **{"bootstrap_servers": bootstrap_servers, **(client_options or {})},
        group_id=group,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group is not None,
    )
    seen = 0
    try:
        await consumer.start()
        if topic not in await consumer.topics():  # all topics' metadata: creates none
            raise TopicMissing(f"topic {topic!r} does not exist (a worker creates its "
                               "win-back and dead-letter topics when it starts)")
        consumer.subscribe([topic])
        while not limit or seen < limit:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        value: Any = orjson.loads(record.value) if record.value else None
                    except orjson.JSONDecodeError:
                        value = record.value.decode(errors="replace") if record.value else None
                    shown: dict[str, Any] = {
                        "partition": record.partition, "offset": record.offset,
                        "key": record.key.decode(errors="replace") if record.key else None,
                        "value": value,
                    }
                    if record.headers:
                        shown["headers"] = {name: raw.decode(errors="replace")
                                            for name, raw in record.headers}
                    emit(orjson.dumps(shown).decode())
                    seen += 1
                    if limit and seen >= limit:
                        return seen
    finally:
        await consumer.stop()
    return seen
