"""Topics the worker creates take the cluster's default replication factor."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from retention_tracker.agents.replication import config_value, default_replication_factor
from retention_tracker.devstack.apache_kafka import read_properties


async def test_the_session_broker_gives_its_default(kafka_url: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_url.removeprefix("kafka://"))
    await admin.start()
    try:
        found = await default_replication_factor(admin)
        cluster: Any = await admin.describe_cluster()
        if len(cluster["brokers"]) != 1:
            pytest.skip("KAFKA_BROKER names a cluster")
        # the broker's settings are read back as the file gives them (not the fallback)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(cluster["brokers"][0]["node_id"]),
                            {"num.partitions": None})])
    finally:
        await admin.close()
    # deploy/kafka/server.properties says 1 for a single node; Tansu cannot say: 1 broker
    assert found == 1
    value = config_value(responses, "num.partitions")
    assert value in (read_properties()["num.partitions"], None)  # None: Tansu
