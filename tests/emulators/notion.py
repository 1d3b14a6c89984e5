"""A local emulator of the Notion API (version 2025-09-03, the default of notion-client 3.x), for the real SDK.

The Notion sink and its tests talk to this server through ``notion_client.Client(base_url=…)``. It keeps the
data-source model of 2025-09-03 (a database holds data sources; the schema and the pages live under a data
source), answers in Notion's response shapes, refuses what the real service refuses (bearer token, the
``Notion-Version`` header, request size limits, property values that do not fit the schema, edits of trashed
pages) with Notion's error object ``{"object": "error", "status", "code", "message"}``, and rate-limits each token
with a token bucket (about 3 requests/s with bursts, answering 429 ``rate_limited`` with ``Retry-After``).
Everything stored is visible at ``GET /_emulator/state``, with page properties both simplified and raw.
The requests it answers are those notion-client 3.1 sends (the team's wire capture, shared/reference/sdk-wire.md).

Always on, as the service does:

- **Request limits** (https://developers.notion.com/reference/request-limits): "the maximum size of a payload is
  1,000 block elements and 500KB overall"; a request beyond either is refused with 400 ``validation_error``
  (the page says every size limit answers that code). 500 KB is taken as 500,000 bytes of request body, the
  stricter reading, so a client that fits here fits there.
- **The 10,000-result query cap** (https://developers.notion.com/guides/data-apis/query-large-data-sources): a
  data-source query returns at most 10,000 results, however it is paginated; past that ``has_more`` is false,
  ``next_cursor`` null, and every page of the capped result carries
  ``"request_status": {"type": "incomplete", "incomplete_reason": "query_result_limit_reached"}``.
- Created and last-edited times of pages, databases and blocks rounded down to the minute, as Notion reports
  them (https://developers.notion.com/changelog/last-edited-time-is-now-rounded-to-the-nearest-minute).
- **Block types** (https://developers.notion.com/reference/block): the text blocks, ``code``, ``divider``, and
  ``equation`` (``{"expression"}``, at most 1,000 characters as in the request limits), ``image`` / ``file`` with an
  ``external`` file object (``{"type": "external", "external": {"url"}}``, https://developers.notion.com/reference/file-object)
  and a rich-text ``caption`` (a file also has a ``name``), ``bookmark`` (``{"url", "caption"}``), and ``table`` /
  ``table_row``. The block reference's table section says a table's ``table_width`` "can only be set when the table
  is first created", that a new table (Append block children, https://developers.notion.com/reference/patch-block-children)
  must come with its ``table_row`` children in the same request, and that "the number of cells in the cells array
  must match the table_width"; so a table without rows, a row of the wrong width, a row outside a table or a
  non-row inside one is a 400 ``validation_error``. Rows are the table's children (``has_children`` true), each
  ``{"cells": [[rich text], …]}``; ``has_column_header`` / ``has_row_header`` default to false and may be updated.

Two tokens are accepted: ``ntn_emulator_token`` (the integration: its edits are made by the bot user) and
``ntn_person_token`` (an emulator artifice standing for a scientist typing in the Notion UI: its creates and
edits carry a *person* user in ``created_by`` / ``last_edited_by`` of pages and blocks, and move the page's
``last_edited_time``, as an edit in the UI does). Each token has its own rate-limit bucket, as Notion limits per
token. ``GET /v1/users/me`` answers the user behind the token.

The hard behaviours (knobs of ``POST /_emulator/faults``, off by default; see ``tests.emulators.base.Faults``):

- ``apply_then_fail_*``: the writes are ``POST /v1/pages``, ``PATCH /v1/pages/{id}`` (update and trash),
  ``PATCH /v1/blocks/{id}/children`` (append), ``PATCH /v1/blocks/{id}`` (update) and ``DELETE /v1/blocks/{id}``.
  notion-client's own docs note a ``service_unavailable`` can come after 60 s while the work goes on.
- ``read_lag_s``: data-source queries and search see a page as it was ``read_lag_s`` ago — not yet created, not yet
  trashed, old property values. Notion documents no consistency guarantee for its list endpoints (a page
  created a moment ago may be missing from a query), which is what this models.
- ``read_by_id_lag_s``: the same for ``GET /v1/pages/{id}`` (a read by id). Notion's reference
  (https://developers.notion.com/reference/retrieve-a-page) says nothing of its consistency, so it is a separate
  knob, default 0 (fresh). Block children are always read fresh.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.emulators.base import ApiError, Emulator, Request, Response, Versions

JSON = dict[str, Any]

NOTION_VERSIONS = ("2025-09-03", "2026-03-11")
DEFAULT_TOKEN = "ntn_emulator_token"
PERSON_TOKEN = "ntn_person_token"

# Request limits from https://developers.notion.com/reference/request-limits
RICH_TEXT_CONTENT_MAX = 2000
LINK_URL_MAX = 2000
EQUATION_MAX = 1000
ARRAY_MAX = 100  # rich text arrays, multi_select, relation, people, and children per request
URL_MAX = 2000
EMAIL_MAX = 200
PHONE_MAX = 200
BLOCKS_PER_REQUEST_MAX = 1000  # all nested block elements of one request
REQUEST_BYTES_MAX = 500_000  # "500KB overall" per request
QUERY_RESULT_CAP = 10_000  # results of one data-source query, however paginated
PAGE_SIZE_MAX = 100
RELATION_REFS_IN_PAGE = 25  # a page object lists at most 25 relation references (has_more beyond)
SELECT_NAME_MAX = 100

COLORS = (
    "default",
    "gray",
    "brown",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "red",
)
TEXT_COLORS = COLORS + tuple(f"{c}_background" for c in COLORS if c != "default")
CODE_LANGUAGES = frozenset(
    {
        *("abap", "arduino", "bash", "basic", "c", "clojure", "coffeescript", "c++", "c#", "css", "dart", "diff"),
        *("docker", "elixir", "elm", "erlang", "flow", "fortran", "f#", "gherkin", "glsl", "go", "graphql"),
        *("groovy", "haskell", "html", "java", "javascript", "json", "julia", "kotlin", "latex", "less", "lisp"),
        *("livescript", "lua", "makefile", "markdown", "markup", "matlab", "mermaid", "nix", "objective-c"),
        *("ocaml", "pascal", "perl", "php", "plain text", "powershell", "prolog", "protobuf", "python", "r"),
        *("reason", "ruby", "rust", "sass", "scala", "scheme", "scss", "shell", "sql", "swift", "typescript"),
        *("vb.net", "verilog", "vhdl", "visual basic", "webassembly", "xml", "yaml", "java/c/c++/c#"),
    }
)

TEXT_BLOCKS = (
    "paragraph",
    "heading_1",
    "heading_2",
    "heading_3",
    "bulleted_list_item",
    "numbered_list_item",
    "to_do",
    "toggle",
    "quote",
    "callout",
)
# Media blocks hold a file object (https://developers.notion.com/reference/file-object): only ``external`` files
# can be created here (no File Upload API in the emulator); ``caption`` is rich text, ``file`` also has a ``name``.
MEDIA_BLOCKS = ("image", "file")
BLOCK_TYPES = (*TEXT_BLOCKS, "code", "divider", "equation", "table", "table_row", *MEDIA_BLOCKS, "bookmark")
# Block types that may carry children in a request (headings only when toggleable).
NESTING_BLOCKS = frozenset(
    {"paragraph", "bulleted_list_item", "numbered_list_item", "to_do", "toggle", "quote", "callout"}
)

WRITABLE_TYPES = frozenset(
    {
        "title",
        "rich_text",
        "number",
        "select",
        "multi_select",
        "date",
        "url",
        "email",
        "phone_number",
        "checkbox",
        "relation",
        "people",
    }
)
READ_ONLY_TYPES = frozenset({"created_time", "last_edited_time", "created_by", "last_edited_by"})
SCHEMA_TYPES = WRITABLE_TYPES | READ_ONLY_TYPES

BOT_USER = {"object": "user", "id": "a0b1c2d3-0000-4000-8000-00000000b07e"}
PERSON_USER = {"object": "user", "id": "a0b1c2d3-0000-4000-8000-0000000fe150"}
_USERS_BY_ID = {BOT_USER["id"]: BOT_USER, PERSON_USER["id"]: PERSON_USER}


def _user_ref(user_id: str) -> JSON:
    """A partial user object as pages and blocks carry it in ``created_by`` / ``last_edited_by``."""
    return dict(_USERS_BY_ID.get(user_id, {"object": "user", "id": user_id}))


TEXT_FILTER_OPS = frozenset(
    {"equals", "does_not_equal", "contains", "does_not_contain", "starts_with", "ends_with", "is_empty", "is_not_empty"}
)
NUMBER_FILTER_OPS = frozenset(
    {
        "equals",
        "does_not_equal",
        "greater_than",
        "less_than",
        "greater_than_or_equal_to",
        "less_than_or_equal_to",
        "is_empty",
        "is_not_empty",
    }
)
DATE_FILTER_OPS = frozenset({"equals", "before", "after", "on_or_before", "on_or_after", "is_empty", "is_not_empty"})
FILTER_OPS: dict[str, frozenset[str]] = {
    "title": TEXT_FILTER_OPS,
    "rich_text": TEXT_FILTER_OPS,
    "url": TEXT_FILTER_OPS,
    "email": TEXT_FILTER_OPS,
    "phone_number": TEXT_FILTER_OPS,
    "number": NUMBER_FILTER_OPS,
    "select": frozenset({"equals", "does_not_equal", "is_empty", "is_not_empty"}),
    "multi_select": frozenset({"contains", "does_not_contain", "is_empty", "is_not_empty"}),
    "relation": frozenset({"contains", "does_not_contain", "is_empty", "is_not_empty"}),
    "people": frozenset({"contains", "does_not_contain", "is_empty", "is_not_empty"}),
    "checkbox": frozenset({"equals", "does_not_equal"}),
    "date": DATE_FILTER_OPS,
    "created_time": DATE_FILTER_OPS,
    "last_edited_time": DATE_FILTER_OPS,
}


# ---- errors ----------------------------------------------------------------------------------------------------
def validation_error(message: str) -> ApiError:
    return ApiError(400, "validation_error", message)


def body_invalid(path: str, expectation: str, value: Any) -> ApiError:
    return validation_error(f"body failed validation: {path} should be {expectation}, instead was `{_show(value)}`.")


def body_missing(path: str) -> ApiError:
    return validation_error(f"body failed validation: {path} should be defined, instead was `undefined`.")


def too_long(path: str, limit: int, actual: int) -> ApiError:
    return validation_error(f"body failed validation: {path}.length should be ≤ `{limit}`, instead was `{actual}`.")


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(
        404,
        "object_not_found",
        f"Could not find {kind} with ID: {object_id}. "
        "Make sure the relevant pages and databases are shared with your integration.",
    )


def archived_error() -> ApiError:
    return validation_error("Can't edit block that is archived. You must unarchive the block before editing.")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


# ---- rate limit ------------------------------------------------------------------------------------------------
class TokenBucket:
    """``rate_per_s`` tokens a second on average, at most ``burst`` saved up; one token per request."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst ≥ 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """Take a token: 0.0 when granted, else the seconds until one will be there."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s


# ---- stored objects --------------------------------------------------------------------------------------------
@dataclass
class PropertySchema:
    id: str
    name: str
    type: str
    config: JSON  # the type-specific configuration in response form (e.g. {"options": [...]} for select)
    description: str | None = None


@dataclass
class DataSource:
    id: str
    database_id: str
    title: list[JSON]
    properties: dict[str, PropertySchema]  # by property id, in schema order
    created: float
    edited: float
    in_trash: bool = False

    def by_name(self, name: str) -> PropertySchema | None:
        return next((p for p in self.properties.values() if p.name == name), None)

    def lookup(self, name_or_id: str) -> PropertySchema | None:
        return self.by_name(name_or_id) or self.properties.get(name_or_id)

    def title_property(self) -> PropertySchema:
        return next(p for p in self.properties.values() if p.type == "title")


@dataclass
class Database:
    id: str
    parent: JSON
    title: list[JSON]
    description: list[JSON]
    is_inline: bool
    data_source_ids: list[str]
    created: float
    edited: float
    in_trash: bool = False


@dataclass
class Page:
    id: str
    parent: JSON  # response form: data_source_id (+ database_id), page_id or workspace
    values: dict[str, Any]  # by property id, stored form (see NotionEmulator._parse_value)
    created: float
    edited: float
    seq: int
    in_trash: bool = False
    created_by: str = BOT_USER["id"]
    last_edited_by: str = BOT_USER["id"]


@dataclass
class Block:
    id: str
    parent_id: str
    parent_type: str  # "page_id" or "block_id"
    type: str
    payload: JSON  # the type object in response form, without children
    created: float
    edited: float
    in_trash: bool = False
    created_by: str = BOT_USER["id"]
    last_edited_by: str = BOT_USER["id"]


@dataclass
class BlockSpec:
    """A validated block of a request, before it gets an id."""

    type: str
    payload: JSON
    children: list[BlockSpec] = field(default_factory=list)


# ---- the emulator ----------------------------------------------------------------------------------------------
class NotionEmulator(Emulator):
    """The Notion API over HTTP; ``token`` (the integration) and ``person_token`` (a person) are accepted."""

    name = "notion"

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        rate_per_s: float | None = 3.0,
        burst: int = 10,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.token = token
        self.person_token = PERSON_TOKEN
        self._actor = BOT_USER["id"]  # who makes the request being handled (set under the lock)
        self._dirty_pages: set[str] = set()
        self._clock = clock
        self._monotonic = monotonic
        self._rate_per_s: float | None = None
        self._burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self.set_rate_limit(rate_per_s, burst)
        self._seq = itertools.count()
        self.root_page_id = str(uuid.uuid4())
        self.reset()
        self._register_routes()

    # ---- state -------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.databases: dict[str, Database] = {}
            self.data_sources: dict[str, DataSource] = {}
            self.pages: dict[str, Page] = {}
            self.blocks: dict[str, Block] = {}
            self.children: dict[str, list[str]] = {}  # parent (page or block) → ordered child ids
            self.page_versions: Versions[Page] = Versions()  # for queries under read lag
            self.users: dict[str, JSON] = {
                BOT_USER["id"]: {**BOT_USER, "type": "bot", "name": "Emulator bot", "avatar_url": None, "bot": {}},
                PERSON_USER["id"]: {
                    **PERSON_USER,
                    "type": "person",
                    "name": "Emulator Scientist",
                    "avatar_url": None,
                    "person": {"email": "scientist@example.org"},
                },
            }
            self._buckets.clear()
            self._add_workspace_page(self.root_page_id, "Emulator workspace")

    def create_workspace_page(self, title: str) -> str:
        """A top-level page (as a person would share with the integration); returns its id."""
        with self.lock:
            return self._add_workspace_page(str(uuid.uuid4()), title)

    def create_pages(self, data_source_id: str, rows: list[JSON]) -> list[str]:
        """Create pages in-process, as ``POST /v1/pages`` would (same validation, no HTTP, no rate limit), for
        tests that need thousands (the 10,000-result query cap); ``rows`` are ``properties`` request bodies."""
        ids = []
        with self.lock:
            for row in rows:
                body = {"parent": {"data_source_id": data_source_id}, "properties": row}
                request = Request("POST", "/v1/pages", {}, {}, {}, body, b"")
                self._dirty_pages.clear()
                ids.append(str(self._create_page(request)["id"]))
                self._record_versions()
        return ids

    def _add_workspace_page(self, page_id: str, title: str) -> str:
        now = self._clock()
        self.pages[page_id] = Page(
            page_id,
            {"type": "workspace", "workspace": True},
            {"title": _rich_text_plain(title)},
            now,
            now,
            next(self._seq),
        )
        self.children[page_id] = []
        return page_id

    def set_rate_limit(self, rate_per_s: float | None, burst: int | None = None) -> None:
        """``rate_per_s=None`` switches the limiter off; buckets start full again."""
        if rate_per_s is not None and (not isinstance(rate_per_s, int | float) or rate_per_s <= 0):
            raise ValueError("rate_per_s must be a positive number or null")
        if burst is not None and (not isinstance(burst, int) or burst < 1):
            raise ValueError("burst must be an integer ≥ 1")
        with self.lock:
            self._rate_per_s = None if rate_per_s is None else float(rate_per_s)
            self._burst = burst if burst is not None else self._burst
            self._buckets.clear()

    def rate_limit(self) -> JSON:
        return {"rate_per_s": self._rate_per_s, "burst": self._burst}

    def state(self) -> Any:
        """Everything stored, for assertions: databases, data sources (schemas), pages and their block trees."""
        with self.lock:
            pages: JSON = {}
            for page in self.pages.values():
                ds = self._page_data_source(page)
                raw = self._render_properties(page, ds, truncate=False)
                pages[page.id] = {
                    "id": page.id,
                    "parent": page.parent,
                    "data_source_id": page.parent.get("data_source_id"),
                    "database_id": page.parent.get("database_id"),
                    "title": _plain(page.values.get(ds.title_property().id if ds else "title") or []),
                    "in_trash": page.in_trash,
                    "created_time": _iso(page.created),
                    "last_edited_time": _iso(page.edited),
                    "created_by": page.created_by,
                    "last_edited_by": page.last_edited_by,
                    "properties": {name: _simplify(value) for name, value in raw.items()},
                    "raw_properties": raw,
                    "blocks": self._block_tree(page.id),
                }
            return {
                "root_page_id": self.root_page_id,
                "rate_limit": self.rate_limit(),
                "databases": {
                    db.id: {
                        "id": db.id,
                        "title": _plain(db.title),
                        "parent": db.parent,
                        "data_source_ids": list(db.data_source_ids),
                        "in_trash": db.in_trash,
                    }
                    for db in self.databases.values()
                },
                "data_sources": {
                    ds.id: {
                        **self._render_data_source(ds),
                        "page_ids": [p for p, entry in pages.items() if entry["data_source_id"] == ds.id],
                    }
                    for ds in self.data_sources.values()
                },
                "pages": pages,
                "trashed_block_ids": [b.id for b in self.blocks.values() if b.in_trash],
            }

    def pages_of(self, container_id: str, include_trashed: bool = False) -> list[JSON]:
        """The state entries of the pages in a database or data source (by either id), in creation order."""
        with self.lock:
            state = self.state()
            db = state["databases"].get(container_id)
            sources = set(db["data_source_ids"]) if db else {container_id}
            if not db and container_id not in state["data_sources"]:
                raise KeyError(f"no database or data source {container_id}")
            return [
                entry
                for entry in state["pages"].values()
                if entry["data_source_id"] in sources and (include_trashed or not entry["in_trash"])
            ]

    def _block_tree(self, parent_id: str) -> list[JSON]:
        tree = []
        for child_id in self.children.get(parent_id, []):
            block = self.blocks.get(child_id)
            if block is None or block.in_trash:
                continue
            node: JSON = {
                "id": block.id,
                "type": block.type,
                "text": _plain(block.payload.get("rich_text", [])),
                "created_by": block.created_by,
                "last_edited_by": block.last_edited_by,
            }
            if block.type == "code":
                node["language"] = block.payload["language"]
            node["children"] = self._block_tree(block.id)
            tree.append(node)
        return tree

    # ---- base-class hooks ----------------------------------------------------------------------------------------
    def error_body(self, error: ApiError) -> Any:
        return {
            "object": "error",
            "status": error.status,
            "code": error.code,
            "message": error.message,
            "request_id": str(uuid.uuid4()),
        }

    def fault_error(self, outcome: str) -> ApiError:
        if outcome == "429":
            return ApiError(
                429,
                "rate_limited",
                "You have been rate limited. Please try again in a few minutes.",
                {"Retry-After": _retry_after_header(self.faults.retry_after_s)},
            )
        if outcome == "503":
            return ApiError(503, "service_unavailable", "Notion is unavailable, please try again later.")
        return ApiError(500, "internal_server_error", "Unexpected error occurred.")

    def check_request(self, request: Request) -> None:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or token not in (self.token, self.person_token):
            raise ApiError(401, "unauthorized", "API token is invalid.")
        version = request.headers.get("notion-version")
        if version is None:
            raise ApiError(
                400,
                "missing_version",
                "Notion-Version header failed validation: Notion-Version header should be defined, "
                "instead was `undefined`.",
            )
        if version not in NOTION_VERSIONS:
            raise validation_error(
                "Notion-Version header failed validation: Notion-Version header should be one of "
                f"{', '.join(NOTION_VERSIONS)}, instead was `{version}`."
            )
        if len(request.raw_body) > REQUEST_BYTES_MAX:
            raise validation_error(
                f"body failed validation: the request body is {len(request.raw_body)} bytes; "
                f"a request may be at most 500KB ({REQUEST_BYTES_MAX} bytes) overall."
            )
        with self.lock:
            if self._rate_per_s is None:
                return
            bucket = self._buckets.get(token)
            if bucket is None:
                bucket = self._buckets[token] = TokenBucket(self._rate_per_s, self._burst, self._monotonic)
            wait = bucket.take()
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                "You have been rate limited. Please try again in a few minutes.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def _control(self, method: str, path: str, raw: bytes) -> Response:
        try:
            if path == "/_emulator/rate_limit" and method == "POST":
                values = json.loads(raw or b"{}")
                if not isinstance(values, dict) or set(values) - {"rate_per_s", "burst"}:
                    raise ValueError("expected {'rate_per_s': number|null, 'burst': int}")
                self.set_rate_limit(values.get("rate_per_s"), values.get("burst"))
                return Response(200, self.rate_limit())
            if path == "/_emulator/rate_limit" and method == "GET":
                return Response(200, self.rate_limit())
            if path == "/_emulator/pages" and method == "POST":
                values = json.loads(raw or b"{}")
                title = values.get("title", "Untitled") if isinstance(values, dict) else "Untitled"
                return Response(200, {"id": self.create_workspace_page(str(title))})
        except (TypeError, ValueError) as error:
            return self._error(ApiError(400, "validation_error", str(error)))
        return super()._control(method, path, raw)

    # ---- routes ------------------------------------------------------------------------------------------------
    def _register_routes(self) -> None:
        table: list[tuple[str, str, Callable[[Request], JSON]]] = [
            ("GET", "/v1/users/me", self._users_me),
            ("POST", "/v1/databases", self._create_database),
            ("GET", "/v1/databases/{database_id}", self._retrieve_database),
            ("PATCH", "/v1/databases/{database_id}", self._update_database),
            ("POST", "/v1/data_sources", self._create_data_source),
            ("GET", "/v1/data_sources/{data_source_id}", self._retrieve_data_source),
            ("PATCH", "/v1/data_sources/{data_source_id}", self._update_data_source),
            ("POST", "/v1/data_sources/{data_source_id}/query", self._query_data_source),
            ("POST", "/v1/search", self._search),
            ("POST", "/v1/pages", self._create_page),
            ("GET", "/v1/pages/{page_id}", self._retrieve_page),
            ("PATCH", "/v1/pages/{page_id}", self._update_page),
            ("GET", "/v1/pages/{page_id}/properties/{property_id}", self._retrieve_page_property),
            ("GET", "/v1/blocks/{block_id}", self._retrieve_block),
            ("PATCH", "/v1/blocks/{block_id}", self._update_block),
            ("DELETE", "/v1/blocks/{block_id}", self._delete_block),
            ("GET", "/v1/blocks/{block_id}/children", self._list_children),
            ("PATCH", "/v1/blocks/{block_id}/children", self._append_children),
        ]
        for method, pattern, handler in table:
            self.add_route(method, pattern, self._wrap(handler))
        # Anything else is not part of this API version (databases/{id}/query is gone in 2025-09-03).
        for method in ("GET", "POST", "PATCH", "DELETE", "PUT"):
            self._routes.append((method, re.compile("^/.*$"), self._invalid_url))

    def is_write(self, method: str, path: str) -> bool:
        """Page create / update / trash and block append / update / delete: the apply-then-fail candidates."""
        if method == "POST":
            return path == "/v1/pages"
        if method == "PATCH":
            return path.startswith(("/v1/pages/", "/v1/blocks/"))
        return method == "DELETE" and path.startswith("/v1/blocks/")

    def _wrap(self, handler: Callable[[Request], JSON]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            with self.lock:
                self._actor = PERSON_USER["id"] if token == self.person_token else BOT_USER["id"]
                self._dirty_pages.clear()
                try:
                    body = handler(request)
                except ApiError:
                    raise
                except Exception as error:  # an emulator bug must show as an error, not a dropped connection
                    message = f"emulator bug: {type(error).__name__}: {error}"
                    raise ApiError(500, "internal_server_error", message) from error
                finally:
                    self._record_versions()
            return Response(200, {**body, "request_id": str(uuid.uuid4())})

        return run

    # ---- versions for lagged reads -----------------------------------------------------------------------
    def _touch(self, page: Page) -> None:
        """A page was edited by the request's user: its last-edited time and user move, and a version is kept."""
        page.edited = self._clock()
        page.last_edited_by = self._actor
        self._dirty_pages.add(page.id)

    def _record_versions(self) -> None:
        now = self._clock()
        for page_id in sorted(self._dirty_pages):
            page = self.pages.get(page_id)
            if page is not None:
                self.page_versions.record(page_id, now, copy.deepcopy(page))
        self._dirty_pages.clear()

    def _page_as_of(self, page: Page, lag_s: float) -> Page | None:
        """The page as a read ``lag_s`` seconds late sees it (``None``: not created yet)."""
        if lag_s <= 0:
            return page
        known, old = self.page_versions.as_of(page.id, self._clock() - lag_s)
        return old if known else page

    def _touch_page_of(self, block_id: str) -> None:
        """An edit of a block is an edit of the page it sits on (its last-edited time and user move)."""
        parent = block_id
        for _ in range(64):
            block = self.blocks.get(parent)
            if block is None:
                break
            parent = block.parent_id
        page = self.pages.get(parent)
        if page is not None:
            self._touch(page)

    def _invalid_url(self, request: Request) -> Response:
        raise ApiError(400, "invalid_request_url", "Invalid request URL.")

    # ---- users -------------------------------------------------------------------------------------------------
    def _users_me(self, request: Request) -> JSON:
        return dict(self.users[self._actor])

    # ---- databases and data sources ------------------------------------------------------------------------
    def _create_database(self, request: Request) -> JSON:
        body = _body(request)
        parent = body.get("parent")
        if parent is None:
            raise body_missing("body.parent")
        if not isinstance(parent, dict) or "page_id" not in parent:
            raise body_invalid("body.parent.page_id", "defined", parent)
        parent_id = _norm_id(parent["page_id"], "body.parent.page_id")
        parent_page = self._live_page(parent_id)
        title = _parse_rich_text(body.get("title", []), "body.title")
        description = _parse_rich_text(body.get("description", []), "body.description")
        initial = body.get("initial_data_source", {})
        if not isinstance(initial, dict):
            raise body_invalid("body.initial_data_source", "an object", initial)
        props = initial.get("properties", {"Name": {"title": {}}})
        now = self._clock()
        db = Database(
            str(uuid.uuid4()),
            {"type": "page_id", "page_id": parent_page.id},
            title,
            description,
            bool(body.get("is_inline", False)),
            [],
            now,
            now,
        )
        ds = DataSource(str(uuid.uuid4()), db.id, title, {}, now, now)
        self._apply_schema(ds, props, "body.initial_data_source.properties", creating=True)
        db.data_source_ids.append(ds.id)
        self.databases[db.id] = db
        self.data_sources[ds.id] = ds
        self.children.setdefault(parent_page.id, []).append(db.id)
        return self._render_database(db)

    def _retrieve_database(self, request: Request) -> JSON:
        return self._render_database(self._database(request.params["database_id"]))

    def _update_database(self, request: Request) -> JSON:
        db = self._database(request.params["database_id"])
        body = _body(request)
        if "title" in body:
            db.title = _parse_rich_text(body["title"], "body.title")
        if "description" in body:
            db.description = _parse_rich_text(body["description"], "body.description")
        trash = _trash_flag(body)
        if trash is not None:
            db.in_trash = trash
        db.edited = self._clock()
        return self._render_database(db)

    def _create_data_source(self, request: Request) -> JSON:
        body = _body(request)
        parent = body.get("parent")
        if not isinstance(parent, dict) or "database_id" not in parent:
            raise body_missing("body.parent.database_id")
        db = self._database(parent["database_id"])
        props = body.get("properties")
        if props is None:
            raise body_missing("body.properties")
        now = self._clock()
        title = _parse_rich_text(body.get("title", []), "body.title")
        ds = DataSource(str(uuid.uuid4()), db.id, title, {}, now, now)
        self._apply_schema(ds, props, "body.properties", creating=True)
        db.data_source_ids.append(ds.id)
        self.data_sources[ds.id] = ds
        return self._render_data_source(ds)

    def _retrieve_data_source(self, request: Request) -> JSON:
        return self._render_data_source(self._data_source(request.params["data_source_id"]))

    def _update_data_source(self, request: Request) -> JSON:
        ds = self._data_source(request.params["data_source_id"])
        body = _body(request)
        if "title" in body:
            ds.title = _parse_rich_text(body["title"], "body.title")
        if "properties" in body:
            self._apply_schema(ds, body["properties"], "body.properties", creating=False)
        trash = _trash_flag(body)
        if trash is not None:
            ds.in_trash = trash
        ds.edited = self._clock()
        return self._render_data_source(ds)

    def _apply_schema(self, ds: DataSource, props: Any, path: str, creating: bool) -> None:
        """Add, change, rename (``{"name": …}``) or remove (``null``) properties, all or nothing."""
        if not isinstance(props, dict):
            raise body_invalid(path, "an object", props)
        staged = {
            pid: PropertySchema(p.id, p.name, p.type, json.loads(json.dumps(p.config)), p.description)
            for pid, p in ds.properties.items()
        }
        reverse: list[tuple[str, PropertySchema]] = []  # dual relations to add on the other data source
        for key, spec in props.items():
            p = f"{path}.{key}"
            existing = None if creating else next((s for s in staged.values() if s.name == key or s.id == key), None)
            if spec is None:
                if existing is None:
                    raise validation_error(f"{key} is not a property that exists.")
                if existing.type == "title":
                    raise validation_error("Cannot delete the title property.")
                del staged[existing.id]
                continue
            if not isinstance(spec, dict):
                raise body_invalid(p, "an object", spec)
            new_name = spec.get("name", key if existing is None else existing.name)
            if not isinstance(new_name, str) or not new_name.strip():
                raise body_invalid(f"{p}.name", "a non-empty string", new_name)
            kinds = [k for k in spec if k in SCHEMA_TYPES or k in ("status", "formula", "rollup", "files")]
            if spec.get("type") is not None and spec["type"] not in kinds:
                kinds.append(spec["type"])
            if not kinds:
                if existing is None:
                    raise body_invalid(p, 'a property configuration such as `{"rich_text": {}}`', spec)
                existing.name = new_name  # a rename only
                if "description" in spec:
                    existing.description = spec["description"]
                continue
            if len(kinds) > 1:
                raise body_invalid(p, "exactly one property type", spec)
            kind = kinds[0]
            if kind not in SCHEMA_TYPES:
                raise validation_error(f"body failed validation: {p}.{kind} is not supported by the emulator.")
            config = self._parse_schema_config(ds, kind, spec.get(kind, {}), f"{p}.{kind}", existing)
            if existing is not None and existing.type == "title" and kind != "title":
                raise validation_error("Cannot change the type of the title property.")
            if existing is not None:
                existing.name, existing.type, existing.config = new_name, kind, config
                if "description" in spec:
                    existing.description = spec["description"]
                target = existing
            else:
                if kind == "title" and any(s.type == "title" for s in staged.values()):
                    raise validation_error("A data source can have only one title property.")
                pid = "title" if kind == "title" else _property_id(staged)
                target = PropertySchema(pid, new_name, kind, config, spec.get("description"))
                staged[pid] = target
            if (
                kind == "relation"
                and config["type"] == "dual_property"
                and not config["dual_property"].get("synced_property_id")
            ):
                reverse.append((config["data_source_id"], target))
        names = [s.name for s in staged.values()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise validation_error(f"Property names must be unique: {', '.join(duplicates)}.")
        if not any(s.type == "title" for s in staged.values()):
            raise validation_error("Title property is required: a data source must have exactly one title property.")
        ds.properties = staged
        for other_id, prop in reverse:
            other = self.data_sources.get(other_id) or (ds if other_id == ds.id else None)
            assert other is not None
            db_title = _plain(self.databases[ds.database_id].title) if ds.database_id in self.databases else ""
            synced_name = (
                prop.config["dual_property"].get("synced_property_name") or f"Related to {db_title} ({prop.name})"
            )
            rid = _property_id(other.properties)
            other.properties[rid] = PropertySchema(
                rid,
                synced_name,
                "relation",
                {
                    "database_id": ds.database_id,
                    "data_source_id": ds.id,
                    "type": "dual_property",
                    "dual_property": {"synced_property_id": prop.id, "synced_property_name": prop.name},
                },
            )
            prop.config["dual_property"] = {"synced_property_id": rid, "synced_property_name": synced_name}

    def _parse_schema_config(
        self, ds: DataSource, kind: str, spec: Any, path: str, existing: PropertySchema | None
    ) -> JSON:
        if not isinstance(spec, dict):
            raise body_invalid(path, "an object", spec)
        if kind in ("select", "multi_select"):
            old = existing.config.get("options", []) if existing is not None and existing.type == kind else []
            options = spec.get("options")
            if options is None:
                return {"options": old}
            if not isinstance(options, list):
                raise body_invalid(f"{path}.options", "an array", options)
            result = []
            for i, option in enumerate(options):
                if not isinstance(option, dict):
                    raise body_invalid(f"{path}.options[{i}]", "an object", option)
                match = next((o for o in old if o["id"] == option.get("id") or o["name"] == option.get("name")), None)
                name = option.get("name", match["name"] if match else None)
                _check_option_name(name, f"{path}.options[{i}].name")
                color = option.get("color", match["color"] if match else COLORS[i % len(COLORS)])
                if color not in COLORS:
                    raise body_invalid(f"{path}.options[{i}].color", f"one of {list(COLORS)}", color)
                result.append(
                    {
                        "id": match["id"] if match else _option_id(),
                        "name": name,
                        "color": color,
                        "description": option.get("description"),
                    }
                )
            return {"options": result}
        if kind == "number":
            return {"format": spec.get("format", "number")}
        if kind == "relation":
            target = spec.get("data_source_id")
            if target is None:
                if "database_id" in spec:
                    raise validation_error(
                        f"body failed validation: {path}.data_source_id should be defined, instead was `undefined`. "
                        "Relations point at a data source since 2025-09-03."
                    )
                raise body_missing(f"{path}.data_source_id")
            target_id = _norm_id(target, f"{path}.data_source_id")
            found = ds if target_id == ds.id else self.data_sources.get(target_id)
            if found is None:
                raise not_found("data_source", target_id)
            target_ds = found
            if "dual_property" in spec or spec.get("type") == "dual_property":
                dual = spec.get("dual_property", {})
                if existing is not None and existing.type == "relation" and existing.config["type"] == "dual_property":
                    dual = existing.config["dual_property"]
                return {
                    "database_id": target_ds.database_id,
                    "data_source_id": target_ds.id,
                    "type": "dual_property",
                    "dual_property": {
                        "synced_property_id": dual.get("synced_property_id"),
                        "synced_property_name": dual.get("synced_property_name"),
                    },
                }
            return {
                "database_id": target_ds.database_id,
                "data_source_id": target_ds.id,
                "type": "single_property",
                "single_property": {},
            }
        return {}

    # ---- pages -------------------------------------------------------------------------------------------------
    def _create_page(self, request: Request) -> JSON:
        body = _body(request)
        for unsupported in ("content", "markdown", "template"):
            if unsupported in body:
                raise validation_error(f"body.{unsupported} is not supported by the emulator.")
        parent = body.get("parent")
        if parent is None:
            raise body_missing("body.parent")
        if not isinstance(parent, dict):
            raise body_invalid("body.parent", "an object", parent)
        props = body.get("properties", {})
        if not isinstance(props, dict):
            raise body_invalid("body.properties", "an object", props)
        children = self._parse_children(body.get("children", []), "body.children")
        now = self._clock()
        page_id = str(uuid.uuid4())
        ds: DataSource | None = None
        if "data_source_id" in parent or "database_id" in parent:
            ds = self._parent_data_source(parent)
            page = Page(
                page_id,
                {"type": "data_source_id", "data_source_id": ds.id, "database_id": ds.database_id},
                {},
                now,
                now,
                next(self._seq),
            )
            for prop in ds.properties.values():
                page.values[prop.id] = _empty_value(prop.type)
            updates = self._parse_properties(ds, props, "body.properties")
        elif "page_id" in parent:
            parent_page = self._live_page(_norm_id(parent["page_id"], "body.parent.page_id"))
            page = Page(
                page_id, {"type": "page_id", "page_id": parent_page.id}, {"title": []}, now, now, next(self._seq)
            )
            updates = self._parse_plain_page_properties(props)
        else:
            raise body_invalid("body.parent", "one of `data_source_id`, `database_id`, `page_id`", parent)
        page.created_by = page.last_edited_by = self._actor
        self._dirty_pages.add(page.id)
        self.pages[page.id] = page
        self.children[page.id] = []
        if page.parent["type"] == "page_id":
            self.children.setdefault(page.parent["page_id"], []).append(page.id)
        self._write_values(page, ds, updates)
        self._insert_blocks(page.id, "page_id", children, after=None)
        return self._render_page(page)

    def _retrieve_page(self, request: Request) -> JSON:
        page = self._page(request.params["page_id"])
        seen = self._page_as_of(page, self.faults.read_by_id_lag_s)
        if seen is None:
            raise not_found("page", page.id)
        return self._render_page(seen)

    def _update_page(self, request: Request) -> JSON:
        page = self._page(request.params["page_id"])
        body = _body(request)
        trash = _trash_flag(body)
        editing = any(k in body for k in ("properties", "icon", "cover", "erase_content", "is_locked"))
        if page.in_trash and trash is not False and (editing or trash is None):
            raise archived_error()
        ds = self._page_data_source(page)
        updates: dict[str, Any] = {}
        if "properties" in body:
            props = body["properties"]
            if not isinstance(props, dict):
                raise body_invalid("body.properties", "an object", props)
            if ds is not None:
                updates = self._parse_properties(ds, props, "body.properties")
            else:
                updates = self._parse_plain_page_properties(props)
        if trash is not None:
            page.in_trash = trash
        self._write_values(page, ds, updates)
        if body.get("erase_content") is True:
            for child_id in self.children.get(page.id, []):
                if child_id in self.blocks:
                    self.blocks[child_id].in_trash = True
        self._touch(page)
        return self._render_page(page)

    def _retrieve_page_property(self, request: Request) -> JSON:
        page = self._page(request.params["page_id"])
        ds = self._page_data_source(page)
        key = request.params["property_id"]
        prop = ds.lookup(key) if ds is not None else None
        if ds is None and key == "title":
            prop = PropertySchema("title", "title", "title", {})
        if prop is None:
            raise not_found("property", key)
        value = page.values.get(prop.id, _empty_value(prop.type))
        if prop.type not in ("title", "rich_text", "relation", "people"):
            return {
                "object": "property_item",
                "id": prop.id,
                "type": prop.type,
                prop.type: self._render_value(prop, value),
            }
        items = list(value)
        start, size = _cursor_window(request, [str(i) for i in range(len(items))])
        window = items[start : start + size]
        more = start + size < len(items)
        results = []
        for item in window:
            rendered = (
                {"id": item}
                if prop.type == "relation"
                else ({"object": "user", "id": item} if prop.type == "people" else item)
            )
            results.append({"object": "property_item", "id": prop.id, "type": prop.type, prop.type: rendered})
        return {
            "object": "list",
            "results": results,
            "next_cursor": str(start + size) if more else None,
            "has_more": more,
            "type": "property_item",
            "property_item": {"id": prop.id, "next_url": None, "type": prop.type, prop.type: {}},
        }

    def _parse_plain_page_properties(self, props: JSON) -> dict[str, Any]:
        """A page under a page has only a title (``{"title": [...]}`` or ``{"title": {"title": [...]}}``)."""
        updates: dict[str, Any] = {}
        for key, value in props.items():
            if key != "title":
                raise validation_error(f"{key} is not a property that exists.")
            items = value.get("title") if isinstance(value, dict) else value
            updates["title"] = _parse_rich_text(items, "body.properties.title.title")
        return updates

    def _parse_properties(self, ds: DataSource, props: JSON, path: str) -> dict[str, Any]:
        """Validate property values against the schema; returns stored values by property id. Nothing is written."""
        updates: dict[str, Any] = {}
        new_options: list[tuple[PropertySchema, JSON]] = []
        for key, value in props.items():
            prop = ds.lookup(key)
            if prop is None:
                raise validation_error(f"{key} is not a property that exists.")
            if prop.type in READ_ONLY_TYPES:
                raise validation_error(f"{prop.name} is a read-only property ({prop.type}) and cannot be set.")
            if not isinstance(value, dict) or prop.type not in value:
                raise validation_error(f"{prop.name} is expected to be {prop.type}.")
            updates[prop.id] = self._parse_value(prop, value[prop.type], f"{path}.{key}.{prop.type}", new_options)
        self._check_relation_targets(ds, updates)
        # Only once the whole request is valid do new select names become options of the schema, as in Notion.
        for prop, option in new_options:
            if not any(o["name"] == option["name"] for o in prop.config["options"]):
                prop.config["options"].append(option)
        return updates

    def _parse_value(
        self, prop: PropertySchema, value: Any, path: str, new_options: list[tuple[PropertySchema, JSON]]
    ) -> Any:
        kind = prop.type
        if kind in ("title", "rich_text"):
            return _parse_rich_text(value, path)
        if kind == "number":
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise body_invalid(path, "a number or `null`", value)
            return value
        if kind == "checkbox":
            if not isinstance(value, bool):
                raise body_invalid(path, "a boolean", value)
            return value
        if kind in ("url", "email", "phone_number"):
            if value is None:
                return None
            if not isinstance(value, str):
                raise body_invalid(path, "a string or `null`", value)
            limit = {"url": URL_MAX, "email": EMAIL_MAX, "phone_number": PHONE_MAX}[kind]
            if len(value) > limit:
                raise too_long(path, limit, len(value))
            return value or None
        if kind == "select":
            if value is None:
                return None
            return self._option(prop, value, path, new_options)
        if kind == "multi_select":
            if not isinstance(value, list):
                raise body_invalid(path, "an array", value)
            if len(value) > ARRAY_MAX:
                raise too_long(path, ARRAY_MAX, len(value))
            ids: list[str] = []
            for i, item in enumerate(value):
                option_id = self._option(prop, item, f"{path}[{i}]", new_options)
                if option_id not in ids:
                    ids.append(option_id)
            return ids
        if kind == "date":
            if value is None:
                return None
            if not isinstance(value, dict):
                raise body_invalid(path, "an object or `null`", value)
            if "start" not in value:
                raise body_missing(f"{path}.start")
            start = _check_date(value["start"], f"{path}.start")
            end = None if value.get("end") is None else _check_date(value["end"], f"{path}.end")
            return {"start": start, "end": end, "time_zone": value.get("time_zone")}
        if kind in ("relation", "people"):
            if not isinstance(value, list):
                raise body_invalid(path, "an array", value)
            if len(value) > ARRAY_MAX:
                raise too_long(path, ARRAY_MAX, len(value))
            ids = []
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise body_invalid(f"{path}[{i}]", "an object", item)
                if "id" not in item:
                    raise body_missing(f"{path}[{i}].id")
                ref = _norm_id(item["id"], f"{path}[{i}].id")
                if ref not in ids:
                    ids.append(ref)
            return ids
        raise validation_error(f"{prop.name} has type {kind}, which the emulator cannot write.")

    def _option(
        self, prop: PropertySchema, value: Any, path: str, new_options: list[tuple[PropertySchema, JSON]]
    ) -> str:
        if not isinstance(value, dict):
            raise body_invalid(path, "an object", value)
        options = prop.config["options"]
        if "id" in value and value.get("name") is None:
            match = next((o for o in options if o["id"] == value["id"]), None)
            if match is None:
                raise validation_error(f"body failed validation: {path}.id `{value['id']}` is not a valid option.")
            return str(match["id"])
        name = value.get("name")
        _check_option_name(name, f"{path}.name")
        staged = [o for p, o in new_options if p is prop]
        match = next((o for o in [*options, *staged] if o["name"] == name), None)
        if match is None:
            color = value.get("color") or COLORS[(len(options) + len(staged)) % len(COLORS)]
            match = {"id": _option_id(), "name": name, "color": color, "description": None}
            new_options.append((prop, match))
        return str(match["id"])

    def _check_relation_targets(self, ds: DataSource, updates: dict[str, Any]) -> None:
        for prop_id, value in updates.items():
            prop = ds.properties[prop_id]
            if prop.type != "relation":
                continue
            target_ds = prop.config["data_source_id"]
            for ref in value:
                target = self.pages.get(ref)
                if target is None or target.in_trash:
                    raise validation_error(
                        f"Could not find page with ID: {ref}. Relation `{prop.name}` needs an existing page."
                    )
                if target.parent.get("data_source_id") != target_ds:
                    raise validation_error(
                        f"Relation `{prop.name}` points at data source {target_ds}; page {ref} belongs to "
                        f"{target.parent.get('data_source_id')}."
                    )

    def _write_values(self, page: Page, ds: DataSource | None, updates: dict[str, Any]) -> None:
        for prop_id, value in updates.items():
            old = page.values.get(prop_id)
            page.values[prop_id] = value
            prop = ds.properties.get(prop_id) if ds is not None else None
            if prop is not None and prop.type == "relation" and prop.config["type"] == "dual_property":
                self._sync_dual(page, prop, set(old or []), set(value))

    def _sync_dual(self, page: Page, prop: PropertySchema, old: set[str], new: set[str]) -> None:
        """Keep the synced property on the other side of a two-way relation in step."""
        reverse_id = prop.config["dual_property"]["synced_property_id"]
        for ref in old ^ new:
            target = self.pages.get(ref)
            if target is None:
                continue
            refs = list(target.values.get(reverse_id) or [])
            if ref in new and page.id not in refs:
                refs.append(page.id)
            elif ref not in new and page.id in refs:
                refs.remove(page.id)
            target.values[reverse_id] = refs
            self._touch(target)

    # ---- queries -----------------------------------------------------------------------------------------------
    def _query_data_source(self, request: Request) -> JSON:
        ds = self._data_source(request.params["data_source_id"])
        body = _body(request)
        include_trash = body.get("in_trash", body.get("archived", False)) is True
        lag = self.faults.read_lag_s
        seen = [self._page_as_of(p, lag) for p in self.pages.values()]
        candidates = [
            p
            for p in seen
            if p is not None and p.parent.get("data_source_id") == ds.id and (include_trash or not p.in_trash)
        ]
        if body.get("result_type") == "data_source":
            candidates = []
        if "filter" in body and body["filter"] is not None:
            predicate = self._compile_filter(ds, body["filter"], "body.filter", depth=0)
            candidates = [p for p in candidates if predicate(p)]
        candidates.sort(key=lambda p: p.seq)
        sorts = body.get("sorts", [])
        if not isinstance(sorts, list):
            raise body_invalid("body.sorts", "an array", sorts)
        for i, sort in reversed(list(enumerate(sorts))):
            key, descending = self._compile_sort(ds, sort, f"body.sorts[{i}]")
            present = [p for p in candidates if key(p) is not None]
            empty = [p for p in candidates if key(p) is None]
            present.sort(key=key, reverse=descending)
            candidates = present + empty  # empty values go last either way
        page_size = _page_size(body.get("page_size"), "body.page_size")
        # One query (its filter and sorts) yields at most QUERY_RESULT_CAP results, whatever the pagination.
        capped = len(candidates) > QUERY_RESULT_CAP
        candidates = candidates[:QUERY_RESULT_CAP]
        start = 0
        cursor = body.get("start_cursor")
        if cursor is not None:
            ids = [p.id for p in candidates]
            if cursor not in ids:
                raise validation_error(f"body failed validation: body.start_cursor `{cursor}` is not a valid cursor.")
            start = ids.index(cursor)
        window = candidates[start : start + page_size]
        more = start + page_size < len(candidates)
        answer: JSON = {
            "object": "list",
            "results": [self._render_page(p) for p in window],
            "next_cursor": candidates[start + page_size].id if more else None,
            "has_more": more,
            "type": "page_or_data_source",
            "page_or_data_source": {},
        }
        if capped:
            answer["request_status"] = {"type": "incomplete", "incomplete_reason": "query_result_limit_reached"}
        return answer

    def _search(self, request: Request) -> JSON:
        """``POST /v1/search`` (https://developers.notion.com/reference/post-search): pages and data sources whose
        title contains ``query`` (any case), ``filter: {"property": "object", "value": "page"|"data_source"}``,
        ``sort: {"timestamp": "last_edited_time", "direction"}``, paginated. Pages are seen under ``read_lag_s``
        like queries: "Search indexing is not immediate"
        (https://developers.notion.com/reference/search-optimizations-and-limitations).
        """
        body = _body(request)
        needle = body.get("query") or ""
        if not isinstance(needle, str):
            raise body_invalid("body.query", "a string", needle)
        kinds = {"page", "data_source"}
        flt = body.get("filter")
        if flt is not None:
            if not isinstance(flt, dict) or flt.get("property") != "object" or flt.get("value") not in kinds:
                raise body_invalid("body.filter", '`{"property": "object", "value": "page" | "data_source"}`', flt)
            kinds = {flt["value"]}
        found: list[tuple[float, int, JSON]] = []
        if "page" in kinds:
            for page in self.pages.values():
                seen = self._page_as_of(page, self.faults.read_lag_s)
                if seen is None or seen.in_trash or seen.parent.get("type") == "workspace":
                    continue
                ds = self._page_data_source(seen)
                title = _plain(seen.values.get(ds.title_property().id if ds else "title") or [])
                if needle.lower() in title.lower():
                    found.append((seen.edited, seen.seq, self._render_page(seen)))
        if "data_source" in kinds:
            for i, source in enumerate(self.data_sources.values()):
                if not source.in_trash and needle.lower() in _plain(source.title).lower():
                    found.append((source.edited, -len(self.data_sources) + i, self._render_data_source(source)))
        sort = body.get("sort")
        if sort is not None:
            if not isinstance(sort, dict) or sort.get("timestamp") != "last_edited_time":
                raise body_invalid("body.sort.timestamp", "`last_edited_time`", sort)
            found.sort(key=lambda f: (f[0], f[1]), reverse=sort.get("direction", "descending") == "descending")
        else:
            found.sort(key=lambda f: f[1])
        results = [f[2] for f in found]
        page_size = _page_size(body.get("page_size"), "body.page_size")
        ids = [str(r["id"]) for r in results]
        cursor = body.get("start_cursor")
        start = 0
        if cursor is not None:
            if cursor not in ids:
                raise validation_error(f"body failed validation: body.start_cursor `{cursor}` is not a valid cursor.")
            start = ids.index(cursor)
        more = start + page_size < len(results)
        return {
            "object": "list",
            "results": results[start : start + page_size],
            "next_cursor": ids[start + page_size] if more else None,
            "has_more": more,
            "type": "page_or_data_source",
            "page_or_data_source": {},
        }

    def _compile_filter(self, ds: DataSource, spec: Any, path: str, depth: int) -> Callable[[Page], bool]:
        if not isinstance(spec, dict):
            raise body_invalid(path, "an object", spec)
        for combinator in ("and", "or"):
            if combinator in spec:
                if depth >= 2:
                    raise validation_error(
                        f"body failed validation: {path}.{combinator} is nested too deeply; "
                        "compound filters can be nested at most two levels."
                    )
                parts = spec[combinator]
                if not isinstance(parts, list):
                    raise body_invalid(f"{path}.{combinator}", "an array", parts)
                if len(parts) > ARRAY_MAX:
                    raise too_long(f"{path}.{combinator}", ARRAY_MAX, len(parts))
                preds = [
                    self._compile_filter(ds, part, f"{path}.{combinator}[{i}]", depth + 1)
                    for i, part in enumerate(parts)
                ]
                if combinator == "and":
                    return lambda page: all(pred(page) for pred in preds)
                return lambda page: any(pred(page) for pred in preds)
        if "timestamp" in spec:
            kind = spec["timestamp"]
            if kind not in ("created_time", "last_edited_time"):
                raise body_invalid(f"{path}.timestamp", "`created_time` or `last_edited_time`", kind)
            condition = spec.get(kind)
            op, operand = _filter_condition(condition, FILTER_OPS[kind], f"{path}.{kind}")

            def stamp(page: Page) -> Any:
                return _iso(page.created if kind == "created_time" else page.edited)

            return lambda page: _match(kind, op, operand, stamp(page))
        if "property" not in spec:
            raise body_invalid(path, "a property, timestamp or compound (`and`/`or`) filter", spec)
        prop = ds.lookup(str(spec["property"]))
        if prop is None:
            raise validation_error(f"Could not find property with name or id: {spec['property']}")
        type_keys = [k for k in spec if k in FILTER_OPS or k in ("status", "formula", "rollup", "files", "unique_id")]
        if prop.type not in spec:
            wrong = type_keys[0] if type_keys else prop.type
            raise validation_error(
                f"body failed validation: {path}.{prop.type} should be defined, instead was `undefined`."
                + (f" The filter uses `{wrong}` but {prop.name} is a {prop.type} property." if type_keys else "")
            )
        op, operand = _filter_condition(spec[prop.type], FILTER_OPS[prop.type], f"{path}.{prop.type}")
        if prop.type in ("relation", "people") and op in ("contains", "does_not_contain"):
            operand = _norm_id(operand, f"{path}.{prop.type}.{op}")

        def value_of(page: Page) -> Any:
            stored = page.values.get(prop.id, _empty_value(prop.type))
            if prop.type == "created_time":
                return _iso(page.created)
            if prop.type == "last_edited_time":
                return _iso(page.edited)
            if prop.type in ("title", "rich_text"):
                return _plain(stored)
            if prop.type == "select":
                return _option_name(prop, stored)
            if prop.type == "multi_select":
                return [_option_name(prop, o) for o in stored]
            if prop.type == "date":
                return None if stored is None else stored["start"]
            return stored

        return lambda page: _match(prop.type, op, operand, value_of(page))

    def _compile_sort(self, ds: DataSource, spec: Any, path: str) -> tuple[Callable[[Page], Any], bool]:
        if not isinstance(spec, dict):
            raise body_invalid(path, "an object", spec)
        direction = spec.get("direction", "ascending")
        if direction not in ("ascending", "descending"):
            raise body_invalid(f"{path}.direction", "`ascending` or `descending`", direction)
        descending = direction == "descending"
        if "timestamp" in spec:
            kind = spec["timestamp"]
            if kind == "created_time":
                return (lambda p: (p.created, p.seq)), descending
            if kind == "last_edited_time":
                return (lambda p: (p.edited, p.seq)), descending
            raise body_invalid(f"{path}.timestamp", "`created_time` or `last_edited_time`", kind)
        if "property" not in spec:
            raise body_missing(f"{path}.property")
        prop = ds.lookup(str(spec["property"]))
        if prop is None:
            raise validation_error(f"Could not find sort property with name or id: {spec['property']}")

        def key(page: Page) -> Any:
            stored = page.values.get(prop.id, _empty_value(prop.type))
            if prop.type in ("title", "rich_text"):
                text = _plain(stored)
                return text.lower() if text else None
            if prop.type == "select":
                ids = [o["id"] for o in prop.config["options"]]
                return ids.index(stored) if stored in ids else None
            if prop.type == "multi_select":
                return ",".join(_option_name(prop, o) or "" for o in stored) or None
            if prop.type == "date":
                return None if stored is None else stored["start"]
            if prop.type == "checkbox":
                return int(stored)
            if prop.type in ("relation", "people"):
                return len(stored) or None
            if prop.type == "created_time":
                return page.created
            if prop.type == "last_edited_time":
                return page.edited
            return stored

        return key, descending

    # ---- blocks ------------------------------------------------------------------------------------------------
    def _retrieve_block(self, request: Request) -> JSON:
        block_id = _norm_id(request.params["block_id"], "path.block_id")
        return self._render_child(block_id)

    def _delete_block(self, request: Request) -> JSON:
        block_id = _norm_id(request.params["block_id"], "path.block_id")
        if block_id in self.pages:
            page = self.pages[block_id]
            if page.in_trash:
                raise archived_error()
            page.in_trash = True
            self._touch(page)
            return self._render_child(block_id)
        if block_id in self.databases:
            self.databases[block_id].in_trash = True
            return self._render_child(block_id)
        block = self.blocks.get(block_id)
        if block is None:
            raise not_found("block", block_id)
        if block.in_trash:
            raise archived_error()
        block.in_trash = True
        block.edited = self._clock()
        block.last_edited_by = self._actor
        self._touch_page_of(block.id)
        return self._render_block(block)

    def _update_block(self, request: Request) -> JSON:
        """``PATCH /v1/blocks/{id}``: the type object's fields (e.g. ``rich_text``, ``checked``), or ``in_trash``.

        https://developers.notion.com/reference/update-a-block: the request names the block's type with the new
        values; the type itself cannot change, and children are not set here (append them).
        """
        block_id = _norm_id(request.params["block_id"], "path.block_id")
        block = self.blocks.get(block_id)
        if block is None:
            raise not_found("block", block_id)
        body = _body(request)
        trash = _trash_flag(body)
        given = [k for k in body if k in BLOCK_TYPES]
        if block.in_trash and trash is not False:
            raise archived_error()
        if given:
            if given != [block.type]:
                raise validation_error(
                    f"body failed validation: the block is a {block.type}; it cannot be updated as {given[0]}."
                )
            fields = body[block.type]
            if not isinstance(fields, dict) or "children" in fields:
                raise body_invalid(f"body.{block.type}", "an object without `children`", fields)
            if (
                block.type == "table"
                and fields.get("table_width", block.payload["table_width"]) != (block.payload["table_width"])
            ):
                raise validation_error("body failed validation: body.table.table_width cannot be changed.")
            merged = {**block.payload, **fields}
            spec = self._parse_block({block.type: merged}, "body", depth=1, counter=[0], updating=True)
            if block.type == "table_row":
                parent = self.blocks[block.parent_id]
                self._check_rows([spec], parent.payload["table_width"], "body")
            block.payload = spec.payload
        if trash is not None:
            block.in_trash = trash
        block.edited = self._clock()
        block.last_edited_by = self._actor
        self._touch_page_of(block.id)
        return self._render_block(block)

    def _list_children(self, request: Request) -> JSON:
        parent_id = _norm_id(request.params["block_id"], "path.block_id")
        if parent_id not in self.pages and parent_id not in self.blocks:
            raise not_found("block", parent_id)
        ids = [c for c in self.children.get(parent_id, []) if self._is_live_child(c)]
        start, size = _cursor_window(request, ids)
        window = ids[start : start + size]
        more = start + size < len(ids)
        return {
            "object": "list",
            "results": [self._render_child(c) for c in window],
            "next_cursor": ids[start + size] if more else None,
            "has_more": more,
            "type": "block",
            "block": {},
        }

    def _append_children(self, request: Request) -> JSON:
        parent_id = _norm_id(request.params["block_id"], "path.block_id")
        body = _body(request)
        if "children" not in body:
            raise body_missing("body.children")
        if parent_id in self.pages:
            parent_type = "page_id"
            if self.pages[parent_id].in_trash:
                raise archived_error()
        elif parent_id in self.blocks:
            parent_type = "block_id"
            parent_block = self.blocks[parent_id]
            if parent_block.in_trash:
                raise archived_error()
            nestable = parent_block.type in NESTING_BLOCKS or parent_block.type == "table"
            if not nestable and not parent_block.payload.get("is_toggleable"):
                raise validation_error(f"Block type {parent_block.type} does not support children.")
        else:
            raise not_found("block", parent_id)
        specs = self._parse_children(body["children"], "body.children")
        if parent_type == "block_id" and self.blocks[parent_id].type == "table":
            self._check_rows(specs, self.blocks[parent_id].payload["table_width"], "body.children")
        else:
            self._refuse_loose_rows(specs, "body.children")
        after = body.get("after")
        position = body.get("position")
        if isinstance(position, dict):
            if position.get("type") == "after_block":
                after = (position.get("after_block") or {}).get("id")
            elif position.get("type") == "start":
                after = ""
        if after is not None and after != "":
            after = _norm_id(after, "body.after")
            if after not in self.children.get(parent_id, []) or not self._is_live_child(after):
                raise validation_error(f"body failed validation: body.after `{after}` is not a child of {parent_id}.")
        new_ids = self._insert_blocks(parent_id, parent_type, specs, after=after)
        if parent_type == "page_id":
            self._touch(self.pages[parent_id])
        else:
            self._touch_page_of(parent_id)
        return {
            "object": "list",
            "results": [self._render_block(self.blocks[i]) for i in new_ids],
            "next_cursor": None,
            "has_more": False,
            "type": "block",
            "block": {},
        }

    def _refuse_loose_rows(self, specs: list[BlockSpec], path: str) -> None:
        """A ``table_row`` lives only in a table (the table's own rows were checked when it was parsed)."""
        for i, spec in enumerate(specs):
            if spec.type == "table_row":
                raise validation_error(f"body failed validation: {path}[{i}] is a table_row outside a table.")
            if spec.type != "table":
                self._refuse_loose_rows(spec.children, f"{path}[{i}].{spec.type}.children")

    def _parse_children(self, children: Any, path: str) -> list[BlockSpec]:
        counter = [0]
        specs = self._parse_block_list(children, path, depth=1, counter=counter)
        if counter[0] > BLOCKS_PER_REQUEST_MAX:
            raise validation_error(
                f"body failed validation: a request may contain at most {BLOCKS_PER_REQUEST_MAX} blocks, "
                f"instead was {counter[0]}."
            )
        return specs

    def _parse_block_list(self, children: Any, path: str, depth: int, counter: list[int]) -> list[BlockSpec]:
        if not isinstance(children, list):
            raise body_invalid(path, "an array", children)
        if len(children) > ARRAY_MAX:
            raise too_long(path, ARRAY_MAX, len(children))
        counter[0] += len(children)
        return [self._parse_block(spec, f"{path}[{i}]", depth, counter) for i, spec in enumerate(children)]

    def _parse_block(
        self, spec: Any, path: str, depth: int, counter: list[int], *, updating: bool = False
    ) -> BlockSpec:
        if not isinstance(spec, dict):
            raise body_invalid(path, "an object", spec)
        kind = spec.get("type")
        if kind is None:
            kinds = [k for k in spec if k not in ("object", "type")]
            kind = kinds[0] if len(kinds) == 1 else None
        if kind not in BLOCK_TYPES:
            raise body_invalid(f"{path}.type", f"one of {list(BLOCK_TYPES)} (the emulator's block types)", kind)
        payload = spec.get(kind)
        if payload is None:
            raise body_missing(f"{path}.{kind}")
        if not isinstance(payload, dict):
            raise body_invalid(f"{path}.{kind}", "an object", payload)
        p = f"{path}.{kind}"
        if kind in ("equation", "table", "table_row", "bookmark", *MEDIA_BLOCKS):
            return self._parse_special_block(kind, payload, p, depth, counter, updating=updating)
        out: JSON = {}
        if kind in TEXT_BLOCKS or kind == "code":
            if "rich_text" not in payload:
                raise body_missing(f"{p}.rich_text")
            out["rich_text"] = _parse_rich_text(payload["rich_text"], f"{p}.rich_text")
        if kind == "code":
            language = payload.get("language")
            if language is None:
                raise body_missing(f"{p}.language")
            if language not in CODE_LANGUAGES:
                raise body_invalid(f"{p}.language", "a supported language such as `plain text`", language)
            out = {"caption": _parse_rich_text(payload.get("caption", []), f"{p}.caption"), **out, "language": language}
        elif kind in TEXT_BLOCKS:
            if kind.startswith("heading_"):
                out["is_toggleable"] = bool(payload.get("is_toggleable", False))
            if kind == "to_do":
                checked = payload.get("checked", False)
                if not isinstance(checked, bool):
                    raise body_invalid(f"{p}.checked", "a boolean", checked)
                out["checked"] = checked
            if kind == "callout":
                out["icon"] = payload.get("icon", {"type": "emoji", "emoji": "💡"})
            color = payload.get("color", "default")
            if color not in TEXT_COLORS:
                raise body_invalid(f"{p}.color", "a Notion color", color)
            out["color"] = color
        children: list[BlockSpec] = []
        if "children" in payload:
            nestable = kind in NESTING_BLOCKS or (kind.startswith("heading_") and out.get("is_toggleable"))
            if not nestable or depth >= 2:
                raise body_invalid(f"{p}.children", "not present", "[…]")
            children = self._parse_block_list(payload["children"], f"{p}.children", depth + 1, counter)
        return BlockSpec(kind, out, children)

    def _parse_special_block(
        self, kind: str, payload: JSON, p: str, depth: int, counter: list[int], *, updating: bool
    ) -> BlockSpec:
        """Equation, table, table row, media and bookmark blocks (see the module docstring for the rules)."""
        if "children" in payload and kind != "table":
            raise body_invalid(f"{p}.children", "not present", "[…]")
        if kind == "equation":
            expression = payload.get("expression")
            if expression is None:
                raise body_missing(f"{p}.expression")
            if not isinstance(expression, str):
                raise body_invalid(f"{p}.expression", "a string", expression)
            if len(expression) > EQUATION_MAX:
                raise too_long(f"{p}.expression", EQUATION_MAX, len(expression))
            return BlockSpec(kind, {"expression": expression})
        if kind == "table_row":
            cells = payload.get("cells")
            if cells is None:
                raise body_missing(f"{p}.cells")
            if not isinstance(cells, list):
                raise body_invalid(f"{p}.cells", "an array of rich text arrays", cells)
            return BlockSpec(kind, {"cells": [_parse_rich_text(c, f"{p}.cells[{i}]") for i, c in enumerate(cells)]})
        if kind == "table":
            return self._parse_table(payload, p, depth, counter, updating=updating)
        caption = _parse_rich_text(payload.get("caption", []), f"{p}.caption")
        if kind == "bookmark":
            url = payload.get("url")
            if not isinstance(url, str) or not url:
                raise body_missing(f"{p}.url") if url is None else body_invalid(f"{p}.url", "a URL string", url)
            if len(url) > URL_MAX:
                raise too_long(f"{p}.url", URL_MAX, len(url))
            return BlockSpec(kind, {"caption": caption, "url": url})
        source = payload.get("type", "external")
        if source != "external":
            raise body_invalid(f"{p}.type", "`external` (the emulator has no file uploads)", source)
        external = payload.get("external")
        if external is None:
            raise body_missing(f"{p}.external")
        url = external.get("url") if isinstance(external, dict) else None
        if not isinstance(url, str) or not url:
            raise body_invalid(f"{p}.external.url", "a URL string", url)
        if len(url) > URL_MAX:
            raise too_long(f"{p}.external.url", URL_MAX, len(url))
        out: JSON = {"caption": caption, "type": "external", "external": {"url": url}}
        if kind == "file":
            name = payload.get("name", url.rstrip("/").rsplit("/", 1)[-1])
            if not isinstance(name, str):
                raise body_invalid(f"{p}.name", "a string", name)
            out["name"] = name
        return BlockSpec(kind, out)

    def _parse_table(self, payload: JSON, p: str, depth: int, counter: list[int], *, updating: bool) -> BlockSpec:
        width = payload.get("table_width")
        if width is None:
            raise body_missing(f"{p}.table_width")
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise body_invalid(f"{p}.table_width", "a positive integer", width)
        out: JSON = {"table_width": width}
        for flag in ("has_column_header", "has_row_header"):
            value = payload.get(flag, False)
            if not isinstance(value, bool):
                raise body_invalid(f"{p}.{flag}", "a boolean", value)
            out[flag] = value
        if updating:
            return BlockSpec("table", out)
        rows = payload.get("children")
        if rows is None:
            raise body_missing(f"{p}.children")
        if not isinstance(rows, list) or not rows:
            raise validation_error(f"body failed validation: {p}.children should contain at least one table_row.")
        if depth >= 2:
            raise body_invalid(f"{p}.children", "not present", "[…]")
        children = self._parse_block_list(rows, f"{p}.children", depth + 1, counter)
        self._check_rows(children, width, f"{p}.children")
        return BlockSpec("table", out, children)

    @staticmethod
    def _check_rows(rows: list[BlockSpec], width: int, path: str) -> None:
        """Every child of a table is a ``table_row`` of exactly ``table_width`` cells."""
        for i, row in enumerate(rows):
            if row.type != "table_row":
                raise body_invalid(f"{path}[{i}].type", "`table_row` (the only child a table takes)", row.type)
            if len(row.payload["cells"]) != width:
                raise validation_error(
                    f"body failed validation: {path}[{i}].table_row.cells should have table_width ({width}) "
                    f"cells, instead was {len(row.payload['cells'])}."
                )

    def _insert_blocks(self, parent_id: str, parent_type: str, specs: list[BlockSpec], after: str | None) -> list[str]:
        siblings = self.children.setdefault(parent_id, [])
        position = len(siblings) if after is None else (0 if after == "" else siblings.index(after) + 1)
        new_ids = []
        for spec in specs:
            now = self._clock()
            block = Block(
                str(uuid.uuid4()),
                parent_id,
                parent_type,
                spec.type,
                spec.payload,
                now,
                now,
                False,
                self._actor,
                self._actor,
            )
            self.blocks[block.id] = block
            self.children[block.id] = []
            siblings.insert(position, block.id)
            position += 1
            new_ids.append(block.id)
            self._insert_blocks(block.id, "block_id", spec.children, after=None)
        return new_ids

    def _is_live_child(self, child_id: str) -> bool:
        if child_id in self.blocks:
            return not self.blocks[child_id].in_trash
        if child_id in self.pages:
            return not self.pages[child_id].in_trash
        if child_id in self.databases:
            return not self.databases[child_id].in_trash
        return False

    # ---- lookups -----------------------------------------------------------------------------------------------
    def _database(self, raw_id: Any) -> Database:
        db_id = _norm_id(raw_id, "path.database_id")
        db = self.databases.get(db_id)
        if db is None:
            raise not_found("database", db_id)
        return db

    def _data_source(self, raw_id: Any) -> DataSource:
        ds_id = _norm_id(raw_id, "path.data_source_id")
        ds = self.data_sources.get(ds_id)
        if ds is None:
            raise not_found("data_source", ds_id)
        return ds

    def _page(self, raw_id: Any) -> Page:
        page_id = _norm_id(raw_id, "path.page_id")
        page = self.pages.get(page_id)
        if page is None:
            raise not_found("page", page_id)
        return page

    def _live_page(self, page_id: str) -> Page:
        page = self.pages.get(page_id)
        if page is None:
            raise not_found("page", page_id)
        if page.in_trash:
            raise archived_error()
        return page

    def _parent_data_source(self, parent: JSON) -> DataSource:
        if "data_source_id" in parent:
            ds = self.data_sources.get(_norm_id(parent["data_source_id"], "body.parent.data_source_id"))
            if ds is None:
                raise not_found("data_source", str(parent["data_source_id"]))
        else:
            db = self.databases.get(_norm_id(parent["database_id"], "body.parent.database_id"))
            if db is None:
                raise not_found("database", str(parent["database_id"]))
            if len(db.data_source_ids) != 1:
                raise validation_error(
                    f"Database {db.id} has {len(db.data_source_ids)} data sources; "
                    "use a `data_source_id` parent to create a page in it."
                )
            ds = self.data_sources[db.data_source_ids[0]]
        if ds.in_trash or self.databases[ds.database_id].in_trash:
            raise archived_error()
        return ds

    def _page_data_source(self, page: Page) -> DataSource | None:
        ds_id = page.parent.get("data_source_id")
        return self.data_sources.get(ds_id) if ds_id else None

    # ---- rendering ---------------------------------------------------------------------------------------------
    def _render_database(self, db: Database) -> JSON:
        return {
            "object": "database",
            "id": db.id,
            "title": db.title,
            "description": db.description,
            "parent": db.parent,
            "is_inline": db.is_inline,
            "in_trash": db.in_trash,
            "archived": db.in_trash,
            "is_locked": False,
            "created_time": _iso(db.created),
            "last_edited_time": _iso(db.edited),
            "created_by": BOT_USER,
            "last_edited_by": BOT_USER,
            "data_sources": [
                {"id": ds_id, "name": _plain(self.data_sources[ds_id].title)} for ds_id in db.data_source_ids
            ],
            "icon": None,
            "cover": None,
            "url": _url(_plain(db.title), db.id),
            "public_url": None,
        }

    def _render_data_source(self, ds: DataSource) -> JSON:
        db = self.databases.get(ds.database_id)
        properties = {}
        for prop in ds.properties.values():
            properties[prop.name] = {
                "id": prop.id,
                "name": prop.name,
                "description": prop.description,
                "type": prop.type,
                prop.type: json.loads(json.dumps(prop.config)),
            }
        return {
            "object": "data_source",
            "id": ds.id,
            "title": ds.title,
            "description": [],
            "parent": {"type": "database_id", "database_id": ds.database_id},
            "database_parent": db.parent if db else None,
            "properties": properties,
            "is_inline": db.is_inline if db else False,
            "in_trash": ds.in_trash,
            "archived": ds.in_trash,
            "created_time": _iso(ds.created),
            "last_edited_time": _iso(ds.edited),
            "created_by": BOT_USER,
            "last_edited_by": BOT_USER,
            "icon": None,
            "cover": None,
            "url": _url(_plain(ds.title), ds.id),
            "public_url": None,
        }

    def _render_page(self, page: Page) -> JSON:
        ds = self._page_data_source(page)
        return {
            "object": "page",
            "id": page.id,
            "created_time": _iso(page.created),
            "last_edited_time": _iso(page.edited),
            "created_by": _user_ref(page.created_by),
            "last_edited_by": _user_ref(page.last_edited_by),
            "cover": None,
            "icon": None,
            "parent": page.parent,
            "archived": page.in_trash,
            "in_trash": page.in_trash,
            "is_locked": False,
            "properties": self._render_properties(page, ds, truncate=True),
            "url": _url(_plain(page.values.get(ds.title_property().id if ds else "title") or []), page.id),
            "public_url": None,
        }

    def _render_properties(self, page: Page, ds: DataSource | None, truncate: bool) -> JSON:
        if ds is None:
            return {"title": {"id": "title", "type": "title", "title": page.values.get("title", [])}}
        out: JSON = {}
        for prop in ds.properties.values():
            value = page.values.get(prop.id, _empty_value(prop.type))
            rendered: JSON = {"id": prop.id, "type": prop.type}
            if prop.type == "relation":
                refs = list(value)
                shown = refs[:RELATION_REFS_IN_PAGE] if truncate else refs
                rendered["relation"] = [{"id": r} for r in shown]
                rendered["has_more"] = len(shown) < len(refs)
            else:
                rendered[prop.type] = self._render_value(prop, value, page)
            out[prop.name] = rendered
        return out

    def _render_value(self, prop: PropertySchema, value: Any, page: Page | None = None) -> Any:
        kind = prop.type
        if kind == "select":
            return _option_ref(prop, value)
        if kind == "multi_select":
            return [_option_ref(prop, v) for v in value]
        if kind == "people":
            return [{"object": "user", "id": u} for u in value]
        if kind == "relation":
            return [{"id": r} for r in value]
        if kind == "created_time" and page is not None:
            return _iso(page.created)
        if kind == "last_edited_time" and page is not None:
            return _iso(page.edited)
        if kind in ("created_by", "last_edited_by") and page is not None:
            return _user_ref(page.created_by if kind == "created_by" else page.last_edited_by)
        if kind in ("created_by", "last_edited_by"):
            return BOT_USER
        return value

    def _render_child(self, child_id: str) -> JSON:
        if child_id in self.blocks:
            return self._render_block(self.blocks[child_id])
        common = {"object": "block", "id": child_id, "created_by": BOT_USER, "last_edited_by": BOT_USER}
        if child_id in self.pages:
            page = self.pages[child_id]
            ds = self._page_data_source(page)
            title = _plain(page.values.get(ds.title_property().id if ds else "title") or [])
            return {
                **common,
                "created_by": _user_ref(page.created_by),
                "last_edited_by": _user_ref(page.last_edited_by),
                "parent": page.parent,
                "created_time": _iso(page.created),
                "last_edited_time": _iso(page.edited),
                "has_children": any(self._is_live_child(c) for c in self.children.get(page.id, [])),
                "archived": page.in_trash,
                "in_trash": page.in_trash,
                "type": "child_page",
                "child_page": {"title": title},
            }
        if child_id in self.databases:
            db = self.databases[child_id]
            return {
                **common,
                "parent": db.parent,
                "created_time": _iso(db.created),
                "last_edited_time": _iso(db.edited),
                "has_children": False,
                "archived": db.in_trash,
                "in_trash": db.in_trash,
                "type": "child_database",
                "child_database": {"title": _plain(db.title)},
            }
        raise not_found("block", child_id)

    def _render_block(self, block: Block) -> JSON:
        return {
            "object": "block",
            "id": block.id,
            "parent": {"type": block.parent_type, block.parent_type: block.parent_id},
            "created_time": _iso(block.created),
            "last_edited_time": _iso(block.edited),
            "created_by": _user_ref(block.created_by),
            "last_edited_by": _user_ref(block.last_edited_by),
            "has_children": any(self._is_live_child(c) for c in self.children.get(block.id, [])),
            "archived": block.in_trash,
            "in_trash": block.in_trash,
            "type": block.type,
            block.type: json.loads(json.dumps(block.payload)),
        }


def create(token: str = DEFAULT_TOKEN, rate_per_s: float | None = 3.0, burst: int = 10) -> NotionEmulator:
    """The emulator as ``python -m tests.emulators notion`` runs it: Notion's default rate limit on."""
    return NotionEmulator(token=token, rate_per_s=rate_per_s, burst=burst)


# ---- request parsing -------------------------------------------------------------------------------------------
def _body(request: Request) -> JSON:
    body = request.body if request.body is not None else {}
    if not isinstance(body, dict):
        raise body_invalid("body", "an object", body)
    return body


def _norm_id(raw: Any, path: str) -> str:
    """Notion accepts ids with or without dashes; they are answered dashed."""
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        where = path.partition(".")[0]
        raise validation_error(
            f"{where} failed validation: {path} should be a valid uuid, instead was `{_show(raw)}`."
        ) from None


def _trash_flag(body: JSON) -> bool | None:
    """``in_trash``, or the legacy ``archived`` alias."""
    values = {k: body[k] for k in ("in_trash", "archived") if k in body and body[k] is not None}
    for key, value in values.items():
        if not isinstance(value, bool):
            raise body_invalid(f"body.{key}", "a boolean", value)
    if len(set(values.values())) > 1:
        raise validation_error("body failed validation: body.archived and body.in_trash disagree.")
    return next(iter(values.values()), None)


def _parse_rich_text(items: Any, path: str) -> list[JSON]:
    if not isinstance(items, list):
        raise body_invalid(path, "an array", items)
    if len(items) > ARRAY_MAX:
        raise too_long(path, ARRAY_MAX, len(items))
    return [_parse_rich_text_item(item, f"{path}[{i}]") for i, item in enumerate(items)]


def _parse_rich_text_item(item: Any, path: str) -> JSON:
    if not isinstance(item, dict):
        raise body_invalid(path, "an object", item)
    kind = item.get("type") or next((k for k in ("text", "equation", "mention") if k in item), None)
    annotations = {
        "bold": False,
        "italic": False,
        "strikethrough": False,
        "underline": False,
        "code": False,
        "color": "default",
    }
    given = item.get("annotations", {})
    if not isinstance(given, dict):
        raise body_invalid(f"{path}.annotations", "an object", given)
    for key, value in given.items():
        if key == "color":
            if value not in TEXT_COLORS:
                raise body_invalid(f"{path}.annotations.color", "a Notion color", value)
        elif key in annotations:
            if not isinstance(value, bool):
                raise body_invalid(f"{path}.annotations.{key}", "a boolean", value)
        else:
            raise body_invalid(f"{path}.annotations.{key}", "not present", value)
        annotations[key] = value
    if kind == "text":
        text = item.get("text")
        if not isinstance(text, dict):
            raise body_missing(f"{path}.text") if text is None else body_invalid(f"{path}.text", "an object", text)
        content = text.get("content")
        if content is None:
            raise body_missing(f"{path}.text.content")
        if not isinstance(content, str):
            raise body_invalid(f"{path}.text.content", "a string", content)
        if len(content) > RICH_TEXT_CONTENT_MAX:
            raise too_long(f"{path}.text.content", RICH_TEXT_CONTENT_MAX, len(content))
        link = text.get("link")
        if link is not None:
            if not isinstance(link, dict) or not isinstance(link.get("url"), str):
                raise body_invalid(f"{path}.text.link", "an object with a `url` string, or `null`", link)
            if len(link["url"]) > LINK_URL_MAX:
                raise too_long(f"{path}.text.link.url", LINK_URL_MAX, len(link["url"]))
            link = {"url": link["url"]}
        return {
            "type": "text",
            "text": {"content": content, "link": link},
            "annotations": annotations,
            "plain_text": content,
            "href": link["url"] if link else None,
        }
    if kind == "equation":
        equation = item.get("equation")
        expression = equation.get("expression") if isinstance(equation, dict) else None
        if not isinstance(expression, str):
            raise body_missing(f"{path}.equation.expression")
        if len(expression) > EQUATION_MAX:
            raise too_long(f"{path}.equation.expression", EQUATION_MAX, len(expression))
        return {
            "type": "equation",
            "equation": {"expression": expression},
            "annotations": annotations,
            "plain_text": expression,
            "href": None,
        }
    raise body_invalid(path, "a `text` or `equation` rich text item (the emulator's kinds)", item)


def _rich_text_plain(text: str) -> list[JSON]:
    return [_parse_rich_text_item({"text": {"content": text}}, "seed")] if text else []


def _check_option_name(name: Any, path: str) -> None:
    if name is None:
        raise body_missing(path)
    if not isinstance(name, str) or not name.strip():
        raise body_invalid(path, "a non-empty string", name)
    if "," in name:
        raise validation_error(f"body failed validation: {path} cannot contain commas, instead was `{name}`.")
    if len(name) > SELECT_NAME_MAX:
        raise too_long(path, SELECT_NAME_MAX, len(name))


def _check_date(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise body_invalid(path, "an ISO 8601 date string", value)
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise body_invalid(path, "an ISO 8601 date string", value) from None
    return value


def _page_size(value: Any, path: str) -> int:
    if value is None:
        return PAGE_SIZE_MAX
    if isinstance(value, bool) or not isinstance(value, int):
        raise body_invalid(path, "a number", value)
    if value < 1:
        raise validation_error(f"body failed validation: {path} should be ≥ `1`, instead was `{value}`.")
    if value > PAGE_SIZE_MAX:
        raise validation_error(f"body failed validation: {path} should be ≤ `{PAGE_SIZE_MAX}`, instead was `{value}`.")
    return value


def _cursor_window(request: Request, ids: list[str]) -> tuple[int, int]:
    """``start_cursor`` and ``page_size`` from a GET query string: (start index, size)."""
    raw_size = request.query.get("page_size", [None])[0]
    size = PAGE_SIZE_MAX
    if raw_size is not None:
        try:
            size = int(raw_size)
        except ValueError:
            raise validation_error(
                f'query failed validation: query.page_size should be a number, instead was `"{raw_size}"`.'
            ) from None
        if size < 1 or size > PAGE_SIZE_MAX:
            raise validation_error(
                f"query failed validation: query.page_size should be ≤ `{PAGE_SIZE_MAX}` and ≥ `1`, "
                f"instead was `{size}`."
            )
    cursor = request.query.get("start_cursor", [None])[0]
    if cursor is None or cursor == "":
        return 0, size
    if cursor not in ids:
        raise validation_error(f"query failed validation: query.start_cursor `{cursor}` is not a valid cursor.")
    return ids.index(cursor), size


def _filter_condition(condition: Any, allowed: frozenset[str], path: str) -> tuple[str, Any]:
    if not isinstance(condition, dict) or len(condition) != 1:
        raise body_invalid(path, f"an object with one of {sorted(allowed)}", condition)
    op, operand = next(iter(condition.items()))
    if op not in allowed:
        raise body_invalid(path, f"an object with one of {sorted(allowed)}", condition)
    if op in ("is_empty", "is_not_empty") and operand is not True:
        raise body_invalid(f"{path}.{op}", "`true`", operand)
    return op, operand


def _match(kind: str, op: str, operand: Any, value: Any) -> bool:
    empty = value is None or value == "" or value == []
    if op == "is_empty":
        return empty
    if op == "is_not_empty":
        return not empty
    if kind in ("title", "rich_text", "url", "email", "phone_number"):
        text = value or ""
        needle = str(operand)
        if op == "equals":
            return bool(text == needle)
        if op == "does_not_equal":
            return bool(text != needle)
        # Notion's text search ignores case.
        if op == "contains":
            return needle.lower() in text.lower()
        if op == "does_not_contain":
            return needle.lower() not in text.lower()
        if op == "starts_with":
            return bool(text.lower().startswith(needle.lower()))
        if op == "ends_with":
            return bool(text.lower().endswith(needle.lower()))
    if kind == "number":
        if value is None:
            return op == "does_not_equal"
        comparisons: dict[str, Callable[[float, float], bool]] = {
            "equals": lambda a, b: a == b,
            "does_not_equal": lambda a, b: a != b,
            "greater_than": lambda a, b: a > b,
            "less_than": lambda a, b: a < b,
            "greater_than_or_equal_to": lambda a, b: a >= b,
            "less_than_or_equal_to": lambda a, b: a <= b,
        }
        return comparisons[op](value, operand)
    if kind in ("select", "checkbox"):
        return bool(value == operand) if op == "equals" else bool(value != operand)
    if kind in ("multi_select", "relation", "people"):
        return (operand in value) if op == "contains" else (operand not in value)
    if kind in ("date", "created_time", "last_edited_time"):
        if value is None:
            return False
        day, target = str(value)[:10], str(operand)[:10]
        if op == "equals":
            return day == target
        a, b = _instant(str(value)), _instant(str(operand))
        return {"before": a < b, "after": a > b, "on_or_before": a <= b, "on_or_after": a >= b}[op]
    return False


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ---- rendering helpers -----------------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    # Notion reports created/last-edited times rounded down to the minute.
    moment = datetime.fromtimestamp(ts, UTC).replace(second=0, microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:00.000Z")


def _url(title: str, object_id: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-")
    hex_id = object_id.replace("-", "")
    return f"https://www.notion.so/{slug}-{hex_id}" if slug else f"https://www.notion.so/{hex_id}"


def _plain(items: Iterable[JSON]) -> str:
    return "".join(str(item.get("plain_text", "")) for item in items)


def _empty_value(kind: str) -> Any:
    if kind in ("title", "rich_text", "multi_select", "relation", "people"):
        return []
    if kind == "checkbox":
        return False
    return None


def _option_ref(prop: PropertySchema, option_id: Any) -> JSON | None:
    if option_id is None:
        return None
    option = next((o for o in prop.config["options"] if o["id"] == option_id), None)
    if option is None:
        return None
    return {"id": option["id"], "name": option["name"], "color": option["color"]}


def _option_name(prop: PropertySchema, option_id: Any) -> str | None:
    ref = _option_ref(prop, option_id)
    return None if ref is None else str(ref["name"])


def _simplify(rendered: JSON) -> Any:
    """A property value in the response shape, reduced to plain Python for assertions."""
    kind = rendered["type"]
    value = rendered[kind]
    if kind in ("title", "rich_text"):
        return _plain(value)
    if kind == "select":
        return None if value is None else value["name"]
    if kind == "multi_select":
        return [v["name"] for v in value]
    if kind in ("relation", "people"):
        return [v["id"] for v in value]
    if kind == "date":
        if value is None:
            return None
        return value["start"] if value.get("end") is None else {"start": value["start"], "end": value["end"]}
    if kind in ("created_by", "last_edited_by"):
        return value["id"]
    return value


_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _property_id(existing: dict[str, PropertySchema]) -> str:
    # Notion's property ids are short random strings; "title" is reserved for the title property.
    while True:
        candidate = "".join(_ID_CHARS[b % len(_ID_CHARS)] for b in uuid.uuid4().bytes[:4])
        if candidate not in existing and candidate != "title":
            return candidate


def _option_id() -> str:
    return str(uuid.uuid4())


def _retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds))) if seconds > 0 else "0"
