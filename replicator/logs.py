"""Structured event logs: one line per event with a stable name (``outbox.enqueued``, ``slot.created``,
``leader.standby``) and typed fields, JSON when stderr is not a terminal, ``key=value`` text when a person
watches. Secrets never reach a line: URL passwords are masked and fields whose names look secret are hidden.

    log = event_logger("replicator.source")
    log.info("outbox.enqueued", sink="notion", documents=12, lsn="0/1A2B3C")
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Literal, TextIO

import orjson

from schema.redaction import MASK, mask_url
from schema.redaction import redact as redact_text

_SECRET_FIELD = re.compile(r"(password|passwd|secret|token|api_key|apikey|authorization)", re.IGNORECASE)
# The configured secret values (``remember_secrets``): removed from every line whatever their shape.
_secrets: tuple[str, ...] = ()


def redact(value: object) -> object:
    """A string without secrets (the one redaction, ``schema.redaction``; URL passwords read ``********``);
    other values as they are."""
    if isinstance(value, str):
        return redact_text(mask_url(value), _secrets)
    return value


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: (MASK if _SECRET_FIELD.search(k) else redact(v)) for k, v in fields.items()}


class EventLogger:
    """A thin wrapper over a stdlib logger whose message is the event name and whose fields travel in ``extra``."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={"event_fields": _clean(fields)})

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)


def event_logger(name: str) -> EventLogger:
    return EventLogger(logging.getLogger(name))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "event_fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": str(redact(record.getMessage())),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = str(redact(self.formatException(record.exc_info)))
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        pairs = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{ts} {record.levelname:<7} {redact(record.getMessage())} {pairs}".rstrip()
        if record.exc_info:
            text += "\n" + str(redact(self.formatException(record.exc_info)))
        return text


def remember_secrets(secrets: tuple[str, ...]) -> None:
    """The configured secret values every line is cleaned of (the keys, the database password)."""
    global _secrets
    _secrets = tuple(secrets)


def configure(
    level: str = "INFO",
    fmt: Literal["auto", "json", "text"] = "auto",
    stream: TextIO | None = None,
    *,
    secrets: tuple[str, ...] = (),
) -> None:
    """Route the ``replicator`` loggers (the SDKs' loggers under it included: ``replicator.notion.sdk``) to one
    handler on ``stream`` (stderr by default); ``secrets`` (when given) are removed from every line."""
    if secrets:
        remember_secrets(secrets)
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger("replicator")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
