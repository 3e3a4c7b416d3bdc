"""The `unisrec` command: a thin shell over the Python API.

Each pipeline stage registers its own sub-commands (a ``register(subparsers)`` function in its
``cli`` module); handlers import heavy libraries (torch, transformers) only when they run, so
`unisrec prepare` never pays for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from unisrec import __version__
from unisrec.errors import UserError

# Ordered as the pipeline a user walks.
COMMAND_MODULES = (
    "unisrec.data.cli",        # prepare, stats, export-atomic
    "unisrec.data.download",   # download
    "unisrec.text.cli",        # encode
    "unisrec.training.pretrain_cli",  # pretrain
    "unisrec.training.cli",    # finetune, train
    "unisrec.evaluation.cli",  # evaluate
    "unisrec.serving.cli",     # recommend, export-embeddings, serve
    "unisrec.quickstart",      # quickstart
)

DESCRIPTION = """\
Transferable, text-based sequential recommendation (UniSRec, KDD 2022).

A typical run:
  unisrec prepare amazon --ratings R.csv --meta meta_X.json.gz --output data/X
  unisrec encode data/X --word-drop 0.15
  unisrec pretrain data/A data/B --output ckpt/pre
  unisrec finetune data/X --mode inductive --from ckpt/pre --output models/x
  unisrec evaluate models/x --split test
  unisrec serve models/x --port 8000
Run `unisrec COMMAND --help` for the options of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unisrec", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"unisrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"unisrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unisrec {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
