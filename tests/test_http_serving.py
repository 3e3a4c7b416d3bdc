"""The HTTP API over a real uvicorn server on a loopback port, talked to with httpx."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serving_fixtures import SCIENCE_TEXTS, ServerThread, random_model_dir, text_encoder_class, text_model_dir
from unisrec.serving.app import create_app
from unisrec.serving.recommender import Recommender

N_ITEMS = 40
KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
needs_encoder = pytest.mark.skipif(text_encoder_class() is None, reason="unisrec.text.TextEncoder not available yet")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return random_model_dir(tmp_path_factory.mktemp("http"), n=N_ITEMS)


@pytest.fixture(scope="module")
def server(model_dir):
    rec = Recommender.from_pretrained(model_dir)
    app = create_app(rec, max_history=20, max_k=25, max_texts=5, max_body_bytes=4096, api_key=KEY)
    with ServerThread(app) as url:
        yield url, rec


def test_recommend_health_and_docs(server):
    url, rec = server
    with httpx.Client(base_url=url) as c:
        r = c.post("/recommend", json={"history": ["item-1", "item-2"], "k": 4, "exclude_seen": True})
        assert r.status_code == 200
        assert r.json() == {"items": rec.recommend(["item-1", "item-2"], k=4, exclude_seen=True)}
        assert [x["id"] for x in c.post("/recommend", json={"history": ["item-3"]}).json()["items"]] == [
            x["id"] for x in rec.recommend(["item-3"], k=10)
        ]
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["num_items"] == rec.num_items and health["index"] == "exact"
        assert c.get("/docs").status_code == 200 and "swagger" in c.get("/docs").text.lower()
        schema = c.get("/openapi.json").json()
        assert {"/recommend", "/items", "/health"} <= set(schema["paths"])


@pytest.mark.parametrize(
    "body, status, code, fragment",
    [
        ({"history": []}, 422, "invalid_request", "history"),
        ({"history": ["item-1"] * 21}, 422, "invalid_request", "at most 20"),
        ({"history": ["item-1", "ghost", "phantom"]}, 422, "unknown_items", "'ghost', 'phantom'"),
        ({"history": ["item-1"], "k": 0}, 422, "invalid_request", "k:"),
        ({"history": ["item-1"], "k": 26}, 422, "invalid_request", "k:"),
        ({"history": ["item-1"], "k": "5"}, 422, "invalid_request", "k:"),
        ({"history": [7]}, 422, "invalid_request", "history.0"),
        ({"history": ["item-1"], "kk": 3}, 422, "invalid_request", "kk"),
        ({}, 422, "invalid_request", "history"),
    ],
)
def test_recommend_client_errors(server, body, status, code, fragment):
    url, _ = server
    r = httpx.post(f"{url}/recommend", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and fragment in r.json()["detail"]
    if code == "unknown_items":
        assert r.json()["unknown_ids"] == ["ghost", "phantom"]


def test_malformed_and_oversize_bodies(server):
    url, _ = server
    with httpx.Client(base_url=url) as c:
        r = c.post("/recommend", content=b'{"history": ["item-1",', headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"] == "malformed_json"
        big = b'{"history": ["' + b"x" * 5000 + b'"]}'
        r = c.post("/recommend", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"

        def chunks():  # no Content-Length: the limit is enforced while streaming
            yield b'{"history": ["'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"]}'

        r = c.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
        assert r.request.headers.get("transfer-encoding") == "chunked"
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"
        assert c.get("/recommend").status_code == 405
        assert c.post("/items", json={"items": {}}, headers=AUTH).status_code == 422
        r = c.post("/items", json={"items": {f"n{i}": "t" for i in range(6)}}, headers=AUTH)
        assert r.status_code == 422 and "at most 5" in r.json()["detail"]
        assert c.post("/items", json={"items": {"n": 3}}, headers=AUTH).status_code == 422
        # the server is still healthy after all of that
        assert c.get("/health").status_code == 200


def test_sixteen_clients_two_hundred_requests_each(server):
    url, rec = server
    histories = [[f"item-{1 + (c * 7 + j) % N_ITEMS}" for j in range(1 + c % 5)] for c in range(16)]
    expected = [[x["id"] for x in rec.recommend(h, k=5)] for h in histories]

    def client(c: int) -> tuple[int, int]:
        errors = wrong = 0
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(200):
                r = http.post("/recommend", json={"history": histories[c], "k": 5})
                if r.status_code != 200:
                    errors += 1
                elif [x["id"] for x in r.json()["items"]] != expected[c]:
                    wrong += 1
        return errors, wrong

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, range(16)))
    assert sum(e for e, _ in results) == 0
    assert sum(w for _, w in results) == 0


@needs_encoder
def test_add_items_during_load(tmp_path):
    """POST /items while 8 clients hammer /recommend: every answer is consistent (original items keep
    their exact scores; a new item with the same text as an existing one scores as that one) and
    the new items show up. New items are encoded by the model's real text encoder."""
    rec = Recommender.from_pretrained(text_model_dir(tmp_path))
    twin_of: dict[str, str] = {}
    history = ["A1", "A3"]
    reference = {x["id"]: x["score"] for x in rec.recommend(history, k=len(SCIENCE_TEXTS))}
    top = list(reference)[:4]
    problems: list[str] = []
    stop = threading.Event()

    with ServerThread(create_app(rec, api_key=KEY)) as url:

        def reader():
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/recommend", json={"history": history, "k": 6})
                    if r.status_code != 200:
                        problems.append(f"{r.status_code} {r.text}")
                        continue
                    for x in r.json()["items"]:
                        base = twin_of.get(x["id"], x["id"])
                        if abs(x["score"] - reference[base]) > 1e-4:
                            problems.append(f"{x['id']}: {x['score']} vs {reference[base]}")

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        with httpx.Client(base_url=url, timeout=60) as http:
            for step in range(20):
                new = {f"twin{step}-{k}": top[(step + k) % 4] for k in range(3)}
                twin_of.update(new)
                r = http.post("/items", json={"items": {i: SCIENCE_TEXTS[orig] for i, orig in new.items()}}, headers=AUTH)
                assert r.status_code == 200 and r.json()["added"] == 3
        stop.set()
        for t in threads:
            t.join()
        final = httpx.post(f"{url}/recommend", json={"history": history, "k": 6}).json()["items"]
        health = httpx.get(f"{url}/health").json()
    assert not problems, problems[:3]
    assert health["num_items"] == len(SCIENCE_TEXTS) + 60
    assert any(x["id"] in twin_of for x in final)


@needs_encoder
def test_new_item_by_text_over_http(tmp_path):
    rec = Recommender.from_pretrained(text_model_dir(tmp_path))
    with ServerThread(create_app(rec, allow_writes=True)) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/items", json={"items": {"B7": "Lab coat, cotton, white, size M. Lab safety. Fisher."}})
        assert r.json() == {"added": 1, "updated": 0, "num_items": 9}
        r = c.post("/recommend", json={"history": ["A2", "B7"], "k": 9})
        assert r.status_code == 200 and "B7" in [x["id"] for x in r.json()["items"]]
        r = c.post("/recommend", json={"history": ["A2", "C1"], "item_texts": {"C1": "Face shield. Lab safety."}, "k": 3})
        assert r.status_code == 200 and len(r.json()["items"]) == 3


def test_unisrec_serve_command(model_dir):
    """`unisrec serve` in its own process: up, answers, refuses an unknown id, stops on SIGTERM."""
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "unisrec", "serve", str(model_dir), "--port", str(port), "--log-level", "warning", "--max-k", "7"],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "unisrec serve exited"
            assert time.monotonic() < deadline, "unisrec serve did not come up in 60 s"
            time.sleep(0.2)
        r = httpx.post(f"{url}/recommend", json={"history": ["item-2"], "k": 7})
        assert r.status_code == 200 and len(r.json()["items"]) == 7
        assert httpx.post(f"{url}/recommend", json={"history": ["item-2"], "k": 8}).status_code == 422
        assert httpx.post(f"{url}/recommend", json={"history": ["nope"]}).json()["unknown_ids"] == ["nope"]
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=30) in (0, -15)
