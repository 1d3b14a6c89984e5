"""An HTTP emulator of the Pinecone API (``X-Pinecone-Api-Version: 2026-07``), driven by the real ``pinecone`` SDK.

Like the service, it has two planes. The control plane (``/indexes``) answers on the emulator's own port; every
index it creates gets a data plane of its own — a separate listening server on a free port, whose address is the
index's ``host`` — answering ``/vectors/upsert|fetch|delete|list|update``, ``/query``, ``/describe_index_stats``
and ``/namespaces``. Shapes follow the 2026-07 OpenAPI documents (pinecone-io/pinecone-api) and the SDK's
msgspec models: control-plane errors are ``{"error": {"code", "message"}, "status"}``, data-plane errors are
gRPC-style ``{"code": <int>, "message", "details": []}``, and a 401 is a plain-text body on both planes. Limits are
the documented ones (1,000 vectors and 2 MB per upsert, 40 KB metadata per vector, ids of 1-512 ASCII
characters, topK ≤ 10,000, list pages ≤ 100); the requests are those pinecone 10.2 sends (the team's wire capture,
shared/reference/sdk-wire.md). Faults (``POST /_emulator/faults`` on either port) are shared by
both planes. ``GET /_emulator/state`` returns every index with its config and every stored vector.

Always on, as the service does:

- **The 4 MB query answer** (https://docs.pinecone.io/reference/api/database-limits/operation-limits, "Query
  limits": max result size 4MB; "if a query fails due to exceeding the 4MB result size limit, choose a lower
  top_k value, or use include_metadata=False or include_values=False"): a query whose answer would be larger
  fails. The page gives no error body; the emulator answers 400 ``INVALID_ARGUMENT`` (gRPC 3) in the data
  plane's error shape, with a message naming the limit and the remedies.
- **Log sequence numbers** (https://docs.pinecone.io/guides/index-data/check-data-freshness): every write to a
  namespace gets the next LSN of that namespace, sent as ``x-pinecone-request-lsn``; query and list answers
  carry ``x-pinecone-max-indexed-lsn``, the newest write they reflect (the SDK reads them as
  ``response_info.lsn_committed`` / ``lsn_reconciled``; fetch answers carry none, as the SDK documents).
- **Hosted inference** ``POST /embed`` on the control-plane host (https://docs.pinecone.io/reference/api/
  latest/inference/generate-embeddings; the SDK's ``pc.inference.embed`` posts there): ``multilingual-e5-large``
  and ``llama-text-embed-v2`` (dense, 1024 dimensions) and ``pinecone-sparse-english-v0`` (sparse), the models
  ``replicator.sinks.pinecone.embedding.inference`` may be configured with; see ``EMBED_MODELS``.

The hard behaviours (knobs of ``POST /_emulator/faults``, off by default; see ``tests.emulators.base.Faults``):

- ``apply_then_fail_*``: the writes are ``/vectors/upsert``, ``/vectors/update`` and ``/vectors/delete``.
- ``read_lag_s``: "Pinecone is eventually consistent, so there can be a slight delay before new or changed
  records are visible to queries" (the data-freshness page above). Query, list, fetch_by_metadata,
  describe_index_stats and the namespace listings see the records as they were ``read_lag_s`` ago — a record
  not yet there, a deleted one still there, old metadata — and ``x-pinecone-max-indexed-lsn`` says which writes
  they reflect.
- ``read_by_id_lag_s``: the same for fetch by id. The docs do not say how fresh a fetch is; the SDK's
  ``ResponseInfo`` (pinecone 10.2 ``models/response_info.py``) says "fetch and search see a new write at
  different times" and that fetch answers carry no reconciled LSN, so fetch has a knob of its own (default 0:
  fresh), and a test of a lagging fetch sets both.
- ``index_init_s``: an index created while it is set reports ``status.ready: false`` and ``state:
  "Initializing"`` for that many seconds (https://docs.pinecone.io/troubleshooting/wait-for-index-creation:
  create only queues the job; call describe_index until the status object reports ready). Meanwhile it
  advertises no host (``"host": ""``: pinecone 10.2's ``Pinecone.index`` documents that an initializing index
  "has no host yet" and raises ``PineconeValueError`` for it), and a client that knows the host already is refused
  on the data plane with 503 ``UNAVAILABLE`` (the docs do not give that refusal's shape; 503 is what a client
  must treat as "wait and retry"). The SDK's ``indexes.create`` polls describe every 5 s until ready unless
  given ``timeout=-1``. The default is 0 — ready at once — because the
  existing tests and the demo create an index and use it straight away; a test of start-up waiting sets it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.emulators.base import ApiError, Emulator, Request, Response, Versions

API_VERSION = "2026-07"
DEFAULT_NAMESPACE = "__default__"  # how the service names the namespace requests address when they omit one

MAX_UPSERT_VECTORS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_ID_LENGTH = 512
MAX_TOP_K = 10_000
MAX_LIST_LIMIT = 100
MAX_IDS_PER_REQUEST = 1000
MAX_DIMENSION = 20_000
MAX_QUERY_RESPONSE_BYTES = 4 * 1024 * 1024  # "Max result size 4MB"
WRITE_PATHS = frozenset({"/vectors/upsert", "/vectors/update", "/vectors/delete"})
# Hosted embedding models: vector type and default dimension (https://docs.pinecone.io/models/overview). At
# most 96 inputs a request: "96 is the max batch size of the hosted embedding models"
# (https://docs.pinecone.io/reference/api/database-limits/operation-limits).
EMBED_MODELS: dict[str, dict[str, Any]] = {
    "multilingual-e5-large": {"vector_type": "dense", "dimension": 1024},
    "llama-text-embed-v2": {"vector_type": "dense", "dimension": 1024},
    "pinecone-sparse-english-v0": {"vector_type": "sparse"},
}
MAX_EMBED_INPUTS = 96
METRICS = ("cosine", "dotproduct", "euclidean")
CLOUDS = ("aws", "gcp", "azure")
_INDEX_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,43}[a-z0-9])?$")
_CREATE_FIELDS = ("name", "deployment", "schema", "cmek_id", "read_capacity", "tags", "deletion_protection")

# gRPC status numbers: the data plane reports errors as google.rpc.Status.
_GRPC_CODES = {
    "OK": 0,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}
# The base class raises a few errors of its own (bad JSON, unknown route); give them Pinecone's code names.
_BASE_CODES = {
    "invalid_json": "INVALID_ARGUMENT",
    "validation_error": "INVALID_ARGUMENT",
    "not_found": "NOT_FOUND",
    "method_not_allowed": "INVALID_ARGUMENT",
}


@dataclass(frozen=True)
class StoredVector:
    """One record as the emulator holds it."""

    id: str
    values: tuple[float, ...]
    metadata: dict[str, Any] | None = None
    sparse_values: dict[str, Any] | None = None


@dataclass
class IndexState:
    """One index: its configuration and its namespaces (internal key ``""`` is the default namespace)."""

    name: str
    dimension: int
    metric: str
    deployment: dict[str, Any]
    deletion_protection: str = "disabled"
    tags: dict[str, str] | None = None
    host: str = ""
    namespaces: dict[str, dict[str, StoredVector]] = field(default_factory=dict)
    ready_at: float = 0.0  # time.monotonic() from which the index is ready (index_init_s after creation)
    versions: Versions[StoredVector] = field(default_factory=Versions)  # by (namespace, id), for lagged reads
    lsn_log: Versions[int] = field(default_factory=Versions)  # by namespace: the LSN reached at each write
    lsn: dict[str, int] = field(default_factory=dict)  # by namespace: the last LSN given

    def ready(self) -> bool:
        return time.monotonic() >= self.ready_at

    # ---- writes (every change goes through these, so lagged reads can see the older state) -------------------
    def put(self, namespace: str, vector: StoredVector) -> None:
        self.namespaces.setdefault(namespace, {})[vector.id] = vector
        self.versions.record((namespace, vector.id), time.time(), vector)

    def remove(self, namespace: str, vector_id: str) -> None:
        stored = self.namespaces.get(namespace, {})
        if stored.pop(vector_id, None) is not None:
            self.versions.record((namespace, vector_id), time.time(), None)

    def drop_namespace(self, namespace: str) -> None:
        for vector_id in list(self.namespaces.get(namespace, {})):
            self.remove(namespace, vector_id)
        self.namespaces.pop(namespace, None)

    def commit(self, namespace: str) -> int:
        """One write request done: the namespace's next log sequence number."""
        lsn = self.lsn.get(namespace, 0) + 1
        self.lsn[namespace] = lsn
        self.lsn_log.record(namespace, time.time(), lsn)
        return lsn

    # ---- reads ----------------------------------------------------------------------------------------------------
    def view(self, namespace: str, lag_s: float) -> dict[str, StoredVector]:
        """The namespace's records as a read ``lag_s`` seconds late sees them."""
        current = self.namespaces.get(namespace, {})
        if lag_s <= 0:
            return current
        at = time.time() - lag_s
        seen: dict[str, StoredVector] = {}
        for key in self.versions.known_keys():
            if key[0] != namespace:
                continue
            known, vector = self.versions.as_of(key, at)
            if not known:
                vector = current.get(key[1])
            if vector is not None:
                seen[key[1]] = vector
        return seen

    def namespace_keys(self, lag_s: float) -> list[str]:
        keys = set(self.namespaces) | {key[0] for key in self.versions.known_keys()}
        return sorted(k for k in keys if k in self.namespaces or self.view(k, lag_s))

    def max_indexed_lsn(self, namespace: str, lag_s: float) -> int:
        if lag_s <= 0:
            return self.lsn.get(namespace, 0)
        known, lsn = self.lsn_log.as_of(namespace, time.time() - lag_s)
        return (lsn or 0) if known else self.lsn.get(namespace, 0)

    def model(self) -> dict[str, Any]:
        """The IndexModel the control plane answers with (2026-07: ``schema`` + ``deployment``)."""
        ready = self.ready()
        return {
            "name": self.name,
            # An initializing index may have no host yet (pinecone 10.2 ``Pinecone.index`` documents this).
            "host": self.host if ready else "",
            "status": {"ready": True, "state": "Ready"} if ready else {"ready": False, "state": "Initializing"},
            "deployment": dict(self.deployment),
            # A vectors-API index reports both reserved fields, whichever way it was created.
            "schema": {
                "fields": {
                    "_values": {
                        "type": "dense_vector",
                        "dimension": self.dimension,
                        "metric": self.metric,
                        "description": None,
                    },
                    "_sparse_values": {"type": "sparse_vector", "description": None},
                }
            },
            "read_capacity": {
                "mode": "OnDemand",
                "status": {"state": "Ready", "current_replicas": None, "current_shards": None},
            },
            "deletion_protection": self.deletion_protection,
            "tags": dict(self.tags) if self.tags else None,
        }


def _namespace_key(name: Any) -> str:
    if name is None or name == DEFAULT_NAMESPACE:
        return ""
    if not isinstance(name, str):
        raise _invalid("namespace must be a string")
    return name


def _namespace_label(key: str) -> str:
    return key or DEFAULT_NAMESPACE


def _invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _retry_after(seconds: float) -> str:
    return str(max(1, round(seconds))) if seconds > 0 else "0"


# ---- metadata filters -------------------------------------------------------------------------------------------
_COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
_FIELD_OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", *_COMPARISONS)


def validate_filter(expr: Any, where: str = "filter") -> None:
    """Reject what the service rejects: unknown operators, wrong operand types, empty $and/$or."""
    if not isinstance(expr, dict):
        raise _invalid(f"{where} must be an object")
    for key, value in expr.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise _invalid(f"{where}.{key} must be a non-empty array of filters")
            for i, sub in enumerate(value):
                validate_filter(sub, f"{where}.{key}[{i}]")
        elif key.startswith("$"):
            raise _invalid(f"{where}: unknown top-level operator {key}")
        elif isinstance(value, dict):
            if not value:
                raise _invalid(f"{where}.{key} must contain at least one operator")
            for op, operand in value.items():
                _validate_operator(f"{where}.{key}", op, operand)
        else:
            _validate_operator(f"{where}.{key}", "$eq", value)


def _validate_operator(where: str, op: str, operand: Any) -> None:
    scalar = isinstance(operand, str | bool) or _is_number(operand)
    if op in ("$eq", "$ne"):
        if not scalar:
            raise _invalid(f"{where}: {op} needs a string, number or boolean")
    elif op in _COMPARISONS:
        if not _is_number(operand):
            raise _invalid(f"{where}: {op} needs a number")
    elif op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand:
            raise _invalid(f"{where}: {op} needs a non-empty array")
        if not all(isinstance(x, str | bool) or _is_number(x) for x in operand):
            raise _invalid(f"{where}: {op} values must be strings, numbers or booleans")
    elif op == "$exists":
        if not isinstance(operand, bool):
            raise _invalid(f"{where}: $exists needs a boolean")
    else:
        raise _invalid(f"{where}: unknown operator {op}; supported: {', '.join(_FIELD_OPERATORS)}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)
    return isinstance(a, str) and isinstance(b, str) and a == b


def matches_filter(expr: dict[str, Any], metadata: dict[str, Any] | None) -> bool:
    """Evaluate a (validated) filter; several keys in one object are ANDed. A list field matches $eq/$in when
    any element does, and $ne/$nin when none does; a missing field fails $eq/$in/comparisons and passes $ne/$nin."""
    meta = metadata or {}
    for key, value in expr.items():
        if key == "$and":
            ok = all(matches_filter(sub, meta) for sub in value)
        elif key == "$or":
            ok = any(matches_filter(sub, meta) for sub in value)
        elif isinstance(value, dict):
            ok = all(_field_matches(meta, key, op, operand) for op, operand in value.items())
        else:
            ok = _field_matches(meta, key, "$eq", value)
        if not ok:
            return False
    return True


def _field_matches(meta: dict[str, Any], key: str, op: str, operand: Any) -> bool:
    present = key in meta
    if op == "$exists":
        return present == bool(operand)
    if not present:
        return op in ("$ne", "$nin")
    value = meta[key]
    items = value if isinstance(value, list) else [value]
    if op == "$eq":
        return any(_same(v, operand) for v in items)
    if op == "$ne":
        return not any(_same(v, operand) for v in items)
    if op == "$in":
        return any(_same(v, x) for v in items for x in operand)
    if op == "$nin":
        return not any(_same(v, x) for v in items for x in operand)
    if not _is_number(value):
        return False
    number, bound = float(value), float(operand)
    if op == "$gt":
        return number > bound
    if op == "$gte":
        return number >= bound
    if op == "$lt":
        return number < bound
    return number <= bound


# ---- scoring ------------------------------------------------------------------------------------------------------
def score(metric: str, query: tuple[float, ...], values: tuple[float, ...]) -> float:
    """Cosine similarity, dot product, or (like Pinecone) the squared euclidean distance."""
    if metric == "euclidean":
        return sum((a - b) ** 2 for a, b in zip(query, values, strict=True))
    dot = sum(a * b for a, b in zip(query, values, strict=True))
    if metric == "dotproduct":
        return dot
    norms = math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in values))
    return dot / norms if norms else 0.0


class _PineconeEmulator(Emulator):
    """Both planes answer with a request id, as the service does."""

    def response_headers(self) -> dict[str, str]:
        return {"X-Pinecone-Request-Id": secrets.token_hex(8)}


# ---- control plane ------------------------------------------------------------------------------------------------
class PineconeEmulator(_PineconeEmulator):
    """The control plane, owner of every index, its data-plane server, the shared faults and the request log.

    ``host_scheme`` decides how an index's ``host`` is advertised: the service sends a bare host name (which
    the SDK reads as ``https://``); the emulator's index servers speak plain HTTP, so by default it sends
    ``http://127.0.0.1:PORT`` — the SDK keeps a scheme it is given, so ``pc.index(name=…)`` reaches the emulator.
    Pass ``host_scheme=None`` to get the service's bare ``127.0.0.1:PORT``.
    """

    name = "pinecone"

    def __init__(
        self,
        api_key: str = "pc_emulator_key",
        *,
        api_versions: Iterable[str] = (API_VERSION,),
        advertise_host: str | None = None,
        host_scheme: str | None = "http",
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.api_versions = frozenset(api_versions)
        self.host_scheme = host_scheme
        self._advertise_host = advertise_host
        self._bind_host = "127.0.0.1"
        self.indexes: dict[str, IndexState] = {}
        self._index_servers: dict[str, IndexServer] = {}
        self.add_route("GET", "/indexes", self._list_indexes)
        self.add_route("POST", "/indexes", self._create_index)
        self.add_route("GET", "/indexes/{index_name}", self._describe_index)
        self.add_route("DELETE", "/indexes/{index_name}", self._delete_index)
        self.add_route("PATCH", "/indexes/{index_name}", self._configure_index)
        self.add_route("POST", "/embed", self._embed)

    def is_write(self, method: str, path: str) -> bool:
        # The data planes draw their faults here; only they serve these paths.
        return method == "POST" and path in WRITE_PATHS

    # ---- service shape -----------------------------------------------------------------------------------------
    def error_body(self, error: ApiError) -> Any:
        if error.status == 401:
            return b"Invalid API key"
        code = _BASE_CODES.get(error.code, error.code)
        return {"error": {"code": code, "message": error.message}, "status": error.status}

    def fault_error(self, outcome: str) -> ApiError:
        if outcome == "429":
            headers = {"Retry-After": _retry_after(self.faults.retry_after_s)}
            return ApiError(429, "RESOURCE_EXHAUSTED", "Too many requests. Please retry shortly.", headers)
        if outcome == "503":
            return ApiError(503, "SERVICE_UNAVAILABLE", "Service unavailable")
        return ApiError(500, "UNKNOWN", "Internal server error")

    def check_request(self, request: Request) -> None:
        check_headers(self, request)

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._bind_host = host
        return super().start(host, port)

    def serve_forever(self, host: str, port: int) -> None:
        self._bind_host = host
        super().serve_forever(host, port)

    def stop(self) -> None:
        with self.lock:
            servers = list(self._index_servers.values())
            self._index_servers.clear()
        for server in servers:
            server.stop()
        super().stop()

    def reset(self) -> None:
        servers = list(self._index_servers.values())
        self._index_servers.clear()
        self.indexes.clear()
        for server in servers:
            server.stop()

    def state(self) -> Any:
        return {
            "indexes": {
                name: {
                    "config": index.model(),
                    "namespaces": {
                        _namespace_label(key): {
                            "vector_count": len(vectors),
                            "vectors": [
                                {
                                    "id": v.id,
                                    "values": list(v.values),
                                    "metadata": v.metadata,
                                    **({"sparse_values": v.sparse_values} if v.sparse_values else {}),
                                }
                                for v in sorted(vectors.values(), key=lambda v: v.id)
                            ],
                        }
                        for key, vectors in sorted(index.namespaces.items())
                    },
                }
                for name, index in sorted(self.indexes.items())
            }
        }

    # ---- in-process helpers for tests --------------------------------------------------------------------------
    def index_names(self) -> list[str]:
        with self.lock:
            return sorted(self.indexes)

    def index_host(self, name: str) -> str:
        """The index's data-plane URL (always with ``http://``), for ``pc.index(host=…)``."""
        with self.lock:
            host = self.indexes[name].host
        return host if "://" in host else f"http://{host}"

    def vectors(self, index_name: str, namespace: str = "") -> dict[str, StoredVector]:
        """A copy of one namespace's records (``""`` or ``"__default__"`` is the default namespace)."""
        with self.lock:
            return dict(self.indexes[index_name].namespaces.get(_namespace_key(namespace), {}))

    # ---- handlers -----------------------------------------------------------------------------------------------
    def _list_indexes(self, request: Request) -> Response:
        with self.lock:
            return Response(200, {"indexes": [i.model() for _, i in sorted(self.indexes.items())]})

    def _describe_index(self, request: Request) -> Response:
        with self.lock:
            return Response(200, self._index(request.params["index_name"]).model())

    def _index(self, name: str) -> IndexState:
        index = self.indexes.get(name)
        if index is None:
            raise ApiError(404, "NOT_FOUND", f"Index {name} not found.")
        return index

    def _create_index(self, request: Request) -> Response:
        body = request.body
        if not isinstance(body, dict):
            raise ApiError(422, "UNPROCESSABLE_ENTITY", "Failed to deserialize the JSON body: expected an object")
        unknown = sorted(set(body) - set(_CREATE_FIELDS))
        if unknown:
            raise ApiError(
                422,
                "UNPROCESSABLE_ENTITY",
                f"Failed to deserialize the JSON body into the target type: unknown field `{unknown[0]}`, "
                f"expected one of {', '.join(f'`{f}`' for f in _CREATE_FIELDS)}",
            )
        dimension, metric = _parse_schema(body.get("schema"))
        deployment = _parse_deployment(body.get("deployment"))
        protection = body.get("deletion_protection") or "disabled"
        if protection not in ("disabled", "enabled"):
            raise _invalid("deletion_protection must be `disabled` or `enabled`")
        tags = body.get("tags")
        if tags is not None and not (isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())):
            raise _invalid("tags must be an object of string values")
        name = body.get("name")
        if name is None:
            name = f"index-{secrets.token_hex(4)}"
        if not isinstance(name, str) or not _INDEX_NAME.match(name):
            raise _invalid(
                "Index name must be 1-45 characters long and contain only lowercase alphanumeric characters "
                "or hyphens, and must not begin or end with a hyphen."
            )
        with self.lock:
            if name in self.indexes:
                raise ApiError(409, "ALREADY_EXISTS", "Resource already exists.")
            index = IndexState(name, dimension, metric, deployment, protection, dict(tags) if tags else None)
            index.ready_at = time.monotonic() + self.faults.index_init_s
            server = IndexServer(self, index)
            port = server.start_on(self._bind_host)
            advertised = f"{self._advertised_host()}:{port}"
            index.host = f"{self.host_scheme}://{advertised}" if self.host_scheme else advertised
            self.indexes[name] = index
            self._index_servers[name] = server
            return Response(201, index.model())

    def _embed(self, request: Request) -> Response:
        """``POST /embed``: deterministic embeddings (hashed words, so texts sharing words lie close) in the
        response shapes the SDK decodes: ``{"model", "vector_type", "data": [...], "usage": {"total_tokens"}}``
        with ``{"values", "vector_type": "dense"}`` or ``{"sparse_values", "sparse_indices", "vector_type":
        "sparse"}`` items (pinecone 10.x ``models/inference/embed.py``)."""
        body = request.body
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object")
        model = body.get("model")
        spec = EMBED_MODELS.get(model) if isinstance(model, str) else None
        if spec is None:
            raise ApiError(404, "NOT_FOUND", f"Model '{model}' not found")
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise _invalid("inputs must be a non-empty array")
        if len(inputs) > MAX_EMBED_INPUTS:
            raise _invalid(
                f"Batch size exceeds the limit of {MAX_EMBED_INPUTS} inputs for model '{model}', got {len(inputs)}"
            )
        texts = []
        for i, item in enumerate(inputs):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise _invalid(f"inputs[{i}] must be an object with a `text` string")
            texts.append(item["text"])
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise _invalid("parameters must be an object")
        input_type = parameters.get("input_type")
        if input_type is not None and input_type not in ("query", "passage"):
            raise _invalid(f"input_type must be `query` or `passage`, got {input_type!r}")
        words = [re.findall(r"\w+", text.lower()) for text in texts]
        tokens = sum(len(w) + 2 for w in words)
        if spec["vector_type"] == "dense":
            dimension = int(parameters.get("dimension") or spec["dimension"])
            data: list[dict[str, Any]] = [
                {"values": _dense_embedding(w, dimension), "vector_type": "dense"} for w in words
            ]
        else:
            data = [{**_sparse_embedding(w), "vector_type": "sparse"} for w in words]
        return Response(
            200, {"model": model, "vector_type": spec["vector_type"], "data": data, "usage": {"total_tokens": tokens}}
        )

    def _advertised_host(self) -> str:
        if self._advertise_host:
            return self._advertise_host
        return "127.0.0.1" if self._bind_host in ("0.0.0.0", "", "::") else self._bind_host

    def _delete_index(self, request: Request) -> Response:
        with self.lock:
            index = self._index(request.params["index_name"])
            if index.deletion_protection == "enabled":
                raise ApiError(
                    403,
                    "FORBIDDEN",
                    "Deletion protection is enabled for this index. Disable deletion protection before retrying.",
                )
            del self.indexes[index.name]
            server = self._index_servers.pop(index.name, None)
        if server is not None:
            server.stop()
        return Response(202, None)

    def _configure_index(self, request: Request) -> Response:
        body = request.body
        if not isinstance(body, dict):
            raise ApiError(422, "UNPROCESSABLE_ENTITY", "Failed to deserialize the JSON body: expected an object")
        unsupported = sorted(set(body) - {"deletion_protection", "tags"})
        if unsupported:
            raise _invalid(f"the emulator can configure only deletion_protection and tags, not {unsupported}")
        with self.lock:
            index = self._index(request.params["index_name"])
            if "deletion_protection" in body:
                if body["deletion_protection"] not in ("disabled", "enabled"):
                    raise _invalid("deletion_protection must be `disabled` or `enabled`")
                index.deletion_protection = body["deletion_protection"]
            if isinstance(body.get("tags"), dict):
                tags = dict(index.tags or {})
                for key, value in body["tags"].items():
                    if value == "":
                        tags.pop(key, None)
                    else:
                        tags[key] = str(value)
                index.tags = tags or None
            return Response(200, index.model())


def check_headers(emulator: PineconeEmulator, request: Request) -> None:
    """Authentication first (the gateway answers 401 before anything else), then the API version."""
    if request.headers.get("api-key") != emulator.api_key:
        raise ApiError(401, "UNAUTHENTICATED", "Invalid API key")
    version = request.headers.get("x-pinecone-api-version")
    if version is None:
        raise _invalid("Missing required header X-Pinecone-Api-Version")
    if version not in emulator.api_versions:
        supported = ", ".join(sorted(emulator.api_versions))
        raise _invalid(f"Unsupported API version {version!r}; this emulator serves {supported}")


def _parse_schema(schema: Any) -> tuple[int, str]:
    """A classic vectors-API schema (``_values`` dense_vector, optionally ``_sparse_values``); anything else is a
    document index the emulator does not serve, and says so."""
    if schema is None:
        raise ApiError(
            422,
            "UNPROCESSABLE_ENTITY",
            "Failed to deserialize the JSON body into the target type: missing field `schema`",
        )
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, dict):
        raise ApiError(422, "UNPROCESSABLE_ENTITY", "Failed to deserialize the JSON body: missing field `fields`")
    if not fields:
        raise _invalid("schema.fields must declare at least one field")
    dense = fields.get("_values")
    if not isinstance(dense, dict) or set(fields) - {"_values", "_sparse_values"}:
        raise _invalid(
            "The emulator serves only vectors-API indexes: schema.fields must be `_values` (dense_vector) and "
            "optionally `_sparse_values`"
        )
    if dense.get("type") != "dense_vector":
        raise _invalid("schema.fields._values must have type `dense_vector`")
    for required in ("dimension", "metric"):
        if required not in dense:
            raise ApiError(
                422,
                "UNPROCESSABLE_ENTITY",
                f"Failed to deserialize the JSON body into the target type: missing field `{required}`",
            )
    dimension, metric = dense["dimension"], dense["metric"]
    if not isinstance(dimension, int) or isinstance(dimension, bool):
        raise ApiError(
            422, "UNPROCESSABLE_ENTITY", "Failed to deserialize the JSON body: `dimension` is not an integer"
        )
    if not 1 <= dimension <= MAX_DIMENSION:
        raise _invalid(f"Dimension must be between 1 and {MAX_DIMENSION}, got {dimension}")
    if metric not in METRICS:
        raise _invalid(f"Invalid metric {metric!r}: must be one of cosine, dotproduct, euclidean")
    return dimension, metric


def _parse_deployment(deployment: Any) -> dict[str, Any]:
    if deployment is None:
        return {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"}
    if not isinstance(deployment, dict):
        raise ApiError(
            422, "UNPROCESSABLE_ENTITY", "Failed to deserialize the JSON body: `deployment` is not an object"
        )
    if deployment.get("deployment_type") != "managed":
        raise _invalid("The emulator serves only managed (serverless) deployments")
    cloud, region = deployment.get("cloud"), deployment.get("region")
    if cloud not in CLOUDS or not isinstance(region, str) or not region:
        raise ApiError(404, "NOT_FOUND", f"Resource cloud: {cloud} region: {region} not found.")
    return {"deployment_type": "managed", "cloud": cloud, "region": region}


# ---- data plane ---------------------------------------------------------------------------------------------------
class IndexServer(_PineconeEmulator):
    """One index's data plane on its own port. It shares the control plane's lock, faults and request log."""

    name = "pinecone-index"

    def __init__(self, control: PineconeEmulator, index: IndexState) -> None:
        self._control_plane = control
        super().__init__()
        self.lock = control.lock
        self.requests = control.requests
        self.index = index
        routes: list[tuple[str, str, Callable[[Request], Response]]] = [
            ("POST", "/vectors/upsert", self._upsert),
            ("GET", "/vectors/fetch", self._fetch),
            ("POST", "/vectors/fetch_by_metadata", self._fetch_by_metadata),
            ("POST", "/vectors/delete", self._delete),
            ("POST", "/vectors/update", self._update),
            ("GET", "/vectors/list", self._list),
            ("POST", "/query", self._query),
            ("POST", "/describe_index_stats", self._stats),
            ("GET", "/namespaces", self._list_namespaces),
            ("GET", "/namespaces/{namespace}", self._describe_namespace),
            ("DELETE", "/namespaces/{namespace}", self._delete_namespace),
        ]
        for method, pattern, handler in routes:
            self.add_route(method, pattern, handler)

    # Faults belong to the control plane, so one setting covers both planes.
    @property
    def faults(self) -> Any:
        return self._control_plane.faults

    @faults.setter
    def faults(self, value: Any) -> None:
        return  # the base constructor assigns its own; the control plane's are the ones that count

    def _draw_fault(self, path: str) -> str:
        return self._control_plane._draw_fault(path)

    def _draw_after_apply(self, method: str, path: str) -> str | None:
        return self._control_plane._draw_after_apply(method, path)

    @property
    def _lag(self) -> float:
        return float(self.faults.read_lag_s)

    def _read_headers(self, namespace: str) -> dict[str, str]:
        return {"x-pinecone-max-indexed-lsn": str(self.index.max_indexed_lsn(namespace, self._lag))}

    def _control(self, method: str, path: str, raw: bytes) -> Response:
        return self._control_plane._control(method, path, raw)

    def start_on(self, host: str) -> int:
        self.start(host, 0)
        assert self._server is not None
        return int(self._server.server_address[1])

    def error_body(self, error: ApiError) -> Any:
        if error.status == 401:
            return b"Unauthorized"
        code = _BASE_CODES.get(error.code, error.code)
        return {"code": _GRPC_CODES.get(code, 2), "message": error.message, "details": []}

    def fault_error(self, outcome: str) -> ApiError:
        if outcome == "429":
            headers = {"Retry-After": _retry_after(self.faults.retry_after_s)}
            message = f"Request failed. You've reached the max request rate for index {self.index.name}. Retry."
            return ApiError(429, "RESOURCE_EXHAUSTED", message, headers)
        if outcome == "503":
            return ApiError(503, "UNAVAILABLE", "Service unavailable")
        return ApiError(500, "INTERNAL", "Internal error")

    def check_request(self, request: Request) -> None:
        check_headers(self._control_plane, request)
        if not self.index.ready():
            raise ApiError(503, "UNAVAILABLE", f"Index {self.index.name} is not ready; it is still initializing.")

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _body(self, request: Request) -> dict[str, Any]:
        if not isinstance(request.body, dict):
            raise _invalid("The request body must be a JSON object")
        return request.body

    def _values(self, raw: Any, where: str) -> tuple[float, ...]:
        if not isinstance(raw, list) or not all(_is_number(x) for x in raw):
            raise _invalid(f"{where}: values must be an array of numbers")
        if len(raw) != self.index.dimension:
            raise _invalid(
                f"Vector dimension {len(raw)} does not match the dimension of the index {self.index.dimension}"
            )
        return tuple(float(x) for x in raw)

    # ---- vectors ------------------------------------------------------------------------------------------------
    def _upsert(self, request: Request) -> Response:
        if len(request.raw_body) > MAX_REQUEST_BYTES:
            raise ApiError(
                413,
                "OUT_OF_RANGE",
                f"Request size {len(request.raw_body)} bytes exceeds the maximum supported size of "
                f"{MAX_REQUEST_BYTES} bytes (2 MB)",
            )
        body = self._body(request)
        vectors = body.get("vectors")
        if not isinstance(vectors, list) or not vectors:
            raise _invalid("vectors must be a non-empty array")
        if len(vectors) > MAX_UPSERT_VECTORS:
            raise _invalid(
                f"Upsert request contains {len(vectors)} vectors, exceeding the limit of {MAX_UPSERT_VECTORS}"
            )
        namespace = _namespace_key(body.get("namespace"))
        parsed = [self._parse_vector(raw, f"vectors[{i}]") for i, raw in enumerate(vectors)]
        # Validated as a whole before anything is written: a rejected request changes nothing.
        with self.lock:
            for vector in parsed:
                self.index.put(namespace, vector)
            lsn = self.index.commit(namespace)
        return Response(200, {"upsertedCount": len(parsed)}, {"x-pinecone-request-lsn": str(lsn)})

    def _parse_vector(self, raw: Any, where: str) -> StoredVector:
        if not isinstance(raw, dict):
            raise _invalid(f"{where} must be an object")
        vector_id = _check_id(raw.get("id"), f"{where}.id")
        if "values" not in raw and "sparseValues" not in raw:
            raise _invalid(f"{where}: a vector needs values")
        values = self._values(raw.get("values"), where)
        if all(abs(x) < 1e-8 for x in values):
            raise _invalid(f"{where}: Dense vectors must contain at least one non-zero value")
        sparse = raw.get("sparseValues")
        if sparse is not None:
            _check_sparse(sparse, f"{where}.sparseValues")
        metadata = raw.get("metadata")
        if metadata is not None:
            _check_metadata(metadata, where)
        return StoredVector(vector_id, values, metadata or None, sparse)

    def _fetch(self, request: Request) -> Response:
        ids = request.query.get("ids", [])
        if not ids:
            raise _invalid("ids must contain at least one id")
        if len(ids) > MAX_IDS_PER_REQUEST:
            raise _invalid(f"Fetch request contains {len(ids)} ids, exceeding the limit of {MAX_IDS_PER_REQUEST}")
        for i, vector_id in enumerate(ids):
            _check_id(vector_id, f"ids[{i}]")
        raw_namespace = request.query.get("namespace", [""])[0]
        namespace = _namespace_key(raw_namespace)
        with self.lock:
            stored = self.index.view(namespace, float(self.faults.read_by_id_lag_s))
            found = {i: _vector_json(stored[i], True, True) for i in ids if i in stored}
        return Response(200, {"vectors": found, "namespace": raw_namespace, "usage": {"readUnits": 1}})

    def _fetch_by_metadata(self, request: Request) -> Response:
        body = self._body(request)
        expr = body.get("filter")
        if not isinstance(expr, dict) or not expr:
            raise _invalid("Empty filter provided for fetch by metadata request")
        validate_filter(expr)
        limit = body.get("limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise _invalid("limit must be between 1 and 10000")
        raw_namespace = body.get("namespace") or ""
        with self.lock:
            stored = self.index.view(_namespace_key(raw_namespace), self._lag)
            hits = sorted(i for i, v in stored.items() if matches_filter(expr, v.metadata))
            start = _after_token(body.get("paginationToken"), hits)
            page = hits[start : start + limit]
            result: dict[str, Any] = {
                "vectors": {i: _vector_json(stored[i], True, True) for i in page},
                "namespace": raw_namespace,
                "usage": {"readUnits": 1},
            }
        if start + limit < len(hits):
            result["pagination"] = {"next": _token(page[-1])}
        return Response(200, result)

    def _delete(self, request: Request) -> Response:
        body = self._body(request)
        ids, delete_all, expr = body.get("ids"), body.get("deleteAll", False), body.get("filter")
        if delete_all is not True and delete_all is not False:
            raise _invalid("deleteAll must be a boolean")
        if ids is None and expr is None and not delete_all:
            raise _invalid("Delete request must specify ids, filter or deleteAll")
        if delete_all and (ids is not None or expr is not None):
            raise _invalid("deleteAll cannot be combined with ids or filter")
        if ids is not None and expr is not None:
            raise _invalid("ids and filter cannot be combined in one delete request")
        if ids is not None:
            if not isinstance(ids, list) or not ids:
                raise _invalid("ids must be a non-empty array")
            if len(ids) > MAX_IDS_PER_REQUEST:
                raise _invalid(f"Delete request contains {len(ids)} ids, exceeding the limit of {MAX_IDS_PER_REQUEST}")
            for i, vector_id in enumerate(ids):
                _check_id(vector_id, f"ids[{i}]")
        if expr is not None:
            if not isinstance(expr, dict) or not expr:
                raise _invalid("Delete with empty metadata filter is not allowed")
            validate_filter(expr)
        namespace = _namespace_key(body.get("namespace"))
        with self.lock:
            stored = self.index.namespaces.get(namespace)
            if stored is None:
                # Serverless indexes answer a delete in a namespace that does not exist with 404.
                raise ApiError(404, "NOT_FOUND", "Namespace not found")
            if delete_all:
                self.index.drop_namespace(namespace)
            elif ids is not None:
                for vector_id in ids:
                    self.index.remove(namespace, vector_id)
            else:
                assert expr is not None
                for vector_id in [i for i, v in stored.items() if matches_filter(expr, v.metadata)]:
                    self.index.remove(namespace, vector_id)
            lsn = self.index.commit(namespace)
        return Response(200, {}, {"x-pinecone-request-lsn": str(lsn)})

    def _update(self, request: Request) -> Response:
        body = self._body(request)
        vector_id, expr = body.get("id"), body.get("filter")
        if (vector_id is None) == (expr is None):
            raise _invalid("Update request must specify exactly one of id or filter")
        set_metadata = body.get("setMetadata")
        if set_metadata is not None:
            _check_metadata(set_metadata, "setMetadata")
        namespace = _namespace_key(body.get("namespace"))
        if vector_id is not None:
            _check_id(vector_id, "id")
            values = self._values(body["values"], "values") if "values" in body else None
            with self.lock:
                stored = self.index.namespaces.get(namespace, {})
                old = stored.get(vector_id)
                if old is None:
                    raise ApiError(404, "NOT_FOUND", f"Vector with id {vector_id} not found")
                self.index.put(namespace, _updated(old, values, set_metadata))
                lsn = self.index.commit(namespace)
            return Response(200, {}, {"x-pinecone-request-lsn": str(lsn)})
        if "values" in body or "sparseValues" in body:
            raise _invalid("An update by filter cannot set values")
        if not isinstance(expr, dict) or not expr:
            raise _invalid("Update with empty metadata filter is not allowed")
        validate_filter(expr)
        with self.lock:
            stored = self.index.namespaces.get(namespace, {})
            hits = [i for i, v in stored.items() if matches_filter(expr, v.metadata)]
            if not body.get("dryRun"):
                for hit in hits:
                    self.index.put(namespace, _updated(stored[hit], None, set_metadata))
            lsn = self.index.commit(namespace)
        return Response(200, {"matchedRecords": len(hits)}, {"x-pinecone-request-lsn": str(lsn)})

    def _list(self, request: Request) -> Response:
        prefix = request.query.get("prefix", [""])[0]
        if len(prefix) > MAX_ID_LENGTH or not prefix.isascii():
            raise _invalid("prefix must be at most 512 ASCII characters")
        raw_limit = request.query.get("limit", [str(MAX_LIST_LIMIT)])[0]
        try:
            limit = int(raw_limit)
        except ValueError:
            raise _invalid(f"limit must be an integer, got {raw_limit!r}") from None
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise _invalid(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
        raw_namespace = request.query.get("namespace", [""])[0]
        token = request.query.get("paginationToken", [None])[0]
        with self.lock:
            stored = self.index.view(_namespace_key(raw_namespace), self._lag)
            # Bitwise "C" collation, as the service sorts.
            ids = sorted((i for i in stored if i.startswith(prefix)), key=lambda i: i.encode())
            headers = self._read_headers(_namespace_key(raw_namespace))
        start = _after_token(token, ids)
        page = ids[start : start + limit]
        result: dict[str, Any] = {
            "vectors": [{"id": i} for i in page],
            "namespace": raw_namespace,
            "usage": {"readUnits": 1},
        }
        if start + limit < len(ids):
            result["pagination"] = {"next": _token(page[-1])}
        return Response(200, result, headers)

    def _query(self, request: Request) -> Response:
        body = self._body(request)
        top_k = body.get("topK")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
            raise _invalid(f"topK must be an integer between 1 and {MAX_TOP_K}, got {top_k!r}")
        vector, vector_id = body.get("vector"), body.get("id")
        if vector is not None and vector_id is not None:
            raise _invalid("Cannot provide both 'id' and 'vector' in a query")
        if vector is None and vector_id is None:
            raise _invalid("A query needs either 'vector' or 'id'")
        expr = body.get("filter")
        if expr is not None:
            validate_filter(expr)
        include_values, include_metadata = bool(body.get("includeValues")), bool(body.get("includeMetadata"))
        raw_namespace = body.get("namespace") or ""
        with self.lock:
            stored = self.index.view(_namespace_key(raw_namespace), self._lag)
            headers = self._read_headers(_namespace_key(raw_namespace))
            if vector is not None:
                if not isinstance(vector, list) or not all(_is_number(x) for x in vector):
                    raise _invalid("vector must be an array of numbers")
                if len(vector) != self.index.dimension:
                    raise _invalid(
                        f"Query vector dimension {len(vector)} does not match the dimension of the index "
                        f"{self.index.dimension}"
                    )
                query = tuple(float(x) for x in vector)
            else:
                target = stored.get(_check_id(vector_id, "id"))
                if target is None:
                    return Response(200, {"results": [], "matches": [], "namespace": raw_namespace}, headers)
                query = target.values
            metric = self.index.metric
            scored = [
                (score(metric, query, v.values), v)
                for v in stored.values()
                if expr is None or matches_filter(expr, v.metadata)
            ]
        # Higher is more similar, except for euclidean where the score is a distance.
        descending = metric != "euclidean"
        scored.sort(key=lambda pair: (-pair[0] if descending else pair[0], pair[1].id))
        matches = [
            {"score": s, **_vector_json(v, include_values, include_metadata, empty_values=True)}
            for s, v in scored[:top_k]
        ]
        answer = {
            "results": [],
            "matches": matches,
            "namespace": raw_namespace,
            "usage": {"readUnits": 1 + len(matches) // 50},
        }
        size = len(json.dumps(answer).encode())
        if size > MAX_QUERY_RESPONSE_BYTES:
            raise _invalid(
                f"Query result size {size} bytes exceeds the maximum result size of {MAX_QUERY_RESPONSE_BYTES} "
                "bytes (4MB). Choose a lower top_k, or set include_metadata=False or include_values=False."
            )
        return Response(200, answer, headers)

    def _stats(self, request: Request) -> Response:
        body = request.body if isinstance(request.body, dict) else {}
        if body.get("filter"):
            raise _invalid(
                "Serverless and starter indexes do not support describing index stats with metadata filtering"
            )
        with self.lock:
            lag = self._lag
            views = {key: self.index.view(key, lag) for key in self.index.namespace_keys(lag)}
            namespaces = {_namespace_label(key): {"vectorCount": len(vectors)} for key, vectors in views.items()}
            total = sum(len(v) for v in views.values())
        return Response(
            200,
            {
                "namespaces": namespaces,
                "dimension": self.index.dimension,
                "indexFullness": 0.0,
                "totalVectorCount": total,
                "metric": self.index.metric,
                "vectorType": "dense",
            },
        )

    # ---- namespaces ---------------------------------------------------------------------------------------------
    def _list_namespaces(self, request: Request) -> Response:
        prefix = request.query.get("prefix", [""])[0]
        raw_limit = request.query.get("limit", ["100"])[0]
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            raise _invalid(f"limit must be between 1 and 100, got {raw_limit!r}")
        limit = int(raw_limit)
        with self.lock:
            lag = self._lag
            names = sorted(
                (_namespace_label(k), len(self.index.view(k, lag)))
                for k in self.index.namespace_keys(lag)
                if _namespace_label(k).startswith(prefix)
            )
        start = _after_token(request.query.get("paginationToken", [None])[0], [n for n, _ in names])
        page = names[start : start + limit]
        result: dict[str, Any] = {
            "namespaces": [{"name": n, "record_count": str(count)} for n, count in page],
            "total_count": len(names),
        }
        if start + limit < len(names):
            result["pagination"] = {"next": _token(page[-1][0])}
        return Response(200, result)

    def _describe_namespace(self, request: Request) -> Response:
        key = _namespace_key(request.params["namespace"])
        with self.lock:
            stored = self.index.namespaces.get(key)
            if stored is None and key:
                raise ApiError(404, "NOT_FOUND", "Namespace not found")
            count = len(stored or {})
        return Response(200, {"name": _namespace_label(key), "record_count": str(count)})

    def _delete_namespace(self, request: Request) -> Response:
        key = _namespace_key(request.params["namespace"])
        with self.lock:
            if key not in self.index.namespaces:
                raise ApiError(404, "NOT_FOUND", "Namespace not found")
            self.index.drop_namespace(key)
            self.index.commit(key)
        return Response(200, {})


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")


def _dense_embedding(words: list[str], dimension: int) -> list[float]:
    vector = [0.0] * dimension
    for word in words or [""]:
        h = _word_hash(word)
        vector[h % dimension] += 1.0 if (h >> 32) & 1 else -1.0
    vector[0] += 1e-3  # never the zero vector, which an index refuses
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def _sparse_embedding(words: list[str]) -> dict[str, Any]:
    weights: dict[int, float] = {}
    for word in words:
        index = _word_hash(word) % 4_294_967_295
        weights[index] = weights.get(index, 0.0) + 1.0
    indices = sorted(weights)
    return {"sparse_values": [weights[i] / len(words) for i in indices], "sparse_indices": indices}


def _check_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{where}: vector id must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise _invalid(f"{where}: vector id must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if not value.isascii() or "\x00" in value:
        raise _invalid(f"{where}: vector id must contain only ASCII characters and no NUL")
    return value


def _check_sparse(sparse: Any, where: str) -> None:
    if (
        not isinstance(sparse, dict)
        or not isinstance(sparse.get("indices"), list)
        or not isinstance(sparse.get("values"), list)
    ):
        raise _invalid(f"{where} must have indices and values arrays")
    if len(sparse["indices"]) != len(sparse["values"]):
        raise _invalid(f"{where}: indices and values must have the same length")


def _check_metadata(metadata: Any, where: str) -> None:
    if not isinstance(metadata, dict):
        raise _invalid(f"{where}: metadata must be an object")
    for key, value in metadata.items():
        if key.startswith("$"):
            raise _invalid(f"{where}: metadata field {key!r} may not begin with '$'")
        ok = isinstance(value, str | bool) or _is_number(value)
        ok = ok or (isinstance(value, list) and all(isinstance(x, str) for x in value))
        if not ok:
            raise _invalid(
                f"{where}: metadata field {key!r}: Metadata value must be a string, number, boolean or list of strings"
            )
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise _invalid(f"{where}: Metadata size is {size} bytes, which exceeds the limit of {MAX_METADATA_BYTES} bytes")


def _updated(old: StoredVector, values: tuple[float, ...] | None, set_metadata: dict[str, Any] | None) -> StoredVector:
    metadata = dict(old.metadata or {})
    metadata.update(set_metadata or {})
    return StoredVector(old.id, values if values is not None else old.values, metadata or None, old.sparse_values)


def _vector_json(
    vector: StoredVector, include_values: bool, include_metadata: bool, *, empty_values: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": vector.id}
    if include_values:
        out["values"] = list(vector.values)
    elif empty_values:
        out["values"] = []  # the service sends an empty array when values were not asked for
    if include_values and vector.sparse_values:
        out["sparseValues"] = vector.sparse_values
    if include_metadata and vector.metadata:
        out["metadata"] = vector.metadata
    return out


def _token(last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode()


def _after_token(token: str | None, ordered: list[str]) -> int:
    """The position just past the id a pagination token names (tokens are opaque to clients)."""
    if token is None or token == "":
        return 0
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _invalid("Invalid pagination token") from None
    return sum(1 for i in ordered if i.encode() <= str(after).encode())


def create(api_key: str = "pc_emulator_key") -> PineconeEmulator:
    """What ``python -m tests.emulators pinecone`` runs."""
    return PineconeEmulator(api_key)
