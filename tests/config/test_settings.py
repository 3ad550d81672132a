"""Settings: security options reach every Kafka client, secrets stay out of reprs."""

from __future__ import annotations

import re
from dataclasses import replace

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
    assert set(Settings.from_env({}).kafka_options()) == {
        "bootstrap_servers", "security_protocol", "metadata_max_age_ms"}


def test_clients_reread_the_partition_leaders_every_30_s_unless_told_otherwise() -> None:
    assert Settings.from_env({}).kafka_options()["metadata_max_age_ms"] == 30_000
    assert Settings.from_env({"KAFKA_METADATA_MAX_AGE_MS": "5000"}).kafka_options()[
        "metadata_max_age_ms"] == 5000


def test_the_producer_is_idempotent_with_acks_all_unless_told_otherwise() -> None:
    options = Settings.from_env({"KAFKA_BROKER": "kafka://b1:9092"}).producer_options()
    assert (options["acks"], options["enable_idempotence"]) == ("all", True)
    assert options["bootstrap_servers"] == "b1:9092"
    tansu = Settings.from_env({"KAFKA_IDEMPOTENCE": "false"}).producer_options()
    assert (tansu["acks"], tansu["enable_idempotence"]) == ("all", False)
    with pytest.raises(ConfigError, match="KAFKA_IDEMPOTENCE"):
        Settings.from_env({"KAFKA_IDEMPOTENCE": "maybe"})


@pytest.mark.parametrize(("name", "value"), [("KAFKA_SECURITY_PROTOCOL", "TLS"),
                                             ("KAFKA_SASL_MECHANISM", "GSSAPI")])
def test_unknown_security_choices_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_segment_rules_come_from_the_settings() -> None:
    """VIP bars and the default currency, in money units (1/10000)."""
    rules = segment_rules(Settings(currency="EUR", vip_revenue=50, vip_purchases=3))
    assert rules == SegmentRules(default_currency="EUR", vip_revenue_units=500_000,
                                 vip_purchases=3, return_types=frozenset({"purchase"}))
    # docs/configuration.md: 100 USD, 10 purchases, and payer retention (RETURN_EVENTS=purchase)
    assert segment_rules(Settings()) == replace(DEFAULT_RULES,
                                                return_types=frozenset({"purchase"}))


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


def test_activity_events_are_parsed_once_each_and_checked() -> None:
    settings = Settings.from_env({"ACTIVITY_EVENTS": " bet, deposit,bet ,level_up"})
    assert settings.activity_events == ("bet", "deposit", "level_up")
    assert settings.activity_types == frozenset({"bet", "deposit", "level_up"})
    assert Settings.from_env({}).activity_events == ()
    for raw, problem in (("bet,session", "built-in"), ("survey", "built-in"),
                         ("big win", "A-Za-z0-9")):
        with pytest.raises(ConfigError, match=problem):
            Settings.from_env({"ACTIVITY_EVENTS": raw})


def test_return_events_are_purchase_unless_set() -> None:
    """Payer retention works out of the box; an empty RETURN_EVENTS turns it off."""
    assert Settings.from_env({}).return_events == ("purchase",)
    assert Settings.from_env({"RETURN_EVENTS": ""}).return_events == ()


def test_return_events_are_activity_types() -> None:
    settings = Settings.from_env({"ACTIVITY_EVENTS": "deposit",
                                  "RETURN_EVENTS": "purchase,deposit"})
    assert settings.return_events == ("purchase", "deposit")
    assert segment_rules(settings).return_types == frozenset({"purchase", "deposit"})
    for raw in ("survey", "bet"):  # an answer is no activity; bet is not in ACTIVITY_EVENTS
        with pytest.raises(ConfigError, match="RETURN_EVENTS"):
            Settings.from_env({"RETURN_EVENTS": raw})


def test_per_app_currency_and_vip_bars_over_the_global_defaults() -> None:
    settings = Settings.from_env({"CURRENCY": "USD", "APP_CURRENCIES": "casino=EUR, shop=BRL",
                                  "APP_VIP_REVENUE": "casino=500", "APP_VIP_PURCHASES": "shop=3"})
    assert [settings.currency_of(app) for app in ("casino", "shop", "other")] == [
        "EUR", "BRL", "USD"]
    rules = segment_rules(settings)
    payers = frozenset({"purchase"})  # RETURN_EVENTS' default
    assert rules.for_app("casino") == SegmentRules("EUR", 5_000_000, 10, payers)
    assert rules.for_app("shop") == SegmentRules("BRL", 1_000_000, 3, payers)
    assert rules.for_app("other") is rules and rules.default_currency == "USD"
    for name, raw in (("APP_CURRENCIES", "casino=eur"), ("APP_CURRENCIES", "casino"),
                      ("APP_VIP_REVENUE", "casino=-1"), ("APP_VIP_PURCHASES", "shop=0"),
                      ("APP_VIP_PURCHASES", "bad app=2")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: raw})


def test_per_app_inactivity_thresholds() -> None:
    settings = Settings.from_env({"INACTIVITY_THRESHOLDS": "2",
                                  "APP_INACTIVITY_THRESHOLDS": "casino=1/7/1, shop=30"})
    assert settings.inactivity_thresholds_of("casino") == (1, 7)
    assert settings.inactivity_thresholds_of("other") == (2,)
    assert settings.every_inactivity_threshold == (1, 2, 7, 30)
    assert settings.winback_rules().thresholds_of("shop") == (30,)
    for raw in ("casino=0", "casino=x", "casino="):
        with pytest.raises(ConfigError, match="APP_INACTIVITY_THRESHOLDS"):
            Settings.from_env({"APP_INACTIVITY_THRESHOLDS": raw})


def test_the_engine_is_auto_unless_told_and_only_a_known_one() -> None:
    """ENGINE (issue 29): auto by default (native where it was built); a typo stops."""
    assert Settings.from_env({}).engine == "auto"
    assert Settings.from_env({"ENGINE": "python"}).engine == "python"
    with pytest.raises(ConfigError, match=r"ENGINE='fast' must be one of auto, native, python"):
        Settings.from_env({"ENGINE": "fast"})


def test_dedup_buckets_are_auto_unless_a_number_is_given() -> None:
    assert Settings.from_env({}).dedup_buckets is None
    assert Settings.from_env({"DEDUP_BUCKETS": " Auto "}).dedup_buckets is None
    assert Settings.from_env({"DEDUP_BUCKETS": "64"}).dedup_buckets == 64
    for bad, says in (("many", "DEDUP_BUCKETS='many' must be auto or an integer"),
                      ("0", "DEDUP_BUCKETS=0 must be at least 1")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            Settings.from_env({"DEDUP_BUCKETS": bad})
