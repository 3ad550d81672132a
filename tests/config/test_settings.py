"""Settings: security options reach every Kafka client, secrets stay out of reprs."""

from __future__ import annotations

import re

import pytest

from retention_tracker.config.settings import ConfigError, Settings, segment_rules
from retention_tracker.streams.segments import DEFAULT_RULES, SegmentRules


def test_sasl_ssl_options_are_passed_and_the_password_is_not_shown() -> None:
    settings = Settings.from_env({
        "KAFKA_BROKER": "kafka://b1:9093,kafka://b2:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "tracker",
        "KAFKA_SASL_PASSWORD": "hunter2",
    })
    options = settings.kafka_options()
    assert options["bootstrap_servers"] == "b1:9093,b2:9093"
    assert (options["security_protocol"], options["sasl_mechanism"]) == ("SASL_SSL",
                                                                         "SCRAM-SHA-512")
    assert options["sasl_plain_password"] == "hunter2" and "ssl_context" in options
    assert "hunter2" not in repr(settings)


def test_plaintext_has_no_sasl_or_ssl_options() -> None:
    assert set(Settings.from_env({}).kafka_options()) == {"bootstrap_servers",
                                                          "security_protocol"}


@pytest.mark.parametrize(("name", "value"), [("KAFKA_SECURITY_PROTOCOL", "TLS"),
                                             ("KAFKA_SASL_MECHANISM", "GSSAPI")])
def test_unknown_security_choices_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_segment_rules_come_from_the_settings() -> None:
    """VIP bars and the default currency, in money units (1/10000)."""
    rules = segment_rules(Settings(currency="EUR", vip_revenue=50, vip_purchases=3))
    assert rules == SegmentRules(default_currency="EUR", vip_revenue_units=500_000,
                                 vip_purchases=3)
    assert segment_rules(Settings()) == DEFAULT_RULES  # README: 100 USD, 10 purchases


def test_redis_cluster_and_wait_settings() -> None:
    built = Settings.from_env({"REDIS_CLUSTER": "true", "REDIS_URL": "rediss://u:p@h:7000",
                               "REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "250"})
    assert (built.redis_cluster, built.redis_wait_replicas, built.redis_wait_timeout_ms) == (
        True, 1, 250)
    assert not Settings.from_env({"REDIS_CLUSTER": "no"}).redis_cluster


@pytest.mark.parametrize(("env", "says"), [
    ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER='maybe' must be true or false"),
    ({"REDIS_CLUSTER": "true", "REDIS_URL": "redis://h:7000/2"}, "database 0"),
    ({"REDIS_CLUSTER": "true", "REDIS_URL": "unix:///tmp/redis.sock"}, "over TCP"),
    ({"KEY_PREFIX": "rt{x}"}, "must not contain braces"),
    ({"REDIS_WAIT_TIMEOUT_MS": "0"}, "must be at least 1"),
])
def test_bad_redis_cluster_settings_are_one_line(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        Settings.from_env(env)
