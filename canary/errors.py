"""Every error canary raises or records, in one place.

    CanaryError
    ├── ConfigError            bad canary.toml, probe file or fleet file: names file, key path, problem
    ├── SecretError            an ``env:NAME`` reference whose variable is unset
    ├── DeliveryError          a webhook receiver refused or failed (``permanent`` stops retries)
    └── LeadershipLost         a singleton duty tried to commit without the leader lease (fenced)

Provider failures are *not* exceptions that escape a pass: every provider turns a timeout,
429, 5xx, connection error or malformed body into a failed ``Completion`` whose ``reason``
is one of :class:`FailureReason`, which is what the ``runs.reason`` column stores. The one
reason an ``ok`` run may carry is ``scoring_error``: the answer arrived, a scorer failed on it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path


class CanaryError(Exception):
    """Base class of canary's own errors."""


class ConfigError(CanaryError):
    """A configuration or catalog file is invalid.

    The message always names the file, the key path inside it and the problem, so that a user
    can fix it without reading code.
    """

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}" if key else self.path
        super().__init__(f"{where}: {problem}")


class SecretError(ConfigError):
    """An ``env:NAME`` secret reference names an unset variable (the value is never shown)."""


class DeliveryError(CanaryError):
    """A receiver could not take an alert.

    ``permanent`` is true when retrying cannot help (401, 404, a malformed URL), so the
    dispatcher stops instead of retrying until the give-up age.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class LeadershipLost(CanaryError):
    """This replica no longer holds the leader lease; the write it was about to commit is refused."""


class FailureReason(StrEnum):
    """Why a run failed; stored in ``runs.reason``. Quality failures are scores, not reasons."""

    TIMEOUT = "timeout"
    CONNECTION = "connection_error"
    RATE_LIMITED = "rate_limited"  # 429 or a platform's throttling / quota error
    SERVER_ERROR = "server_error"  # 5xx
    CLIENT_ERROR = "client_error"  # other 4xx: bad request, auth, not found
    BAD_JSON = "bad_json"  # body is not JSON
    BAD_SCHEMA = "bad_schema"  # JSON, but not the documented response shape
    CANCELLED = "cancelled"  # shutdown while the request was in flight
    INTERNAL = "internal_error"  # a bug in canary itself; recorded, never crashes the pass
    # A scorer raised on an answer the server did give: the run stays ``status = 'ok'`` (the
    # cell answered, so availability must not count it) with this reason and the scorer named in
    # ``error``; the other scorers' scores stand. Counted in ``canary_scoring_errors``.
    SCORING_ERROR = "scoring_error"
