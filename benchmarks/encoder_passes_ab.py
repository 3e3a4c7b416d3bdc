"""A/B of two ways to compute a training step: the same steps, the two ways taking turns.

    python benchmarks/encoder_passes_ab.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
        --device cuda --steps 20 --out results/online_retail/encoder_passes_cuda
    python benchmarks/encoder_passes_ab.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
        --compare dropout --device cpu --steps 15 --out results/speed/dropout_masks
    python benchmarks/encoder_passes_ab.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
        --compare attention --device cpu --clock cpu --models SASRec,BERT4Rec,S3-Rec --steps 10 --out results/speed/attention_online_retail

`--compare encoder-passes` (default): length buckets vs one padded pass (models.encoder.encoder_passes).
`--compare dropout`: torch's dropout vs models.dropout's cheaper CPU masks (different draws, same
distribution: the two ways' losses differ by dropout noise only).
`--compare attention`: torch's scaled_dot_product_attention everywhere vs models.encoder.attention's
written-out CPU training path (the same function; different dropout draws).
`--compare read-positions` (S3-Rec's pre-training, BERT4Rec): the final layer at every position vs only
where the loss reads it -- S3-Rec's segment passes at the last real item, BERT4Rec's Cloze at the masked
positions (the same function; the final layer's dropout draws differ).
`--compare compile`: every Transformer layer eager vs through ``torch.compile(dynamic=True)`` (inductor's
fused kernels; the first compiled steps, which compile, are the untimed warm-up).
`--compare optimizer`: torch's Adam as the loop built it before (``foreach``: one kernel per op over the
parameter list) vs ``fused=True`` (one pass over each parameter: the same update, rounding aside).

Each model is built as its benchmark cell builds it (benchmarks/baseline_epoch_speed.py) and steps through
the same real batches of epoch 0 -- forward, backward, Adam, under the cell's precision -- the two ways taking
turns step by step, so a change in load hits both alike. Median wall seconds per step (the device
synchronised), x the steps in an epoch. Validation is not included.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def set_encoder_passes(task, one_pass: bool) -> None:
    task.batching.one_pass = one_pass


def set_dropout(task, ours: bool) -> None:
    """Point models.dropout.Dropout at our masks or at torch's dropout (it looks its function up per call)."""
    import torch.nn.functional as F

    from unisrec.models import dropout as module

    ours_fn = module.__dict__.setdefault("ours_dropout", module.dropout)  # kept the first time it is replaced
    module.dropout = ours_fn if ours else (lambda x, p, training=True: F.dropout(x, p, training))


def set_attention(task, ours: bool) -> None:
    """Point models.encoder's layers at its attention() or at the fused call alone (looked up per call)."""
    import torch.nn.functional as F

    from unisrec.models import encoder as module

    ours_fn = module.__dict__.setdefault("ours_attention", module.attention)

    def fused(q, k, v, mask, dropout_p=0.0):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)

    module.attention = ours_fn if ours else fused


def set_read_positions(task, read_only: bool) -> None:
    """The final layer at every position, then the read ones picked (before), or at the read positions
    only (models.encoder.layers_at_positions): S3-Rec's segment passes (S3RecPretrainTask.last_states)
    and BERT4Rec's Cloze loss (BERT4Rec.bidirectional_outputs_at); other models are unaffected."""
    import torch

    from unisrec.models.bert4rec import BERT4Rec
    from unisrec.models.s3rec import S3RecPretrainTask

    ours = {cls: cls.__dict__.get(f"ours_{name}") or getattr(cls, name)
            for cls, name in ((S3RecPretrainTask, "last_states"), (BERT4Rec, "bidirectional_outputs_at"))}
    S3RecPretrainTask.ours_last_states, BERT4Rec.ours_bidirectional_outputs_at = ours[S3RecPretrainTask], ours[BERT4Rec]

    def last_states_everywhere(self, seqs, lens, table):
        return torch.cat([out[torch.arange(len(g), device=self.device), torch.from_numpy(lens[g] - 1).to(self.device)]
                          for g, out in self.encode(seqs, lens, table)])

    def outputs_everywhere(self, item_seq, lengths, positions):
        out = self.bidirectional_outputs(item_seq, lengths)
        return torch.gather(out, 1, positions[:, :, None].expand(*positions.shape, out.shape[-1]))

    S3RecPretrainTask.last_states = ours[S3RecPretrainTask] if read_only else last_states_everywhere
    BERT4Rec.bidirectional_outputs_at = ours[BERT4Rec] if read_only else outputs_everywhere


def set_compile(task, compiled: bool) -> None:
    """Every Transformer layer of the task's module eager, or compiled (compiled once per layer, kept)."""
    import torch

    from unisrec.models.encoder import TransformerLayer

    module = getattr(task, "module", None) or task.model
    for layer in (m for m in module.modules() if isinstance(m, TransformerLayer)):
        eager = layer.__dict__.setdefault("eager_forward", layer.forward)
        if compiled and "compiled_forward" not in layer.__dict__:
            layer.compiled_forward = torch.compile(eager, dynamic=True)
        layer.forward = layer.compiled_forward if compiled else eager


def set_nothing(task, _: bool) -> None:
    """The task is the same both ways (what differs is the optimizer: see ``OPTIMIZERS``)."""


# --compare: (way A, way B, how to switch a task to B (True) or A (False), what the page compares)
WAYS = {
    "encoder-passes": ("buckets", "one pass", set_encoder_passes, "Encoder passes per training step: length buckets vs one padded pass"),
    "dropout": ("torch dropout", "our masks", set_dropout, "Dropout masks per training step: torch's dropout vs models.dropout's CPU masks"),
    "attention": ("fused call", "written out", set_attention,
                  "Attention per training step: scaled_dot_product_attention vs models.encoder.attention's CPU training path"),
    "read-positions": ("every position", "read positions", set_read_positions,
                       "Final Transformer layer at every position vs at the positions a loss reads (S3-Rec's segment passes, BERT4Rec's Cloze)"),
    "compile": ("eager", "compiled", set_compile, "Transformer layers per training step: eager vs torch.compile"),
    "optimizer": ("foreach Adam", "fused Adam", set_nothing, "Adam per training step: foreach vs fused"),
}
# the Adam options of each way (the same for both ways but in --compare optimizer); each way steps its own
# optimizer over the same parameters: the timing of an update does not depend on the values it meets
OPTIMIZERS = {"optimizer": ({"foreach": True}, {"fused": True})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec")
    p.add_argument("dataset")
    p.add_argument("--models", default="SASRec,UniSRec_t,UniSRec_t+ID")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20, help="timed steps per way and model (after one warm-up each)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compare", choices=sorted(WAYS), default="encoder-passes")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall seconds (device synchronised) or this process's CPU seconds (a CPU shared with other jobs)")
    p.add_argument("--out")
    args = p.parse_args(argv)

    import torch

    from baseline_epoch_speed import build_tasks, train_step
    from benchlib import write_result

    a, b_way, switch, what = WAYS[args.compare]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    tasks = build_tasks(args.spec, args.dataset, 2020, args.threads, args.models.split(","), device=args.device)
    rows = {}
    for label, (task, module, batching, precision) in tasks.items():
        batches = task.batches(0)
        params = [q for q in module.parameters() if q.requires_grad]
        kw_a, kw_b = OPTIMIZERS.get(args.compare, ({}, {}))
        opt_a = torch.optim.Adam(params, lr=1e-3, **kw_a)
        opts = {a: opt_a, b_way: torch.optim.Adam(params, lr=1e-3, **kw_b) if kw_b != kw_a else opt_a}
        wall: dict[str, list[float]] = {a: [], b_way: []}
        for r in range(args.steps + 1):
            for way, to_b in ((a, False), (b_way, True))[:: 1 if r % 2 else -1]:  # ABBA: neither way always goes first
                switch(task, to_b)
                sync()
                t = clock()
                train_step(task, opts[way], batches[r % len(batches)], device, precision)
                sync()
                if r:
                    wall[way].append(clock() - t)
        switch(task, True)
        n = len(batches)
        ka, kb = (k.replace(" ", "_") for k in (a, b_way))
        ta, tb = float(np.median(wall[a])), float(np.median(wall[b_way]))
        rows[label] = {"batching": batching, "precision": precision, "steps_per_epoch": n, f"step_s_{ka}": ta,
                       f"step_s_{kb}": tb, f"epoch_s_{ka}": ta * n, f"epoch_s_{kb}": tb * n, "speedup": ta / tb}
        print(f"{label}: {n} steps/epoch, step {ta * 1e3:.1f} ms {a} vs {tb * 1e3:.1f} ms {b_way} ({ta / tb:.2f}x)", flush=True)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    result = {"spec": args.spec, "dataset": args.dataset, "device": name, "threads": args.threads, "compare": args.compare,
              "timed_steps": args.steps, "clock": args.clock, "torch": torch.__version__, "rows": rows}
    compare = "" if args.compare == "encoder-passes" else f" --compare {args.compare}"
    if args.models != p.get_default("models"):
        compare += f" --models {args.models}"
    if args.clock != "wall":
        compare += f" --clock {args.clock}"
    md = [f"# {what}, {args.dataset} on {name}", "",
          f"`python benchmarks/encoder_passes_ab.py {args.spec} {args.dataset}{compare} --device {args.device} --steps {args.steps}`: "
          f"the two ways alternate (ABBA) on the same batches of epoch 0; median of {args.steps} steps each (forward, backward, "
          "Adam), x steps per epoch; validation excluded. "
          + ("Times are this process's CPU seconds (1 thread: what an idle core takes; other jobs shared the machine)."
             if args.clock == "cpu" else "Times are wall seconds."), "",
          f"| model | precision | steps / epoch | ms / step, {a} | ms / step, {b_way} | epoch s, {a} | epoch s, {b_way} | speed-up |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows.items():
        md.append(f"| {label} | {r['precision']} | {r['steps_per_epoch']} | {r[f'step_s_{ka}'] * 1e3:.1f} | "
                  f"{r[f'step_s_{kb}'] * 1e3:.1f} | {r[f'epoch_s_{ka}']:.1f} | {r[f'epoch_s_{kb}']:.1f} | {r['speedup']:.2f}x |")
    print("\n".join(md))
    if args.out:
        write_result(args.out, result, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
