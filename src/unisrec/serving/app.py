"""HTTP API over a :class:`~unisrec.serving.recommender.Recommender` (FastAPI, served by uvicorn).

Endpoints (OpenAPI docs at /docs, schema at /openapi.json):

- ``POST /recommend`` ``{"history": ["id", ...], "k": 10, "exclude_seen": false, "item_texts": {}}``
  -> ``{"items": [{"id", "score", "text"}, ...]}``
- ``POST /items`` ``{"items": {"id": "text", ...}}`` -> ``{"added", "updated", "num_items"}``
- ``GET /health`` -> ``{"status": "ok", "num_items", "index", "model"}``

Every client mistake is a 4xx with ``{"error": code, "detail": message}``: 400 malformed JSON,
413 body over the limit (by Content-Length or counted while streaming), 422 schema violations
(empty or oversize history, k out of range, wrong types) and unknown item ids (plus
``"unknown_ids"``). Handlers are plain functions, so FastAPI runs them in its thread pool and the
model's matmuls do not block the event loop; the Recommender's snapshot design makes concurrent
``/items`` calls safe.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.exceptions import HTTPException

from unisrec.errors import UserError
from unisrec.serving.recommender import Recommender, UnknownItemsError

DEFAULT_MAX_HISTORY = 1000
DEFAULT_MAX_K = 1000
DEFAULT_MAX_NEW_ITEMS = 10_000
DEFAULT_MAX_BODY_BYTES = 1 << 20


class BodyTooLarge(HTTPException):
    """Raised from the request stream; an HTTPException so FastAPI's body parser re-raises it."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds {limit} bytes")


def _error(status: int, code: str, detail: Any, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status)


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
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts)


def create_app(
    recommender: Recommender,
    max_history: int = DEFAULT_MAX_HISTORY,
    max_k: int = DEFAULT_MAX_K,
    max_new_items: int = DEFAULT_MAX_NEW_ITEMS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The FastAPI app; the limits bound every request (histories longer than the model's
    ``max_seq_length`` but within ``max_history`` are accepted and cut to their latest items)."""

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: list[StrictStr] = Field(
            min_length=1, max_length=max_history, description="raw item ids, oldest first; the latest "
            f"{recommender.max_history} are used"
        )
        k: StrictInt = Field(10, ge=1, le=max_k, description="number of items to return")
        exclude_seen: StrictBool = Field(False, description="drop the history's own items")
        item_texts: dict[StrictStr, StrictStr] | None = Field(
            None, max_length=max_history, description="text of history items the catalogue does not have"
        )

    class Item(BaseModel):
        id: str
        score: float = Field(description="cosine(sequence, item); the model's logit is score / temperature")
        text: str

    class RecommendResponse(BaseModel):
        items: list[Item]

    class ItemsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: dict[StrictStr, StrictStr] = Field(min_length=1, max_length=max_new_items, description="raw id -> text")

    class ItemsResponse(BaseModel):
        added: int
        updated: int
        num_items: int

    app = FastAPI(
        title="unisrec",
        summary="Sequential recommendation from item text (UniSRec, KDD 2022)",
        version=_version(),
    )
    app.state.recommender = recommender
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        bad_json = [err for err in exc.errors() if err.get("type") == "json_invalid"]
        if bad_json:
            at = bad_json[0].get("loc", ("body", "?"))[-1]
            msg = bad_json[0].get("ctx", {}).get("error", "JSON decode error")
            return _error(400, "malformed_json", f"request body is not valid JSON: {msg} at character {at}")
        return _error(422, "invalid_request", _validation_detail(exc))

    @app.exception_handler(UnknownItemsError)
    async def on_unknown_items(request: Request, exc: UnknownItemsError) -> JSONResponse:
        return _error(422, "unknown_items", str(exc), unknown_ids=exc.ids)

    @app.exception_handler(UserError)
    async def on_user_error(request: Request, exc: UserError) -> JSONResponse:
        return _error(422, "bad_request", str(exc))

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, exc.detail)

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(req: RecommendRequest) -> dict:
        """Top-k items for one history (cosine ranking of the model, Eq. 11/12)."""
        items = recommender.recommend(req.history, k=req.k, exclude_seen=req.exclude_seen, item_texts=req.item_texts)
        return {"items": items}

    @app.post("/items", response_model=ItemsResponse)
    def add_items(req: ItemsRequest) -> dict:
        """Add items (or replace their text); they are recommendable as soon as this returns."""
        return recommender.add_items(req.items)

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "num_items": recommender.num_items,
            "index": recommender.index_kind,
            "model": recommender.path,
        }

    return app


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
    **limits: Any,
) -> None:
    """Load ``model_dir`` and serve it until interrupted (one process; the model is shared by threads).

    ``torch_threads`` (default 1) sets torch's intra-op threads: a request is a few small matmuls,
    so concurrency comes from uvicorn's thread pool, one request per core; several intra-op
    threads per request made single-request p50 ~60x worse on a busy 2-core machine.
    """
    import uvicorn

    rec = Recommender.from_pretrained(model_dir, device=device, index=index, torch_threads=torch_threads or None)
    uvicorn.run(create_app(rec, **limits), host=host, port=port, log_level=log_level)
