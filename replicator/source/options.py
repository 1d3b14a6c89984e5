"""What the source's stages share, and nothing else: the options they run with (``SourceOptions``, from settings)
and the progress they report (``SourceProgress``: the confirmed LSN and counters, kept across reconnects). The
loop owns one of each and hands them to the listener and the writer of each streaming session.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceOptions:
    slot: str
    sinks: tuple[str, ...]
    batch_max_changes: int = 5000
    batch_max_wait_ms: int = 200
    heartbeat_interval_s: float = 5.0
    shutdown_deadline_s: float = 20.0
    leader: str | None = None


@dataclass
class SourceProgress:
    """How far the source got, across streaming sessions. ``confirmed_lsn`` is the last position sent to the
    server as flushed (only the listener moves it, and only to an LSN the writer made durable)."""

    confirmed_lsn: int = 0
    changes: int = 0  # row changes read
    batches: int = 0  # outbox transactions committed
