"""Turn pydantic validation errors into :class:`ConfigError` messages naming file, key, problem."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from canary.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("targets", 0, "timeout_s")`` -> ``targets[0].timeout_s``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def first_error(path: Path | str, exc: ValidationError, prefix: str = "") -> ConfigError:
    """The first validation problem as a ConfigError (the one a user fixes first)."""
    err = exc.errors(include_url=False)[0]
    # Pydantic adds the validator kind to the location of tagged unions; it is not a key.
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = key_path(loc)
    if prefix:
        key = f"{prefix}.{key}" if key and not key.startswith("[") else f"{prefix}{key}"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key (check its spelling)"
    elif err["type"] == "missing":
        message = "required key is missing"
    return ConfigError(path, key, message)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, reporting syntax errors in the ConfigError style."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"invalid TOML: {exc}") from None


def validate(model: type[ModelT], data: Any, path: Path | str, prefix: str = "") -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise first_error(path, exc, prefix) from None
