"""The "safe to expose" audit: invalid Unicode, write access, resource limits, no paths in replies.

Each test talks to a real uvicorn server on 127.0.0.1 (serving_fixtures.ServerThread) except where
a peer address that is not loopback is needed (Starlette's TestClient, whose peer is "testclient").
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from serving_fixtures import HashEncoder, ServerThread, hashed_model_dir, random_model_dir
from unisrec.cli import main as cli_main
from unisrec.errors import UserError
from unisrec.serving.app import check_write_policy, create_app, is_loopback
from unisrec.serving.recommender import CatalogueFullError, InvalidRequest, Recommender

KEY = "s3cret-key-for-tests-0123456789"
BEARER = {"Authorization": f"Bearer {KEY}"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return hashed_model_dir(tmp_path_factory.mktemp("sec"), n=30)


def recommender(model_dir, encoder=None) -> Recommender:
    return Recommender.from_pretrained(model_dir, text_encoder=encoder or HashEncoder())


def assert_json_error(r: httpx.Response, status: int, code: str, fragment: str = "") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == code, body
    assert fragment in body["detail"], body
    return body


# ------------------------------------------------------------------ 1. Unicode at the edge
@pytest.mark.parametrize(
    "path, raw, where",
    [
        ("/items", b'{"items": {"\\udc00": "a lab coat"}}', "[key]"),
        ("/items", b'{"items": {"new-1": "lab coat \\ud800"}}', "items.new-1"),
        ("/recommend", b'{"history": ["\\ud800"]}', "history.0"),
        ("/recommend", b'{"history": ["item-1", "x"], "item_texts": {"x": "\\udfff text"}}', "item_texts.x"),
        ("/recommend", b'{"history": ["item-1", "\\udc00"], "item_texts": {"\\udc00": "text"}}', "history.1"),
        ("/recommend", b'{"history": ["item-1"], "item_texts": {"\\udc00": "text"}}', "[key]"),
        # UTF-8 bytes of a surrogate (CESU-8) decode to the same lone surrogate in Python's json
        ("/recommend", b'{"history": ["\xed\xb0\x80"]}', "history.0"),
    ],
)
def test_lone_surrogates_are_refused_with_422(model_dir, path, raw, where):
    rec = recommender(model_dir)
    with ServerThread(create_app(rec, api_key=KEY)) as url, httpx.Client(base_url=url) as c:
        r = c.post(path, content=raw, headers={**JSON, **BEARER})
        body = assert_json_error(r, 422, "invalid_request", "lone surrogate")
        assert where in body["detail"]
        assert rec.num_items == 30  # nothing was added
        # the server is unharmed: every item can still be recommended and serialised
        r = c.post("/recommend", json={"history": ["item-1"], "k": 31})
        assert r.status_code == 200 and len(r.json()["items"]) == 30
        assert c.get("/health").status_code == 200


def test_python_api_refuses_lone_surrogates(model_dir):
    rec = recommender(model_dir)
    with pytest.raises(InvalidRequest, match="lone surrogate"):
        rec.add_items({"\udc00": "text"})
    with pytest.raises(InvalidRequest, match="lone surrogate"):
        rec.add_items({"ok": "text \ud800"})
    with pytest.raises(InvalidRequest, match="lone surrogate"):
        rec.recommend(["item-1", "cold"], item_texts={"cold": "\udfff"})
    assert rec.num_items == 30


# ------------------------------------------------------------------ 2. writes need a key
def test_writes_disabled_without_a_key(model_dir):
    rec = recommender(model_dir)
    with ServerThread(create_app(rec)) as url:
        r = httpx.post(f"{url}/items", json={"items": {"n1": "a lab coat"}})
        body = assert_json_error(r, 403, "writes_disabled", "--api-key")
        assert "UNISREC_API_KEY" in body["detail"] and "--allow-writes" in body["detail"]
        # even a key is useless when the server has none
        assert httpx.post(f"{url}/items", json={"items": {"n1": "t"}}, headers=BEARER).status_code == 403
        assert httpx.post(f"{url}/items", content=b"\x00 not json", headers=JSON).status_code == 403
        assert httpx.get(f"{url}/health").json()["writes"] == "disabled"
    assert rec.num_items == 30 and "n1" not in rec


def test_api_key_is_required_and_checked(model_dir):
    rec = recommender(model_dir)
    item = {"items": {"n1": "a lab coat"}}
    with ServerThread(create_app(rec, api_key=KEY)) as url, httpx.Client(base_url=url) as c:
        r = c.post("/items", json=item)
        assert_json_error(r, 401, "unauthorized", "Authorization: Bearer")
        assert r.headers["www-authenticate"].startswith("Bearer")
        for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {KEY}x"},
                        {"Authorization": f"Bearer {KEY[:-1]}"}, {"X-API-Key": "nope"},
                        {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}):
            assert c.post("/items", json=item, headers=headers).status_code == 401, headers
        # auth is checked before the body: a bad body from a stranger is still a 401
        assert c.post("/items", json={"items": "garbage"}).status_code == 401
        for raw in (b"\x00\x01 nope", b'{"items": ', b"\xff\xfe"):  # bodies that are not even JSON
            r = c.post("/items", content=raw, headers=JSON)
            assert_json_error(r, 401, "unauthorized", "API key")
            assert c.post("/items", content=raw, headers={**JSON, "Authorization": "Bearer wrong"}).status_code == 401
            assert c.post("/items", content=raw, headers={**JSON, **BEARER}).status_code == 400  # the key holder learns why
        assert rec.num_items == 30
        r = c.post("/items", json=item, headers=BEARER)
        assert r.status_code == 200 and r.json() == {"added": 1, "updated": 0, "num_items": 31}
        r = c.post("/items", json={"items": {"n2": "gloves"}}, headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["added"] == 1
        r = c.post("/items", json={"items": {"n3": "goggles"}}, headers={"authorization": f"bearer {KEY}"})
        assert r.status_code == 200
        assert c.get("/health").json()["writes"] == "api_key"
        # reads never need the key
        assert c.post("/recommend", json={"history": ["n1", "n2"]}).status_code == 200
    schema = create_app(rec, api_key=KEY).openapi()
    assert schema["paths"]["/items"]["post"]["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]


def test_allow_writes_only_for_loopback(model_dir):
    from fastapi.testclient import TestClient

    rec = recommender(model_dir)
    app = create_app(rec, allow_writes=True)
    with ServerThread(app) as url:  # a loopback peer may write without a key
        r = httpx.post(f"{url}/items", json={"items": {"n1": "a lab coat"}})
        assert r.status_code == 200 and r.json()["added"] == 1
        assert httpx.get(f"{url}/health").json()["writes"] == "open"
    remote = TestClient(app)  # its peer address is "testclient", not a loopback address
    assert_json_error(remote.post("/items", json={"items": {"n2": "t"}}), 403, "writes_disabled", "loopback")
    assert "n2" not in rec


def test_write_policy_of_the_serve_command(model_dir, monkeypatch, capsys):
    for host in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_write_policy(host, None, True)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(UserError, match="loopback"):
            check_write_policy(host, None, True)
        check_write_policy(host, KEY, True)  # with a key anything goes
        check_write_policy(host, None, False)  # writes disabled
    # the CLI refuses before loading anything
    assert cli_main(["serve", str(model_dir), "--host", "0.0.0.0", "--allow-writes"]) == 2
    assert "loopback" in capsys.readouterr().err
    # the key comes from --api-key or UNISREC_API_KEY
    seen = {}
    monkeypatch.setattr("unisrec.serving.app.serve", lambda *a, **kw: seen.update(kw))
    monkeypatch.setenv("UNISREC_API_KEY", "from-the-environment")
    assert cli_main(["serve", str(model_dir)]) == 0 and seen["api_key"] == "from-the-environment"
    assert cli_main(["serve", str(model_dir), "--api-key", "from-the-flag"]) == 0 and seen["api_key"] == "from-the-flag"
    monkeypatch.setenv("UNISREC_API_KEY", "")
    assert cli_main(["serve", str(model_dir)]) == 0 and seen["api_key"] is None and seen["allow_writes"] is False
    assert seen["micro_batch"] is True and "max_texts" not in seen  # defaults come from ServerSettings
    argv = ["serve", str(model_dir), "--no-micro-batch", "--max-texts", "3", "--max-text-chars", "99",
            "--max-catalogue-items", "7", "--encode-queue", "0", "--batch-wait-ms", "0.5", "--allow-writes"]
    assert cli_main(argv) == 0
    assert (seen["micro_batch"], seen["max_texts"], seen["max_text_chars"], seen["max_catalogue_items"],
            seen["encode_queue"], seen["batch_wait_ms"], seen["allow_writes"]) == (False, 3, 99, 7, 0, 0.5, True)


# ------------------------------------------------------------------ 3. resource limits
def test_text_budget_is_enforced_before_encoding(model_dir):
    enc = HashEncoder()
    rec = recommender(model_dir, enc)
    app = create_app(rec, api_key=KEY, max_texts=4, max_text_chars=1000)
    with ServerThread(app) as url, httpx.Client(base_url=url) as c:
        # too many texts: 422 by the schema
        texts = {f"c{i}": "short text" for i in range(5)}
        r = c.post("/recommend", json={"history": ["item-1", *texts], "item_texts": texts})
        assert_json_error(r, 422, "invalid_request", "item_texts")
        r = c.post("/items", json={"items": texts}, headers=BEARER)
        assert_json_error(r, 422, "invalid_request", "at most 4")
        # too many characters in all: 413, although each text is within the per-text limit
        texts = {f"c{i}": "x" * 300 for i in range(4)}
        r = c.post("/recommend", json={"history": ["item-1", *texts], "item_texts": texts})
        assert_json_error(r, 413, "too_much_text", "1200 characters")
        r = c.post("/items", json={"items": texts}, headers=BEARER)
        assert_json_error(r, 413, "too_much_text", "--max-text-chars")
        # one text longer than the whole budget
        r = c.post("/items", json={"items": {"c": "y" * 1001}}, headers=BEARER)
        assert_json_error(r, 422, "invalid_request", "at most 1000 characters")
        assert enc.encoded == 0  # nothing above reached the encoder
        # within the budget it works, and the encoder sees exactly those texts
        texts = {f"c{i}": "x" * 250 for i in range(4)}
        r = c.post("/recommend", json={"history": ["item-1", *texts], "item_texts": texts, "k": 3})
        assert r.status_code == 200 and enc.encoded == 4


def test_a_flood_of_large_requests_is_refused_cheaply(model_dir):
    """The audit's 12 concurrent 185 KB requests: refused before any encoding, quickly."""
    enc = HashEncoder()
    rec = recommender(model_dir, enc)
    texts = {f"t{i}": "z" * 900 for i in range(200)}  # 185 KB of JSON
    body = json.dumps({"history": ["item-1", *texts], "item_texts": texts}).encode()
    assert len(body) > 180_000
    with ServerThread(create_app(rec, max_body_bytes=1 << 20)) as url:
        start = time.monotonic()
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda _: httpx.post(f"{url}/recommend", content=body, headers=JSON, timeout=30).status_code,
                                  range(12)))
        elapsed = time.monotonic() - start
    assert codes == [422] * 12  # 200 texts > --max-texts (64)
    assert enc.encoded == 0 and elapsed < 10


class GatedEncoder(HashEncoder):
    """Blocks every encode until ``release`` is set; counts encodes in flight."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def encode(self, texts):
        self.started.release()
        assert self.release.wait(30)
        return super().encode(texts)


def test_encode_queue_full_answers_503_with_retry_after(model_dir):
    enc = GatedEncoder()
    rec = recommender(model_dir, enc)
    app = create_app(rec, api_key=KEY, encode_concurrency=1, encode_queue=1)
    with ServerThread(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, f"{url}/items", json={"items": {"n1": "one"}}, headers=BEARER, timeout=60)
        assert enc.started.acquire(timeout=30)  # the first encode is running
        second = pool.submit(httpx.post, f"{url}/recommend", timeout=60,
                             json={"history": ["item-1", "c"], "item_texts": {"c": "cold item"}})
        deadline = time.monotonic() + 30
        while app.state.encode_gate.admitted < 2:  # the second one waits in the queue
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for attempt in (
            httpx.post(f"{url}/items", json={"items": {"n3": "three"}}, headers=BEARER),
            httpx.post(f"{url}/recommend", json={"history": ["item-2", "d"], "item_texts": {"d": "other"}}),
        ):
            assert_json_error(attempt, 503, "busy", "retry")
            assert int(attempt.headers["retry-after"]) >= 1
        # requests that need no encoding are not held up by the queue
        assert httpx.post(f"{url}/recommend", json={"history": ["item-3"]}).status_code == 200
        enc.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert httpx.post(f"{url}/items", json={"items": {"n4": "four"}}, headers=BEARER).status_code == 200
    assert enc.encoded == 3


def test_catalogue_cap(model_dir):
    rec = recommender(model_dir)
    with ServerThread(create_app(rec, api_key=KEY, max_catalogue_items=32)) as url, httpx.Client(base_url=url) as c:
        r = c.post("/items", json={"items": {"a": "t", "b": "t", "c": "t"}}, headers=BEARER)
        assert_json_error(r, 409, "catalogue_full", "at most 32")
        assert rec.num_items == 30
        assert c.post("/items", json={"items": {"a": "t", "b": "t"}}, headers=BEARER).json()["num_items"] == 32
        assert_json_error(c.post("/items", json={"items": {"c": "t"}}, headers=BEARER), 409, "catalogue_full")
        # replacing texts adds nothing, so it is still allowed
        r = c.post("/items", json={"items": {"a": "new text", "item-1": "new text"}}, headers=BEARER)
        assert r.json() == {"added": 0, "updated": 2, "num_items": 32}
        assert c.get("/health").json()["limits"]["max_catalogue_items"] == 32
    with pytest.raises(CatalogueFullError):
        rec.add_items({"z": "t"}, max_items=32)
    # the default cap: the loaded catalogue plus 100,000
    assert create_app(recommender(model_dir)).state.settings.max_catalogue_items is None
    with ServerThread(create_app(recommender(model_dir))) as url:
        assert httpx.get(f"{url}/health").json()["limits"]["max_catalogue_items"] == 100_030


def test_concurrent_writers_cannot_overshoot_the_cap(model_dir):
    rec = recommender(model_dir)
    feats = np.random.default_rng(0).normal(size=(1, 16)).astype(np.float32)

    def add(i):
        try:
            rec.add_items({f"w{i}": "t"}, features=feats, max_items=40)
            return 1
        except CatalogueFullError:
            return 0

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(add, range(50))) == 10
    assert rec.num_items == 40


# ------------------------------------------------------------------ 4. no paths in replies
def test_no_filesystem_paths_in_any_reply(tmp_path):
    model_dir = random_model_dir(tmp_path, n=20)  # records no text encoder
    rec = Recommender.from_pretrained(model_dir)
    replies = []
    with ServerThread(create_app(rec, allow_writes=True)) as url, httpx.Client(base_url=url) as c:
        health = c.get("/health")
        assert health.status_code == 200 and "model" not in health.json()
        replies.append(health)
        r = c.post("/items", json={"items": {"n1": "a text"}})  # no encoder: the server's problem, not the client's
        assert_json_error(r, 501, "no_text_encoder", "cannot encode")
        replies.append(r)
        r = c.post("/recommend", json={"history": ["item-1", "cold"], "item_texts": {"cold": "its text"}})
        assert_json_error(r, 501, "no_text_encoder")
        replies.append(r)
        replies += [c.post("/recommend", json={"history": ["nope"]}), c.get("/missing"), c.get("/openapi.json"),
                    c.get("/"), c.get("/items/search", params={"q": "item"})]
    for r in replies:
        assert str(tmp_path) not in r.text and "/tmp" not in r.text and "model.safetensors" not in r.text, r.text[:300]
