"""`unisrec finetune` and `unisrec train sasrec`: thin shells over :mod:`unisrec.training.finetune`.

Every field of :class:`~unisrec.training.finetune.FinetuneConfig` is a flag (``--batch-size``,
``--lr``, ...), a YAML file (``--config``) sets several at once, flags override the file.
torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses

from unisrec.config import add_config_arguments, config_from_args

# options that only mean something for UniSRec; `train sasrec` does not offer them
UNISREC_ONLY = ("mode", "features", "unfreeze_all", "n_experts", "adaptor_dropout", "noisy_gating", "temperature")


def _bool_flags_take_optional_value(parser: argparse.ArgumentParser, cls: type) -> None:
    """Let `--every-position` alone mean true (`--every-position false` still works)."""
    bools = {f.name for f in dataclasses.fields(cls) if f.type in (bool, "bool")}
    for action in parser._actions:
        if action.dest in bools:
            action.nargs = "?"
            action.const = "true"


def _common(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    from unisrec.training.finetune import FinetuneConfig

    p.add_argument("dataset", metavar="DIR", help="dataset directory (from `unisrec prepare` + `unisrec encode`)")
    p.add_argument("--output", "-o", required=True, metavar="MODEL_DIR", help="model directory to write")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    add_config_arguments(p, FinetuneConfig, skip=skip)
    _bool_flags_take_optional_value(p, FinetuneConfig)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune UniSRec on a domain (from scratch or --from a pre-trained checkpoint)",
        description="Fine-tune UniSRec (Eq. 11-12) on one dataset: full-ranking validation each epoch, "
        "early stopping on valid NDCG@10, the best checkpoint written as a model directory.",
    )
    _common(p)
    p.add_argument("--from", dest="pretrained", metavar="PRETRAINED", help="pre-trained checkpoint (`unisrec pretrain` output)")
    p.set_defaults(func=_finetune)

    t = subparsers.add_parser("train", help="train a baseline recommender (sasrec)")
    kinds = t.add_subparsers(dest="baseline", metavar="MODEL")
    s = kinds.add_parser("sasrec", help="SASRec: ID embeddings + the same Transformer, CE over all items")
    _common(s, skip=UNISREC_ONLY)
    s.set_defaults(func=_train_sasrec)
    t.set_defaults(func=lambda args: (t.print_help(), 2)[1])


def _finetune(args: argparse.Namespace) -> int:
    from unisrec.training.finetune import FinetuneConfig, finetune

    config = config_from_args(FinetuneConfig, args)
    finetune(args.dataset, args.output, config, pretrained=args.pretrained, resume=args.resume)
    print(f"model directory: {args.output}  (metrics in {args.output}/metrics.json)")
    return 0


def _train_sasrec(args: argparse.Namespace) -> int:
    from unisrec.training.finetune import FinetuneConfig, train_sasrec

    config = config_from_args(FinetuneConfig, args)
    train_sasrec(args.dataset, args.output, config, resume=args.resume)
    print(f"model directory: {args.output}  (metrics in {args.output}/metrics.json)")
    return 0
