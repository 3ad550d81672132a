"""The local stack: throw-away brokers, redis-servers and processes on loopback ports.

Development infrastructure, not the worker: the tests, ``retention demo`` and ``retention
bench`` start what they need with it, so none of them needs Docker or the machine's own
Redis. ``processes`` starts and stops children by PID; ``apache_kafka`` runs Apache Kafka
(KRaft) from the jars ``scripts/setup`` assembled, one node or a cluster; ``tansu`` the
memory-only stand-in, the fallback where no Java 17 is found; ``broker`` picks one of the
two; ``redis_server`` runs redis-server and Redis Clusters; ``topics`` creates topics.
"""

from __future__ import annotations


class MissingLocalExtra(RuntimeError):
    """The embedded broker or Redis was asked for, but the `local` extra is not installed
    (a deployment on real Kafka and Redis does without it)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs the `local` extra: pip install 'retention-tracker[local]'"
                         " (scripts/setup installs it)")


