"""Does handing freed heap back to the OS after every pre-training step keep its memory from creeping up?

    python benchmarks/pretrain_memory_trim.py --dataset scientific --epochs 3 \
        --variants steps:10 seconds:2 --out results/pretrain/memory_trim

Each variant is one real `unisrec pretrain` (batch 8,192, 1 thread, float32, seed 2020) in its own process,
all variants at once so they share the machine's load alike. The training loop's heap release
(`unisrec.training.loop.release_free_heap`, glibc's `malloc_trim(0)`) runs on the policy the variant names,
set inside that process before training starts:

* `steps:N` -- after every N-th step of an epoch (`steps:10` is what the loop did before this measurement);
* `seconds:S` -- also after any step that took at least S seconds (what the loop does now: `TRIM_AFTER_SECONDS`).

Recorded per variant: each epoch's logged peak RSS (the process's high-water mark so far) and seconds, the
process's CPU seconds and wall seconds, and the final loss (the policy must not change what is computed:
the losses of all variants are equal). Writes OUT.json and OUT.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

CHILD = """
import sys
import unisrec.training.loop as loop
kind, value = sys.argv[1].split(":")
if kind == "steps":
    loop.TRIM_EVERY, loop.TRIM_AFTER_SECONDS = int(value), float("inf")
else:
    loop.TRIM_AFTER_SECONDS = float(value)
from unisrec.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_variants(dataset: str, variants: list[str], epochs: int, batch_size: int, workdir: Path) -> dict[str, dict]:
    procs = {}
    for v in variants:
        out = workdir / v.replace(":", "_")
        argv = ["pretrain", dataset, "--output", str(out), "--epochs", str(epochs), "--batch-size", str(batch_size),
                "--seed", "2020", "--threads", "1", "--progress", "false"]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        log = open(workdir / f"{out.name}.log", "w")
        procs[v] = (subprocess.Popen([sys.executable, "-c", CHILD, v, *argv], env=env, stdout=log, stderr=subprocess.STDOUT),
                    out, time.perf_counter(), log)
    results = {}
    for v, (proc, out, t0, log) in procs.items():
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        log.close()
        if status != 0:
            raise SystemExit(f"variant {v} failed (status {status}); its log: {workdir / (out.name + '.log')}")
        epochs_log = benchlib.read_jsonl(out / "training_log.jsonl")
        results[v] = {
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "wall_seconds": round(wall, 1),
            "peak_rss_mb_per_epoch": [e["peak_rss_mb"] for e in epochs_log],
            "seconds_per_epoch": [e["seconds"] for e in epochs_log],
            "loss_per_epoch": [e["loss"] for e in epochs_log],
        }
    return results


def markdown(res: dict, args: argparse.Namespace, command: str) -> str:
    variants = list(res["variants"])
    n_epochs = len(res["variants"][variants[0]]["peak_rss_mb_per_epoch"])
    lines = [
        "# Pre-training's resident memory: when the loop hands freed heap back to the OS", "",
        f"`unisrec pretrain $UNISREC_DATA/{args.dataset} --batch-size {args.batch_size} --epochs {args.epochs}` (float32, 1 thread, "
        f"seed 2020), one process per policy, all at once on the same machine (load at the end: {res['load']}). "
        "Peak RSS = the process's high-water mark at the end of each epoch (what the training log records).", "",
        "| policy | " + " | ".join(f"peak RSS after epoch {i + 1} (MB)" for i in range(n_epochs))
        + " | CPU s | wall s | final loss |",
        "|---|" + "---:|" * (n_epochs + 3),
    ]
    for v in variants:
        r = res["variants"][v]
        lines.append(f"| `{v}` | " + " | ".join(f"{x:,.0f}" for x in r["peak_rss_mb_per_epoch"])
                     + f" | {r['cpu_seconds']:,.0f} | {r['wall_seconds']:,.0f} | {r['loss_per_epoch'][-1]:.6f} |")
    lines += ["", "`steps:N` = release after every N-th step of an epoch; `seconds:S` = also after any step that took "
              ">= S seconds. Equal final losses: the policy changes memory, not what is computed.", "",
              f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="scientific", help="a prepared dataset folder's name under $UNISREC_DATA")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--variants", nargs="+", default=["steps:10", "seconds:2"])
    ap.add_argument("--out", default=str(benchlib.RESULTS / "pretrain" / "memory_trim"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pretrain_trim_") as tmp:
        variants = run_variants(str(benchlib.dataset_dir(args.dataset)), args.variants, args.epochs, args.batch_size, Path(tmp))
    res = {"dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size,
           "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()), "variants": variants}
    command = benchlib.reproduce_command(__file__)
    benchlib.write_result(args.out, res, markdown(res, args, command))
    print(markdown(res, args, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
