"""Ingest: omics files into Postgres, and nowhere else.

readers/ → normalize/ → scoring → writer, wired by the CLI (``ingest``). One transaction per command.
"""
