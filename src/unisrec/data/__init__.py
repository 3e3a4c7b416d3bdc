"""Data: raw sources -> the on-disk dataset directory (see ``dataset.py`` and docs/data.md).

Python API (the `unisrec prepare/stats/export-atomic` commands only wrap these)::

    from unisrec.data import prepare_amazon, prepare_online_retail, prepare_atomic, prepare_table
    ds = prepare_online_retail("online_retail.parquet", "data/or")   # -> Dataset, saved atomically
    dataset_stats("data/or"); export_atomic("data/or", "atomic/or")

Names are resolved lazily so importing ``unisrec.data.dataset`` stays cheap.
"""

from importlib import import_module

_API = {
    "Dataset": "unisrec.data.dataset",
    "prepare_amazon": "unisrec.data.sources.amazon",
    "prepare_online_retail": "unisrec.data.sources.online_retail",
    "prepare_atomic": "unisrec.data.sources.atomic",
    "prepare_table": "unisrec.data.sources.table",
    "dataset_stats": "unisrec.data.stats",
    "export_atomic": "unisrec.data.export",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'unisrec.data' has no attribute {name!r}")
