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

    p = sub.add_parser("serve", help="HTTP API: POST /recommend, POST /items, GET /health, docs at /docs")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--index", choices=("exact", "faiss"), default="exact")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-history", type=int, default=None, help="longest history accepted (default 1000)")
    p.add_argument("--max-k", type=int, default=None, help="largest k accepted (default 1000)")
    p.add_argument("--max-body-bytes", type=int, default=None, help="largest request body (default 1 MiB)")
    p.add_argument("--torch-threads", type=int, default=1, help="intra-op threads per request (default 1; 0 = torch's default)")
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
        print(json.dumps({"items": items}, ensure_ascii=False))
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


def run_serve(args: argparse.Namespace) -> int:
    from unisrec.serving.app import serve

    limits = {
        k: v
        for k, v in (("max_history", args.max_history), ("max_k", args.max_k), ("max_body_bytes", args.max_body_bytes))
        if v is not None
    }
    for name, value in limits.items():
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    serve(args.model_dir, host=args.host, port=args.port, index=args.index, device=args.device, log_level=args.log_level,
          torch_threads=args.torch_threads, **limits)
    return 0
