"""Micro-batching of /recommend: concurrent requests share one forward, each gets its own answer."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from serving_fixtures import ServerThread, random_model_dir
from unisrec.serving.app import create_app
from unisrec.serving.batching import EncodeGate, MicroBatcher, ServerBusy
from unisrec.serving.recommender import Recommender

N_ITEMS = 60


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return Recommender.from_pretrained(random_model_dir(tmp_path_factory.mktemp("batch"), n=N_ITEMS), torch_threads=1)


def requests_mix(count: int) -> list[dict]:
    """Histories of 1-12 items (the model reads 8), k 1-60, exclude_seen on and off."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(count):
        length = int(rng.integers(1, 13))
        out.append({"history": [f"item-{i}" for i in rng.integers(1, N_ITEMS + 1, length)],
                    "k": int(rng.integers(1, N_ITEMS + 1)), "exclude_seen": bool(rng.integers(0, 2))})
    return out


def test_recommend_batch_with_per_history_k_and_exclude_seen(rec):
    reqs = requests_mix(40)
    batch = rec.recommend_batch([r["history"] for r in reqs], k=[r["k"] for r in reqs],
                                exclude_seen=[r["exclude_seen"] for r in reqs])
    for r, got in zip(reqs, batch):
        want = rec.recommend(r["history"], k=r["k"], exclude_seen=r["exclude_seen"])
        assert [x["id"] for x in got] == [x["id"] for x in want]
        np.testing.assert_allclose([x["score"] for x in got], [x["score"] for x in want], rtol=1e-5, atol=1e-6)
        if r["exclude_seen"]:
            assert not set(r["history"]) & {x["id"] for x in got}
        assert len(got) == min(r["k"], N_ITEMS - (len(set(r["history"])) if r["exclude_seen"] else 0))


def test_length_groups_keep_every_history_in_place(rec):
    from unisrec.serving.recommender import NEW_FORWARD_POSITIONS, _length_groups

    lengths = [5, 1, 50, 3, 3, 9, 2, 35, 12, 6]
    groups = _length_groups(lengths)
    assert sorted(b for g in groups for b in g) == list(range(len(lengths)))
    for g in groups:  # shortest first, and no group pads more than a forward is worth per join
        assert [lengths[b] for b in g] == sorted(lengths[b] for b in g)
    assert [[lengths[b] for b in g] for g in groups] == [[1, 2, 3, 3, 5, 6, 9], [12], [35, 50]]
    assert NEW_FORWARD_POSITIONS == 20
    # one group whose sorted order differs from the request order: answers must not be permuted
    histories = [["item-1", "item-2", "item-3"], ["item-4"], ["item-5", "item-6"]]
    for h, b in zip(histories, rec.recommend_batch(histories, k=5)):
        single = rec.recommend(h, k=5)
        assert [x["id"] for x in b] == [x["id"] for x in single]
        np.testing.assert_allclose([x["score"] for x in b], [x["score"] for x in single], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the batcher alone
def run(coro):
    return asyncio.run(coro)


def test_batcher_collects_concurrent_requests_into_one_batch():
    calls = []

    def run_batch(jobs):
        calls.append(len(jobs))
        return [f"{j.history[0]}:{j.k}:{j.exclude_seen}" for j in jobs]

    async def main():
        b = MicroBatcher(run_batch, max_batch=64, max_wait=0.05)
        out = await asyncio.gather(*(b.submit([f"h{i}"], i, i % 2 == 0) for i in range(1, 21)))
        b.close()
        return out, b

    out, b = run(main())
    assert out == [f"h{i}:{i}:{i % 2 == 0}" for i in range(1, 21)]
    assert calls == [20] and b.batches == 1 and b.requests == 20 and b.largest == 20


def test_batcher_caps_batch_size_and_isolates_errors():
    calls = []

    def run_batch(jobs):
        calls.append(len(jobs))
        return [ValueError(f"bad {j.history[0]}") if j.history[0] == "bad" else j.history[0] for j in jobs]

    async def main():
        b = MicroBatcher(run_batch, max_batch=8, max_wait=0.05)
        out = await asyncio.gather(*(b.submit(["bad" if i == 5 else f"h{i}"], 1, False) for i in range(20)),
                                   return_exceptions=True)
        b.close()
        return out

    out = run(main())
    assert isinstance(out[5], ValueError) and str(out[5]) == "bad bad"
    assert [o for i, o in enumerate(out) if i != 5] == [f"h{i}" for i in range(20) if i != 5]
    assert calls == [8, 8, 4]


def test_a_lone_request_waits_at_most_max_wait():
    async def main():
        b = MicroBatcher(lambda jobs: ["ok"] * len(jobs), max_batch=64, max_wait=0.002)
        await b.submit(["warm-up"], 1, False)
        start = time.perf_counter()
        assert await b.submit(["h"], 1, False) == "ok"
        b.close()
        return time.perf_counter() - start

    assert run(main()) < 0.05


def test_batcher_and_gate_refuse_beyond_their_queues():
    async def main():
        b = MicroBatcher(lambda jobs: [0] * len(jobs), max_batch=4, max_wait=0.01, max_pending=3)
        waiting = [asyncio.ensure_future(b.submit(["h"], 1, False)) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(ServerBusy):
            await b.submit(["h"], 1, False)
        assert await asyncio.gather(*waiting) == [0, 0, 0]
        b.close()

        gate = EncodeGate(concurrency=1, queue=1)
        release = asyncio.Event()

        async def hold():
            async with gate.slot():
                await release.wait()

        holders = [asyncio.ensure_future(hold()) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert gate.admitted == 2
        with pytest.raises(ServerBusy):
            async with gate.slot():
                pass
        release.set()
        await asyncio.gather(*holders)
        assert gate.admitted == 0
        async with gate.slot():
            pass

    run(main())


# ------------------------------------------------------------------ over HTTP
@pytest.mark.parametrize("micro_batch", [True, False])
def test_concurrent_clients_get_their_own_answers(rec, micro_batch):
    reqs = requests_mix(24)
    expected = [[x["id"] for x in rec.recommend(r["history"], k=r["k"], exclude_seen=r["exclude_seen"])] for r in reqs]
    app = create_app(rec, micro_batch=micro_batch, batch_wait_ms=2)
    with ServerThread(app) as url:

        def client(c: int) -> list[str]:
            problems = []
            with httpx.Client(base_url=url, timeout=30) as http:
                for step in range(25):
                    j = (c * 5 + step) % len(reqs)
                    r = http.post("/recommend", json=reqs[j])
                    if r.status_code != 200:
                        problems.append(f"{r.status_code} {r.text}")
                    elif [x["id"] for x in r.json()["items"]] != expected[j]:
                        problems.append(f"wrong answer for request {j}")
            return problems

        with ThreadPoolExecutor(12) as pool:
            problems = [p for ps in pool.map(client, range(12)) for p in ps]
        health = httpx.get(f"{url}/health").json()
    assert not problems, problems[:3]
    assert health["micro_batching"] is micro_batch
    if micro_batch:
        b = app.state.batcher
        assert b.requests == 300
        assert b.batches < b.requests * 0.8 and b.largest > 1, (b.batches, b.largest)  # requests did share batches
    else:
        assert app.state.batcher is None


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_one_failing_request_does_not_fail_its_batch(rec, monkeypatch):
    """A batch that raises is rerun request by request: only the guilty one gets an error (a JSON 500)."""
    original = rec.recommend_batch
    release = threading.Event()

    def flaky(histories, *args, **kwargs):
        if any("item-20" in h for h in histories):
            assert release.wait(30)  # holds the worker while the requests below queue up together
        if any("item-13" in h for h in histories):
            raise RuntimeError("simulated failure at /srv/secret/path")
        return original(histories, *args, **kwargs)

    monkeypatch.setattr(rec, "recommend_batch", flaky)
    app = create_app(rec)
    histories = [["item-1"], ["item-2", "item-13"], ["item-3"], ["item-4"]]
    with ServerThread(app) as url, ThreadPoolExecutor(5) as pool:
        batcher = app.state.batcher
        busy = pool.submit(httpx.post, f"{url}/recommend", json={"history": ["item-20"]}, timeout=60)
        wait_for(lambda: batcher.batches == 1)
        replies = [pool.submit(httpx.post, f"{url}/recommend", json={"history": h, "k": 3}, timeout=60) for h in histories]
        wait_for(lambda: len(batcher._pending) == 4)
        release.set()
        replies = [r.result() for r in replies]
        assert busy.result().status_code == 200
    assert [r.status_code for r in replies] == [200, 500, 200, 200]
    assert replies[1].json() == {"error": "internal_error", "detail": "internal server error; the server log has the details"}
    monkeypatch.undo()
    assert [r.json()["items"] for r in replies if r.status_code == 200] == [
        rec.recommend(h, k=3) for h in histories if "item-13" not in h
    ]
    assert batcher.largest == 4 and batcher.batches == 2
