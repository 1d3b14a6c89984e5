"""pytest fixtures for this emulator (registered in tests/conftest.py)."""
