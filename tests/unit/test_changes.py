"""Parsing wal2json format-version 2 records into ``Change`` values (records as the server really sends them)."""

from __future__ import annotations

import pytest

from replicator.changes import Action, ChangeParseError, format_lsn, parse, parse_lsn

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
