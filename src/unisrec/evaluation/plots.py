"""Training curves: validation metric and training loss per epoch, several runs on one figure.

Reads the per-epoch log every training command writes, ``MODEL_DIR/training_log.jsonl``: one JSON
object per line, ``{"epoch": 1, "loss": 7.1, "seconds": 3.2, "valid": {"ndcg@10": 0.05, ...}}``.
matplotlib runs with the Agg backend (no display needed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from unisrec.errors import UserError

LOG_NAME = "training_log.jsonl"


def read_training_log(model_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The epochs of ``MODEL_DIR/training_log.jsonl``, in file order; a clear error on a bad line."""
    path = Path(model_dir) / LOG_NAME
    if not path.is_file():
        raise UserError(f"{path} does not exist: {model_dir} was not written by a training command")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "epoch" not in row:
                raise UserError(f"{path}, line {lineno}: expected an object with an 'epoch' key")
            rows.append(row)
    return rows


def plot_training_curves(
    runs: Mapping[str, str | os.PathLike],
    out_png: str | os.PathLike,
    metric: str = "ndcg@10",
    title: str | None = None,
) -> Path:
    """One PNG, two panels: validation ``metric`` per epoch (left) and training loss (right).

    ``runs`` maps a legend label to a model directory. Epochs without a validation entry (or without
    ``metric``) are skipped on the left panel; the best epoch of each run is marked.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise UserError("plot_training_curves: no runs to plot")
    logs = {label: read_training_log(d) for label, d in runs.items()}
    fig, (ax_metric, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for label, rows in logs.items():
        points = [(r["epoch"], r["valid"][metric]) for r in rows if isinstance(r.get("valid"), dict) and metric in r["valid"]]
        (line,) = ax_metric.plot([], [])  # reserve a colour shared by both panels
        colour = line.get_color()
        if points:
            ep, val = zip(*points)
            line.set_data(ep, val)
            line.set_label(label)
            line.set_marker("o")
            line.set_markersize(3)
            best = max(range(len(val)), key=val.__getitem__)
            ax_metric.plot([ep[best]], [val[best]], marker="*", markersize=12, color=colour)
        losses = [(r["epoch"], r["loss"]) for r in rows if r.get("loss") is not None]
        if losses:
            ep, loss = zip(*losses)
            ax_loss.plot(ep, loss, marker="o", markersize=3, color=colour, label=label)
    ax_metric.relim()
    ax_metric.autoscale_view()
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(f"validation {metric}")
    ax_metric.set_title(f"validation {metric} (star = best epoch)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("training loss")
    for ax in (ax_metric, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out_png)
    return out_png
