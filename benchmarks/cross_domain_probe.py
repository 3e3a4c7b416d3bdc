"""What a cross-domain model's losses do to its target's next-item learning: its first training steps with parts of
its loss switched off (why RecGURU barely learned the Online Retail target).

    python benchmarks/cross_domain_probe.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
        --steps 300 --variants 'full;adversarial_weight=0;cdsrec=0;cdsrec=0,reconstruction_weight=0' \
        --out results/table3/recguru_probe_online_retail
    python benchmarks/cross_domain_probe.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
        --model CCDR --steps 300 --variants 'full;intra_weight=0,inter_weight=0,source_weight=0' \
        --out results/table3/ccdr_probe_online_retail

Each variant is the spec's cell of ``--model`` (RecGURU, CCDR) (benchmarks/baseline_epoch_speed.py builds it as the benchmark
does: same sources, batching, batch size, precision, seed), with the named fields of its model config
overridden (``domains=1``: the cross-domain losses over the target's own users only, as the release's
last phase trains), trained for the first ``--steps`` steps of epoch 1 exactly as the loop trains it (Adam, the
cell's precision, the same batches and domain draws), then validated (full ranking, valid NDCG@10).
SASRec's cell runs the same steps beside them: the bar. Reported per variant: the mean next-item loss
over each block of ``--block`` steps, each cross-domain loss's mean over the last block, and validation.
One thread; results are written after every variant, and a rerun skips the variants already in OUT.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, "benchmarks")


def parse_variant(text: str) -> dict[str, float]:
    """'full' -> {}; 'a=0,b=0.1' -> {'a': 0.0, 'b': 0.1}."""
    if text.strip() in ("", "full"):
        return {}
    out = {}
    for part in text.split(","):
        key, value = part.split("=")
        out[key.strip()] = float(value)
    return out


def run_variant(spec: str, dataset: str, label: str, overrides: dict[str, float], steps: int, block: int, seed: int) -> dict:
    import torch

    import baseline_epoch_speed as b
    from unisrec.training.loop import release_free_heap, step_precision

    task, module, _, precision = b.build_tasks(spec, dataset, seed, 1, [label])[label]
    for key, value in overrides.items():
        if key == "domains":  # the first N domains only (1 = the target's own autoencoder, no source)
            task.domains = task.domains[: int(value)]
            continue
        if not hasattr(task.model.config, key):
            raise SystemExit(f"{label} has no option {key}")
        setattr(task.model.config, key, type(getattr(task.model.config, key))(value))
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=task.config.lr)
    batches = task.batches(1)[:steps]
    rows: list[dict[str, float]] = []
    t0 = time.process_time()
    for i, batch in enumerate(batches):
        with step_precision(task.device, precision):
            loss, _, extras = task.step_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rows.append({"loss": float(loss.detach()), **extras})
        if (i + 1) % 10 == 0:
            release_free_heap()
    cpu = time.process_time() - t0
    key = "next_item" if "next_item" in rows[0] else "loss"
    blocks = [float(np.mean([r[key] for r in rows[s : s + block]])) for s in range(0, len(rows), block)]
    last = rows[-block:]
    valid = task.validate()
    return {"label": label, "overrides": overrides, "steps": len(rows), "cpu_seconds_per_step": cpu / len(rows),
            "next_item_by_block": blocks,
            "last_block": {k: float(np.mean([r[k] for r in last])) for k in last[0]},
            "valid": valid}


def write_page(result: dict, out: Path) -> None:
    lines = [f"# {result['title']}", "",
             f"First {result['steps']} steps of epoch 1 (seed {result['seed']}, 1 thread), then full-ranking validation. "
             f"Next-item loss: mean per block of {result['block']} steps. Regenerate: `{result['command']}`.", "",
             "| variant | next-item loss by block | last block: other losses | valid R@10 | valid N@10 | CPU s/step |",
             "|---|---|---|---:|---:|---:|"]
    for name, r in result["variants"].items():
        others = ", ".join(f"{k} {v:.3f}" for k, v in r["last_block"].items() if k not in ("loss", "next_item"))
        lines.append(f"| {name} | {' / '.join(f'{v:.3f}' for v in r['next_item_by_block'])} | {others or '-'} | "
                     f"{r['valid']['recall@10']:.4f} | {r['valid']['ndcg@10']:.4f} | {r['cpu_seconds_per_step']:.2f} |")
    (out.with_suffix(".md")).write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec"); ap.add_argument("dataset")
    ap.add_argument("--model", default="RecGURU", help="the spec's label of the cross-domain cell")
    ap.add_argument("--variants", default="full", help="';'-separated overrides of the model's config, 'full' = none")
    ap.add_argument("--bar", default="SASRec", help="the spec's label of the single-domain cell run beside them ('' = none)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".json")
    result = json.loads(path.read_text()) if path.exists() else {"variants": {}}
    result.update(title=f"{args.model} on {args.dataset}: what its cross-domain losses do to the next-item objective",
                  steps=args.steps, block=args.block, seed=args.seed,
                  command="python benchmarks/cross_domain_probe.py " + " ".join(f"'{a}'" if ";" in a else a for a in (argv or sys.argv[1:])))
    todo = [(args.bar, args.bar, {})] if args.bar else []
    todo += [(f"{args.model} {v}", args.model, parse_variant(v)) for v in args.variants.split(";")]
    for name, label, overrides in todo:
        if name in result["variants"] and result["variants"][name]["steps"] == args.steps:
            continue
        print(f"{name}: {args.steps} steps ...", flush=True)
        result["variants"][name] = run_variant(args.spec, args.dataset, label, overrides, args.steps, args.block, args.seed)
        print(json.dumps(result["variants"][name]), flush=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        write_page(result, out)
    path.write_text(json.dumps(result, indent=1) + "\n")
    write_page(result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
