"""Long-tail analysis (the paper's Fig. 4): metrics of test users grouped by their target item's popularity.

`unisrec evaluate MODEL --by-popularity [--groups 5 | --boundaries 3,7,15] [--compare BASELINE] [--plot F.png]`.

* **Popularity** of an item = how often it occurs in the *training part* of the sequences (every
  item before each user's validation target, ``models.popularity.popularity_counts``), so neither
  the validation nor the test targets count.
* **Groups**: each test user (one held-out item each) falls in the group of its target's popularity.
  Groups are ranges of popularity, ``(upper edge of the previous group, upper edge]``, so all users
  whose targets are equally popular share a group. By default the edges are chosen so that the groups
  hold roughly equal numbers of test interactions (:func:`equal_count_edges`); ``--boundaries``
  gives fixed edges instead. The paper's figure shows five groups of test interactions but its text
  does not state the bucket rule, so equal-count groups are our choice (docs/analyses.md).
* **Metrics per group** are the full-ranking Recall@K / NDCG@K of ``evaluation.metrics`` restricted
  to the group's users: the group sizes weight them back to exactly the overall metric.
* ``--compare BASELINE``: the baseline's metrics on the same users and groups and, per group, the
  relative improvement ``model / baseline - 1`` (the paper's "improvement ratio" of Recall@10
  over SASRec); ``None`` where the baseline's metric is 0.
* **Exposure** (what the model recommends, :func:`exposure_report`): of all the top-10 slots over
  the test users, the share that goes to items of each group's popularity range, beside the share of
  test targets in that range; the mean training popularity of a recommended item (ARP, Abdollahpouri
  et al. 2019) and catalogue coverage (items in anyone's top 10). A model can lose on rare targets
  because it rarely recommends rare items; this says whether it does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unisrec.errors import UserError


def equal_count_edges(popularity: np.ndarray, n_groups: int) -> list[int]:
    """Upper popularity edges (all but the last group's) splitting ``popularity`` -- one value per
    test interaction -- into ``n_groups`` groups of roughly equal size.

    The edge of the g-th cut is the distinct popularity value whose cumulative count is nearest to
    g * N / n_groups; equally popular targets are never split, so heavy ties can merge cuts and give
    fewer groups than asked (the result is what was used, reported with the groups).
    """
    if n_groups < 1:
        raise UserError(f"--groups must be >= 1, got {n_groups}")
    pop = np.sort(np.asarray(popularity, dtype=np.int64))
    if pop.size == 0:
        return []
    values = np.unique(pop)
    below_or_at = np.searchsorted(pop, values, side="right")  # cumulative counts at each distinct value
    edges = []
    for g in range(1, n_groups):
        v = int(values[np.argmin(np.abs(below_or_at - g * pop.size / n_groups))])
        if v < int(values[-1]) and (not edges or v > edges[-1]):  # a cut at the maximum leaves an empty group
            edges.append(v)
    return edges


def parse_boundaries(text: str) -> list[int]:
    """``--boundaries 3,7,15`` -> [3, 7, 15]: strictly increasing non-negative upper edges."""
    try:
        edges = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--boundaries {text!r}: expected comma-separated integers such as 3,7,15") from None
    if not edges or min(edges) < 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise UserError(f"--boundaries {text!r}: expected strictly increasing non-negative integers such as 3,7,15")
    return edges


def assign_groups(popularity: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Group index of each popularity value: group g holds ``edges[g-1] < p <= edges[g]``
    (group 0 from 0, the last group without an upper edge)."""
    return np.searchsorted(np.asarray(edges, dtype=np.int64), np.asarray(popularity, dtype=np.int64), side="left")


def group_ranges(edges: Sequence[int], max_popularity: int) -> list[tuple[int, int]]:
    """Inclusive (low, high) popularity range of each group."""
    lows = [0] + [e + 1 for e in edges]
    highs = list(edges) + [max(max_popularity, lows[-1])]
    return list(zip(lows, highs))


def split_ranks(model: Any, dataset: Any, split: str = "test", batch_size: int = 4096,
                device: Any = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(0-based full-ranking rank, target item) of every ``split`` user, in ``Dataset.examples`` order
    -- exactly the ranks ``evaluation.metrics.evaluate_model`` averages -- and the exposure of each
    item (how many of these users have it in their top 10, ``metrics.ranks_and_exposure``)."""
    from unisrec.evaluation.metrics import ranks_and_exposure

    hist, lens, tgt = dataset.examples(split, int(model.max_seq_length))
    if len(tgt) == 0:
        raise UserError(f"dataset {dataset.path or dataset.name} has no {split} examples (every user is too short)")
    ranks, exposure = ranks_and_exposure(model, hist, lens, tgt, batch_size=batch_size, device=device)
    return ranks, tgt, exposure


def relative_improvement(ours: float, base: float) -> float | None:
    """ours / base - 1 (0.25 = 25% better); None when the baseline scores 0."""
    return None if base == 0 else ours / base - 1.0


def mean_recommended_popularity(exposure: np.ndarray, counts: np.ndarray) -> float:
    """ARP: the mean training popularity (``counts``) of a recommended item over all top-k slots
    (``exposure``: slots per item, as ``metrics.ranks_and_exposure`` counts them)."""
    exposure = np.asarray(exposure)
    slots = exposure.sum()
    if slots == 0:
        raise ValueError("no recommendation slots (empty exposure)")
    return float((exposure * np.asarray(counts)).sum() / slots)


def exposure_report(exposure: np.ndarray, counts: np.ndarray, edges: Sequence[int]) -> dict[str, Any]:
    """What a model recommends, by item popularity: ``exposure`` (n + 1,) = how many users have each
    item in their top-k list (``metrics.ranks_and_exposure``), ``counts`` = training popularity,
    ``edges`` = the groups' upper edges.

    Returns {"slots": all top-k slots, "arp": mean training popularity of a recommended item,
    "coverage": share of the catalogue in at least one list, "slot_share": per group, the share of
    slots going to items in that group's popularity range, "catalogue_items": items per range}.
    """
    exposure = np.asarray(exposure, dtype=np.int64)[1:]  # index 0 = padding, never recommended
    pop = np.asarray(counts)[1:]
    if exposure.shape != pop.shape:
        raise ValueError(f"exposure of {exposure.size} items for a catalogue of {pop.size}")
    arp = mean_recommended_popularity(exposure, pop)
    slots = int(exposure.sum())
    group = assign_groups(pop, edges)
    n_groups = len(edges) + 1
    return {"slots": slots, "arp": arp, "coverage": float((exposure > 0).mean()),
            "slot_share": (np.bincount(group, weights=exposure, minlength=n_groups) / slots).tolist(),
            "catalogue_items": np.bincount(group, minlength=n_groups).astype(int).tolist()}


def popularity_report(
    ranks: np.ndarray,
    targets: np.ndarray,
    counts: np.ndarray,
    ks: Sequence[int] = (10, 50),
    n_groups: int = 5,
    edges: Sequence[int] | None = None,
    baseline_ranks: np.ndarray | None = None,
    exposure: np.ndarray | None = None,
    baseline_exposure: np.ndarray | None = None,
) -> dict[str, Any]:
    """Group the users by their target's popularity ``counts[target]`` and compute metrics per group.

    ``edges`` (upper edges) overrides the equal-count rule. Returns ``{"overall", "baseline_overall"?,
    "edges", "rule", "groups": [{"group", "popularity": [lo, hi], "test_interactions", "share",
    "target_items", "metrics", "baseline"?, "improvement"?}], "exposure"?, "baseline_exposure"?}``
    (the exposures, :func:`exposure_report`, over the same popularity ranges).
    """
    from unisrec.evaluation.metrics import metrics_from_ranks

    ranks, targets = np.asarray(ranks), np.asarray(targets)
    if baseline_ranks is not None and len(baseline_ranks) != len(ranks):
        raise ValueError(f"{len(baseline_ranks)} baseline ranks for {len(ranks)} users")
    pop = np.asarray(counts)[targets].astype(np.int64)
    rule = "boundaries" if edges is not None else "equal-count"
    edges = list(edges) if edges is not None else equal_count_edges(pop, n_groups)
    group = assign_groups(pop, edges)
    report: dict[str, Any] = {"rule": rule, "edges": edges, "overall": metrics_from_ranks(ranks, ks),
                              "test_interactions": int(len(ranks)), "groups": []}
    if baseline_ranks is not None:
        report["baseline_overall"] = metrics_from_ranks(baseline_ranks, ks)
        report["overall_improvement"] = {k: relative_improvement(v, report["baseline_overall"][k]) for k, v in report["overall"].items()}
    for g, (lo, hi) in enumerate(group_ranges(edges, int(pop.max()))):
        members = group == g
        row: dict[str, Any] = {"group": g + 1, "popularity": [lo, hi], "test_interactions": int(members.sum()),
                               "share": float(members.mean()), "target_items": int(np.unique(targets[members]).size)}
        if members.any():
            row["metrics"] = metrics_from_ranks(ranks[members], ks)
            if baseline_ranks is not None:
                row["baseline"] = metrics_from_ranks(np.asarray(baseline_ranks)[members], ks)
                row["improvement"] = {k: relative_improvement(v, row["baseline"][k]) for k, v in row["metrics"].items()}
        report["groups"].append(row)
    if exposure is not None:
        report["exposure"] = exposure_report(exposure, counts, edges)
    if baseline_exposure is not None:
        report["baseline_exposure"] = exposure_report(baseline_exposure, counts, edges)
    return report


def analyse_popularity(
    model_dir: str,
    split: str = "test",
    ks: Sequence[int] = (10, 50),
    n_groups: int = 5,
    edges: Sequence[int] | None = None,
    compare: str | None = None,
    dataset: str | None = None,
    device: str = "auto",
    batch_size: int = 4096,
) -> dict[str, Any]:
    """The long-tail report of a model directory (and a baseline's) on its dataset (see the module docstring)."""
    from unisrec.evaluation.cli import load_for_evaluation
    from unisrec.models.popularity import popularity_counts

    model, ds, dev = load_for_evaluation(model_dir, dataset, device)
    ranks, targets, exposure = split_ranks(model, ds, split, batch_size, dev)
    base_ranks = base_exposure = None
    if compare is not None:
        base, base_ds, base_dev = load_for_evaluation(compare, str(ds.path), device)
        base_ranks, base_targets, base_exposure = split_ranks(base, base_ds, split, batch_size, base_dev)
        if not np.array_equal(base_targets, targets):
            raise UserError(f"baseline {compare} is evaluated on other {split} users than {model_dir}")
    report = popularity_report(ranks, targets, popularity_counts(ds), ks, n_groups, edges, base_ranks, exposure, base_exposure)
    report.update(model=str(model_dir), baseline=compare, dataset=str(ds.path), split=split,
                  popularity="interactions of the target item in the training part (items before each user's validation target)")
    return report


def ratio_metric(report: dict[str, Any]) -> str:
    """The metric the improvement line shows: Recall@10 (the paper's), else the smallest K's recall."""
    keys = [k for k in report["overall"] if k.startswith("recall@")]
    return "recall@10" if "recall@10" in keys else min(keys, key=lambda k: int(k.split("@")[1]))


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of the report."""
    metric_keys = list(report["overall"])
    lines = [f"{report['model']} on {report['dataset']} ({report['split']}, full ranking), "
             f"{report['test_interactions']} test interactions grouped by target popularity "
             f"({'equal-count groups' if report['rule'] == 'equal-count' else 'given boundaries'}; "
             f"popularity = interactions in the training part)"]
    if report.get("baseline"):
        lines.append(f"baseline: {report['baseline']}; 'impr' = model / baseline - 1")
    head = f"{'group':>5} {'popularity':>12} {'tests':>7} {'items':>6} " + " ".join(f"{k:>10}" for k in metric_keys)
    ratio = ratio_metric(report)
    if report.get("baseline"):
        head += f" {'base ' + ratio:>16} {'impr ' + ratio:>16}"
    lines.append(head)
    for row in report["groups"]:
        lo, hi = row["popularity"]
        cells = f"{row['group']:>5} {f'{lo}-{hi}':>12} {row['test_interactions']:>7} {row['target_items']:>6} "
        m = row.get("metrics")
        cells += " ".join(f"{m[k]:>10.4f}" if m else f"{'-':>10}" for k in metric_keys)
        if report.get("baseline"):
            imp = (row.get("improvement") or {}).get(ratio)
            cells += f" {row['baseline'][ratio]:>16.4f}" if m else f" {'-':>16}"
            cells += f" {imp:>+15.1%}" if imp is not None else f" {'-':>16}"
        lines.append(cells)
    all_cells = f"{'all':>5} {'':>12} {report['test_interactions']:>7} {'':>6} " + " ".join(f"{report['overall'][k]:>10.4f}" for k in metric_keys)
    if report.get("baseline"):
        imp = report["overall_improvement"][ratio]
        all_cells += f" {report['baseline_overall'][ratio]:>16.4f}" + (f" {imp:>+15.1%}" if imp is not None else f" {'-':>16}")
    lines.append(all_cells)
    if report.get("exposure"):
        lines += ["", "exposure: share of all top-10 slots going to items of each popularity range "
                  "(vs the share of test targets there); ARP = mean training popularity of a recommended item"]
        shown = [("model", report["exposure"])] + ([("baseline", report["baseline_exposure"])] if report.get("baseline_exposure") else [])
        lines.append(f"{'':>8} " + " ".join(f"{f'{lo}-{hi}':>10}" for lo, hi in (g["popularity"] for g in report["groups"]))
                     + f" {'ARP':>8} {'coverage':>9}")
        lines.append(f"{'targets':>8} " + " ".join(f"{g['share']:>10.1%}" for g in report["groups"]))
        for name, e in shown:
            lines.append(f"{name:>8} " + " ".join(f"{v:>10.1%}" for v in e["slot_share"]) + f" {e['arp']:>8.1f} {e['coverage']:>9.1%}")
    return "\n".join(lines)


def plot_report(report: dict[str, Any], out_png: str | os.PathLike, title: str | None = None) -> Path:
    """Fig. 4's layout: bars = test interactions per group (left axis), line = the improvement ratio
    of Recall@10 over the baseline in % (right axis); without a baseline the line is the model's Recall@10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = report["groups"]
    labels = [f"{g['popularity'][0]}-{g['popularity'][1]}" for g in groups]
    x = np.arange(len(groups))
    metric = ratio_metric(report)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    sizes = [g["test_interactions"] for g in groups]
    ax.bar(x, sizes, color="#9ecae1", edgecolor="#3182bd", label="test interactions")
    ax.set_xticks(x, labels)
    ax.set_xlabel("popularity of the target item (interactions in the training data)")
    ax.set_ylabel("test interactions (users)")
    line_ax = ax.twinx()
    name = metric.replace("recall", "Recall")
    if report.get("baseline"):
        vals = [100 * g["improvement"][metric] if g.get("improvement") and g["improvement"][metric] is not None else np.nan for g in groups]
        line_ax.plot(x, vals, color="#d62728", marker="o", label=f"{name} improvement over baseline")
        line_ax.axhline(0, color="#d62728", lw=0.6, ls=":")
        line_ax.set_ylabel(f"{name} improvement ratio (%)")
        default_title = f"{Path(report['model']).name} vs {Path(report['baseline']).name}: {name} by target popularity"
    else:
        vals = [g["metrics"][metric] if g.get("metrics") else np.nan for g in groups]
        line_ax.plot(x, vals, color="#d62728", marker="o", label=name)
        line_ax.set_ylabel(name)
        default_title = f"{Path(report['model']).name}: {name} by target popularity"
    handles = ax.get_legend_handles_labels()[0] + line_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=2, frameon=False)  # below the axes: never over the bars or the line
    ax.set_title(title or f"{default_title} ({Path(report['dataset']).name}, {report['split']})", fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, out_png)
    return out_png


def run_cli(args: Any, ks: list[int]) -> int:
    """`unisrec evaluate MODEL --by-popularity ...` (the flags are registered in ``evaluation.cli``)."""
    import json

    edges = parse_boundaries(args.boundaries) if args.boundaries else None
    report = analyse_popularity(args.model, args.split, ks, args.groups, edges, args.compare, args.dataset, args.device, args.batch_size)
    if args.plot:
        report["plot"] = str(plot_report(report, args.plot))
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(format_report(report))
        if args.plot:
            print(f"plot: {report['plot']}")
    return 0
