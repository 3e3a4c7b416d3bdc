"""Where does a long training run's resident memory go? One cell's training steps, with RSS watched.

    python benchmarks/memory_growth_probe.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
        "UniSRec_t+ID" --steps 120 --every 20 [--precision float32] [--validate] [--trim N] --out results/online_retail/x.json

The cell is built as its benchmark spec builds it (benchmarks/baseline_epoch_speed.py: same model, batching,
batch size, precision), 1 thread, and trained for --steps steps of its epoch-0, 1, ... batches exactly as the
training loop runs a step (forward under `step_precision`, backward, Adam). Every --every steps it records
the process's current RSS (/proc/self/statm) and its peak (getrusage), and the CPU seconds per step;
--validate adds a full-ranking validation pass (as each epoch ends) after every block; --trim N calls glibc's
malloc_trim(0) after every N-th step (does freed-but-kept heap memory explain the growth?). glibc's own knobs
(MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) and oneDNN's ONEDNN_PRIMITIVE_CACHE_CAPACITY
are set in the environment of the process running this script, so each variant is one process and the JSON records which was in force.
"""
import argparse
import ctypes
import json
import os
import resource
import sys
import time

sys.path.insert(0, "benchmarks")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec"); ap.add_argument("dataset"); ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--precision", choices=["float32", "bfloat16"], help="override the spec's precision")
    ap.add_argument("--validate", action="store_true", help="a validation pass after every block of steps")
    ap.add_argument("--trim", type=int, default=0, metavar="N", help="malloc_trim(0) after every N-th step (0: never)")
    ap.add_argument("--onednn-cache", type=int, metavar="N",
                    help="set ONEDNN_PRIMITIVE_CACHE_CAPACITY=N from inside the process, after torch is imported and "
                         "before any kernel runs (as a library default would; the variable is read at first use)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args()

    import torch

    if args.onednn_cache is not None:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(args.onednn_cache)
    import baseline_epoch_speed as b
    from unisrec.training.loop import step_precision

    torch.set_num_threads(1)
    start_mb = rss_mb()
    task, module, batching, precision = b.build_tasks(args.spec, args.dataset, 2020, 1, [args.model])[args.model]
    precision = args.precision or precision
    libc = ctypes.CDLL("libc.so.6") if args.trim else None
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    steps_per_epoch = len(task.batches(0))
    built_mb = rss_mb()
    blocks, cpu = [], []
    for i in range(args.steps):  # past one epoch, the next epoch's batches (new shapes, as a long run sees)
        epoch, k = divmod(i, steps_per_epoch)
        if k == 0:
            batches = task.batches(epoch)
        c = time.process_time()
        with step_precision(torch.device("cpu"), precision):
            loss, _, _ = task.step_loss(batches[k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if libc is not None and (i + 1) % args.trim == 0:
            libc.malloc_trim(0)
        cpu.append(time.process_time() - c)
        if (i + 1) % args.every == 0:
            row = {"steps": i + 1, "rss_mb": round(rss_mb(), 1), "peak_mb": round(peak_mb(), 1),
                   "cpu_s_per_step": round(sum(cpu[-args.every:]) / args.every, 3)}
            if args.validate:
                c = time.process_time()
                task.validate()
                row.update(valid_cpu_s=round(time.process_time() - c, 1), rss_after_valid_mb=round(rss_mb(), 1),
                           peak_after_valid_mb=round(peak_mb(), 1))
            blocks.append(row)
            print(json.dumps(row), flush=True)
    knobs = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    env = {k: os.environ[k] for k in knobs if k in os.environ}
    out = {"spec": args.spec, "dataset": args.dataset, "model": args.model, "batching": batching,
           "precision": precision, "trim": args.trim, "malloc_env": env, "validate": args.validate,
           "steps_per_epoch": steps_per_epoch, "rss_before_build_mb": round(start_mb, 1),
           "rss_after_build_mb": round(built_mb, 1), "blocks": blocks}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
