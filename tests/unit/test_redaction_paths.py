"""One redaction on every path a secret could leave by: log lines (ours and the Notion SDK's own), errors of both
CLIs, ``replicator config``, status text and dead-letter text. Each test plants a token or password inside the kind
of message that really carries it (an SDK error, a server body echoing the request, psycopg's parse error)."""

from __future__ import annotations

import http.server
import io
import logging
import threading
from collections.abc import Iterator

import orjson
import pytest
from typer.testing import CliRunner

from ingest.cli import app as ingest_app
from replicator import logs
from replicator.cli import app as replicator_app
from replicator.config import Settings
from replicator.status import configured_secrets, redact
from schema.redaction import mask_url, url_secrets

TOKEN = "ntn_S3cretIntegrationToken0123456789"
ODD_KEY = "odd-shaped-key-value"  # no pattern knows this shape: only the configured value removes it
BAD_ESCAPE_URL = "postgresql://app:s3cr%zzet@127.0.0.1:1/omics"  # psycopg quotes the password in its error


def test_the_password_of_a_url_that_does_not_parse_is_still_known_and_masked() -> None:
    assert "s3cr%zzet" in url_secrets(BAD_ESCAPE_URL)
    assert mask_url(BAD_ESCAPE_URL) == "postgresql://app:********@127.0.0.1:1/omics"
    assert "s3cr" not in redact('invalid percent-encoded token: "s3cr%zzet"')


def test_a_server_body_echoing_the_authorization_header_loses_the_token() -> None:
    body = f'{{"object":"error","message":"bad request","echo":{{"Authorization":"Bearer {TOKEN}"}}}}'
    assert TOKEN not in redact(body)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure("INFO", "json", out, secrets=(TOKEN, ODD_KEY))
    yield out
    logs.remember_secrets(())
    logging.getLogger("replicator").handlers.clear()


def test_log_lines_lose_configured_secrets_and_token_shapes(captured: io.StringIO) -> None:
    logs.event_logger("replicator.daemon").error("daemon.failed", error=f"sdk said: key {ODD_KEY} rejected ({TOKEN})")
    line = orjson.loads(captured.getvalue())
    assert ODD_KEY not in line["error"]
    assert TOKEN not in line["error"]


def test_the_notion_sdks_own_log_lines_are_redacted(captured: io.StringIO) -> None:
    # notion-client logs through the logger it is given (``replicator.notion.sdk``), with a server's body verbatim.
    logging.getLogger("replicator.notion.sdk").warning("request fail: {'Authorization': 'Bearer %s'}", TOKEN)
    text = captured.getvalue()
    assert "request fail" in text
    assert TOKEN not in text


def test_status_and_dead_letter_text_drop_the_configured_database_password() -> None:
    settings = Settings.model_validate({"POSTGRES_URL": BAD_ESCAPE_URL, "NOTION_API_KEY": ODD_KEY})
    secrets = configured_secrets(settings)
    assert redact(f"connect failed for {BAD_ESCAPE_URL} with {ODD_KEY}", secrets).count("[REDACTED]") == 2


def test_ingest_names_no_password_when_the_url_does_not_parse(tmp_path: pytest.TempPathFactory) -> None:
    result = CliRunner().invoke(ingest_app, ["program", "P", "--db", BAD_ESCAPE_URL])
    assert result.exit_code == 1
    assert "s3cr" not in result.output
    assert "cannot use the database" in result.output


@pytest.mark.parametrize("command", [["status"], ["health"]])
def test_status_and_health_fail_without_a_traceback_or_the_password(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_URL", BAD_ESCAPE_URL)
    result = CliRunner().invoke(replicator_app, command)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "s3cr" not in result.output
    assert "Traceback" not in result.output


def test_config_masks_a_password_that_does_not_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_URL", BAD_ESCAPE_URL)
    monkeypatch.setenv("NOTION_API_KEY", TOKEN)
    result = CliRunner().invoke(replicator_app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert "s3cr" not in result.output
    assert TOKEN not in result.output


class _EchoingServer(http.server.BaseHTTPRequestHandler):
    """A proxy that answers every request with an error body quoting the request's Authorization header."""

    def _answer(self) -> None:
        body = orjson.dumps(
            {
                "object": "error",
                "status": 400,
                "code": "validation_error",
                "message": f"bad request from {self.headers.get('Authorization')}",
            }
        )
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer  # noqa: N815 - the http.server hook names

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echoing_notion() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_notion_init_does_not_print_a_token_the_server_echoes(
    echoing_notion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTION_API_KEY", TOKEN)
    monkeypatch.setenv("NOTION_BASE_URL", echoing_notion)
    result = CliRunner().invoke(replicator_app, ["notion", "init", "--parent-page", "p"])
    assert result.exit_code == 1
    assert "bad request from" in result.output
    assert TOKEN not in result.output
