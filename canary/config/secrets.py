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
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

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
    """``env:NAME`` -> Secret from the environment; any other string is returned as is.

    Either way a credential is registered for redaction (:func:`redact_configured`): every
    ``env:`` value, and a plain value under a credential key (``api_key``, ``url``, ...) or a
    credential header (``authorization``, ...).
    """
    if not value.startswith(ENV_PREFIX):
        last = key.rsplit(".", 1)[-1].split("[", 1)[0]  # ``urls[1]`` is a ``urls`` entry
        if last in CREDENTIAL_KEYS or last.lower() in SENSITIVE_HEADERS:
            register_secret(value)
        return value
    name = value[len(ENV_PREFIX) :]
    if not name:
        raise SecretError(path, key, "'env:' must be followed by a variable name")
    resolved = os.environ.get(name)
    if resolved is None:
        raise SecretError(path, key, f"environment variable {name} is not set")
    register_secret(resolved)
    return Secret(resolved, value)


def reveal(value: Secret | str | None) -> str | None:
    """The value of a resolved secret (a plain string as is)."""
    return value.reveal() if isinstance(value, Secret) else value


# --- Redaction -------------------------------------------------------------------------------

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 4  # shorter values would redact ordinary words; no real credential is this short
# Header names whose value is a credential wherever it appears (an upstream echoing our request).
SENSITIVE_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-security-token",
    "cookie",
    "set-cookie",
)
# Config keys (last path segment) whose plain, non-``env:`` value is a credential all the same.
CREDENTIAL_KEYS = frozenset({"api_key", "url", "urls", "secret", "routing_key", "api_token"})

_names = "|".join(re.escape(h) for h in SENSITIVE_HEADERS)
# ``Authorization: Bearer x``, ``"x-api-key": "x"``, ``'api-key'='x'``, as JSON, a dict repr or a header
# dump: the name, an optional closing quote, ``:`` or ``=``, then the value up to its end.
_HEADER_VALUE = re.compile(
    rf"""(?P<name>\b(?:{_names})\b["']?\s*[:=]\s*)(?:(?P<quote>["'])(?:(?!(?P=quote)).)*|[^\r\n,;}}"']+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE)

_registered: set[str] = set()


def secret_values(value: str) -> set[str]:
    """The strings to redact for one credential: itself and, for a URL, its password."""
    values = {value}
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            values.update({password, unquote(password)})
    return {v for v in values if len(v) >= MIN_SECRET_CHARS}


def register_secret(value: str) -> None:
    """Remember a configured credential so :func:`redact_configured` removes it everywhere."""
    _registered.update(secret_values(value))


def configured_secrets() -> frozenset[str]:
    """Every credential value the loaded configuration holds (filled by :func:`resolve_secret`)."""
    return frozenset(_registered)


def redact(text: str, secrets: Iterable[str] = (), *, headers: bool = True) -> str:
    """``text`` with every value in ``secrets`` and (``headers``) every credential header value
    replaced by :data:`REDACTED`. Pure: the caller passes the secrets.

    Longer secrets go first, so a key that contains another is removed whole. Header values are
    found by name (``authorization: …``, ``"x-api-key": "…"``, ``Bearer …``), which catches an
    upstream echoing the request even when the key was never configured here.
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    if not headers:
        return text
    text = _HEADER_VALUE.sub(lambda m: f"{m['name']}{m['quote'] or ''}{REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m[1]} {REDACTED}", text)


def redact_configured(text: str, extra: Iterable[str] = (), *, headers: bool = True) -> str:
    """:func:`redact` with the configured secrets (and ``extra`` values, e.g. a plain key)."""
    return redact(text, [*configured_secrets(), *extra], headers=headers)
