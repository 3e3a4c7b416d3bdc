"""Counted-FLOP lower bound of one supervised training epoch, per batching, beside measured epochs.

    python benchmarks/epoch_flop_bound.py --data data/online_retail_shuffled \
        --measured every-position=runs/or_sasrec_ep/training_log.jsonl --threads 2 --time-steps 10

For SASRec's Transformer (hidden d, feed-forward f, 2 layers) it counts, with the real batches the
library builds (``training.batching`` + ``models.encoder.length_buckets``):

* the *needed* work of a batching: every encoded token once (no padding), its layers forward and
  backward (x3), attention over its real context, and the all-item scoring of every target;
* the *computed* work: the same with each length bucket padded to its longest, as the code runs it.

Per token and layer, forward: 8 d^2 (Q, K, V, output projections) + 4 L d (scores and weighted sum
over the L attended positions) + 4 d f (feed-forward); per target: 2 d (n + 1) for the scores.
Backward counts twice the forward. The bound in seconds divides by the float32 matmul rate this
machine reaches (measured here on shapes of the training step). ``--measured NAME=LOG`` adds a
training log's median epoch seconds; ``--time-steps N`` times N real training steps (SASRec with
the paper's sizes, Adam) of each batching in this process, so the paper's hour-long epoch can be set
beside the fast path's in one run. Writes results/online_retail/epoch_flop_bound.json / .md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import benchlib


def encoder_flops(lengths: np.ndarray, widths: np.ndarray, d: int, f: int, layers: int, causal_context: bool) -> float:
    """Forward + backward FLOPs of ``layers`` Transformer layers over sequences of ``lengths`` real
    tokens, each padded to ``widths`` (pass widths = lengths for the unpadded count)."""
    tokens = widths.astype(np.float64)
    # attention context per token: causal (avg (w+1)/2 positions) summed over the row = w(w+1)/2
    ctx = widths * (widths + 1) / 2.0 if causal_context else widths.astype(np.float64) ** 2
    per_layer = tokens.sum() * (8 * d * d + 4 * d * f) + 4 * d * ctx.sum()
    return 3.0 * layers * per_layer


def batching_flops(batching, d: int, f: int, layers: int, n_items: int) -> dict[str, float]:
    """Needed and computed FLOPs of one epoch of ``batching`` (a training.batching strategy)."""
    from unisrec.models.encoder import length_buckets

    lengths = batching.lengths
    needed = encoder_flops(lengths, lengths, d, f, layers, True)
    computed = 0.0
    for idx in batching.epoch(1, 0):
        ln = lengths[idx]
        widths = np.zeros_like(ln)
        for g in length_buckets(ln):
            widths[g] = ln[g].max()
        computed += encoder_flops(ln, widths, d, f, layers, True)
    scoring = 3.0 * 2 * d * (n_items + 1) * batching.num_targets
    return {"needed": needed + scoring, "computed": computed + scoring, "scoring": scoring,
            "encoded_tokens": float(lengths.sum()), "targets": float(batching.num_targets)}


def matmul_rate(threads: int, d: int, n_items: int) -> float:
    """Float32 GFLOP/s of the step's two big matmul shapes (median of a few repeats)."""
    import torch

    torch.set_num_threads(threads)
    rates = []
    for m, k, n in ((4096 * 8, d, d), (2048, d, n_items + 1)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        times = []
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        rates.append(2 * m * k * n / float(np.median(times)) / 1e9)
    return float(np.mean(rates))


def time_steps(batching, num_items: int, threads: int, steps: int, seed: int = 0) -> tuple[float, int]:
    """(mean wall seconds of one training step -- forward, backward, Adam -- over ``steps`` real
    batches of epoch 1 after one warm-up step, steps per epoch): a same-process epoch estimate."""
    import torch

    from unisrec.models.sasrec import SASRec, SASRecConfig

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = SASRec.for_dataset(SASRecConfig(), num_items).train()  # the paper's sizes
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = batching.epoch(1, seed)
    times = []
    for i, idx in enumerate(batches[: steps + 1]):
        t = time.perf_counter()
        loss, _ = batching.loss(model, idx, "cpu")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - t)
    return float(np.mean(times)), len(batches)


def main() -> int:
    from unisrec.data.dataset import Dataset
    from unisrec.training.batching import EveryPositionBatching, LastItemBatching

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(benchlib.dataset_dir("online_retail_shuffled")))
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=300)
    p.add_argument("--inner", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--fast-batch-size", type=int, default=512, help="targets per step of the every-position rows (the fast path)")
    p.add_argument("--time-steps", type=int, default=0,
                   help="also time this many real training steps of each batching in this process (epoch = mean step x steps)")
    p.add_argument("--cap", type=int, default=8, help="every-position targets per window piece (TrainConfig.max_targets_per_window)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--measured", action="append", default=[], metavar="ROW=LOG_OR_SECONDS",
                   help="a row's measured epoch (ROW = the row name without its parenthesis, e.g. \"every-position, batch 512\"): a training_log.jsonl (median 'seconds') or a number of seconds")
    p.add_argument("--out", default=str(benchlib.RESULTS / "online_retail" / "epoch_flop_bound"))
    args = p.parse_args()

    ds = Dataset.load(args.data)
    h, b, fb, d, f, nl = args.max_history, args.batch_size, args.fast_batch_size, args.hidden, args.inner, args.layers
    variants = {
        f"last-item (the paper's), batch {b}": LastItemBatching(ds, h, b),
        f"every-position, batch {fb} (the fast path)": EveryPositionBatching(ds, h, fb, cap=0),
        f"every-position, batch {fb}, cap {args.cap}": EveryPositionBatching(ds, h, fb, cap=args.cap),
    }
    rate = matmul_rate(args.threads, d, ds.num_items)
    measured = {}
    for item in args.measured:
        name, value = item.split("=", 1)
        try:
            measured[name] = float(value)
        except ValueError:
            measured[name] = float(np.median([r["seconds"] for r in benchlib.read_jsonl(value)]))
    rows = {}
    for name, batching in variants.items():
        c = batching_flops(batching, d, f, nl, ds.num_items)
        rows[name] = {**c, "bound_seconds": c["needed"] / (rate * 1e9), "computed_seconds_at_rate": c["computed"] / (rate * 1e9),
                      "measured_seconds": next((v for k, v in measured.items() if name == k or name.split(" (")[0] == k), None)}
        if args.time_steps:
            step, n_steps = time_steps(batching, ds.num_items, args.threads, args.time_steps)
            rows[name].update(step_seconds=step, steps_per_epoch=n_steps, timed_epoch_seconds=step * n_steps)
            print(f"{name}: {step:.3f} s/step x {n_steps} steps = {step * n_steps:.0f} s", flush=True)
    result = {"dataset": benchlib.display_path(args.data), "users": ds.num_users, "items": ds.num_items,
              "model": f"SASRec, hidden {d}, feed-forward {f}, {nl} layers, max history {h}",
              "matmul_gflops": rate, "threads": args.threads, "variants": rows,
              "command": benchlib.reproduce_command(__file__)}
    md = [f"# Counted-FLOP bound of one training epoch ({result['dataset']})", "",
          f"{result['model']}; float32 matmul rate measured here: {rate:.0f} GFLOP/s on {args.threads} thread(s).", "",
          "| batching | encoded tokens | targets | needed TFLOP | computed TFLOP (padding) | bound s | measured epoch s | measured / bound | timed steps: s/step x steps = epoch s | timed / bound |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        m = r["measured_seconds"]
        shown = ("", "") if m is None else (f"{m:.0f}", f"{m / r['bound_seconds']:.2f}x")
        timed = ("", "") if "step_seconds" not in r else (
            f"{r['step_seconds']:.3f} x {r['steps_per_epoch']} = {r['timed_epoch_seconds']:.0f}", f"{r['timed_epoch_seconds'] / r['bound_seconds']:.2f}x")
        md.append(f"| {name} | {r['encoded_tokens']:,.0f} | {r['targets']:,.0f} | {r['needed'] / 1e12:.1f} | {r['computed'] / 1e12:.1f} | "
                  f"{r['bound_seconds']:.0f} | {shown[0]} | {shown[1]} | {timed[0]} | {timed[1]} |")
    md += ["", "needed = every real token once, forward + backward, plus the all-item scores of every target; computed = "
           "the same with each length bucket padded to its longest (what the code runs). bound s = needed / the matmul rate.",
           "", f"Command: `{result['command']}`", ""]
    benchlib.write_result(args.out, result, md)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
