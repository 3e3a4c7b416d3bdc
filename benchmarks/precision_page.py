"""bfloat16 vs float32 training at convergence: is `--precision bfloat16` the same model, faster?

Reads a run tree of `configs/benchmarks/precision.yaml` (e.g. its archive results/precision/cells):
every model label ``X`` with a twin ``X (bfloat16)``. Per dataset and pair, on the seeds both have:

* seed means +- sample std of test R@10, N@10, R@50, N@50, the relative difference of the means and
  whether it is within +-M% (``--margin``, default 3: the bar the fast path met against the paper's
  batching, on 3-seed means), beside float32's own seed-to-seed spread (std as a share of its mean);
* the per-user view: the difference bfloat16 - float32 of each test user's value (averaged over the
  seeds), its two-sided paired t-test and 95% confidence interval as a share of float32's mean (it
  holds the seeds fixed, so it shows how far the two runs differ, not how far seeds do);
* epochs run, best epoch and the median training-epoch seconds the cells logged (wall time under
  whatever else ran: see ``--speed`` for a same-process ratio);
* with ``--speed FILE.json`` (written by ``benchmarks/baseline_epoch_speed.py`` on the same spec):
  the same-process, round-robin epoch-time ratio float32 / bfloat16 of each pair.

    python benchmarks/precision_page.py results/precision/cells \\
        --speed results/precision/epoch_speed_scientific.json --out results/precision/precision

``--what dropout`` pairs cells trained with torch's dropout with the same cells trained with models.dropout's CPU
masks -- ``X (dropout masks)`` in the same tree, or ``X`` in the ``--twin-cells`` tree:

    python benchmarks/precision_page.py results/every_position/cells_fast_path_scientific --what dropout \
        --twin-cells results/speed/cells_dropout_masks_scientific --out results/speed/dropout_masks_scientific

``--what attention`` pairs cells trained with torch's fused attention call with the same cells trained with
models.encoder.attention's written-out CPU training path (``--twin-cells``, same labels):

    python benchmarks/precision_page.py results/precision/cells --what attention \
        --twin-cells results/speed/cells_attention_scientific --out results/speed/attention_scientific

``--what read-positions`` pairs cells trained with the final Transformer layer at every position with the same
cells trained with it only where the loss reads it (``--twin-cells``, same labels):

    python benchmarks/precision_page.py results/table3/cells_scientific --what read-positions \
        --twin-cells results/speed/cells_read_positions_scientific --out results/speed/read_positions_scientific

``--what read-positions-today`` pairs the same with the reference arm trained by today's code with the full final
layer (benchmarks/train_every_position_final_layer.py, its cells laid out as DATASET/LABEL/seedN):

    python benchmarks/precision_page.py results/speed/bert4rec_every_position_final_layer --what read-positions-today \
        --twin-cells results/speed/cells_read_positions_scientific --out results/speed/read_positions_today_scientific

``--what pre-training`` reads configs/benchmarks/pretrain_precision.yaml's tree instead, where the twin was
fine-tuned (in float32) from a checkpoint *pre-trained* in bfloat16; ``--pretrain-curves F32_DIR BF16_DIR``
adds the two pre-training runs' epoch losses and times (their ``training_log.jsonl``):

    python benchmarks/precision_page.py results/precision/cells_pretrain --what pre-training \\
        --pretrain-curves results/pretrain/cells/games/full/seed2020 "results/pretrain/cells/games/full_(bfloat16)/seed2020" \\
        --out results/precision/pretrain_precision
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

import benchlib

METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
SHORT = {"recall@10": "R@10", "ndcg@10": "N@10", "recall@50": "R@50", "ndcg@50": "N@50"}
SUFFIX = " (bfloat16)"


def equivalence(fp32_ranks: list[str], bf16_ranks: list[str], metric: str, margin: float) -> dict:
    """Per-user paired comparison of the two precisions' seed-averaged values of ``metric``."""
    from scipy import stats

    from unisrec.benchmark.significance import seed_averaged

    a = seed_averaged([np.load(p) for p in fp32_ranks], metric)
    b = seed_averaged([np.load(p) for p in bf16_ranks], metric)
    d = b - a
    n, base = len(d), float(a.mean())
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    p = float(stats.ttest_rel(b, a).pvalue) if np.any(d != 0) else 1.0
    lo, hi = (float(d.mean()) - half) / base, (float(d.mean()) + half) / base
    return {"fp32": base, "bf16": float(b.mean()), "diff": float(d.mean()), "p_two_sided": p, "n_users": n,
            "ci95_rel": [lo, hi], "within_margin": bool(abs(float(d.mean())) <= margin / 100 * base)}


def pair_rows(cells: str, margin: float, suffix: str = SUFFIX, twin_cells: str | None = None) -> list[dict]:
    """One row per (dataset, reference label X) whose twin has finished seeds: ``X + suffix`` in ``cells``, or
    ``X`` in ``twin_cells`` (a second run tree) when one is given."""
    from unisrec.benchmark.report import collect

    twins = collect(twin_cells) if twin_cells else {}
    rows = []
    for ds, data in collect(cells).items():
        models = data["models"]
        for label, fp32 in models.items():
            twin = twins.get(ds, {}).get("models", {}).get(label) if twin_cells else models.get(label + suffix)
            if (not twin_cells and label.endswith(suffix)) or twin is None:
                continue
            done = {side: {r["seed"]: r for r in m["runs"] if r["metrics"] and r["test_ranks"]}
                    for side, m in (("fp32", fp32), ("bf16", twin))}
            seeds = sorted(set(done["fp32"]) & set(done["bf16"]))
            if not seeds:
                continue
            row = {"dataset": ds, "model": label, "seeds": seeds, "metrics": {}, "runs": {}}
            for side in ("fp32", "bf16"):
                ms = [done[side][s]["metrics"] for s in seeds]
                row["runs"][side] = {
                    "test": {m: [x["test"][m] for x in ms] for m in METRICS},
                    "epochs_run": [x["epochs_run"] for x in ms], "best_epoch": [x["best_epoch"] for x in ms],
                    "median_epoch_seconds": [x.get("median_epoch_seconds") for x in ms],
                }
            for m in METRICS:
                row["metrics"][m] = equivalence([done["fp32"][s]["test_ranks"] for s in seeds],
                                                [done["bf16"][s]["test_ranks"] for s in seeds], m, margin)
            rows.append(row)
    return rows


INTRO = {
    "training": ("# bfloat16 vs float32 training at convergence (fast path)",
                 "Each pair: the same model, options and seeds, trained to early stopping with float32 and with "
                 "`--precision bfloat16` (the forward pass under autocast; weights, optimizer, validation and test in "
                 "float32; docs/training.md \"Precision\")."),
    "pre-training": ("# Pre-training in bfloat16 vs float32: does the checkpoint fine-tune as well?",
                     "Each pair: the same fine-tuning (float32, the same options and seeds, to early stopping) from two "
                     "checkpoints pre-trained on the same data with the same seed and steps, one in float32 and one with "
                     "`--precision bfloat16` (the forward pass under autocast; docs/training.md \"Precision\"); the "
                     "columns say which checkpoint the fine-tuned model came from."),
    "dropout": ("# torch's dropout vs models.dropout's CPU masks at convergence (fast path)",
                "Each pair: the same model, options and seeds, trained to early stopping with torch's dropout (the cells "
                "trained before the change) and with models.dropout's masks (16-bit lanes of 64-bit random words: drop "
                "probability within 7.7e-6 of p, the same expectation, other draws; its module docstring)."),
    "attention": ("# scaled_dot_product_attention vs models.encoder.attention's CPU training path at convergence (fast path)",
                  "Each pair: the same model, options and seeds, trained to early stopping with torch's fused attention call "
                  "(the cells trained before the change, with torch's dropout) and with models.encoder.attention, which "
                  "writes attention out when training on a CPU with attention dropout (the same function: the fused call's "
                  "CPU fallback arithmetic in float32, models.dropout's masks on the attention weights; other draws)."),
    "read-positions": ("# The final layer at every position vs only where the loss reads it, at convergence (Scientific)",
                       "Each pair: the same model, options and seeds, trained to early stopping with the final Transformer "
                       "layer computed at every position and then read (the cells trained before the change) and computed only "
                       "at the positions the loss reads (models.encoder.layers_at_positions: S3-Rec's segment-prediction passes "
                       "at the last item, BERT4Rec's Cloze loss at the masked positions; the same function, other dropout draws)."),
    "read-positions-today": ("# The final layer at every position vs only where the loss reads it, both with today's code (Scientific)",
                             "Each pair: the same model, options and seeds, trained to early stopping with everything else the "
                             "library has now (models.dropout's masks, the written-out attention), once with the final Transformer "
                             "layer computed at every position and then read (benchmarks/train_every_position_final_layer.py, "
                             "`unisrec train` with models.encoder.layers_at_positions switched off) and once only at the positions "
                             "the loss reads (the read-positions cells: the same command through `unisrec benchmark`). This "
                             "isolates the change, where the archived cells also predate the dropout and attention changes."),
}
# --what: (the twin's label suffix, the reference's name, the twin's name)
SIDES = {"training": (SUFFIX, "float32", "bfloat16"), "pre-training": (SUFFIX, "float32", "bfloat16"),
         "dropout": (" (dropout masks)", "torch dropout", "our masks"),
         "attention": (" (written-out attention)", "fused call", "written out"),
         "read-positions": (" (read positions)", "every position", "read positions")}
SIDES["read-positions-today"] = SIDES["read-positions"]


def curve_lines(dirs: list[str]) -> list[str]:
    """The two pre-training runs' epoch losses and seconds side by side."""
    logs = [[json.loads(line) for line in (Path(d) / "training_log.jsonl").read_text().splitlines()] for d in dirs]
    md = ["## The two pre-training runs", "",
          "| epoch | float32 loss | bfloat16 loss | difference | float32 s | bfloat16 s |", "|---:|---:|---:|---:|---:|---:|"]
    for a, b in zip(*logs):
        md.append(f"| {a['epoch']} | {a['loss']:.4f} | {b['loss']:.4f} | {100 * (b['loss'] - a['loss']) / a['loss']:+.2f}% | "
                  f"{a['seconds']:.0f} | {b['seconds']:.0f} |")
    md += ["", "Epoch seconds are logged wall times of runs that shared the machine with other jobs (not a speed "
           "comparison; results/precision/pretrain_step.md has the same-process one).", ""]
    return md


def markdown(rows: list[dict], margin: float, command: str, what: str = "training", curves: list[str] | None = None) -> list[str]:
    title, intro = INTRO[what]
    _, ref, twin = SIDES[what]
    md = [title, "",
          intro + " Test metrics: seed mean +- sample std; difference = of the seed "
          f"means, **yes** when within +-{margin:g}% of {ref}'s; {ref}'s seed spread = its sample std as a share "
          f"of its mean (how far seeds alone move it). Per user: the difference {twin} - {ref} of each test user's "
          f"seed-averaged value, its two-sided paired t-test p and 95% confidence interval as a share of {ref}'s "
          "mean (seeds held fixed).", ""]
    if curves:
        md += curve_lines(curves)
    for row in rows:
        md += [f"## {row['dataset']}: {row['model']} (seeds {', '.join(map(str, row['seeds']))})", "",
               f"| metric | {ref} | {twin} | difference | within +-{margin:g}% | {ref}'s seed spread | "
               "per-user p (two-sided) | per-user 95% CI |", "|---|---|---|---|---|---|---|---|"]
        for m in METRICS:
            e = row["metrics"][m]
            f32_mean, f32_std = benchlib.mean_std(row["runs"]["fp32"]["test"][m])
            b16 = benchlib.fmt_mean_std(*benchlib.mean_std(row["runs"]["bf16"]["test"][m]))
            spread = "-" if f32_std is None else f"{100 * f32_std / f32_mean:.1f}%"
            lo, hi = e["ci95_rel"]
            md.append(f"| {SHORT[m]} | {benchlib.fmt_mean_std(f32_mean, f32_std)} | {b16} | {100 * e['diff'] / e['fp32']:+.1f}% | "
                      f"{'**yes**' if e['within_margin'] else 'no'} | {spread} | {e['p_two_sided']:.3f} | "
                      f"[{100 * lo:+.1f}%, {100 * hi:+.1f}%] |")
        md.append("")
        for side, name in (("fp32", ref), ("bf16", twin)):
            r = row["runs"][side]
            secs = [s for s in r["median_epoch_seconds"] if s is not None]
            md.append(f"- {name}: epochs run {r['epochs_run']}, best epoch {r['best_epoch']}, median epoch "
                      f"{', '.join(f'{s:.1f}' for s in secs)} s (logged wall time, machine shared)")
        if "speed" in row:
            s = row["speed"]
            md.append(f"- same-process epoch time ({s['dataset']}, round-robin steps, CPU seconds): float32 "
                      f"{s['epoch_cpu_s'][0]:.1f} s, bfloat16 {s['epoch_cpu_s'][1]:.1f} s: **{s['ratio_cpu']:.2f}x**")
        md.append("")
    md += ["Command: `" + command + "`", ""]
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cells", help="a run tree of configs/benchmarks/precision.yaml (its archive)")
    p.add_argument("--speed", action="append", default=[], help="baseline_epoch_speed.py JSON of the same spec (repeatable: one per dataset)")
    p.add_argument("--twin-cells", help="a second run tree holding the twins under the same labels (instead of X + suffix)")
    p.add_argument("--margin", type=float, default=3.0, help="equivalence margin in %% of float32's mean")
    p.add_argument("--what", choices=sorted(INTRO), default="training",
                   help="the pairs: training / pre-training in bfloat16 (twin X (bfloat16)), dropout masks (twin X (dropout "
                        "masks)) or attention (twin X (written-out attention)); with --twin-cells the twin is X in that tree")
    p.add_argument("--pretrain-curves", nargs=2, metavar=("F32_DIR", "BF16_DIR"), help="pre-training run folders to compare")
    p.add_argument("--out", default=str(benchlib.RESULTS / "precision" / "precision"))
    args = p.parse_args(argv)
    speeds = {}
    for path in args.speed:
        s = json.loads(Path(path).read_text())
        speeds[s["dataset"]] = s
    rows = pair_rows(args.cells, args.margin, SIDES[args.what][0], args.twin_cells)
    for row in rows:
        row.update(speed_of(row["model"], speeds.get(row["dataset"], {})))
    if not rows:
        raise SystemExit(f"{args.cells}: no model has finished cells and finished twins on the same seeds")
    command = benchlib.reproduce_command(__file__, argv)
    md = markdown(rows, args.margin, command, args.what, args.pretrain_curves)
    benchlib.write_result(args.out, {"margin_percent": args.margin, "what": args.what, "pairs": rows}, md)
    print("\n".join(md))
    return 0


def speed_of(label: str, speed: dict) -> dict:
    """The pair's same-process epoch times from a baseline_epoch_speed.py result ({} if it lacks them)."""
    sp = speed.get("rows", {})
    if label not in sp or label + SUFFIX not in sp:
        return {}
    f32, b16 = sp[label]["epoch_cpu_s"], sp[label + SUFFIX]["epoch_cpu_s"]
    return {"speed": {"epoch_cpu_s": [f32, b16], "ratio_cpu": f32 / b16, "dataset": speed.get("dataset")}}


if __name__ == "__main__":
    raise SystemExit(main())
