"""HTTP load test of `unisrec serve`: N concurrent clients on loopback, micro-batching on vs off.

    .venv/bin/python benchmarks/bench_load.py                  # ~2 min on 2 cores
    .venv/bin/python benchmarks/bench_load.py --duration 5 --clients 1,8,32

Model: a Scientific-sized model directory -- the real catalogue (4,385 items, their texts and
384-d all-MiniLM-L6-v2 features from the prepared dataset at --data, default $UNISREC_DATA/scientific (else data/scientific)
or ../shared/data/scientific) and a UniSRec with the paper's architecture (hidden 300, 2 layers,
2 heads, 8 experts, 50 positions) and RANDOM weights, written with ``save_model_dir`` like a trained
model. Latency does not depend on the weights' values. Requests are the dataset's test-split
histories (the last <= 50 items before each user's last item), in order, top-10, exact scoring.

Bounded and local only: the server is `unisrec serve` in its own process on 127.0.0.1 (a free
port); the clients are asyncio coroutines in this process, each with one keep-alive connection,
sending one request at a time for a fixed duration. Reports requests/s and latency percentiles per
(micro-batching, clients) as results/serving/load.json and results/serving/load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import benchlib

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # never anything else: this is a load generator
DATA_CANDIDATES = (benchlib.dataset_dir("scientific"), ROOT.parent / "shared" / "data" / "scientific")


def build_model_dir(data: Path, work: Path, seed: int = 0) -> tuple[Path, list[list[str]]]:
    """(model dir over the real Scientific catalogue with random weights, test-split histories as raw ids)."""
    import torch

    from unisrec.data.dataset import Dataset
    from unisrec.models.model_dir import save_model_dir
    from unisrec.models.unisrec import UniSRec, UniSRecConfig

    ds = Dataset.load(data)
    hist, lengths, _ = ds.examples("test", max_history=50)
    histories = [[ds.item_ids[i - 1] for i in row[:n]] for row, n in zip(hist.tolist(), lengths.tolist())]
    model_dir = work / "scientific_random_model"
    if not (model_dir / "config.json").is_file():
        name, info = ds.feature_info()
        torch.manual_seed(seed)
        model = UniSRec(UniSRecConfig(text_dim=int(info["dim"]), num_items=ds.num_items))
        save_model_dir(model, model_dir, ds, feature_name=name, extra={"note": "random weights, for benchmarks"})
    return model_dir, histories


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, port: int, micro_batch: bool, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "unisrec", "serve", str(model_dir), "--host", HOST, "--port", str(port),
           "--log-level", "warning", "--torch-threads", "1", "--micro-batch" if micro_batch else "--no-micro-batch", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    env.pop("UNISREC_API_KEY", None)
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("unisrec serve did not come up")
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Connection:
    """A minimal HTTP/1.1 keep-alive client (the load generator must cost little CPU next to the server)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(*await asyncio.open_connection(HOST, port))

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % (path.encode(), HOST.encode(), len(body)) + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), or NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


async def load(port: int, bodies: list[bytes], clients: int, duration: float, warmup: float, server_pid: int) -> dict:
    """``clients`` connections, each sending the next body as soon as its previous answer arrives."""
    conns = [await Connection.open(port) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    counter = 0
    measuring = False
    stop = False

    async def client(conn: Connection) -> None:
        nonlocal counter, errors
        while not stop:
            body = bodies[counter % len(bodies)]
            counter += 1
            t0 = time.perf_counter()
            status, reply = await conn.post("/recommend", body)
            took = time.perf_counter() - t0
            if status != 200 or not reply.startswith(b'{"items":['):
                errors += 1
            elif measuring:
                latencies.append(took)

    tasks = [asyncio.ensure_future(client(c)) for c in conns]
    await asyncio.sleep(warmup)
    cpu0, own0 = cpu_seconds(server_pid), time.process_time()
    measuring, start = True, time.perf_counter()
    await asyncio.sleep(duration)
    measuring, elapsed = False, time.perf_counter() - start
    server_cpu, client_cpu = cpu_seconds(server_pid) - cpu0, time.process_time() - own0
    count = len(latencies)
    stop = True
    await asyncio.gather(*tasks)
    for c in conns:
        c.close()
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": count,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(count / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "errors": errors,
        # CPU time per answered request: robust to other load on the machine, unlike wall-clock rates
        "server_cpu_ms_per_request": round(server_cpu / count * 1000, 3),
        "client_cpu_ms_per_request": round(client_cpu / count * 1000, 3),
    }


def server_stack() -> str:
    """What uvicorn runs on in this environment (the C parser and loop are picked up when installed)."""
    from importlib.util import find_spec
    from importlib.metadata import version

    http = "httptools" if find_spec("httptools") else "h11 (pure Python)"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return f"uvicorn {version('uvicorn')}, HTTP parser {http}, event loop {loop}"


def batch_stats(port: int) -> dict:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def markdown(result: dict) -> str:
    lines = [
        "# HTTP load: micro-batching on vs off (`benchmarks/bench_load.py`)",
        "",
        f"Model: **random weights**, Scientific's real size and catalogue ({result['items']:,} items with their real "
        f"{result['text_dim']}-d all-MiniLM-L6-v2 features; UniSRec hidden 300, 2 layers, 8 experts, 50 positions), "
        "written as a model directory with `save_model_dir` -- no training (latency does not depend on the weights' "
        "values). Requests: the test-split histories (<= 50 items), top-10, exact scoring, `POST /recommend`.",
        "",
        f"Machine: {result['machine']}. Server: `unisrec serve` in its own process on 127.0.0.1, "
        f"`--torch-threads 1` ({result.get('server_stack', 'stack not recorded')}); clients: asyncio keep-alive connections in the benchmark process (same cores), "
        f"each sending its next request when the previous answer arrives; {result['warmup_s']} s warm-up, then "
        f"{result['duration_s']} s measured per row; 1-minute load average {result['load_average_1min'][0]} before, "
        f"{result['load_average_1min'][1]} after. Micro-batching: `--batch-wait-ms {result['batch_wait_ms']}`, "
        f"`--batch-max-size {result['batch_max_size']}`. Both servers were measured in the same run, one after the other.",
        "",
        "| micro-batching | clients | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(f"| {'on' if row['micro_batch'] else 'off'} | {row['clients']} | {row['requests_per_s']:.0f} | "
                     f"{row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.1f} | {row['errors']} | "
                     f"{row['server_cpu_ms_per_request']:.2f} |")
    on = {r["clients"]: r for r in result["rows"] if r["micro_batch"]}
    off = {r["clients"]: r for r in result["rows"] if not r["micro_batch"]}
    top = max(on)
    if top in off:
        lines += ["", f"With {top} clients, micro-batching serves **{on[top]['requests_per_s'] / off[top]['requests_per_s']:.1f}x** "
                  f"the requests/s of one-request-at-a-time serving (p99 {on[top]['p99_ms']:.1f} ms vs {off[top]['p99_ms']:.1f} ms)."]
    cpus = int(result["machine"].rsplit(",", 1)[1].split()[0]) if "CPUs visible" in result["machine"] else 0
    # the load before the run is other jobs; the load after includes this benchmark's own two processes
    if cpus and result["load_average_1min"][0] > cpus / 2:
        lines += ["", f"**The machine was shared** (1-minute load average {result['load_average_1min'][0]} before "
                  f"the run on {cpus} CPUs: other jobs were running), so wall-clock rates and "
                  "tail latencies include time the server waited for a core and are not idle-machine figures. The "
                  "server CPU ms/request column -- the server process's CPU time over the requests it answered -- "
                  "is the comparison that does not depend on that."]
    if result.get("batches"):
        b = result["batches"]
        lines += ["", f"Batches formed (micro-batching on, whole run): {b['requests']:,} requests in {b['batches']:,} "
                  f"batches, largest {b['largest']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=next((d for d in DATA_CANDIDATES if d.is_dir()), DATA_CANDIDATES[0]))
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "unisrec_bench_load")
    p.add_argument("--clients", default="1,32", help="comma-separated client counts (default 1,32)")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per row (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each row (default 3)")
    p.add_argument("--batch-wait-ms", type=float, default=1.0)
    p.add_argument("--batch-max-size", type=int, default=64)
    p.add_argument("--output", type=Path, default=ROOT / "results" / "serving" / "load")
    args = p.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    model_dir, histories = build_model_dir(args.data, args.work)
    bodies = [json.dumps({"history": h, "k": 10}).encode() for h in histories]
    clients = [int(c) for c in args.clients.split(",")]
    rows, batches = [], None
    load_before = os.getloadavg()
    for micro_batch in (False, True):
        port = free_port()
        extra = ["--batch-wait-ms", str(args.batch_wait_ms), "--batch-max-size", str(args.batch_max_size)]
        server = start_server(model_dir, port, micro_batch, extra)
        try:
            for n in clients:
                row = {"micro_batch": micro_batch, **asyncio.run(load(port, bodies, n, args.duration, args.warmup, server.pid))}
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
            if micro_batch:
                health = batch_stats(port)
                batches = health.get("batches")
                items = health["num_items"]
        finally:
            stop_server(server)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    result = {
        "benchmark": "bench_load",
        "model": "random-weight UniSRec (paper architecture) over the real Scientific catalogue; not trained",
        "items": items,
        "text_dim": 384,
        "requests": f"{len(histories)} test-split histories, top-10, exact scoring",
        "machine": f"{cpu}, {os.cpu_count()} CPUs visible",
        "server_stack": server_stack(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "batch_wait_ms": args.batch_wait_ms,
        "batch_max_size": args.batch_max_size,
        "rows": rows,
        "batches": batches,
        # 1-minute load average before and after: other jobs on the machine skew wall-clock numbers
        "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
