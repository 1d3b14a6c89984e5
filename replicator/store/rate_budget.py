"""``replicator.rate_budget``: one token bucket per API credential in Postgres, so every process calling an API
with the same credential (daemon replicas, ``verify``, ``notion check``) draws on one budget. The statements are
``budget_*`` in ``queries.sql``; the limiter that sleeps between takes and falls back to a local bucket when
Postgres is away is ``replicator/budget.py``. The connection passed in is the limiter's own (autocommit), never a
worker's transaction: a take must commit at once, whatever the caller's transaction does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.store.queries import QUERIES

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Take:
    """The answer of one take: ``granted``, or ask again in ``wait_s`` seconds."""

    granted: bool
    wait_s: float = 0.0


def ensure(conn: Conn, key: str, *, rate: float, burst: float) -> None:
    """Create the budget row of ``key`` (full), or update its rate and burst."""
    conn.execute(QUERIES["budget_ensure"], {"key": key, "rate": rate, "burst": burst})


def take(conn: Conn, key: str, tokens: float = 1.0, *, force: bool = False) -> Take | None:
    """Take ``tokens`` from the budget atomically (``force``: without waiting, possibly into debt). ``None`` when
    the row does not exist (``ensure`` it first). The caller caps ``tokens`` at the burst unless forcing."""
    row = conn.execute(QUERIES["budget_take"], {"key": key, "tokens": float(tokens), "force": force}).fetchone()
    if row is None:
        return None
    return Take(granted=bool(row[0]), wait_s=float(row[1]))


def penalize(conn: Conn, key: str, seconds: float) -> None:
    """Nobody drawing on ``key`` gets a token for ``seconds`` (the API answered 429 with that Retry-After)."""
    conn.execute(QUERIES["budget_penalize"], {"key": key, "seconds": max(0.0, float(seconds))})
