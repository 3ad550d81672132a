"""The one settings object: built once from environment variables, frozen, passed down.

Every knob the tracker has is a field here, with its environment variable and default
documented in ``SETTINGS_DOC`` (docs/configuration.md's table is generated from it).
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from retention_tracker.streams.calendar import MS_PER_DAY
from retention_tracker.streams.engine import ENGINES
from retention_tracker.streams.events import (
    ACTIVITY_TYPE_RE,
    APP_NAME_RE,
    CURRENCY_RE,
    EVENT_TYPES,
    SURVEY,
)
from retention_tracker.streams.lapse_model import MODELS
from retention_tracker.streams.segments import SegmentRules, money_units

if TYPE_CHECKING:
    from retention_tracker.streams.winback import WinbackRules



class ConfigError(Exception):
    """A bad setting, or settings the stored state or the topics contradict: the CLI prints
    its message as one line and exits non-zero (a worker stops on it)."""


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One environment variable: its meaning, and the Settings field it sets (by default
    the variable's name in lower case). Its default is that field's, shown as text."""

    env: str
    meaning: str
    attribute: str = ""
    shown: str = ""  # the default as a rule rather than a value (REKEY_TOPIC)
    duration: bool = False  # milliseconds, spelled with a unit (24h)

    @property
    def default(self) -> str:
        value = getattr(DEFAULTS, self.attribute or self.env.lower())
        return self.shown or (_duration_text(value) if self.duration else _as_text(value))


SETTINGS_DOC: tuple[SettingDoc, ...] = (
    SettingDoc("KAFKA_BROKER", "Kafka bootstrap servers"),
    SettingDoc("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    SettingDoc("KAFKA_SASL_MECHANISM", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    SettingDoc("KAFKA_SASL_USERNAME", "SASL user"),
    SettingDoc("KAFKA_SASL_PASSWORD", "SASL password (never logged)"),
    SettingDoc("KAFKA_SSL_CAFILE", "CA bundle for SSL/SASL_SSL (default: system CAs)"),
    SettingDoc("KAFKA_IDEMPOTENCE",
               "idempotent producers (re-key, dead letters, notifications); false only for a "
               "broker without them (the Tansu fallback)"),
    SettingDoc("KAFKA_METADATA_MAX_AGE_MS",
               "longest a client trusts its map of partition leaders (after a leader change "
               "aiokafka may retry the old leader until it re-reads the map)"),
    SettingDoc("REDIS_URL", "Redis with all state; rediss:// for TLS, user:password@ for AUTH/ACL"),
    SettingDoc("REDIS_CLUSTER",
               "true: REDIS_URL is a seed node of a Redis Cluster (state sharded by partition)"),
    SettingDoc("REDIS_WAIT_REPLICAS",
               "replicas that must acknowledge each apply (WAIT); 0: asynchronous replication"),
    SettingDoc("REDIS_WAIT_TIMEOUT_MS",
               "longest an apply waits for REDIS_WAIT_REPLICAS; a shortfall is logged, counted"),
    SettingDoc("INPUT_TOPICS",
               "input topics (comma separated, equal partition counts), best keyed by user_id"),
    SettingDoc("DLQ_TOPIC", "dead-letter topic for rejected events"),
    SettingDoc("REKEY_TOPIC",
               "internal topic: events read away from their user's partition go home by it",
               shown="GROUP_ID.rekey"),
    SettingDoc("GROUP_ID", "Kafka consumer group of the workers"),
    SettingDoc("WEB_HOST", "address of the worker's HTTP server"),
    SettingDoc("WEB_PORT", "port of the worker's HTTP server (/retention/*, /metrics)"),
    SettingDoc("API_TOKEN",
               "bearer token /retention/* requires (empty: none; needed off loopback)"),
    SettingDoc("METRICS_TOKEN", "bearer token /metrics requires (empty: none)"),
    SettingDoc("TIMEZONE", "IANA timezone of apps not named in APP_TIMEZONES"),
    SettingDoc("APP_TIMEZONES", "per-app timezones: app=Zone,app2=Zone2"),
    SettingDoc("ACTIVITY_EVENTS",
               "custom event types that count as activity like a session, e.g. "
               "bet,deposit,level_up (others: dead-lettered as unknown_type)"),
    SettingDoc("RETURN_EVENTS",
               "event types that can define a return: report --returning purchase counts "
               "a user back in a period only if it sent one then (empty: none)"),
    SettingDoc("CURRENCY", "the apps' currency: purchases without one, costs, VIP bar"),
    SettingDoc("APP_CURRENCIES", "per-app currencies: app=EUR,app2=BRL (others: CURRENCY)"),
    SettingDoc("VIP_REVENUE", "lifetime revenue (the app's currency) that makes a user VIP"),
    SettingDoc("APP_VIP_REVENUE", "per-app VIP revenue bars: app=500,app2=50"),
    SettingDoc("VIP_PURCHASES", "lifetime purchase count that makes a user VIP"),
    SettingDoc("APP_VIP_PURCHASES", "per-app VIP purchase counts: app=20,app2=5"),
    SettingDoc("INACTIVITY_THRESHOLDS",
               "days of inactivity that notify, e.g. 1,2,7,30; empty: win-back off"),
    SettingDoc("APP_INACTIVITY_THRESHOLDS",
               "per-app thresholds: app=1/2/7,app2=30 (others: INACTIVITY_THRESHOLDS)"),
    SettingDoc("WINBACK_MAX_DELAY",
               "a notification whose moment is further behind now is counted expired, not sent",
               attribute="winback_max_delay_ms", duration=True),
    SettingDoc("INACTIVE_TOPIC_PATTERN", "topic per threshold"),
    SettingDoc("REACTIVATED_TOPIC", "topic of notified users back"),
    SettingDoc("QUICK_CHURN_DAYS", "churn_type is quick when a user lasted less than this"),
    SettingDoc("WINBACK_TICK_MS", "how often due notifications are looked for"),
    SettingDoc("AT_RISK_MODEL", "risk-of-lapsing model: bgnbd (BG/NBD) or mbgnbd (MBG/NBD, "
               "lets one-day users lapse too)"),
    SettingDoc("APP_AT_RISK_MODELS", "per-app models: app=mbgnbd,app2=bgnbd (others: "
               "AT_RISK_MODEL)"),
    SettingDoc("AT_RISK_THRESHOLD", "a user is at risk while P(alive) is below it (0 < t < 1)"),
    SettingDoc("AT_RISK_TOPIC", "topic of users whose P(alive) fell below AT_RISK_THRESHOLD"),
    SettingDoc("AT_RISK_REFIT_SECONDS",
               "how often each worker refits every app's model; 0: only on demand"),
    SettingDoc("HORIZON_DAYS", "events older than this behind the watermark are rejected"),
    SettingDoc("DEDUP_WINDOW_DAYS", "a repeated (app, event_id) in it is a duplicate"),
    SettingDoc("CLOCK", "'wall' (live) or 'event' (replaying history: now = watermark)"),
    SettingDoc("CLOCK_SPEED", "wall clock only: run it this many times faster (demos, tests)"),
    SettingDoc("EVENT_CLOCK_IDLE_MS", "event clock: a partition at lag 0 this long follows "
               "the stream's watermark"),
    SettingDoc("BATCH_MAX_RECORDS", "Kafka records per fetch and partition batch at most "
               "(replay speed vs memory and Redis script time)"),
    SettingDoc("ENGINE", "the plan's engine: 'native' (compiled by pip install where a C "
               "compiler is found), 'python' (the fallback) or 'auto' (native when built)"),
    SettingDoc("FETCH_MAX_WAIT_MS", "longest a fetch waits for data (latency vs requests)"),
    SettingDoc("MAX_MESSAGE_BYTES", "larger messages are dead-lettered as too_large "
               "(their first 512 KiB; every dead letter holds at most that)"),
    SettingDoc("MAX_EVENTS_PER_MESSAGE", "larger JSON arrays are dead-lettered whole"),
    SettingDoc("USER_BUCKETS", "Redis hashes per partition and app holding user records; "
               "fixed for a deployment's life (a worker with another count refuses to start)"),
    SettingDoc("DEDUP_BUCKETS", "Redis hashes per partition and dedup generation holding the "
               "ids of purchases and costed installs; auto: each generation sized from the "
               "ids its previous one kept (~24 a hash, under the listpack limit of 64); a "
               "number: every new generation gets "
               "it (see the notes: upgrading)", shown="auto"),
    SettingDoc("DUE_BUCKETS", "small Redis sorted sets per partition holding win-back and "
               "at-risk due entries (about tracked users per partition / 64: each stays a "
               "listpack under 128 entries); fixed for a deployment's life (a worker with another "
               "count refuses to start)"),
    SettingDoc("STATE_CACHE_USERS",
               "decoded user states a worker keeps between batches (~1.2 kB each; 0: none)"),
    SettingDoc("KEY_PREFIX", "prefix of every Redis key"),
    SettingDoc("METRICS_COHORT_DAYS", "daily cohorts exported on /metrics"),
    SettingDoc("METRICS_OFFSETS", "cohort offsets (days) exported on /metrics"),
    SettingDoc("METRICS_REFRESH_S", "seconds between snapshots of the Redis figures"),
    SettingDoc("SESSION_TIMEOUT_MS", "Kafka consumer session timeout"),
    SettingDoc("HEARTBEAT_MS", "Kafka consumer heartbeat interval"),
)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _auto_int(env: Mapping[str, str], name: str, minimum: int) -> int | None:
    """An integer, or None for ``auto`` (the default)."""
    raw = env.get(name, "").strip()
    if raw.lower() in ("", "auto"):
        return None
    if not raw.lstrip("-").isdigit():
        raise ConfigError(f"{name}={raw!r} must be auto or an integer")
    return _int(env, name, minimum, minimum)


CLOCKS = ("wall", "event")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE + _FALSE:
        raise ConfigError(f"{name}={raw!r} must be true or false")
    return raw in _TRUE


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} must be a finite number >= 0")
    return value


def _currency(raw: str) -> str:
    code = raw.strip()
    if not CURRENCY_RE.match(code):
        raise ConfigError(f"CURRENCY={raw!r} must be an ISO 4217 code such as USD")
    return code


def _brokers(raw: str) -> str:
    """KAFKA_BROKER: comma-separated host:port, each maybe prefixed kafka:// (Faust's form);
    checked here so that a typo stops every command with this line, not deep in a client."""
    for part in raw.split(","):
        address = part.strip().removeprefix("kafka://")
        try:
            parts = urlsplit(f"//{address}")
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or not port or any(c in address for c in "/@ "):
            raise ConfigError(f"KAFKA_BROKER={raw!r}: {part.strip()!r} is not host:port "
                              "(e.g. kafka://127.0.0.1:9092; several: comma-separated)")
    return raw


def mask_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0``; comma-separated
    lists (bootstrap servers) are masked part by part."""
    if "," in url:
        return ",".join(mask_url(part) for part in url.split(","))
    try:
        parts = urlsplit(url.strip())
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if not password:
        return url.strip()
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _key_prefix(raw: str) -> str:
    """A brace in the prefix would become every key's hash tag: all partitions in one
    Redis Cluster slot, on one master."""
    if "{" in raw or "}" in raw:
        raise ConfigError(f"KEY_PREFIX={raw!r} must not contain braces: the partition is the "
                          "keys' hash tag ({<partition>})")
    return raw


def _redis_url(raw: str, cluster: bool = False) -> str:
    """Checked here so a typo is one line at start, not redis-py's traceback at first use."""
    url = raw.strip()
    try:
        parts = urlsplit(url)
        _ = parts.port  # parses and range-checks the port
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL={mask_url(url)!r} is not a URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"REDIS_URL={mask_url(url)!r} must start with redis://, rediss:// "
                          "or unix://")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"REDIS_URL={mask_url(url)!r} names no host")
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise ConfigError(f"REDIS_URL={mask_url(url)!r}: the database ({database!r}) must be "
                          "a number")
    if cluster and (parts.scheme == "unix" or database not in ("", "0")):
        raise ConfigError(f"REDIS_URL={mask_url(url)!r}: with REDIS_CLUSTER=true it names a "
                          "cluster node over TCP, database 0 (a cluster has no other)")
    return url


def _zone(name: str, where: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown IANA timezone {name!r}") from None
    return name


def _app_timezones(raw: str) -> dict[str, str]:
    zones: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        app, sep, zone = item.partition("=")
        app, zone = app.strip(), zone.strip()
        if not sep or not APP_NAME_RE.match(app):
            raise ConfigError(f"APP_TIMEZONES: expected app=Zone, got {item!r}")
        zones[app] = _zone(zone, f"APP_TIMEZONES[{app}]")
    return zones


def _per_app(name: str, raw: str, value: Any) -> dict[str, Any]:
    """``app=value,app2=value2``: ``value`` parses (and checks) one value, raising
    ConfigError or ValueError with the reason."""
    found: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        app, sep, text = item.partition("=")
        app, text = app.strip(), text.strip()
        if not sep or not APP_NAME_RE.match(app) or not text:
            raise ConfigError(f"{name}: expected app=value, got {item!r}")
        try:
            found[app] = value(text)
        except ValueError as exc:
            raise ConfigError(f"{name}[{app}]: {exc}") from None
    return found


def _currency_code(text: str) -> str:
    if not CURRENCY_RE.match(text):
        raise ValueError(f"{text!r} must be an ISO 4217 code such as USD")
    return text


def _positive_number(text: str) -> float:
    number = float(text)
    if not 0 <= number < float("inf"):
        raise ValueError(f"{text!r} must be a finite number >= 0")
    return number


def _model(text: str) -> str:
    if text not in MODELS:
        raise ValueError(f"{text!r} must be one of {', '.join(MODELS)}")
    return text


def _probability(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 < value < 1:
        raise ConfigError(f"{name}={value:g} must lie strictly between 0 and 1")
    return value


def _count(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(f"{text!r} must be at least 1")
    return number


def _list(name: str, raw: str) -> tuple[str, ...]:
    items = tuple(p.strip() for p in raw.split(",") if p.strip())
    if not items:
        raise ConfigError(f"{name} must name at least one value")
    return items


def _sorted_ints(raw: str, invalid: str) -> tuple[int, ...]:
    """A comma-separated list of integers, each once, ascending; ``invalid`` says why not."""
    try:
        return tuple(sorted({int(p) for p in raw.split(",") if p.strip()}))
    except ValueError:
        raise ConfigError(invalid) from None


def _days_list(raw: str) -> tuple[int, ...]:
    values = _sorted_ints(raw, f"INACTIVITY_THRESHOLDS={raw!r} must be whole days, e.g. 1,2,7")
    if values and values[0] < 1:
        raise ConfigError(f"INACTIVITY_THRESHOLDS={raw!r} must name days >= 1 (empty: off)")
    return values


_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": MS_PER_DAY}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*\Z")


def _app_days(text: str) -> tuple[int, ...]:
    """One app's thresholds: days >= 1 joined by '/' (``1/2/7``)."""
    try:
        values = tuple(sorted({int(p) for p in text.split("/") if p.strip()}))
    except ValueError:
        raise ValueError(f"{text!r} must be whole days joined by /, e.g. 1/2/7") from None
    if not values or values[0] < 1:
        raise ValueError(f"{text!r} must name days >= 1")
    return values


def _duration_ms(name: str, raw: str) -> int:
    """``24h``, ``90m``, ``2d``, ``3600s``: a number and a unit (ms, s, m, h, d)."""
    found = _DURATION_RE.match(raw)
    if not found:
        raise ConfigError(f"{name}={raw!r} must be a duration such as 24h, 90m or 2d")
    return int(float(found[1]) * _DURATION_UNITS_MS[found[2]])


def _activity_types(raw: str) -> tuple[str, ...]:
    """ACTIVITY_EVENTS: custom type names, each once, in the order given; spelt like app
    names (they label the accepted-events counters) and none of the built-in types."""
    names: list[str] = []
    for name in filter(None, (part.strip() for part in raw.split(","))):
        if not ACTIVITY_TYPE_RE.match(name):
            raise ConfigError(f"ACTIVITY_EVENTS: {name!r} must be 1-64 chars of "
                              "[A-Za-z0-9._-]")
        if name in EVENT_TYPES:
            raise ConfigError(f"ACTIVITY_EVENTS: {name!r} is a built-in event type")
        if name not in names:
            names.append(name)
    return tuple(names)


def _return_types(raw: str, activity: tuple[str, ...]) -> tuple[str, ...]:
    """RETURN_EVENTS: activity types (built-in or ACTIVITY_EVENTS), each once; a survey
    answer is no activity, so it cannot be a return."""
    allowed = (*(t for t in EVENT_TYPES if t != SURVEY), *activity)
    names: list[str] = []
    for name in filter(None, (part.strip() for part in raw.split(","))):
        if name not in allowed:
            raise ConfigError(f"RETURN_EVENTS: {name!r} is not an activity type (one of "
                              f"{', '.join(allowed)}; custom types go in ACTIVITY_EVENTS)")
        if name not in names:
            names.append(name)
    return tuple(names)


def _pattern(raw: str) -> str:
    pattern = raw.strip()
    if "{days}" not in pattern:
        raise ConfigError(f"INACTIVE_TOPIC_PATTERN={raw!r} must contain {{days}}")
    return pattern


def _offsets(raw: str) -> tuple[int, ...]:
    values = _sorted_ints(raw, f"METRICS_OFFSETS={raw!r} must be comma-separated integers")
    if not values or values[0] < 0:
        raise ConfigError(f"METRICS_OFFSETS={raw!r} must name offsets >= 0")
    return values


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_broker: str = "kafka://127.0.0.1:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    kafka_idempotence: bool = True
    #: aiokafka's default is 5 minutes; after a broker was fenced and came back, its fetcher
    #: retried an offset lookup on the stale leader without re-reading metadata until then
    #: (the 3-broker fault suite's paused-broker case): 30 s bounds that stall
    kafka_metadata_max_age_ms: int = 30_000
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    input_topics: tuple[str, ...] = ("app-events",)
    dlq_topic: str = "app-events.dlq"
    rekey_topic: str = "retention-tracker.rekey"
    group_id: str = "retention-tracker"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    api_token: str = field(default="", repr=False)
    metrics_token: str = field(default="", repr=False)
    timezone: str = "UTC"
    app_timezones: Mapping[str, str] = field(default_factory=dict)
    activity_events: tuple[str, ...] = ()
    # payer retention out of the box; its cost is in BENCHMARKS.md ("Payer retention")
    return_events: tuple[str, ...] = ("purchase",)
    currency: str = "USD"
    app_currencies: Mapping[str, str] = field(default_factory=dict)
    vip_revenue: float = 100.0
    app_vip_revenue: Mapping[str, float] = field(default_factory=dict)
    vip_purchases: int = 10
    app_vip_purchases: Mapping[str, int] = field(default_factory=dict)
    inactivity_thresholds: tuple[int, ...] = (2,)
    app_inactivity_thresholds: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    inactive_topic_pattern: str = "users.inactive.{days}d"
    reactivated_topic: str = "users.reactivated"
    quick_churn_days: int = 7
    winback_max_delay_ms: int = MS_PER_DAY
    winback_tick_ms: int = 1000
    at_risk_model: str = "bgnbd"
    app_at_risk_models: Mapping[str, str] = field(default_factory=dict)
    at_risk_threshold: float = 0.5
    at_risk_topic: str = "users.at_risk"
    at_risk_refit_seconds: int = 3600
    horizon_days: int = 400
    dedup_window_days: int = 7
    clock: str = "wall"
    clock_speed: float = 1.0
    event_clock_idle_ms: int = 5000
    batch_max_records: int = 20000
    engine: str = "auto"
    fetch_max_wait_ms: int = 50
    max_message_bytes: int = 1 << 20
    max_events_per_message: int = 1000
    user_buckets: int = 1024
    dedup_buckets: int | None = None  # auto
    due_buckets: int = 4096
    state_cache_users: int = 100_000
    key_prefix: str = "rt"
    metrics_cohort_days: int = 35
    metrics_offsets: tuple[int, ...] = (0, 1, 2, 3, 7, 14, 30)
    metrics_refresh_s: int = 5
    session_timeout_ms: int = 6000
    heartbeat_ms: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives; an unset (or blank) variable keeps the
        field's default, parsed from its text the same way."""
        env = os.environ if env is None else env
        d = DEFAULTS

        def raw(name: str) -> str:
            return env.get(name, "").strip() or DEFAULT_TEXT[name]

        group_id = raw("GROUP_ID")
        return cls(
            kafka_broker=_brokers(raw("KAFKA_BROKER")),
            kafka_security_protocol=_choice(env, "KAFKA_SECURITY_PROTOCOL",
                                            d.kafka_security_protocol, SECURITY_PROTOCOLS),
            kafka_sasl_mechanism=_choice(env, "KAFKA_SASL_MECHANISM", d.kafka_sasl_mechanism,
                                         SASL_MECHANISMS),
            kafka_sasl_username=env.get("KAFKA_SASL_USERNAME", ""),
            kafka_sasl_password=env.get("KAFKA_SASL_PASSWORD", ""),  # as typed: not stripped
            kafka_ssl_cafile=env.get("KAFKA_SSL_CAFILE", "").strip(),
            kafka_idempotence=_bool(env, "KAFKA_IDEMPOTENCE", d.kafka_idempotence),
            kafka_metadata_max_age_ms=_int(env, "KAFKA_METADATA_MAX_AGE_MS",
                                           d.kafka_metadata_max_age_ms, minimum=1000),
            redis_url=_redis_url(raw("REDIS_URL"), _bool(env, "REDIS_CLUSTER", d.redis_cluster)),
            redis_cluster=_bool(env, "REDIS_CLUSTER", d.redis_cluster),
            redis_wait_replicas=_int(env, "REDIS_WAIT_REPLICAS", d.redis_wait_replicas),
            redis_wait_timeout_ms=_int(env, "REDIS_WAIT_TIMEOUT_MS", d.redis_wait_timeout_ms,
                                       minimum=1),
            # set but empty is an error here (and "win-back off" for the thresholds)
            input_topics=_list("INPUT_TOPICS",
                               env.get("INPUT_TOPICS", DEFAULT_TEXT["INPUT_TOPICS"])),
            dlq_topic=raw("DLQ_TOPIC"),
            group_id=group_id,
            rekey_topic=env.get("REKEY_TOPIC", "").strip() or f"{group_id}.rekey",
            web_host=raw("WEB_HOST"),
            web_port=_int(env, "WEB_PORT", d.web_port, minimum=1),
            api_token=env.get("API_TOKEN", "").strip(),
            metrics_token=env.get("METRICS_TOKEN", "").strip(),
            timezone=_zone(raw("TIMEZONE"), "TIMEZONE"),
            app_timezones=_app_timezones(env.get("APP_TIMEZONES", "")),
            activity_events=_activity_types(env.get("ACTIVITY_EVENTS", "")),
            return_events=_return_types(env.get("RETURN_EVENTS", ",".join(d.return_events)),
                                        _activity_types(env.get("ACTIVITY_EVENTS", ""))),
            currency=_currency(raw("CURRENCY")),
            app_currencies=_per_app("APP_CURRENCIES", env.get("APP_CURRENCIES", ""),
                                    _currency_code),
            vip_revenue=_float(env, "VIP_REVENUE", d.vip_revenue),
            app_vip_revenue=_per_app("APP_VIP_REVENUE", env.get("APP_VIP_REVENUE", ""),
                                     _positive_number),
            vip_purchases=_int(env, "VIP_PURCHASES", d.vip_purchases, minimum=1),
            app_vip_purchases=_per_app("APP_VIP_PURCHASES", env.get("APP_VIP_PURCHASES", ""),
                                       _count),
            inactivity_thresholds=_days_list(
                env.get("INACTIVITY_THRESHOLDS", DEFAULT_TEXT["INACTIVITY_THRESHOLDS"])),
            app_inactivity_thresholds=_per_app(
                "APP_INACTIVITY_THRESHOLDS", env.get("APP_INACTIVITY_THRESHOLDS", ""),
                _app_days),
            winback_max_delay_ms=_duration_ms("WINBACK_MAX_DELAY", raw("WINBACK_MAX_DELAY")),
            inactive_topic_pattern=_pattern(raw("INACTIVE_TOPIC_PATTERN")),
            reactivated_topic=raw("REACTIVATED_TOPIC"),
            quick_churn_days=_int(env, "QUICK_CHURN_DAYS", d.quick_churn_days, minimum=1),
            winback_tick_ms=_int(env, "WINBACK_TICK_MS", d.winback_tick_ms, minimum=10),
            at_risk_model=_choice(env, "AT_RISK_MODEL", d.at_risk_model, MODELS),
            app_at_risk_models=_per_app("APP_AT_RISK_MODELS", env.get("APP_AT_RISK_MODELS", ""),
                                        _model),
            at_risk_threshold=_probability(env, "AT_RISK_THRESHOLD", d.at_risk_threshold),
            at_risk_topic=raw("AT_RISK_TOPIC"),
            at_risk_refit_seconds=_int(env, "AT_RISK_REFIT_SECONDS", d.at_risk_refit_seconds),
            horizon_days=_int(env, "HORIZON_DAYS", d.horizon_days, minimum=31),
            dedup_window_days=_int(env, "DEDUP_WINDOW_DAYS", d.dedup_window_days, minimum=1),
            clock=_choice(env, "CLOCK", d.clock, CLOCKS),
            clock_speed=_float(env, "CLOCK_SPEED", d.clock_speed) or d.clock_speed,
            event_clock_idle_ms=_int(env, "EVENT_CLOCK_IDLE_MS", d.event_clock_idle_ms,
                                     minimum=0),
            batch_max_records=_int(env, "BATCH_MAX_RECORDS", d.batch_max_records, minimum=1),
            engine=_choice(env, "ENGINE", d.engine, ENGINES),
            fetch_max_wait_ms=_int(env, "FETCH_MAX_WAIT_MS", d.fetch_max_wait_ms, minimum=0),
            max_message_bytes=_int(env, "MAX_MESSAGE_BYTES", d.max_message_bytes, minimum=64),
            max_events_per_message=_int(
                env, "MAX_EVENTS_PER_MESSAGE", d.max_events_per_message, minimum=1
            ),
            user_buckets=_int(env, "USER_BUCKETS", d.user_buckets, minimum=1),
            dedup_buckets=_auto_int(env, "DEDUP_BUCKETS", minimum=1),
            due_buckets=_int(env, "DUE_BUCKETS", d.due_buckets, minimum=1),
            state_cache_users=_int(env, "STATE_CACHE_USERS", d.state_cache_users),
            key_prefix=_key_prefix(raw("KEY_PREFIX")),
            metrics_cohort_days=_int(env, "METRICS_COHORT_DAYS", d.metrics_cohort_days, minimum=1),
            metrics_offsets=_offsets(raw("METRICS_OFFSETS")),
            metrics_refresh_s=_int(env, "METRICS_REFRESH_S", d.metrics_refresh_s, minimum=1),
            session_timeout_ms=_int(env, "SESSION_TIMEOUT_MS", d.session_timeout_ms, minimum=1000),
            heartbeat_ms=_int(env, "HEARTBEAT_MS", d.heartbeat_ms, minimum=100),
        )

    @property
    def activity_types(self) -> frozenset[str]:
        """ACTIVITY_EVENTS as the parser takes them."""
        return frozenset(self.activity_events)

    def timezone_of(self, app: str) -> str:
        return self.app_timezones.get(app, self.timezone)

    def currency_of(self, app: str) -> str:
        """The app's currency (APP_CURRENCIES, else CURRENCY): purchases without one, install
        costs, the VIP revenue bar, ROAS."""
        return self.app_currencies.get(app, self.currency)

    def winback_rules(self) -> WinbackRules:
        from retention_tracker.streams.winback import (
            WinbackRules,  # winback needs events, which need these settings
        )

        return WinbackRules(self.inactivity_thresholds, self.winback_max_delay_ms,
                            self.quick_churn_days, dict(self.app_inactivity_thresholds))

    def at_risk_model_of(self, app: str) -> str:
        """The app's risk-of-lapsing model (APP_AT_RISK_MODELS, else AT_RISK_MODEL)."""
        return self.app_at_risk_models.get(app, self.at_risk_model)

    def inactivity_thresholds_of(self, app: str) -> tuple[int, ...]:
        """The app's thresholds (APP_INACTIVITY_THRESHOLDS, else INACTIVITY_THRESHOLDS)."""
        return self.app_inactivity_thresholds.get(app, self.inactivity_thresholds)

    @property
    def every_inactivity_threshold(self) -> tuple[int, ...]:
        """Every threshold some app has: the topics and due sets there are."""
        per_app = (d for days in self.app_inactivity_thresholds.values() for d in days)
        return tuple(sorted({*self.inactivity_thresholds, *per_app}))

    def inactive_topic(self, days: int) -> str:
        return self.inactive_topic_pattern.replace("{days}", str(days))

    def kafka_options(self) -> dict[str, Any]:
        """Connection options for every aiokafka client the tracker makes (one place)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
            "metadata_max_age_ms": self.kafka_metadata_max_age_ms,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            options.update(sasl_mechanism=self.kafka_sasl_mechanism,
                           sasl_plain_username=self.kafka_sasl_username,
                           sasl_plain_password=self.kafka_sasl_password)
        if self.kafka_security_protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(cafile=self.kafka_ssl_cafile or None)
        return options

    def producer_options(self) -> dict[str, Any]:
        """The worker's producer (re-key, dead letters, notifications): every write
        acknowledged by all in-sync replicas, and idempotent, so a retried send after a
        lost answer is not written twice (the broker drops the repeat by sequence)."""
        return {**self.kafka_options(), "acks": "all",
                "enable_idempotence": self.kafka_idempotence}

    @property
    def bootstrap_servers(self) -> str:
        """KAFKA_BROKER without the ``kafka://`` scheme Faust wants, for aiokafka."""
        return ",".join(
            part.strip().removeprefix("kafka://") for part in self.kafka_broker.split(",")
        )


DEFAULTS = Settings()


def _as_text(value: object) -> str:
    """A default as its environment variable would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _duration_text(ms: int) -> str:
    """Hours, minutes or seconds, the largest that spells ``ms`` whole: ``24h``."""
    for unit in ("h", "m", "s"):
        if ms % _DURATION_UNITS_MS[unit] == 0:
            return f"{ms // _DURATION_UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


DEFAULT_TEXT = {doc.env: doc.default for doc in SETTINGS_DOC}


def settings_table() -> str:
    """Every setting as a Markdown table (variable, default, meaning): the reference in
    docs/configuration.md, which a test holds equal to this."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for doc in SETTINGS_DOC:
        default = f"`{doc.default}`" if doc.default else ""
        rows.append(f"| `{doc.env}` | {default} | {doc.meaning} |")
    return "\n".join(rows)


def segment_rules(settings: Settings) -> SegmentRules:
    """The value-segment bars and default currency these settings give: the global ones,
    and ``per_app`` those of the apps with their own (``rules.for_app(app)``)."""
    def of(app: str | None) -> SegmentRules:
        return SegmentRules(
            default_currency=settings.currency_of(app) if app else settings.currency,
            vip_revenue_units=money_units(settings.app_vip_revenue.get(app or "",
                                                                       settings.vip_revenue)),
            vip_purchases=settings.app_vip_purchases.get(app or "", settings.vip_purchases),
            return_types=frozenset(settings.return_events),
        )

    apps = {*settings.app_currencies, *settings.app_vip_revenue, *settings.app_vip_purchases}
    return replace(of(None), per_app={app: of(app) for app in sorted(apps)})
