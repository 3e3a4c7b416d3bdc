"""Run a benchmark grid: every (dataset, model, seed) cell trains into ``RUNS/DATASET/MODEL/seedN/``.

API::

    run_benchmark(load_spec("configs/benchmarks/table3_scientific.yaml"), "runs/table3_scientific", threads=1)

A cell is one `unisrec train NAME` / `unisrec finetune` run through the library
(:func:`unisrec.training.supervised.train_model`, :func:`unisrec.training.finetune.finetune`):

* finished (``metrics.json``, or a pre-training cell's ``done.json``) -> skipped, never retrained;
* interrupted (a resume state and no ``metrics.json``) -> resumed exactly where it stopped;
* being trained by a live process (its folder's writer lock is held: another `benchmark run`, or
  a `unisrec train`) -> ``running``, left alone; never two trainers on one cell;
* otherwise started fresh; a model name the registry does not know, or a dataset folder that is not
  there, is reported and skipped, so a spec may name models other people are still adding.

Cells run one at a time (``parallel`` > 1 runs that many at once, for a GPU), each in its own
subprocess (``python -m unisrec.benchmark.runner``) so a crash or an out-of-memory kill ends one
cell, not the campaign; its output goes to ``RUNS/DATASET/MODEL/seedN.log``. A worker stops when
its `benchmark run` dies (killed, or its terminal closed), so no cell trains on unwatched. Order:
per dataset, seed by seed, every model at a seed before the next seed, so a campaign cut short
still holds complete comparisons. ``RUNS/benchmark.json`` records the spec and every cell (status,
command, test metrics); `unisrec benchmark report RUNS` turns the tree into the paper's table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from unisrec.benchmark.spec import POPULARITY, BenchmarkSpec, DatasetEntry, ModelEntry, display_path
from unisrec.data.output import lock_holder
from unisrec.errors import Stopped, UserError
from unisrec.training.signals import StopOnSignal

SUMMARY_NAME = "benchmark.json"
# a worker's exit after a SIGTERM / SIGINT that it handled (errors.Stopped: 128 + the signal's number)
STOPPED_EXIT_CODES = (128 + signal.SIGTERM, 128 + signal.SIGINT)
METRICS_NAME = "metrics.json"
DONE_NAME = "done.json"  # a pre-training cell's end (training.state.DONE_NAME; here without importing torch)
CELL_CHECKPOINT_MINUTES = 10.0  # every cell's mid-epoch resume checkpoint (training.loop.LoopSettings.checkpoint_minutes)


@dataclass(frozen=True)
class Cell:
    dataset: DatasetEntry
    model: ModelEntry
    seed: int
    dir: Path

    @property
    def name(self) -> str:
        return f"{self.dataset.name}/{self.model.folder}/seed{self.seed}"

    @property
    def log(self) -> Path:
        return self.dir.parent / f"{self.dir.name}.log"


def cells(spec: BenchmarkSpec, runs: str | os.PathLike) -> list[Cell]:
    """Every cell of the grid, in run order (dataset, then seed, then model)."""
    runs = Path(runs)
    return [Cell(d, m, seed, runs / d.name / m.folder / f"seed{seed}")
            for d in spec.datasets.values() for seed in spec.seeds for m in spec.models.values() if m.runs_on(d.name)]


def unavailable(cell: Cell, finished: bool = False) -> str | None:
    """Why a cell cannot run (an unregistered model, a missing dataset), or None.

    A ``finished`` cell's results stand without the inputs it was trained from, so a ``from`` checkpoint
    or a source folder deleted since (e.g. to save disk) does not turn it into an unavailable one."""
    from unisrec.models import registry

    if not (cell.model.is_finetune or cell.model.is_pretrain or cell.model.trains_nothing) and cell.model.model not in registry.names():
        return (f"model {cell.model.model!r} ({cell.model.label}) is not registered; known: "
                f"{', '.join(registry.names())} -- skipped")
    if cell.dataset.path is None:
        return f"dataset {cell.dataset.name}: folder {cell.dataset.given!r} not found (beside the spec or under $UNISREC_DATA) -- skipped"
    if finished:
        return None
    if cell.model.pretrained and (why := unfinished_model_dir(Path(cell.model.pretrained))):
        return f"{cell.model.label}: 'from' model directory {cell.model.pretrained!r} {why} -- skipped"
    missing = [s.given for s in cell.model.sources if s.path is None]
    if missing:
        return f"{cell.model.label}: source folder {', '.join(map(repr, missing))} not found (beside the spec or under $UNISREC_DATA) -- skipped"
    return None


def unfinished_model_dir(path: Path) -> str | None:
    """Why ``path`` is not (yet) a model directory to start from, or None: not there, being trained
    now, or a run that has not finished (a resume state and neither ``metrics.json`` nor a
    pre-training's ``done.json``): its weights are an intermediate checkpoint."""
    if not (path / "config.json").is_file():
        where = "" if path.is_absolute() else " beside the spec nor in the current folder"
        return f"not found{where} (train or pre-train it first)"
    if not (path / "model.safetensors").is_file():
        return ("holds no model.safetensors (an archive keeps a cell's weights only for a pre-training cell archived "
                "with --checkpoints: train it again into a run folder)")
    if pid := lock_holder(path):
        return f"is being trained now (pid {pid}); start this cell when it has finished"
    if cell_state(path) == "interrupted":
        return "holds a run that has not finished (resume it first)"
    return None


def cell_state(cell_dir: Path) -> str:
    """``finished`` (metrics.json, or done.json of a pre-training), ``interrupted`` (a resume state,
    not finished) or ``new``.

    A resume state one folder down counts too: a model with a stage of its own (S3-Rec's
    pre-training, ``OUTPUT/pretrain/``) may have been stopped inside it."""
    from unisrec.training.state import read_run_state

    if (cell_dir / METRICS_NAME).is_file() or (cell_dir / DONE_NAME).is_file():
        return "finished"
    if read_run_state(cell_dir) is not None:
        return "interrupted"
    stages = [p for p in cell_dir.iterdir() if p.is_dir()] if cell_dir.is_dir() else []
    return "interrupted" if any(read_run_state(p) is not None for p in stages) else "new"


def progress(cell_dir: Path) -> str:
    """Where an unfinished cell is, from its resume state, e.g. "after epoch 12; best valid 0.0612 at
    epoch 8"; "" when it has none. A cell inside its own stage says so ("pre-training stage, ...")."""
    from unisrec.training.state import read_run_state

    for where, folder in (("", cell_dir), *((f"{p.name} stage, ", p) for p in sorted(cell_dir.glob("*/")) if p.is_dir())):
        if (run := read_run_state(folder)) is not None:
            stop = run.early_stopping
            best = f"; best valid {stop.best:.4f} at epoch {stop.best_epoch}" if stop.best_epoch else ""
            stage_epochs = run.config.get("model", {}).get("pretrain_epochs") if where else None  # S3-Rec's stage
            soonest = earliest_end(run, epoch_seconds(folder), stage_epochs)
            return f"{where}after epoch {run.epoch}{best}" + (f"; {soonest}" if soonest else "")
    return ""


def epoch_seconds(run_dir: Path, last: int = 5) -> float | None:
    """The median seconds (training + validation) of the run's last ``last`` complete epochs, from its
    training log; None without one. The recent epochs, not the run's average: a cell resumed on another
    machine or under another load paces like its latest sitting."""
    from unisrec.evaluation.plots import read_training_log

    try:
        records = read_training_log(run_dir)
    except UserError:  # no log yet, or a damaged one: no pace to tell
        return None
    done = [float(r["seconds"]) + float(r.get("eval_seconds", 0.0)) for r in records
            if not r.get("partial") and isinstance(r.get("seconds"), (int, float))]
    return statistics.median(done[-last:]) if done else None


def earliest_end(run: Any, seconds_per_epoch: float | None, limit: int | None = None) -> str:
    """When early stopping could end a run at the soonest -- if no later epoch beats its best -- e.g.
    "ends after epoch 26 at the soonest (patience 10): >= 9.6 more epochs, ~3.9 h at its recent 1,470 s
    per epoch"; capped by the run's epoch limit (``limit``, else its config's), the end itself for a run
    without validation (a pre-training stage); "" when neither is known or it is at its end.
    A lower bound: every new best moves it ``patience`` epochs on."""
    stop = run.early_stopping
    if limit is None:
        limit = run.config.get("train", {}).get("epochs")
    if stop.best_epoch:
        last = stop.best_epoch + stop.patience if limit is None else min(stop.best_epoch + stop.patience, limit)
    elif limit is not None and run.epoch:  # no validation: it runs to its limit
        last = limit
    else:
        return ""
    steps_per_epoch = (run.global_step - run.step_in_epoch) / run.epoch if run.epoch else 0
    part_done = run.step_in_epoch / steps_per_epoch if steps_per_epoch else 0.0
    epochs_left = last - run.epoch - part_done
    if epochs_left <= 0:
        return ""
    soonest = " at the soonest" if stop.best_epoch else ""
    cap = " (its epoch limit)" if last == limit else f" (patience {stop.patience})"
    pace = (f", ~{epochs_left * seconds_per_epoch / 3600:.1f} h at its recent {seconds_per_epoch:,.0f} s per epoch"
            if seconds_per_epoch else "")
    return f"ends after epoch {last}{soonest}{cap}: {'>= ' * bool(soonest)}{epochs_left:.1f} more epochs{pace}"


def model_class(model: ModelEntry) -> Any:
    """The model class a cell trains (fine-tuning and pre-training cells: UniSRec)."""
    from unisrec.models import registry

    return registry.get("unisrec" if model.is_finetune or model.is_pretrain else model.model).model_class


def cell_configs(model: ModelEntry, seed: int, threads: int | None = None, epochs: int | None = None) -> tuple[Any, Any]:
    """(TrainConfig, model config) of a cell -- (PretrainConfig, UniSRecConfig) of a pre-training
    cell, checkpointed every epoch unless the spec says otherwise: the entry's options, the seed, no
    progress bar; ``threads`` / ``epochs`` override the spec when given."""
    from unisrec.config import load_configs
    from unisrec.training.config import PretrainConfig, TrainConfig

    config_class = model_class(model).config_class
    run_class = PretrainConfig if model.is_pretrain else TrainConfig
    # a campaign is cut between sittings: a cell killed mid-epoch resumes from at most 10 minutes back
    overrides = {"checkpoint_minutes": CELL_CHECKPOINT_MINUTES, **model.options, "seed": seed, "progress": False}
    if model.is_pretrain:
        overrides.setdefault("save_every", 1)  # a campaign is cut between sittings: lose at most one epoch
    elif model.sources:  # resolved like the spec's datasets (unavailable() reports a missing one first)
        overrides["source"] = [str(s.path or s.given) for s in model.sources]
    if model.pretrained and not model.is_finetune:  # finetune takes it as its own argument (train_cell)
        overrides["init_from"] = model.pretrained
    if threads is not None:
        overrides["threads"] = threads
    if epochs is not None:
        overrides["epochs"] = epochs
    try:
        return load_configs((run_class, config_class), None, overrides)
    except UserError as exc:
        raise UserError(f"model {model.label}: {exc}") from None


def _leaves(tree: Any) -> dict[str, Any]:
    """A config as saved in config.json ({"encoder": {...}, ...}) -> {field name: value} of its leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_leaves(value) if isinstance(value, dict) else {key: value})
    return out


def option_mismatches(cell: Cell, threads: int | None = None) -> list[str]:
    """``["batch_size 2048 -> 512", ...]``: options the spec sets for ``cell`` (and its seed) that the
    finished cell's ``config.json`` records with another value. Only options the spec names are
    compared: a default that changed since (e.g. the evaluation batch) does not make a cell stale. An
    option the cell's config.json does not record did not exist when it ran, so it ran as that
    option's default (e.g. ``precision: bfloat16`` against a cell trained before the option: float32),
    unless the model's ``upgrade_config`` names the value older code ran with: that value is compared
    whether or not the spec names the option (RecGURU before its CDSRec unit: ``cdsrec False -> True``)."""
    import dataclasses

    try:
        stored = json.loads((cell.dir / "config.json").read_text())
        run = stored.get("training") or stored.get("pretraining", {}).get("config", {})
        recorded = stored.get("model") if isinstance(stored.get("model"), dict) else {}
    except (OSError, ValueError, AttributeError):
        return []  # no readable config.json: nothing to compare (metrics.json alone marks it finished)
    started_from = from_mismatch(cell, stored)
    if cell.model.trains_nothing:  # nothing trained, so no training option to differ
        return started_from
    train, config = cell_configs(cell.model, cell.seed, threads)
    # a field the model fills in for older directories ran with that value, whatever today's default is
    upgraded, as_recorded = _leaves(model_class(cell.model).upgrade_config(recorded)), _leaves(recorded)
    implied = [k for k in upgraded if k not in as_recorded]
    have = {**upgraded, **_leaves(run)}

    def leaves(train: Any, config: Any) -> dict[str, Any]:
        return json.loads(json.dumps({**_leaves(dataclasses.asdict(config)), **_leaves(dataclasses.asdict(train))}, default=str))

    wanted, default = leaves(train, config), leaves(type(train)(), type(config)())
    have = {**default, **have}  # what the config.json does not record ran as the default
    keys = [k.replace("-", "_") for k in cell.model.options] + ["seed"] + implied
    # "auto" (device, precision) is each machine's own pick: a cell that ran with either choice was run as asked
    return started_from + [f"{k} {have[k]!r} -> {wanted[k]!r}" for k in keys
                           if k in have and k in wanted and have[k] != wanted[k] and wanted[k] != "auto"]


def from_mismatch(cell: Cell, stored: dict[str, Any]) -> list[str]:
    """``["from runs/pretrain/games/full/seed2020 -> .../full_(bfloat16)/seed2020"]`` when the finished cell
    started from another checkpoint than the spec's ``from:`` names. Checkpoints are compared by their
    last three path parts (DATASET/LABEL/seedN of a campaign's run tree), because the recorded path is
    relative to wherever the cell ran (and an archive shows it relative to the repository), while the
    spec's is resolved against the spec file."""
    training = stored.get("training") or (stored.get("pretraining") or {}).get("config") or {}
    for holder, key in ((stored, "pretrained"), (training, "init_from"), (stored, "from")):
        if key in holder:  # fine-tuning's checkpoint, a trained model's --init-from, a zero-shot's source
            recorded = holder[key]
            break
    else:
        return []  # a cell from before its start was recorded: nothing to compare
    wanted = cell.model.pretrained
    if recorded is None and wanted is None:
        return []
    if recorded is not None and wanted is not None and Path(str(recorded)).parts[-3:] == Path(wanted).parts[-3:]:
        return []
    return [f"from {recorded} -> {cell.model.pretrained}"]


def train_cell(model: ModelEntry, dataset_dir: str | os.PathLike, output: str | os.PathLike, seed: int,
               threads: int | None = None, finalize: bool = False) -> dict[str, Any]:
    """Train (or resume) one cell in this process; returns its metrics.

    ``finalize``: an interrupted cell stops at the epoch it reached (tested at its best epoch so
    far; metrics.json then says it did not early-stop)."""
    from unisrec.training.state import read_run_state

    if model.trains_nothing:
        return evaluate_cell(model, dataset_dir, output, seed, threads)
    output = Path(output)
    saved = read_run_state(output)
    epochs = saved.epoch if (finalize and saved is not None) else None
    resume = cell_state(output) == "interrupted"
    train, config = cell_configs(model, seed, threads, epochs)
    if model.is_pretrain:
        from dataclasses import replace

        from unisrec.training.pretrain import pretrain, sets_architecture

        sources = [str(s.path or s.given) for s in model.sources]
        return pretrain([dataset_dir, *sources], output, replace(train, resume=resume),
                        config if sets_architecture(model.options) else None, show_progress=False)[1]
    if model.is_finetune:
        from unisrec.training.finetune import finetune

        return finetune(dataset_dir, output, train, config, pretrained=model.pretrained, resume=resume,
                        unfreeze_all=model.unfreeze_all)
    from unisrec.training.supervised import train_model

    return train_model(model.model, dataset_dir, output, train, config, resume=resume)


def evaluate_cell(model: ModelEntry, dataset_dir: str | os.PathLike, output: str | os.PathLike, seed: int,
                  threads: int | None = None) -> dict[str, Any]:
    """A cell that trains nothing: ``zero-shot`` ranks the cell's dataset with the ``from:`` model by
    item text (:func:`unisrec.evaluation.cli.load_for_evaluation`: a pre-training checkpoint or a
    model without per-item weights), ``popularity`` with the training part's counts. Writes what a
    trained cell leaves for the report and the archive -- ``valid_ranks.npy``, ``test_ranks.npy``,
    ``test_exposure.npy``, a ``config.json`` naming what was ranked, and last ``metrics.json`` (so a
    crash leaves no finished cell) -- and returns the metrics. ``seed`` is recorded only: nothing here is random."""
    import time

    import numpy as np
    import torch

    from unisrec.data.dataset import Dataset, write_json
    from unisrec.data.output import writer_lock
    from unisrec.evaluation.metrics import EXPOSURE_K, metrics_from_ranks, model_ranks
    from unisrec.models.popularity import popularity_exposure, popularity_ranks

    output = Path(output)
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    with writer_lock(output):
        if model.model == POPULARITY:
            ds = Dataset.load(dataset_dir)
            ranks = {split: popularity_ranks(ds, split) for split in ("valid", "test")}
            exposure = popularity_exposure(ds, "test", EXPOSURE_K)
            what = {"model_type": "popularity"}
        else:
            from unisrec.evaluation.cli import load_for_evaluation
            from unisrec.models.model_dir import read_model_config

            net, ds, dev = load_for_evaluation(str(model.pretrained), str(dataset_dir), str(model.options.get("device", "auto")))
            batch = int(model.options.get("eval_batch_size", 1024))
            from unisrec.evaluation.longtail import split_ranks

            ranks = {"valid": model_ranks(net, ds, "valid", batch, dev)}
            ranks["test"], _, exposure = split_ranks(net, ds, "test", batch, dev)
            source = read_model_config(str(model.pretrained))
            what = {"model_type": "zero-shot", "from": display_path(Path(str(model.pretrained))),
                    "from_model_type": source.get("model_type"), "model": source.get("model")}
        output.mkdir(parents=True, exist_ok=True)
        write_json(output / "config.json", {**what, "dataset": {"path": display_path(Path(dataset_dir))}, "seed": seed})
        for split, r in ranks.items():
            np.save(output / f"{split}_ranks.npy", np.asarray(r, dtype=np.int32))
        np.save(output / "test_exposure.npy", exposure.astype(np.int32))
        metrics = {"valid": metrics_from_ranks(ranks["valid"]), "test": metrics_from_ranks(ranks["test"]),
                   "best_epoch": None, "epochs_run": 0, "stop_reason": f"{model.model}: no training",
                   "wall_seconds": time.time() - t0, "seed": seed}
        write_json(output / METRICS_NAME, metrics)
    print(f"{model.label}: test " + " ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items()), flush=True)
    return metrics


def _entry_dict(model: ModelEntry) -> dict[str, Any]:
    return {"label": model.label, "model": model.model, "options": model.options, "pretrained": model.pretrained,
            "unfreeze_all": model.unfreeze_all, "role": model.role, "paper": model.paper,
            "sources": [[s.name, None if s.path is None else str(s.path), s.given, s.paper] for s in model.sources],
            "only_on": None if model.only_on is None else list(model.only_on)}


def display_dataset(entry: DatasetEntry) -> str:
    """A dataset folder as a results page shows it: relative to the current folder when inside it,
    ``$UNISREC_DATA/NAME`` when found there, else as the spec wrote it (no machine paths)."""
    if entry.path is None:
        return entry.given
    shown = display_path(entry.path)
    if not Path(shown).is_absolute():
        return shown
    env = os.environ.get("UNISREC_DATA")
    if env:
        try:
            return str(Path("$UNISREC_DATA") / entry.path.relative_to(Path(env).resolve()))
        except ValueError:
            pass
    return entry.given


def time_left(cell: Cell, runs: Path, archive: Path | None = None) -> tuple[float, int] | None:
    """(seconds, n): how long ``cell`` should still take -- the median ``wall_seconds`` of the n finished
    cells of the same dataset and model (other seeds, under ``runs`` or ``archive``), less the training
    time an interrupted cell already has -- or None without a finished cell to go by. A rough pace:
    it assumes the same device, threads and machine load as those cells had."""
    from unisrec.training.state import read_run_state

    rel = cell.dir.parent.relative_to(runs)
    walls: dict[str, float] = {}
    for root in (archive, runs):  # a cell in both: the run tree's record wins
        for metrics in sorted((root / rel).glob("seed*/" + METRICS_NAME)) if root is not None else ():
            try:
                walls[metrics.parent.name] = float(json.loads(metrics.read_text())["wall_seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a record without wall time (e.g. a zero-shot cell's) sets no pace
    walls.pop(cell.dir.name, None)
    if not walls:
        return None
    run = read_run_state(cell.dir)
    done = run.elapsed if run is not None else 0.0
    return max(statistics.median(walls.values()) - done, 0.0), len(walls)


def restore_from_archive(cell: Cell, runs: Path, archive: Path, dry_run: bool = False) -> str:
    """Copy ``cell``'s finished folder from ``archive`` (a run tree of the same layout) to ``cell.dir``
    when ``cell.dir`` does not exist; returns what was done ("" = nothing). The copy goes to a
    temporary sibling first and is renamed into place, so a crash leaves no half-restored cell."""
    import shutil

    source = archive / cell.dir.relative_to(runs)
    if cell.dir.exists() or not source.is_dir() or cell_state(source) != "finished":
        return ""
    if dry_run:
        return f"finished in the archive {archive}: would be copied back (not trained again)"
    cell.dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = cell.dir.with_name(f".{cell.dir.name}.restore-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    os.replace(tmp, cell.dir)
    return f"copied back from the archive {archive} (finished there)"


def run_benchmark(spec: BenchmarkSpec, runs: str | os.PathLike, threads: int | None = None, isolate: bool = True,
                  parallel: int = 1, finalize: bool = False, dry_run: bool = False, only: BenchmarkSpec | None = None,
                  collect_only: bool = False, say: Callable[[str], None] = print,
                  after_cell: Callable[[], Any] | None = None, archive: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run every unfinished cell of ``spec`` (or of ``only``, a :func:`~unisrec.benchmark.spec.subset`
    of it) under ``runs``; returns (and writes) the summary of all of ``spec``'s cells.

    The summary is written before the first cell trains and again after each one, so a report or an
    archive taken mid-campaign sees the spec. Each cell's entry has a ``status``: ``queued`` (to train
    in this call, not finished yet), ``skipped`` (finished before this call),
    ``finished`` (trained now), ``resumed`` (an interrupted cell, finished now), ``failed``,
    ``running`` (another live process trains it), ``stopped`` (a signal stopped its worker, which wrote
    the resume state: the next run resumes it),
    ``unavailable`` (unknown model / missing dataset), ``not selected`` (outside ``only``), ``archived``
    (``dry_run``: finished in ``archive``, would be copied back), or with
    ``dry_run`` (nothing written) or ``collect_only`` (no training; the summary written) the state
    it would start from (``new``, ``interrupted``). ``finalize``: interrupted
    cells are tested where they stopped (no further epochs) and no new cell starts (``not started``).
    ``isolate=False`` trains in this process (tests). ``after_cell`` is called after each cell ends
    and the summary is rewritten (`benchmark run --archive DIR` archives there). ``archive`` (that DIR):
    a selected cell with no folder under ``runs`` that the archive holds finished is first copied
    back from it (:func:`restore_from_archive`), so a campaign on a wiped machine skips it instead of
    training it again; a folder that exists under ``runs`` is never replaced."""
    if parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {parallel}")
    runs = Path(runs)
    grid = cells(spec, runs)
    selected = {c.name for c in cells(only or spec, runs)}
    records: dict[str, dict[str, Any]] = {}
    todo: list[tuple[Cell, str]] = []
    for cell in grid:
        shown = {"source": [display_dataset(s) for s in cell.model.sources]} if cell.model.sources else None
        rec = {"dataset": cell.dataset.name, "model": cell.model.label, "seed": cell.seed, "dir": str(cell.dir.relative_to(runs)),
               "command": cell.model.command(display_dataset(cell.dataset), display_path(cell.dir), cell.seed, shown)}
        records[cell.name] = rec
        if cell.name not in selected:
            rec["status"] = "skipped" if cell_state(cell.dir) == "finished" else "not selected"
            continue
        if archive is not None and (restored := restore_from_archive(cell, runs, Path(archive), dry_run)):
            say(f"{cell.name}: {restored}")
            if dry_run:  # nothing copied: it stays what the archive holds
                rec["status"] = "archived"
                continue
        state = cell_state(cell.dir)
        why = unavailable(cell, finished=state == "finished")
        if why:
            rec.update(status="unavailable", message=why)
            say(f"{cell.name}: {why}")
            continue
        if state != "finished" and (pid := lock_holder(cell.dir)):
            at = progress(cell.dir)
            rec.update(status="running", message=f"being trained by another process (pid {pid})" + (f"; {at}" if at else ""))
            say(f"{cell.name}: {rec['message']}; left to it, not started again")
            continue
        if state != "finished" and not cell.model.trains_nothing:  # a typo in an option fails now, not hours into a campaign
            cell_configs(cell.model, cell.seed, threads)
        if state == "finished" and (changed := option_mismatches(cell, threads)):
            rec.update(status="stale", message=f"finished before with other options: {'; '.join(changed)}")
            say(f"{cell.name}: finished before with other options than the spec's ({'; '.join(changed)}); not retrained "
                "and not deleted -- move the folder away (or use another --runs) to train it with this spec")
        elif state == "finished":
            rec["status"] = "skipped"
            say(f"{cell.name}: finished before, skipped")
        elif dry_run or collect_only:
            rec["status"] = state
            left = time_left(cell, runs, None if archive is None else Path(archive))
            if left is not None:
                rec["estimated_seconds"] = left[0]
            eta = f"; ~{left[0] / 3600:.1f} h at the pace of {left[1]} finished cell{'s' * (left[1] != 1)} of this model" if left else ""
            say(f"{cell.name}: would " + (f"resume {progress(cell.dir)}" if state == "interrupted" else "start") + eta)
        elif finalize and state == "new":
            rec["status"] = "not started"
            say(f"{cell.name}: never started; --finalize starts nothing new")
        else:
            todo.append((cell, state))
    def write_summary() -> dict[str, Any]:
        from unisrec.data.dataset import write_json

        summary = summarise(spec, grid, records)
        if not dry_run:
            runs.mkdir(parents=True, exist_ok=True)
            write_json(runs / SUMMARY_NAME, summary)
        return summary

    def cell_ended() -> None:
        write_summary()
        if after_cell is not None:
            after_cell()

    if not dry_run and todo:
        for cell, _ in todo:
            records[cell.name]["status"] = "queued"
        # the summary is current during a campaign too (a report or an archive mid-campaign reads it)
        write_summary()
        try:
            _run_cells(todo, records, threads, isolate, parallel, finalize, say, on_cell_done=cell_ended)
        except Stopped:
            write_summary()  # the stopped and the never-started cells
            raise
    return write_summary()


def _run_cells(todo: list[tuple[Cell, str]], records: dict[str, dict[str, Any]], threads: int | None, isolate: bool,
               parallel: int, finalize: bool, say: Callable[[str], None], on_cell_done: Callable[[], Any] = lambda: None) -> None:
    def done(cell: Cell, state: str, error: str | None, stopped: bool = False) -> None:
        rec = records[cell.name]
        if stopped:  # a signal: the worker wrote its resume state; the next run resumes it
            rec.update(status="stopped", message=f"stopped by a signal, resume state written; see {display_path(cell.log)}")
            say(f"{cell.name}: {rec['message']}")
        elif error is None and cell_state(cell.dir) == "finished":
            rec["status"] = "resumed" if state == "interrupted" else "finished"
            say(f"{cell.name}: {rec['status']}")
        else:
            rec.update(status="failed", message=error or "no metrics.json written")
            say(f"{cell.name}: FAILED ({rec['message']})")
        on_cell_done()

    pending = list(todo)
    running: list[tuple[subprocess.Popen, Cell, str, Any]] = []

    def abandon_pending() -> None:
        for cell, _ in pending:
            records[cell.name]["status"] = "not started"
        pending.clear()

    # a SIGTERM / Ctrl-C: start no further cell, pass it on to the running workers (each finishes its
    # step and writes its resume state) and wait for them, so nothing is left writing after we exit
    passed_on = False
    with StopOnSignal("no further cell starts; the running ones write their resume state first") as stop:
        while pending or running:
            if stop.signum is not None and not passed_on:
                abandon_pending()
                for proc, *_ in running:
                    proc.send_signal(signal.SIGTERM)  # a worker that got the Ctrl-C too ignores it
                passed_on = True
            while pending and len(running) < (parallel if isolate else 1):
                cell, state = pending.pop(0)
                cell.dir.parent.mkdir(parents=True, exist_ok=True)
                say(f"{cell.name}: {'resuming' if state == 'interrupted' else 'starting'}"
                    + (f" (log: {display_path(cell.log)})" if isolate else ""))
                if not isolate:  # trains in this process: its own loop handles a signal (errors.Stopped)
                    try:
                        train_cell(cell.model, cell.dataset.path, cell.dir, cell.seed, threads, finalize)  # type: ignore[arg-type]
                        done(cell, state, None)
                    except UserError as exc:
                        done(cell, state, str(exc))
                    except Stopped:
                        done(cell, state, None, stopped=True)
                        abandon_pending()
                        raise
                    continue
                running.append(_start_worker(cell, state, records[cell.name]["command"], threads, finalize))
            for item in list(running):
                proc, cell, state, log = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                log.close()
                done(cell, state, None if proc.returncode == 0 else f"exit {proc.returncode}; see {display_path(cell.log)}",
                     stopped=proc.returncode in STOPPED_EXIT_CODES)
            if running:
                time.sleep(1.0)
    if stop.signum is not None:
        raise Stopped("stopped; the cells that were training wrote their resume state: `unisrec benchmark run` "
                      "again resumes them", stop.signum)


def _start_worker(cell: Cell, state: str, command: str, threads: int | None, finalize: bool) -> tuple[subprocess.Popen, Cell, str, Any]:
    """Train ``cell`` in a subprocess (``python -m unisrec.benchmark.runner TASK``), output to its log."""
    task = {"model": _entry_dict(cell.model), "dataset": str(cell.dataset.path), "output": str(cell.dir),
            "seed": cell.seed, "threads": threads, "finalize": finalize, "parent": os.getpid()}
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = open(cell.log, "a", encoding="utf-8")
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {state} {command}\n")
    log.flush()
    proc = subprocess.Popen([sys.executable, "-m", "unisrec.benchmark.runner", json.dumps(task)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, cell, state, log


def summarise(spec: BenchmarkSpec, grid: list[Cell], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The spec, and every cell with its status and (when finished) its test/valid metrics."""
    out = [{**records[cell.name], **cell_results(cell.dir)} for cell in grid]
    finished = sum(1 for r in out if r.get("test") is not None)
    return {"spec": spec.to_dict(), "finished": finished, "cells": out}


def cell_results(folder: Path) -> dict[str, Any]:
    """What a summary shows of a cell's outcome: its test/valid metrics, or how a pre-training
    cell ended; {} while it has neither."""
    if (folder / METRICS_NAME).is_file():
        m = json.loads((folder / METRICS_NAME).read_text())
        return {k: m.get(k) for k in ("test", "valid", "best_epoch", "epochs_run", "stop_reason", "wall_seconds")}
    if (folder / DONE_NAME).is_file():
        return {"pretraining": json.loads((folder / DONE_NAME).read_text())}
    return {}


def stop_with_parent(parent: int, every: float = 1.0) -> None:
    """End this process (SIGTERM) as soon as process ``parent`` is no longer its parent.

    Without it, killing `benchmark run` left its worker training, and the next `benchmark run`
    resumed the same cell in a second process (both wrote the resume state). Stopping mid-epoch
    costs at most that epoch: the resume state on disk is always a complete generation."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    if os.getppid() != parent:
        raise SystemExit(f"unisrec benchmark: the run that started this worker (pid {parent}) has ended; not training")
    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def _worker(argv: list[str]) -> int:
    """``python -m unisrec.benchmark.runner TASK_JSON``: one cell (what :func:`run_benchmark` spawns)."""
    p = argparse.ArgumentParser(prog="python -m unisrec.benchmark.runner")
    p.add_argument("task", help="the cell as JSON (model entry, dataset, output, seed, threads, finalize)")
    task = json.loads(p.parse_args(argv).task)
    if task.get("parent") is not None:
        stop_with_parent(task["parent"])
    m = task["model"]
    sources = tuple(DatasetEntry(name, None if path is None else Path(path), given, paper_name)
                    for name, path, given, paper_name in m.get("sources", []))
    model = ModelEntry(m["label"], m["model"], m["options"], m["pretrained"], m["unfreeze_all"], m["role"], m["paper"], sources,
                       None if m.get("only_on") is None else tuple(m["only_on"]))
    try:
        train_cell(model, task["dataset"], task["output"], task["seed"], task["threads"], task["finalize"])
    except Stopped as exc:
        print(f"unisrec benchmark: {exc}", file=sys.stderr)
        return exc.exit_code
    except UserError as exc:
        print(f"unisrec benchmark: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker(sys.argv[1:]))
