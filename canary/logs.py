"""Structured logging: JSON lines when stderr is not a terminal, readable key=value when it is.

Standard-library loggers (ours, uvicorn's, APScheduler's) go through the same structlog
renderer, so every line carries a timestamp, level and logger name. uvicorn installs plain-text
handlers of its own unless given a ``log_config``: every server we start passes
:data:`UVICORN_LOG_CONFIG`, which leaves its loggers handler-less and propagating to ours, and
an access line carries its client, method, path and status as fields. Nothing logs credentials:
request headers are never logged, and every line passes :func:`redact_event` before it is
rendered, which removes the configured secret values and credential header values (an
exception message quoting an upstream's echo of our request included).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from canary.config.secrets import redact_configured


def redact_event(
    logger: object, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A structlog processor: every string value of the event with credentials redacted."""
    for key, value in event_dict.items():
        if isinstance(value, str) and not key.startswith("_"):
            event_dict[key] = redact_configured(value)
    return event_dict


# uvicorn's loggers add no handlers of their own: their records reach the root handler below.
# Incremental, because a full dictConfig closes every handler already installed in the process.
UVICORN_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "incremental": True,
    "loggers": {name: {"propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
}


def uvicorn_access_fields(
    logger: object, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A structlog processor: an access line's parts as fields (uvicorn logs them as %-args).

    Other records' arguments are already in their message, so they are dropped here.
    """
    args = event_dict.pop("positional_args", None)
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord) and record.name == "uvicorn.access":
        if isinstance(args, tuple) and len(args) == 5:
            client, http_method, path, _version, status = args
            event_dict.update(client=str(client), method=str(http_method), path=str(path), status=status)
    return event_dict


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, uvicorn_access_fields],
        pass_foreign_args=True,  # for uvicorn_access_fields
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,  # after format_exc_info, so tracebacks are redacted too
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
