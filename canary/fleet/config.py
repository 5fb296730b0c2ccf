"""Fleet configuration: models, platforms and their pools, and faults (``fleet.toml``).

This module imports no JAX, so the CLI and the canary's own config code can use it cheaply.

A fleet file looks like::

    [[models]]
    name = "canary-small"

    [[platforms]]
    name = "first-party"
    [[platforms.pools]]
    name = "short-context"
    [[platforms.pools]]
    name = "long-context"
    context_window = 1_000_000

    [[faults]]
    fault = "misroute"
    platform = "first-party"
    fraction = 0.008

:func:`default_fleet_config` is the embedded default: 3 platforms x 2 pools x 2 models = 12
cells, two replicas per pool. :func:`fleet_targets` turns a config into ``[[targets]]`` tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from canary.config.validation import read_toml, validate
from canary.errors import ConfigError

FaultKind = Literal["misroute", "corrupt", "topk_drop", "quantize", "kv_quant", "context_config"]
POOL_FAULTS = ("corrupt", "topk_drop", "quantize", "kv_quant", "context_config")
SERVED_BY_HEADERS = ("x-served-pool", "x-served-replica")
FRONT_DOOR = "front-door"
_NAME = r"^[a-z0-9][a-z0-9_-]*$"


class ModelSpec(BaseModel):
    """A synthetic model. ``entropy`` > 1 makes it less sure of its reference tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    entropy: float = Field(default=1.0, gt=0.2, le=3.0)
    seed: int = Field(default=0, ge=0)


class PoolSpec(BaseModel):
    """A server pool: replicas that share one configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    replicas: int = Field(default=2, ge=1, le=16)
    dtype: Literal["bf16", "fp32"] = "bf16"
    top_k: int = Field(default=0, ge=0, le=1024)  # the server's own top-k cap (0 = none)
    context_window: int = Field(default=200_000, ge=1024)


class PlatformSpec(BaseModel):
    """A platform: pools behind one front door that routes by prompt length (and faults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    pools: tuple[PoolSpec, ...] = Field(min_length=1)
    default_pool: str | None = None

    @model_validator(mode="after")
    def _pools_consistent(self) -> PlatformSpec:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError("pool names must be unique within a platform")
        if FRONT_DOOR in names:
            raise ValueError(f"'{FRONT_DOOR}' is reserved for the platform's router")
        if self.default_pool is not None and self.default_pool not in names:
            raise ValueError(f"default_pool '{self.default_pool}' is not one of its pools")
        return self

    def pool(self, name: str) -> PoolSpec | None:
        return next((p for p in self.pools if p.name == name), None)

    @property
    def short_pool(self) -> PoolSpec:
        """Where the front door sends requests that fit (the default pool, else the first)."""
        return self.pool(self.default_pool or "") or min(self.pools, key=lambda p: p.context_window)

    @property
    def long_pool(self) -> PoolSpec:
        return max(self.pools, key=lambda p: p.context_window)


class FaultSpec(BaseModel):
    """One fault setting, from ``[[faults]]``, a scenario event or ``POST /admin/faults``.

    - ``misroute`` (per platform): ``fraction`` of the front door's short requests go to
      ``pool`` (default: the longest-context pool), sticky by session key; ``intensity`` is how
      badly that pool's configuration degrades them.
    - ``corrupt`` (per pool): ``intensity`` is the fraction of requests whose output gets
      rare-script tokens (prose) or code-breaking tokens (code).
    - ``topk_drop`` (per pool): at the ``batch_sizes`` listed (all when empty), ``intensity`` is
      the per-step chance that approximate top-k drops the argmax token.
    - ``quantize``, ``kv_quant``, ``context_config`` (per pool): the subtle faults, which answer
      fluently but not quite like the model (see :mod:`canary.fleet.perturb`); ``intensity``
      scales the logit perturbation (1.0 is the size 4-bit weights cause, 0.25 about 8-bit).

    ``models`` restricts a fault to some models (all when empty).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fault: FaultKind
    platform: str
    pool: str | None = None
    enabled: bool = True
    intensity: float = Field(default=0.5, ge=0.0, le=1.0)
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    models: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _pool_where_needed(self) -> FaultSpec:
        if self.fault in POOL_FAULTS and self.pool is None:
            raise ValueError(f"fault '{self.fault}' needs 'pool'")
        return self

    @property
    def key(self) -> tuple[str, str, str]:
        """One setting per (fault, platform, pool); a platform has one misroute, whatever its pool."""
        return (self.fault, self.platform, "" if self.fault == "misroute" else self.pool or "")

    def applies_to(self, model: str) -> bool:
        return self.enabled and (not self.models or model in self.models)


class FleetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[ModelSpec, ...] = Field(min_length=1)
    platforms: tuple[PlatformSpec, ...] = Field(min_length=1)
    faults: tuple[FaultSpec, ...] = ()
    probes_dir: str | None = None
    max_batch: int = Field(default=64, ge=1, le=256)

    @model_validator(mode="after")
    def _references_exist(self) -> FleetConfig:
        if len({m.name for m in self.models}) != len(self.models):
            raise ValueError("model names must be unique")
        if len({p.name for p in self.platforms}) != len(self.platforms):
            raise ValueError("platform names must be unique")
        return self

    def platform(self, name: str) -> PlatformSpec | None:
        return next((p for p in self.platforms if p.name == name), None)

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]


def check_fault(config: FleetConfig, fault: FaultSpec) -> None:
    """Raise ValueError when a fault names a platform, pool or model the fleet lacks."""
    platform = config.platform(fault.platform)
    if platform is None:
        raise ValueError(f"fault names unknown platform '{fault.platform}'")
    if fault.pool is not None and platform.pool(fault.pool) is None:
        raise ValueError(f"fault names unknown pool '{fault.pool}' on platform '{fault.platform}'")
    unknown = set(fault.models) - set(config.model_names)
    if unknown:
        raise ValueError(f"fault names unknown model(s) {sorted(unknown)}")


def default_fleet_config() -> FleetConfig:
    """3 platforms x 2 pools x 2 models (12 cells), two replicas per pool, no faults."""
    platforms = []
    dtypes: tuple[tuple[str, Literal["bf16", "fp32"]], ...] = (
        ("first-party", "bf16"),
        ("cloud-a", "bf16"),
        ("cloud-b", "fp32"),
    )
    for name, dtype in dtypes:
        pools = (
            PoolSpec(name="short-context", dtype=dtype, context_window=200_000),
            PoolSpec(name="long-context", dtype=dtype, context_window=1_000_000),
        )
        platforms.append(PlatformSpec(name=name, pools=pools, default_pool="short-context"))
    models = (ModelSpec(name="canary-small", entropy=1.2, seed=1), ModelSpec(name="canary-large", seed=2))
    return FleetConfig(models=models, platforms=tuple(platforms))


def load_fleet_config(path: Path | str) -> FleetConfig:
    """Load and validate a fleet TOML file; problems raise ConfigError naming file and key."""
    path = Path(path)
    return build_fleet_config(read_toml(path), path)


def build_fleet_config(data: dict[str, Any], path: Path | str = "<fleet>") -> FleetConfig:
    if not data.get("models") and not data.get("platforms"):
        defaults = default_fleet_config()
        data = {**data, "models": [m.model_dump() for m in defaults.models]}
        data["platforms"] = [p.model_dump() for p in defaults.platforms]
    config = validate(FleetConfig, data, path)
    for index, fault in enumerate(config.faults):
        try:
            check_fault(config, fault)
        except ValueError as exc:
            raise ConfigError(path, f"faults[{index}]", str(exc)) from None
    return config


def fleet_targets(
    config: FleetConfig,
    base_url: str,
    *,
    provider: str = "openai-chat",
    front_doors: bool = True,
) -> list[dict[str, Any]]:
    """``[[targets]]`` tables for canary.toml: every pool directly, and each platform's front door.

    OpenAI providers get a base URL ending in ``/v1``; the Anthropic provider gets the base
    without it. A front-door cell's ``pool`` is ``front-door`` and its ``expected_pool`` is the
    pool that should serve it, so served-by headers reveal a misroute.
    """
    base_url = base_url.rstrip("/")
    suffix = "" if provider == "anthropic" else "/v1"
    targets: list[dict[str, Any]] = []
    for model in config.models:
        for platform in config.platforms:
            entries = [(pool.name, f"{platform.name}/{pool.name}", pool.name) for pool in platform.pools]
            if front_doors:
                entries.append((FRONT_DOOR, platform.name, platform.short_pool.name))
            for pool_name, path, expected in entries:
                targets.append(
                    {
                        "model": model.name,
                        "platform": platform.name,
                        "pool": pool_name,
                        "provider": provider,
                        "base_url": f"{base_url}/{path}{suffix}",
                        "model_id": model.name,
                        "served_by_headers": list(SERVED_BY_HEADERS),
                        "expected_pool": expected,
                    }
                )
    return targets
