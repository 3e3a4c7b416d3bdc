"""Seconds per training epoch of every model of a benchmark spec, in one process, same threads.

    python benchmarks/baseline_epoch_speed.py configs/benchmarks/table3_scientific.yaml \
        --dataset scientific --threads 1 --steps 6 --out results/table3/epoch_speed_scientific

Table 3's speed column: each model is built exactly as its benchmark cell builds it (the spec's
options; cross-domain models with their source domains) and its training task steps through real
batches of epoch 0 -- forward, backward, Adam. The models take turns, one step each per round
(round-robin), so a change in machine load hits all of them alike; after one warm-up step per
model, the median step time x the steps in an epoch = its epoch time. Process CPU seconds (what an
idle core takes with 1 thread) and wall seconds are both reported, with each model's ratio to
SASRec's epoch. S3-Rec's self-supervised pre-training epoch is timed as a row of its own.
Validation is not included (the same full-ranking pass for every ID model).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import numpy as np


def build_tasks(spec_path: str, dataset: str, seed: int, threads: int, only: list[str] | None, device: str = "cpu"):
    import torch

    from unisrec.benchmark.runner import cell_configs
    from unisrec.benchmark.spec import load_spec
    from unisrec.models import registry
    from unisrec.training.config import TrainConfig
    from unisrec.training.loop import resolve_precision
    from unisrec.training.supervised import SupervisedTask, build_model

    spec = load_spec(spec_path)
    entry = spec.datasets[dataset]
    device = torch.device(device)
    tasks = {}
    for label, model in spec.models.items():
        if only and label not in only:
            continue
        if model.pretrained:
            continue  # a pre-trained start trains the same step as its scratch row
        reg = registry.get("unisrec" if model.is_finetune else model.model)
        train, config = cell_configs(model, seed, threads)
        if train.batching == TrainConfig.batching and train.batching not in reg.batchings and reg.default_batching:
            train = replace(train, batching=reg.default_batching)
        net, ds, sources, _, _ = build_model(reg, entry.path, train, config)
        net.to(device)
        task = net.joint_task(ds, sources, train, device) if sources else SupervisedTask(net, ds, train, device)
        module = getattr(task, "module", net)
        precision = resolve_precision(train.precision, device)  # the page names what ran ("auto": this machine's pick)
        tasks[label] = (task, module, train.batching, precision)
        if hasattr(net, "pretraining_task") and (pre := net.pretraining_task(ds, train, device)) is not None:
            tasks[f"{label} (pre-training)"] = (pre, getattr(pre, "module", net), "pre-training", precision)
    return tasks


def train_step(task, optimizer, batch, device, precision: str) -> None:
    """One training step as the training loop runs it: the loss under the cell's precision, backward, Adam."""
    from unisrec.training.loop import step_precision

    with step_precision(device, precision):
        loss, _, _ = task.step_loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="a benchmark spec (configs/benchmarks/*.yaml)")
    p.add_argument("--dataset", required=True, help="one dataset name of the spec")
    p.add_argument("--models", help="only these labels (comma-separated); SASRec is always timed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=6, help="timed steps per model (after one warm-up)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--out", help="write OUT.json and OUT.md")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    only = None if not args.models else sorted({*args.models.split(","), "SASRec"})
    tasks = build_tasks(args.spec, args.dataset, args.seed, args.threads, only)
    if "SASRec" not in tasks:
        raise SystemExit("the spec needs a SASRec row: every epoch is reported as a ratio to SASRec's")
    state = {}
    for label, (task, module, batching, precision) in tasks.items():
        batches = task.batches(0)
        opt = torch.optim.Adam([q for q in module.parameters() if q.requires_grad], lr=1e-3)
        state[label] = {"batches": batches, "opt": opt, "cpu": [], "wall": [], "batching": batching, "precision": precision}
    rounds = args.steps + 1
    for r in range(rounds):
        for label, (task, module, _, precision) in tasks.items():
            s = state[label]
            batch = s["batches"][r % len(s["batches"])]
            c, w = time.process_time(), time.perf_counter()
            train_step(task, s["opt"], batch, torch.device("cpu"), precision)
            if r:  # the first round warms up
                s["cpu"].append(time.process_time() - c)
                s["wall"].append(time.perf_counter() - w)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    rows = {}
    for label, s in state.items():
        n = len(s["batches"])
        rows[label] = {"batching": s["batching"], "precision": s["precision"], "steps_per_epoch": n,
                       "step_cpu_s": float(np.median(s["cpu"])), "step_wall_s": float(np.median(s["wall"])),
                       "epoch_cpu_s": float(np.median(s["cpu"])) * n, "epoch_wall_s": float(np.median(s["wall"])) * n}
    ref = rows["SASRec"]
    for row in rows.values():
        row["ratio_cpu"] = row["epoch_cpu_s"] / ref["epoch_cpu_s"]
        row["ratio_wall"] = row["epoch_wall_s"] / ref["epoch_wall_s"]
    result = {"spec": args.spec, "dataset": args.dataset, "threads": args.threads, "timed_steps": args.steps,
              "seed": args.seed, "torch": torch.__version__, "load_average_at_end": os.getloadavg(), "rows": rows}
    md = [f"# Training epoch per model, {args.dataset}: one process, {args.threads} torch thread(s), round-robin steps", "",
          f"`python benchmarks/baseline_epoch_speed.py {args.spec} --dataset {args.dataset} --threads {args.threads} "
          f"--steps {args.steps}`. Each model is built as its benchmark cell is and steps through real batches of "
          f"epoch 0 (forward, backward, Adam), the models taking turns; epoch = median of {args.steps} steps x steps "
          "per epoch (validation excluded). CPU seconds = what one idle core takes; ratios are to SASRec in this same "
          f"run. Load average at the end: {', '.join(f'{x:.1f}' for x in result['load_average_at_end'])} (2 cores).", "",
          "| model | batching | precision | steps / epoch | s / step (CPU) | epoch CPU s | x SASRec (CPU) | epoch wall s | x SASRec (wall) |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, row in rows.items():
        md.append(f"| {label} | {row['batching']} | {row['precision']} | {row['steps_per_epoch']} | {row['step_cpu_s']:.2f} | "
                  f"{row['epoch_cpu_s']:.1f} | {row['ratio_cpu']:.2f} | {row['epoch_wall_s']:.1f} | {row['ratio_wall']:.2f} |")
    print("\n".join(md))
    if args.out:
        from benchlib import write_result

        write_result(args.out, result, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
