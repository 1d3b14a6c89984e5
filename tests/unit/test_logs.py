"""Structured event logs: one JSON line per event off a terminal, stable event names, secrets never written."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from replicator.logs import configure, event_logger


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()  # not a TTY: "auto" picks JSON
    configure("DEBUG", "auto", out)
    yield out
    logger = logging.getLogger("replicator")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def test_an_event_is_one_json_line_with_its_name_and_fields(stream: io.StringIO) -> None:
    event_logger("replicator.outbox").info("outbox.enqueued", sink="notion", documents=12, lsn="0/1A2B3C")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    line = orjson.loads(lines[0])
    assert line["event"] == "outbox.enqueued"
    assert line["level"] == "info"
    assert (line["sink"], line["documents"], line["lsn"]) == ("notion", 12, "0/1A2B3C")


def test_passwords_in_urls_and_secret_fields_are_masked(stream: io.StringIO) -> None:
    event_logger("replicator.source").warning(
        "source.reconnect",
        error="connection to postgresql://app:hunter2@db:5432/omics failed",
        api_key="ntn_abcdefghijklmnop",
    )
    text = stream.getvalue()
    assert "hunter2" not in text
    assert "ntn_abcdefghijklmnop" not in text
    line = orjson.loads(text)
    assert line["api_key"] == "********"
    assert "postgresql://app:********@db:5432/omics" in line["error"]


def test_text_format_is_readable_key_value_pairs(stream: io.StringIO) -> None:
    out = io.StringIO()
    configure("INFO", "text", out)
    event_logger("replicator.leader").info("leader.standby", slot="omics_cdc", poll_s=2.0)
    event_logger("replicator.leader").debug("not.shown")
    assert "leader.standby slot=omics_cdc poll_s=2.0" in out.getvalue()
    assert "not.shown" not in out.getvalue()
