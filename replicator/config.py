"""Configuration, validated once at start-up (pydantic-settings). Only the CLI builds ``Settings`` from the
environment; library code receives the values it needs. ``Settings.masked()`` prints it with secrets hidden.

Every variable is listed in the README's configuration table (a test checks this).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from replicator.scope import Scope, ScopeError
from replicator.scope import parse as parse_scope
from schema.redaction import mask_url

# The sinks of this package; an operator sees them in `replicator status` even when off. Sinks from elsewhere (the
# test suite's recording sink, a site's own) are registered with REPLICATOR_SINK_PLUGINS.
KNOWN_SINKS = ("notion", "pinecone")
# The POSTGRES_URL of settings loaded for a command that needs no database (``notion init``) when it is unset:
# an address that cannot resolve (.invalid, RFC 2606), so nothing can ever connect to it by mistake.
NO_POSTGRES_URL = "postgresql://postgres-url-not-set.invalid/"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True)

    # ---- source --------------------------------------------------------------------------------------
    postgres_url: SecretStr = Field(alias="POSTGRES_URL")
    replicator_slot: str = Field("omics_cdc", alias="REPLICATOR_SLOT", pattern=r"^[a-z0-9_]{1,63}$")
    heartbeat_interval_s: float = Field(5.0, alias="REPLICATOR_HEARTBEAT_INTERVAL_S", gt=0)
    batch_max_changes: int = Field(5000, alias="REPLICATOR_BATCH_MAX_CHANGES", gt=0)
    batch_max_wait_ms: int = Field(200, alias="REPLICATOR_BATCH_MAX_WAIT_MS", gt=0)
    standby_poll_s: float = Field(2.0, alias="REPLICATOR_STANDBY_POLL_S", gt=0)
    shutdown_deadline_s: float = Field(20.0, alias="REPLICATOR_SHUTDOWN_DEADLINE_S", gt=0)

    # ---- sinks and workers ---------------------------------------------------------------------------
    # Sinks outside this package, as a JSON object: sink name -> its options, where "factory" names the builder
    # ("module:callable", called as factory(settings, options, metrics) and returning a Sink). The test suite
    # registers its recording sink this way; production settings know nothing of it.
    sink_plugins: dict[str, dict[str, Any]] = Field({}, alias="REPLICATOR_SINK_PLUGINS")
    replicator_sinks: str = Field("", alias="REPLICATOR_SINKS")  # validated after sink_plugins, which it may name
    enable_dual_write: bool = Field(True, alias="ENABLE_DUAL_WRITE")
    worker_batch_size: int = Field(50, alias="REPLICATOR_WORKER_BATCH", gt=0)
    workers_per_sink: int = Field(1, alias="REPLICATOR_WORKERS_PER_SINK", gt=0)
    max_attempts: int = Field(8, alias="REPLICATOR_MAX_ATTEMPTS", gt=0)
    lease_s: float = Field(120.0, alias="REPLICATOR_LEASE_S", gt=0)
    retry_base_s: float = Field(0.5, alias="REPLICATOR_RETRY_BASE_S", gt=0)
    retry_max_s: float = Field(60.0, alias="REPLICATOR_RETRY_MAX_S", gt=0)
    # DEFERRED outcomes (e.g. relation targets without a page yet) come back after defer_s, without counting as
    # an attempt, and are dead-lettered once the row has waited max_defer_s in total.
    defer_s: float = Field(5.0, alias="REPLICATOR_DEFER_S", gt=0)
    max_defer_s: float = Field(3600.0, alias="REPLICATOR_MAX_DEFER_S", gt=0)
    # In-process retries of one sink call before the row is rescheduled through the outbox.
    sink_call_attempts: int = Field(3, alias="REPLICATOR_SINK_CALL_ATTEMPTS", gt=0)
    # Longest idle wait between outbox checks when no NOTIFY arrives (a safety net; NOTIFY wakes workers).
    worker_idle_poll_s: float = Field(5.0, alias="REPLICATOR_WORKER_IDLE_POLL_S", gt=0)
    # A sink that is down (unreachable, rate limited, misconfigured) is re-checked after min_s, doubling up to max_s.
    sink_recheck_min_s: float = Field(1.0, alias="REPLICATOR_SINK_RECHECK_MIN_S", gt=0)
    sink_recheck_max_s: float = Field(60.0, alias="REPLICATOR_SINK_RECHECK_MAX_S", gt=0)

    # ---- staged rollout: per-sink scope (#14, replicator/scope.py) --------------------------------------
    # Which documents a sink carries, e.g. "dataset.omics_type=lipidomics" (a pilot); empty: every document. A
    # plugin sink takes its scope from its "scope" option in REPLICATOR_SINK_PLUGINS.
    scope_notion: str = Field("", alias="REPLICATOR_SCOPE_NOTION")
    scope_pinecone: str = Field("", alias="REPLICATOR_SCOPE_PINECONE")
    # What a narrowed scope does to the documents a sink holds that fall outside it: remove them (Notion: to the
    # trash, people's blocks with the page) or keep them as they are.
    scope_narrow: Literal["remove", "keep"] = Field("remove", alias="REPLICATOR_SCOPE_NARROW")

    # ---- operator surface ----------------------------------------------------------------------------
    http_addr: str = Field("127.0.0.1:9187", alias="REPLICATOR_HTTP_ADDR")
    health_max_lag_s: float = Field(120.0, alias="REPLICATOR_HEALTH_MAX_LAG_S", gt=0)
    # Unhealthy when no process has moved the checkpoint (streamed or heartbeated) for this long.
    health_max_checkpoint_age_s: float = Field(30.0, alias="REPLICATOR_HEALTH_MAX_CHECKPOINT_AGE_S", gt=0)
    health_max_dead_letters: int = Field(0, alias="REPLICATOR_HEALTH_MAX_DEAD_LETTERS", ge=0)
    # A sink down (unreachable) longer than this makes `health` unhealthy; a configuration error does at once.
    health_max_sink_down_s: float = Field(300.0, alias="REPLICATOR_HEALTH_MAX_SINK_DOWN_S", gt=0)
    health_max_pending_age_s: float = Field(3600.0, alias="REPLICATOR_HEALTH_MAX_PENDING_AGE_S", gt=0)
    log_format: Literal["auto", "json", "text"] = Field("auto", alias="REPLICATOR_LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="REPLICATOR_LOG_LEVEL")

    # ---- Notion --------------------------------------------------------------------------------------
    notion_api_key: SecretStr | None = Field(None, alias="NOTION_API_KEY")
    notion_base_url: str = Field("https://api.notion.com", alias="NOTION_BASE_URL")
    notion_programs_db_id: str | None = Field(None, alias="NOTION_PROGRAMS_DB_ID")
    notion_experiments_db_id: str | None = Field(None, alias="NOTION_EXPERIMENTS_DB_ID")
    notion_exp_data_db_id: str | None = Field(None, alias="NOTION_EXP_DATA_DB_ID")
    notion_signature_db_id: str | None = Field(None, alias="NOTION_SIGNATURE_DB_ID")
    # The integration's total, shared by every process with the token through replicator.rate_budget (NOTION_BUDGET
    # shared); with NOTION_BUDGET=local each process has a bucket of its own at this rate.
    notion_rate_per_s: float = Field(3.0, alias="NOTION_RATE_PER_S", gt=0)
    notion_budget: Literal["shared", "local"] = Field("shared", alias="NOTION_BUDGET")
    # While Postgres cannot be reached for the shared budget, each process paces itself at rate / this.
    notion_budget_fallback_share: float = Field(2.0, alias="NOTION_BUDGET_FALLBACK_SHARE", ge=1)
    notion_settle_ms: int = Field(1000, alias="NOTION_SETTLE_MS", ge=0)
    # How long a Notion query (data-source query, search) may take to show a write. A create whose answer was
    # lost is looked up again for this long (after the request timeout) before any new page is created, and
    # ``verify`` judges only what has settled for this long.
    notion_read_lag_s: float = Field(30.0, alias="NOTION_READ_LAG_S", ge=0)
    notion_timeout_ms: int = Field(30_000, alias="NOTION_TIMEOUT_MS", gt=0)

    # ---- narrative capture (Notion -> Postgres, #14) --------------------------------------------------
    narrative_capture: bool = Field(False, alias="NARRATIVE_CAPTURE")
    narrative_poll_s: float = Field(30.0, alias="NARRATIVE_POLL_S", gt=0)
    # Notion rounds last_edited_time down to the minute and its queries may lag: windows overlap by this much.
    narrative_overlap_s: float = Field(120.0, alias="NARRATIVE_OVERLAP_S", ge=60)
    narrative_batch_pages: int = Field(50, alias="NARRATIVE_BATCH_PAGES", gt=0)

    # ---- Pinecone and embeddings ---------------------------------------------------------------------
    pinecone_api_key: SecretStr | None = Field(None, alias="PINECONE_API_KEY")
    pinecone_index: str = Field("omics-cdc", alias="PINECONE_INDEX")
    pinecone_namespace: str = Field("default", alias="PINECONE_NAMESPACE")
    pinecone_controller_host: str = Field("https://api.pinecone.io", alias="PINECONE_CONTROLLER_HOST")
    pinecone_index_host: str | None = Field(None, alias="PINECONE_INDEX_HOST")
    pinecone_rate_per_s: float = Field(20.0, alias="PINECONE_RATE_PER_S", gt=0)
    pinecone_settle_ms: int = Field(0, alias="PINECONE_SETTLE_MS", ge=0)
    # A new index answers "initializing" for a while: start-up and `pinecone init` wait this long for it.
    pinecone_index_ready_timeout_s: float = Field(300.0, alias="PINECONE_INDEX_READY_TIMEOUT_S", ge=0)
    # `verify` waits at most this long for Pinecone's reads to reflect the writes made before it started (LSNs).
    pinecone_freshness_timeout_s: float = Field(60.0, alias="PINECONE_FRESHNESS_TIMEOUT_S", ge=0)
    # `verify` re-checks the drift it found after this many seconds and reports only what is still there.
    verify_recheck_s: float = Field(5.0, alias="REPLICATOR_VERIFY_RECHECK_S", ge=0)
    embedding_provider: Literal["local", "sentence-transformers", "openai", "pinecone"] = Field(
        "local", alias="EMBEDDING_PROVIDER"
    )
    embedding_model: str | None = Field(None, alias="EMBEDDING_MODEL")
    openai_base_url: str = Field("https://api.openai.com/v1", alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")

    @field_validator("sink_plugins", mode="before")
    @classmethod
    def _plugins_from_json(cls, value: Any) -> Any:
        """The environment gives JSON text (pydantic-settings decodes it); a value passed in code may be text too."""
        if isinstance(value, str):
            try:
                return orjson.loads(value) if value.strip() else {}
            except orjson.JSONDecodeError as error:
                raise ValueError(f"not a JSON object ({error})") from None
        return value

    @field_validator("sink_plugins")
    @classmethod
    def _plugin_factories(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, options in value.items():
            if name in KNOWN_SINKS:
                raise ValueError(f"sink plugin {name!r} would shadow the built-in sink of that name")
            factory = options.get("factory")
            if not isinstance(factory, str) or factory.count(":") != 1:
                raise ValueError(f'sink plugin {name!r} needs "factory": "module:callable"')
            scope = options.get("scope")
            if scope is not None:
                if not isinstance(scope, str):
                    raise ValueError(f'sink plugin {name!r}: "scope" must be a string such as "dataset.omics_type=…"')
                try:
                    parse_scope(scope)
                except ScopeError as error:
                    raise ValueError(f"sink plugin {name!r}: bad scope: {error}") from None
        return value

    @field_validator("scope_notion", "scope_pinecone")
    @classmethod
    def _scope(cls, value: str) -> str:
        """Parsed once here (a wrong expression stops start-up naming the variable); kept in canonical form."""
        if not value.strip():
            return ""
        try:
            return parse_scope(value).text()
        except ScopeError as error:
            raise ValueError(f"bad scope: {error}") from None

    def scope_of(self, sink: str) -> Scope:
        """The documents ``sink`` carries (replicator/scope.py); everything unless a scope is set for it."""
        text = {"notion": self.scope_notion, "pinecone": self.scope_pinecone}.get(sink)
        if text is None:
            option = self.sink_plugins.get(sink, {}).get("scope")
            text = option if isinstance(option, str) else ""
        return parse_scope(text)

    @field_validator("replicator_sinks")
    @classmethod
    def _known_sinks(cls, value: str, info: ValidationInfo) -> str:
        known = (*KNOWN_SINKS, *info.data.get("sink_plugins", {}))
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown sink(s) {unknown}; known: {', '.join(known)}")
        return ",".join(names)

    @property
    def known_sinks(self) -> tuple[str, ...]:
        """The built-in sinks and the registered plugins."""
        return (*KNOWN_SINKS, *self.sink_plugins)

    @field_validator("http_addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9187 (port 0 picks a free one)")
        return value

    @property
    def configured_sinks(self) -> tuple[str, ...]:
        """Sinks named in REPLICATOR_SINKS, in order."""
        return tuple(n for n in self.replicator_sinks.split(",") if n)

    @property
    def enabled_sinks(self) -> tuple[str, ...]:
        """Configured sinks minus Notion when ENABLE_DUAL_WRITE is false (the team's switch for Notion)."""
        return tuple(n for n in self.configured_sinks if n != "notion" or self.enable_dual_write)

    def settle_s(self, sink: str) -> float:
        """How long a document must go without a new change before this sink's workers pick it up (a debounce:
        a burst of changes to one document becomes one API write). Notion's 3 requests/s make it worth a second;
        Pinecone answers fast, so its default is none."""
        ms = {"notion": self.notion_settle_ms, "pinecone": self.pinecone_settle_ms}.get(sink, 0)
        return ms / 1000

    @property
    def dsn(self) -> str:
        return self.postgres_url.get_secret_value()

    @property
    def postgres_configured(self) -> bool:
        """False for settings a command without a database loaded with POSTGRES_URL unset (``NO_POSTGRES_URL``)."""
        return self.dsn != NO_POSTGRES_URL

    def masked(self) -> dict[str, Any]:
        """Every setting by its variable name, secrets and URL passwords masked."""
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = mask_url(value.get_secret_value()) if name == "postgres_url" else "********"
            out[info.alias or name] = value
        return out
