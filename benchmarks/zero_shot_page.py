"""Zero-shot transfer (the paper's "w/o fine-tuning", issue 15): pre-training checkpoints ranking
other domains by item text alone, beside the same architecture untrained and beside popularity.

For every ``--checkpoint LABEL=DIR`` and every ``--dataset NAME=DIR``, the checkpoint ranks the
dataset's test users' targets over its whole catalogue (`unisrec evaluate DIR --dataset DATASET`:
the inductive UniSRec is handed the dataset's text vectors; nothing of the dataset is trained on).
Popularity (`unisrec evaluate --popularity`) is the floor. ``--finetuned NAME=ARCHIVE_CELL_DIR``
(repeatable, also for one dataset) adds a fine-tuned model's archived test ranks for comparison
(seeds averaged per user). Each checkpoint is tested against the first one (``--checkpoint`` order)
with the paired one-sided t-test of `unisrec benchmark` (per test user, p < 0.01 marked).

    python benchmarks/zero_shot_page.py \\
        --checkpoint 'Games, 8 epochs=runs/pretrain/games/full/seed2020' \\
        --checkpoint 'untrained=runs/pretrain_untrained/games' \\
        --dataset 'scientific=$UNISREC_DATA/scientific' --dataset 'games (in-domain)=$UNISREC_DATA/games' \\
        --out results/analyses/zero_shot
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import benchlib

METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
SHORT = {"recall@10": "R@10", "ndcg@10": "N@10", "recall@50": "R@50", "ndcg@50": "N@50"}


def pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        label, sep, path = v.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"{flag} {v!r}: expected LABEL=PATH")
        out.append((label, os.path.expandvars(path)))
    return out


def checkpoint_ranks(ckpt: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Test ranks of ``dataset``'s users under checkpoint ``ckpt`` (zero-shot, by item text) and, from
    the same scoring pass, its exposure: how many test users get each item in their top 10."""
    from unisrec.evaluation.cli import load_for_evaluation
    from unisrec.evaluation.longtail import split_ranks

    model, ds, dev = load_for_evaluation(ckpt, dataset, "cpu")
    ranks, _, exposure = split_ranks(model, ds, "test", 1024, dev)
    return ranks, exposure


def archive_label(model_dir: Path) -> str:
    """The spec's label of an archive's ``DATASET/MODEL`` folder (``UniSRec_t_(pre-trained)`` ->
    ``UniSRec_t (pre-trained)``), from the archive's benchmark.json; the folder name otherwise."""
    summary = model_dir.parent.parent / "benchmark.json"
    if summary.is_file():
        models = json.loads(summary.read_text()).get("spec", {}).get("models", {})
        for label, entry in models.items():
            if entry.get("folder", label) == model_dir.name:
                return label
    return model_dir.name


def checkpoint_facts(ckpt: str) -> dict:
    """How much pre-training a checkpoint had: epochs, steps, batch, last loss (its done.json / config)."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    pre = cfg.get("pretraining") or {}
    run = pre.get("config") or {}
    done = json.loads((Path(ckpt) / "done.json").read_text()) if (Path(ckpt) / "done.json").is_file() else {}
    log = Path(ckpt) / "training_log.jsonl"
    last = benchlib.read_jsonl(log)[-1] if log.is_file() else {}
    return {"batch_size": run.get("batch_size"), "lr": run.get("lr"), "epochs_done": pre.get("epochs_done"),
            "steps": pre.get("global_step"), "last_loss": done.get("last_epoch_loss", last.get("loss")),
            "domains": [d.get("name", "?") for d in pre.get("domains", [])]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=DIR")
    p.add_argument("--dataset", action="append", required=True, metavar="NAME=DIR")
    p.add_argument("--finetuned", action="append", default=[], metavar="NAME=ARCHIVE_MODEL_DIR",
                   help="DATASET_NAME=an archive's DATASET/MODEL folder (its seed*/test_ranks.npy): a fine-tuned row on that dataset")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default="")
    p.add_argument("--out", default="results/analyses/zero_shot")
    args = p.parse_args(argv)
    import torch

    from unisrec.benchmark.significance import compare, per_user_metric
    from unisrec.data.dataset import Dataset
    from unisrec.evaluation.longtail import mean_recommended_popularity
    from unisrec.evaluation.metrics import metrics_from_ranks
    from unisrec.models.popularity import popularity_counts, popularity_exposure, popularity_ranks

    torch.set_num_threads(args.threads)
    ckpts, datasets = pairs(args.checkpoint, "--checkpoint"), pairs(args.dataset, "--dataset")
    finetuned: dict[str, list[str]] = {}
    for name, path in pairs(args.finetuned, "--finetuned"):
        finetuned.setdefault(name, []).append(path)
    result: dict = {"checkpoints": {label: {"dir": benchlib.display_path(d), **checkpoint_facts(d)} for label, d in ckpts},
                    "datasets": {}}
    for name, ds_dir in datasets:
        t0 = time.time()
        ds = Dataset.load(ds_dir)
        counts = popularity_counts(ds)
        scored = {label: checkpoint_ranks(d, ds_dir) for label, d in ckpts}
        ranks = {label: r for label, (r, _) in scored.items()}
        top10_pop = {label: mean_recommended_popularity(e, counts) for label, (_, e) in scored.items()}
        ranks["popularity"] = popularity_ranks(ds, "test")
        top10_pop["popularity"] = mean_recommended_popularity(popularity_exposure(ds, "test"), counts)
        per_user = {label: {k: per_user_metric(r, k) for k in METRICS} for label, r in ranks.items()}
        rows = {label: metrics_from_ranks(r) for label, r in ranks.items()}
        seeds = {}
        for cell in finetuned.get(name, []):
            seed_ranks = sorted(Path(cell).glob("seed*/test_ranks.npy"))
            if not seed_ranks:
                raise SystemExit(f"--finetuned {name}={cell}: no seed*/test_ranks.npy there")
            label = f"fine-tuned ({archive_label(Path(cell))})"
            seeds[label] = [int(f.parent.name[4:]) for f in seed_ranks]
            loaded = [np.load(f) for f in seed_ranks]
            per_user[label] = {k: np.mean([per_user_metric(r, k) for r in loaded], axis=0) for k in METRICS}
            rows[label] = {k: float(per_user[label][k].mean()) for k in METRICS}
            exposures = [np.load(f.with_name("test_exposure.npy")) for f in seed_ranks if f.with_name("test_exposure.npy").is_file()]
            if exposures:  # cells trained before exposure was saved have none (docs/analyses.md)
                top10_pop[label] = float(np.mean([mean_recommended_popularity(e, counts) for e in exposures]))
        first = ckpts[0][0]
        tests = [{**compare(first, per_user[first][k], other, per_user[other][k]), "metric": k}
                 for other in per_user if other != first for k in ("recall@10", "ndcg@10")]
        target_pop = float(counts[ds.examples("test", 1)[2]].mean())
        result["datasets"][name] = {"dir": benchlib.display_path(ds_dir), "rows": rows, "tests": tests,
                                    "top10_popularity": top10_pop, "target_popularity": target_pop,
                                    "test_users": int(len(ranks["popularity"])), "finetuned_seeds": seeds,
                                    "seconds": time.time() - t0}
        print(f"{name}: " + "; ".join(f"{k} {v['recall@10']:.4f}" for k, v in rows.items()), flush=True)

    md = ["# Zero-shot transfer: pre-trained checkpoints ranking other domains by item text", ""]
    if args.note:
        md += [args.note, ""]
    md += ["Checkpoints (`unisrec pretrain` outputs; evaluated as `unisrec evaluate DIR --dataset DATASET`):", "",
           "| checkpoint | folder | pre-training domains | batch | lr | epochs | steps | last loss |", "|---|---|---|---|---|---|---|---|"]
    for label, c in result["checkpoints"].items():
        loss = f"{c['last_loss']:.4f}" if isinstance(c["last_loss"], (int, float)) else "–"
        md.append(f"| {label} | `{c['dir']}` | {', '.join(c['domains']) or '–'} | {c['batch_size']} | {c['lr']} | "
                  f"{c['epochs_done']:.2f} | {c['steps']} | {loss} |")
    for name, d in result["datasets"].items():
        pop = d["rows"]["popularity"]["recall@10"]
        md += ["", f"## {name} (`{d['dir']}`, {d['test_users']:,} test users, full ranking)", "",
               "| ranking | " + " | ".join(SHORT[k] for k in METRICS) + " | R@10 / popularity's | popularity of its top 10 |",
               "|---|" + "---|" * (len(METRICS) + 2)]
        for label, row in d["rows"].items():
            n = len(d["finetuned_seeds"].get(label, []))
            extra = f" ({n} seed{'s' * (n != 1)})" if n else ""
            tp = d["top10_popularity"].get(label)
            md.append(f"| {label}{extra} | " + " | ".join(f"{row[k]:.4f}" for k in METRICS) + f" | {row['recall@10'] / pop:.2f}x | "
                      + ("–" if tp is None else f"{tp:.1f}") + " |")
        md += ["", f"Popularity of its top 10 = mean training-part interaction count of the 10 items a ranking puts first, "
               f"over all test users (ARP; popularity: the 10 most-bought items; a fine-tuned row: its cells' test_exposure.npy, "
               f"'–' for cells trained before it was saved); a test target's is {d['target_popularity']:.1f} on average."]
        md += ["", f"Paired one-sided t-tests against {ckpts[0][0]} (per test user; p < 0.01 = significant):", "",
               "| metric | better | worse | mean better | mean worse | p | p < 0.01 |", "|---|---|---|---|---|---|---|"]
        for t in d["tests"]:
            md.append(f"| {SHORT[t['metric']]} | {t['better']} | {t['worse']} | {t['mean_better']:.4f} | {t['mean_worse']:.4f} | "
                      f"{t['p']:.2e} | {'yes' if t['significant'] else 'no'} |")
    md += ["", f"Command: `{benchlib.reproduce_command(__file__, argv)}`"]
    benchlib.write_result(args.out, result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
