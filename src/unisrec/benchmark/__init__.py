"""`unisrec benchmark`: the paper's Table 3 as one harness (docs/benchmark.md).

``spec`` reads a grid (datasets x models x seeds) from YAML, ``runner`` trains every cell into
``RUNS/DATASET/MODEL/seedN/`` (finished cells skipped, interrupted ones resumed), ``significance``
holds the per-user paired t-test, ``report`` prints the paper's layout, ``paper`` the paper's
numbers. Nothing here imports torch at import time.
"""
