"""Pre-train on a lent GPU: throughput probes, or one time-capped pre-training job.

Driven by ``benchmarks/gpu_session.sh`` (a fresh machine without network: torch CUDA, numpy,
pyarrow, safetensors, tqdm, pyyaml; run with PYTHONPATH=src). Uses the Python API directly, so
the CLI's other sub-commands (and their optional dependencies) are never imported.

    python3 benchmarks/pretrain_gpu.py --data .gpu_data --out OUT --probe 1024 8192
        8 steps at each batch size on Games + Scientific: sequences/s and peak CUDA memory
        -> OUT/probe.json (run it alone on the GPU, before anything else starts)
    python3 benchmarks/pretrain_gpu.py --data .gpu_data --out OUT --job games_scientific \
        --datasets games,scientific --minutes 2.5
        pre-train until the time cap -> OUT/games_scientific/ (config.json, model.safetensors,
        training_log.jsonl) + OUT/games_scientific.json (throughput, epochs, losses)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from unisrec.training.pretrain import PretrainConfig, pretrain

CUDA = torch.cuda.is_available()  # False only in a CPU dry run of this script


def run(dirs: list[Path], out: Path, batch: int, steps: int = 0, minutes: float = 0.0, lr: float = 1e-3) -> dict:
    cfg = PretrainConfig(epochs=100000 if minutes else 1000, max_steps=steps, batch_size=batch, lr=lr,
                         device="auto", save_every=0, time_limit_minutes=minutes)
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
        "datasets": [d.name for d in dirs], "batch_size": batch, "lr": lr, "steps": summary["global_step"],
        "epochs": len(summary["epochs"]), "sequences": seqs, "train_seconds": round(secs, 2),
        "sequences_per_s": round(seqs / secs, 1), "wall_seconds": round(wall, 2),
        "peak_cuda_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 3) if CUDA else None,
        "last_loss": summary["last_loss"],
        "device": torch.cuda.get_device_name(0) if CUDA else "cpu (dry run)", "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".gpu_data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--probe", type=int, nargs="*", help="batch sizes to probe (8 steps each)")
    ap.add_argument("--job", help="name of the pre-training job (output sub-folder)")
    ap.add_argument("--datasets", default="games", help="comma-separated dataset folders under --data")
    ap.add_argument("--minutes", type=float, default=2.5, help="training-time cap of the job")
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.probe:
        work = Path(tempfile.mkdtemp(prefix="unisrec-probe-"))
        rows = []
        for batch in args.probe:
            rows.append(run([data / "games", data / "scientific"], work / f"b{batch}", batch, steps=8))
            print(json.dumps(rows[-1]), flush=True)
        (out / "probe.json").write_text(json.dumps(rows, indent=2) + "\n")
    if args.job:
        dirs = [data / d for d in args.datasets.split(",")]
        row = run(dirs, out / args.job, args.batch_size, minutes=args.minutes, lr=args.lr)
        row["name"] = args.job
        print(json.dumps(row), flush=True)
        (out / f"{args.job}.json").write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
