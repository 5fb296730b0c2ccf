"""Load and validate the whole of ``canary.toml`` into a typed :class:`Config`.

:func:`build_config` validates every section (:class:`ConfigFile`: ``[database]``, ``[defaults]``,
``[[targets]]`` here; ``[detection]``, ``[alerts]`` and ``[service]`` from
:mod:`canary.config.sections`; receivers from :mod:`canary.config.receivers`) and resolves every
``env:`` secret (:mod:`canary.config.secrets`) whenever a command loads the file, so any mistake
is one ``FILE: KEY.PATH: problem`` error at start-up. Nothing downstream re-validates a section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from canary.config.globs import Patterns, Selection
from canary.config.receivers import ResolvedReceiver, resolve_receivers
from canary.config.secrets import Secret, resolve_secret, reveal
from canary.config.sections import (
    AlertsSpec,
    DetectionSpec,
    ScheduleSpec,
    ServiceSpec,
    StorageSpec,
    VerdictPolicy,
)
from canary.config.validation import read_toml, validate
from canary.errors import ConfigError

ProviderKind = Literal["openai-chat", "openai-completions", "anthropic", "bedrock", "vertex"]
# The body shape a cloud platform target speaks; None picks one from model_id (resolved_api_format).
ApiFormat = Literal["anthropic", "converse", "gemini"]
EquivalenceTest = Literal["forced", "greedy", "sampled"]
PROMPT_LOGPROB_PROVIDERS = ("openai-completions",)
"""Providers whose servers return prompt log-probabilities (``echo`` + ``logprobs``), so ``forced`` works."""
API_FORMATS: dict[str, tuple[str, ...]] = {
    "bedrock": ("anthropic", "converse"),
    "vertex": ("anthropic", "gemini"),
}


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
    # Which equivalence tests the cell supports (`canary compare`); default: by provider.
    equivalence: tuple[EquivalenceTest, ...] | None = None

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

    @model_validator(mode="after")
    def _equivalence_supported(self) -> TargetSpec:
        if self.equivalence is not None and "forced" in self.equivalence:
            if self.provider not in PROMPT_LOGPROB_PROVIDERS:
                raise ValueError(
                    f"equivalence test 'forced' needs prompt log-probabilities, which provider "
                    f"'{self.provider}' does not return (use {', '.join(PROMPT_LOGPROB_PROVIDERS)})"
                )
        return self

    def equivalence_tests(self) -> tuple[EquivalenceTest, ...]:
        """The configured ``equivalence`` tests, else every test the provider supports."""
        if self.equivalence is not None:
            return self.equivalence
        if self.provider in PROMPT_LOGPROB_PROVIDERS:
            return ("forced", "greedy", "sampled")
        return ("greedy", "sampled")

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
    """``[defaults]``: what a ``[[targets]]`` table leaves out."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=4, ge=1, le=1024)
    requests_per_minute: float | None = Field(default=None, gt=0)
    interval_s: float = Field(default=300.0, gt=0)
    jitter_s: float = Field(default=15.0, ge=0)


class DatabaseSpec(BaseModel):
    """``[database]``: an external PostgreSQL, or where the embedded one keeps its data."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    data_dir: str | None = None


class ConfigFile(BaseModel):
    """The whole file: every section, each with unknown keys forbidden."""

    model_config = ConfigDict(extra="forbid")

    database: DatabaseSpec = DatabaseSpec()
    defaults: Defaults = Defaults()
    probes_dir: str | None = None
    targets: list[TargetSpec] = Field(default_factory=list)
    detection: DetectionSpec = DetectionSpec()
    alerts: AlertsSpec = AlertsSpec()
    storage: StorageSpec = StorageSpec()
    service: ServiceSpec = ServiceSpec()


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
    """A validated canary.toml: its cells, database, and every subsystem's section, secrets resolved."""

    path: str
    targets: tuple[Target, ...]
    defaults: Defaults
    database_url: Secret | str | None
    data_dir: Path | None
    probes_dir: Path | None
    detection: DetectionSpec = field(default_factory=DetectionSpec)
    # Left out of repr: a receiver URL or API token written without env: is a credential itself.
    alerts: AlertsSpec = field(default_factory=AlertsSpec, repr=False)
    receivers: tuple[ResolvedReceiver, ...] = field(default=(), repr=False)  # secrets resolved
    service: ServiceSpec = field(default_factory=ServiceSpec, repr=False)
    storage: StorageSpec = field(default_factory=StorageSpec)
    api_token: Secret | str | None = field(default=None, repr=False)  # ``service.api_token`` resolved

    @property
    def schedule(self) -> ScheduleSpec:
        """``[service.schedule]``."""
        return self.service.schedule

    @property
    def verdicts(self) -> VerdictPolicy:
        """``[service.verdict]``: how deploys are judged."""
        return self.service.verdict

    @property
    def intervals(self) -> dict[str, float]:
        """Every configured cell's probe interval: what detection expects to hear from."""
        return {t.cell: t.interval_s for t in self.targets}

    def select(self, patterns: Patterns) -> list[Target]:
        """Cells whose name the globs select (:mod:`canary.config.globs`; all when None)."""
        selection = Selection.parse(patterns)
        return [t for t in self.targets if selection.matches(t.cell)]


def build_config(data: dict[str, Any], path: Path | str) -> Config:
    """Validate every section and resolve every secret; errors name ``path``, the key and the problem.

    1. Validate the whole file against :class:`ConfigFile` (the first problem is reported).
    2. Apply ``[defaults]`` to each target, resolve its secrets, reject duplicate cells.
    3. Resolve ``database.url``, ``service.api_token`` and the receivers' secrets.
    """
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
    for i, r in enumerate(parsed.alerts.receivers):
        if r.kind == "alertmanager" and r.resend_s < parsed.detection.interval_s:
            # Repeats go out at detection rounds; a shorter period would let alerts lapse between them.
            raise ConfigError(
                path,
                f"alerts.receivers[{i}].resend_s",
                f"{r.resend_s:g} is shorter than detection.interval_s ({parsed.detection.interval_s:g}):"
                " firing alerts are pushed again only at detection rounds",
            )
    db_url = resolve_secret(parsed.database.url, path, "database.url") if parsed.database.url else None
    token = parsed.service.api_token
    return Config(
        path=str(path),
        targets=tuple(targets),
        defaults=parsed.defaults,
        database_url=db_url,
        data_dir=Path(parsed.database.data_dir).expanduser() if parsed.database.data_dir else None,
        probes_dir=(base / parsed.probes_dir) if parsed.probes_dir else None,
        detection=parsed.detection,
        alerts=parsed.alerts,
        receivers=resolve_receivers(parsed.alerts.receivers, path),
        service=parsed.service,
        storage=parsed.storage,
        api_token=resolve_secret(token, path, "service.api_token") if token else None,
    )


def load_config(path: Path | str) -> Config:
    """Read and build ``path``; TOML syntax errors name the file, line and column."""
    path = Path(path)
    return build_config(read_toml(path), path)
