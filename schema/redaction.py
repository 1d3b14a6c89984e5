"""One redaction for everything either command prints or logs: tokens, API keys and passwords are removed from
log lines, status and health output, error messages, ``replicator config`` and dead-letter text.

It lives in ``schema`` because that is the one package both ``ingest`` and ``replicator`` may import (the import
contracts keep the two apart); it imports nothing of ours.

Two layers: the exact secret values the caller knows (its configured keys and the database password, taken from
the URL even when the URL does not parse — psycopg quotes a malformed password in its own error message), and
patterns for the shapes a secret takes in text nobody controls (an SDK's error, a proxy that echoes the
``Authorization`` header, a conninfo string).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from urllib.parse import unquote

REDACTED = "[REDACTED]"
MASK = "********"  # what ``mask_url`` puts in place of a password: the URL stays readable as a URL

_PATTERNS = (
    # URL user-info passwords: postgresql://user:secret@host, https://user:token@host
    # (a password ``mask_url`` already masked stays as it is)
    (re.compile(r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)(?!\*{8}@)[^@\s]+(?=@)"), r"\g<keep>" + REDACTED),
    # libpq conninfo and similar key=value secrets
    (
        re.compile(r"(?i)(?P<keep>\b(?:password|passwd|pwd)\s*[=:]\s*)(?!\*{8}(?:\s|$))('[^']*'|\"[^\"]*\"|\S+)"),
        r"\g<keep>" + REDACTED,
    ),
    # psycopg's message for a password it cannot decode quotes the password itself
    (re.compile(r"(?P<keep>invalid percent-encoded token: )\"[^\"]*\""), r"\g<keep>" + f'"{REDACTED}"'),
    # Authorization headers, however they are quoted (an echoed request in a server's error body)
    (re.compile(r"(?i)(?P<keep>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\g<keep>" + REDACTED),
    # Notion integration tokens (new ntn_ and legacy secret_ forms)
    (re.compile(r"\b(?:ntn|secret)_[A-Za-z0-9_]{12,}"), REDACTED),
    # Pinecone API keys (pcsk_…), OpenAI-style sk-… keys
    (re.compile(r"\bpcsk_[A-Za-z0-9_]{16,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), REDACTED),
    (
        re.compile(
            r"(?i)(?P<keep>\b(?:api[-_ ]?key|x-api-key|token|apikey|authorization)[\"']?\s*[:=]\s*[\"']?)"
            r"(?!(?:bearer|basic)\s)(?!\[REDACTED\])[^\s\"',;}]{6,}"
        ),
        r"\g<keep>" + REDACTED,
    ),
)

_USERINFO = re.compile(r"://[^:/@\s]+:(?P<password>[^@\s]*)@")
_CONNINFO_PASSWORD = re.compile(r"(?i)\bpassword\s*=\s*(?:'(?P<quoted>[^']*)'|(?P<bare>\S+))")


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The password of a database URL or conninfo string, as written and percent-decoded, without parsing the
    URL (a URL that does not parse must not leak either)."""
    if not url:
        return ()
    found: list[str] = []
    for match in _USERINFO.finditer(url):
        found.append(match.group("password"))
    for match in _CONNINFO_PASSWORD.finditer(url):
        found.append(match.group("quoted") or match.group("bare") or "")
    values: list[str] = []
    for raw in found:
        values.append(raw)
        with contextlib.suppress(UnicodeDecodeError):
            values.append(unquote(raw, errors="strict"))
    return tuple(dict.fromkeys(v for v in values if v))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secret values and without anything shaped like a secret. Values shorter than
    four characters are not searched for (they would mangle ordinary words); patterns still apply."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def mask_url(url: str) -> str:
    """A database URL fit to print: its password (URL user-info or ``password=``) replaced by ``********``."""
    url = _USERINFO.sub(lambda m: m.group(0).replace(":" + m.group("password") + "@", f":{MASK}@"), url)
    return _CONNINFO_PASSWORD.sub(lambda m: m.group(0).split("=", 1)[0] + "=" + MASK, url)
