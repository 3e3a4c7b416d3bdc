"""Give archived cells trained before ``test_exposure.npy`` existed their exposure, from their weights.

Since 2026-12-05 every finished cell writes ``test_exposure.npy`` (how many test users have each item
in their top 10) from the scoring pass that gives its test ranks. Older cells have ranks only. Where
the run tree still holds a cell's model directory (``RUNS/DATASET/MODEL/seedN/model.safetensors``),
this re-scores its test users once and writes the exposure into the run cell and the archive cell --
but only if the re-scored ranks equal the archived ``test_ranks.npy`` for every user, i.e. the
weights are the ones the archived metrics came from; otherwise the cell is reported and left alone.
Cells with no weights left are listed. Nothing is trained.

    python benchmarks/backfill_exposure.py runs/table3_online_retail results/table3/cells_online_retail
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

EXPOSURE = "test_exposure.npy"


def backfill_cell(run_cell: Path, archive_cell: Path, dataset_dir: str, batch_size: int) -> str:
    """Re-score one cell; returns what happened, one line."""
    from unisrec.evaluation.cli import load_for_evaluation
    from unisrec.evaluation.longtail import split_ranks

    model, ds, dev = load_for_evaluation(str(run_cell), dataset_dir, "cpu")
    ranks, _, exposure = split_ranks(model, ds, "test", batch_size, dev)
    archived = np.load(archive_cell / "test_ranks.npy")
    if archived.shape != ranks.shape or not np.array_equal(archived, ranks):
        differ = int((archived != ranks).sum()) if archived.shape == ranks.shape else len(ranks)
        return f"left alone: re-scored ranks differ from the archived ones for {differ} of {len(ranks)} users"
    for folder in (run_cell, archive_cell):
        tmp = folder / f".{EXPOSURE}.tmp-{os.getpid()}.npy"
        np.save(tmp, exposure.astype(np.int32))
        os.replace(tmp, folder / EXPOSURE)
    return f"written (ranks identical for all {len(ranks)} test users)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", help="the campaign's run tree (holds the model weights)")
    ap.add_argument("archive", help="its archive (holds test_ranks.npy; receives test_exposure.npy)")
    ap.add_argument("--dataset", help="dataset folder (default: the one each model's config.json records)")
    ap.add_argument("--batch-size", type=int, default=1024)
    args = ap.parse_args(argv)
    runs, archive = Path(args.runs), Path(args.archive)
    todo = sorted(p.parent for p in archive.glob("*/*/seed*/test_ranks.npy") if not (p.parent / EXPOSURE).is_file())
    for cell in todo:
        rel = cell.relative_to(archive)
        run_cell = runs / rel
        if not (run_cell / "model.safetensors").is_file():
            print(f"{rel}: no weights in {runs}; stays without exposure")
            continue
        print(f"{rel}: {backfill_cell(run_cell, cell, args.dataset, args.batch_size)}", flush=True)
    if not todo:
        print(f"every archived cell of {archive} has its exposure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
