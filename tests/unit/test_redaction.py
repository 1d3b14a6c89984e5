"""Secrets never reach status output, dead letters or sink_status: ``redact`` removes them from error text."""

from __future__ import annotations

import pytest

from replicator.config import Settings
from replicator.status import configured_secrets, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("401 Unauthorized: Bearer ntn_4567890123456789abcdefABCDEF", "ntn_4567890123456789abcdefABCDEF"),
        ("token secret_AbCdEf0123456789AbCdEf0123456789 is invalid", "secret_AbCdEf0123456789AbCdEf0123456789"),
        ("pinecone rejected Api-Key: pcsk_3xYz_abcdefghijklmnopqrstuvwxyz", "pcsk_3xYz_abcdefghijklmnopqrstuvwxyz"),
        ("headers={'Api-Key': '6c1f6f4e-8a2b-4c55-9d1e-0f2a3b4c5d6e'}", "6c1f6f4e-8a2b-4c55-9d1e-0f2a3b4c5d6e"),
        ("openai: invalid key sk-proj-abcdefghijklmnop1234", "sk-proj-abcdefghijklmnop1234"),
        ("could not connect to postgresql://replicator:hunter2@db:5432/omics", "hunter2"),
        ("conninfo host=db user=r password=s3cr3t! dbname=x", "s3cr3t!"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9.payload.sig"),
    ],
)
def test_redact_removes_tokens_keys_and_passwords(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[REDACTED]" in cleaned


def test_redact_keeps_the_useful_part_of_the_message() -> None:
    cleaned = redact("429 rate_limited from https://api.notion.com/v1/pages (retry after 1s)")
    assert cleaned == "429 rate_limited from https://api.notion.com/v1/pages (retry after 1s)"


def test_configured_secret_values_are_removed_whatever_their_shape() -> None:
    settings = Settings.model_validate(
        {"POSTGRES_URL": "postgresql://u:pw-1234@h/db", "NOTION_API_KEY": "odd-shaped-key-value"}
    )
    secrets = configured_secrets(settings)
    assert "odd-shaped-key-value" in secrets
    assert "pw-1234" in secrets
    assert redact("echo odd-shaped-key-value and pw-1234", secrets) == "echo [REDACTED] and [REDACTED]"
