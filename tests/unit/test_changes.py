"""Parsing wal2json format-version 2 records into ``Change`` values (records as the server really sends them), and
the source's fast path (``KeyScanner``), which must read the same keys or leave the record to ``parse``."""

from __future__ import annotations

import orjson
import pytest

from replicator.changes import (
    ACTION_AT,
    ACTION_PREFIX,
    ROW_ACTION_BYTES,
    Action,
    ChangeParseError,
    KeyScanner,
    format_lsn,
    parse,
    parse_lsn,
)

INSERT = (
    b'{"action":"I","xid":749,"timestamp":"2026-11-25 21:27:11.250545+00","lsn":"0/1FE73C8","schema":"public",'
    b'"table":"dataset_feature","columns":[{"name":"dataset_id","type":"uuid","value":"53e9da94-2042-49b3-b652-'
    b'2046d72c2de7"},{"name":"feature_id","type":"uuid","value":"73474906-6784-4d9a-9e9c-229793bdec64"},'
    b'{"name":"raw_name","type":"text","value":"a"}],"pk":[{"name":"dataset_id","type":"uuid"},'
    b'{"name":"feature_id","type":"uuid"}]}'
)
DELETE = (
    b'{"action":"D","xid":752,"timestamp":"2026-11-25 21:27:11.253164+00","lsn":"0/1FE7828","schema":"public",'
    b'"table":"program","identity":[{"name":"id","type":"uuid","value":"6ad5cea9-4761-4b9b-a55c-2c3d55b5ca46"}],'
    b'"pk":[{"name":"id","type":"uuid"}]}'
)
# An update whose unchanged TOAST column (description) is omitted from the new tuple.
UPDATE_WITHOUT_TOAST = (
    b'{"action":"U","xid":750,"lsn":"0/1FE75E8","schema":"public","table":"dataset","columns":[{"name":"id",'
    b'"type":"uuid","value":"53e9da94-2042-49b3-b652-2046d72c2de7"},{"name":"name","type":"text","value":"n2"}],'
    b'"pk":[{"name":"id","type":"uuid"}]}'
)


def test_an_insert_carries_its_primary_key_values_and_columns() -> None:
    change = parse(INSERT, 0x1FE73C8)
    assert change.action is Action.INSERT
    assert change.relation == "public.dataset_feature"
    assert change.key == {
        "dataset_id": "53e9da94-2042-49b3-b652-2046d72c2de7",
        "feature_id": "73474906-6784-4d9a-9e9c-229793bdec64",
    }
    assert change.columns["raw_name"] == "a"
    assert change.xid == 749
    assert change.commit_time == "2026-11-25 21:27:11.250545+00"
    assert change.lsn == 0x1FE73C8


def test_a_delete_takes_its_key_from_the_identity() -> None:
    change = parse(DELETE, 1)
    assert change.action is Action.DELETE
    assert change.key == {"id": "6ad5cea9-4761-4b9b-a55c-2c3d55b5ca46"}
    assert change.columns == {}


def test_an_update_without_its_unchanged_toast_columns_still_has_its_key() -> None:
    change = parse(UPDATE_WITHOUT_TOAST, 1)
    assert change.key == {"id": "53e9da94-2042-49b3-b652-2046d72c2de7"}
    assert "description" not in change.columns


def test_begin_commit_truncate_and_message_records_are_parsed() -> None:
    assert parse(b'{"action":"B","xid":7,"lsn":"0/10","nextlsn":"0/20"}', 5).action is Action.BEGIN
    commit = parse(b'{"action":"C","xid":7,"lsn":"0/10","nextlsn":"0/20"}', 0x20)
    assert (commit.action, commit.lsn, commit.xid) == (Action.COMMIT, 0x20, 7)
    truncate = parse(b'{"action":"T","xid":9,"schema":"public","table":"program"}', 1)
    assert (truncate.action, truncate.table) == (Action.TRUNCATE, "program")
    message = parse(b'{"action":"M","transactional":true,"prefix":"hb","content":"x"}', 1)
    assert (message.prefix, message.content) == ("hb", "x")


@pytest.mark.parametrize("payload", [b"{not json", b'{"action":"Z"}', b'{"no_action":1}', b'{"action":"I"}'])
def test_a_broken_record_is_a_typed_error_naming_the_lsn(payload: bytes) -> None:
    with pytest.raises(ChangeParseError, match="16/B374D848"):
        parse(payload, parse_lsn("16/B374D848"))


def test_lsn_text_round_trips() -> None:
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("0/1FE73C8") == 0x1FE73C8
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn("12")


# ---- the fast path -----------------------------------------------------------------------------------------------

ROUTE = {"dataset_feature": ("dataset_id",), "program": ("id",), "dataset": ("id",), "link": ("a_id", "b_id")}


def scanner() -> KeyScanner:
    return KeyScanner("public", ROUTE)


def test_the_scanner_reads_the_same_key_values_as_the_full_parse() -> None:
    for payload in (INSERT, DELETE, UPDATE_WITHOUT_TOAST):
        change = parse(payload, 1)
        assert change.table is not None
        assert scanner().scan(payload) == (change.table, tuple(change.key[c] for c in ROUTE[change.table]))


def test_the_scanner_reads_a_record_in_place_after_the_messages_header() -> None:
    # The source scans the whole XLogData message from the record's offset, without copying the record out; a
    # header that happens to hold the bytes of a needle is not read.
    header = b"w" + b'"schema":"public","table":"program"'[:24]
    for payload in (INSERT, DELETE, UPDATE_WITHOUT_TOAST):
        assert scanner().scan(header + payload, len(header)) == scanner().scan(payload)
    assert scanner().scan(header + b'{"action":"B"}', len(header)) is None


def test_the_scanner_is_not_fooled_by_a_value_that_looks_like_a_column() -> None:
    # A text column before the key whose content, unescaped, is the key column's object: JSON escapes its quotes.
    fake = orjson.dumps({"name": "dataset_id", "type": "uuid", "value": "00000000-0000-0000-0000-000000000000"})
    record = orjson.dumps(
        {
            "action": "I",
            "schema": "public",
            "table": "dataset_feature",
            "columns": [
                {"name": "raw_name", "type": "text", "value": fake.decode() + ' {"name":"dataset_id",'},
                {"name": "dataset_id", "type": "uuid", "value": "53e9da94-2042-49b3-b652-2046d72c2de7"},
            ],
            "pk": [{"name": "dataset_id", "type": "uuid"}],
        }
    )
    assert scanner().scan(record) == ("dataset_feature", ("53e9da94-2042-49b3-b652-2046d72c2de7",))


def test_a_wide_row_is_scanned_for_its_key_only() -> None:
    columns = [{"name": "id", "type": "uuid", "value": "6ad5cea9-4761-4b9b-a55c-2c3d55b5ca46"}]
    columns += [{"name": f"c{i}", "type": "jsonb", "value": '{"k": "' + "é" * 5000 + '"}'} for i in range(5)]
    record = orjson.dumps({"action": "U", "schema": "public", "table": "dataset", "columns": columns})
    assert scanner().scan(record) == ("dataset", ("6ad5cea9-4761-4b9b-a55c-2c3d55b5ca46",))


def test_a_null_key_value_is_none() -> None:
    record = (
        b'{"action":"I","schema":"public","table":"link","columns":[{"name":"a_id","type":"uuid","value":null},'
        b'{"name":"b_id","type":"uuid","value":"53e9da94-2042-49b3-b652-2046d72c2de7"}]}'
    )
    assert scanner().scan(record) == ("link", (None, "53e9da94-2042-49b3-b652-2046d72c2de7"))


@pytest.mark.parametrize(
    "record",
    [
        # another schema (the heartbeat): parsed fully
        b'{"action":"U","schema":"replicator","table":"heartbeat","columns":[{"name":"slot_name","type":"text",'
        b'"value":"s"}]}',
        # a table it was not given
        b'{"action":"I","schema":"public","table":"other","columns":[{"name":"id","type":"uuid","value":"x"}]}',
        # the key column is only in pk (not in the tuple): the column object there has no value
        b'{"action":"U","schema":"public","table":"program","columns":[{"name":"name","type":"text","value":"n"}],'
        b'"pk":[{"name":"id","type":"uuid"}]}',
        # a value with an escape, or not a string
        b'{"action":"I","schema":"public","table":"program","columns":[{"name":"id","type":"text","value":"a\\"b"}]}',
        b'{"action":"I","schema":"public","table":"program","columns":[{"name":"id","type":"int8","value":12}]}',
        b"not json at all",
    ],
)
def test_what_the_scanner_does_not_recognise_is_left_to_the_full_parse(record: bytes) -> None:
    assert scanner().scan(record) is None


def test_every_record_starts_with_its_action() -> None:
    for payload in (INSERT, DELETE, UPDATE_WITHOUT_TOAST):
        assert payload.startswith(ACTION_PREFIX)
        assert ROW_ACTION_BYTES[payload[ACTION_AT]] is parse(payload, 1).action
