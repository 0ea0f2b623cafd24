"""One way in for configuration: every service's Settings class derives from ServiceSettings.

Nothing else in the code base reads ``os.environ``. Shared values (the broker, logging) come from
unprefixed variables such as ``KAFKA_BOOTSTRAP_SERVERS``; per-service values take the service's
prefix, e.g. ``INTAKE_DATABASE_URL`` or ``DISPATCH_DATABASE_URL``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Known to everyone who reads this repository: accepted by the embedded default only, so that
# ``fengqiao token issue`` works out of the box, and refused wherever the suite is deployed.
DEV_TOKEN_SECRET = "fengqiao-development-token-secret-not-for-production"
# HS256 keys shorter than the hash are brute-forceable (RFC 7518 section 3.2).
MIN_SECRET_LENGTH = 32


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class BusSettings(BaseSettings):
    """How a process reaches the Kafka-protocol broker."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=_alias("KAFKA_BOOTSTRAP_SERVERS")
    )
    # tansu (the embedded broker) answers InitProducerId v0 with UnknownError: both must stay off
    # there; against Apache Kafka turn them on.
    kafka_enable_idempotence: bool = Field(
        False, validation_alias=_alias("KAFKA_ENABLE_IDEMPOTENCE")
    )
    # How producers compress their record batches (``none``, ``gzip``, ``snappy``, ``lz4``,
    # ``zstd``). The embedded broker keeps every batch in memory as it came: a suite's events
    # JSON with their headers, LZ4 holds them in about a third of the memory (60,000 tickets'
    # events: 92 → 27 MB of the broker's resident memory), so the memory rotation comes about
    # three times less often, at no measurable cost to the producers' or consumers' CPU. Apache
    # Kafka stores and serves the compressed batches as they are too (less disk and network).
    kafka_compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4", validation_alias=_alias("KAFKA_COMPRESSION_TYPE")
    )
    # The partitions a topic is created with (topics that exist keep theirs). A consumer group
    # has at most this many members at work, so a service scaled out to more consumer processes
    # needs more; the embedded broker's CPU grows with it: each relay batch is stored as one
    # record batch a partition it touches, and each fetch lists every batch a partition holds.
    # At 2 rather than 6 the broker's CPU a ticket in the suite fell by about a quarter at
    # 150-215 tickets/s, where its fixed ~0.03 cores of idle requests are half of it; what grows
    # with the load about halved (docs/benchmarks.md, "Two partitions a topic").
    kafka_topic_partitions: int = Field(2, ge=1, validation_alias=_alias("KAFKA_TOPIC_PARTITIONS"))
    kafka_replication_factor: int = Field(1, validation_alias=_alias("KAFKA_REPLICATION_FACTOR"))
    kafka_session_timeout_ms: int = Field(6000, validation_alias=_alias("KAFKA_SESSION_TIMEOUT_MS"))
    kafka_heartbeat_interval_ms: int = Field(
        1500, validation_alias=_alias("KAFKA_HEARTBEAT_INTERVAL_MS")
    )
    kafka_topic_prefix: str = Field("fengqiao", validation_alias=_alias("KAFKA_TOPIC_PREFIX"))
    # Whether each consumer reads every partition of its topics itself instead of joining its
    # group for a share of them (it still commits its positions as the group). One process a
    # service (``fengqiao up``) has nothing to share, and tansu answers a new group's join in
    # about half the session time-out: ~3 s at every start and after every broker rotation (a
    # group's name carries the broker's id), the consumer idle meanwhile; an assignment reads
    # at once. A service scaled out to more processes must leave it off: each would read all.
    kafka_consumer_takes_all: bool = Field(
        False, validation_alias=_alias("KAFKA_CONSUMER_TAKES_ALL")
    )
    # How long the broker may hold a consumer's fetch when it has nothing new (``<PREFIX>_`` per
    # service). tansu does not answer a waiting fetch when records arrive: it answers at the end
    # of the wait (measured: up to ~250 ms at Kafka's 500 ms default), so the wait is a record's
    # delay on that hop; a shorter one costs the consumer and the broker a fetch more often.
    consumer_fetch_max_wait_ms: int = Field(500, ge=1)
    # The bytes a fetch waits for (up to the wait above) before the broker answers it. At 1
    # (Kafka's default), under load a consumer fetches again as soon as anything is there, a
    # few dozen records a request, each request and each small batch applied costing the broker,
    # the consumer and the database; at 64 KiB the whole suite ran 8-13 % more tickets a second
    # on 8-12 % less CPU a ticket (docs/benchmarks.md), the hop's delay bounded by the wait.
    consumer_fetch_min_bytes: int = Field(65536, ge=1)
    log_level: str = Field("INFO", validation_alias=_alias("LOG_LEVEL"))
    log_json: bool = Field(True, validation_alias=_alias("LOG_JSON"))


_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ServiceSettings(BusSettings):
    """Settings every service shares; a subclass sets ``service_name`` and its env prefix."""

    service_name: ClassVar[str] = "service"

    database_url: str = "sqlite+aiosqlite:///./var/service.db"
    database_schema: str | None = None
    database_application_name: str | None = None  # shown in pg_stat_activity
    database_pool_size: int = 10
    # How long a SQLite writer waits for the other process's write lock before giving up (and
    # the request gets a 503). Batch files hold it for a while: seconds, not milliseconds.
    sqlite_busy_timeout_ms: int = 20_000
    # SQLite's page cache per connection, in MiB (None: SQLite's own default, 2 MiB). Filled
    # only as pages are read; a service whose writes probe a large table at random keys sets it.
    sqlite_cache_mib: int | None = Field(None, ge=1)

    # Published events stay re-publishable this long after their publication: a rotated or wiped
    # embedded broker is refilled from them, so it must be at least twice the longest time a
    # consumer may lag behind (or be down) — see docs/architecture.md, "Supervision".
    outbox_retention_days: float = 7.0
    outbox_batch_size: int = 500
    outbox_poll_interval_ms: int = 200
    # How long the relay lets commits pile up after a wake-up: ``outbox_linger_ms`` after an
    # idle spell; while its last batch found rows, the next starts ``outbox_linger_busy_ms``
    # after that one began. Under load every commit wakes it, and each batch is a claim for the
    # database, a produce request and a stored record batch a partition for the broker: at 200 ms
    # the broker's CPU a ticket fell by a third to a half, p99 received -> dispatched rose by a
    # few hundredths of a second (docs/benchmarks.md, "The relay lingers under load").
    outbox_linger_ms: float = 5.0
    outbox_linger_busy_ms: float = Field(200.0, ge=0)
    # One relay per service and database on a host: uvicorn's other workers leave publishing to
    # it (a host lease) and spend their core on requests. Off: every process publishes.
    outbox_relay_one_per_host: bool = True
    broker_check_interval_ms: int = 1000
    # How long a relay meeting a new broker waits for a planned rotation's handover (where the
    # consumers had read to, ``shared.rotation``) before it replays every retained row.
    broker_handover_wait_ms: int = Field(3000, ge=0)

    consumer_max_tries: int = 5
    consumer_backoff_ms: int = 200
    consumer_backoff_max_ms: int = 5000
    consumer_batch_max_records: int = 500

    group_commit_max_batch: int = 256
    # Committer connections on PostgreSQL: a second one commits the next group while the first
    # waits for its flush. SQLite has one writer, so one lane there whatever this says.
    group_commit_lanes: int = Field(2, ge=1, le=4)

    # open (embedded default) | header (gateway-signed identity headers) | token (bearer JWTs)
    auth_mode: Literal["open", "header", "token"] = "open"
    # One identity provider for the whole suite: unprefixed variables, like the broker's.
    auth_token_secret: SecretStr | None = Field(
        SecretStr(DEV_TOKEN_SECRET), validation_alias=_alias("AUTH_TOKEN_SECRET")
    )
    auth_token_public_key_file: Path | None = Field(
        None, validation_alias=_alias("AUTH_TOKEN_PUBLIC_KEY_FILE")
    )
    auth_jwks_url: str | None = Field(None, validation_alias=_alias("AUTH_JWKS_URL"))
    auth_token_issuer: str = Field("fengqiao", validation_alias=_alias("AUTH_TOKEN_ISSUER"))
    auth_token_audience: str = Field("fengqiao", validation_alias=_alias("AUTH_TOKEN_AUDIENCE"))
    auth_token_leeway_s: float = Field(
        30.0, ge=0, le=300, validation_alias=_alias("AUTH_TOKEN_LEEWAY_S")
    )
    auth_gateway_secret: SecretStr | None = Field(
        None, validation_alias=_alias("AUTH_GATEWAY_SECRET")
    )
    auth_gateway_max_skew_s: float = Field(
        60.0, gt=0, le=900, validation_alias=_alias("AUTH_GATEWAY_MAX_SKEW_S")
    )
    max_body_bytes: int = 1 << 20

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://", "postgresql://")):
            raise ValueError(
                "database_url must be sqlite+aiosqlite://... or postgresql+asyncpg://..."
            )
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("database_schema")
    @classmethod
    def _plain_schema_name(cls, value: str | None) -> str | None:
        # Used as written in the connections' search_path and in CREATE SCHEMA: a name with
        # capitals would be folded to lower case in one and not the other, one with quotes or
        # spaces would not be a name at all.
        if not value:
            return None  # unset: the server's default search path
        if _SCHEMA_NAME.fullmatch(value) is None:
            raise ValueError(
                f"database_schema {value!r} must be a lower-case PostgreSQL name: a letter or _, "
                "then letters, digits or _, at most 63 in all"
            )
        return value

    @field_validator("auth_token_public_key_file")
    @classmethod
    def _key_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"AUTH_TOKEN_PUBLIC_KEY_FILE {value} is not a readable file")
        return value

    @field_validator("auth_jwks_url")
    @classmethod
    def _jwks_over_http(cls, value: str | None) -> str | None:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("AUTH_JWKS_URL must be an https:// (or http://) URL")
        return value or None

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> ServiceSettings:
        """Outside the embedded default, refuse secrets anyone could know or guess."""
        if self.is_production:
            problems = self.production_problems()
            if problems:
                raise ValueError(
                    "refusing to start with development secrets outside the embedded default "
                    f"(AUTH_MODE={self.auth_mode}, database {self.database_url.split(':', 1)[0]}"
                    "): " + "; ".join(problems)
                )
        return self

    @property
    def is_production(self) -> bool:
        """Deployed, not the embedded default: identities are checked or the data is shared."""
        return self.auth_mode != "open" or not self.is_sqlite

    def production_problems(self) -> list[str]:
        """What a deployment must not run with; subclasses add their own secrets."""
        problems = []
        secret = self.token_secret()
        if secret == DEV_TOKEN_SECRET:
            problems.append(
                "AUTH_TOKEN_SECRET is the development default: set a secret of your own, or set "
                "it empty and verify tokens with AUTH_TOKEN_PUBLIC_KEY_FILE or AUTH_JWKS_URL"
            )
        elif secret is not None and len(secret) < MIN_SECRET_LENGTH:
            problems.append(f"AUTH_TOKEN_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        if self.auth_mode == "token" and not (
            secret or self.auth_token_public_key_file or self.auth_jwks_url
        ):
            problems.append(
                "AUTH_MODE=token needs a key: AUTH_TOKEN_SECRET, AUTH_TOKEN_PUBLIC_KEY_FILE or "
                "AUTH_JWKS_URL"
            )
        gateway = self.gateway_secret()
        if self.auth_mode == "header" and gateway is None:
            problems.append(
                "AUTH_MODE=header needs AUTH_GATEWAY_SECRET, the secret the gateway signs the "
                "identity headers with"
            )
        elif gateway is not None and len(gateway) < MIN_SECRET_LENGTH:
            problems.append(f"AUTH_GATEWAY_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return problems

    def token_secret(self) -> str | None:
        """The HS256 secret tokens are verified with; None when unset or empty."""
        value = self.auth_token_secret.get_secret_value() if self.auth_token_secret else ""
        return value or None

    def gateway_secret(self) -> str | None:
        """The secret the trusted gateway signs identity headers with; None when unset."""
        value = self.auth_gateway_secret.get_secret_value() if self.auth_gateway_secret else ""
        return value or None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite URL, or None for PostgreSQL / in-memory."""
        if not self.is_sqlite:
            return None
        raw = self.database_url.split(":///", 1)[1].split("?", 1)[0]
        return None if raw in ("", ":memory:") else Path(raw)


class SupervisorSettings(BaseSettings):
    """How ``fengqiao up`` keeps the suite running: restarts and the embedded broker's rotation."""

    model_config = SettingsConfigDict(env_prefix="SUPERVISOR_", extra="ignore")

    # A crashed process restarts after this delay, doubled on each crash in a row up to the cap;
    # a process that stayed up ``restart_stable_s`` starts again from the first delay.
    restart_backoff_s: float = Field(0.5, gt=0)
    restart_backoff_max_s: float = Field(30.0, gt=0)
    restart_stable_s: float = Field(60.0, ge=0)
    # The embedded broker keeps every record in memory; a rotation (a planned restart, refilled
    # from the outboxes) bounds it. 0 turns either trigger off.
    broker_rotate_rss_mb: float = Field(1024.0, ge=0)
    broker_rotate_every_hours: float = Field(24.0, ge=0)
    # Right after a rotation the broker holds the re-published retention window again: a memory
    # threshold below that would rotate in a loop, so memory rotations keep this distance.
    broker_rotate_min_gap_s: float = Field(300.0, ge=0)
    # How often process memory is sampled (for the rotation and the peak-RSS gauges).
    sample_interval_s: float = Field(2.0, gt=0)


def service_settings_config(prefix: str, **extra: Any) -> SettingsConfigDict:
    """Settings config for a service: its own prefix, unknown variables ignored."""
    return SettingsConfigDict(
        env_prefix=prefix,
        extra="ignore",
        populate_by_name=True,
        **extra,  # type: ignore[typeddict-item]
    )
