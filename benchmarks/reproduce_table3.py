"""Reproduce the from-scratch rows of Table 3: SASRec, UniSRec_t+ID and UniSRec_t per dataset.

    python benchmarks/reproduce_table3.py --datasets scientific --seeds 2020,2021,2022 \
        --data-root data --device cpu --threads 1

Each (dataset, model, seed) run trains with the library's API (``train_sasrec`` / ``finetune``) in
its own subprocess and writes a model directory under ``--runs``. A finished run (metrics.json) is
reused and an interrupted one resumed, so the script can be re-run to add seeds or collect
results. Aggregates (mean +- sample std over seeds of test R@10, N@10, R@50, N@50, beside the
paper's numbers, from docs/protocol.md) go to ``--out``.json / .md (default
results/table3/table3). ``--data-root`` defaults to ``$UNISREC_DATA``, else ``data/``. Only numpy,
torch, pyarrow, safetensors, tqdm and pyyaml are needed (no orjson / fastapi / uvicorn / openpyxl),
so it runs on a bare GPU box (there with ``PYTHONPATH=src``, as the benchmarks/gpu_*.sh scripts set).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import benchlib
from benchlib import METRICS, ROOT

MODELS = {
    "sasrec": ("SASRec", "unisrec train sasrec {data} --output {out} --seed {seed}"),
    "unisrec_t_id": ("UniSRec_t+ID (scratch)", "unisrec finetune {data} --mode transductive --output {out} --seed {seed}"),
    "unisrec_t": ("UniSRec_t (scratch)", "unisrec finetune {data} --mode inductive --output {out} --seed {seed}"),
}


def run_one(data: Path, model: str, seed: int, out: Path, opts: dict, init_from: str = "") -> dict:
    """Train one model (in this process) and return its metrics.json content.

    ``init_from``: a pre-trained checkpoint dir for the UniSRec models (transfer rows, `--from`)."""
    from unisrec.training.finetune import FinetuneConfig, finetune, train_sasrec

    cfg = FinetuneConfig(seed=seed, progress=False, **opts)
    resume = (out / "resume" / "state.json").is_file()
    if model == "sasrec":
        return train_sasrec(data, out, cfg, resume=resume)
    cfg.mode = "transductive" if model == "unisrec_t_id" else "inductive"
    return finetune(data, out, cfg, pretrained=init_from or None, resume=resume)


def command_line(data: Path, model: str, seed: int, out: Path, opts: dict, init_from: str = "") -> str:
    cmd = MODELS[model][1].format(data=benchlib.display_path(data), out=benchlib.display_path(out), seed=seed)
    if init_from:
        cmd += f" --from {benchlib.display_path(init_from)}"
    for k, v in opts.items():
        if k == "progress":
            continue
        cmd += f" --{k.replace('_', '-')} {v}"
    return cmd


def label(model: str, init_from: str) -> str:
    name = MODELS[model][0]
    return name.replace("(scratch)", f"(pre-trained: {Path(init_from).name})") if init_from else name


def summarise(rows: list[dict], args: argparse.Namespace) -> tuple[dict, str]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    summary = []
    lines = [
        ("# Table 3, transfer rows (fine-tuned from " + benchlib.display_path(args.init_from) + "): measured beside the paper" if args.init_from
         else "# Table 3, from-scratch rows: measured beside the paper"),
        "",
        "Test set, full ranking over all items (history items kept, padding excluded), leave-one-out.",
        f"Mean ± sample std over seeds. Device: {args.device}. Text features: each dataset's default feature set "
        "(offline all-MiniLM-L6-v2, 384-d; the paper used bert-base-uncased, 768-d).",
        *([args.note, ""] if args.note else []),
        "",
        "| dataset | model | seeds | R@10 | N@10 | R@50 | N@50 | paper R@10 / N@10 / R@50 / N@50 | R@10 vs paper | N@10 vs paper | best / run epochs | wall min / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (ds, model), rs in sorted(groups.items()):
        vals = {m: [r["metrics"]["test"][m] for r in rs] for m in METRICS}
        paper = benchlib.paper_row(ds, model)  # "_shuffled": the same data in another tie order
        stats = {m: benchlib.mean_std(v) for m, v in vals.items()}
        rel = {m: stats[m][0] / p - 1 for m, p in zip(METRICS, paper)} if paper else {}
        entry = {
            "dataset": ds,
            "model": model,
            "seeds": [r["seed"] for r in rs],
            "mean": {m: s[0] for m, s in stats.items()},
            "std": {m: s[1] for m, s in stats.items()},
            "paper": dict(zip(METRICS, paper)) if paper else None,
            "relative_to_paper": rel,
            "best_epochs": [r["metrics"]["best_epoch"] for r in rs],
            "epochs_run": [r["metrics"]["epochs_run"] for r in rs],
            "stop_reasons": [r["metrics"]["stop_reason"] for r in rs],
            "wall_seconds": [r["metrics"]["wall_seconds"] for r in rs],
            "median_epoch_seconds": [r["metrics"]["median_epoch_seconds"] for r in rs],
            "commands": [r["command"] for r in rs],
        }
        summary.append(entry)
        stops = "" if all(s == "early_stopping" for s in entry["stop_reasons"]) else (
            " (" + ", ".join("early-stopped" if s == "early_stopping" else "TRUNCATED, not early-stopped" for s in entry["stop_reasons"]) + ")")
        lines.append(
            f"| {ds} | {label(model, args.init_from)} | {len(rs)} | "
            + " | ".join(benchlib.fmt_values(vals[m]) for m in METRICS)
            + " | " + (" / ".join(f"{p:.4f}" for p in paper) if paper else "-")
            + " | " + (f"{rel['recall@10']:+.1%}" if rel else "-")
            + " | " + (f"{rel['ndcg@10']:+.1%}" if rel else "-")
            + " | " + ", ".join(f"{b}/{e}" for b, e in zip(entry["best_epochs"], entry["epochs_run"])) + stops
            + f" | {benchlib.mean_std(entry['wall_seconds'])[0] / 60:.1f} |"
        )
    lines += ["", "Commands (one per run; `--threads`/`--device` only change speed):", ""]
    for r in rows:
        lines.append(f"- `{r['command']}`")
    lines.append("")
    return {"rows": summary, "runs": rows, "device": args.device}, "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="scientific,online_retail")
    p.add_argument("--models", default="sasrec,unisrec_t_id,unisrec_t")
    p.add_argument("--seeds", default="2020,2021,2022")
    p.add_argument("--data-root", default=str(benchlib.data_root()),
                   help="folder holding one prepared+encoded dataset dir per name (default: $UNISREC_DATA, else data/)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "table3"), help="where model directories go")
    p.add_argument("--out", default=str(benchlib.RESULTS / "table3" / "table3"), help="output prefix (.json and .md)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0 = default)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once (subprocesses), e.g. 9 on one GPU")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--time-limit-minutes", type=float, default=0.0, help="per-run training wall-time cap (0 = none)")
    p.add_argument("--every-position", action="store_true")
    p.add_argument("--collect-only", action="store_true", help="only aggregate finished runs")
    p.add_argument("--note", default="", help="a sentence for the markdown (machine, load, ...)")
    p.add_argument("--finalize", action="store_true",
                   help="stop waiting: test every interrupted run at its best epoch so far (marked truncated)")
    p.add_argument("--init-from", default="", help="pre-trained checkpoint dir: UniSRec rows fine-tune from it (transfer)")
    p.add_argument("--worker", nargs=3, metavar=("DATASET", "MODEL", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()

    opts = {"device": args.device, "epochs": args.epochs}
    if args.threads:
        opts["threads"] = args.threads
    if args.time_limit_minutes:
        opts["time_limit_minutes"] = args.time_limit_minutes
    if args.every_position:
        opts["every_position"] = True

    if args.worker:
        ds, model, seed = args.worker
        out = Path(args.runs) / ds / model / f"seed{seed}"
        run_one(Path(args.data_root) / ds, model, int(seed), out, opts, args.init_from)
        return 0

    jobs = []
    for ds in args.datasets.split(","):
        data = Path(args.data_root) / ds
        for model in args.models.split(","):
            if model not in MODELS:
                p.error(f"unknown model {model}; known: {', '.join(MODELS)}")
            if model == "sasrec" and args.init_from:
                p.error("--init-from applies to the UniSRec models only")
            for seed in args.seeds.split(","):
                jobs.append((ds, data, model, int(seed), Path(args.runs) / ds / model / f"seed{seed}"))

    todo = [j for j in jobs if not (j[4] / "metrics.json").is_file()]
    if args.finalize:
        for ds, data, model, seed, out in todo:
            state = out / "resume" / "state.json"
            if state.is_file():
                done = json.loads(state.read_text())["epoch"]
                print(f"finalize {ds} {model} seed {seed} after {done} epochs", flush=True)
                run_one(data, model, seed, out, dict(opts, epochs=done), args.init_from)
        args.collect_only = True
    if not args.collect_only and todo:
        running: list[tuple[subprocess.Popen, tuple]] = []
        pending = list(todo)
        while pending or running:
            while pending and len(running) < args.parallel:
                ds, data, model, seed, out = job = pending.pop(0)
                if not (data / "manifest.json").is_file():
                    print(f"skip {ds}: {data} is not a prepared dataset", file=sys.stderr)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, __file__, "--worker", ds, model, str(seed), "--data-root", args.data_root,
                       "--runs", args.runs, "--device", args.device, "--epochs", str(args.epochs),
                       "--threads", str(args.threads), "--time-limit-minutes", str(args.time_limit_minutes)]
                if args.every_position:
                    cmd.append("--every-position")
                if args.init_from:
                    cmd += ["--init-from", args.init_from]
                log = open(out.parent / f"seed{seed}.log", "a")
                print(f"start {ds} {model} seed {seed} -> {out}", flush=True)
                running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), job))
            time.sleep(2)
            for proc, job in list(running):
                if proc.poll() is not None:
                    running.remove((proc, job))
                    print(f"done  {job[0]} {job[2]} seed {job[3]} (exit {proc.returncode})", flush=True)

    rows = []
    for ds, data, model, seed, out in jobs:
        f = out / "metrics.json"
        if f.is_file():
            rows.append({"dataset": ds, "model": model, "seed": seed, "metrics": json.loads(f.read_text()),
                         "command": command_line(data, model, seed, out, {k: v for k, v in opts.items() if k != "threads"}, args.init_from)})
    if not rows:
        print("no finished runs", file=sys.stderr)
        return 1
    summary, md = summarise(rows, args)
    benchlib.write_result(args.out, summary, md, sort_keys=True)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
