"""Which webhooks exist: ``webhooks.yaml`` (``AGENTLEDGER_WEBHOOKS_FILE``, default
``<data_dir>/webhooks.yaml``), per tenant and queue, with their signing secrets.

The file is operator-owned like the keys file (keep it mode 0600): it holds the secrets.
The worker reads it again when it changes; the API shows the hooks without their secrets
and without their URLs' paths (a Slack incoming-webhook URL *is* a credential).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from agentledger.core.settings import Settings

APPROVAL_REQUESTED: Final = "approval.requested"
SLA_WARNING: Final = "approval.sla_warning"
SLA_BREACHED: Final = "approval.sla_breached"
BREAKER_OPENED: Final = "breaker.opened"
SAFE_MODE_ENTERED: Final = "safe_mode.entered"
KINDS: Final = (APPROVAL_REQUESTED, SLA_WARNING, SLA_BREACHED, BREAKER_OPENED,
                SAFE_MODE_ENTERED)
Kind = Literal["approval.requested", "approval.sla_warning", "approval.sla_breached",
               "breaker.opened", "safe_mode.entered"]


class ConfigError(ValueError):
    """The webhooks file cannot be used; the message says where."""


class Webhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
    url: str = Field(min_length=8, max_length=2048)
    format: Literal["generic", "slack"] = "generic"
    tenants: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                               description='tenants whose notices it gets; "*" = every one')
    queues: list[str] = Field(default_factory=list, description="approval notices only for "
                              "these queues (approver roles); empty = every queue")
    events: list[Kind] = Field(default_factory=lambda: list(KINDS))  # type: ignore[arg-type]
    secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 signing secret")
    secret_env: str | None = Field(default=None, description="or: the variable holding it")
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _checked(self) -> Webhook:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"url must be http(s), got {scheme or 'none'!r}")
        if self.secret is None and not self.secret_env:
            raise ValueError("a signing secret is required: secret or secret_env")
        return self

    def signing_secret(self) -> bytes:
        if self.secret is not None:
            return self.secret.get_secret_value().encode()
        value = os.environ.get(self.secret_env or "", "")
        if not value:
            raise ConfigError(f"webhook {self.name}: ${self.secret_env} is not set")
        return value.encode()

    def wants(self, kind: str, tenant: str, queue: str) -> bool:
        if kind not in self.events:
            return False
        if "*" not in self.tenants and tenant not in self.tenants:
            return False
        return not (queue and self.queues and queue not in self.queues)

    def public(self) -> dict[str, Any]:
        """What a reader may see: never the secret, nor the URL's path or query."""
        parts = urlsplit(self.url)
        return {"name": self.name, "format": self.format, "tenants": self.tenants,
                "queues": self.queues, "events": list(self.events),
                "target": f"{parts.scheme}://{parts.hostname}"
                          f"{f':{parts.port}' if parts.port else ''}/…"}


class WebhooksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhooks: list[Webhook] = Field(default_factory=list)
    max_attempts: int = Field(default=6, ge=1, le=20)
    backoff_s: float = Field(default=1.0, gt=0, le=300,
                             description="first retry after this; doubles per attempt")
    max_backoff_s: float = Field(default=300.0, gt=0)
    sla_warning_fraction: float = Field(default=0.8, gt=0, lt=1, description="an SLA "
                                        "warning when this share of sla_s has passed")

    @model_validator(mode="after")
    def _unique(self) -> WebhooksConfig:
        names = [w.name for w in self.webhooks]
        if len(names) != len(set(names)):
            raise ValueError("webhook names must be unique")
        return self


def webhooks_file(settings: Settings) -> Path:
    return settings.webhooks_file or settings.data_dir / "webhooks.yaml"


def load(path: Path) -> WebhooksConfig:
    """The file's webhooks; none if it does not exist. Raises :class:`ConfigError`."""
    if not path.exists():
        return WebhooksConfig()
    try:
        document = yaml.safe_load(path.read_text()) or {}
        return WebhooksConfig.model_validate(document)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
