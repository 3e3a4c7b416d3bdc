"""Where a cross-domain model's training step goes: the target's next-item loss vs the cross-domain
losses, and what the users drawn per domain per step (``domain_batch_size``) cost.

    python benchmarks/cross_domain_step_split.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
        --models RecGURU,CCDR --domain-batch-sizes 64,16 --length-buckets '8,24;16;' \
        --out results/table3/cross_domain_split_online_retail

Each cell is built as its spec builds it (benchmarks/baseline_epoch_speed.py: same sources, batching,
batch size, precision), 1 thread, and steps through real batches of epoch 1 (forward under the cell's
precision, backward, Adam). Variants, taking turns round by round in one process so machine load hits
them alike: the whole step, the target's next-item loss alone, and the cross-domain losses alone, the
last two at each domain batch size. Reported: median process CPU seconds per step. Nothing here
changes how a model trains; the split says which part a faster epoch would have to come from.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, "benchmarks")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec"); ap.add_argument("dataset")
    ap.add_argument("--models", default="RecGURU,CCDR")
    ap.add_argument("--domain-batch-sizes", default="64,16", help="comma-separated; the first is the spec's")
    ap.add_argument("--length-buckets", metavar="B;B;...", default="",
                    help="also time the cross-domain losses (first domain batch size) with other history-length "
                         "bucket bounds, e.g. '8,24;16;' (';' between variants, an empty one = one padded call)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch

    import baseline_epoch_speed as b
    import benchlib
    import unisrec.models.encoder as encoder
    from unisrec.training.loop import step_precision

    torch.set_num_threads(1)
    sizes = [int(x) for x in args.domain_batch_sizes.split(",")]
    models = args.models.split(",")
    result = {"spec": args.spec, "dataset": args.dataset, "steps": args.steps, "rounds": args.rounds, "models": {}}
    for name in models:
        task, module, _, precision = b.build_tasks(args.spec, args.dataset, 2020, 1, [name])[name]
        config = task.model.config
        opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
        batches = task.batches(1)

        def whole(batch):
            return task.step_loss(batch)[0]

        def next_item(batch):
            return task.batching.loss(task.model, batch[1], task.device)[0]

        def cross(batch):
            parts = task.cross_domain_losses(np.random.default_rng([2020, 43, 1, batch[0]]))
            return sum(w * loss for w, loss in parts.values() if w)

        now = tuple(encoder.LENGTH_BUCKETS)
        variants = [("next-item loss only", None, now, next_item)]
        for size in sizes:
            variants += [(f"whole step, {size} per domain", size, now, whole),
                         (f"cross-domain losses only, {size} per domain", size, now, cross)]
        for text in (args.length_buckets.split(";") if args.length_buckets else []):
            bounds = tuple(int(x) for x in text.split(",") if x.strip())
            variants.append((f"cross-domain losses only, {sizes[0]} per domain, length buckets {bounds or 'none (one padded call)'}",
                             sizes[0], bounds, cross))
        times: dict[str, list[float]] = {label: [] for label, _, _, _ in variants}
        cursor = 0
        for _ in range(args.rounds):
            for label, size, bounds, fn in variants:
                encoder.LENGTH_BUCKETS = bounds  # read by length_buckets at each call
                if size is not None:
                    config.domain_batch_size = size
                for _ in range(args.steps):
                    batch = batches[cursor % len(batches)]
                    cursor += 1
                    c = time.process_time()
                    with step_precision(torch.device("cpu"), precision):
                        loss = fn(batch)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    times[label].append(time.process_time() - c)
        config.domain_batch_size, encoder.LENGTH_BUCKETS = sizes[0], now
        medians = {label: float(np.median(t)) for label, t in times.items()}
        result["models"][name] = {"steps_per_epoch": len(batches), "precision": precision, "median_cpu_s": medians}
        print(name, {k: round(v, 3) for k, v in medians.items()}, flush=True)

    md = [f"# Cross-domain training step, split: {args.dataset}", "",
          f"`python benchmarks/cross_domain_step_split.py {args.spec} {args.dataset} --models {args.models} "
          f"--domain-batch-sizes {args.domain_batch_sizes}" + (f" --length-buckets '{args.length_buckets}'" if args.length_buckets else "")
          + "`: each cell built as its benchmark spec builds it, 1 thread, "
          f"variants taking turns ({args.rounds} rounds of {args.steps} steps each, real epoch-1 batches, forward + backward "
          "+ Adam); median process CPU seconds per step. The first domain batch size is the spec's.", "",
          "| model | variant | CPU s / step | share of the whole step | epoch CPU s at this rate |", "|---|---|---:|---:|---:|"]
    for name, r in result["models"].items():
        whole_first = r["median_cpu_s"][f"whole step, {sizes[0]} per domain"]
        for label, s in r["median_cpu_s"].items():
            md.append(f"| {name} | {label} | {s:.3f} | {s / whole_first:.0%} | {s * r['steps_per_epoch']:.0f} |")
    md += ["", f"Steps per epoch: " + ", ".join(f"{n} {r['steps_per_epoch']}" for n, r in result["models"].items()) + "."]
    benchlib.write_result(args.out, result, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
