"""HTTP emulators of the Notion and Pinecone APIs, driven by the real SDKs in tests, the demo and benchmarks.

    python -m tests.emulators notion --port 8701
    python -m tests.emulators pinecone --port 8702

Both share ``base``: JSON request/response helpers, fault injection (``POST /_emulator/faults``), the whole
stored state (``GET /_emulator/state``), a reset (``POST /_emulator/reset``) and a request log
(``GET /_emulator/requests``), so tests can assert on calls as well as on state.

The faults include the services' hard behaviours, off by default (``base.Faults``): ``apply_then_fail_rate`` /
``apply_then_fail_kinds`` / ``apply_then_fail_timeout_s`` (a write applied, its answer lost), ``read_lag_s`` and
``read_by_id_lag_s`` (eventually consistent reads) and ``index_init_s`` (a Pinecone index still initializing).
Always on: Notion's 500 KB / 1,000-block request limits and 10,000-result query cap, Pinecone's 4 MB query answer.
The Notion emulator accepts ``ntn_person_token`` besides ``ntn_emulator_token``: its edits are a person's.
See tests/contract/test_*_real_behaviours.py for each behaviour through the real SDKs.
"""
