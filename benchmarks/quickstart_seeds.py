"""Transfer on the synthetic default, over seeds: does pre-training beat scratch, and both popularity?

Runs `unisrec quickstart --seed S` (data AND training seeded by S) for each seed into ROOT/seedS
(``--root``, default runs/quickstart_seeds; an existing finished run there is reused), then writes
results/quickstart/quickstart_synthetic.{json,md} with mean +- std of the test metrics of every
row of the quickstart table.

    python benchmarks/quickstart_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import benchlib
from benchlib import METRICS

from unisrec.quickstart import RUNS, QuickstartSettings, run_quickstart


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", default=str(benchlib.ROOT / "runs" / "quickstart_seeds"), help="one quickstart output folder per seed")
    ap.add_argument("--out", default=str(benchlib.RESULTS / "quickstart" / "quickstart_synthetic"), help="output prefix (.json and .md)")
    args = ap.parse_args()

    per_seed = {}
    for seed in args.seeds:
        folder = Path(args.root) / f"seed{seed}"
        done = folder / "results.json"
        expected = json.loads(json.dumps(QuickstartSettings(seed=seed).__dict__))
        if done.is_file() and json.loads(done.read_text()).get("settings") == expected:
            print(f"seed {seed}: reusing {folder}")
        else:
            run_quickstart(folder, settings=QuickstartSettings(seed=seed))
        per_seed[seed] = json.loads(done.read_text())

    rows = [("popularity", "Popularity")] + [(run, label) for run, label, _, _ in RUNS]
    table = {}
    for key, label in rows:
        vals = {m: [] for m in METRICS}
        for res in per_seed.values():
            test = res["popularity"]["test"] if key == "popularity" else res["runs"][key]["test"]
            for m in METRICS:
                vals[m].append(test[m])
        stats = {m: benchlib.mean_std(v) for m, v in vals.items()}
        table[key] = {"label": label, **{m: {"mean": stats[m][0], "std": stats[m][1], "values": v} for m, v in vals.items()}}
    seconds = [res["total_seconds"] for res in per_seed.values()]
    summary = {"seeds": args.seeds, "table": table, "total_seconds_per_run": seconds, "settings": QuickstartSettings().__dict__,
               "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}; shared with other jobs while measured"}
    lines = [
        f"Synthetic default (`unisrec quickstart --seed S`, S in {args.seeds}): test split of the target domain 'office',",
        f"full ranking, mean ± std over seeds (each seed draws new data and new training randomness).",
        f"Wall time of one whole quickstart run: {', '.join(f'{s:.0f} s' for s in seconds)} (2 shared CPU cores, 1 torch thread).",
        "",
        "| model | R@10 | N@10 | R@50 | N@50 |",
        "|---|---|---|---|---|",
    ]
    for key, _ in rows:
        r = table[key]
        lines.append(f"| {r['label']} | " + " | ".join(benchlib.fmt_mean_std(r[m]["mean"], r[m]["std"]) for m in METRICS) + " |")
    lines += ["", "Per seed N@10: " + "; ".join(
        f"{table[k]['label']}: {', '.join(f'{v:.3f}' for v in table[k]['ndcg@10']['values'])}" for k, _ in rows), "",
        f"Command: `python benchmarks/quickstart_seeds.py --seeds {' '.join(map(str, args.seeds))} --root ROOT`"]
    benchlib.write_result(args.out, summary, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
