"""What length-sorted batching can gain at most over the release's loop: counted FLOPs, no timing.

The encoder's cost is its matrix math. Per layer and token: Q, K, V, output projections (4 H^2
multiply-adds) and the feed-forward (2 H F); per pair of tokens in a text: 2 H for the scores and
the weighted sum. Padding to the batch's longest text multiplies both. We count that cost for the
release's batches (4 texts in item order), for ``length_sorted_batches`` (batch 64, 16,384
tokens) and for no padding at all, with the default encoder's tokenizer on Scientific and Games.
If the CPU is compute-bound, naive/sorted FLOPs bound the speed-up batching can give there.

    python benchmarks/encode_padding_bound.py      # -> results/encode/encode_padding_bound.{json,md}

The measured column comes from ``--measured`` (default results/encode/encode_bench.json, the idle
CPU run of benchmarks/bench_encode.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import benchlib
from bench_encode import SHARED, games_texts, scientific_texts

from unisrec.text.encoder import TextEncoder, length_sorted_batches  # noqa: E402


def flops(batches: list[np.ndarray], hidden: int, ffn: int, layers: int, multiple: int = 1) -> float:
    n = np.array([len(b) for b in batches], dtype=np.float64)
    m = np.array([-(-int(b.max()) // multiple) * multiple for b in batches], dtype=np.float64)
    per_token = 4 * hidden * hidden + 2 * hidden * ffn
    return float(2 * layers * ((n * m).sum() * per_token + (n * m * m).sum() * 2 * hidden))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measured", type=Path, default=benchlib.RESULTS / "encode" / "encode_bench.json",
                    help="bench_encode.py's JSON whose speed-ups and items/s fill the measured columns")
    ap.add_argument("--out", type=Path, default=benchlib.RESULTS / "encode" / "encode_padding_bound", help="output prefix (.json and .md)")
    args = ap.parse_args()
    enc = TextEncoder()
    cfg = enc.model.config
    h, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    rows = []
    for name, texts in (("scientific", scientific_texts(SHARED)), ("games", games_texts(SHARED))):
        lens = np.array([len(t) for t in enc.tokenize(texts)])
        naive = [lens[i : i + 4] for i in range(0, len(lens), 4)]
        ours = [lens[b] for b in length_sorted_batches(lens, 64, 16384)]
        unpadded = [lens[i : i + 1] for i in range(len(lens))]
        # on CPU both pad to the batch's longest text (TextEncoder rounds up to 8 tokens on CUDA only)
        fn, fo, fu = flops(naive, h, f, layers), flops(ours, h, f, layers), flops(unpadded, h, f, layers)
        rows.append({"set": name, "items": len(lens), "mean_tokens": round(float(lens.mean()), 1), "max_tokens": int(lens.max()),
                     "naive_over_unpadded": round(fn / fu, 3), "sorted_over_unpadded": round(fo / fu, 3),
                     "naive_over_sorted": round(fn / fo, 3), "gflop_per_item_sorted": round(fo / len(lens) / 1e9, 3)})
    measured = json.loads(args.measured.read_text())
    md = ["# Encoding: how much batching can gain (counted FLOPs, default encoder)", "",
          f"Encoder {enc.name}: {layers} layers, hidden {h}, feed-forward {f}. Naive = the release's 4 texts per batch in item "
          "order; sorted = `length_sorted_batches` (64 texts, 16,384 tokens); unpadded = every text alone.", "",
          "| set | items | mean / max tokens | naive / unpadded | sorted / unpadded | naive / sorted (bound) | measured speed-up (idle CPU) | sorted GFLOP/s |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = measured.get("sets", {}).get(r["set"])
        speed = f"{m['speedup_vs_naive']:.2f}x" if m else "-"
        gfs = f"{m['sorted_items_per_s'] * r['gflop_per_item_sorted']:.0f}" if m else "-"
        r["measured_speedup"], r["sorted_gflop_per_s"] = speed, gfs
        md.append(f"| {r['set']} | {r['items']:,} | {r['mean_tokens']} / {r['max_tokens']} | {r['naive_over_unpadded']:.2f} | "
                  f"{r['sorted_over_unpadded']:.3f} | {r['naive_over_sorted']:.2f}x | {speed} | {gfs} |")
    md += ["", "Sorted batches compute within 5% of the unpadded minimum, so on a compute-bound CPU no batching scheme can "
           "go further; the measured speed-up exceeds the FLOP ratio because 4-text batches also run the kernels less "
           "efficiently. A 3x gain over the release on this CPU would need the arithmetic itself "
           "to run faster: the sorted path already sustains ~175-181 GFLOP/s of float32 on the 2 cores, and lower "
           "precision (bf16, int8) changes the vectors beyond the 1e-4 tolerance; on a GPU, where the 4-text loop is latency-bound, "
           "the same batching gives 11.7-18.6x (encode_bench_cuda_*.md). GFLOP/s = counted sorted FLOPs x the items/s "
           "measured on the idle CPU (encode_bench.md).", ""]
    benchlib.write_result(args.out, {"encoder": enc.name, "rows": rows}, md)
    print("\n".join(md))


if __name__ == "__main__":
    main()
