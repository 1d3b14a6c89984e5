"""Sinks: where documents go. One small interface (``base.Sink``); adding a sink touches this folder and the
wiring in ``replicator.daemon`` only."""
