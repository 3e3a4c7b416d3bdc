"""`unisrec evaluate MODEL_DIR`: full-ranking Recall@K / NDCG@K of a model directory on a split."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="full-ranking Recall@K / NDCG@K of a model directory",
        description="Rank every item of the domain for each user's held-out item (leave-one-out); "
        "history items stay in the ranking, only padding is excluded.",
    )
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--ks", default="10,50", help="comma-separated cut-offs (default: 10,50)")
    p.add_argument("--dataset", metavar="DIR", help="dataset directory (default: the one recorded in MODEL_DIR/config.json); another catalogue "
                   "only for a model without per-item weights (ZESRec: zero-shot by text)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_evaluate)


def parse_ks(text: str) -> list[int]:
    from unisrec.errors import UserError

    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise UserError(f"--ks {text!r}: expected comma-separated positive integers such as 10,50") from None
    if not ks or min(ks) < 1:
        raise UserError(f"--ks {text!r}: expected comma-separated positive integers such as 10,50")
    return ks


def evaluate_dir(model_dir: str, split: str = "test", ks=(10, 50), dataset: str | None = None, device: str = "auto", batch_size: int = 4096) -> dict:
    """Load ``model_dir`` and its dataset, check they match, return full-ranking metrics."""
    from pathlib import Path

    from unisrec.data.dataset import Dataset
    from unisrec.errors import UserError
    from unisrec.evaluation.metrics import evaluate_model
    from unisrec.models.model_dir import load_catalogue, load_model, read_model_config
    from unisrec.training.distributed import resolve_device

    cfg = read_model_config(model_dir)
    path = dataset or (cfg.get("dataset") or {}).get("path")
    if not path:
        raise UserError(f"{model_dir}/config.json records no dataset path; pass --dataset DIR")
    if not Path(path).is_dir():
        raise UserError(f"dataset {path} (recorded in {model_dir}/config.json) does not exist; pass --dataset DIR")
    ds = Dataset.load(path)
    item_ids, _, _ = load_catalogue(model_dir)
    zero_shot = item_ids != ds.item_ids
    if zero_shot and not inductive_over_items(cfg):
        raise UserError(
            f"dataset {path} has a different item catalogue ({ds.num_items} items) than model {model_dir} "
            f"({len(item_ids)} items); evaluate on the dataset the model was trained on"
        )
    dev = resolve_device(device)
    model = load_model(model_dir)
    if zero_shot:  # a model without per-item weights scores the other catalogue by its text vectors
        model.set_item_features(target_features(cfg, model_dir, ds))
    return evaluate_model(model.to(dev), ds, split, ks, batch_size, dev)


def inductive_over_items(cfg: dict) -> bool:
    """Whether a model directory's model has no per-item parameters (class attribute
    ``inductive_over_items``, e.g. ZESRec), so it can score any catalogue from text vectors."""
    from unisrec.models import registry

    kind = cfg.get("model_type")
    return kind in registry.names() and bool(getattr(registry.get(kind).model_class, "inductive_over_items", False))


def target_features(cfg: dict, model_dir: str, ds) -> "np.ndarray":  # noqa: F821
    """The target dataset's text vectors for zero-shot evaluation: the feature set of the model's
    name, made by the same encoder (and pooling, size) as the vectors the model was trained on."""
    import numpy as np

    from unisrec.errors import UserError

    name = (cfg.get("dataset") or {}).get("features")
    ours = cfg.get("encoder") or {}
    theirs = (ds.manifest.get("features") or {}).get(name)
    keys = ("encoder", "pooling", "dim")
    if theirs is None or any(ours.get(k) != theirs.get(k) for k in keys):
        have = ", ".join(f"{n} ({i.get('encoder')}, {i.get('dim')}-d)" for n, i in sorted((ds.manifest.get("features") or {}).items())) or "none"
        raise UserError(
            f"model {model_dir} was trained on feature set {name!r} ({ours.get('encoder')}, {ours.get('pooling')} pooling, "
            f"{ours.get('dim')}-d); dataset {ds.path} has no matching one (it has: {have}); "
            f"run `unisrec encode {ds.path} --encoder {ours.get('encoder')} --pooling {ours.get('pooling')}`"
        )
    return np.array(ds.features(name), dtype=np.float32)


def _evaluate(args: argparse.Namespace) -> int:
    metrics = evaluate_dir(args.model, args.split, parse_ks(args.ks), args.dataset, args.device, args.batch_size)
    if args.json:
        print(json.dumps(metrics, sort_keys=True))
    else:
        print(f"{args.model} ({args.split}, full ranking)")
        for k, v in metrics.items():
            print(f"  {k:<10} {v:.4f}")
    return 0
