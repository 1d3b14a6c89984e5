"""HTTP emulators of the Notion and Pinecone APIs, driven by the real SDKs in tests, the demo and benchmarks.

    python -m tests.emulators notion --port 8701
    python -m tests.emulators pinecone --port 8702

Both share ``base``: JSON request/response helpers, fault injection (``POST /_emulator/faults``), the whole
stored state (``GET /_emulator/state``), a reset (``POST /_emulator/reset``) and a request log
(``GET /_emulator/requests``), so tests can assert on calls as well as on state.
"""
