"""`unisrec train NAME`, `unisrec finetune` and `unisrec pretrain`: thin shells over the training API.

Every option is a flag derived from the config dataclasses -- :class:`~unisrec.training.config.TrainConfig`
plus the model's own config (its nested encoder included) -- and a YAML file (``--config``) sets
several at once; flags override the file. Model flags need the model classes (and so torch), so
they are built only when the command runs (``full=True``); otherwise the parsers stay light.
"""

from __future__ import annotations

import argparse

from unisrec.config import add_config_arguments, configs_from_args

PRETRAIN_EPILOG = """\
examples:
  unisrec pretrain data/games data/scientific --output ckpt/pre --epochs 20
  unisrec pretrain data/games --output ckpt/pre --resume --epochs 40
  torchrun --nproc_per_node 8 -m unisrec pretrain data/a data/b --output ckpt/pre --batch-size 8192
The batch size is global: with N processes each one holds batch-size / N rows, and the in-batch
negatives are gathered from all of them."""


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DIR", help="dataset directory (from `unisrec prepare` + `unisrec encode`)")
    p.add_argument("--output", "-o", required=True, metavar="MODEL_DIR", help="model directory to write")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")


def register(subparsers: argparse._SubParsersAction, full: bool = True) -> None:
    from unisrec.models import registry
    from unisrec.training.config import PretrainConfig, TrainConfig

    f = subparsers.add_parser(
        "finetune", help="fine-tune UniSRec on a domain (from scratch or --from a pre-trained checkpoint)",
        description="Fine-tune UniSRec (Eq. 11-12) on one dataset: full-ranking validation each epoch, "
        "early stopping on valid NDCG@10, the best checkpoint written as a model directory.",
    )
    if full:
        _run_arguments(f)
        f.add_argument("--from", dest="pretrained", metavar="PRETRAINED", help="pre-trained checkpoint (`unisrec pretrain` output)")
        f.add_argument("--unfreeze-all", action="store_true", help="with --from: train the Transformer and positions too")
        add_config_arguments(f, TrainConfig, registry.get("unisrec").config_class)
    f.set_defaults(func=_finetune)

    t = subparsers.add_parser("train", help=f"train a registered model from scratch ({', '.join(registry.names())})",
                              description="Train any registered model on one dataset with the same protocol as `finetune`.")
    kinds = t.add_subparsers(dest="model_name", metavar="MODEL")
    for name, help_ in registry.describe().items():
        s = kinds.add_parser(name, help=help_, description=help_)
        if full:
            _run_arguments(s)
            add_config_arguments(s, TrainConfig, registry.get(name).config_class)
        s.set_defaults(func=_train)
    t.set_defaults(func=lambda args: (t.print_help(), 2)[1])

    p = subparsers.add_parser(
        "pretrain", help="pre-train a universal checkpoint on several dataset directories",
        description="Pre-train UniSRec with the sequence-item and sequence-sequence contrastive tasks "
        "on mixed batches from every DIR (each encoded with `unisrec encode --word-drop`).",
        epilog=PRETRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("datasets", nargs="+", metavar="DIR", help="dataset directories (source domains)")
    p.add_argument("--output", "-o", required=True, metavar="CKPT_DIR", help="checkpoint directory")
    if full:  # the architecture (and ablation switches) of the model to pre-train; mode is always inductive
        add_config_arguments(p, PretrainConfig, registry.get("unisrec").config_class, skip=("resume", "mode"))
    else:
        add_config_arguments(p, PretrainConfig, skip=("resume",))
    p.add_argument("--resume", action="store_true", default=None, help="continue from CKPT_DIR's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="the same as --progress false")
    p.set_defaults(func=_pretrain)


def _finetune(args: argparse.Namespace) -> int:
    from unisrec.models.unisrec import UniSRecConfig
    from unisrec.training.config import TrainConfig
    from unisrec.training.finetune import finetune

    train, model = configs_from_args((TrainConfig, UniSRecConfig), args)
    finetune(args.dataset, args.output, train, model, pretrained=args.pretrained, resume=args.resume, unfreeze_all=args.unfreeze_all)
    print(f"model directory: {args.output}  (metrics in {args.output}/metrics.json)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from unisrec.models import registry
    from unisrec.training.config import TrainConfig
    from unisrec.training.supervised import train_model

    train, model = configs_from_args((TrainConfig, registry.get(args.model_name).config_class), args)
    train_model(args.model_name, args.dataset, args.output, train, model, resume=args.resume)
    print(f"model directory: {args.output}  (metrics in {args.output}/metrics.json)")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from unisrec.models.unisrec import UniSRecConfig
    from unisrec.training.config import PretrainConfig
    from unisrec.training.pretrain import pretrain, sets_architecture

    config, model = configs_from_args((PretrainConfig, UniSRecConfig), args)  # --temperature sets both
    given = sets_architecture(name for name, value in vars(args).items() if value is not None)
    pretrain(args.datasets, args.output, config, model if given else None, show_progress=not args.no_progress)
    return 0
