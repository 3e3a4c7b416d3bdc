"""Top-k recommendation from a model directory, with new items added by their text at run time.

How a request is answered (Eq. 6-7 and 11/12, evaluation mode):

1. at load, every catalogue item is adapted once, ``v_i = MoEAdaptor(x_i)`` (Eq. 3), plus its ID
   embedding ``e_i`` for a transductive model (Eq. 12), and L2-normalised into the *item table*;
2. a history (raw ids, oldest first) is looked up in the table and run through the sequence
   encoder (Eq. 6-7) -> sequence vector ``s``;
3. ``cos(s, v_i)`` for every item is one matmul against the normalised table, then top-k.
   The returned ``score`` is that cosine (in [-1, 1]); the model's logit is score / temperature,
   so the ranking is exactly the model's. With ``index="faiss"`` step 3 is an approximate
   inner-product search instead (``unisrec.serving.ann``).

New items (``add_items``) are encoded with the model's own text encoder (the feature set recorded
in ``config.json["encoder"]``) and adaptor. A transductive model has no ID embedding for them: they
are represented by their text alone, ``v_i`` with ``e_i = 0`` -- the inductive item
representation of Eq. (11) -- rather than a mean ID embedding, which would pull every cold item
towards the same point. The same rule holds for unknown items given with their text inside a
history (``item_texts``).

Concurrency: the catalogue is an immutable snapshot that every request reads once. ``add_items``
builds the next snapshot under a writer lock and publishes it with one attribute assignment, so a
request sees the catalogue either wholly before or wholly after an addition. Item vectors live in
buffers with spare rows: appending writes rows beyond every published snapshot's item count and
therefore never touches what a reader can see; replacing an existing item's text copies the
buffers first (copy-on-write). Text encodes run one at a time (a lock: a fast tokenizer must not
be shared by threads).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unisrec.errors import UserError

MAX_REPORTED_IDS = 20


class InvalidRequest(UserError):
    """The caller's input is wrong (bad id, text, k, ...). The message holds no server detail (no
    paths), so the HTTP layer may show it to clients."""


class UnknownItemsError(InvalidRequest):
    """A history names items that are neither in the catalogue nor given with their text."""

    def __init__(self, ids: list[str]):
        self.ids = ids
        shown = ", ".join(repr(i) for i in ids[:MAX_REPORTED_IDS])
        more = f" (and {len(ids) - MAX_REPORTED_IDS} more)" if len(ids) > MAX_REPORTED_IDS else ""
        super().__init__(
            f"unknown item ids in history: {shown}{more}; add them with add_items / POST /items, "
            "or pass their text in item_texts"
        )


class CatalogueFullError(InvalidRequest):
    """Adding the items would take the catalogue past its size cap (``add_items(max_items=...)``)."""


class TextEncoderUnavailable(UserError):
    """The server cannot encode texts (no encoder recorded, or it failed to load): not the caller's fault."""


def unicode_problem(value: str) -> str | None:
    """Why ``value`` is not proper Unicode (it holds a lone surrogate, which no UTF-8 reply can carry),
    or None. JSON's ``\\udXXX`` escapes let a client send such strings."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds a lone surrogate (U+{ord(value[exc.start]):04X}) at character {exc.start}; send valid Unicode text"
    return None


@dataclass(frozen=True)
class Catalogue:
    """One immutable view of the items. Index 0 is padding (id "", never recommended).

    ``vectors`` / ``unit`` are buffers of at least ``n + 1`` rows; only rows ``0..n`` belong to this
    snapshot (later rows may be filled by a newer one).
    """

    ids: list[str]
    texts: list[str]
    index: dict[str, int]
    vectors: torch.Tensor  # v_i (+ e_i): what the sequence encoder reads
    unit: torch.Tensor  # vectors / ||vectors||, row 0 = 0: what scoring reads
    n: int
    ann: Any = None  # unisrec.serving.ann.FaissIndex over items 1..ann.size, or None
    text_version: int = 0  # bumped when an existing item's text is replaced (search cache key)

    def rows(self, buffer: torch.Tensor) -> torch.Tensor:
        return buffer[: self.n + 1]


def adapted_item_table(model: Any, features: Any, item_ids: torch.Tensor | None = None, chunk: int = 65536) -> torch.Tensor:
    """Eq. (3) + Eq. (12) for every row of ``features``: the model's own
    :meth:`~unisrec.models.unisrec.UniSRec.item_table_from_features` (chunked, no grad)."""
    return model.item_table_from_features(features, item_ids=item_ids, chunk=chunk)


def _normalise(vectors: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(vectors, dim=-1)
    unit[0] = 0.0
    return unit


def _grow(buffer: torch.Tensor, rows: int) -> torch.Tensor:
    """A copy of ``buffer`` with room for at least ``rows`` rows (capacity doubles, amortised O(1))."""
    capacity = max(rows, 2 * buffer.shape[0])
    out = torch.empty(capacity, buffer.shape[1], dtype=buffer.dtype, device=buffer.device)
    out[: buffer.shape[0]] = buffer
    return out


# A sequence-encoder forward costs a fixed ~0.8 ms (op dispatch) plus ~0.04 ms per (padded) position
# at Scientific's size on one core: starting another forward pays off once it saves ~20 positions.
NEW_FORWARD_POSITIONS = 20


def _length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Split a batch into groups of similar history length, each run as one padded forward.

    Padding every history to the batch's longest wastes most of the work on real traffic (Scientific
    histories: median 5 items, a few reach 50). Histories are taken shortest first; the next one
    joins the current group unless the extra padding it forces on the group's members costs more
    than a new forward (``NEW_FORWARD_POSITIONS``).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    widest = 0
    for b in order:
        if groups and len(groups[-1]) * (lengths[b] - widest) <= NEW_FORWARD_POSITIONS:
            groups[-1].append(b)
        else:
            groups.append([b])
        widest = lengths[b]
    return groups


def _usable_text(text: Any) -> bool:
    return isinstance(text, str) and bool(text.strip())


def _check_finite_items(path: Path, ids: Sequence[str], feats: Any, vectors: torch.Tensor) -> None:
    """Refuse a catalogue with NaN / infinite item vectors (rows 1..n): such an item would score NaN
    and rank first (NaN compares as largest in torch.topk), and no JSON reply can carry the score."""
    bad = (~torch.isfinite(vectors[1:]).all(dim=1)).nonzero().flatten().tolist()
    if not bad:
        return
    rows = np.asarray(bad) + 1
    from_features = int((~np.isfinite(np.asarray(feats[rows], dtype=np.float32)).all(axis=1)).sum())
    shown = ", ".join(repr(ids[r]) for r in bad[:MAX_REPORTED_IDS])
    more = f" (and {len(bad) - MAX_REPORTED_IDS} more)" if len(bad) > MAX_REPORTED_IDS else ""
    cause = (
        f"{from_features} of them have NaN/inf text features in catalogue/features.npy: re-encode their texts"
        if from_features
        else "their features are finite, so the model's weights produce them: check model.safetensors"
    )
    raise UserError(f"{path}: {len(bad)} catalogue items have NaN or infinite vectors: {shown}{more}; {cause}")


class Recommender:
    """Recommend raw item ids for histories of raw item ids; see the module docstring.

    Build with :meth:`from_pretrained`. All public methods are safe to call from many threads.
    """

    def __init__(
        self,
        model: Any,
        catalogue: Catalogue,
        encoder_info: dict[str, Any] | None = None,
        text_encoder: Any = None,
        device: str | torch.device = "cpu",
        index: str = "exact",
        faiss_spec: str = "auto",
        faiss_params: str | None = None,
        path: str | None = None,
        torch_threads: int | None = None,
    ):
        if index not in ("exact", "faiss"):
            raise UserError(f"index must be 'exact' or 'faiss', got {index!r}")
        self.model = model.eval()
        self.device = torch.device(device)
        self.encoder_info = dict(encoder_info or {})
        self.path = path
        self.index_kind = index
        self.faiss_spec = faiss_spec
        self.faiss_params = faiss_params
        self._text_encoder = text_encoder
        self._encoder_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.torch_threads = torch_threads
        self._thread_state = threading.local()
        self._search_lock = threading.Lock()
        self._search_cache: tuple[list[str], int] = ([""], 0)
        self._snap = catalogue
        if index == "faiss":
            self._snap = self._with_ann(catalogue, rebuild=True)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str = "cpu",
        index: str = "exact",
        faiss_spec: str = "auto",
        faiss_params: str | None = None,
        text_encoder: Any = None,
        chunk: int = 65536,
        torch_threads: int | None = None,
    ) -> "Recommender":
        """Load a model directory (``unisrec.models.model_dir``) and precompute its item table.

        ``index="faiss"`` builds an approximate inner-product index (needs ``unisrec[faiss]``);
        ``faiss_spec`` is a FAISS factory string ("auto" = IVF sized to the catalogue) and
        ``faiss_params`` its search parameters (e.g. "nprobe=32"). ``text_encoder`` replaces the
        encoder named in config.json (anything with ``encode(list[str]) -> (n, text_dim) array``).
        """
        from unisrec.models.model_dir import load_catalogue, read_model_config
        from unisrec.models.unisrec import UniSRec

        path = Path(path)
        cfg = read_model_config(path)
        if cfg.get("model_type") != "unisrec":
            raise UserError(
                f"{path}/config.json: model_type {cfg.get('model_type')!r}; serving needs a UniSRec model "
                "(its items are scored from their text)"
            )
        ids, texts, feats = load_catalogue(path, mmap=True)
        if feats is None:
            raise UserError(f"{path}/catalogue/features.npy is missing; the model directory is incomplete")
        if feats.shape[0] != len(ids) + 1:
            raise UserError(f"{path}/catalogue/features.npy has {feats.shape[0]} rows, expected {len(ids) + 1} (items + padding)")
        try:
            model = UniSRec.from_pretrained(path)
        except ValueError as exc:  # shape / missing-weight mismatches between config and weights
            raise UserError(f"{path}: {exc}") from exc
        if feats.shape[1] != model.config.text_dim:
            raise UserError(f"{path}/catalogue/features.npy has dim {feats.shape[1]}, the model expects {model.config.text_dim}")
        if model.item_id_embedding is not None and model.item_id_embedding.num_embeddings != len(ids) + 1:
            raise UserError(
                f"{path}: the transductive ID table has {model.item_id_embedding.num_embeddings - 1} items "
                f"but catalogue/items.parquet has {len(ids)}"
            )
        model = model.to(device).eval()
        vectors = adapted_item_table(model, feats, chunk=chunk)
        _check_finite_items(path, ids, feats, vectors)
        all_ids = [""] + list(ids)
        index_of = {raw: i for i, raw in enumerate(all_ids) if i}
        if len(index_of) != len(ids):
            raise UserError(f"{path}/catalogue/items.parquet has duplicate item ids")
        cat = Catalogue(all_ids, [""] + list(texts), index_of, vectors, _normalise(vectors), len(ids))
        return cls(
            model, cat, cfg.get("encoder") or {}, text_encoder, device, index, faiss_spec, faiss_params, str(path), torch_threads
        )

    # -------------------------------------------------------------- catalogue
    @property
    def num_items(self) -> int:
        return self._snap.n

    @property
    def max_history(self) -> int:
        """Histories longer than this keep only their most recent ``max_seq_length`` items."""
        return self.model.max_seq_length

    def __contains__(self, raw_id: object) -> bool:
        """Whether the catalogue has an item with this raw id."""
        return raw_id in self._snap.index

    def item_ids(self) -> list[str]:
        snap = self._snap
        return snap.ids[1 : snap.n + 1]

    def item_embeddings(self, normalize: bool = False) -> tuple[list[str], np.ndarray]:
        """(raw ids, (n, d) float32 item vectors after the adaptor, plus e_i if transductive).

        Recommendations rank by cosine: with your own inner-product ANN use ``normalize=True`` here
        and in :meth:`embed_sequences`.
        """
        snap = self._snap
        table = snap.rows(snap.unit if normalize else snap.vectors)[1:]
        return snap.ids[1 : snap.n + 1], table.cpu().numpy().copy()

    def embed_sequences(
        self,
        histories: Sequence[Sequence[str]],
        item_texts: Mapping[str, str] | None = None,
        normalize: bool = False,
    ) -> np.ndarray:
        """(B, d) float32 sequence vectors s (Eq. 6-7) for histories of raw ids, oldest first."""
        self._pin_threads()
        s, _ = self._sequence_vectors(self._snap, histories, item_texts)
        if normalize:
            s = F.normalize(s, dim=-1)
        return s.cpu().numpy()

    # -------------------------------------------------------------- recommend
    def recommend(
        self,
        history: Sequence[str],
        k: int = 10,
        exclude_seen: bool = False,
        item_texts: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Top-k ``{"id", "score", "text"}`` for one history of raw item ids (oldest first).

        ``score`` is the cosine between sequence and item; ``exclude_seen`` drops the history's
        own items; ``item_texts`` supplies the text of history items the catalogue lacks.
        """
        if isinstance(history, str):
            raise InvalidRequest("history must be a list of item ids, not one string")
        return self.recommend_batch([history], k, exclude_seen, item_texts)[0]

    def recommend_batch(
        self,
        histories: Sequence[Sequence[str]],
        k: int | Sequence[int] = 10,
        exclude_seen: bool | Sequence[bool] = False,
        item_texts: Mapping[str, str] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """:meth:`recommend` for many histories in one encoder forward and one matmul.

        ``k`` and ``exclude_seen`` are one value for every history or one per history (what the
        HTTP server's micro-batching needs: concurrent requests differ in both).
        """
        histories = self._history_list(histories)
        ks = self._per_history("k", k, len(histories))
        for kk in ks:
            if isinstance(kk, bool) or not isinstance(kk, int) or kk < 1:
                raise InvalidRequest(f"k must be a positive integer, got {kk!r}")
        excl = self._per_history("exclude_seen", exclude_seen, len(histories))
        self._pin_threads()
        snap = self._snap  # one consistent catalogue for the whole request
        s, seen = self._sequence_vectors(snap, histories, item_texts)
        q = F.normalize(s, dim=-1)
        exclude = [sn if ex else [] for sn, ex in zip(seen, excl)]
        if snap.ann is not None:
            scores, idx = self._ann_topk(snap, q, max(ks), exclude)
        else:
            scores, idx = self._exact_topk(snap, q, max(ks), exclude)
        out = []
        for row_s, row_i, kk in zip(scores.tolist(), idx.tolist(), ks):
            # a non-finite score is padding, an excluded item or an ANN miss (-inf); NaN cannot
            # come from a loaded catalogue (refused at load) and is dropped rather than ranked
            row = [
                {"id": snap.ids[i], "score": v, "text": snap.texts[i]}
                for v, i in zip(row_s, row_i)
                if i > 0 and math.isfinite(v)
            ]
            out.append(row[:kk])
        return out

    @staticmethod
    def _history_list(histories: Any) -> list:
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Iterable):
            raise InvalidRequest("histories must be a list of lists of item ids")
        histories = list(histories)
        if not histories:
            raise InvalidRequest("no histories given")
        return histories

    @staticmethod
    def _per_history(name: str, value: Any, n: int) -> list:
        if isinstance(value, (list, tuple)):
            if len(value) != n:
                raise InvalidRequest(f"{name}: {len(value)} values for {n} histories")
            return list(value)
        return [value] * n

    def unknown_ids(self, history: Sequence[str], item_texts: Mapping[str, str] | None = None) -> list[str]:
        """The ids of ``history`` that the catalogue lacks and ``item_texts`` does not describe, in
        order, without repeats (cheap: dictionary look-ups). Items are never removed, so an id
        known now stays known."""
        snap, texts = self._snap, item_texts or {}
        return list(dict.fromkeys(h for h in history if h not in snap.index and not _usable_text(texts.get(h))))

    def search(self, query: str, k: int = 20) -> tuple[list[dict[str, str]], int]:
        """Catalogue items whose id or text contains every word of ``query`` (case-insensitive):
        (the first ``k`` in catalogue order as ``{"id", "text"}``, the number of matches).

        A plain keyword filter for browsing (the demo page): one linear scan over a lower-cased copy
        of the texts that is built once and extended as items are added.
        """
        problem = unicode_problem(query) if isinstance(query, str) else "is not a string"
        if problem:
            raise InvalidRequest(f"query {problem}")
        terms = query.casefold().split()
        if not terms:
            raise InvalidRequest("the query has no words")
        snap = self._snap
        hay = self._haystack(snap)
        found: list[dict[str, str]] = []
        total = 0
        for i in range(1, snap.n + 1):
            text = hay[i]
            if all(t in text for t in terms):
                total += 1
                if len(found) < k:
                    found.append({"id": snap.ids[i], "text": snap.texts[i]})
        return found, total

    def _haystack(self, snap: Catalogue) -> list[str]:
        """Lower-cased "id text" of at least rows 0..snap.n: rebuilt when a text was replaced, else
        extended (items only ever get appended, so a longer cache of the same version fits)."""
        with self._search_lock:
            hay, version = self._search_cache
            if version != snap.text_version:
                hay = [""]
            if len(hay) < snap.n + 1:
                hay = hay + [f"{snap.ids[i]} {snap.texts[i]}".casefold() for i in range(len(hay), snap.n + 1)]
                self._search_cache = (hay, snap.text_version)
            return hay

    # -------------------------------------------------------------- new items
    def add_items(self, items: Mapping[str, str], features: Any = None, max_items: int | None = None) -> dict[str, int]:
        """Add (or re-text) items by their text; they are recommendable and usable in histories at once.

        ``features`` optionally gives their precomputed text features ((m, text_dim), in the order
        of ``items``) instead of running the text encoder. ``max_items`` caps the catalogue size:
        a call that would add items beyond it raises :class:`CatalogueFullError` and changes
        nothing. Returns ``{"added", "updated", "num_items"}``.
        """
        raw_ids, texts = self._check_new_items(items)
        if max_items is not None:
            self._check_room(raw_ids, max_items)  # before encoding: a full catalogue costs nothing
        self._pin_threads()
        if features is None:
            feats = self._encode_texts(texts)
        else:
            feats = np.asarray(features, dtype=np.float32)
            if feats.shape != (len(raw_ids), self.model.config.text_dim):
                raise InvalidRequest(
                    f"features of shape {feats.shape} for {len(raw_ids)} items; expected ({len(raw_ids)}, {self.model.config.text_dim})"
                )
            if not np.isfinite(feats).all():
                raise InvalidRequest("features hold NaN or infinite values")
        with self._write_lock:
            if max_items is not None:
                self._check_room(raw_ids, max_items)  # again: another writer may have added meanwhile
            snap = self._snap
            existing = [snap.index.get(r, -1) for r in raw_ids]
            id_rows = torch.tensor(existing, dtype=torch.long)  # keep e_i of re-texted known items
            new_vecs = adapted_item_table(self.model, feats, item_ids=id_rows)
            if not torch.isfinite(new_vecs).all():
                raise InvalidRequest("the model maps these items' features to NaN or infinite vectors; nothing was added")
            new_unit = F.normalize(new_vecs, dim=-1)
            ids, txts, index_of = list(snap.ids), list(snap.texts), dict(snap.index)
            vectors, unit, n = snap.vectors, snap.unit, snap.n
            updated = [j for j, e in enumerate(existing) if e > 0]
            added = [j for j, e in enumerate(existing) if e < 0]
            if updated:  # rows a reader can see change: copy first
                vectors, unit = vectors.clone(), unit.clone()
                rows = torch.tensor([existing[j] for j in updated], device=vectors.device)
                vectors[rows] = new_vecs[updated]
                unit[rows] = new_unit[updated]
                for j in updated:
                    txts[existing[j]] = texts[j]
            if added:
                if n + 1 + len(added) > vectors.shape[0]:
                    vectors, unit = _grow(vectors, n + 1 + len(added)), _grow(unit, n + 1 + len(added))
                vectors[n + 1 : n + 1 + len(added)] = new_vecs[added]
                unit[n + 1 : n + 1 + len(added)] = new_unit[added]
                for j in added:
                    n += 1
                    ids.append(raw_ids[j])
                    txts.append(texts[j])
                    index_of[raw_ids[j]] = n
            nxt = Catalogue(ids, txts, index_of, vectors, unit, n, snap.ann, snap.text_version + bool(updated))
            if snap.ann is not None:
                nxt = self._with_ann(nxt, rebuild=bool(updated))
            self._snap = nxt
        return {"added": len(added), "updated": len(updated), "num_items": nxt.n}

    # ------------------------------------------------------------- internals
    def _pin_threads(self) -> None:
        """Apply ``torch_threads`` in the calling thread, once: torch's OpenMP thread count is a
        per-thread setting, so setting it in the main thread does not reach a server's workers."""
        if self.torch_threads and not getattr(self._thread_state, "pinned", False):
            torch.set_num_threads(self.torch_threads)
            self._thread_state.pinned = True

    def _check_room(self, raw_ids: list[str], max_items: int) -> None:
        snap = self._snap
        new = sum(1 for r in raw_ids if r not in snap.index)
        if snap.n + new > max_items:
            raise CatalogueFullError(
                f"the catalogue holds {snap.n} items and may hold at most {max_items}; these {new} new "
                f"items would exceed that (replacing the text of existing items is still allowed)"
            )

    def _check_new_items(self, items: Mapping[str, str]) -> tuple[list[str], list[str]]:
        if not isinstance(items, Mapping) or not items:
            raise InvalidRequest("items must be a non-empty mapping {raw id: text}")
        raw_ids, texts = [], []
        for raw, text in items.items():
            if not isinstance(raw, str) or not raw.strip():
                raise InvalidRequest(f"item id {raw!r}: ids must be non-empty strings")
            if unicode_problem(raw):
                raise InvalidRequest(f"item id {raw!r} {unicode_problem(raw)}")
            if not isinstance(text, str) or not text.strip():
                raise InvalidRequest(f"item {raw!r}: text must be a non-empty string (the model scores new items by text alone)")
            if unicode_problem(text):
                raise InvalidRequest(f"text of item {raw!r} {unicode_problem(text)}")
            raw_ids.append(raw)
            texts.append(text)
        return raw_ids, texts

    def text_encoder(self) -> Any:
        """The model's text encoder (built on first use from config.json["encoder"]).

        Raises :class:`TextEncoderUnavailable` when the model records none or it cannot be loaded.
        """
        with self._encoder_lock:
            if self._text_encoder is None:
                name = self.encoder_info.get("encoder")
                if not name:
                    raise TextEncoderUnavailable(
                        f"{self.path}/config.json records no text encoder; pass text_encoder=... or precomputed features"
                    )
                from unisrec.text import TextEncoder

                kwargs = {k: self.encoder_info[k] for k in ("pooling", "max_length") if self.encoder_info.get(k) is not None}
                try:
                    self._text_encoder = TextEncoder(name_or_path=name, **kwargs)
                except UserError as exc:
                    raise TextEncoderUnavailable(f"the text encoder {name!r} of {self.path} cannot be loaded: {exc}") from exc
            return self._text_encoder

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """Text features of ``texts``, one encode at a time (a fast tokenizer must not be shared by
        threads, and two concurrent encodes would only compete for the same cores)."""
        encoder = self.text_encoder()
        with self._encode_lock:
            feats = np.asarray(encoder.encode(list(texts)), dtype=np.float32)
        if feats.shape != (len(texts), self.model.config.text_dim):
            raise TextEncoderUnavailable(
                f"the text encoder returned shape {feats.shape}; the model expects (n, {self.model.config.text_dim}) -- "
                "is it the encoder the model was trained with?"
            )
        if not np.isfinite(feats).all():
            raise InvalidRequest("the text encoder gave NaN or infinite features for these texts")
        return feats

    def _sequence_vectors(
        self, snap: Catalogue, histories: Sequence[Sequence[str]], item_texts: Mapping[str, str] | None
    ) -> tuple[torch.Tensor, list[list[int]]]:
        """(B, d) sequence vectors (Eq. 6-7) and each history's catalogue indices (for exclude_seen).

        Histories longer than ``max_seq_length`` keep their most recent items, as in training.
        """
        histories = self._history_list(histories)
        item_texts = item_texts or {}
        cap = self.model.max_seq_length
        unknown: dict[str, None] = {}
        cold: dict[str, int] = {}  # unknown ids with text -> row in the cold table
        rows: list[list[int]] = []  # last `cap` items: catalogue index, or -(1 + cold row)
        seen: list[list[int]] = []  # every catalogue item of the history (for exclude_seen)
        for b, hist in enumerate(histories):
            if isinstance(hist, (str, bytes)) or not isinstance(hist, Sequence):
                raise InvalidRequest(f"history {b}: expected a list of item ids, got {type(hist).__name__}")
            if not hist:
                raise InvalidRequest(f"history {b} is empty; give at least one item id")
            row = []
            for raw in hist:
                if not isinstance(raw, str):
                    raise InvalidRequest(f"history {b}: item id {raw!r} is not a string")
                i = snap.index.get(raw)
                if i is None:
                    text = item_texts.get(raw)
                    if _usable_text(text):
                        if unicode_problem(text):
                            raise InvalidRequest(f"item_texts[{raw!r}] {unicode_problem(text)}")
                        i = -(1 + cold.setdefault(raw, len(cold)))
                    else:
                        unknown[raw] = None
                        continue
                row.append(i)
            seen.append([i for i in row if i > 0])
            rows.append(row[-cap:])
        if unknown:
            raise UnknownItemsError(list(unknown))
        table = snap.rows(snap.vectors)
        s = torch.empty(len(rows), table.shape[1], dtype=table.dtype, device=self.device)
        with torch.inference_mode():
            cold_vecs = None
            if cold:
                feats = self._encode_texts([item_texts[r] for r in cold])
                cold_vecs = adapted_item_table(self.model, feats, item_ids=torch.full((len(cold),), -1))
            for group in _length_groups([len(r) for r in rows]):
                width = max(len(rows[b]) for b in group)
                idx = torch.zeros(len(group), width, dtype=torch.long)
                for g, b in enumerate(group):
                    idx[g, : len(rows[b])] = torch.tensor([max(i, 0) for i in rows[b]], dtype=torch.long)
                item_repr = table[idx.to(self.device)]  # (G, L, d)
                if cold_vecs is not None:
                    for g, b in enumerate(group):
                        for t, i in enumerate(rows[b]):
                            if i < 0:
                                item_repr[g, t] = cold_vecs[-1 - i]
                lengths = torch.tensor([len(rows[b]) for b in group], dtype=torch.long, device=self.device)
                out = self.model.encoder.forward_last(item_repr, lengths)  # = forward(), last position only
                s[torch.tensor(group, device=self.device)] = out  # groups hold histories shortest first
        return s, seen

    def _exact_topk(self, snap: Catalogue, q: torch.Tensor, k: int, exclude: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (11)/(12) ranking: cosine against every item, one matmul + topk."""
        with torch.inference_mode():
            scores = q @ snap.rows(snap.unit).T  # (B, n + 1)
            scores[:, 0] = float("-inf")
            for b, ex in enumerate(exclude):
                if ex:
                    scores[b, ex] = float("-inf")
            return torch.topk(scores, min(k, snap.n + 1), dim=1)

    def _ann_topk(self, snap: Catalogue, q: torch.Tensor, k: int, exclude: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """FAISS over items 1..ann.size, exact cosine over items added since (the "fresh" rows)."""
        extra = max((len(set(e)) for e in exclude), default=0)
        ann_s, ann_i = snap.ann.search(q.cpu().numpy(), k + extra)
        scores = torch.as_tensor(ann_s, device=q.device)
        idx = torch.as_tensor(ann_i, device=q.device)
        if snap.n > snap.ann.size:
            fresh = snap.unit[snap.ann.size + 1 : snap.n + 1]
            with torch.inference_mode():
                scores = torch.cat([scores, q @ fresh.T], dim=1)
            fresh_idx = torch.arange(snap.ann.size + 1, snap.n + 1, device=q.device).expand(q.shape[0], -1)
            idx = torch.cat([idx, fresh_idx], dim=1)
        scores = scores.clone()
        scores[idx <= 0] = float("-inf")
        for b, ex in enumerate(exclude):
            if ex:
                scores[b, torch.isin(idx[b], torch.tensor(ex, device=q.device))] = float("-inf")
        top_s, pos = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        return top_s, idx.gather(1, pos)

    def _with_ann(self, snap: Catalogue, rebuild: bool) -> Catalogue:
        """Attach a FAISS index: built anew, or the old one extended once enough fresh rows pile up.

        Fresh rows are scored exactly, so extending is only about speed; it clones the index (an
        in-place add would race with searches) and adds the fresh rows.
        """
        from unisrec.serving.ann import FaissIndex

        unit = snap.rows(snap.unit)[1:].cpu().numpy()
        if rebuild or snap.ann is None:
            return replace(snap, ann=FaissIndex.build(unit, self.faiss_spec, self.faiss_params))
        fresh = snap.n - snap.ann.size
        if fresh > max(1024, int(math.sqrt(max(snap.ann.size, 1)) * 8)):
            return replace(snap, ann=snap.ann.extended(unit[snap.ann.size :]))
        return snap

