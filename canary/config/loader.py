"""Load and validate ``canary.toml``: targets (cells), database, defaults; resolve ``env:`` secrets.

A secret is written as ``env:NAME`` wherever a credential goes (``api_key``, header values,
``database.url``). It is resolved once at start-up into a :class:`Secret`, whose ``repr`` and
``str`` never show the value, so it cannot leak into logs, error messages or the database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from canary.config.globs import Patterns, Selection
from canary.config.validation import read_toml, validate
from canary.errors import ConfigError, SecretError

ProviderKind = Literal["openai-chat", "openai-completions", "anthropic", "bedrock", "vertex"]
# The body shape a cloud platform target speaks; None picks one from model_id (resolved_api_format).
ApiFormat = Literal["anthropic", "converse", "gemini"]
API_FORMATS: dict[str, tuple[str, ...]] = {
    "bedrock": ("anthropic", "converse"),
    "vertex": ("anthropic", "gemini"),
}
ENV_PREFIX = "env:"


class Secret:
    """A credential resolved from the environment; prints as ``***``."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__


def resolve_secret(value: str, path: Path | str, key: str) -> Secret | str:
    """``env:NAME`` -> Secret from the environment; any other string is returned as is."""
    if not value.startswith(ENV_PREFIX):
        return value
    name = value[len(ENV_PREFIX) :]
    if not name:
        raise SecretError(path, key, "'env:' must be followed by a variable name")
    resolved = os.environ.get(name)
    if resolved is None:
        raise SecretError(path, key, f"environment variable {name} is not set")
    return Secret(resolved, value)


def reveal(value: Secret | str | None) -> str | None:
    return value.reveal() if isinstance(value, Secret) else value


class TargetSpec(BaseModel):
    """One ``[[targets]]`` table: a (model, platform, pool) cell and how to reach it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    platform: str = Field(min_length=1)
    pool: str = Field(min_length=1)
    provider: ProviderKind
    base_url: str = ""
    model_id: str = Field(min_length=1)
    api_key: str | None = None
    headers: dict[str, str] = {}
    served_by_headers: tuple[str, ...] = ()
    expected_pool: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1, le=1024)
    requests_per_minute: float | None = Field(default=None, gt=0)
    interval_s: float | None = Field(default=None, gt=0)
    jitter_s: float | None = Field(default=None, ge=0)
    probes: str | list[str] | None = None  # globs over probe ids and sets run on this cell
    region: str | None = None
    project: str | None = None
    sessions: int = Field(default=0, ge=0, le=1024)
    api_format: ApiFormat | None = None

    @field_validator("base_url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _needs_url(self) -> TargetSpec:
        if self.provider in ("openai-chat", "openai-completions", "anthropic") and not self.base_url:
            raise ValueError(f"provider '{self.provider}' needs 'base_url'")
        return self

    @model_validator(mode="after")
    def _cloud_platform(self) -> TargetSpec:
        # Bedrock signs for a region and Vertex routes by one, so neither can guess it.
        if self.provider in API_FORMATS and not self.region:
            raise ValueError(f"provider '{self.provider}' needs 'region'")
        if self.api_format is not None:
            allowed = API_FORMATS.get(self.provider)
            if allowed is None:
                raise ValueError("'api_format' applies only to providers 'bedrock' and 'vertex'")
            if self.api_format not in allowed:
                choices = " or ".join(repr(a) for a in allowed)
                raise ValueError(f"'api_format' for provider '{self.provider}' must be {choices}")
        return self

    def resolved_api_format(self) -> ApiFormat:
        """The configured ``api_format``, else one chosen from ``model_id``.

        Anthropic models (``anthropic.…``, ``…claude…``) use the Messages body on both platforms;
        Gemini models use generateContent; anything else on Bedrock uses the Converse API.
        """
        if self.api_format is not None:
            return self.api_format
        model_id = self.model_id.lower()
        if "anthropic." in model_id or "claude" in model_id:
            return "anthropic"
        if self.provider == "vertex":
            return "gemini"
        return "converse"


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=4, ge=1, le=1024)
    requests_per_minute: float | None = Field(default=None, gt=0)
    interval_s: float = Field(default=300.0, gt=0)
    jitter_s: float = Field(default=15.0, ge=0)


class DatabaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    data_dir: str | None = None


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: DatabaseSpec = DatabaseSpec()
    defaults: Defaults = Defaults()
    probes_dir: str | None = None
    targets: list[TargetSpec] = Field(default_factory=list)
    # Sections owned by later subsystems are validated by their own models on use.
    alerts: dict[str, Any] = {}
    detection: dict[str, Any] = {}
    service: dict[str, Any] = {}


@dataclass(frozen=True)
class Target:
    """A resolved cell: its spec with defaults applied and secrets resolved."""

    spec: TargetSpec
    timeout_s: float
    concurrency: int
    interval_s: float
    jitter_s: float
    requests_per_minute: float | None
    api_key: Secret | str | None
    headers: dict[str, Secret | str]

    @property
    def cell(self) -> str:
        """The cell's name: ``model/platform/pool``."""
        return f"{self.spec.model}/{self.spec.platform}/{self.spec.pool}"

    def session_key(self, index: int) -> str | None:
        """A stable session key for the index-th probe, when the cell probes in sessions.

        Keys are the same every pass, so a router that is sticky by session sends each session
        to the same pool again and again, as it does for users; failures that cluster in
        sessions are the signature of sticky misrouting.
        """
        if not self.spec.sessions:
            return None
        return f"canary:{self.cell}:{index % self.spec.sessions}"

    @property
    def conversations(self) -> int:
        """How many conversations each session probe set runs per pass: ``sessions``, at least one."""
        return max(1, self.spec.sessions)

    def conversation_key(self, probe_set: str, index: int) -> str:
        """The session key of a session probe set's index-th conversation, the same every pass."""
        return f"canary:{self.cell}:{probe_set}:{index}"

    def resolved_headers(self) -> dict[str, str]:
        return {k: reveal(v) or "" for k, v in self.headers.items()}


@dataclass(frozen=True)
class Config:
    path: str
    targets: tuple[Target, ...]
    defaults: Defaults
    database_url: Secret | str | None
    data_dir: Path | None
    probes_dir: Path | None
    raw: ConfigFile = field(repr=False)

    def select(self, patterns: Patterns) -> list[Target]:
        """Cells whose name the globs select (:mod:`canary.config.globs`; all when None)."""
        selection = Selection.parse(patterns)
        return [t for t in self.targets if selection.matches(t.cell)]


def build_config(data: dict[str, Any], path: Path | str) -> Config:
    parsed = validate(ConfigFile, data, path)
    base = Path(path).parent if str(path) else Path.cwd()
    targets: list[Target] = []
    seen: set[str] = set()
    for i, spec in enumerate(parsed.targets):
        d = parsed.defaults
        target = Target(
            spec=spec,
            timeout_s=spec.timeout_s or d.timeout_s,
            concurrency=spec.concurrency or d.concurrency,
            interval_s=spec.interval_s or d.interval_s,
            jitter_s=spec.jitter_s if spec.jitter_s is not None else d.jitter_s,
            requests_per_minute=spec.requests_per_minute or d.requests_per_minute,
            api_key=resolve_secret(spec.api_key, path, f"targets[{i}].api_key") if spec.api_key else None,
            headers={
                k: resolve_secret(v, path, f"targets[{i}].headers.{k}") for k, v in spec.headers.items()
            },
        )
        if target.cell in seen:
            raise ConfigError(path, f"targets[{i}]", f"duplicate cell {target.cell}")
        seen.add(target.cell)
        targets.append(target)
    db_url = resolve_secret(parsed.database.url, path, "database.url") if parsed.database.url else None
    return Config(
        path=str(path),
        targets=tuple(targets),
        defaults=parsed.defaults,
        database_url=db_url,
        data_dir=Path(parsed.database.data_dir).expanduser() if parsed.database.data_dir else None,
        probes_dir=(base / parsed.probes_dir) if parsed.probes_dir else None,
        raw=parsed,
    )


def load_config(path: Path | str) -> Config:
    path = Path(path)
    return build_config(read_toml(path), path)
