"""unisrec: transferable, text-based sequential recommendation (UniSRec, KDD 2022).

Pipeline: data sources -> dataset dir (`unisrec.data`) -> text features (`unisrec.text`) ->
models (`unisrec.models`) -> training (`unisrec.training`) -> evaluation (`unisrec.evaluation`)
-> serving (`unisrec.serving`). Heavy dependencies (torch, transformers) are imported lazily.
"""

__version__ = "0.1.0"
