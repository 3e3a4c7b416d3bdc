"""`unisrec explain MODEL_DIR --history ID,ID,...`: a case study in the manner of the paper's Fig. 5.

For one history (raw item ids of the model's catalogue, oldest first) it shows

1. the history with each item's text;
2. the top-k recommendations with texts and scores -- exactly :meth:`unisrec.serving.Recommender.recommend`
   (score = cosine of the sequence vector and the item vector; the model ranks by cosine / temperature);
3. with ``--source DIR`` (a dataset directory or another model directory, e.g. a pre-training domain),
   the nearest *source-domain* items of each recommended item: both sides are adapted text vectors,
   ``UniSRec.item_table_from_features`` (the MoE adaptor, Eq. 2-5, applied to the text features; no
   ID embedding, also for a transductive model), compared by cosine. This shows which items of the
   other domain the model maps close to what it recommends -- the paper's Fig. 5 argument that
   universal text representations link domains without shared users or items.

The source's text vectors must come from the same text encoder as the model's (same encoder, pooling
and size), else the adaptor would read vectors of another space: checked, with a one-line error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from unisrec.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="case study: a history, its recommendations and their nearest items of another domain",
        description="Print a history (item texts), the model's top-k recommendations (texts, cosine scores) and, "
        "with --source, each recommended item's nearest items of a source catalogue by adapted text vectors "
        "(the paper's Fig. 5; docs/analyses.md).",
    )
    p.add_argument("model", metavar="MODEL_DIR", help="a UniSRec model directory (`unisrec finetune` output)")
    p.add_argument("--history", required=True, metavar="ID,ID,...", help="raw item ids of the model's catalogue, oldest first")
    p.add_argument("--k", type=int, default=10, help="recommendations to show (default: 10)")
    p.add_argument("--source", metavar="DIR", help="a dataset directory or model directory whose items are searched for neighbours")
    p.add_argument("--neighbours", type=int, default=3, help="source items per recommendation (default: 3)")
    p.add_argument("--exclude-seen", action="store_true", help="do not recommend the history's own items")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_explain)


def parse_history(text: str) -> list[str]:
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise UserError("--history: give at least one item id (comma-separated, oldest first)")
    return ids


def load_source(source: str, model_encoder: dict[str, Any], model_dir: str) -> tuple[list[str], list[str], Any, str]:
    """(ids, texts, (n + 1, text_dim) features with row 0 padding, feature set name) of a source
    catalogue: a model directory's ``catalogue/`` or a dataset directory's feature set made by the
    model's text encoder."""
    from unisrec.data.dataset import Dataset
    from unisrec.evaluation.cli import matching_feature_set
    from unisrec.models.model_dir import CATALOGUE, load_catalogue, read_model_config

    path = Path(source)
    if (path / CATALOGUE / "items.parquet").is_file():  # a model directory
        ids, texts, feats = load_catalogue(path)
        info = read_model_config(path).get("encoder") or {}
        keys = ("encoder", "pooling", "dim")
        if feats is None or any(info.get(k) != model_encoder.get(k) for k in keys):
            raise UserError(f"--source {source}: its features ({info.get('encoder')}, {info.get('pooling')} pooling, {info.get('dim')}-d) "
                            f"are not the model's ({model_encoder.get('encoder')}, {model_encoder.get('pooling')} pooling, "
                            f"{model_encoder.get('dim')}-d)")
        return ids, texts, feats, (read_model_config(path).get("dataset") or {}).get("features") or "catalogue"
    if (path / "manifest.json").is_file():  # a dataset directory
        ds = Dataset.load(path)
        name = matching_feature_set(ds, model_encoder, None, model_dir)
        return list(ds.item_ids), list(ds.item_texts), ds.features(name), name
    raise UserError(f"--source {source}: neither a dataset directory (manifest.json) nor a model directory (catalogue/)")


def nearest_rows(queries: Any, table: Any, n: int) -> tuple[Any, Any]:
    """(cosines, row indices) of the ``n`` rows of ``table`` most cosine-similar to each query;
    row 0 of ``table`` is padding and never returned. Ties keep the lower row first."""
    import torch
    import torch.nn.functional as F

    q = F.normalize(torch.as_tensor(queries, dtype=torch.float32), dim=-1)
    t = F.normalize(torch.as_tensor(table, dtype=torch.float32)[1:], dim=-1)
    cos = q @ t.T
    n = min(n, t.shape[0])
    # a stable descending sort: equal cosines keep catalogue order
    order = torch.sort(cos, dim=1, descending=True, stable=True).indices[:, :n]
    return cos.gather(1, order).numpy(), order.numpy() + 1


def text_vectors(model: Any, features: Any, rows: Sequence[int] | None = None) -> Any:
    """Adapted text vectors (Eq. 2-5, no ID embedding) of ``features`` rows (all when None)."""
    import numpy as np
    import torch

    feats = np.asarray(features if rows is None else np.asarray(features)[np.asarray(rows)], dtype=np.float32)
    no_id = torch.full((feats.shape[0],), -1, dtype=torch.long)
    return model.item_table_from_features(feats, item_ids=no_id).cpu()


def explain(
    model_dir: str,
    history: Sequence[str],
    k: int = 10,
    source: str | None = None,
    neighbours: int = 3,
    exclude_seen: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """The case study as a dict: ``{"model", "history": [{"id", "text"}], "recommendations": [{"rank",
    "id", "score", "text", "source_neighbours"?: [{"id", "text", "cosine"}]}], "source"?}``."""
    from unisrec.models.model_dir import load_catalogue, read_model_config
    from unisrec.serving.recommender import Recommender

    if k < 1 or neighbours < 1:
        raise UserError("--k and --neighbours must be >= 1")
    rec = Recommender.from_pretrained(model_dir, device=device)
    unknown = rec.unknown_ids(history)
    if unknown:
        raise UserError(f"--history: {len(unknown)} id(s) not in the catalogue of {model_dir}: {', '.join(unknown[:10])}")
    ids, texts, feats = load_catalogue(model_dir)
    row_of = {raw: i + 1 for i, raw in enumerate(ids)}
    recs = rec.recommend(list(history), k, exclude_seen)
    out: dict[str, Any] = {
        "model": str(model_dir),
        "history": [{"id": h, "text": texts[row_of[h] - 1]} for h in history],
        "recommendations": [{"rank": r + 1, **item} for r, item in enumerate(recs)],
        "score": "cosine of the sequence vector and the item vector (the model ranks by cosine / temperature)",
    }
    if source is not None and recs:
        cfg = read_model_config(model_dir)
        src_ids, src_texts, src_feats, src_name = load_source(source, cfg.get("encoder") or {}, model_dir)
        src_table = text_vectors(rec.model, src_feats)  # row 0 = padding
        queries = text_vectors(rec.model, feats, [row_of[r["id"]] for r in recs])
        cos, rows = nearest_rows(queries, src_table, neighbours)
        for item, c_row, i_row in zip(out["recommendations"], cos, rows):
            item["source_neighbours"] = [{"id": src_ids[i - 1], "text": src_texts[i - 1], "cosine": float(c)} for c, i in zip(c_row, i_row)]
        out["source"] = {"path": str(source), "features": src_name, "items": len(src_ids),
                         "similarity": "cosine of adapted text vectors (MoE adaptor on the text features, no ID embedding)"}
    return out


def short(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_explanation(result: dict[str, Any]) -> str:
    lines = [f"history ({len(result['history'])} items, oldest first):"]
    lines += [f"  {i:>2}. {h['id']}  {short(h['text'])}" for i, h in enumerate(result["history"], 1)]
    lines.append(f"top-{len(result['recommendations'])} recommendations (score = cosine of sequence and item vectors):")
    for r in result["recommendations"]:
        lines.append(f"  {r['rank']:>2}. {r['score']:.4f}  {r['id']}  {short(r['text'])}")
        for n in r.get("source_neighbours", []):
            lines.append(f"        ~ {n['cosine']:.3f}  {n['id']}  {short(n['text'], 80)}")
    if "source" in result:
        src = result["source"]
        lines.append(f"(~ = nearest of the {src['items']:,} items of {src['path']}, {src['similarity']})")
    return "\n".join(lines)


def _explain(args: argparse.Namespace) -> int:
    result = explain(args.model, parse_history(args.history), args.k, args.source, args.neighbours, args.exclude_seen, args.device)
    print(json.dumps(result, sort_keys=True) if args.json else format_explanation(result))
    return 0
