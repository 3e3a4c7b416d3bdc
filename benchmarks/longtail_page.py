"""The paper's Fig. 4 (long-tail items) from a benchmark archive: each model's Recall@10 against a
baseline's, per group of test users by their target item's popularity, over every seed both have.

Nothing is trained or scored here: the archive (``unisrec benchmark archive``) keeps every cell's
``test_ranks.npy`` (the full-ranking rank of each test user's target), and the groups depend on the
dataset alone, so the per-group metrics of every archived seed follow from the ranks
(``unisrec.evaluation.longtail.popularity_report``, the function behind `unisrec evaluate
--by-popularity`). Groups: equal numbers of test interactions (``--groups``), popularity =
interactions of the item in the training part. Writes ``OUT.md``, ``OUT.json`` and ``OUT.png``
(bars: test interactions per group; lines: each model's Recall@10 improvement ratio over the
baseline in %, from the seed means, as in Fig. 4).

    python benchmarks/longtail_page.py --dataset '$UNISREC_DATA/scientific' \\
        --models UniSRec_t+ID,UniSRec_t --baseline SASRec
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import benchlib

METRIC = "recall@10"  # the paper's improvement ratio


def seed_list(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def seed_ranks(archive: Path, dataset: str, label: str) -> dict[int, np.ndarray]:
    """seed -> test ranks of every archived cell of ``label``."""
    folder = archive / dataset / label.replace(" ", "_")
    return {int(p.parent.name[4:]): np.load(p) for p in sorted(folder.glob("seed*/test_ranks.npy"))}


def reports(archive: Path, dataset_name: str, dataset_dir: str, models: list[str], baseline: str,
            n_groups: int) -> dict:
    """Per model and seed, the long-tail report against the baseline of the same seed."""
    from unisrec.data.dataset import Dataset
    from unisrec.evaluation.longtail import popularity_report
    from unisrec.models.popularity import popularity_counts

    ds = Dataset.load(dataset_dir)
    targets = ds.examples("test", 50)[2]
    counts = popularity_counts(ds)
    base = seed_ranks(archive, dataset_name, baseline)
    out = {}
    for label in models:
        ours = seed_ranks(archive, dataset_name, label)
        for seed in sorted(set(ours) & set(base)):
            if not len(ours[seed]) == len(base[seed]) == len(targets):
                raise SystemExit(f"{label} / {baseline} seed {seed}: {len(ours[seed])} / {len(base[seed])} test ranks "
                                 f"for {len(targets)} test users of {dataset_dir}")
            out.setdefault(label, {})[seed] = popularity_report(ours[seed], targets, counts, (10, 50), n_groups,
                                                                baseline_ranks=base[seed])
    return out


def exposure_rows(archive: Path, dataset_name: str, dataset_dir: str, labels: list[str], n_groups: int) -> dict:
    """What each model recommends, by item popularity (``evaluation.longtail.exposure_report``), mean
    over the archived seeds that have ``test_exposure.npy``; first the test targets' own distribution
    and the popularity ranking (the same 10 items for everyone) for reference."""
    from unisrec.data.dataset import Dataset
    from unisrec.evaluation.longtail import equal_count_edges, exposure_report
    from unisrec.models.popularity import popularity_counts, popularity_exposure

    ds = Dataset.load(dataset_dir)
    targets = ds.examples("test", 50)[2]
    counts = popularity_counts(ds)
    edges = equal_count_edges(counts[targets], n_groups)
    target_exposure = np.bincount(targets, minlength=ds.num_items + 1)  # each target as one "slot"
    rows = {"test targets": {"seeds": [], **exposure_report(target_exposure, counts, edges)},
            "Popularity": {"seeds": [], **exposure_report(popularity_exposure(ds, "test"), counts, edges)}}
    for label in labels:
        folder = archive / dataset_name / label.replace(" ", "_")
        per_seed = {int(p.parent.name[4:]): exposure_report(np.load(p), counts, edges) for p in sorted(folder.glob("seed*/test_exposure.npy"))}
        if per_seed:
            reps = list(per_seed.values())
            rows[label] = {"seeds": sorted(per_seed), "slots": reps[0]["slots"], "catalogue_items": reps[0]["catalogue_items"],
                           **{k: float(np.mean([r[k] for r in reps])) for k in ("arp", "coverage")},
                           "slot_share": np.mean([r["slot_share"] for r in reps], axis=0).tolist()}
    return {"edges": edges, "rows": rows}


def summarise(per_seed: dict[int, dict]) -> list[dict]:
    """Per group: the seed means of the model's and the baseline's Recall@10 and the ratio of the means."""
    seeds = sorted(per_seed)
    rows = []
    for g, first in enumerate(per_seed[seeds[0]]["groups"]):
        ours = [per_seed[s]["groups"][g]["metrics"][METRIC] for s in seeds]
        base = [per_seed[s]["groups"][g]["baseline"][METRIC] for s in seeds]
        per = [per_seed[s]["groups"][g]["improvement"][METRIC] for s in seeds]
        rows.append({"group": first["group"], "popularity": first["popularity"], "test_interactions": first["test_interactions"],
                     "share": first["share"], "model": float(np.mean(ours)), "baseline": float(np.mean(base)),
                     "improvement": float(np.mean(ours) / np.mean(base) - 1) if np.mean(base) > 0 else None,
                     "improvement_per_seed": per})
    return rows


def plot(summary: dict[str, list[dict]], seeds: dict[str, list[int]], baseline: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = next(iter(summary.values()))
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=110)
    ax.bar(x, [r["test_interactions"] for r in rows], color="#9ecae1", edgecolor="#3182bd", label="test interactions")
    ax.set_xticks(x, [f"{r['popularity'][0]}-{r['popularity'][1]}" for r in rows])
    ax.set_xlabel("popularity of the target item (interactions in the training part)")
    ax.set_ylabel("test interactions (users)")
    line = ax.twinx()
    for (label, groups), color in zip(summary.items(), ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e")):
        vals = [100 * r["improvement"] if r["improvement"] is not None else np.nan for r in groups]
        line.plot(x, vals, marker="o", color=color, label=f"{label} over {baseline} ({seed_list(seeds[label])})")
    line.axhline(0, color="grey", lw=0.6, ls=":")
    line.set_ylabel("Recall@10 improvement ratio (%)")
    handles = ax.get_legend_handles_labels()[0] + line.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=1, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="results/table3/cells_scientific", help="the benchmark archive (a run tree)")
    ap.add_argument("--target", default="scientific", help="the dataset's name in the archive")
    ap.add_argument("--dataset", required=True, help="the dataset folder (its popularity and test targets)")
    ap.add_argument("--models", default="UniSRec_t+ID,UniSRec_t", help="comma-separated model labels")
    ap.add_argument("--baseline", default="SASRec")
    ap.add_argument("--groups", type=int, default=5)
    ap.add_argument("--exposure-extra", default="", help="comma-separated labels shown in the exposure table only (e.g. controls)")
    ap.add_argument("--out", default="results/analyses/longtail_scientific")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    found = reports(Path(args.cells), args.target, os.path.expandvars(args.dataset), models, args.baseline, args.groups)
    if not found:
        raise SystemExit(f"no seed of {', '.join(models)} with a {args.baseline} cell of the same seed in {args.cells}")
    summary = {label: summarise(per_seed) for label, per_seed in found.items()}
    seeds = {label: sorted(per_seed) for label, per_seed in found.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"{args.target}: Recall@10 improvement over {args.baseline} by target popularity (test users)"
    plot(summary, seeds, args.baseline, title, out.with_suffix(".png"))

    lines = [f"# Long-tail items (the paper's Fig. 4): {args.target}, " + ", ".join(summary) + f" against {args.baseline}", "",
             f"Test users grouped by the popularity of their target item (interactions in the training part; "
             f"{args.groups} groups of roughly equal test interactions), full ranking, from the per-user test ranks of "
             f"the archive `{args.cells}` (every run early-stopped; nothing re-scored). Recall@10 is the mean over "
             "the seeds both models have; the improvement ratio is model / baseline - 1 of those means (per-seed "
             "ratios in brackets). The paper's figure compares a *pre-trained* UniSRec with SASRec; the models here are "
             "the harness's cells, trained on the target alone unless their label says otherwise.", ""]
    for label, rows in summary.items():
        lines += [f"## {label} vs {args.baseline} ({seed_list(seeds[label])})", "",
                  f"| group | popularity | test users | share | {label} R@10 | {args.baseline} R@10 | improvement |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            per = ", ".join(f"{100 * v:+.1f}%" if v is not None else "-" for v in r["improvement_per_seed"])
            imp = f"{100 * r['improvement']:+.1f}%" if r["improvement"] is not None else "-"
            lines.append(f"| {r['group']} | {r['popularity'][0]}-{r['popularity'][1]} | {r['test_interactions']} | "
                         f"{100 * r['share']:.1f}% | {r['model']:.4f} | {r['baseline']:.4f} | {imp} ({per}) |")
        overall = [found[label][s]["overall_improvement"][METRIC] for s in seeds[label]]
        lines += ["", f"All test users: improvement {', '.join(f'{100 * v:+.1f}%' for v in overall)} per seed.", ""]
    exposure = exposure_rows(Path(args.cells), args.target, os.path.expandvars(args.dataset), models + [args.baseline] + [m for m in args.exposure_extra.split(",") if m], args.groups)
    if len(exposure["rows"]) > 2:
        first = next(iter(summary.values()))
        ranges = [f"{r['popularity'][0]}-{r['popularity'][1]}" for r in first]
        items = exposure["rows"]["test targets"]["catalogue_items"]
        lines += ["## What the models recommend (exposure)", "",
                  "Of all top-10 slots over the test users (10 per user), the share going to items of each popularity "
                  "range above (the ranges of the groups; catalogue items per range in brackets); ARP = the mean training "
                  "popularity of a recommended item (Abdollahpouri et al. 2019); coverage = the share of the catalogue in at "
                  "least one list. The first row is the test targets themselves (what a perfect recommender would list), "
                  "the second the popularity ranking. From each cell's `test_exposure.npy` (cells trained before it "
                  "existed have it only where their weights remained to re-score: `benchmarks/backfill_exposure.py`, "
                  "which keeps it only when the re-scored test ranks equal the archived ones).", "",
                  "| | seeds | " + " | ".join(f"{r} ({n})" for r, n in zip(ranges, items)) + " | ARP | coverage |",
                  "|---|---|" + "---|" * len(ranges) + "---|---|"]
        for label, row in exposure["rows"].items():
            seeds = ", ".join(map(str, row["seeds"])) or "-"
            lines.append(f"| {label} | {seeds} | " + " | ".join(f"{100 * v:.1f}%" for v in row["slot_share"])
                         + f" | {row['arp']:.0f} | {100 * row['coverage']:.1f}% |")
        lines.append("")
    lines += [f"![Recall@10 improvement by target popularity]({out.name}.png)", "",
              f"Regenerate: `{benchlib.reproduce_command(__file__, sys.argv[1:] if argv is None else argv)}`"]
    data = {"target": args.target, "baseline": args.baseline, "groups": args.groups, "cells": args.cells,
            "summary": summary, "seeds": seeds, "exposure": exposure,
            "per_seed": {label: {str(s): r for s, r in per_seed.items()} for label, per_seed in found.items()}}
    benchlib.write_result(out, data, lines)
    print(f"wrote {out}.md, {out}.json, {out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
