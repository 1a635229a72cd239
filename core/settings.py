"""The one settings object. Every value comes from an ``AGENTLEDGER_*`` environment variable.

The defaults are the embedded stack: a Tansu broker this process starts, and a chdb
store under the data directory. Point ``AGENTLEDGER_KAFKA_BOOTSTRAP`` and
``AGENTLEDGER_CLICKHOUSE_DSN`` at a real cluster for production.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Argument keys whose values never leave the agent (the SDK's Ledger and AGENTLEDGER_REDACT_KEYS).
# Compared after lowercasing and dropping '-', '_', '.' and spaces on both sides, so
# "api_key" also covers "X-Api-Key" and "apiKey"; a word of four letters or fewer ("pwd",
# "pass", "auth") must be a whole part of the name ("db_pass", not "passenger").
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "pass", "passphrase", "secret", "token", "api_key",
    "apikey", "authorization", "auth", "access_token", "refresh_token", "private_key",
    "client_secret", "cookie", "credential", "credentials", "session",
    "connection_string", "access_key",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTLEDGER_", frozen=True, extra="ignore")

    data_dir: Path = Field(
        default=Path(".agentledger"), description="where the embedded store and run files live"
    )
    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset = embedded Tansu broker"
    )
    kafka_security: dict[str, str] = Field(
        default_factory=dict,
        description="extra librdkafka settings (sasl.*, ssl.*) as JSON, for managed clusters",
    )
    kafka_session_timeout_ms: int = Field(
        default=6000, ge=1000, description="short by default: Tansu answers JoinGroup slowly"
    )
    broker_port: int = Field(default=0, ge=0, le=65535, description="embedded broker; 0 = free")
    events_partitions: int = Field(default=3, ge=1)

    clickhouse_dsn: SecretStr | None = Field(
        default=None, description="chdb:///dir or http(s)://user:pass@host:8123/db"
    )
    clickhouse_readonly_dsn: SecretStr | None = Field(
        default=None, description="server only: the read-only user POST /v1/sql runs as "
                                  "(deploy/clickhouse/users.d); unset, SQL uses the main DSN"
    )
    clickhouse_database: str = Field(default="agentledger", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    retention_days: int = Field(default=365, ge=1, description="TTL of events (days)")
    rejected_retention_days: int = Field(default=30, ge=1, description="TTL of rejected input")
    control_retention_days: int = Field(default=365, ge=1, description="TTL of control_signals")
    metrics_retention_days: int = Field(default=90, ge=1, description="TTL of metrics windows")
    health_retention_days: int = Field(default=90, ge=1, description="TTL of tool_health_minute")
    summaries_retention_days: int = Field(default=730, ge=1, description="TTL of run_summaries")
    economics_retention_days: int = Field(
        default=730, ge=1, description="TTL of daily_economics: finance keeps more than events")

    sink_group: str = "agentledger-sink"
    sink_batch_rows: int = Field(default=50_000, ge=1)
    sink_batch_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    sink_batch_seconds: float = Field(default=1.0, gt=0)
    max_event_bytes: int = Field(default=256 * 1024, ge=1024, description="larger → DLQ")
    dlq_max_payload_bytes: int = Field(
        default=512 * 1024, ge=1024,
        description="a rejected message larger than this goes to the DLQ truncated")
    sink_status_seconds: float = Field(
        default=5.0, gt=0, description="how often the sink lands a heartbeats row about itself")
    sink_stall_seconds: float = Field(
        default=30.0, gt=0, description="messages waiting and no commit this long = stalled")
    store_claim_seconds: float = Field(
        default=60.0, ge=0, description="how long a starting sink retries a busy store lock")
    checkpoints_enabled: bool = Field(
        default=True, description="the sink keeps a Merkle log per agent.events partition and "
        "signs its heads (docs/integrity.md); off only to measure its cost")
    checkpoint_interval_seconds: float = Field(
        default=2.0, gt=0, description="a signed head per log at most this long after a leaf "
        "landed (while the sink flushes: at least every sink_status_seconds)")
    checkpoint_interval_events: int = Field(
        default=100_000, ge=1, description="... or once this many leaves are uncovered, "
        "whichever comes first")
    checkpoint_recent_ids: int = Field(
        default=50_000, ge=1, description="newest leaf ids per log the sink holds to tell a "
        "redelivered event without asking the store (only older ids are looked up)")

    health_silent_seconds: float = Field(
        default=30.0, gt=0, description="a sink or stream worker not heard from this long "
        "is reported by health")
    health_streams_max_lag: int = Field(
        default=10_000, ge=0, description="stream worker lag (events) above which health "
        "is degraded")
    health_streams_max_lag_seconds: float = Field(
        default=30.0, ge=0, description="seconds a stream worker may run behind the newest "
        "event it has read before health is degraded")
    health_dlq_max_per_minute: float = Field(
        default=60.0, ge=0, description="rejected messages per minute (last 5 min) above "
        "which health is degraded")

    streams_group: str = Field(
        default="agentledger-streams", description="faust app id: consumer group and topic prefix"
    )
    policy_file: Path | None = Field(
        default=None, description="control policy YAML; unset = the packaged default policy"
    )
    streams_batch_max: int = Field(default=2000, ge=1, description="records per fetch the "
                                   "fold takes at most (faust broker_max_poll_records)")
    streams_heartbeat_seconds: float = Field(
        default=1.0, gt=0, description="how often a stream worker says it is alive"
    )
    streams_metrics_seconds: float = Field(
        default=1.0, gt=0, description="how often open unit-economics windows are published"
    )
    streams_idle_advance_seconds: float = Field(
        default=10.0, ge=0,
        description="push event time to (wall clock - this) when input is quiet; 0 = never",
    )

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=0, ge=0, le=65535, description="0 = a free port")
    api_url: str | None = Field(default=None, description="a running ledger API to query")
    api_key: SecretStr | None = Field(
        default=None, description="the key the CLI sends; unset = the local operator key")
    api_keys_file: Path | None = Field(
        default=None, description="accepted keys (hashed); unset = <data_dir>/api-keys.yaml")
    api_keys: list[dict[str, Any]] = Field(
        default_factory=list, description='more accepted keys, JSON: [{"name","sha256","tenants"}]')
    webhooks_file: Path | None = Field(
        default=None, description="outgoing webhooks (docs/notifications.md); unset = "
        "<data_dir>/webhooks.yaml")
    api_max_rows: int = Field(default=10_000, ge=1, description="row cap of one SQL answer")
    control_streams_per_key: int = Field(
        default=8, ge=1, description="open GET /v1/control/stream connections one API key may "
        "hold in one serving process; one more is refused with 429")
    control_stream_queue: int = Field(
        default=256, ge=1, description="signals waiting for one control-stream client; a "
        "client that falls this far behind is dropped with an 'event: close' naming why")
    gate_stale_after_s: float = Field(
        default=10.0, gt=0, description="POST /v1/gate/check refuses writes when the API "
        "has heard nothing on agent.control for this long (fail closed, as SafeModeGuard)")
    api_query_seconds: float = Field(default=30.0, gt=0, description="time cap of one query")
    otlp_http_host: str = Field(default="127.0.0.1",
                                description="where `agentledger intake` serves OTLP/HTTP")
    otlp_http_port: int = Field(
        default=4318, ge=0, le=65535,
        description="OTLP/HTTP port of `agentledger intake` (4318, the OTLP default; 0 = a "
                    "free port; if taken, a free one is used and published in the run dir)")

    otlp_grace_s: float = Field(
        default=2.0, gt=0, description="OTLP/HTTP: seconds after a trace's root span before "
                                       "its run is closed and published")

    ledger_key_dir: Path | None = Field(
        default=None, description="where the ledger's ed25519 signing key lives (0600); "
        "unset = <data_dir>/keys")
    ledger_public_key: str = Field(
        default="", description="trusted ledger public keys for followers: base64 keys or "
        ".pub file paths, comma-separated (several during a rotation); unset = the local "
        "stack's key if this is its broker, else messages are not verified")
    redact_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_REDACT_KEYS))
    log_level: str = "WARNING"
    debug: bool = Field(default=False, description="CLI errors show their traceback too")
    log_json: bool = True

    @field_validator("kafka_security", mode="before")
    @classmethod
    def _security_json(cls, value: Any) -> Any:
        """JSON text, as in the environment, also when passed directly (compose checks)."""
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("clickhouse_dsn", "clickhouse_readonly_dsn")
    @classmethod
    def _dsn_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in ("chdb", "http", "https", "clickhouse", "clickhouses"):
                raise ValueError(f"unsupported ClickHouse DSN scheme {scheme!r}")
        return value

    @cached_property
    def dsn(self) -> str:
        """The effective DSN: the configured one, or the embedded chdb store."""
        if self.clickhouse_dsn is not None:
            return self.clickhouse_dsn.get_secret_value()
        return f"chdb://{(self.data_dir / 'chdb').resolve()}"

    @property
    def embedded_store(self) -> bool:
        return self.dsn.startswith("chdb:")

    @property
    def chdb_path(self) -> Path | None:
        if not self.embedded_store:
            return None
        return Path(urlsplit(self.dsn).path)

    @property
    def dsn_for_display(self) -> str:
        """The DSN with any password masked, for logs and `up`'s banner."""
        parts = urlsplit(self.dsn)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.dsn

    def ttl_days(self) -> dict[str, int]:
        """Retention per TTL placeholder of the DDL (see ``schemas.ddl.RETENTION``)."""
        return {
            "events_ttl_days": self.retention_days,
            "rejected_ttl_days": self.rejected_retention_days,
            "control_ttl_days": self.control_retention_days,
            "metrics_ttl_days": self.metrics_retention_days,
            "health_ttl_days": self.health_retention_days,
            "summaries_ttl_days": self.summaries_retention_days,
            "economics_ttl_days": self.economics_retention_days,
        }

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
