"""Validation NDCG@10 per epoch of several run trees, one panel per model (a PNG).

    python benchmarks/plot_curves.py OUT.png LABEL=RUN_TREE [LABEL=RUN_TREE ...]

e.g. ``results/online_retail/online_retail_curves.png "scratch=runs/table3"``.

A run tree holds ``DATASET/MODEL/seedN/training_log.jsonl`` (what reproduce_table3.py writes);
each LABEL gets one colour, each seed one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import benchlib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("trees", nargs="+", metavar="LABEL=RUN_TREE")
    args = ap.parse_args()
    out, specs = args.out, [a.split("=", 1) for a in args.trees]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves: dict[str, dict[str, list]] = {}
    for label, tree in specs:
        for log in sorted(Path(tree).glob("*/*/seed*/training_log.jsonl")):
            model = log.parent.parent.name
            rows = benchlib.read_jsonl(log)
            curves.setdefault(model, {}).setdefault(label, []).append([(r["epoch"], r["valid"]["ndcg@10"]) for r in rows])
    models = sorted(curves)
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.6), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, model in zip(axes[0], models):
        for k, (label, _) in enumerate(specs):
            for j, pts in enumerate(curves[model].get(label, [])):
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3, color=colours[k % len(colours)], alpha=0.8, label=label if j == 0 else None)
        ax.set_title(model)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("valid NDCG@10")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
