"""HTTP API over a :class:`~unisrec.serving.recommender.Recommender` (FastAPI, served by uvicorn).

Endpoints (OpenAPI docs at /docs, schema at /openapi.json, a demo page at /):

- ``POST /recommend`` ``{"history": ["id", ...], "k": 10, "exclude_seen": false, "item_texts": {}}``
  -> ``{"items": [{"id", "score", "text"}, ...]}``
- ``POST /items`` ``{"items": {"id": "text", ...}}`` -> ``{"added", "updated", "num_items"}``; needs
  the API key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``)
- ``GET /items/search?q=words&k=20`` -> ``{"items": [{"id", "text"}, ...], "matches"}``
- ``GET /health`` -> ``{"status": "ok", "num_items", "index", "version", "writes", "micro_batching", "limits"}``

Every error is JSON ``{"error": code, "detail": message}`` (see docs/serving.md for the table):
400 malformed JSON, 401/403 writes without the key / writes disabled, 409 catalogue full, 413 body
or texts over the limits, 422 schema violations and unknown item ids (plus ``"unknown_ids"``),
501 no text encoder, 503 encode queue or batch queue full (with ``Retry-After``).

Concurrency: ``/recommend`` requests for known items are micro-batched (``unisrec.serving.batching``):
requests arriving together share one sequence-encoder forward and one matmul in a worker thread.
Requests that need the text encoder pass a bounded gate instead. Nothing heavy runs on the event loop.
"""

import gc
import hmac
import ipaddress
import logging
from dataclasses import dataclass, fields, replace
from importlib import resources
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from unisrec.errors import UserError
from unisrec.serving.batching import EncodeGate, Job, MicroBatcher, ServerBusy
from unisrec.serving.recommender import (
    CatalogueFullError,
    InvalidRequest,
    Recommender,
    TextEncoderUnavailable,
    UnknownItemsError,
    unicode_problem,
)

log = logging.getLogger("unisrec.serving")

API_KEY_ENV = "UNISREC_API_KEY"
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ServerSettings:
    """Limits and switches of the HTTP server (``unisrec serve`` flags of the same names)."""

    max_history: int = 1000  # ids per /recommend history
    max_k: int = 1000
    max_texts: int = 64  # texts one request may send to the encoder (item_texts / POST /items)
    max_text_chars: int = 32_768  # their total characters
    max_id_chars: int = 256  # longest item id accepted (raised to the catalogue's longest id)
    max_body_bytes: int = 256 * 1024
    max_catalogue_items: int | None = None  # None: the loaded catalogue + CATALOGUE_HEADROOM
    api_key: str | None = None  # needed by POST /items
    allow_writes: bool = False  # POST /items without a key (loopback clients only)
    micro_batch: bool = True
    batch_max_size: int = 64
    batch_wait_ms: float = 1.0
    max_pending: int = 1024  # /recommend requests waiting for a batch before 503
    encode_concurrency: int = 1
    encode_queue: int = 8  # encode requests waiting for a slot before 503
    search_max_k: int = 100

    def check(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or value is None or isinstance(value, str):
                continue
            low = 0 if f.name in ("batch_wait_ms", "encode_queue") else 1
            if value < low:
                raise UserError(f"--{f.name.replace('_', '-')} must be at least {low}, got {value}")
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("the API key is empty; set a long random one (or none to disable POST /items)")


CATALOGUE_HEADROOM = 100_000
WRITES_DISABLED = (
    f"POST /items is disabled: start the server with --api-key KEY (or the {API_KEY_ENV} environment "
    "variable) to accept writes that send that key, or with --allow-writes on a loopback address"
)


# ----------------------------------------------------------------- errors and replies
class ApiError(Exception):
    """An error reply: status, machine-readable code, message, extra headers."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable error code")
    detail: str = Field(description="what was wrong, for a person")
    unknown_ids: list[str] | None = Field(None, description="unknown_items only: every unknown id of the history")


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
ERROR_DOCS: dict[int, dict[str, Any]] = {
    400: {"description": "malformed_json: the body is not valid JSON"},
    401: {"description": "unauthorized: missing or wrong API key",
          "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}},
    403: {"description": "writes_disabled: the server accepts no writes (no API key configured)"},
    409: {"description": "catalogue_full: the catalogue is at its size cap"},
    413: {"description": "body_too_large / too_much_text: the body or its texts exceed the limits"},
    422: {"description": "invalid_request (schema, invalid Unicode), bad_request, or unknown_items (+ unknown_ids)"},
    501: {"description": "no_text_encoder: this server cannot encode texts"},
    503: {"description": "busy: the encode or batch queue is full; retry later", "headers": RETRY_AFTER},
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody, **ERROR_DOCS[c]} for c in codes}


class JSONBody(JSONResponse):
    """JSON via orjson. Replies never hold NaN (scores are filtered to finite values) nor lone
    surrogates (rejected at the edge); either would raise here rather than emit invalid JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONBody:
    return JSONBody({"error": code, "detail": _printable(detail), **extra}, status_code=status, headers=headers)


def _printable(text: str) -> str:
    """``text`` with any lone surrogate written as a backslash escape, so an error that echoes input
    can always be encoded."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class BodyTooLarge(HTTPException):
    """Raised from the request stream; an HTTPException so FastAPI's body parser re-raises it."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds {limit} bytes")


class BodySizeLimit:
    """ASGI middleware: refuse bodies over ``max_bytes``, by header and by counting the stream
    (a chunked request has no Content-Length), before any handler reads them."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        received = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        response = _error(413, "body_too_large", f"request body exceeds {self.max_bytes} bytes")
        await response(scope, receive, send)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = err.get("msg")
        if err.get("type") == "string_unicode":  # pydantic's own check (dict keys): say what is wrong
            msg = "not valid Unicode: it holds a lone surrogate; send valid Unicode text"
        parts.append(f"{loc or 'body'}: {msg}")
    return "; ".join(parts)


# ----------------------------------------------------------------- input types
def _proper_unicode(value: str) -> str:
    problem = unicode_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a peer address) is a loopback address."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_write_policy(host: str, api_key: str | None, allow_writes: bool) -> None:
    """``unisrec serve``'s rule: unauthenticated writes only on a loopback bind address."""
    if api_key is None and allow_writes and not is_loopback(host):
        raise UserError(
            f"--allow-writes without an API key is only allowed when serving on a loopback address "
            f"(127.0.0.1, ::1, localhost), not {host}; set --api-key or {API_KEY_ENV} to accept writes there"
        )


def _catalogue_id_chars(recommender: Recommender) -> int:
    return max((len(i) for i in recommender.item_ids()), default=0)


# ----------------------------------------------------------------- error handlers
def _refused_writer(request: Request) -> Response | None:
    """The 401/403 an unauthorised POST /items gets before anything about its body. FastAPI parses
    the body before it runs the route's dependencies, so a body that is not JSON would otherwise be
    answered 400 ahead of the key check (the error handlers below ask this first)."""
    service = getattr(request.app.state, "service", None)
    if service is None or request.method != "POST" or request.scope.get("path") != "/items":
        return None
    try:
        service.check_writer(request, offered_keys(request))
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.detail, headers=exc.headers)
    return None


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    refused = _refused_writer(request)
    if refused is not None:
        return refused
    bad_json = [err for err in exc.errors() if err.get("type") == "json_invalid"]
    if bad_json:
        at = bad_json[0].get("loc", ("body", "?"))[-1]
        msg = bad_json[0].get("ctx", {}).get("error", "JSON decode error")
        return _error(400, "malformed_json", f"request body is not valid JSON: {msg} at character {at}")
    return _error(422, "invalid_request", _validation_detail(exc))


async def _on_api_error(request: Request, exc: ApiError) -> Response:
    return _error(exc.status, exc.code, exc.detail, headers=exc.headers)


async def _on_unknown_items(request: Request, exc: UnknownItemsError) -> Response:
    return _error(422, "unknown_items", str(exc), unknown_ids=exc.ids)


async def _on_full(request: Request, exc: CatalogueFullError) -> Response:
    return _error(409, "catalogue_full", f"{exc} (--max-catalogue-items)")


async def _on_invalid(request: Request, exc: InvalidRequest) -> Response:
    return _error(422, "bad_request", str(exc))


async def _on_no_encoder(request: Request, exc: TextEncoderUnavailable) -> Response:
    log.warning("text encoding unavailable: %s", exc)  # the full message names paths: log only
    return _error(501, "no_text_encoder", "this server cannot encode item texts (its model records no usable "
                  "text encoder; see the server log)")


async def _on_busy(request: Request, exc: ServerBusy) -> Response:
    return _error(503, "busy", f"the server is busy ({exc}); retry in {exc.retry_after} s",
                  headers={"Retry-After": str(exc.retry_after)})


HTTP_ERROR_CODES = {400: "malformed_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


async def _on_http_error(request: Request, exc: HTTPException) -> Response:
    refused = _refused_writer(request) if exc.status_code == 400 else None
    if refused is not None:
        return refused
    code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _on_crash(request: Request, exc: Exception) -> Response:
    # a bug: the message may hold server details (paths), so the client gets none of it
    return _error(500, "internal_error", "internal server error; the server log has the details")


ERROR_HANDLERS: dict[type[Exception], Any] = {
    RequestValidationError: _on_validation_error,
    ApiError: _on_api_error,
    UnknownItemsError: _on_unknown_items,
    CatalogueFullError: _on_full,
    InvalidRequest: _on_invalid,
    TextEncoderUnavailable: _on_no_encoder,
    ServerBusy: _on_busy,
    HTTPException: _on_http_error,
    Exception: _on_crash,
}


# ----------------------------------------------------------------- request and reply bodies
def _request_models(recommender: Recommender, cfg: ServerSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """``RecommendRequest`` and ``ItemsRequest``: built per app, as their limits (and the catalogue's
    longest id) are part of both the validation and the OpenAPI schema."""
    id_chars = max(cfg.max_id_chars, _catalogue_id_chars(recommender))
    HistoryId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=id_chars), AfterValidator(_proper_unicode)]
    NewId = Annotated[HistoryId, AfterValidator(_not_blank)]
    Text = Annotated[
        StrictStr, StringConstraints(min_length=1, max_length=cfg.max_text_chars), AfterValidator(_proper_unicode),
        AfterValidator(_not_blank),
    ]

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: list[HistoryId] = Field(
            min_length=1, max_length=cfg.max_history, description="raw item ids, oldest first; the latest "
            f"{recommender.max_history} are used"
        )
        k: StrictInt = Field(10, ge=1, le=cfg.max_k, description="number of items to return")
        exclude_seen: StrictBool = Field(False, description="drop the history's own items")
        item_texts: dict[HistoryId, Text] | None = Field(
            None, max_length=cfg.max_texts,
            description=f"text of history items the catalogue does not have (at most {cfg.max_texts} texts, "
            f"{cfg.max_text_chars} characters in all)",
        )

    class ItemsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: dict[NewId, Text] = Field(
            min_length=1, max_length=cfg.max_texts,
            description=f"raw id -> text (at most {cfg.max_texts} items, {cfg.max_text_chars} characters of text in all)",
        )

    return RecommendRequest, ItemsRequest


# The reply models carry no docstrings: a docstring would become a "description" in the schema.
class Item(BaseModel):
    id: str
    score: float = Field(description="cosine(sequence, item) in [-1, 1]; the model's logit is score / temperature")
    text: str


class RecommendResponse(BaseModel):
    items: list[Item]


class ItemsResponse(BaseModel):
    added: int
    updated: int
    num_items: int


class SearchHit(BaseModel):
    id: str
    text: str


class SearchResponse(BaseModel):
    items: list[SearchHit] = Field(description="the first k matches, in catalogue order")
    matches: int = Field(description="how many items match")


class Limits(BaseModel):
    max_history: int
    max_k: int
    max_texts: int
    max_text_chars: int
    max_catalogue_items: int


class BatchStats(BaseModel):
    requests: int = Field(description="/recommend requests answered through micro-batches")
    batches: int
    largest: int


class Health(BaseModel):
    status: str
    num_items: int
    index: str
    version: str
    writes: str = Field(description="api_key: POST /items needs the key; open: loopback clients may write; disabled")
    micro_batching: bool
    batches: BatchStats | None = None
    limits: Limits


# ----------------------------------------------------------------- what the routes share
BEARER = HTTPBearer(auto_error=False, description=f"the server's API key (--api-key / {API_KEY_ENV})")
KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="unisrec"'}


def offered_keys(request: Request) -> list[str]:
    """The API keys a request offers, read as BEARER and KEY_HEADER read them (for the error handlers,
    which run without the route's dependencies)."""
    from fastapi.security.utils import get_authorization_scheme_param

    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    return [k for k in (token if scheme.lower() == "bearer" else None, request.headers.get("X-API-Key")) if k]


class Service:
    """The state behind one app's routes: the recommender, its limits, the write policy, the encode
    gate and (with micro-batching on) the batcher."""

    def __init__(self, recommender: Recommender, cfg: ServerSettings):
        self.recommender = recommender
        self.cfg = cfg
        self.max_catalogue = cfg.max_catalogue_items or recommender.num_items + CATALOGUE_HEADROOM
        self.expected_key = cfg.api_key.encode("utf-8") if cfg.api_key is not None else None
        self.gate = EncodeGate(cfg.encode_concurrency, cfg.encode_queue)
        self.batcher = None
        if cfg.micro_batch:
            self.batcher = MicroBatcher(self.run_batch, cfg.batch_max_size, cfg.batch_wait_ms / 1000, cfg.max_pending)

    def run_batch(self, jobs: list[Job]) -> list[Any]:
        """Worker thread: one forward for the batch; on an error, each job alone (isolates it)."""
        try:
            answers = self.recommender.recommend_batch(
                [j.history for j in jobs], k=[j.k for j in jobs], exclude_seen=[j.exclude_seen for j in jobs]
            )
            return [orjson.dumps({"items": a}) for a in answers]
        except Exception as exc:
            if len(jobs) == 1:
                return [exc]
        return [self._run_alone(j) for j in jobs]

    def _run_alone(self, job: Job) -> Any:
        try:
            return orjson.dumps({"items": self.recommender.recommend(job.history, k=job.k, exclude_seen=job.exclude_seen)})
        except Exception as exc:
            return exc

    def require_writer(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
        api_key: Annotated[str | None, Depends(KEY_HEADER)],
    ) -> None:
        """Dependency of POST /items: the API key where one is set, else the --allow-writes rule."""
        self.check_writer(request, [c for c in (credentials.credentials if credentials else None, api_key) if c])

    def check_writer(self, request: Request, offered: list[str]) -> None:
        """Raise the 401/403 ApiError of a request offering the keys ``offered`` that may not write."""
        if self.expected_key is None:
            self._check_open_writes(request)
            return
        if not offered:
            raise ApiError(401, "unauthorized", "POST /items needs the API key: send 'Authorization: Bearer KEY' "
                           "or 'X-API-Key: KEY'", CHALLENGE)
        # header values arrive latin-1 decoded: compare the raw bytes, in constant time
        if not any(hmac.compare_digest(c.encode("latin-1"), self.expected_key) for c in offered):
            raise ApiError(401, "unauthorized", "the API key is wrong", CHALLENGE)

    def _check_open_writes(self, request: Request) -> None:
        if not self.cfg.allow_writes:
            raise ApiError(403, "writes_disabled", WRITES_DISABLED)
        if request.client is None or not is_loopback(request.client.host):
            raise ApiError(403, "writes_disabled", "this server accepts writes without an API key from loopback "
                           f"clients only; set --api-key or {API_KEY_ENV} to accept them from elsewhere")

    def check_text_budget(self, texts: Any) -> None:
        chars = sum(len(t) for t in texts)
        if chars > self.cfg.max_text_chars:
            raise ApiError(413, "too_much_text", f"the request's texts hold {chars} characters; at most "
                           f"{self.cfg.max_text_chars} may be encoded per request (--max-text-chars)")

    def health(self) -> dict:  # GET /health itself: a docstring would change the schema
        cfg, batcher = self.cfg, self.batcher
        return {
            "status": "ok",
            "num_items": self.recommender.num_items,
            "index": self.recommender.index_kind,
            "version": _version(),
            "writes": "api_key" if self.expected_key is not None else "open" if cfg.allow_writes else "disabled",
            "micro_batching": batcher is not None,
            "batches": {"requests": batcher.requests, "batches": batcher.batches, "largest": batcher.largest} if batcher else None,
            "limits": {"max_history": cfg.max_history, "max_k": cfg.max_k, "max_texts": cfg.max_texts,
                       "max_text_chars": cfg.max_text_chars, "max_catalogue_items": self.max_catalogue},
        }


# ----------------------------------------------------------------- the app
def create_app(recommender: Recommender, settings: ServerSettings | None = None, **overrides: Any) -> FastAPI:
    """The FastAPI app. ``settings`` (or keyword overrides of its fields) bound every request;
    histories longer than the model's ``max_seq_length`` but within ``max_history`` are accepted and
    cut to their latest items."""
    cfg = replace(settings or ServerSettings(), **overrides)
    cfg.check()
    service = Service(recommender, cfg)
    app = FastAPI(
        title="unisrec",
        summary="Sequential recommendation from item text (UniSRec, KDD 2022)",
        version=_version(),
        default_response_class=JSONBody,
    )
    app.state.service = service
    app.state.recommender = recommender
    app.state.settings = cfg
    app.state.encode_gate = service.gate
    app.state.batcher = service.batcher
    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_body_bytes)
    if service.batcher is not None:
        app.router.on_shutdown.append(service.batcher.close)
    for exc_type, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    recommend_request, items_request = _request_models(recommender, cfg)
    _add_recommend_route(app, service, recommend_request)
    _add_item_routes(app, service, items_request)
    app.get("/health", response_model=Health)(service.health)
    _add_demo_page(app)
    return app


# The routes are defined inside these functions because their request types are built per app.
def _add_recommend_route(app: FastAPI, service: Service, RecommendRequest: type[BaseModel]) -> None:
    rec = service.recommender

    @app.post("/recommend", response_model=RecommendResponse, responses=_errors(400, 413, 422, 501, 503))
    async def recommend(req: RecommendRequest) -> Response:  # type: ignore[valid-type]
        """Top-k items for one history (cosine ranking of the model, Eq. 11/12)."""
        texts = req.item_texts or {}
        service.check_text_budget(texts.values())
        unknown = rec.unknown_ids(req.history, texts)
        if unknown:
            raise UnknownItemsError(unknown)
        if any(h not in rec for h in req.history):  # unknown ids with text: run the encoder
            async with service.gate.slot():
                items = await run_in_threadpool(rec.recommend, req.history, req.k, req.exclude_seen, texts)
            return JSONBody({"items": items})
        if service.batcher is not None:
            answer = await service.batcher.submit(req.history, req.k, req.exclude_seen)
            return Response(answer, media_type="application/json")  # already JSON bytes (run_batch)
        items = await run_in_threadpool(rec.recommend, req.history, req.k, req.exclude_seen)
        return JSONBody({"items": items})


def _add_item_routes(app: FastAPI, service: Service, ItemsRequest: type[BaseModel]) -> None:
    rec, cfg = service.recommender, service.cfg

    @app.post("/items", response_model=ItemsResponse, dependencies=[Depends(service.require_writer)],
              responses=_errors(400, 401, 403, 409, 413, 422, 501, 503))
    async def add_items(req: ItemsRequest) -> dict:  # type: ignore[valid-type]
        """Add items (or replace their text); they are recommendable as soon as this returns.
        Needs the API key."""
        service.check_text_budget(req.items.values())
        async with service.gate.slot():
            return await run_in_threadpool(rec.add_items, req.items, None, service.max_catalogue)

    @app.get("/items/search", response_model=SearchResponse, responses=_errors(422))
    def search(
        q: Annotated[str, Query(min_length=1, max_length=200, description="words that must all appear in the id or text")],
        k: Annotated[int, Query(ge=1, le=cfg.search_max_k, description="matches to return")] = 20,
    ) -> dict:
        """Catalogue items whose id or text contains every word of ``q`` (case-insensitive)."""
        if not q.split():
            return {"items": [], "matches": 0}
        found, total = rec.search(q, k)
        return {"items": found, "matches": total}


# ----------------------------------------------------------------- the demo page
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _add_demo_page(app: FastAPI) -> None:
    """``/`` and ``/static/*``: plain files shipped in the package (no build step, no CDN)."""
    folder = resources.files("unisrec.serving") / "static"
    files = {name: (folder / name).read_bytes() for name in STATIC_FILES}

    def page(name: str) -> Any:
        def handler() -> Response:
            return Response(files[name], media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

        return handler

    app.get("/", include_in_schema=False)(page("index.html"))
    app.get("/favicon.ico", include_in_schema=False, status_code=204)(lambda: Response(status_code=204))
    for name in ("app.js", "style.css"):
        app.get(f"/static/{name}", include_in_schema=False)(page(name))


def _version() -> str:
    from unisrec import __version__

    return __version__


def serve(
    model_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    index: str = "exact",
    device: str = "cpu",
    log_level: str = "info",
    torch_threads: int | None = 1,
    **settings: Any,
) -> None:
    """Load ``model_dir`` and serve it until interrupted (one process; the model is shared by threads).

    ``settings`` are :class:`ServerSettings` fields. ``torch_threads`` (default 1) sets torch's
    intra-op threads: concurrency comes from micro-batching (one batch at a time in a worker thread)
    while the event loop parses HTTP on the other core; several intra-op threads per request made
    single-request p50 ~60x worse on a busy 2-core machine.
    """
    import uvicorn

    cfg = ServerSettings(**settings)
    cfg.check()
    check_write_policy(host, cfg.api_key, cfg.allow_writes)
    rec = Recommender.from_pretrained(model_dir, device=device, index=index, torch_threads=torch_threads or None)
    app = create_app(rec, cfg)
    writes = ("need the API key" if cfg.api_key is not None else "open to loopback clients" if cfg.allow_writes
              else f"disabled (set --api-key or {API_KEY_ENV} to enable)")
    logging.basicConfig(level=log_level.upper() if isinstance(log_level, str) else log_level)
    log.info("serving %d items on %s:%d; POST /items: %s; micro-batching %s", rec.num_items, host, port, writes,
             "on" if cfg.micro_batch else "off")
    # The model, catalogue and app objects live as long as the process: move them out of the garbage
    # collector's generations, so a full collection no longer walks them. Measured (benchmarks/bench_load.py,
    # 32 clients, idle 2 cores): ~70 ms pauses made p99 91 ms with p90 26 ms; frozen, p99 26 ms.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level=log_level)
