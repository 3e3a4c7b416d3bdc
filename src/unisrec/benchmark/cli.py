"""`unisrec benchmark [run] GRID.yaml` and `unisrec benchmark report RUNS`: thin shells over
:mod:`unisrec.benchmark.runner` and :mod:`unisrec.benchmark.report` (docs/benchmark.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  unisrec benchmark run configs/benchmarks/table3_scientific.yaml --runs runs/table3_scientific --threads 1
  unisrec benchmark configs/benchmarks/table3_scientific.yaml          (the same: run is the default)
  unisrec benchmark report runs/table3_scientific --out results/table3/benchmark_scientific
  unisrec benchmark archive runs/table3_scientific --out results/table3/cells_scientific
A second `run` skips finished cells and resumes interrupted ones, so a campaign can span sittings.
`archive` keeps what a report needs (metrics, config, curve, per-user ranks; no weights) in a small tree
that can be committed, reported, and copied back to a run folder to restore a campaign on a new machine."""


def register(subparsers: argparse._SubParsersAction) -> None:
    b = subparsers.add_parser(
        "benchmark", help="run a grid of models x datasets x seeds and report it as the paper's Table 3",
        description="`run GRID.yaml`: train every (dataset, model, seed) cell of a spec into RUNS/DATASET/MODEL/seedN/ "
        "(finished cells skipped, interrupted ones resumed). `report RUNS`: the paper's Table 3 layout with "
        "per-user paired t-tests, as markdown (+ JSON and validation-curve PNGs with --out). `archive RUNS --out DIR`: "
        "copy every finished cell's metrics, config, curve and per-user ranks (no weights) into DIR, itself a run tree.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="unisrec benchmark [run] GRID.yaml [--runs DIR] [--threads N] [--parallel N] [--in-process] [--finalize] [--archive DIR]\n"
              "                         [--dry-run] [--datasets A,B] [--models LABEL,...] [--seeds S,...]\n"
              "       unisrec benchmark report RUNS_DIR [--out FILE_STEM] [--title TITLE] [--note TEXT]\n"
              "       unisrec benchmark archive RUNS_DIR --out DIR [--spec GRID.yaml] [--checkpoints]",
    )
    b.add_argument("words", nargs="+", metavar="[run|report] PATH", help="run GRID.yaml (default), report RUNS_DIR or archive RUNS_DIR")
    b.add_argument("--runs", metavar="DIR", help="run: where the cells go (default: runs/GRID_NAME)")
    b.add_argument("--threads", type=int, metavar="N", help="run: torch CPU threads per cell (overrides the spec)")
    b.add_argument("--parallel", type=int, default=1, metavar="N", help="run: cells at once, each a process (e.g. on a GPU; default 1)")
    b.add_argument("--in-process", action="store_true", help="run: train in this process (no crash isolation)")
    b.add_argument("--finalize", action="store_true",
                   help="run: stop interrupted cells where they are (test at their best epoch so far) instead of training on")
    b.add_argument("--dry-run", action="store_true", help="run: list the cells and what would happen")
    b.add_argument("--archive", metavar="DIR", help="run: after each cell, archive the finished cells into DIR "
                   "(as `benchmark archive`: small files, no weights; commit it and a wiped machine loses nothing); "
                   "a cell missing from the run folder but finished in DIR is copied back from it, not trained again")
    b.add_argument("--checkpoints", action="store_true", help="archive (and run --archive): also keep each finished "
                   "cell's weights (model.safetensors, a few MB): what other cells start `from` (archive such "
                   "campaigns, e.g. pre-training or a source-domain model, with it; Table 3 grids without)")
    b.add_argument("--datasets", metavar="A,B", help="run: only these datasets of the spec")
    b.add_argument("--models", metavar="LABEL,...", help="run: only these model labels of the spec")
    b.add_argument("--seeds", metavar="S,...", help="run: only these seeds of the spec")
    b.add_argument("--out", metavar="FILE_STEM", help="report: write FILE_STEM.md, .json and FILE_STEM_DATASET_curves.png; "
                   "archive: the folder to copy into")
    b.add_argument("--spec", metavar="GRID.yaml", help="archive: refresh RUNS_DIR/benchmark.json from this spec first "
                   "(a campaign still running, or cut off before writing it)")
    b.add_argument("--all-pairs", action="store_true", help="report: also test every pair of ranked models "
                   "(default: ours vs each baseline and control, and best vs second)")
    b.add_argument("--title", help="report: the markdown title")
    b.add_argument("--note", default="", help="report: a paragraph under the title (machine, load, ...)")
    b.set_defaults(func=_benchmark)


def _benchmark(args: argparse.Namespace) -> int:
    from unisrec.errors import UserError

    words = list(args.words)
    action = words.pop(0) if words[0] in ("run", "report", "archive") else "run"
    if len(words) != 1:
        raise UserError(f"expected `benchmark {action} {'GRID.yaml' if action == 'run' else 'RUNS_DIR'}`, got {' '.join(args.words)}")
    if action == "report":
        return _report(Path(words[0]), args)
    if action == "archive":
        return _archive(Path(words[0]), args)
    return _run(Path(words[0]), args)


def _run(spec_path: Path, args: argparse.Namespace) -> int:
    from unisrec.benchmark.runner import SUMMARY_NAME, run_benchmark
    from unisrec.benchmark.spec import load_spec, subset
    from unisrec.errors import UserError

    def names(text: str | None) -> list[str] | None:
        return None if text is None else [w.strip() for w in text.split(",") if w.strip()]

    spec = load_spec(spec_path)
    try:
        seeds = None if args.seeds is None else [int(s) for s in names(args.seeds) or []]
    except ValueError:
        raise UserError(f"--seeds must be integers separated by commas, got {args.seeds!r}") from None
    only = subset(spec, names(args.datasets), names(args.models), seeds)
    runs = Path(args.runs) if args.runs else Path("runs") / spec.name
    after_cell = None
    archived_once: list[bool] = []
    if args.archive and not args.dry_run:
        from unisrec.benchmark.archive import archive_runs

        def after_cell() -> None:
            archived_once.append(True)
            try:
                done = archive_runs(runs, args.archive, checkpoints=args.checkpoints)
            except UserError as exc:  # e.g. no cell has written anything yet: the campaign goes on
                print(f"archive: {exc}")
                return
            print(f"archived {len(done['archived'])} finished cells into {args.archive}")

    summary = run_benchmark(spec, runs, threads=args.threads, isolate=not args.in_process, parallel=args.parallel,
                            finalize=args.finalize, dry_run=args.dry_run, only=only, after_cell=after_cell,
                            archive=args.archive)
    if after_cell is not None and not archived_once:  # no cell trained now: archive what is already finished
        after_cell()
    counts: dict[str, int] = {}
    for c in summary["cells"]:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    print(f"{len(summary['cells'])} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    to_do = [c for c in summary["cells"] if c["status"] in ("new", "interrupted")]
    if args.dry_run and to_do:
        paced = [c["estimated_seconds"] for c in to_do if "estimated_seconds" in c]
        print(f"estimated cell time: ~{sum(paced) / 3600:.1f} h for {len(paced)} of the {len(to_do)} cells to train "
              f"(at the pace of finished cells of the same model; {len(to_do) - len(paced)} without one to go by)")
    if not args.dry_run:
        print(f"summary: {runs / SUMMARY_NAME}; report: unisrec benchmark report {runs}")
    return 1 if counts.get("failed") else 0


def _report(runs: Path, args: argparse.Namespace) -> int:
    from unisrec.benchmark.report import build_report, render_markdown, write_report

    result = build_report(runs, all_pairs=args.all_pairs)
    if args.out:
        for path in write_report(result, args.out, args.title, args.note):
            print(f"wrote {path}")
    else:
        print(render_markdown(result, args.title, args.note))
    return 0


def _archive(runs: Path, args: argparse.Namespace) -> int:
    from unisrec.benchmark.archive import archive_runs
    from unisrec.errors import UserError

    if not args.out:
        raise UserError("`benchmark archive RUNS_DIR` needs --out DIR (the folder to copy the cells' small files into)")
    from unisrec.benchmark.spec import load_spec

    done = archive_runs(runs, args.out, load_spec(args.spec) if args.spec else None, checkpoints=args.checkpoints)
    print(f"archived {len(done['archived'])} finished cells into {args.out}"
          + (f"; not finished (left out): {', '.join(done['unfinished'])}" if done["unfinished"] else ""))
    return 0
