"""The `unisrec` command: a thin shell over the Python API.

Each pipeline stage registers its own sub-commands (a ``register(subparsers)`` function in its
``cli`` module); handlers import heavy libraries (torch, transformers) only when they run, so
`unisrec prepare` never pays for torch. A module whose flags need heavy classes (model configs)
takes ``full``: True only when one of its commands is the one being run.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys

from unisrec import __version__
from unisrec.errors import Stopped, UserError

# Ordered as the pipeline a user walks.
COMMAND_MODULES = (
    "unisrec.data.cli",        # prepare, stats, export-atomic
    "unisrec.data.download",   # download
    "unisrec.text.cli",        # encode
    "unisrec.training.cli",    # finetune, train, pretrain
    "unisrec.evaluation.cli",  # evaluate
    "unisrec.evaluation.explain",  # explain
    "unisrec.serving.cli",     # recommend, export-embeddings, serve
    "unisrec.quickstart",      # quickstart
    "unisrec.benchmark.cli",   # benchmark (run, report)
)

# commands whose flags come from classes that import torch: built in full only when run
HEAVY_COMMANDS = {"unisrec.training.cli": ("finetune", "train", "pretrain")}

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; ``command`` (the sub-command about to run) gets its full flags."""
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
        if "full" in inspect.signature(module.register).parameters:
            module.register(sub, full=command in HEAVY_COMMANDS.get(name, ()))
        else:
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"unisrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Stopped as exc:  # a signal: the run saved its resume state and stopped
        print(f"unisrec {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"unisrec {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`unisrec ... | head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 141
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
