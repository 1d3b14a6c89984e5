"""The replicator: wal2json logical replication → coalescing outbox → sinks (Notion, Pinecone).

source → changes → routing → outbox → documents → sinks/, wired together by ``daemon``.
"""
