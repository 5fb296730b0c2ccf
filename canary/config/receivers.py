"""``[[alerts.receivers]]``: the schema of one receiver, and its ``env:`` secrets resolved at load.

:class:`ReceiverSpec` is the table as written; :func:`resolve_receivers` checks that names are
unique and resolves every ``env:NAME`` URL and key into a :class:`ResolvedReceiver`, so an unset
variable is a configuration error when canary starts, not a failed delivery at 3 a.m. The
receiver classes themselves (:mod:`canary.alerting.receivers`) are built from resolved receivers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from canary.config.secrets import Secret, resolve_secret
from canary.errors import ConfigError

ReceiverKind = Literal["webhook", "slack", "pagerduty", "alertmanager"]


class ReceiverSpec(BaseModel):
    """One ``[[alerts.receivers]]`` table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: ReceiverKind
    url: str | None = None  # webhook and Slack (usually ``env:NAME``); PagerDuty's Events API by default
    urls: list[str] = []  # alertmanager: each instance's base URL (an HA pair gets every alert)
    secret: str | None = None  # webhook: HMAC-SHA256 key for ``X-Canary-Signature``
    routing_key: str | None = None  # PagerDuty integration key
    severity: Literal["critical", "error", "warning", "info"] = "critical"
    send_resolved: bool = True
    timeout_s: float = Field(default=10.0, gt=0)
    # alertmanager: re-push a firing alert this often; it ends by itself 4 x resend_s after the last push
    resend_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _kind_needs(self) -> ReceiverSpec:
        if self.kind == "alertmanager" and not (self.url or self.urls):
            raise ValueError("receiver kind 'alertmanager' needs 'urls' (or 'url')")
        if self.kind != "alertmanager" and self.urls:
            raise ValueError("'urls' applies only to kind 'alertmanager'")
        for u in self.urls:
            if not u.startswith(("http://", "https://", "env:")):
                raise ValueError(f"'urls' entries are http(s) URLs or env:NAME, not '{u[:40]}'")
        if self.kind in ("webhook", "slack") and not self.url:
            raise ValueError(f"receiver kind '{self.kind}' needs 'url'")
        if self.kind == "pagerduty" and not self.routing_key:
            raise ValueError("receiver kind 'pagerduty' needs 'routing_key'")
        if self.secret and self.kind != "webhook":
            raise ValueError("'secret' (HMAC signing) applies only to kind 'webhook'")
        return self


@dataclass(frozen=True)
class ResolvedReceiver:
    """A receiver's spec with its secrets resolved; ``url`` None means the kind's default endpoint."""

    spec: ReceiverSpec
    url: Secret | str | None
    secret: Secret | str | None  # the webhook's HMAC key or PagerDuty's routing key
    urls: tuple[Secret | str, ...] = ()  # alertmanager: ``url`` and every ``urls`` entry

    @property
    def name(self) -> str:
        return self.spec.name


def resolve_receivers(
    specs: Sequence[ReceiverSpec], path: Path | str, prefix: str = "alerts.receivers"
) -> tuple[ResolvedReceiver, ...]:
    """Every receiver with its ``env:NAME`` values resolved; duplicate names and unset variables
    are configuration errors naming ``<prefix>[i].<key>``."""
    out: list[ResolvedReceiver] = []
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        key = f"{prefix}[{i}]"
        if spec.name in seen:
            raise ConfigError(path, f"{key}.name", f"duplicate receiver name '{spec.name}'")
        seen.add(spec.name)
        url = resolve_secret(spec.url, path, f"{key}.url") if spec.url else None
        secret: Secret | str | None
        if spec.kind == "pagerduty":
            secret = resolve_secret(spec.routing_key or "", path, f"{key}.routing_key")
        else:
            secret = resolve_secret(spec.secret, path, f"{key}.secret") if spec.secret else None
        urls = tuple(resolve_secret(u, path, f"{key}.urls[{j}]") for j, u in enumerate(spec.urls))
        out.append(ResolvedReceiver(spec, url, secret, (url, *urls) if url is not None else urls))
    return tuple(out)
