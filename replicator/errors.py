"""The replicator's one error hierarchy: every failure it raises on purpose is a ``ReplicatorError``, of one of
three kinds, and the daemon has one answer per kind:

- ``RetryableError``: the remote side may answer next time (a 429, a 5xx, a timeout, a dropped replication
  connection). Retried with the one backoff policy (``replicator.retry``); a sink's rows wait in the outbox.
- ``PermanentError``: the same call will fail the same way (a validation error, a change the source cannot parse).
  A sink row is dead-lettered; in the source, the stream stops at that change (never skips it) with a logged,
  counted incident, and the slot keeps it for after the fix.
- ``ConfigurationError``: an operator must change settings or the remote set-up (a missing Notion property, a
  wrong index dimension, an unknown entity in a CLI argument). Reported with the command that fixes it.

Subsystems keep their own classes (``SinkError``, ``SourceError``, ``ChangeParseError`` …) for what they add,
rooted here, so ``except ReplicatorError`` is the daemon's complete list. ``SinkError`` decides retryable per
instance (``retryable=``), because the same call can fail either way.
"""

from __future__ import annotations


class ReplicatorError(Exception):
    """Root of every error the replicator raises on purpose."""

    retryable: bool = False


class RetryableError(ReplicatorError):
    """Transient: retried with backoff."""

    retryable = True


class PermanentError(ReplicatorError):
    """Retrying does not help: dead-letter the row, or stop the stream at this change."""


class ConfigurationError(ReplicatorError):
    """An operator must fix settings or the remote set-up; the message names what and how."""


# ---- the source --------------------------------------------------------------------------------------------------


class SourceError(PermanentError):
    """The source cannot stream (a wrong slot plugin, a protocol error)."""


class SlotLostError(SourceError):
    """The slot vanished or was invalidated after the replicator had used it: changes are gone. Recovery is an
    explicit operator step (``replicator slot drop`` then a run, which recreates the slot and backfills)."""

    def __init__(self, slot: str, reason: str) -> None:
        super().__init__(
            f"replication slot {slot!r} {reason}; changes may be lost. Run 'replicator slot drop' "
            "and restart to recreate it with a full resync."
        )
        self.slot = slot
        self.reason = reason


class StreamInterruptedError(SourceError):
    """The replication connection ended or broke; the loop reconnects."""

    retryable = True
