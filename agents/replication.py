"""How many replicas a topic the worker creates gets: the cluster's own default.

A topic created with replication factor 1 on a cluster of three has a single copy: one
broker lost and its partitions are gone, whatever ``acks=all`` promised. So the re-key,
dead-letter and notification topics take the cluster's ``default.replication.factor``
(what Kafka gives an auto-created topic). aiokafka's CreateTopics is version 3, which
cannot ask for "the broker's default" (-1 needs version 4), so the value is read with
DescribeConfigs from a broker.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

__all__ = ["config_value", "default_replication_factor"]

log = logging.getLogger(__name__)

DEFAULT_REPLICATION_FACTOR = "default.replication.factor"


async def default_replication_factor(admin: AIOKafkaAdminClient) -> int:
    """The cluster's ``default.replication.factor``, at most its live brokers (a value
    above them would refuse every creation).

    A broker that cannot describe its configuration (a stand-in such as Tansu, or an ACL
    without DescribeConfigs) gets min(3, brokers): Kafka's advice for production, and 1
    on a single broker.
    """
    cluster: Any = await admin.describe_cluster()
    brokers = [b["node_id"] for b in cluster.get("brokers") or []]
    if not brokers:
        return 1
    fallback = min(3, len(brokers))
    try:
        responses: Any = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(brokers[0]),
                            {DEFAULT_REPLICATION_FACTOR: None})])
        value = config_value(responses, DEFAULT_REPLICATION_FACTOR)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.info("cannot read %s (%r); using %d", DEFAULT_REPLICATION_FACTOR, exc, fallback)
        return fallback
    if value is None or not value.isdigit() or int(value) < 1:
        return fallback
    return min(int(value), len(brokers))


def config_value(responses: Any, name: str) -> str | None:
    """The value of ``name`` in DescribeConfigs responses (any version: each resource is
    (error_code, error_message, type, name, configs) and each config starts with its name
    and value)."""
    for response in responses:
        for resource in response.resources:
            if resource[0] != 0:
                continue
            for config in resource[4]:
                if config[0] == name:
                    return str(config[1]) if config[1] is not None else None
    return None
