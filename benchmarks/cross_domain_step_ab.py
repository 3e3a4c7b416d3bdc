"""A/B of the cross-domain models' training step: every lookup into a domain's item table on its own
(before) vs one gather of the step's rows per table (now: ``training.joint.gather_rows`` / ``encode_last``).

    python benchmarks/cross_domain_step_ab.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled
    python benchmarks/cross_domain_step_ab.py configs/benchmarks/table3_scientific.yaml scientific

Each cell (RecGURU, CCDR) is built as its spec builds it (benchmarks/baseline_epoch_speed.py: same
sources, batching, batch size, precision), 1 thread. "before" restores the per-lookup code paths in
place (encode_last gathering per length bucket, RecGURU's reconstruction and CCDR's two intra-domain
views looking up the full table);
the two take turns on the same batches of epoch 1 in one process, so machine load hits both alike.
Reported: median process CPU seconds per step, the ratio, the steps per epoch, and the number of
table-sized zero-fills of the largest source table per step (from the profiler). The two paths'
first-step losses are compared too (they compute the same function).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

sys.path.insert(0, "benchmarks")


def old_encode_last(encoder, table, seqs, lens, device):
    """encode_last before the change: one lookup into ``table`` per length bucket."""
    import torch

    from unisrec.models.encoder import length_buckets

    parts, order = [], []
    for g in length_buckets(lens):
        width = int(lens[g].max())
        seq = torch.from_numpy(seqs[g, :width]).to(device)
        parts.append(encoder(table[seq], torch.from_numpy(lens[g]).to(device)))
        order.append(g)
    inverse = torch.from_numpy(np.argsort(np.concatenate(order), kind="stable")).to(device)
    return torch.cat(parts)[inverse]


def no_gather(table, *ids):
    """gather_rows before the change: the full table, ids unchanged."""
    return table, [np.asarray(a, dtype=np.int64) for a in ids]


def switch(new: bool, saved: dict) -> None:
    from unisrec.models import ccdr, recguru
    from unisrec.training import joint

    for module in (joint, ccdr, recguru):
        if hasattr(module, "encode_last"):
            module.encode_last = saved["encode_last"] if new else old_encode_last
    recguru.gather_rows = ccdr.gather_rows = saved["gather_rows"] if new else no_gather


def fills(step, shape) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    return sum(e.count for e in prof.key_averages(group_by_input_shape=True)
               if e.key == "aten::fill_" and e.input_shapes and list(e.input_shapes[0]) == list(shape))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec"); ap.add_argument("dataset")
    ap.add_argument("--models", default="RecGURU,CCDR")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per path per model")
    ap.add_argument("--out", help="prefix of the .json/.md to write (default: print only)")
    args = ap.parse_args()

    import torch

    import baseline_epoch_speed as b
    import benchlib
    from unisrec.training import joint
    from unisrec.training.loop import step_precision

    torch.set_num_threads(1)
    saved = {"encode_last": joint.encode_last, "gather_rows": joint.gather_rows}
    labels = args.models.split(",")
    tasks = b.build_tasks(args.spec, args.dataset, 2020, 1, labels)
    rows = {}
    for label in labels:
        task, module, batching, precision = tasks[label]
        opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
        batches = task.batches(1)
        biggest = max(task.tables()[1:], key=lambda t: t.shape[0]).shape

        def step(i, opt=opt, task=task, batches=batches, precision=precision):
            with step_precision(torch.device("cpu"), precision):
                loss, _, _ = task.step_loss(batches[i % len(batches)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        # the same function: first-step losses of both paths from the same weights and batch, no step taken
        first = {}
        for new in (False, True):
            switch(new, saved)
            torch.manual_seed(0)
            with torch.no_grad(), step_precision(torch.device("cpu"), precision):
                first["new" if new else "old"] = float(task.step_loss(batches[0])[0])
        cpu = {"old": [], "new": []}
        for i in range(args.steps + 1):
            for new in (False, True):
                switch(new, saved)
                c = time.process_time()
                step(i)
                if i:  # the first round warms up
                    cpu["new" if new else "old"].append(time.process_time() - c)
        count = {}
        for new in (False, True):
            switch(new, saved)
            count["new" if new else "old"] = fills(lambda: step(args.steps + 1), biggest)
        switch(True, saved)
        old, new = float(np.median(cpu["old"])), float(np.median(cpu["new"]))
        rows[label] = {"steps_per_epoch": len(batches), "batching": batching, "precision": precision,
                       "step_cpu_s": {"before": old, "now": new}, "ratio": new / old,
                       "epoch_cpu_s": {"before": old * len(batches), "now": new * len(batches)},
                       "largest_source_table": list(biggest), "table_fills_per_step": {"before": count["old"], "now": count["new"]},
                       "first_step_loss": first}
        print(label, json.dumps(rows[label]), flush=True)
    if args.out:
        md = [f"# Cross-domain step: one gather per table per step ({args.dataset})", "",
              "Same process, 1 thread, the two code paths taking turns on the same batches (median CPU seconds of "
              f"{args.steps} steps each; other jobs shared the machine, so compare within a row). Table fills = "
              "zero-fills of the largest source table's size per step (profiler).", "",
              "| model | batching, precision | steps / epoch | s / step before | s / step now | now / before | epoch CPU s before -> now | table fills / step before -> now | first-step loss before / now |",
              "|---|---|---:|---:|---:|---:|---|---|---|"]
        for label, r in rows.items():
            md.append(f"| {label} | {r['batching']}, {r['precision']} | {r['steps_per_epoch']} | {r['step_cpu_s']['before']:.3f} | "
                      f"{r['step_cpu_s']['now']:.3f} | **{r['ratio']:.2f}x** | {r['epoch_cpu_s']['before']:.0f} -> {r['epoch_cpu_s']['now']:.0f} | "
                      f"{r['table_fills_per_step']['before']} -> {r['table_fills_per_step']['now']} | "
                      f"{r['first_step_loss']['old']:.6f} / {r['first_step_loss']['new']:.6f} |")
        md += ["", "Command: `" + benchlib.reproduce_command(__file__, sys.argv[1:]) + "`", ""]
        benchlib.write_result(args.out, {"dataset": args.dataset, "spec": args.spec, "rows": rows}, md)
        print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
