"""What every ``replicator`` command shares, written once: the exit codes, the consoles, the JSON writer, the
settings loader (the only code that reads the environment), the Postgres connection, and how a failure becomes a
message and an exit code. Every message goes through ``status.redact`` with the configured secrets: an SDK's or a
server's error text may quote a key, echo a request's headers or a database URL.

Exit codes (STYLE.md §4, the same scale as ``health``): 0 ok; 1 failed (an unusable database, drift found by
``verify``, a refused write); 2 bad configuration or usage; 3 unhealthy (``health``; a sink or Postgres that does
not answer a command that needs it; ``run`` when the slot is lost).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

import orjson
import psycopg
import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console

from replicator.config import NO_POSTGRES_URL, Settings
from replicator.sinks.base import SinkConfigError, SinkError
from replicator.status import NOT_MIGRATED_ERRORS, configured_secrets, not_migrated, redact
from schema.redaction import mask_url

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNHEALTHY",
    "EXIT_USAGE",
    "connect",
    "describe_validation_error",
    "echo_json",
    "err",
    "fail",
    "failures",
    "load_settings",
    "out",
    "postgres_error",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNHEALTHY = 3


def out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def echo_json(value: Any, *, one_line: bool = False) -> None:
    """``value`` as JSON on stdout: indented, or one line (``status --watch --json`` prints one per refresh)."""
    option = orjson.OPT_NON_STR_KEYS | (0 if one_line else orjson.OPT_INDENT_2)
    typer.echo(orjson.dumps(value, option=option, default=str).decode())


def fail(message: str, code: int, settings: Settings | None = None) -> NoReturn:
    """``error: <message>`` on stderr, redacted (with the configured secrets when ``settings`` are known), and
    the exit ``code``."""
    secrets = configured_secrets(settings) if settings is not None else ()
    err().print(f"error: {redact(message, secrets)}", markup=False)
    raise typer.Exit(code)


# ---- configuration and connections -------------------------------------------------------------------------------


def describe_validation_error(error: ValidationError) -> str:
    """One line per wrong variable, named as the environment spells it."""
    aliases = {name: info.alias or name.upper() for name, info in Settings.model_fields.items()}
    lines = []
    for item in error.errors():
        loc = str(item["loc"][0]) if item["loc"] else "?"
        variable = aliases.get(loc, loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required but not set"
        lines.append(f"  {variable}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)


def _only_postgres_missing(error: ValidationError) -> bool:
    return all(e["type"] == "missing" and [str(p) for p in e["loc"]] in (["POSTGRES_URL"], ["postgres_url"])
               for e in error.errors())  # fmt: skip


def load_settings(*, postgres: bool = True) -> Settings:
    """Settings from the environment; a wrong or missing variable exits 2 naming it. ``postgres=False``: for a
    command that works without a database (``notion init``), an unset ``POSTGRES_URL`` is allowed, and the
    settings say so (``Settings.postgres_configured``)."""
    try:
        return Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        if not postgres and _only_postgres_missing(error):
            return Settings(POSTGRES_URL=SecretStr(NO_POSTGRES_URL))  # type: ignore[call-arg]  # the rest: environment
        err().print(describe_validation_error(error), markup=False)
        raise typer.Exit(EXIT_USAGE) from None


def postgres_error(settings: Settings, error: psycopg.Error) -> str:
    """Why Postgres cannot be used, with its masked address and no secret."""
    text = not_migrated(error) if isinstance(error, NOT_MIGRATED_ERRORS) else str(error).strip()
    return f"cannot use Postgres at {mask_url(settings.dsn)}: {redact(text, configured_secrets(settings))}"


@contextlib.contextmanager
def connect(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection; an unreachable or unmigrated database exits 1 with a message that shows no
    password."""
    try:
        with psycopg.connect(settings.dsn, autocommit=True, connect_timeout=10) as conn:
            yield conn
    except psycopg.Error as error:  # OperationalError, and ProgrammingError for a URL psycopg cannot parse
        err().print(postgres_error(settings, error), markup=False)
        raise typer.Exit(EXIT_FAILED) from None


@contextlib.contextmanager
def failures(settings: Settings) -> Iterator[None]:
    """How every command that calls a sink ends when something fails, each with its message, redacted: a
    configuration the sink refuses (or a question it cannot answer, ``NotImplementedError``) exits 2; a sink that
    does not answer (unreachable, rate limited, 5xx, timed out: a retryable ``SinkError``) exits 3, unhealthy; a
    request it refused (a permanent ``SinkError``) exits 1; Postgres unreachable exits 3, a database without the
    replicator's tables 1."""
    try:
        yield
    except (SinkConfigError, NotImplementedError) as error:
        fail(str(error), EXIT_USAGE, settings)
    except SinkError as error:
        fail(str(error), EXIT_UNHEALTHY if error.retryable else EXIT_FAILED, settings)
    except NOT_MIGRATED_ERRORS as error:
        fail(not_migrated(error), EXIT_FAILED, settings)
    except psycopg.OperationalError as error:
        fail(f"cannot reach Postgres: {error}", EXIT_UNHEALTHY, settings)
