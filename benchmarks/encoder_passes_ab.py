"""A/B of a training step's encoder passes: length buckets vs one padded pass (models.encoder.encoder_passes).

    python benchmarks/encoder_passes_ab.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
        --device cuda --steps 20 --out results/online_retail/encoder_passes_cuda

Each model is built as its benchmark cell builds it (benchmarks/baseline_epoch_speed.py) and steps through
the same real batches of epoch 0 -- forward, backward, Adam, under the cell's precision -- the two ways taking
turns step by step, so a change in load hits both alike. Median wall seconds per step (the device
synchronised), x the steps in an epoch. Validation is not included.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec")
    p.add_argument("dataset")
    p.add_argument("--models", default="SASRec,UniSRec_t,UniSRec_t+ID")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20, help="timed steps per way and model (after one warm-up each)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    args = p.parse_args(argv)

    import torch

    from baseline_epoch_speed import build_tasks
    from benchlib import write_result

    from unisrec.training.loop import step_precision

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tasks = build_tasks(args.spec, args.dataset, 2020, args.threads, args.models.split(","), device=args.device)
    rows = {}
    for label, (task, module, batching, precision) in tasks.items():
        batches = task.batches(0)
        opt = torch.optim.Adam([q for q in module.parameters() if q.requires_grad], lr=1e-3)
        wall: dict[str, list[float]] = {"buckets": [], "one pass": []}
        for r in range(args.steps + 1):
            for way, one_pass in (("buckets", False), ("one pass", True)):
                task.batching.one_pass = one_pass
                sync()
                t = time.perf_counter()
                with step_precision(device, precision):
                    loss, _, _ = task.step_loss(batches[r % len(batches)])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sync()
                if r:
                    wall[way].append(time.perf_counter() - t)
        n = len(batches)
        b, o = float(np.median(wall["buckets"])), float(np.median(wall["one pass"]))
        rows[label] = {"batching": batching, "precision": precision, "steps_per_epoch": n, "step_s_buckets": b,
                       "step_s_one_pass": o, "epoch_s_buckets": b * n, "epoch_s_one_pass": o * n, "speedup": b / o}
        print(f"{label}: {n} steps/epoch, step {b * 1e3:.1f} ms buckets vs {o * 1e3:.1f} ms one pass ({b / o:.2f}x)", flush=True)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    result = {"spec": args.spec, "dataset": args.dataset, "device": name, "threads": args.threads,
              "timed_steps": args.steps, "torch": torch.__version__, "rows": rows}
    md = [f"# Encoder passes per training step, {args.dataset} on {name}: length buckets vs one padded pass", "",
          f"`python benchmarks/encoder_passes_ab.py {args.spec} {args.dataset} --device {args.device} --steps {args.steps}`: "
          f"the two ways alternate on the same batches of epoch 0; median of {args.steps} steps each (forward, backward, "
          "Adam), x steps per epoch; validation excluded.", "",
          "| model | precision | steps / epoch | ms / step, buckets | ms / step, one pass | epoch s, buckets | epoch s, one pass | speed-up |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows.items():
        md.append(f"| {label} | {r['precision']} | {r['steps_per_epoch']} | {r['step_s_buckets'] * 1e3:.1f} | "
                  f"{r['step_s_one_pass'] * 1e3:.1f} | {r['epoch_s_buckets']:.1f} | {r['epoch_s_one_pass']:.1f} | {r['speedup']:.2f}x |")
    print("\n".join(md))
    if args.out:
        write_result(args.out, result, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
