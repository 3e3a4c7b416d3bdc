"""`unisrec recommend`, `unisrec export-embeddings`, `unisrec serve` (torch is imported inside handlers)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unisrec.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="top-k items for one history of raw item ids")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--history", required=True, help="comma-separated raw item ids, oldest first")
    p.add_argument("--k", type=int, default=10, help="number of items (default 10)")
    p.add_argument("--exclude-seen", action="store_true", help="do not recommend the history's own items")
    p.add_argument(
        "--item-text", action="append", default=[], metavar="ID=TEXT",
        help="text of a history item the catalogue lacks (repeatable); it is scored from its text alone",
    )
    p.add_argument("--index", choices=("exact", "faiss"), default="exact")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_recommend)

    p = sub.add_parser(
        "export-embeddings",
        help="write every item's vector after the adaptor (for your own ANN index)",
        description="Writes FILE.parquet (columns id: string, vector: fixed-size list of float32) or "
        "FILE.npy ((n, d) float32, catalogue order) plus FILE.ids.txt (one raw id per line).",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--output", required=True, metavar="FILE", help="ends in .parquet or .npy")
    p.add_argument("--normalize", action="store_true", help="L2-normalise (ranking is by cosine: inner product on unit vectors)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_export)

    p = sub.add_parser(
        "serve", help="HTTP API: POST /recommend, POST /items, GET /items/search, /health; demo page at /, docs at /docs",
        description="Serve MODEL_DIR over HTTP. POST /items (adding items) needs an API key: --api-key or the "
        "UNISREC_API_KEY environment variable (preferred: a command line is visible to other users). Without a key "
        "it is disabled unless --allow-writes is given on a loopback address. See docs/serving.md.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--index", choices=("exact", "faiss"), default="exact")
    p.add_argument("--device", default="cpu")
    p.add_argument("--api-key", default=None, help="the key POST /items requires (default: $UNISREC_API_KEY)")
    p.add_argument("--allow-writes", action="store_true",
                   help="accept POST /items without a key (only with a loopback --host, from loopback clients)")
    p.add_argument("--max-history", type=int, default=None, help="longest history accepted (default 1000)")
    p.add_argument("--max-k", type=int, default=None, help="largest k accepted (default 1000)")
    p.add_argument("--max-body-bytes", type=int, default=None, help="largest request body (default 262144)")
    p.add_argument("--max-texts", type=int, default=None,
                   help="texts one request may have encoded: item_texts of /recommend, items of POST /items (default 64)")
    p.add_argument("--max-text-chars", type=int, default=None, help="total characters of those texts (default 32768)")
    p.add_argument("--max-catalogue-items", type=int, default=None,
                   help="POST /items refuses to grow the catalogue past this (default: loaded items + 100000)")
    p.add_argument("--encode-concurrency", type=int, default=None, help="text encodes running at once (default 1)")
    p.add_argument("--encode-queue", type=int, default=None,
                   help="encode requests that may wait; more get 503 + Retry-After (default 8)")
    p.add_argument("--micro-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="answer concurrent /recommend requests in shared batches (default on)")
    p.add_argument("--batch-max-size", type=int, default=None, help="requests per batch (default 64)")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="how long a lone request waits for others to join its batch (default 1.0)")
    p.add_argument("--torch-threads", type=int, default=1, help="intra-op threads per batch (default 1; 0 = torch's default)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run_serve)


def _parse_item_texts(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        raw, sep, text = pair.partition("=")
        if not sep or not raw:
            raise UserError(f"--item-text {pair!r}: expected ID=TEXT")
        out[raw] = text
    return out


def run_recommend(args: argparse.Namespace) -> int:
    from unisrec.serving.recommender import Recommender

    history = [h.strip() for h in args.history.split(",") if h.strip()]
    if not history:
        raise UserError("--history is empty; give comma-separated item ids")
    rec = Recommender.from_pretrained(args.model_dir, device=args.device, index=args.index)
    items = rec.recommend(history, k=args.k, exclude_seen=args.exclude_seen, item_texts=_parse_item_texts(args.item_text))
    if args.json:
        print(json.dumps({"items": items}, ensure_ascii=False, allow_nan=False))
        return 0
    width = max((len(it["id"]) for it in items), default=2)
    print(f"{'rank':>4}  {'score':>7}  {'id':<{width}}  text")
    for rank, it in enumerate(items, 1):
        text = it["text"] if len(it["text"]) <= 80 else it["text"][:77] + "..."
        print(f"{rank:>4}  {it['score']:7.4f}  {it['id']:<{width}}  {text}")
    return 0


def export_embeddings(model_dir: str, output: str, normalize: bool = False, device: str = "cpu") -> Path:
    """Write the item vectors of ``model_dir`` to ``output`` (.parquet, or .npy + .ids.txt)."""
    import numpy as np

    from unisrec.serving.recommender import Recommender

    out = Path(output)
    if out.suffix not in (".parquet", ".npy"):
        raise UserError(f"--output {output}: the file name must end in .parquet or .npy")
    ids, vectors = Recommender.from_pretrained(model_dir, device=device).item_embeddings(normalize=normalize)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = pa.array(vectors.reshape(-1), pa.float32())
        table = pa.table({"id": pa.array(ids, pa.string()), "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
        pq.write_table(table, out)
    else:
        bad = [i for i in ids if "\n" in i or "\r" in i]
        if bad:
            raise UserError(f"item id {bad[0]!r} contains a line break; export to .parquet instead")
        np.save(out, vectors)
        out.with_suffix(".ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return out


def run_export(args: argparse.Namespace) -> int:
    out = export_embeddings(args.model_dir, args.output, args.normalize, args.device)
    extra = f" and {out.with_suffix('.ids.txt')}" if out.suffix == ".npy" else ""
    print(f"wrote {out}{extra}", file=sys.stderr)
    return 0


SERVE_SETTINGS = (
    "max_history", "max_k", "max_body_bytes", "max_texts", "max_text_chars", "max_catalogue_items",
    "encode_concurrency", "encode_queue", "batch_max_size", "batch_wait_ms",
)


def run_serve(args: argparse.Namespace) -> int:
    import os

    from unisrec.serving.app import API_KEY_ENV, serve

    settings = {name: getattr(args, name) for name in SERVE_SETTINGS if getattr(args, name) is not None}
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    serve(args.model_dir, host=args.host, port=args.port, index=args.index, device=args.device, log_level=args.log_level,
          torch_threads=args.torch_threads, api_key=api_key, allow_writes=args.allow_writes,
          micro_batch=args.micro_batch, **settings)
    return 0
