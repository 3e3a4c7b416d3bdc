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
    p.add_argument("model", metavar="MODEL_DIR", nargs="?", help="a model directory (or none with --popularity)")
    p.add_argument("--popularity", action="store_true", help="evaluate the popularity ranking of --dataset DIR (the most-bought "
                   "items of the training part, for everyone) instead of a model: the floor every model must clear")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--ks", default="10,50", help="comma-separated cut-offs (default: 10,50)")
    p.add_argument("--dataset", metavar="DIR", help="dataset directory (default: the one recorded in MODEL_DIR/config.json); another catalogue "
                   "only for a model without per-item weights (ZESRec, inductive UniSRec, a `unisrec pretrain` checkpoint: "
                   "zero-shot by text)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    lt = p.add_argument_group("long-tail analysis (paper Fig. 4, docs/analyses.md)")
    lt.add_argument("--by-popularity", action="store_true", help="metrics per group of test users by their target item's "
                    "popularity (interactions in the training part)")
    lt.add_argument("--groups", type=int, default=5, help="number of groups of roughly equal test interactions (default: 5)")
    lt.add_argument("--boundaries", metavar="E1,E2,...", help="fixed upper popularity edges instead, e.g. 3,7,15 -> 0-3, 4-7, 8-15, 16+")
    lt.add_argument("--compare", metavar="BASELINE_DIR", help="a baseline model directory on the same dataset: its metrics "
                    "and the improvement ratio per group")
    lt.add_argument("--plot", metavar="FILE.png", help="bars = test interactions per group, line = Recall@10 improvement ratio")
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
    from unisrec.evaluation.metrics import evaluate_model

    model, ds, dev = load_for_evaluation(model_dir, dataset, device)
    return evaluate_model(model, ds, split, ks, batch_size, dev)


def load_for_evaluation(model_dir: str, dataset: str | None = None, device: str = "auto") -> tuple:
    """(model on the device, Dataset, device): ``model_dir``'s model ready to rank ``dataset``'s items
    (default: the dataset recorded in config.json); another catalogue only zero-shot, by text."""
    from pathlib import Path

    from unisrec.data.dataset import Dataset
    from unisrec.errors import UserError
    from unisrec.models.model_dir import load_catalogue, load_model, read_model_config
    from unisrec.training.distributed import resolve_device

    cfg = read_model_config(model_dir)
    if is_pretraining_checkpoint(model_dir, cfg):  # `unisrec pretrain` output: zero-shot on --dataset
        if not dataset or not Path(dataset).is_dir():
            raise UserError(f"{model_dir} is a pre-training checkpoint (no catalogue); pass --dataset DIR of the domain to rank")
        dev = resolve_device(device)
        ds = Dataset.load(dataset)
        return pretrained_zero_shot(model_dir, cfg, ds).to(dev), ds, dev
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
    return model.to(dev), ds, dev


def is_pretraining_checkpoint(model_dir: str, cfg: dict) -> bool:
    """A `unisrec pretrain` output: UniSRec weights + pre-training record, no catalogue of its own."""
    from pathlib import Path

    from unisrec.models.model_dir import CATALOGUE

    return cfg.get("model_type") == "unisrec" and "pretraining" in cfg and not (Path(model_dir) / CATALOGUE).is_dir()


def pretrained_zero_shot(model_dir: str, cfg: dict, ds) -> "SequentialRecommender":  # noqa: F821
    """The ablation "w/o fine-tuning" (docs/analyses.md): a pre-trained (inductive) UniSRec holding
    ``ds``'s text vectors -- the target feature set made by the checkpoint's encoder (same encoder,
    pooling and size; the pre-training feature set's name preferred, then the dataset's default)."""
    import numpy as np

    from unisrec.errors import UserError
    from unisrec.models.unisrec import UniSRec

    model = UniSRec.from_pretrained(model_dir)
    if model.item_id_embedding is not None:
        raise UserError(f"{model_dir}: a transductive checkpoint has per-item weights; only an inductive one ranks another catalogue")
    name = matching_feature_set(ds, cfg.get("encoder") or {}, ((cfg.get("pretraining") or {}).get("config") or {}).get("features"), model_dir)
    model.set_item_features(np.array(ds.features(name), dtype=np.float32))
    return model


def matching_feature_set(ds, encoder_info: dict, preferred: str | None, model_dir: str) -> str:
    """The name of ``ds``'s feature set made like a model's (same encoder, pooling and size as
    ``encoder_info``, the model's config.json "encoder"): ``preferred`` if it matches, else the
    dataset's default, else the first by name; a UserError saying how to encode one otherwise."""
    from unisrec.errors import UserError

    sets = ds.manifest.get("features") or {}
    keys = ("encoder", "pooling", "dim")
    matching = sorted(n for n, info in sets.items() if all(encoder_info.get(k) == info.get(k) for k in keys))
    name = next((n for n in (preferred, ds.manifest.get("default_features")) if n in matching), matching[0] if matching else None)
    if name is None:
        enc, pool = encoder_info.get("encoder"), encoder_info.get("pooling")
        have = ", ".join(f"{n} ({i.get('encoder')}, {i.get('dim')}-d)" for n, i in sorted(sets.items())) or "none"
        raise UserError(f"model {model_dir} reads {enc} features ({pool} pooling, {encoder_info.get('dim')}-d); dataset "
                        f"{ds.path} has no matching feature set (it has: {have}); run `unisrec encode {ds.path} --encoder {enc} --pooling {pool}`")
    return name


def inductive_over_items(cfg: dict) -> bool:
    """Whether a model directory's model has no per-item parameters (class attribute
    ``inductive_over_items``, e.g. ZESRec), so it can score any catalogue from text vectors."""
    from unisrec.models import registry

    kind = cfg.get("model_type")
    if kind == "unisrec":  # UniSRec_t (Eq. 11) has none; UniSRec_t+ID (Eq. 12) has an ID table
        return (cfg.get("model") or {}).get("mode") == "inductive"
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
    from unisrec.errors import UserError

    if args.popularity:
        if args.model or not args.dataset or args.by_popularity or args.compare or args.plot or args.boundaries:
            raise UserError("--popularity ranks --dataset DIR by item counts: give --dataset and no MODEL_DIR nor long-tail options")
        from unisrec.data.dataset import Dataset
        from unisrec.models.popularity import evaluate_popularity

        metrics = evaluate_popularity(Dataset.load(args.dataset), args.split, parse_ks(args.ks))
        return _print_metrics(args, metrics, f"popularity of {args.dataset}")
    if not args.model:
        raise UserError("evaluate needs MODEL_DIR (or --popularity --dataset DIR)")
    if args.by_popularity or args.compare or args.plot or args.boundaries:
        from unisrec.evaluation.longtail import run_cli

        return run_cli(args, parse_ks(args.ks))
    metrics = evaluate_dir(args.model, args.split, parse_ks(args.ks), args.dataset, args.device, args.batch_size)
    return _print_metrics(args, metrics, args.model)


def _print_metrics(args: argparse.Namespace, metrics: dict, what: str) -> int:
    if args.json:
        print(json.dumps(metrics, sort_keys=True))
    else:
        print(f"{what} ({args.split}, full ranking)")
        for k, v in metrics.items():
            print(f"  {k:<10} {v:.4f}")
    return 0
