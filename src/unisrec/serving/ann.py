"""Optional approximate top-k for large catalogues: a FAISS inner-product index over unit vectors.

Items and sequence vectors are L2-normalised, so inner product = cosine = the model's ranking
(Eq. 11/12 up to the 1/temperature factor). The default ("auto") is an inverted-file index with
~sqrt(n) lists, trained on a sample of the catalogue, searching max(8, lists/16) of them: cheap
to build on a CPU (seconds to a minute for 10^6 items) and tunable through ``params``
("nprobe=64" trades speed for recall). Any FAISS factory string works, e.g. "HNSW32,Flat" with
"efSearch=128". Install with ``pip install 'unisrec[faiss]'``.

An index is never modified after it is published (FAISS adds are not safe during searches):
:meth:`FaissIndex.extended` returns a clone with more items.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from unisrec.errors import UserError

TRAIN_POINTS_PER_LIST = 64


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise UserError("index='faiss' needs the faiss package: pip install 'unisrec[faiss]' (faiss-cpu)") from exc
    return faiss


def auto_spec(n: int) -> tuple[str, str]:
    """(factory string, search parameters) of the default index for ``n`` items."""
    # ~sqrt(n) lists, but at least 39 training points per list (FAISS's k-means minimum)
    nlist = max(1, min(int(math.sqrt(n)), n // 39))
    return f"IVF{nlist},Flat", f"nprobe={min(nlist, max(8, nlist // 16))}"


class FaissIndex:
    """Items 1..size of a catalogue (FAISS label = item index - 1)."""

    def __init__(self, index: Any, size: int, spec: str, params: str):
        self.index = index
        self.size = size
        self.spec = spec
        self.params = params

    @classmethod
    def build(cls, unit: np.ndarray, spec: str = "auto", params: str | None = None, seed: int = 0) -> "FaissIndex":
        """Index the (n, d) unit-norm item vectors ``unit`` (row r = item r + 1)."""
        faiss = import_faiss()
        unit = np.ascontiguousarray(unit, dtype=np.float32)
        n, d = unit.shape
        if n == 0:
            raise UserError("cannot build a FAISS index over an empty catalogue")
        if spec == "auto":
            spec, auto_params = auto_spec(n)
            params = params if params is not None else auto_params
        try:
            index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise UserError(f"bad FAISS index spec {spec!r}: {str(exc).splitlines()[-1]}") from exc
        if not index.is_trained:
            nlist = getattr(faiss.extract_index_ivf(index), "nlist", 1) if "IVF" in spec else 1
            take = min(n, max(TRAIN_POINTS_PER_LIST * nlist, 10_000))
            sample = unit[np.sort(np.random.default_rng(seed).choice(n, take, replace=False))] if take < n else unit
            index.train(sample)
        index.add(unit)
        params = params or ""
        if params:
            try:
                faiss.ParameterSpace().set_index_parameters(index, params)
            except RuntimeError as exc:
                raise UserError(f"bad FAISS search parameters {params!r} for {spec!r}: {str(exc).splitlines()[-1]}") from exc
        return cls(index, n, spec, params)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices) of shape (B, k); missing results have index 0 and score -inf."""
        k = max(1, min(k, self.size))
        scores, labels = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        missing = labels < 0
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
        return scores, np.where(missing, 0, labels + 1).astype(np.int64)

    def extended(self, unit: np.ndarray) -> "FaissIndex":
        """A copy with the rows ``unit`` appended as items size+1, size+2, ..."""
        faiss = import_faiss()
        index = faiss.clone_index(self.index)
        if self.params:
            faiss.ParameterSpace().set_index_parameters(index, self.params)
        index.add(np.ascontiguousarray(unit, dtype=np.float32))
        return FaissIndex(index, self.size + unit.shape[0], self.spec, self.params)
