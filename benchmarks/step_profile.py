"""Where a training step's CPU time goes: torch.profiler over a few real steps of each benchmark cell.

    python benchmarks/step_profile.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
        --models SASRec,BERT4Rec,RecGURU --steps 3 --out results/speed/step_profile_online_retail

Each model is built as its benchmark cell builds it (benchmarks/baseline_epoch_speed.py) and takes one
untimed step, then ``--steps`` profiled steps of epoch 0 (forward, backward, Adam; eager, the cell's
precision). Reported: each operator's share of the steps' self CPU time (the top ``--top``), and the share
of the matrix products (mm, addmm, bmm, baddbmm) -- the part no elementwise fusion can shrink.
"""

from __future__ import annotations

import argparse

MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec")
    p.add_argument("dataset")
    p.add_argument("--models", default="SASRec,BERT4Rec,RecGURU")
    p.add_argument("--steps", type=int, default=3, help="profiled steps per model (after one untimed step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=8, help="operators listed per model")
    p.add_argument("--out")
    args = p.parse_args(argv)

    import torch

    from baseline_epoch_speed import build_tasks, train_step
    from benchlib import write_result

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    rows = {}
    for label, (task, module, batching, precision) in build_tasks(args.spec, args.dataset, 2020, args.threads,
                                                                  args.models.split(",")).items():
        opt = torch.optim.Adam([q for q in module.parameters() if q.requires_grad], lr=1e-3)
        batches = task.batches(0)

        train_step(task, opt, batches[0], device, precision)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for batch in batches[1 : 1 + args.steps]:
                train_step(task, opt, batch, device, precision)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        shares = sorted(((e.key, e.self_cpu_time_total / total) for e in events), key=lambda kv: -kv[1])
        matrix = sum(share for key, share in shares if key in MATRIX_PRODUCTS)
        rows[label] = {"precision": precision, "batching": batching, "steps": args.steps,
                       "self_cpu_s_per_step": total / 1e6 / args.steps, "matrix_product_share": matrix,
                       "top": [{"op": key, "share": share} for key, share in shares[: args.top]]}
        print(f"{label}: matrix products {matrix:.0%} of self CPU time", flush=True)
    md = [f"# Where a training step's CPU time goes, {args.dataset}", "",
          f"`python benchmarks/step_profile.py {args.spec} {args.dataset} --models {args.models} --steps {args.steps}`: "
          f"torch.profiler over {args.steps} real steps of epoch 0 per model (after one untimed step; forward, backward, "
          f"Adam; eager), {args.threads} thread(s); each operator's share of the steps' self CPU time.", "",
          "| model | precision | self CPU s / step | matrix products | top operators |", "|---|---|---:|---:|---|"]
    for label, r in rows.items():
        top = ", ".join(f"{t['op'].removeprefix('aten::')} {t['share']:.0%}" for t in r["top"])
        md.append(f"| {label} | {r['precision']} | {r['self_cpu_s_per_step']:.2f} | {r['matrix_product_share']:.0%} | {top} |")
    print("\n".join(md))
    if args.out:
        write_result(args.out, {"spec": args.spec, "dataset": args.dataset, "threads": args.threads,
                                "torch": torch.__version__, "rows": rows}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
