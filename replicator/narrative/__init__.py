"""Narrative capture (#14): what people write on the managed Notion pages, outside the replicator's managed
section, read back into Postgres (``public.narrative``) so it is backed up, queryable with SQL, and carried to
retrieval by the same stream, outbox and workers as every other domain table."""
