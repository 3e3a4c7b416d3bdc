"""Table 3's from-scratch rows (SASRec, UniSRec_t+ID, UniSRec_t) through the benchmark harness.

    python benchmarks/reproduce_table3.py --datasets scientific --seeds 2020,2021,2022 --threads 1

A thin shell over `unisrec benchmark` (src/unisrec/benchmark/, docs/benchmark.md) kept for the
GPU scripts (benchmarks/gpu_*.sh) and their flags: it builds a spec from the flags, runs the cells
into ``--runs/DATASET/MODEL/seedN/`` (finished cells reused, interrupted ones resumed) and writes
the harness report to ``--out``.md / .json / _DATASET_curves.png. For anything else write a spec
(configs/benchmarks/*.yaml) and use `unisrec benchmark run` / `unisrec benchmark report`.
Model folders keep this script's old names (``sasrec``, ``unisrec_t_id``, ``unisrec_t``), so run
trees written before the harness are picked up. ``--data-root`` defaults to ``$UNISREC_DATA``,
else ``data/``. Training needs only numpy, torch, pyarrow, safetensors, tqdm and pyyaml; the report
also needs scipy and matplotlib (without them the runs finish and the report is skipped, to be
made elsewhere with `unisrec benchmark report RUNS`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import benchlib
from benchlib import ROOT

from unisrec.benchmark.report import build_report, write_report
from unisrec.benchmark.runner import run_benchmark
from unisrec.benchmark.spec import spec_from_dict

# this script's model names (run folders) -> the harness's model entry
MODELS = {
    "sasrec": {"model": "sasrec", "paper": "sasrec"},
    "unisrec_t_id": {"model": "finetune", "mode": "transductive", "paper": "unisrec_t_id"},
    "unisrec_t": {"model": "finetune", "mode": "inductive", "paper": "unisrec_t"},
}


def build_spec(args: argparse.Namespace) -> dict:
    options: dict = {"device": args.device, "epochs": args.epochs}
    if args.time_limit_minutes:
        options["time_limit_minutes"] = args.time_limit_minutes
    if args.every_position:
        options["batching"] = "every-position"
    models = {}
    for name in args.models.split(","):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name}; known: {', '.join(MODELS)}")
        if name == "sasrec" and args.init_from:
            raise SystemExit("--init-from applies to the UniSRec models only")
        entry = dict(MODELS[name])
        if args.init_from and entry["model"] == "finetune":
            entry["from"] = args.init_from
        models[name] = entry
    return {
        "name": "table3",
        "datasets": {d: str(Path(args.data_root) / d) for d in args.datasets.split(",")},
        "seeds": [int(s) for s in args.seeds.split(",")],
        "options": options,
        "models": models,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="scientific,online_retail")
    p.add_argument("--models", default="sasrec,unisrec_t_id,unisrec_t")
    p.add_argument("--seeds", default="2020,2021,2022")
    p.add_argument("--data-root", default=str(benchlib.data_root()),
                   help="folder holding one prepared+encoded dataset dir per name (default: $UNISREC_DATA, else data/)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "table3"), help="where model directories go")
    p.add_argument("--out", default=str(benchlib.RESULTS / "table3" / "table3"), help="report prefix (.md, .json, _DATASET_curves.png)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0 = default)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once (subprocesses), e.g. 9 on one GPU")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--time-limit-minutes", type=float, default=0.0, help="per-run training wall-time cap (0 = none)")
    p.add_argument("--every-position", action="store_true")
    p.add_argument("--collect-only", action="store_true", help="only report finished runs")
    p.add_argument("--note", default="", help="a sentence for the markdown (machine, load, ...)")
    p.add_argument("--finalize", action="store_true",
                   help="stop waiting: test every interrupted run at its best epoch so far (marked truncated)")
    p.add_argument("--init-from", default="", help="pre-trained checkpoint dir: UniSRec rows fine-tune from it (transfer)")
    args = p.parse_args()

    spec = spec_from_dict(build_spec(args))
    run_benchmark(spec, args.runs, threads=args.threads or None, parallel=args.parallel, finalize=args.finalize,
                  collect_only=args.collect_only)
    try:
        result = build_report(args.runs)
    except ImportError as exc:  # a bare GPU box without scipy / matplotlib
        print(f"runs done; no report here ({exc}): run `unisrec benchmark report {args.runs}` elsewhere", file=sys.stderr)
        return 0
    title = ("Table 3, transfer rows (fine-tuned from " + benchlib.display_path(args.init_from) + ")" if args.init_from
             else "Table 3, from-scratch rows: measured beside the paper")
    for path in write_report(result, args.out, title, args.note):
        print(f"wrote {benchlib.display_path(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
