"""The ingest loop's waiting: what it retries (Redis away, a send Kafka refused) and what it
lets stop the worker. The batch path itself runs against real processes in tests/e2e and
tests/faults (tests/faults/test_hostile_input.py sends it messages larger than every limit)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from retention_tracker.agents.ingest import Ingestor
from retention_tracker.config.settings import Settings
from retention_tracker.state.store import RedisStore
from retention_tracker.streams.backoff import Backoff


def ingestor() -> Ingestor:
    """An Ingestor that is never started: its retry loop alone (the client is never used)."""
    store = RedisStore(aioredis.Redis(port=1))
    return Ingestor(Settings.from_env({}), store, backoff=Backoff(0.001, 0.001))


@pytest.mark.parametrize("error", [KafkaTimeoutError, MessageSizeTooLargeError])
async def test_a_send_kafka_refused_is_retried_and_counted_not_a_stop(
        error: type[Exception]) -> None:
    """A batch whose forwards, dead letters or win-back messages Kafka did not take has not
    been applied: it is planned and sent again after a back-off, counted, and the worker
    goes on (before issue 26 one ``MessageSizeTooLargeError`` stopped it)."""
    loop = ingestor()
    tries: list[int] = []

    async def batch() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise error("refused")
        return "applied"

    assert await loop._retrying(batch) == "applied"
    assert len(tries) == 3
    assert loop.metrics.registry.get_sample_value("retention_worker_send_errors_total") == 2


async def test_a_bug_still_stops_the_worker() -> None:
    """Anything but Redis away or a refused send is not retried: a worker that cannot
    process must not look alive."""
    async def batch() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await ingestor()._retrying(batch)
