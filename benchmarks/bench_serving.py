"""Serving latency: one top-10 request, exact vs FAISS, on the Scientific catalogue and on 10^6 items.

    python benchmarks/bench_serving.py                 # both catalogues, ~10 min on 2 cores
    python benchmarks/bench_serving.py --skip-million  # Scientific only, ~1 min

Model: ``--model-dir`` (a fine-tuned model directory) if given, otherwise a random-weight UniSRec
with the paper's architecture (d=300, 2 layers, 2 heads, 8 experts, 50 positions) over real
all-MiniLM-L6-v2 features (384-d) of the 4,385 Scientific item texts. Latency does not depend on
the weights' values. Requests are real histories: the Scientific test-split histories (up to 50
items), in order.

The 1,000,000-item catalogue keeps the 4,385 real items and adds 995,615 generated ones whose text
features are mixtures of two random real items' features plus noise (so the catalogue has the
clustered structure of real text features; i.i.d. Gaussian vectors would be an unrealistically
hard case for any ANN index). It is written as a real model directory and loaded with
``Recommender.from_pretrained`` like any other.

Writes results/serving/serving_bench.json and .md (``--output``). One request = the Python API's
``Recommender.recommend(history, k=10)`` (sequence encoder forward + scoring + top-k), timed with
perf_counter after a warm-up; HTTP round trips through uvicorn are timed separately at the
Scientific size. The Scientific atomic files come from ``--scientific`` (default: the public copy
in ``$UNISREC_SHARED/data/scientific``, else ``../shared/data/scientific``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import benchlib

SCIENTIFIC = benchlib.shared_root() / "data" / "scientific"


def load_scientific(folder: Path = SCIENTIFIC) -> tuple[list[str], list[str], list[list[str]]]:
    """(ASINs, texts, test-split histories as ASIN lists) from the RecBole atomic files."""
    text = benchlib.read_atomic_text(folder / "Scientific.text")
    ids, texts = list(text), [t.strip() for t in text.values()]
    by_index = benchlib.read_item2index(folder / "Scientific.item2index")
    histories = []
    with open(folder / "Scientific.test.inter", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            hist = line.split("\t")[1].split()
            histories.append([by_index[int(i)] for i in hist])
    return ids, texts, histories


def scientific_features(texts: list[str], work: Path) -> tuple[np.ndarray, dict]:
    from unisrec.text import TextEncoder

    enc = TextEncoder()
    cache = work / f"scientific_{enc.name}.npy"
    if cache.is_file():
        feats = np.load(cache)
    else:
        t0 = time.perf_counter()
        feats = np.concatenate([np.zeros((1, enc.dim), np.float32), enc.encode(texts, progress=True)])
        print(f"encoded {len(texts)} texts in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        np.save(cache, feats)
    return feats, enc.settings()


def write_model_dir(path: Path, ids: list[str], texts: list[str], feats: np.ndarray, info: dict, seed: int = 0) -> Path:
    """A model directory in the real format (dataset dir -> save_model_dir), random weights."""
    from unisrec.data.dataset import Dataset
    from unisrec.models.model_dir import save_model_dir
    from unisrec.models.unisrec import UniSRec, UniSRecConfig

    if (path / "model" / "config.json").is_file():
        return path / "model"
    torch.manual_seed(seed)
    model = UniSRec(UniSRecConfig(text_dim=feats.shape[1]))
    n = len(ids)
    ds = Dataset("bench", list(ids), list(texts), ["u0"], np.array([0, 1], np.int64), np.array([1], np.int32))
    ds.save(path / "data")
    (path / "data" / "features").mkdir(exist_ok=True)
    np.save(path / "data" / "features" / "feat.npy", feats)
    ds.update_manifest(features={"feat": dict(info, file="features/feat.npy", dim=int(feats.shape[1]))}, default_features="feat")
    assert feats.shape[0] == n + 1
    return save_model_dir(model, path / "model", ds, feature_name="feat")


def million_features(real: np.ndarray, n_total: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Rows 0..len(real)-1 = real (incl. padding), then mixtures a*x_i + (1-a)*x_j + noise."""
    rng = np.random.default_rng(seed)
    n_real = real.shape[0] - 1
    out = np.empty((n_total + 1, real.shape[1]), np.float32)
    out[: n_real + 1] = real
    scale = float(real[1:].std())
    for a in range(n_real + 1, n_total + 1, chunk):
        b = min(n_total + 1, a + chunk)
        i = rng.integers(1, n_real + 1, b - a)
        j = rng.integers(1, n_real + 1, b - a)
        w = rng.uniform(0.5, 1.0, (b - a, 1)).astype(np.float32)
        out[a:b] = w * real[i] + (1 - w) * real[j] + rng.normal(0, 0.3 * scale, (b - a, real.shape[1])).astype(np.float32)
    return out


def latency(rec, histories: list[list[str]], n: int, warmup: int = 20) -> dict:
    for h in histories[:warmup]:
        rec.recommend(h, k=10)
    times = []
    for q in range(n):
        h = histories[q % len(histories)]
        t0 = time.perf_counter()
        rec.recommend(h, k=10)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {"requests": n, "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def exact_top10(exact, histories: list[list[str]]) -> list[set[str]]:
    return [{x["id"] for x in exact.recommend(h, k=10)} for h in histories]


def recall_at_10(truth: list[set[str]], approx, histories: list[list[str]]) -> float:
    """Mean |FAISS top-10 ∩ exact top-10| / 10 over the histories."""
    hits = sum(len(t & {x["id"] for x in approx.recommend(h, k=10)}) for t, h in zip(truth, histories))
    return round(hits / (10 * len(histories)), 4)


def http_latency(model_dir: Path, histories: list[list[str]], n: int, threads: int) -> dict:
    """Round trips to `unisrec serve` running in its own process (client and server do not share a GIL)."""
    import socket
    import subprocess

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "unisrec", "serve", str(model_dir), "--port", str(port), "--log-level", "warning",
           "--torch-threads", str(threads)]
    server = subprocess.Popen(cmd)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("unisrec serve did not come up")
            time.sleep(0.2)
        with httpx.Client(base_url=url) as c:
            for h in histories[:20]:
                c.post("/recommend", json={"history": h, "k": 10})
            times = []
            for q in range(n):
                t0 = time.perf_counter()
                r = c.post("/recommend", json={"history": histories[q % len(histories)], "k": 10})
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = np.array(times) * 1000
    return {"requests": n, "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def nprobe_sweep(truth, approx, histories, probes, n_lat) -> list[dict]:
    import faiss

    rows = []
    for p in probes:
        faiss.ParameterSpace().set_index_parameters(approx._snap.ann.index, f"nprobe={p}")
        rows.append({"nprobe": p, "recall@10": recall_at_10(truth, approx, histories), **latency(approx, histories, n_lat)})
    faiss.ParameterSpace().set_index_parameters(approx._snap.ann.index, approx._snap.ann.params)
    return rows


def bench_catalogue(name: str, model_dir: Path, histories, args, http: bool) -> dict:
    from unisrec.serving.recommender import Recommender

    out: dict = {"catalogue": name}
    t0 = time.perf_counter()
    exact = Recommender.from_pretrained(model_dir, device=args.device)
    out["items"] = exact.num_items
    out["device"] = args.device
    out["load_s"] = round(time.perf_counter() - t0, 2)
    out["exact"] = latency(exact, histories, args.requests)
    print(name, "exact", out["exact"], file=sys.stderr)
    if http:
        out["http_exact"] = http_latency(model_dir, histories, args.requests, args.threads)
        print(name, "http", out["http_exact"], file=sys.stderr)
    if not args.no_faiss and args.device == "cpu":
        t0 = time.perf_counter()
        approx = Recommender(exact.model, exact._snap, exact.encoder_info, device="cpu", index="faiss", path=str(model_dir))
        out["faiss_build_s"] = round(time.perf_counter() - t0, 2)
        ann = approx._snap.ann
        out["faiss"] = {"spec": ann.spec, "params": ann.params, **latency(approx, histories, args.requests)}
        queries = histories[: args.recall_queries]
        truth = exact_top10(exact, queries)
        out["faiss"]["recall@10_vs_exact"] = recall_at_10(truth, approx, queries)
        print(name, "faiss", out["faiss"], file=sys.stderr)
        nlist = int(ann.spec[3:].split(",")[0])
        probes = sorted({p for p in (1, 4, 8, 16, 32, 64, 128) if p <= nlist})
        out["faiss_nprobe_sweep"] = nprobe_sweep(truth, approx, queries, probes, max(100, args.requests // 5))
    return out


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(res: dict) -> str:
    lines = [
        "# Serving latency (one top-10 request)",
        "",
        f"Machine: {res['machine']}; torch/FAISS threads {res['torch_threads']}; device {res['device']}; {res['note']}",
        f"Model: {res['model']}",
        "",
        "| catalogue | items | scoring | p50 ms | p99 ms | recall@10 vs exact |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for c in res["catalogues"]:
        lines.append(f"| {c['catalogue']} | {c['items']:,} | exact (torch matmul + topk, {c['device']}) | {c['exact']['p50_ms']} | {c['exact']['p99_ms']} | 1.0 |")
        if "http_exact" in c:
            lines.append(f"| {c['catalogue']} | {c['items']:,} | exact, HTTP round trip to `unisrec serve` | {c['http_exact']['p50_ms']} | {c['http_exact']['p99_ms']} | 1.0 |")
        if "faiss" in c:
            f = c["faiss"]
            lines.append(f"| {c['catalogue']} | {c['items']:,} | FAISS {f['spec']} {f['params']} | {f['p50_ms']} | {f['p99_ms']} | {f['recall@10_vs_exact']} |")
    for c in res["catalogues"]:
        if "faiss_nprobe_sweep" in c:
            lines += ["", f"FAISS nprobe sweep, {c['catalogue']} (build {c['faiss_build_s']} s, load {c['load_s']} s):", "",
                      "| nprobe | recall@10 | p50 ms | p99 ms |", "|---:|---:|---:|---:|"]
            lines += [f"| {r['nprobe']} | {r['recall@10']} | {r['p50_ms']} | {r['p99_ms']} |" for r in c["faiss_nprobe_sweep"]]
    lines += ["", "Goals: p99 < 20 ms at ~5K items; p99 < 50 ms at 10^6 items with FAISS.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=None, help="a trained Scientific model dir (default: random weights)")
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "unisrec_bench_serving",
                    help="features and generated model dirs are cached here (default: the temp dir)")
    ap.add_argument("--scientific", type=Path, default=SCIENTIFIC, help="folder of the Scientific atomic files")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--recall-queries", type=int, default=500)
    ap.add_argument("--million", type=int, default=1_000_000)
    ap.add_argument("--skip-million", action="store_true")
    ap.add_argument("--machine-note", default="", help="added to the machine line (e.g. where and how pinned)")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (FAISS is measured on cpu only)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/FAISS intra-op threads (default 1: one request per core, as `unisrec serve` runs)")
    ap.add_argument("--output", type=Path, default=benchlib.RESULTS / "serving" / "serving_bench", help="output prefix (.json and .md)")
    args = ap.parse_args()
    if not args.scientific.is_dir():
        sys.exit(f"needs {args.scientific} (the shared Scientific data)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        args.no_faiss = True
    ids, texts, histories = load_scientific(args.scientific)
    res = {
        "machine": f"{_cpu_name()}, {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable {args.machine_note}".strip(),
        "torch_threads": args.threads,
        "device": args.device if args.device == "cpu" else f"{args.device} ({torch.cuda.get_device_name()})",
        "note": "single requests in sequence after 20 warm-up requests",
        "catalogues": [],
    }
    if args.model_dir:
        sci_dir = args.model_dir
        res["model"] = f"model dir {benchlib.display_path(args.model_dir)} ({json.loads((sci_dir / 'config.json').read_text()).get('encoder', {}).get('encoder')} features)"
        feats = np.load(sci_dir / "catalogue" / "features.npy")
        info = json.loads((sci_dir / "config.json").read_text()).get("encoder", {})
    else:
        feats, info = scientific_features(texts, args.work_dir)
        sci_dir = write_model_dir(args.work_dir / "scientific", ids, texts, feats, info)
        res["model"] = f"random-weight UniSRec (paper architecture) over {info.get('encoder')} features ({feats.shape[1]}-d)"
    res["catalogues"].append(bench_catalogue("Scientific", sci_dir, histories, args, http=not args.no_http))
    if not args.skip_million:
        big = args.work_dir / f"million_{args.million}"
        if not (big / "model" / "config.json").is_file():
            t0 = time.perf_counter()
            fake = million_features(feats, args.million)
            n_fake = args.million - len(ids)
            all_ids = ids + [f"gen-{i:07d}" for i in range(n_fake)]
            all_texts = texts + [f"generated item {i}" for i in range(n_fake)]
            write_model_dir(big, all_ids, all_texts, fake, info)
            del fake
            print(f"wrote the {args.million:,}-item model dir in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        res["catalogues"].append(bench_catalogue(f"generated {args.million:,}", big / "model", histories, args, http=False))
    benchlib.write_result(args.output, res, markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
