"""``python -m replicator``."""

from replicator.cli import main

main()
