"""Speed of `unisrec prepare` (issue 2): wall time and peak memory of the whole CLI command.

1. `unisrec prepare online-retail` on the Online Retail parquet (``--parquet``, default the public
   copy in ``$UNISREC_SHARED/data/online_retail``, else ``../shared``; goal: < 3 s wall; the
   authors' script needs 12.7 s here for the same steps). Median of --repeats runs.
2. `unisrec prepare amazon` on a generated Amazon-format input (goal: 10,000,000 ratings +
   1,000,000 meta lines in < 3 min, peak RSS < 8 GB). The generator writes a ratings-only CSV
   (item,user,rating,timestamp; power-law users and items, ~1% exact duplicates) and a gzipped
   JSON-lines meta file with title/category/brand and the other 2018 fields, ~90% of the rated
   items having a record.

Each command runs in a fresh process under /usr/bin/time -v (wall clock, max RSS).
Writes results/prepare/prepare_bench.json and .md (``--out``).

    python benchmarks/bench_prepare.py                       # both (the big one takes minutes)
    python benchmarks/bench_prepare.py --skip-amazon         # Online Retail only
    python benchmarks/bench_prepare.py --ratings 1000000 --meta 100000   # a smaller Amazon run
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import benchlib

UNISREC = [sys.executable, "-m", "unisrec.cli"]


def timed(cmd: list[str]) -> dict:
    """Run ``cmd`` under /usr/bin/time -v; wall seconds and peak RSS (GB) of the command."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}\n{res.stderr}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", res.stderr).group(1)) for k in ("User", "System"))
    # cpu_s (user + system) shows the cost even when other jobs share the 2 cores and stretch the wall time
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 2), "peak_rss_gb": round(rss_kb / 1024**2, 3),
            "stdout": res.stdout.strip()}


def generate_amazon(folder: Path, n_ratings: int, n_meta: int, seed: int = 0) -> tuple[Path, Path]:
    """Amazon-2018-format ratings CSV + meta_X.json.gz, vectorised (numpy + pyarrow.csv)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    n_items = int(n_meta / 0.9)  # about 10% of the rated items have no meta record
    # user activity: power law (most users rate once or twice, a few hundreds of times), like Amazon
    counts = np.minimum(rng.zipf(2.0, n_ratings), 2_000)
    n_users = int(np.searchsorted(np.cumsum(counts), n_ratings)) + 1
    users = rng.permutation(np.repeat(np.arange(n_users), counts[:n_users])[:n_ratings])
    # item popularity: rank = n_items * u**3 puts ~10% of ratings on the top 0.1% of items
    items = rng.permutation(n_items)[(n_items * rng.random(n_ratings) ** 3).astype(np.int64)]
    ts = rng.integers(900_000_000, 1_540_000_000, n_ratings)
    ts = (ts // 86_400) * 86_400  # day resolution, as in the real files: many ties
    rating = rng.integers(1, 6, n_ratings).astype(np.float64)
    dup = rng.random(n_ratings) < 0.01
    src = rng.integers(0, n_ratings, int(dup.sum()))
    users[dup], items[dup], ts[dup], rating[dup] = users[src], items[src], ts[src], rating[src]

    def ids(prefix: str, codes: np.ndarray, width: int) -> pa.Array:
        return pa.array(np.char.add(prefix, np.char.zfill(codes.astype(str), width)))

    ratings = folder / "ratings.csv"
    table = pa.table({"item": ids("B", items, 9), "user": ids("A", users, 13), "rating": rating, "ts": ts})
    pacsv.write_csv(table, ratings, pacsv.WriteOptions(include_header=False, quoting_style="none"))

    import orjson

    meta = folder / "meta.json.gz"
    words = np.array("red blue steel lab grade kit pro mini digital tool set pack heavy duty clear glass".split())
    with gzip.open(meta, "wb", compresslevel=1) as fh:
        meta_items = rng.permutation(n_items)[:n_meta]
        for start in range(0, n_meta, 100_000):
            lines = []
            for code in meta_items[start : start + 100_000]:
                w = words[rng.integers(0, len(words), 8)]
                lines.append(orjson.dumps({
                    "category": ["Industrial &amp; Scientific", str(w[0]).title(), str(w[1]).title()],
                    "description": [" ".join(w) + " " * 3 + "description text " * 8],
                    "title": " ".join(w[2:7]) + f" {code}...",
                    "also_buy": [f"B{code + k:09d}" for k in range(1, 4)],
                    "brand": str(w[7]).upper(),
                    "rank": "1,234 in Industrial & Scientific",
                    "main_cat": "Industrial & Scientific",
                    "price": "$9.99",
                    "asin": f"B{code:09d}",
                }))
            fh.write(b"\n".join(lines) + b"\n")
    return ratings, meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="Online Retail runs (median reported)")
    ap.add_argument("--ratings", type=int, default=10_000_000)
    ap.add_argument("--meta", type=int, default=1_000_000)
    ap.add_argument("--skip-amazon", action="store_true")
    ap.add_argument("--workdir", default=None, help="where generated inputs/outputs go (default: a temp dir)")
    ap.add_argument("--parquet", type=Path, default=benchlib.shared_root() / "data" / "online_retail" / "online_retail.parquet",
                    help="the Online Retail parquet (default: the public copy beside the clone)")
    ap.add_argument("--out", default=str(benchlib.RESULTS / "prepare" / "prepare_bench"), help="output prefix (.json and .md)")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    results: dict = {"load_avg_1min_at_start": round(load, 2), "machine": f"{platform.node()} {os.cpu_count()} CPUs (shared with other jobs)", "python": platform.python_version()}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_prepare_"))
    work.mkdir(parents=True, exist_ok=True)

    parquet = args.parquet
    if parquet.is_file() and args.repeats > 0:
        runs = [timed([*UNISREC, "prepare", "online-retail", "--input", str(parquet), "--output", str(work / "or")])
                for _ in range(args.repeats)]
        walls = [r["wall_s"] for r in runs]
        results["online_retail"] = {"command": f"unisrec prepare online-retail --input {parquet.name} --output DIR",
                                    "wall_s_median": statistics.median(walls), "wall_s_all": walls,
                                    "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
                                    "peak_rss_gb": max(r["peak_rss_gb"] for r in runs), "goal_wall_s": 3.0,
                                    "summary": runs[-1]["stdout"].replace(str(work), "WORKDIR")}
        print(f"online-retail: median {statistics.median(walls):.2f}s over {len(walls)} runs {walls}")

    if not args.skip_amazon:
        t0 = time.perf_counter()
        ratings, meta = generate_amazon(work, args.ratings, args.meta)
        gen_s = time.perf_counter() - t0
        print(f"generated {args.ratings:,} ratings + {args.meta:,} meta lines in {gen_s:.0f}s "
              f"({ratings.stat().st_size / 1e6:.0f} MB + {meta.stat().st_size / 1e6:.0f} MB gz)")
        run = timed([*UNISREC, "prepare", "amazon", "--ratings", str(ratings), "--meta", str(meta), "--output", str(work / "amz")])
        results["amazon_generated"] = {"ratings": args.ratings, "meta_lines": args.meta,
                                       "ratings_mb": round(ratings.stat().st_size / 1e6, 1),
                                       "meta_gz_mb": round(meta.stat().st_size / 1e6, 1),
                                       "command": "unisrec prepare amazon --ratings ratings.csv --meta meta.json.gz --output DIR",
                                       "wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "peak_rss_gb": run["peak_rss_gb"],
                                       "goal_wall_s": 180, "goal_peak_rss_gb": 8, "summary": run["stdout"].replace(str(work), "WORKDIR")}
        print(f"amazon: {run['wall_s']:.1f}s, peak RSS {run['peak_rss_gb']:.2f} GB\n{run['stdout']}")

    md = ["# `unisrec prepare` speed", "", f"Machine: {results['machine']}. Whole CLI command in a fresh process, /usr/bin/time -v.", "",
          "| run | wall (s) | CPU user+sys (s) | peak RSS (GB) | goal |", "|---|---|---|---|---|"]
    if "online_retail" in results:
        r = results["online_retail"]
        md.append(f"| online-retail, shared parquet (median of {len(r['wall_s_all'])}) | {r['wall_s_median']:.2f} | {r['cpu_s_median']:.2f} | {r['peak_rss_gb']:.2f} | < 3 s |")
    if "amazon_generated" in results:
        r = results["amazon_generated"]
        md.append(f"| amazon, generated {r['ratings']:,} ratings + {r['meta_lines']:,} meta lines | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_gb']:.2f} | < 180 s, < 8 GB |")
    md += ["", "Summaries:", ""] + [f"- {k}: `{v['summary'].splitlines()[0]}`" for k, v in results.items() if isinstance(v, dict)]
    json_path, md_path = benchlib.write_result(args.out, results, md)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
