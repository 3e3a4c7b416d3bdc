"""`unisrec pretrain DIR [DIR ...] --output CKPT_DIR`: multi-domain pre-training (Eq. 8-10).

Multi-process: ``torchrun --nproc_per_node N -m unisrec pretrain ...`` (see training.distributed).
torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from unisrec.config import add_config_arguments, config_from_args

EPILOG = """\
examples:
  unisrec pretrain data/games data/scientific --output ckpt/pre --epochs 20
  unisrec pretrain data/games --output ckpt/pre --resume --epochs 40
  torchrun --nproc_per_node 8 -m unisrec pretrain data/a data/b --output ckpt/pre --batch-size 8192
The batch size is global: with N processes each one holds batch-size / N rows, and the in-batch
negatives are gathered from all of them."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from unisrec.training.pretrain_config import PretrainConfig

    p = subparsers.add_parser(
        "pretrain",
        help="pre-train a universal checkpoint on several dataset directories",
        description="Pre-train UniSRec with the sequence-item and sequence-sequence contrastive tasks "
        "on mixed batches from every DIR (each encoded with `unisrec encode --word-drop`).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("datasets", nargs="+", metavar="DIR", help="dataset directories (source domains)")
    p.add_argument("--output", "-o", required=True, metavar="CKPT_DIR", help="checkpoint directory")
    add_config_arguments(p, PretrainConfig, skip=("resume",))
    p.add_argument("--resume", action="store_true", default=None, help="continue from CKPT_DIR's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unisrec.training.pretrain import pretrain
    from unisrec.training.pretrain_config import PretrainConfig

    cfg = config_from_args(PretrainConfig, args)
    _, summary = pretrain(args.datasets, args.output, cfg, show_progress=not args.no_progress)
    return 0
