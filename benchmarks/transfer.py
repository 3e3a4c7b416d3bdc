"""Transfer experiments: fine-tune from a pre-trained checkpoint vs from scratch (Table 3's UniSRec rows).

For every target x mode (inductive UniSRec_t, transductive UniSRec_t+ID) x init (scratch,
pre-trained) x seed, runs ``unisrec finetune TARGET --mode M [--from CKPT] --seed S`` into
``runs/transfer/...`` (a finished run is reused, not re-run), then writes

* ``--out``.json / .md (default results/transfer/transfer): test Recall/NDCG@10/50, mean +- std
  over seeds, beside the paper's Table 3 (docs/protocol.md, "Reference numbers");
* ``--out``_curves.png: validation NDCG@10 per epoch, scratch vs pre-trained.

    python benchmarks/transfer.py \
        --target scientific=data/scientific:ckpt/pre_games \
        --target online_retail=data/online_retail:ckpt/pre_games_sci \
        --seeds 2020 2021 2022 --time-limit-minutes 4 -- --batch-size 2048

Arguments after ``--`` go to every ``unisrec finetune`` call (both arms alike).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import benchlib
from benchlib import METRICS

UNISREC = [sys.executable, "-m", "unisrec"]


def run_one(target_dir: str, out: Path, mode: str, seed: int, ckpt: str | None, limit: float, extra: list[str]) -> dict:
    if not (out / "metrics.json").is_file():
        cmd = [*UNISREC, "finetune", target_dir, "--output", str(out), "--mode", mode, "--seed", str(seed), "--progress", "false"]
        if limit:
            cmd += ["--time-limit-minutes", str(limit)]
        if ckpt:
            cmd += ["--from", ckpt]
        if (out / "resume").exists():
            cmd.append("--resume")
        cmd += extra
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    log = benchlib.read_jsonl(out / "training_log.jsonl")
    return {"metrics": metrics, "curve": [(r["epoch"], r["valid"]["ndcg@10"]) for r in log]}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", required=True, metavar="NAME=DIR:CKPT")
    ap.add_argument("--modes", nargs="+", default=["inductive", "transductive"])
    ap.add_argument("--inits", nargs="+", default=["scratch", "pretrained"], help="which arms to run / report")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    ap.add_argument("--time-limit-minutes", type=float, default=0.0)
    ap.add_argument("--runs", default="runs/transfer")
    ap.add_argument("--out", default=str(benchlib.RESULTS / "transfer" / "transfer"), help="output prefix (.json, .md, _curves.png)")
    ap.add_argument("--only-report", action="store_true", help="aggregate finished runs, start none")
    args = ap.parse_args(argv)

    rows, curves = [], {}
    for spec in args.target:
        name, rest = spec.split("=", 1)
        target_dir, ckpt = rest.rsplit(":", 1)
        for mode in args.modes:
            for init, ck in (("pretrained", ckpt), ("scratch", None)):
                if init not in args.inits:
                    continue
                results = []
                for seed in args.seeds:
                    out = Path(args.runs) / name / mode / init / f"seed{seed}"
                    if args.only_report and not (out / "metrics.json").is_file():
                        continue
                    r = run_one(target_dir, out, mode, seed, ck, args.time_limit_minutes, extra)
                    results.append(r)
                    curves[(name, mode, init, seed)] = r["curve"]
                if results:
                    rows.append(summarise(name, mode, init, ck, results))
            # variants run by hand into the same tree (e.g. --unfreeze-all, an untrained checkpoint): report only
            mode_dir = Path(args.runs) / name / mode
            for arm in sorted(p.name for p in mode_dir.glob("*") if p.is_dir() and p.name not in ("scratch", "pretrained")):
                results = []
                for seed_dir in sorted((mode_dir / arm).glob("seed*")):
                    if (seed_dir / "metrics.json").is_file():
                        r = run_one(target_dir, seed_dir, mode, 0, None, 0, [])
                        results.append(r)
                        curves[(name, mode, arm, int(seed_dir.name[4:]))] = r["curve"]
                if results:
                    rows.append(summarise(name, mode, arm, None, results))
    write_report(args, extra, rows, curves)


def summarise(name: str, mode: str, init: str, ck: str | None, results: list[dict]) -> dict:
    row = {"target": name, "mode": mode, "init": init, "checkpoint": ck and benchlib.display_path(ck), "seeds": len(results)}
    for m in METRICS:
        row[m] = benchlib.mean_std([r["metrics"]["test"][m] for r in results])
    row["epochs_run"] = [r["metrics"]["epochs_run"] for r in results]
    row["best_epoch"] = [r["metrics"]["best_epoch"] for r in results]
    row["stop_reason"] = sorted({r["metrics"]["stop_reason"] for r in results})
    row["median_epoch_seconds"] = statistics.median(r["metrics"]["median_epoch_seconds"] for r in results)
    print(json.dumps(row), flush=True)
    return row


def write_report(args: argparse.Namespace, extra: list[str], rows: list[dict], curves: dict) -> None:
    out = Path(args.out)
    report = {"finetune_args": extra, "time_limit_minutes": args.time_limit_minutes, "seeds": args.seeds, "rows": rows,
              "machine": f"{os.cpu_count()} shared CPU cores"}
    md = [
        "# Transfer: pre-trained vs from scratch (test set, mean ± std over seeds)",
        "",
        f"Fine-tuning: `unisrec finetune` defaults {' '.join(extra)}"
        + (f", time limit {args.time_limit_minutes} min per run" if args.time_limit_minutes else "")
        + f"; seeds {', '.join(map(str, args.seeds))}. Paper = Table 3 (BERT features, 14M-interaction pre-training).",
        "",
        "| target | model | init | seeds | R@10 | N@10 | R@50 | N@50 | epochs (best) | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(benchlib.fmt_mean_std(*r[m]) for m in METRICS)
        eps = ", ".join(f"{e} ({b})" for e, b in zip(r["epochs_run"], r["best_epoch"]))
        md.append(f"| {r['target']} | {r['mode']} | {r['init']} | {r['seeds']} | {cells} | {eps} | {r['median_epoch_seconds']:.0f} |")
    for t, m in dict.fromkeys((r["target"], r["mode"]) for r in rows):
        vals = benchlib.paper_row(t, m)
        if vals:
            md.append(f"| {t} | {m} | paper | | " + " | ".join(f"{v:.4f}" for v in vals) + " | | |")
    md += ["", f"Reproduce: `{benchlib.reproduce_command(__file__)}`", ""]
    benchlib.write_result(out, report, md)
    plot_curves(curves, out.with_name(out.name + "_curves.png"))


def plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = sorted({(t, m) for t, m, _, _ in curves})
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (t, m) in zip(axes[0], panels):
        for (t2, m2, init, seed), pts in sorted(curves.items()):
            if (t2, m2) != (t, m) or not pts:
                continue
            xs, ys = zip(*pts)
            color = {"scratch": "tab:blue", "pretrained": "tab:red", "frozen_untrained": "tab:gray"}.get(init, "tab:green")
            ax.plot(xs, ys, color=color, marker="o", alpha=0.8,
                    label=init if seed == min(s for (a, b, c, s) in curves if (a, b, c) == (t, m, init)) else None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{t} / {m}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid NDCG@10")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
