"""A benchmark spec: a grid of datasets x models x seeds, read from YAML (docs/benchmark.md).

::

    name: table3_scientific
    datasets:
      scientific: scientific            # relative to this file, else to $UNISREC_DATA
    seeds: [2020, 2021, 2022]
    options: {epochs: 300}              # every cell: TrainConfig / model-config option names
    models:                             # row label -> what trains
      SASRec: {model: sasrec}           # a registered model name (`unisrec train NAME`)
      UniSRec_t: {model: finetune, mode: inductive}        # `unisrec finetune`
      UniSRec_t (pre-trained): {model: finetune, mode: inductive, from: ckpt/pre}
      UniSRec-PT: {model: pretrain, source: [scientific], epochs: 8}     # `unisrec pretrain`

A model entry's keys: ``model`` (a registered name, ``finetune``, ``pretrain``: a `unisrec
pretrain` checkpoint of the cell's dataset plus its ``source`` datasets, which other specs name in
``from``, finished when its ``done.json`` is written, ``zero-shot`` (rank
the cell's dataset with the ``from`` model by item text, training nothing: the paper's "w/o
fine-tuning"), or ``popularity`` (the popularity ranking) -- these two are deterministic cells, every
seed the same numbers, taking only the ``device`` / ``eval_batch_size`` / ``threads`` options --),
``from`` (the model directory to start from: a `unisrec pretrain` checkpoint for ``finetune``
(``--from``), else a model trained on another domain, e.g. a source-trained ZESRec
(``--init-from``); the model to evaluate for ``zero-shot``; relative to the spec's folder when
found there, else to the current folder), ``unfreeze_all`` (finetune only), ``role`` (``ours`` = a UniSRec column, ``baseline``, or ``control``: a diagnostic
variant -- e.g. a baseline with one of its parts switched off -- reported and tested against ours,
never counted as the best baseline nor ranked), ``paper`` (the paper's Table 3
column to print beside it; default: the model's own column, none for a control), ``options`` (a mapping); any other key is an option too (``mode: inductive``).
``datasets`` (the spec's datasets this model runs on; default all of them), ``source`` (a dataset or a list of them, e.g. ``RecGURU: {model: recguru, source: [games]}``) names the
source domains of a cross-domain model (``--source DIR``); each is found like the spec's datasets.
Option names are the flags of `unisrec train NAME` / `unisrec finetune` with ``_`` for ``-``.
This module reads and checks the file's shape only (no torch); option names are checked when a cell
runs, against the model's config classes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unisrec.benchmark import paper
from unisrec.errors import UserError

FINETUNE = "finetune"
PRETRAIN = "pretrain"
ZERO_SHOT = "zero-shot"  # evaluate a `from:` model on the cell's dataset by item text, training nothing
POPULARITY = "popularity"  # the most-bought items of the training part, for everyone
EVALUATE_ONLY = (ZERO_SHOT, POPULARITY)
ROLES = ("ours", "baseline", "control")
ENTRY_KEYS = ("model", "from", "unfreeze_all", "role", "paper", "options", "datasets")
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+()-]*( [A-Za-z0-9_.+()-]+)*$")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    path: Path | None  # None when the folder was not found (the cells are then reported, not run)
    given: str  # the path as the spec wrote it
    paper: str  # the paper's dataset name (Table 3 row group)


@dataclass(frozen=True)
class ModelEntry:
    """One column of the table: what to train and how to label it."""

    label: str
    model: str  # registered model name, or "finetune"
    options: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None  # `from:` (resolved path): finetune --from, a trained model's --init-from
    unfreeze_all: bool = False
    role: str = "baseline"
    paper: str | None = None  # the paper's Table 3 column, or None
    sources: tuple[DatasetEntry, ...] = ()  # `source:` -- the source domains (--source DIR ...)
    only_on: tuple[str, ...] | None = None  # `datasets:` -- the spec's datasets this model runs on (None: all)

    def runs_on(self, dataset: str) -> bool:
        return self.only_on is None or dataset in self.only_on

    @property
    def is_finetune(self) -> bool:
        return self.model == FINETUNE

    @property
    def is_pretrain(self) -> bool:
        return self.model == PRETRAIN

    @property
    def trains_nothing(self) -> bool:
        """A cell that only ranks (``zero-shot``, ``popularity``): deterministic, every seed alike."""
        return self.model in EVALUATE_ONLY

    @property
    def folder(self) -> str:
        """The cell folder name of this model (its label, spaces as ``_``)."""
        return self.label.replace(" ", "_")

    def command(self, dataset: str, output: str, seed: int, extra: dict[str, Any] | None = None) -> str:
        """The `unisrec` command line that trains this cell (for results pages: the `from:` folder
        relative to the current folder when inside it)."""
        extra = dict(extra or {})
        pretrained = self.pretrained and display_path(self.pretrained)
        if self.model == ZERO_SHOT:
            return f"unisrec evaluate {pretrained} --dataset {dataset} --json"
        if self.model == POPULARITY:
            return f"unisrec evaluate --popularity --dataset {dataset} --json"
        if self.is_pretrain:  # the source domains are more datasets to pre-train on
            words = ["unisrec", "pretrain", dataset, *map(str, extra.pop("source", []))]
        elif self.is_finetune:
            words = ["unisrec", "finetune", dataset]
        else:
            words = ["unisrec", "train", self.model, dataset]
        words += ["--output", output]
        if self.pretrained:
            words += ["--from" if self.is_finetune else "--init-from", pretrained]
        if self.unfreeze_all:
            words.append("--unfreeze-all")
        for k, v in {**self.options, "seed": seed, **extra}.items():
            if k == "source":  # a repeatable flag: --source A --source B
                words += [w for path in v for w in ("--source", str(path))]
                continue
            words += [f"--{k.replace('_', '-')}", ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)]
        return " ".join(words)


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the current folder when inside it (results pages hold no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    datasets: dict[str, DatasetEntry]
    models: dict[str, ModelEntry]
    seeds: tuple[int, ...]
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """What ``benchmark.json`` records of the spec (the report reads labels, roles, paper keys)."""
        return {
            "name": self.name,
            "seeds": list(self.seeds),
            "dataset_order": list(self.datasets),  # the JSON file sorts keys; these keep the spec's order
            "model_order": list(self.models),
            "datasets": {k: {"path": d.given, "paper": d.paper} for k, d in self.datasets.items()},
            "models": {k: {"model": m.model, "options": m.options, "from": m.pretrained and display_path(m.pretrained), "unfreeze_all": m.unfreeze_all,
                           "role": m.role, "paper": m.paper, "folder": m.folder, "source": [s.given for s in m.sources],
                           **({"datasets": list(m.only_on)} if m.only_on is not None else {})}
                       for k, m in self.models.items()},
        }


def default_paper_model(model: str, options: dict[str, Any]) -> str | None:
    """The paper's column for a model entry: its registered name if the paper has it, a finetune's
    mode (inductive -> ``unisrec_t``, transductive -> ``unisrec_t_id``)."""
    if model in (PRETRAIN, *EVALUATE_ONLY):
        return None
    if model == FINETUNE:
        return paper.MODE_MODELS.get(str(options.get("mode", "inductive")))
    return model if model in paper.MODELS else None


def resolve_dataset(given: str, base: Path | None) -> Path | None:
    """A dataset folder: absolute; else relative to the spec's folder (the current folder for a spec
    without a file); else to ``$UNISREC_DATA`` (default ``data/``); None when none of them exists."""
    p = Path(os.path.expandvars(os.path.expanduser(given)))
    candidates = [p] if p.is_absolute() else [base / p if base else p, Path(os.environ.get("UNISREC_DATA", "data")) / p]
    return next((c.resolve() for c in candidates if c.is_dir()), None)


def _model_entry(label: str, raw: Any, base: Path | None, common: dict[str, Any]) -> ModelEntry:
    where = f"models.{label}"
    if not LABEL.match(label):
        raise UserError(f"{where}: a label is letters, digits and _ . + ( ) - (it names the runs folder)")
    if isinstance(raw, str):
        raw = {"model": raw}
    if not isinstance(raw, dict) or "model" not in raw:
        raise UserError(f"{where}: expected a mapping with a 'model' key (a registered model name or 'finetune')")
    if not isinstance(raw.get("options") or {}, dict):
        raise UserError(f"{where}.options must be a mapping of option: value")
    options = {**common, **(raw.get("options") or {})}
    options.update({k: v for k, v in raw.items() if k not in ENTRY_KEYS})
    for k in ("seed", "output", "resume"):
        if k in options:
            raise UserError(f"{where}: {k!r} is set by the benchmark (seeds: / --runs), not per model")
    model = str(raw["model"])
    pretrained = raw.get("from")
    if raw.get("unfreeze_all") and model != FINETUNE:
        raise UserError(f"{where}: 'unfreeze_all' applies to model: finetune only")
    if model == ZERO_SHOT and not pretrained:
        raise UserError(f"{where}: model: zero-shot evaluates the model directory named in 'from' (a `unisrec pretrain` "
                        "checkpoint or a model without per-item weights, e.g. a source-trained ZESRec)")
    if model == POPULARITY and pretrained:
        raise UserError(f"{where}: model: popularity counts the cell's own training part; it takes no 'from'")
    if model in EVALUATE_ONLY:  # nothing trains: the spec's common training options do not apply
        kept = ("device", "eval_batch_size", "threads")
        own = set(raw.get("options") or {}) | {k for k in raw if k not in ENTRY_KEYS}
        if wrong := sorted(k for k in own if k not in kept):
            raise UserError(f"{where}: model: {model} trains nothing; it takes only {', '.join(kept)}, not {', '.join(wrong)}")
        options = {k: v for k, v in options.items() if k in kept}
    if pretrained and "init_from" in options:
        raise UserError(f"{where}: 'from' and 'init_from' name the same thing; keep one")
    if pretrained:
        p = Path(os.path.expanduser(str(pretrained)))
        pretrained = str(p if p.is_absolute() or base is None else (base / p).resolve() if (base / p).exists() else p)
    given = options.pop("source", None)
    given = [] if given is None else given if isinstance(given, list) else [given]
    if not all(isinstance(g, str) and g for g in given):
        raise UserError(f"{where}.source: a dataset folder or a list of them")
    sources = tuple(DatasetEntry(g, resolve_dataset(g, base), g, paper.paper_dataset(g)) for g in given)
    role = raw.get("role", "ours" if model in (FINETUNE, PRETRAIN, "unisrec") else "baseline")
    if role not in ROLES:
        raise UserError(f"{where}.role must be ours, baseline or control, got {role!r}")
    # a control is a variant the paper never ran: no paper number beside it unless the spec names one
    paper_key = raw["paper"] if "paper" in raw else None if role == "control" else default_paper_model(model, options)
    if paper_key is not None and paper_key not in paper.MODELS:
        raise UserError(f"{where}.paper: {paper_key!r} is not a Table 3 column; known: {', '.join(paper.MODELS)}")
    only_on = raw.get("datasets")
    if only_on is not None:
        only_on = [only_on] if isinstance(only_on, str) else only_on
        if not isinstance(only_on, list) or not only_on or not all(isinstance(d, str) for d in only_on):
            raise UserError(f"{where}.datasets: a dataset name of the spec or a list of them (the model runs on those only)")
        only_on = tuple(only_on)
    return ModelEntry(label, model, options, pretrained, bool(raw.get("unfreeze_all", False)), role, paper_key, sources, only_on)


def spec_from_dict(data: Any, source: Path | None = None) -> BenchmarkSpec:
    """Check and normalise a spec mapping (see the module docstring); ``source`` is the YAML file."""
    where = str(source) if source else "spec"
    if not isinstance(data, dict):
        raise UserError(f"{where}: a benchmark spec is a mapping (datasets, models, seeds)")
    unknown = set(data) - {"name", "datasets", "models", "seeds", "options"}
    if unknown:
        raise UserError(f"{where}: unknown keys {', '.join(sorted(unknown))}; known: name, datasets, models, seeds, options")
    base = source.parent if source else None
    datasets_raw, models_raw = data.get("datasets"), data.get("models")
    if not isinstance(datasets_raw, dict) or not datasets_raw:
        raise UserError(f"{where}: 'datasets' must map a name to a dataset folder")
    if not isinstance(models_raw, dict) or not models_raw:
        raise UserError(f"{where}: 'models' must map a row label to a model entry")
    seeds_raw = data.get("seeds", [2020])
    seeds_list = seeds_raw if isinstance(seeds_raw, list) else [seeds_raw]
    if not seeds_list or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds_list):
        raise UserError(f"{where}: 'seeds' must be a list of integers")
    if len(set(seeds_list)) != len(seeds_list):
        raise UserError(f"{where}: 'seeds' repeats a seed")
    common = data.get("options") or {}
    if not isinstance(common, dict):
        raise UserError(f"{where}: 'options' must be a mapping of option: value")
    datasets = {}
    for name, raw in datasets_raw.items():
        if not LABEL.match(str(name)) or " " in str(name):
            raise UserError(f"{where}: dataset name {name!r}: letters, digits and _ . + - only (it names the runs folder)")
        raw = raw if isinstance(raw, dict) else {"path": raw}
        given = str(raw.get("path", name))
        datasets[str(name)] = DatasetEntry(str(name), resolve_dataset(given, base), given,
                                           str(raw.get("paper", paper.paper_dataset(str(name)))))
    models = {str(label): _model_entry(str(label), raw, base, common) for label, raw in models_raw.items()}
    for m in models.values():
        if m.only_on is not None and (unknown := [d for d in m.only_on if d not in datasets]):
            raise UserError(f"{where}: models.{m.label}.datasets names {', '.join(unknown)}, not a dataset of the spec "
                            f"({', '.join(datasets)})")
    by_folder: dict[str, list[str]] = {}
    for m in models.values():
        by_folder.setdefault(m.folder, []).append(m.label)
    if clashes := {folder: labels for folder, labels in by_folder.items() if len(labels) > 1}:
        raise UserError(f"{where}: model labels that name the same folder: "
                        + "; ".join(f"{', '.join(map(repr, labels))} -> {folder}" for folder, labels in clashes.items())
                        + " (spaces become _): rename one")
    name = str(data.get("name") or (source.stem if source else "benchmark"))
    return BenchmarkSpec(name, datasets, models, tuple(int(s) for s in seeds_list), source)


def load_spec(path: str | os.PathLike) -> BenchmarkSpec:
    """Read a spec YAML file (see the module docstring)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"benchmark spec {path} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"benchmark spec {path} is not valid YAML: {exc}") from None
    return spec_from_dict(data, path.resolve())


def subset(spec: BenchmarkSpec, datasets: list[str] | None = None, models: list[str] | None = None,
           seeds: list[int] | None = None) -> BenchmarkSpec:
    """``spec`` restricted to some datasets / model labels / seeds (each None = all); unknown names are errors."""
    def pick(kind: str, have: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
        if wanted is None:
            return have
        missing = [w for w in wanted if w not in have]
        if missing:
            raise UserError(f"--{kind}: {', '.join(missing)} not in the spec; it has: {', '.join(have)}")
        return {k: v for k, v in have.items() if k in wanted}

    if seeds is not None and not set(seeds) <= set(spec.seeds):
        raise UserError(f"--seeds: {', '.join(str(s) for s in seeds if s not in spec.seeds)} not in the spec; it has: "
                        f"{', '.join(map(str, spec.seeds))}")
    return BenchmarkSpec(spec.name, pick("datasets", spec.datasets, datasets), pick("models", spec.models, models),
                         tuple(s for s in spec.seeds if seeds is None or s in seeds), spec.source)
