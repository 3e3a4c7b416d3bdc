"""Table 3's two text-pre-trained baselines in detail: S3-Rec's pre-training stage and ZESRec's
source stage, zero-shot transfer and fine-tuning, beside the controls that explain their numbers.

Reads the benchmark archives (``unisrec benchmark archive``; nothing is trained here):

* the target campaign (default ``results/table3/cells_scientific``): the cells ``S3-Rec``,
  ``ZESRec`` (fine-tuned from the source-trained model), ``ZESRec-scratch`` (the same model trained
  on the target alone) and ``SASRec``, per seed;
* the source campaign (default ``results/table3/cells_zesrec_source``, from
  ``configs/benchmarks/zesrec_source.yaml``): ZESRec trained on Games.

``--source-model DIR`` (the source cell's model directory, in ``runs/``) also evaluates it
zero-shot on ``--dataset``'s test users by item text alone, and popularity beside it; without it,
the zero-shot numbers of the previous page (its JSON) are kept. ``--s3rec-stage [LABEL=]DIR``
(repeatable: an S3-Rec run's ``pretrain/`` folder, in ``runs/``, whose resume state holds the
pre-training heads) measures segment prediction's scores and the collapse of the encoder's outputs
before pre-training and after each stage given (:func:`s3rec_diagnostics`), e.g. the campaign's
cell beside short probes with an objective switched off; without it, the previous page's
measurement is kept. Writes ``OUT.md``, ``OUT.json``
and ``OUT.png`` (S3-Rec's pre-training losses; validation NDCG@10 of the ZESRec cells and SASRec).

    python benchmarks/s3rec_zesrec_page.py --source-model runs/zesrec_source/games/ZESRec/seed2020 \\
        --dataset $UNISREC_DATA/scientific --s3rec-stage runs/table3_scientific/scientific/S3-Rec/seed2020/pretrain \\
        --s3rec-stage "probe: no AAP=runs/s3rec_probe/noaap/pretrain"

    (a probe: unisrec train s3rec $UNISREC_DATA/scientific --output runs/s3rec_probe/noaap
     --pretrain-epochs 1 --epochs 1 --seed 2020 --aap-weight 0)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import benchlib

OBJECTIVES = ("aap", "mip", "map", "sp")  # S3-Rec's four pre-training losses, as its log names them
CELLS = ("S3-Rec", "ZESRec", "ZESRec-scratch", "SASRec")
METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")


def read_cells(archive: Path, dataset: str) -> dict[str, dict[int, dict]]:
    """label -> seed -> {"metrics", "config", "log", "stage_log", "stage_done"} of every archived cell."""
    out: dict[str, dict[int, dict]] = {}
    for label in CELLS:
        for cell in sorted((archive / dataset / label).glob("seed*")):
            if not (cell / "metrics.json").is_file():
                continue
            stage = cell / "pretrain"
            out.setdefault(label, {})[int(cell.name[4:])] = {
                "metrics": json.loads((cell / "metrics.json").read_text()),
                "config": json.loads((cell / "config.json").read_text()),
                "log": benchlib.read_jsonl(cell / "training_log.jsonl"),
                "stage_log": benchlib.read_jsonl(stage / "training_log.jsonl") if (stage / "training_log.jsonl").is_file() else [],
                "stage_done": json.loads((stage / "done.json").read_text()) if (stage / "done.json").is_file() else None,
            }
    return out


def source_cell(archive: Path) -> dict | None:
    """The ZESRec cell of the source campaign (the first dataset / seed found), or None."""
    for cell in sorted(archive.glob("*/ZESRec/seed*")):
        if (cell / "metrics.json").is_file():
            return {"dataset": cell.parent.parent.name, "seed": int(cell.name[4:]),
                    "metrics": json.loads((cell / "metrics.json").read_text()),
                    "log": benchlib.read_jsonl(cell / "training_log.jsonl")}
    return None


def zero_shot(model_dir: str, dataset: str) -> dict:
    """Test metrics of the source-trained model on ``dataset`` by item text (no target training), and popularity's."""
    from unisrec.data.dataset import Dataset
    from unisrec.evaluation.cli import evaluate_dir
    from unisrec.models.popularity import evaluate_popularity

    return {"model": benchlib.display_path(model_dir), "dataset": benchlib.display_path(dataset),
            "zero_shot": evaluate_dir(model_dir, "test", (10, 50), dataset, "cpu"),
            "popularity": evaluate_popularity(Dataset.load(dataset), "test", (10, 50))}


def untrained(dataset: str, seed: int = 2020) -> dict:
    """Test metrics of a ZESRec built for ``dataset`` exactly as its cell is (seeded, the preset's
    options) and never trained: what a random linear projection of the text vectors already ranks."""
    import torch

    from unisrec.benchmark.runner import cell_configs
    from unisrec.benchmark.spec import ModelEntry
    from unisrec.evaluation.metrics import evaluate_model
    from unisrec.models import registry
    from unisrec.training.supervised import build_model

    train, config = cell_configs(ModelEntry("ZESRec", "zesrec"), seed, threads=1)
    spec = registry.get("zesrec")
    model, ds, _, _, _ = build_model(spec, dataset, train, config)
    model.eval()
    with torch.no_grad():
        return {"seed": seed, "test": evaluate_model(model, ds, "test", (10, 50), 1024, "cpu")}


def s3rec_diagnostics(stages: list[tuple[str, str]], dataset: str, seed: int, n: int = 512) -> dict:
    """What S3-Rec's pre-training leaves, on ``n`` training histories of ``dataset``, before it (the
    cell's seeded initialisation) and after each of ``stages`` ((label, ``pretrain/`` folder): its
    last resume state, heads included):

    * SP's pair scores ``s^T W_SP s~`` (quantiles) for the masked history against its own segment
      and against another history's segment, their sigmoids, the SP loss and the median sigmoid
      slope ``sigma'(score)``, the factor every SP gradient passes through (0 = no gradient);
    * the mean pairwise cosine of the encoder's causal last-position outputs, the vector fine-tuning
      scores items with (1 = every history looks the same)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    from unisrec.benchmark.runner import cell_configs
    from unisrec.benchmark.spec import ModelEntry
    from unisrec.models import registry
    from unisrec.models.s3rec import S3RecPretrainTask, make_pretrain_batch, segment_prediction_scores
    from unisrec.training.state import current_generation
    from unisrec.training.supervised import build_model

    generations = [(label, stage, current_generation(Path(stage))) for label, stage in stages]
    for label, stage, gen in generations:
        if gen is None:
            raise SystemExit(f"--s3rec-stage {stage}: no resume state (the pre-training heads are kept only there)")
    train, config = cell_configs(ModelEntry("S3-Rec", "s3rec"), seed, threads=1)
    model, ds, _, _, _ = build_model(registry.get("s3rec"), dataset, train, config)
    task = S3RecPretrainTask(model, ds, train, torch.device("cpu"))
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(task.lens), min(n, len(task.lens)), replace=False))
    lens = task.lens[idx]
    hist = task.hist[idx, : int(lens.max())]
    batch = make_pretrain_batch(hist, lens, model.num_items, model.config.mask_ratio, rng)

    def quantiles(t: torch.Tensor) -> list[float]:
        return [round(float(v), 4) for v in torch.quantile(t, torch.tensor([0.05, 0.5, 0.95]))]

    @torch.no_grad()
    def measure() -> dict:
        task.module.eval()
        table = torch.cat([model.item_embedding.weight, task.heads.mask_embedding])

        own, other = segment_prediction_scores(*(task.last_states(s, lens, table) for s in
                                                 (batch.seg_context, batch.seg_positive, batch.seg_negative)), task.heads.sp)
        causal = F.normalize(model.sequence_representation(torch.from_numpy(hist), torch.from_numpy(lens)), dim=-1)
        cos = causal @ causal.T
        off_diagonal = (cos.sum() - cos.diagonal().sum()) / (len(lens) * (len(lens) - 1))
        return {"sp_score_own_segment": quantiles(own), "sp_score_other_segment": quantiles(other),
                "sigmoid_own": quantiles(torch.sigmoid(own)), "sigmoid_other": quantiles(torch.sigmoid(other)),
                "sp_loss": round(float(F.softplus(-(torch.sigmoid(own) - torch.sigmoid(other))).mean()), 4),
                "sp_gradient_factor_median": float((torch.sigmoid(own) * torch.sigmoid(-own)).median()),
                "own_above_other": round(float((own > other).float().mean()), 4),
                "causal_output_mean_cosine": round(float(off_diagonal), 4)}

    out = {"seed": seed, "histories": len(lens), "before_pretraining": measure(), "stages": []}
    for label, stage, gen in generations:
        task.module.load_state_dict(load_file(str(gen / "model.safetensors")))
        done = json.loads((Path(stage) / "done.json").read_text()) if (Path(stage) / "done.json").is_file() else {}
        out["stages"].append({"label": label, "stage": benchlib.display_path(stage), "epochs": done.get("epochs_run"),
                              "after": measure()})
    return out


def plateau_epochs(curve: list[float], factor: float = 1.25) -> int:
    """How many epochs a fine-tuning curve stays at its first epoch's level (none above ``factor`` x it)."""
    above = [i for i, v in enumerate(curve) if v > factor * curve[0]]
    return above[0] if above else len(curve)


def mean_of(cells: dict[int, dict], metric: str) -> tuple[float, float | None, int]:
    values = [c["metrics"]["test"][metric] for c in cells.values()]
    mean, std = benchlib.mean_std(values)
    return mean, std, len(values)


def fmt(cells: dict[int, dict] | None, metric: str) -> str:
    if not cells:
        return "not run"
    mean, std, n = mean_of(cells, metric)
    return f"{benchlib.fmt_mean_std(mean, std)} (n={n})"


def plot(cells: dict[str, dict[int, dict]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s3 = next(iter(cells.get("S3-Rec", {}).values()), None)
    if s3 is None and not any(cells.get(k) for k in ("ZESRec", "ZESRec-scratch")):
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if s3 and s3["stage_log"]:
        epochs = [r["epoch"] for r in s3["stage_log"]]
        for name in OBJECTIVES:
            left.plot(epochs, [r[name] for r in s3["stage_log"]], marker="o", label=name.upper())
        left.set_yscale("log")
        left.legend()
    left.set_title("S3-Rec pre-training on the target (seed %s)" % (next(iter(cells["S3-Rec"])) if s3 else "-"))
    left.set_xlabel("pre-training epoch")
    left.set_ylabel("loss per history (log scale)")
    for label, style in (("S3-Rec", "-."), ("ZESRec", "-"), ("ZESRec-scratch", "--"), ("SASRec", ":")):
        for seed, cell in sorted(cells.get(label, {}).items()):
            right.plot([r["epoch"] for r in cell["log"]], [r["valid"]["ndcg@10"] for r in cell["log"]], style,
                       label=f"{label} (seed {seed})")
    right.set_title("Target validation NDCG@10 per fine-tuning epoch")
    right.set_xlabel("epoch")
    right.set_ylabel("valid NDCG@10")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="results/table3/cells_scientific", help="the target campaign's archive")
    ap.add_argument("--source-cells", default="results/table3/cells_zesrec_source", help="the source campaign's archive")
    ap.add_argument("--target", default="scientific", help="the target dataset's name in the archive")
    ap.add_argument("--source-model", help="the source-trained ZESRec model directory: evaluate it zero-shot")
    ap.add_argument("--dataset", help="the target dataset folder (with --source-model)")
    ap.add_argument("--s3rec-stage", action="append", metavar="[LABEL=]DIR",
                    help="an S3-Rec run's pretrain/ folder (with its resume state): measure SP and the output collapse (repeatable)")
    ap.add_argument("--s3rec-seed", type=int, default=2020, help="the seed of that cell (its initialisation is the 'before')")
    ap.add_argument("--out", default="results/table3/s3rec_zesrec")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cells = read_cells(Path(args.cells), args.target)
    source = source_cell(Path(args.source_cells))
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    if args.source_model:
        if not args.dataset:
            ap.error("--source-model needs --dataset (the target dataset folder)")
        # "$UNISREC_DATA/scientific" may be passed quoted, so the recorded command holds no machine path
        transfer = zero_shot(os.path.expandvars(args.source_model), os.path.expandvars(args.dataset))
        transfer["untrained"] = untrained(os.path.expandvars(args.dataset))
    else:
        transfer = previous.get("zero_shot")
    if args.s3rec_stage:
        if not args.dataset:
            ap.error("--s3rec-stage needs --dataset (the target dataset folder)")
        stages = [(g.split("=", 1) if "=" in g else ("after pre-training", g)) for g in args.s3rec_stage]
        diagnostics = s3rec_diagnostics([(label, os.path.expandvars(d)) for label, d in stages], os.path.expandvars(args.dataset),
                                        args.s3rec_seed)
    else:
        diagnostics = previous.get("s3rec_diagnostics")
    paper = {m: benchlib.paper_row(args.target, m) for m in ("s3rec", "zesrec", "sasrec")}

    lines = ["# S3-Rec and ZESRec in detail: pre-training, source stage, zero-shot and controls", "",
             f"Target: {args.target}. Every fine-tuning run early-stopped on validation NDCG@10 (patience 10), "
             "test metrics at the best epoch, full ranking. Cells from the benchmark archives "
             f"`{args.cells}` and `{args.source_cells}`; the Table 3 page with the paired t-tests is "
             "`results/table3/benchmark_scientific.md`.", "",
             "## Test metrics (mean ± std over seeds)", "",
             "| model | " + " | ".join(m.replace("recall", "R").replace("ndcg", "N") for m in METRICS) + " | paper R@10 / N@10 |",
             "|---|" + "---|" * (len(METRICS) + 1)]
    paper_of = {"S3-Rec": "s3rec", "ZESRec": "zesrec", "SASRec": "sasrec"}
    for label in CELLS:
        row = paper.get(paper_of.get(label, ""))
        ref = f"{row[0]:.4f} / {row[1]:.4f}" if row else "-"
        lines.append(f"| {label} | " + " | ".join(fmt(cells.get(label), m) for m in METRICS) + f" | {ref} |")
    if transfer:
        zs, pop = transfer["zero_shot"], transfer["popularity"]
        lines.append("| ZESRec zero-shot (source model, no target training) | "
                     + " | ".join(f"{zs[m]:.4f}" for m in METRICS) + " | - |")
        lines.append("| popularity | " + " | ".join(f"{pop[m]:.4f}" for m in METRICS) + " | - |")
        if transfer.get("untrained"):
            un = transfer["untrained"]["test"]
            lines.append(f"| ZESRec untrained (seed {transfer['untrained']['seed']}: random projection, no training at all) | "
                         + " | ".join(f"{un[m]:.4f}" for m in METRICS) + " | - |")
    lines.append("")
    if transfer and transfer.get("untrained"):
        zs, pop, un = (x["recall@10"] for x in (transfer["zero_shot"], transfer["popularity"], transfer["untrained"]["test"]))
        lines += [f"Zero-shot R@10 of the Games-trained ZESRec is {zs / pop:.2f}x popularity's; the same model untrained "
                  f"ranks at {un / pop:.2f}x popularity (its random projection keeps the text vectors' similarity): "
                  + ("training on the source made the model worse on the unseen catalogue, not better." if zs < un
                     else "training on the source made the model better on the unseen catalogue."), ""]

    data: dict = {"target": args.target, "zero_shot": transfer, "s3rec_diagnostics": diagnostics, "cells": {}, "source": None}
    for label, seeds in cells.items():
        data["cells"][label] = {str(s): {"test": c["metrics"]["test"], "best_epoch": c["metrics"].get("best_epoch"),
                                         "epochs_run": c["metrics"].get("epochs_run"),
                                         "stop_reason": c["metrics"].get("stop_reason"),
                                         "median_epoch_seconds": c["metrics"].get("median_epoch_seconds"),
                                         "pretrain": c["stage_log"], "pretrain_done": c["stage_done"]}
                                for s, c in seeds.items()}

    lines += ["## S3-Rec: the pre-training stage", ""]
    data_plateau: dict[int, int] = {}
    for seed, c in sorted(cells.get("S3-Rec", {}).items()):
        asked = c["config"].get("model", {}).get("pretrain_epochs")
        ran = len(c["stage_log"])
        secs = sorted(r["seconds"] for r in c["stage_log"])
        median = secs[len(secs) // 2] if secs else float("nan")
        lines.append(f"Seed {seed}: {ran} pre-training epochs run of {asked} asked (the release ran 300), "
                     f"median {median:.0f} s per epoch (1 thread, shared machine), then fine-tuning: best epoch "
                     f"{c['metrics'].get('best_epoch')} of {c['metrics'].get('epochs_run')} "
                     f"({c['metrics'].get('stop_reason')}).")
        curve = ", ".join(f"{r['valid']['ndcg@10']:.4f}" for r in c["log"])
        lines.append(f"Its fine-tuning validation NDCG@10 per epoch: {curve}.")
        flat = plateau_epochs([r["valid"]["ndcg@10"] for r in c["log"]])
        data_plateau[seed] = flat
        lines.append(f"Epochs before fine-tuning leaves its first epoch's level (valid NDCG@10 > 1.25x epoch 1's): {flat}"
                     + (" -- it never did: the run ended at that level." if flat == len(c["log"]) else "."))
        lines += ["", "| epoch | loss | " + " | ".join(o.upper() for o in OBJECTIVES) + " | s |", "|---|---|" + "---|" * 5]
        for r in c["stage_log"]:
            lines.append(f"| {r['epoch']} | {r['loss']:.3f} | " + " | ".join(f"{r[o]:.4f}" for o in OBJECTIVES)
                         + f" | {r['seconds']:.0f} |")
        lines.append("")
    if not cells.get("S3-Rec"):
        lines += ["Not run yet.", ""]
    if diagnostics:
        before, stages = diagnostics["before_pretraining"], diagnostics["stages"]
        columns = [before] + [st["after"] for st in stages]
        lines += [f"What the pre-training leaves (seed {diagnostics['seed']}, {diagnostics['histories']} training histories; "
                  "quantiles 5% / 50% / 95%). Columns: before pre-training, then after each stage measured "
                  "(" + "; ".join(f"{st['label']}: `{st['stage']}`, {st['epochs']} epoch(s)" for st in stages) + "):", "",
                  "| | before pre-training | " + " | ".join(st["label"] for st in stages) + " |",
                  "|---|---|" + "---|" * len(stages)]
        for key, name in (("sp_score_own_segment", "SP score s^T W s~, own segment"),
                          ("sp_score_other_segment", "SP score, another history's segment"),
                          ("sigmoid_own", "sigmoid, own segment"), ("sigmoid_other", "sigmoid, other segment")):
            lines.append(f"| {name} | " + " | ".join(" / ".join(f"{v:.4g}" for v in d[key]) for d in columns) + " |")
        for key, name in (("sp_loss", "SP loss (ln 2 = 0.6931 at chance)"), ("own_above_other", "share with own > other"),
                          ("sp_gradient_factor_median", "median sigmoid slope (every SP gradient's factor)"),
                          ("causal_output_mean_cosine", "mean pairwise cosine of the causal last-position outputs")):
            lines.append(f"| {name} | " + " | ".join(f"{d[key]:.4g}" for d in columns) + " |")
        saturated = [st["label"] for st in stages if st["after"]["sp_gradient_factor_median"] < 1e-6]
        collapsed = [st["label"] for st in stages if st["after"]["causal_output_mean_cosine"] > 0.9]
        spread = [st["label"] for st in stages if st["after"]["causal_output_mean_cosine"] <= 0.9]
        text = ("SP scores each pair through a sigmoid and then takes -log sigmoid(sigmoid(own) - sigmoid(other)) "
                "(the release's form).")
        if saturated:
            text += (f" After {'; '.join(saturated)} both scores sit in the sigmoid's flat tails, so the loss is ln 2 "
                     "with no gradient: SP stopped learning, it did not converge.")
        if collapsed:
            text += (f" After {'; '.join(collapsed)} the encoder maps every history to nearly one direction (mean cosine "
                     f"> 0.9, {before['causal_output_mean_cosine']:.3f} at initialisation): fine-tuning starts from one "
                     "ranking for every user, consistent with the popularity-level plateau of its first epochs.")
        if collapsed and spread:
            text += f" After {'; '.join(spread)} it does not: the objectives switched off there are what collapses it."
        lines += ["", text, ""]

    lines += ["## ZESRec: source stage, zero-shot, fine-tuned, and trained on the target alone", ""]
    if source:
        m = source["metrics"]
        data["source"] = {"dataset": source["dataset"], "seed": source["seed"], "best_epoch": m.get("best_epoch"),
                          "epochs_run": m.get("epochs_run"), "stop_reason": m.get("stop_reason"),
                          "median_epoch_seconds": m.get("median_epoch_seconds"), "valid": [r["valid"] for r in source["log"]],
                          "test": m.get("test")}
        curve = ", ".join(f"{r['valid']['ndcg@10']:.4f}" for r in source["log"])
        lines.append(f"Source stage: ZESRec trained on {source['dataset']} (seed {source['seed']}), "
                     f"{m.get('epochs_run')} epochs ({m.get('stop_reason')}), best epoch {m.get('best_epoch')}, "
                     f"median {m.get('median_epoch_seconds', float('nan')):.0f} s per epoch; its own validation "
                     f"NDCG@10 per epoch: {curve}.")
    else:
        lines.append("Source stage: not run yet (`configs/benchmarks/zesrec_source.yaml`).")
    if transfer:
        lines.append(f"Zero-shot: `{transfer['model']}` evaluated on `{transfer['dataset']}` (test users, ranking the "
                     "target's whole catalogue by its item texts, no target interaction used for training).")
    lines += ["", f"![S3-Rec pre-training losses and ZESRec validation curves]({out.name}.png)" if cells else "", ""]

    out.parent.mkdir(parents=True, exist_ok=True)
    if plot(cells, out.with_suffix(".png")):
        data["plot"] = out.with_suffix(".png").name
    lines.append(f"Regenerate: `{benchlib.reproduce_command(__file__, sys.argv[1:] if argv is None else argv)}`")
    data["s3rec_plateau_epochs"] = {str(k): v for k, v in data_plateau.items()}
    benchlib.write_result(out, data, lines)
    print(f"wrote {out}.md, {out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
