"""Pre-train on a lent GPU within a time budget; record throughput; copy checkpoints + logs to $OUT.

Driven by ``benchmarks/gpu_pretrain.sh`` (a fresh machine without network: torch CUDA, numpy,
pyarrow, safetensors, tqdm, pyyaml; run with PYTHONPATH=src). Uses the Python API directly, so
the CLI's other sub-commands (and their optional dependencies) are never imported.

1. throughput: 8 steps at batch 1,024 and at 8,192 on Games + Scientific (sequences/s, peak
   CUDA memory); 2. two checkpoints with the rest of the budget, batch 8,192 like the release:
   Games only (source for the Scientific target) and Games + Scientific (source for Online Retail).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from unisrec.training.pretrain import PretrainConfig, pretrain


CUDA = torch.cuda.is_available()  # False only in a CPU dry run of this script


def run(dirs, out, batch, steps, epochs=1000, lr=1e-3):
    cfg = PretrainConfig(epochs=epochs, max_steps=steps, batch_size=batch, lr=lr, device="auto", save_every=0)
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    _, summary = pretrain(dirs, out, cfg, show_progress=False)
    if CUDA:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    seqs = sum(e["sequences"] for e in summary["epochs"])
    secs = sum(e["seconds"] for e in summary["epochs"])
    return {
        "datasets": [str(d) for d in dirs], "batch_size": batch, "steps": summary["global_step"],
        "sequences": seqs, "train_seconds": round(secs, 2), "sequences_per_s": round(seqs / secs, 1),
        "wall_seconds": round(wall, 2), "peak_cuda_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 3) if CUDA else None,
        "last_loss": summary["last_loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=".gpu_data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=330, help="seconds for everything")
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--probe-batches", type=int, nargs="+", default=[1024, 8192])
    args = ap.parse_args()
    start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    both = [data / "games", data / "scientific"]
    report = {"device": torch.cuda.get_device_name(0) if CUDA else "cpu (dry run)", "torch": torch.__version__, "throughput": [], "checkpoints": []}
    work = Path(tempfile.mkdtemp(prefix="unisrec-gpu-"))
    for batch in args.probe_batches:
        row = run(both, work / f"tp{batch}", batch, steps=8)
        report["throughput"].append(row)
        print(json.dumps(row), flush=True)
    (out / "gpu_pretrain.json").write_text(json.dumps(report, indent=2) + "\n")
    # the rest of the budget, split between the two checkpoints in proportion to corpus size
    rate = next((r["sequences_per_s"] for r in report["throughput"] if r["batch_size"] == args.batch_size),
                report["throughput"][-1]["sequences_per_s"])
    left = args.budget_s - (time.perf_counter() - start) - 40  # set-up and copying
    jobs = [("games", [data / "games"], 0.5), ("games_scientific", both, 0.5)]
    for name, dirs, share in jobs:
        steps = max(1, int(left * share * 0.85 * rate / args.batch_size))
        row = run(dirs, work / name, args.batch_size, steps=steps)
        row["name"] = name
        report["checkpoints"].append(row)
        print(json.dumps(row), flush=True)
        for f in ("config.json", "model.safetensors", "training_log.jsonl"):
            shutil.copyfile(work / name / f, out / f"{name}.{f}")
        (out / "gpu_pretrain.json").write_text(json.dumps(report, indent=2) + "\n")
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    (out / "gpu_pretrain.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
