"""The replicator's own state, ``replicator.*`` — the only code that reads or writes it. ``outbox``: the coalescing
queue and its dead letters; ``checkpoints``: the source's checkpoint and heartbeat; ``sink_state``: what each sink
holds and how it fares. Every statement is in ``queries.sql``, named and commented."""
