"""What the benchmark scripts share: paths, the paper's reference numbers, result files, formats.

The scripts run as ``python benchmarks/NAME.py`` with the package installed (``pip install -e .``);
Python puts the script's own folder on ``sys.path``, so ``import benchlib`` works from any of them.
Only the standard library (and the torch-free ``unisrec.benchmark.paper``) is used here, so
importing it costs nothing.

* :data:`ROOT`, :data:`RESULTS`: the repository and its ``results/`` folder (one sub-folder per
  experiment, indexed in ``results/README.md``); :func:`data_root` / :func:`dataset_dir`: where
  prepared dataset folders live (``$UNISREC_DATA``, else ``data/`` in the repository);
  :func:`shared_root`: the read-only public data sets beside the clone (``$UNISREC_SHARED``, else
  ``../shared``); :func:`display_path`: a path as it should appear in a results page.
* :func:`paper_table3` / :func:`paper_row`: the paper's Table 3 numbers, from the package
  (``unisrec.benchmark.paper``, the one copy; docs/protocol.md shows them and a test keeps the two equal).
* :func:`mean_std`, :func:`fmt_mean_std`, :func:`fmt_values`: mean ± sample std over seeds.
* :func:`write_result`: a result as ``PREFIX.json`` + ``PREFIX.md``; :func:`read_jsonl`;
  :func:`reproduce_command`: the command line a page records.
* :func:`read_atomic_text`, :func:`read_item2index`: the authors' atomic item files.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from unisrec.benchmark import paper
from unisrec.benchmark.paper import METRICS, MODE_MODELS  # noqa: F401  (re-exported for the scripts)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


# ----------------------------------------------------------------------------- paths
def data_root() -> Path:
    """Folder holding one prepared + encoded dataset folder per name (``scientific``, ...)."""
    env = os.environ.get("UNISREC_DATA")
    return Path(env) if env else ROOT / "data"


def dataset_dir(name: str) -> Path:
    return data_root() / name


def shared_root() -> Path:
    """The read-only public data sets (``data/scientific``, ``data/games``, ``data/online_retail``)."""
    env = os.environ.get("UNISREC_SHARED")
    return Path(env) if env else ROOT.parent / "shared"


def display_path(path: str | os.PathLike) -> str:
    """``path`` as a results page should show it: relative to the repository when it lies inside it,
    ``$UNISREC_DATA/...`` under the datasets folder, ``TMPDIR/...`` under the temp folder, otherwise unchanged (pages should hold no machine paths)."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    bases = [(ROOT, ""), (Path(tempfile.gettempdir()), "TMPDIR")]
    if os.environ.get("UNISREC_DATA"):  # the datasets folder the benchmarks read (dataset_dir)
        bases.insert(1, (Path(os.environ["UNISREC_DATA"]), "$UNISREC_DATA"))
    for base, name in bases:
        for candidate in (p, p.resolve()):
            try:
                rel = candidate.relative_to(base)
            except ValueError:
                continue
            return str(Path(name, rel)) if name else str(rel)
    return str(p)


# ---------------------------------------------------------------- reference numbers
def paper_table3() -> dict[tuple[str, str], tuple[float, float, float, float]]:
    """Paper Table 3 (test set): {(dataset, model): (R@10, N@10, R@50, N@50)}, every dataset and
    model of the paper (``unisrec.benchmark.paper``)."""
    return paper.table3()


def paper_row(dataset: str, model: str) -> tuple[float, float, float, float] | None:
    """The reference row for a run's dataset and model name, or None.

    ``model`` may be a fine-tuning mode (``inductive``, ``transductive``). A dataset prepared with
    shuffled ties (``online_retail_shuffled``) is the same data in another order, so it maps to
    its base name.
    """
    return paper_table3().get((paper.paper_dataset(dataset), MODE_MODELS.get(model, model)))


# ------------------------------------------------------------------------- numbers
def mean_std(values: Iterable[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    vals = list(values)
    if not vals:
        raise ValueError("no values")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def fmt_mean_std(mean: float, std: float | None = None, digits: int = 4) -> str:
    """``0.1057 ± 0.0010``, or just the mean when there is no spread (one seed)."""
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_values(values: Sequence[float], digits: int = 4) -> str:
    """Mean ± sample std of ``values``; ``-`` when there are none."""
    return fmt_mean_std(*mean_std(values), digits=digits) if len(values) else "-"


# -------------------------------------------------------------------------- files
def write_result(prefix: str | os.PathLike, data: Any, markdown: str | Sequence[str], sort_keys: bool = False) -> tuple[Path, Path]:
    """Write ``PREFIX.json`` (indented) and ``PREFIX.md`` (lines joined, ending in a newline).

    ``prefix`` may carry a ``.json`` / ``.md`` suffix; the folder is created. Returns both paths.
    """
    prefix = Path(prefix)
    if prefix.suffix in (".json", ".md"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    text = markdown if isinstance(markdown, str) else "\n".join(markdown)
    json_path, md_path = prefix.parent / f"{prefix.name}.json", prefix.parent / f"{prefix.name}.md"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n", encoding="utf-8")
    md_path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return json_path, md_path


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """One object per non-empty line (e.g. a run's ``training_log.jsonl``)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def reproduce_command(script: str | os.PathLike, argv: Sequence[str] | None = None) -> str:
    """``python benchmarks/NAME.py ARGS`` for a results page (machine paths made repo-relative)."""
    args = sys.argv[1:] if argv is None else list(argv)
    args = [display_path(a) if os.path.isabs(a) else a for a in args]
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *args])


def read_atomic_text(path: str | os.PathLike) -> dict[str, str]:
    """An atomic item-text file (header line, then ``item_id<TAB>text``): {item id: text}, file order."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            item, _, text = line.rstrip("\n").partition("\t")
            out[item] = text
    return out


def read_item2index(path: str | os.PathLike) -> dict[int, str]:
    """An ``X.item2index`` file (``raw_id<TAB>index``, 0-based): {index: raw id}."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            raw, idx = line.rstrip("\n").split("\t")
            out[int(idx)] = raw
    return out
