"""``env:NAME`` secrets: resolved once at start-up into a :class:`Secret` that never prints its value.

A secret is written as ``env:NAME`` wherever a credential goes (a target's ``api_key`` and header
values, ``database.url``, ``service.api_token``, a receiver's ``url``, ``secret`` and
``routing_key``). :func:`resolve_secret` reads the variable when the configuration is loaded, so
an unset one is a configuration error naming the key and the variable, never a failure later.
A :class:`Secret`'s ``repr`` and ``str`` show only its source, so it cannot leak into logs,
error messages or the database; :func:`reveal` is the one way to the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from canary.errors import SecretError

ENV_PREFIX = "env:"


class Secret:
    """A credential resolved from the environment; prints as ``Secret(env:NAME)``."""

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
    """The value of a resolved secret (a plain string as is)."""
    return value.reveal() if isinstance(value, Secret) else value
