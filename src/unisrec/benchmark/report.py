"""`unisrec benchmark report RUNS`: the paper's Table 3 layout from a benchmark's run tree.

API::

    result = build_report("runs/table3_scientific")   # a JSON-able dict
    print(render_markdown(result))
    write_report(result, "results/table3/benchmark_scientific")  # .md, .json, _DATASET_curves.png, _bars.png

Per dataset, rows = R@10, N@10, R@50, N@50 and columns = models (the paper's orientation), each
model's value the mean over its finished seeds, the best **bold** and the second <u>underlined</u>
(over all models), ``\\*`` on a UniSRec ("ours") value that beats the best baseline with p < 0.01
(paired t-test per test user, :mod:`unisrec.benchmark.significance`), "Improv." = the best UniSRec
value over the best baseline value - 1, and the paper's number beside each of ours. Then the
seed-level view (mean ± sample std over seeds), every p-value, and per-run epochs and commands.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from unisrec.benchmark import paper
from unisrec.benchmark.runner import DONE_NAME, METRICS_NAME, SUMMARY_NAME, display_path
from unisrec.benchmark.significance import compare, seed_averaged
from unisrec.errors import UserError

METRICS: tuple[str, ...] = paper.METRICS
SHORT = {"recall@10": "R@10", "ndcg@10": "N@10", "recall@50": "R@50", "ndcg@50": "N@50"}
ALPHA = 0.01
SEED_DIR = re.compile(r"^seed(-?\d+)$")


# ------------------------------------------------------------------ the run tree
def _role_from_model_dir(cell: Path) -> str:
    try:
        cfg = json.loads((cell / "config.json").read_text())
    except (OSError, ValueError):
        return "baseline"
    return "ours" if cfg.get("model_type") == "unisrec" else "baseline"


def collect(runs: str | os.PathLike) -> dict[str, Any]:
    """Every cell under ``RUNS/DATASET/MODEL/seedN/``: {dataset: {"paper", "models": {label: {...}}}}.

    Model order, labels, roles and paper columns come from ``RUNS/benchmark.json`` (written by
    `unisrec benchmark run`); folders it does not list are added after, their role read from the
    model directory (a UniSRec model is "ours")."""
    runs = Path(runs)
    if not runs.is_dir():
        raise UserError(f"{runs} is not a folder of benchmark runs")
    spec: dict[str, Any] = {}
    if (runs / SUMMARY_NAME).is_file():
        spec = json.loads((runs / SUMMARY_NAME).read_text()).get("spec", {})
    spec_models = {label: spec["models"][label] for label in spec.get("model_order", spec.get("models", {}))}
    by_folder = {m.get("folder", label): label for label, m in spec_models.items()}
    commands, stale = {}, {}
    if (runs / SUMMARY_NAME).is_file():
        for c in json.loads((runs / SUMMARY_NAME).read_text()).get("cells", []):
            commands[(c["dataset"], c["model"], c["seed"])] = c.get("command")
            if c.get("status") == "stale":  # trained with other options than the spec now names
                stale[(c["dataset"], c["model"], c["seed"])] = c.get("message")
    out: dict[str, Any] = {}
    ds_spec = spec.get("dataset_order", list(spec.get("datasets", {})))
    ds_names = ds_spec + sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name not in ds_spec)
    for ds in ds_names:
        ds_dir = runs / ds
        if not ds_dir.is_dir():
            continue
        folders = [spec_models[label].get("folder", label) for label in spec_models]
        folders += sorted(p.name for p in ds_dir.iterdir() if p.is_dir() and p.name not in folders)
        models: dict[str, Any] = {}
        for folder in folders:
            mdir = ds_dir / folder
            seeds = sorted((int(m.group(1)), p) for p in (mdir.iterdir() if mdir.is_dir() else [])
                           if p.is_dir() and (m := SEED_DIR.match(p.name)))
            if not seeds:
                continue
            label = by_folder.get(folder, folder)
            entry = spec_models.get(label, {})
            runs_of_model = []
            for seed, cell in seeds:
                metrics = json.loads((cell / METRICS_NAME).read_text()) if (cell / METRICS_NAME).is_file() else None
                ranks = cell / "test_ranks.npy"
                done = cell / DONE_NAME  # a pre-training cell (model: pretrain) has no test metrics, only how it ended
                runs_of_model.append({
                    "pretraining": json.loads(done.read_text()) if metrics is None and done.is_file() else None,
                    "seed": seed, "dir": str(cell.relative_to(runs)), "metrics": metrics,
                    "test_ranks": str(ranks) if ranks.is_file() and metrics is not None else None,
                    "log": str(cell / "training_log.jsonl") if (cell / "training_log.jsonl").is_file() else None,
                    "command": commands.get((ds, label, seed)),
                    "stale": stale.get((ds, label, seed)),
                })
            models[label] = {
                "role": entry.get("role") or _role_from_model_dir(seeds[0][1]),
                "paper": entry.get("paper") if entry else None,
                "runs": runs_of_model,
            }
        paper_ds = spec.get("datasets", {}).get(ds, {}).get("paper") or paper.paper_dataset(ds)
        if models:
            out[ds] = {"paper": paper_ds, "models": models}
    if not out:
        raise UserError(f"{runs} holds no runs (expected DATASET/MODEL/seedN/ folders)")
    return out


# ------------------------------------------------------------------ the analysis
def rank_marks(values: dict[str, float]) -> dict[str, str]:
    """{model: "best" | "second" | ""}: the highest value(s) best, the next highest second (ties share)."""
    distinct = sorted({v for v in values.values() if not math.isnan(v)}, reverse=True)
    marks = {}
    for m, v in values.items():
        marks[m] = "best" if distinct and v == distinct[0] else "second" if len(distinct) > 1 and v == distinct[1] else ""
    return marks


def _mean_std(vals: list[float]) -> tuple[float, float | None]:
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def analyse_dataset(name: str, data: dict[str, Any], alpha: float = ALPHA, all_pairs: bool = False) -> dict[str, Any]:
    """Means, marks, Improv., paper numbers and paired tests of one dataset (see the module docstring).

    ``all_pairs`` adds a test of every pair of ranked models (controls excluded) that the default
    comparisons leave out, e.g. two pre-training sources of one figure against each other."""
    models = {}
    for label, m in data["models"].items():
        finished = [r for r in m["runs"] if r["metrics"] is not None]
        if not finished:
            continue
        seed_values = {k: [r["metrics"]["test"][k] for r in finished] for k in METRICS}
        have_ranks = all(r["test_ranks"] for r in finished)
        models[label] = {
            "role": m["role"], "paper_model": m["paper"], "seeds": [r["seed"] for r in finished],
            "seed_values": seed_values,
            "mean": {k: _mean_std(v)[0] for k, v in seed_values.items()},
            "std": {k: _mean_std(v)[1] for k, v in seed_values.items()},
            "paper": {k: paper.paper_value(data["paper"], m["paper"], k) if m["paper"] else None for k in METRICS},
            "ranks": [np.load(r["test_ranks"]) for r in finished] if have_ranks else None,
            "runs": [{"seed": r["seed"], "dir": r["dir"], "best_epoch": r["metrics"].get("best_epoch"),
                      "epochs_run": r["metrics"].get("epochs_run"), "stop_reason": r["metrics"].get("stop_reason"),
                      "wall_seconds": r["metrics"].get("wall_seconds"), "command": r["command"],
                      "stale": r.get("stale")} for r in finished],
        }
    ours = [m for m in models if models[m]["role"] == "ours"]
    baselines = [m for m in models if models[m]["role"] == "baseline"]
    controls = [m for m in models if models[m]["role"] == "control"]  # tested, never ranked nor "best baseline"
    rows: dict[str, Any] = {}
    tests: list[dict[str, Any]] = []
    for k in METRICS:
        means = {m: models[m]["mean"][k] for m in models}
        marks = {**rank_marks({m: v for m, v in means.items() if m not in controls}), **{m: "" for m in controls}}
        per_user = {m: seed_averaged(models[m]["ranks"], k) for m in models if models[m]["ranks"] is not None}
        best_base = max(baselines, key=lambda m: means[m]) if baselines else None
        best_ours = max(ours, key=lambda m: means[m]) if ours else None
        improv = means[best_ours] / means[best_base] - 1 if best_base and best_ours and means[best_base] > 0 else None

        def test(a: str, b: str, kind: str) -> dict[str, Any]:
            if a in per_user and b in per_user:
                res = compare(a, per_user[a], b, per_user[b], alpha)
            else:
                res = {"better": a if means[a] >= means[b] else b, "worse": b if means[a] >= means[b] else a,
                       "p": None, "significant": False, "note": "no per-user ranks (test_ranks.npy) for "
                       + ", ".join(x for x in (a, b) if x not in per_user)}
            res.update(metric=k, kind=kind, seeds={a: len(models[a]["seeds"]), b: len(models[b]["seeds"])})
            tests.append(res)
            return res

        stars = {}
        for o in ours:
            for b in baselines:
                res = test(o, b, "ours vs baseline")
                if b == best_base:
                    stars[o] = res["better"] == o and res["significant"]
            for c in controls:
                test(o, c, "ours vs control")
        ranked = sorted((m for m in models if m not in controls), key=lambda m: -means[m])
        if len(ranked) >= 2:
            pair = {ranked[0], ranked[1]}
            same = next((t for t in tests if t["metric"] == k and {t["better"], t["worse"]} == pair), None)
            if same is not None:
                same["kind"] += "; best vs second"
            else:
                test(ranked[0], ranked[1], "best vs second")
        if all_pairs:
            tested = {frozenset((t["better"], t["worse"])) for t in tests if t["metric"] == k}
            for a, b in itertools.combinations(ranked, 2):
                if frozenset((a, b)) not in tested:
                    test(a, b, "pair")
        rows[k] = {"means": means, "marks": marks, "significant": stars, "best_baseline": best_base,
                   "best_ours": best_ours, "improv": improv}
    for m in models.values():
        m.pop("ranks")
    users = {len(v) for v in (np.load(r["test_ranks"]) for m in data["models"].values() for r in m["runs"] if r["test_ranks"])}
    checkpoints = [{"model": label, "seed": r["seed"], "dir": r["dir"], "command": r["command"], **r["pretraining"]}
                   for label, m in data["models"].items() for r in m["runs"] if r.get("pretraining")]
    unfinished = [{"model": label, "seed": r["seed"], "dir": r["dir"], **curve_so_far(r["log"])}
                  for label, m in data["models"].items() for r in m["runs"]
                  if r["metrics"] is None and not r.get("pretraining")]
    return {"paper_dataset": data["paper"], "models": models, "rows": rows, "tests": tests,
            "test_users": sorted(users), "checkpoints": checkpoints, "unfinished": unfinished}


def curve_so_far(log: str | None, metric: str = "ndcg@10") -> dict[str, Any]:
    """Where an unfinished cell's validation curve stands: epochs logged, the best ``metric`` and its epoch."""
    from unisrec.evaluation.plots import read_training_log

    rows = [r for r in read_training_log(Path(log).parent) if metric in (r.get("valid") or {})] if log else []
    if not rows:
        return {"epochs_logged": 0, "best_valid": None, "best_epoch": None}
    best = max(rows, key=lambda r: r["valid"][metric])
    return {"epochs_logged": rows[-1]["epoch"], "best_valid": best["valid"][metric], "best_epoch": best["epoch"]}


def build_report(runs: str | os.PathLike, alpha: float = ALPHA, all_pairs: bool = False) -> dict[str, Any]:
    """The whole report of a run tree as a JSON-able dict (``all_pairs``: see :func:`analyse_dataset`)."""
    collected = collect(runs)
    return {"runs": display_path(Path(runs)), "alpha": alpha, "metrics": list(METRICS),
            "datasets": {ds: analyse_dataset(ds, data, alpha, all_pairs) for ds, data in collected.items()},
            "curves": {ds: {label: [{"seed": r["seed"], "log": r["log"], "finished": r["metrics"] is not None}
                                    for r in m["runs"] if r["log"]] for label, m in data["models"].items()}
                       for ds, data in collected.items()}}


# ------------------------------------------------------------------ markdown
def fmt_cell(value: float, mark: str = "", star: bool = False) -> str:
    """``0.1234`` as the paper prints it: ``**0.1234**`` best, ``<u>0.1234</u>`` second, ``\\*`` significant."""
    text = f"{value:.4f}"
    text = f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text
    return text + ("\\*" if star else "")


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def dataset_markdown(name: str, d: dict[str, Any], alpha: float = ALPHA) -> list[str]:
    models = list(d["models"])
    lines = [f"## {name}", ""]
    if d.get("checkpoints"):
        lines += ["Pre-training checkpoints (`model: pretrain` cells; a fine-tuning spec names them in `from:`):", "",
                  "| checkpoint | seed | epochs done | steps | stop reason | last epoch's loss | training s | folder |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in d["checkpoints"]:
            lines.append(f"| {c['model']} | {c['seed']} | {c.get('epochs_done', float('nan')):.2f} | {c.get('global_step')} | "
                         f"{c.get('stop_reason')} | {c.get('last_epoch_loss', float('nan')):.4f} | "
                         f"{c.get('training_seconds', float('nan')):.0f} | `{c['dir']}` |")
        lines.append("")
    if not models:
        return lines + ([] if d.get("checkpoints") else ["No finished runs.", ""]) + unfinished_markdown(d)
    seeds = ", ".join(f"{m} {len(d['models'][m]['seeds'])}" for m in models)
    with_paper = [m for m in models if any(v is not None for v in d["models"][m]["paper"].values())]
    header = ["Metric"]
    for m in models:
        header.append(m + {"ours": " (ours)", "control": " (control)"}.get(d["models"][m]["role"], ""))
        if m in with_paper:
            header.append("paper")
    header.append("Improv.")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k in METRICS:
        row = d["rows"][k]
        cells = [SHORT[k]]
        for m in models:
            cells.append(fmt_cell(row["means"][m], row["marks"][m], row["significant"].get(m, False)))
            if m in with_paper:
                pv = d["models"][m]["paper"][k]
                cells.append("–" if pv is None else f"{pv:.4f}")
        cells.append("–" if row["improv"] is None else f"{row['improv']:+.2%}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Test set, full ranking; each value the mean over the model's finished seeds (seeds: {seeds}). "
        "**Bold** best, <u>underlined</u> second (all models but controls); \\* = UniSRec (ours) above the best baseline with "
        f"p < {alpha} (paired t-test over the {', '.join(f'{n:,}' for n in d['test_users']) or '?'} test users, one-sided, "
        "per-user values averaged over each model's seeds); Improv. = best UniSRec / best baseline − 1; "
        "\"paper\" = the paper's Table 3.",
        "",
        "Seed-level view (mean ± sample std over seeds):",
        "",
        "| Metric | " + " | ".join(models) + " |",
        "|" + "---|" * (len(models) + 1),
    ]
    for k in METRICS:
        vals = []
        for m in models:
            mean, std = d["models"][m]["mean"][k], d["models"][m]["std"][k]
            vals.append(f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "") + f" (n={len(d['models'][m]['seeds'])})")
        lines.append(f"| {SHORT[k]} | " + " | ".join(vals) + " |")
    lines += ["", "Paired t-tests (H1: the better model is higher; `ttest_rel(better, worse, alternative=\"greater\")`):", "",
              "| metric | comparison | better | worse | mean better | mean worse | t | p | p < " + str(alpha) + " |",
              "|---|---|---|---|---|---|---|---|---|"]
    if not d["tests"]:
        lines.append("| – | none: a test needs two models | | | | | | | |")
    for t in d["tests"]:
        if t["p"] is None:
            lines.append(f"| {SHORT[t['metric']]} | {t['kind']} | {t['better']} | {t['worse']} | – | – | – | – | {t['note']} |")
            continue
        lines.append(f"| {SHORT[t['metric']]} | {t['kind']} | {t['better']} | {t['worse']} | {t['mean_better']:.4f} | "
                     f"{t['mean_worse']:.4f} | {t['t']:.2f} | {_fmt_p(t['p'])} | {'yes' if t['significant'] else 'no'} |")
    lines += ["", "Runs:", "", "| model | seed | best / run epochs | stop | wall min |", "|---|---|---|---|---|"]
    for m in models:
        for r in d["models"][m]["runs"]:
            wall = f"{r['wall_seconds'] / 60:.1f}" if r["wall_seconds"] is not None else "–"
            stop = f"{r['stop_reason']} -- **{r['stale']}**" if r.get("stale") else r["stop_reason"]
            epochs = "– (no training)" if r["best_epoch"] is None and not r["epochs_run"] else f"{r['best_epoch']}/{r['epochs_run']}"
            lines.append(f"| {m} | {r['seed']} | {epochs} | {stop} | {wall} |")
    lines += [""] + unfinished_markdown(d)
    commands = [r["command"] for m in models for r in d["models"][m]["runs"] if r["command"]]
    if commands:
        lines += ["Commands:", ""] + [f"- `{c}`" for c in commands] + [""]
    return lines


def unfinished_markdown(d: dict[str, Any]) -> list[str]:
    """The cells that started but have not finished: in no table above, and where their curves stand."""
    if not d.get("unfinished"):
        return []
    lines = ["Not finished (in none of the tables above; `benchmark run` resumes them):", "",
             "| model | seed | epochs logged | best valid N@10 so far (epoch) |", "|---|---|---|---|"]
    for u in d["unfinished"]:
        best = "–" if u["best_valid"] is None else f"{u['best_valid']:.4f} ({u['best_epoch']})"
        lines.append(f"| {u['model']} | {u['seed']} | {u['epochs_logged']} | {best} |")
    return lines + [""]


def render_markdown(result: dict[str, Any], title: str | None = None, note: str = "") -> str:
    """The whole report as markdown: a title, ``note`` (a paragraph: machine, load, ...), one section per dataset."""
    lines = [f"# {title or 'Benchmark: ' + Path(result['runs']).name}", ""] + ([note, ""] if note else [])
    for ds, d in result["datasets"].items():
        lines += dataset_markdown(ds, d, result["alpha"])
    return "\n".join(lines)


# ------------------------------------------------------------------ curves
def plot_curves(result: dict[str, Any], dataset: str, out_png: str | os.PathLike, metric: str = "ndcg@10",
                title: str | None = None) -> Path:
    """One figure: validation ``metric`` per epoch of every model (one colour) and seed (one line style);
    ``title`` (the report's) heads it, so the PNG names its experiment when opened on its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from unisrec.evaluation.plots import read_training_log

    styles = ["-", "--", ":", "-."]
    models = result["curves"][dataset]
    runs = sum(len(logs) for logs in models.values())
    legend_cols = 0 if runs <= 8 else 1 + runs // 25  # many runs: the legend goes beside the axes
    fig, ax = plt.subplots(figsize=(7.5 + 2.3 * legend_cols, 4.5), dpi=110)
    if title:
        fig.suptitle(fill_title(title, 90 + 28 * legend_cols), fontsize=9)
    colours = plt.get_cmap("tab10" if len(models) <= 10 else "tab20").colors
    drawn = 0
    for i, (label, logs) in enumerate(models.items()):
        for j, run in enumerate(logs):
            rows = [r for r in read_training_log(Path(run["log"]).parent) if metric in (r.get("valid") or {})]
            if not rows:
                continue
            x, y = [r["epoch"] for r in rows], [r["valid"][metric] for r in rows]
            ax.plot(x, y, styles[j % len(styles)], color=colours[i % len(colours)], lw=1.4,
                    label=f"{label}, seed {run['seed']}" + ("" if run["finished"] else " (unfinished)"))
            b = int(np.argmax(y))
            ax.plot([x[b]], [y[b]], "o", color=colours[i % len(colours)], ms=4)
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise UserError(f"{dataset}: no training_log.jsonl with validation {metric} to plot")
    pretty = metric.replace("ndcg", "NDCG").replace("recall", "Recall")
    ax.set_title(f"{dataset}: validation {pretty} per epoch (dot = best epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {pretty}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if legend_cols:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=legend_cols, frameon=False)
    else:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, bbox_inches="tight")
    plt.close(fig)
    return out_png


BAR_METRICS: tuple[str, ...] = ("recall@10", "ndcg@10")


def fill_title(title: str, width: int) -> str:
    """A report title wrapped onto lines of at most ``width`` characters, for a figure's heading."""
    import textwrap

    return "\n".join(textwrap.wrap(title, width))


def bars_figure(result: dict[str, Any], metrics: tuple[str, ...] = BAR_METRICS, title: str | None = None):
    """The paper's Fig. 2 / Fig. 3 layout: one panel per dataset, one group of bars per metric, one
    bar per model (its mean over finished seeds; whisker = sample std, dots = the seeds), the number
    of seeds behind each bar in the legend, ``title`` (the report's) above. Returns the matplotlib
    figure (the caller saves it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [ds for ds, d in result["datasets"].items() if d["models"]]
    if not datasets:
        raise UserError("no finished runs to plot")
    most = max(len(result["datasets"][ds]["models"]) for ds in datasets)
    colours = plt.get_cmap("tab10" if most <= 10 else "tab20").colors
    panel_width = min(12.0, max(6.5, 2.0 + 0.32 * most * len(metrics)))  # inches; wide enough for the legend
    fig, axes = plt.subplots(1, len(datasets), figsize=(panel_width * len(datasets), 5.0), dpi=110, squeeze=False)
    if title:
        fig.suptitle(fill_title(title, int(13 * panel_width * len(datasets))), fontsize=9)
    for ax, ds in zip(axes[0], datasets):
        models = result["datasets"][ds]["models"]
        width = 0.8 / len(models)
        for i, (label, m) in enumerate(models.items()):
            x = np.arange(len(metrics)) - 0.4 + width * (i + 0.5)
            means = [m["mean"][k] for k in metrics]
            stds = [m["std"][k] or 0.0 for k in metrics]
            role = {"ours": ", ours", "control": ", control"}.get(m["role"], "")
            ax.bar(x, means, width * 0.9, yerr=stds, capsize=2, color=colours[i % len(colours)],
                   hatch="//" if m["role"] == "control" else None, edgecolor="white" if m["role"] == "control" else None,
                   label=f"{label}{role} (n={len(m['seeds'])})")
            for xi, k in zip(x, metrics):
                ax.plot([xi] * len(m["seed_values"][k]), m["seed_values"][k], ".", color="black", ms=3, zorder=3)
        ax.set_xticks(np.arange(len(metrics)), [SHORT.get(k, k) for k in metrics])
        ax.set_ylabel("test value (full ranking)")
        ax.set_title(f"{ds}: mean over seeds (whisker = std, dots = seeds, n = seeds)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=max(1, min(len(models), int(panel_width / 2.2))), frameon=False)
    fig.tight_layout()
    return fig


def plot_bars(result: dict[str, Any], out_png: str | os.PathLike, metrics: tuple[str, ...] = BAR_METRICS,
              title: str | None = None) -> Path:
    """Save :func:`bars_figure` as ``out_png``."""
    import matplotlib.pyplot as plt

    fig = bars_figure(result, metrics, title)
    out_png = Path(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_report(result: dict[str, Any], stem: str | os.PathLike, title: str | None = None, note: str = "") -> list[Path]:
    """``STEM.md``, ``STEM.json``, ``STEM_DATASET_curves.png`` per dataset and ``STEM_bars.png`` (R@10 and
    N@10 of every model as grouped bars, the paper's Fig. 2 / 3 layout); returns the paths."""
    stem = Path(stem)
    if stem.suffix in (".md", ".json"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, js = stem.parent / f"{stem.name}.md", stem.parent / f"{stem.name}.json"
    text = render_markdown(result, title, note)
    pngs = []
    for ds in result["curves"]:
        png = stem.parent / f"{stem.name}_{ds}_curves.png"
        try:
            pngs.append(plot_curves(result, ds, png, title=title))
        except UserError:
            continue
    if any(d["models"] for d in result["datasets"].values()):
        pngs.append(plot_bars(result, stem.parent / f"{stem.name}_bars.png", title=title))
    if pngs:
        text += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
    md.write_text(text, encoding="utf-8")
    public = {"title": title, "note": note, **{k: v for k, v in result.items() if k != "curves"}}
    js.write_text(json.dumps(_json_safe(public), indent=2) + "\n", encoding="utf-8")
    return [md, js, *pngs]
