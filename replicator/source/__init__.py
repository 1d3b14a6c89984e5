"""The source: reads the wal2json slot over the streaming replication protocol and turns it into durable outbox
rows, confirming to the server only what is committed. Its stages, one module each (pgstream's replication /
listener / checkpointer split): ``slots`` (slot administration), ``protocol`` (the replication connection,
START_REPLICATION, the wire format, status updates), ``listener`` (the read loop, the batcher cutting batches at
commits, the heartbeat, confirming), ``writer`` (the outbox writer thread: group commit, checkpoint in the same
transaction), and ``loop`` (``SourceLoop``: wires one session from ``options`` and reconnects with backoff).
"""

from replicator.errors import SlotLostError, SourceError, StreamInterruptedError
from replicator.source.loop import SourceLoop
from replicator.source.options import SourceOptions, SourceProgress
from replicator.source.protocol import ReplicationStream, start_replication_command, stream_tables
from replicator.source.slots import PLUGIN, SlotInfo, create_slot, drop_slot, slot_info

__all__ = [
    "PLUGIN",
    "ReplicationStream",
    "SlotInfo",
    "SlotLostError",
    "SourceError",
    "SourceLoop",
    "SourceOptions",
    "SourceProgress",
    "StreamInterruptedError",
    "create_slot",
    "drop_slot",
    "slot_info",
    "start_replication_command",
    "stream_tables",
]
