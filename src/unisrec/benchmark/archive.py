"""`unisrec benchmark archive RUNS --out DIR`: keep the small, durable part of a campaign.

A run tree (``RUNS/DATASET/MODEL/seedN/``) holds model weights and resume states -- hundreds of MB
that do not belong in git -- next to the few files that a report needs. A machine that is wiped
between sittings loses the whole tree, and with it the per-user ranks that the paired t-tests are
computed from. The archive copies, for every *finished* cell, only:

* ``metrics.json`` (test / valid metrics, epochs, stop reason, epoch times),
* ``config.json`` (every option the cell was trained with: the stale-cell check reads it),
* ``training_log.jsonl`` (the validation curve the report plots),
* ``test_ranks.npy`` (int32 rank of each test user's target: every R@K / N@K and the tests),
* ``test_exposure.npy`` (int32, how many test users have each item in their top 10: the long-tail
  page's exposure table; cells trained before it existed have none),
* of a pre-training cell (``model: pretrain``): ``done.json``, ``config.json`` and its loss curve
  ``training_log.jsonl``;
* with ``checkpoints=True`` (``--checkpoints``) also every finished cell's weights ``model.safetensors``:
  what other cells start ``from`` (a pre-training checkpoint, ZESRec's source-domain model), hours of
  training in a few MB (7.6 MB for a pre-training at the paper's sizes), so a restored campaign starts
  from them at once; without them they must be trained again first (cells naming one in ``from`` report
  it missing until then);
* of a stage of its own (S3-Rec's ``pretrain/``: a sub-folder with a ``training_log.jsonl``), that
  curve and its ``done.json`` (how many epochs the stage ran, and why it ended),

plus ``RUNS/benchmark.json``; about 50 KB per cell on Scientific. Absolute paths inside the JSON
files are rewritten (``$UNISREC_DATA/...``, or relative to the current folder, or the file name),
so a committed archive holds no machine paths.

An archive is itself a run tree: ``unisrec benchmark report ARCHIVE`` reports it, and copying it to
``runs/NAME`` before ``unisrec benchmark run GRID.yaml --runs runs/NAME`` restores a campaign -- the
archived cells count as finished (skipped, never retrained), only the missing ones train.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from unisrec.benchmark.runner import DONE_NAME, METRICS_NAME, SUMMARY_NAME
from unisrec.errors import UserError

ARCHIVED_FILES: tuple[str, ...] = (METRICS_NAME, DONE_NAME, "config.json", "training_log.jsonl", "test_ranks.npy",
                                   "test_exposure.npy")
STAGE_FILES: tuple[str, ...] = ("training_log.jsonl", "done.json")  # of a cell's stage sub-folder (S3-Rec's pretrain/)
WEIGHTS_NAME = "model.safetensors"  # a cell's weights, archived with checkpoints=True


def _archived_files(cell: Path) -> list[str]:
    """The files of ``cell`` an archive keeps, relative to it (see the module docstring)."""
    stages = sorted(p.name for p in cell.iterdir() if p.is_dir() and (p / "training_log.jsonl").is_file())
    return list(ARCHIVED_FILES) + [f"{stage}/{f}" for stage in stages for f in STAGE_FILES]


def _bases(runs: Path) -> list[tuple[str, str]]:
    """(absolute folder, how an archive shows it), longest first, so the most specific one wins."""
    cwd = Path.cwd().resolve()
    shown_runs = runs.resolve()
    try:
        runs_text = str(shown_runs.relative_to(cwd)) or "."
    except ValueError:
        runs_text = "RUNS"
    bases = {str(shown_runs): runs_text, str(cwd): "."}
    if os.environ.get("UNISREC_DATA"):
        bases[str(Path(os.environ["UNISREC_DATA"]).resolve())] = "$UNISREC_DATA"
    return sorted(bases.items(), key=lambda kv: -len(kv[0]))


def portable_text(text: str, runs: Path) -> str:
    """``text`` with the machine's folders replaced: an absolute path becomes ``$UNISREC_DATA/...``
    (the datasets folder), a path relative to the current folder (or ``RUNS/...``), else its file
    name; inside longer strings (a recorded command line) the same folders are replaced."""
    bases = _bases(runs)
    if os.path.isabs(text) and " " not in text:
        path = str(Path(text).resolve())
        for base, shown in bases:
            if path == base or path.startswith(base + os.sep):
                rest = path[len(base) + 1:]
                return (shown if shown != "." else "") + ("/" if rest and shown != "." else "") + rest or "."
        return Path(text).name
    for base, shown in bases:
        text = text.replace(base + os.sep, "" if shown == "." else shown + "/")
    return text


def _portable(obj: Any, runs: Path) -> Any:
    if isinstance(obj, str):
        return portable_text(obj, runs)
    if isinstance(obj, dict):
        return {k: _portable(v, runs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable(v, runs) for v in obj]
    return obj


def _copy_json(src: Path, dst: Path, runs: Path) -> None:
    from unisrec.data.dataset import write_json

    try:
        write_json(dst, _portable(json.loads(src.read_text(encoding="utf-8")), runs))
    except ValueError as exc:
        raise UserError(f"{src}: not valid JSON ({exc}); the cell's files are damaged") from None


def _copy_jsonl(src: Path, dst: Path, runs: Path) -> None:
    lines = []
    for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            lines.append(json.dumps(_portable(json.loads(line), runs), sort_keys=True, ensure_ascii=False))
        except ValueError as exc:
            raise UserError(f"{src}, line {n}: not valid JSON ({exc})") from None
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    os.replace(tmp, dst)


def _finished_commands(out: Path) -> dict[tuple[str, str, int], tuple[str, Any]]:
    """{(dataset, model, seed): (command, test metrics)} of the cells ``out``'s summary lists finished."""
    try:
        cells = json.loads((out / SUMMARY_NAME).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {(c["dataset"], c["model"], c["seed"]): (c["command"], c.get("test")) for c in cells
            if isinstance(c, dict) and c.get("status") == "finished" and c.get("command") and "seed" in c}


def _describe_archive(out: Path, before: dict[tuple[str, str, int], tuple[str, Any]] | None = None) -> None:
    """Rewrite ``out``'s copy of the summary to describe the archive, not the last `benchmark run`:
    each cell ``finished`` (with its results) where the archive holds it, else ``not archived``.
    The run tree's statuses (``running``, ``queued``, ``not selected``...) say what one invocation
    did; copied as they are, they changed the committed file with every sitting and called cells
    "not selected" that the archive holds finished. ``stale`` is kept: the report marks it.
    ``before`` (:func:`_finished_commands` of the summary this replaces): a cell that was finished there
    with the same test metrics is the same cell, so it keeps the command that trained it -- the run
    tree's summary shows what today's spec *would* run, which differs where the spec changed in a way
    that leaves finished cells valid (e.g. ``precision: bfloat16`` -> ``auto``)."""
    from unisrec.benchmark.runner import cell_results
    from unisrec.data.dataset import write_json

    summary = json.loads((out / SUMMARY_NAME).read_text(encoding="utf-8"))
    kept = ("dataset", "model", "seed", "dir", "command", "status", "message")
    for i, cell in enumerate(summary.get("cells", [])):
        results = cell_results(out / cell["dir"])  # the archived files, already portable
        if cell.get("status") != "stale":
            cell = {**cell, "status": "finished" if results else "not archived", "message": None}
        made_by = (before or {}).get((cell["dataset"], cell["model"], cell["seed"]))
        if made_by and results.get("test") is not None and made_by[1] == results.get("test"):
            cell["command"] = made_by[0]
        summary["cells"][i] = {**{k: cell[k] for k in kept if cell.get(k) is not None}, **results}
    summary["finished"] = sum(1 for c in summary.get("cells", []) if c.get("test") is not None)
    write_json(out / SUMMARY_NAME, summary)


def archive_runs(runs: str | os.PathLike, out: str | os.PathLike, spec: Any = None, checkpoints: bool = False) -> dict[str, list[str]]:
    """Copy every finished cell's small files from ``runs`` into ``out`` (same layout); with
    ``checkpoints`` also each finished cell's ``model.safetensors``.

    ``spec`` (a loaded benchmark spec): first refresh ``runs/benchmark.json`` from it and the cells on
    disk, no training (for a run tree whose campaign is still running, or was cut off before writing it).

    Cells already in ``out`` are refreshed; files in ``out`` that this does not write are left alone
    (the archive may hold cells of earlier sittings whose run folders are gone). Returns
    {"archived": [cell, ...], "unfinished": [cell, ...]} (cells as ``DATASET/MODEL/seedN``)."""
    runs, out = Path(runs), Path(out)
    if not runs.is_dir():
        raise UserError(f"{runs} is not a folder of benchmark runs")
    if out.resolve() == runs.resolve():
        raise UserError(f"--out must differ from the run folder ({runs})")
    if spec is not None:
        from unisrec.benchmark.runner import run_benchmark

        run_benchmark(spec, runs, collect_only=True, say=lambda _: None)
    cells = sorted(p.parent for p in runs.glob("*/*/seed*/config.json")) + sorted(
        p.parent for p in runs.glob("*/*/seed*/" + METRICS_NAME))
    done: list[str] = []
    unfinished: list[str] = []
    for cell in sorted(set(cells)):
        name = str(cell.relative_to(runs))
        trained = (cell / METRICS_NAME).is_file() and (cell / "test_ranks.npy").is_file()
        if not trained and not (cell / DONE_NAME).is_file():
            unfinished.append(name)
            continue
        target = out / cell.relative_to(runs)
        files = _archived_files(cell)
        if checkpoints:
            files.append(WEIGHTS_NAME)
        for fname in files:
            src = cell / fname
            if not src.is_file():
                continue
            (target / fname).parent.mkdir(parents=True, exist_ok=True)
            if fname.endswith(".json"):
                _copy_json(src, target / fname, runs)
            elif fname.endswith(".jsonl"):
                _copy_jsonl(src, target / fname, runs)
            else:
                tmp = target / f".{fname}.tmp-{os.getpid()}"  # fname has no folder: only top-level files are binary
                shutil.copyfile(src, tmp)
                os.replace(tmp, target / fname)
        done.append(name)
    if (runs / SUMMARY_NAME).is_file():
        out.mkdir(parents=True, exist_ok=True)
        before = _finished_commands(out)
        _copy_json(runs / SUMMARY_NAME, out / SUMMARY_NAME, runs)
        _describe_archive(out, before)
    if not done and not unfinished:
        raise UserError(f"{runs} holds no benchmark cells (expected DATASET/MODEL/seedN/ folders)")
    return {"archived": done, "unfinished": unfinished}
