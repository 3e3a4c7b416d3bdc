"""CCDR (Xie et al., "Contrastive Cross-domain Recommendation in Matching", KDD 2022), trained on
source domains and the target together, as a sequential recommender of our protocol.

CCDR trains a matching model of the target domain with three kinds of loss: the target's own
matching loss, an *intra-domain* contrastive loss in every domain (two augmented neighbourhood views
of one node are a positive pair), and *inter-domain* contrastive losses that align the two domains'
representations through what links them: overlapping users, a shared taxonomy, and a user's
neighbours in the other domain. Total: L = L_target + lambda_intra * L_intra + lambda_inter * L_inter.
Every contrastive term has one form, :func:`info_nce` (cosine similarity / temperature, in-batch
negatives); each link is one function below. Cited by the paper's component names (our copy of the
paper has no equation numbers to cite); the UniSRec authors did not document their adaptation.

How the user representation of a test history is formed: the target history's item IDs -> the
target's ID table -> the shared SASRec Transformer (``models.encoder``) -> its output at the last item
-> dot product with every target item's ID embedding (CCDR's matching score). A trained CCDR is a
SASRec-shaped model of the target; each source's ID table is a training-only parameter
(:class:`CCDRHeads`), not in the model directory.

What is adapted, and why (docs/training.md "Baselines: RecGURU and CCDR"):

* **encoder**: CCDR aggregates a node's neighbourhood in a heterogeneous graph with a GNN; a user's
  neighbourhood in the user-item graph is the items they interacted with, and here it is read in time
  order by the shared Transformer, which makes CCDR a sequential recommender of our protocol;
* **neighbourhood augmentation** (:func:`neighbour_sampling`): a view keeps each of the user's items
  with probability ``neighbour_keep`` (a sampled sub-neighbourhood), order kept; user nodes only;
* **overlapping users** (:func:`user_inter_domain_loss`, :func:`neighbour_inter_domain_loss`): the
  full method, used when a target and a source user share a raw user id (``link_users``; tested on
  generated data). Our real domains share no linkable users, so on them these two terms are absent;
* **taxonomy** -> **item-text neighbours** (:func:`text_neighbour_inter_domain_loss`): our datasets
  have no taxonomy shared across domains, so each target item is linked to its nearest source item by
  cosine similarity of their frozen text vectors (``text_neighbours``; the same text encoder on both
  sides), and the two ID embeddings form a positive pair -- on the real datasets this, with the shared
  Transformer, is the whole cross-domain signal;
* the target's loss is cross-entropy over all items (the shared protocol) and each source keeps its
  own next-item loss (``source_weight``) so its ID table and the shared encoder learn from it; one
  optimizer trains everything jointly, sources sampled per step (``training.joint``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unisrec.errors import UserError
from unisrec.models.encoder import EncoderConfig, check_sizes, init_weights
from unisrec.models.sasrec import SASRec
from unisrec.training.joint import DomainSequences, JointTask, encode_last, gather_rows, link_users


@dataclass
class CCDRConfig:
    """The shared Transformer plus CCDR's loss weights and augmentation (chosen here: the UniSRec
    authors' settings are not documented)."""

    intra_weight: float = field(default=0.1, metadata={"help": "lambda of the intra-domain contrastive loss (mean over domains)"})
    inter_weight: float = field(default=0.1, metadata={"help": "lambda of each inter-domain contrastive loss (mean over sources)"})
    source_weight: float = field(default=1.0, metadata={"help": "weight of the sources' own next-item loss (mean over sources)"})
    temperature: float = field(default=0.1, metadata={"help": "temperature of every contrastive loss"})
    neighbour_keep: float = field(default=0.8, metadata={"help": "share of a user's items each augmented view keeps (neighbour sampling)"})
    domain_batch_size: int = field(default=256, metadata={"help": "users / items / prefixes drawn per domain per step for the cross-domain losses"})
    link_users: bool = field(default=True, metadata={
        "help": "treat a target and a source user with the same raw user id as one person (user- and neighbour-based "
        "inter-domain losses); only for datasets sharing an id space"})
    text_neighbours: bool = field(default=True, metadata={
        "help": "link each target item to its nearest source item by text vectors (inter-domain loss; needs `unisrec encode` "
        "of every domain with one encoder)"})
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_items: int = field(default=0, metadata={"derived": True})

    def __post_init__(self) -> None:
        check_sizes(self, num_items=(0, 2**31 - 2), domain_batch_size=(2, 2**20))
        for name in ("intra_weight", "inter_weight", "source_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.neighbour_keep <= 1.0:
            raise ValueError(f"neighbour_keep must be in (0, 1], got {self.neighbour_keep}")


# ----------------------------------------------------------------------------- the losses
def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float, same: torch.Tensor | None = None) -> torch.Tensor:
    """CCDR's contrastive loss form: mean over i of -log( exp(cos(q_i, k_i) / tau) / sum_j exp(cos(q_i, k_j) / tau) ),
    key i the positive of query i, the batch's other keys its negatives.

    ``same`` (B, B) bool, optional: True where key j is the same entity as key i (e.g. the same item
    drawn twice); such a j is removed from query i's denominator (never i's own positive)."""
    logits = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    if same is not None:
        off_diagonal = ~torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same & off_diagonal, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def neighbour_sampling(seqs: np.ndarray, lens: np.ndarray, keep: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CCDR's neighbourhood augmentation, on a user's items: each real item is kept with probability
    ``keep`` (at least one per user), in time order, left-aligned. Returns (views, lengths)."""
    b, w = seqs.shape
    cols = np.arange(w)[None, :]
    real = cols < lens[:, None]
    kept = real & (rng.random((b, w)) < keep)
    none = ~kept.any(1)
    kept[none, np.minimum((rng.random(b)[none] * lens[none]).astype(np.int64), lens[none] - 1)] = True
    order = np.argsort(np.where(kept, cols, w + cols), axis=1, kind="stable")
    n = kept.sum(1)
    views = np.where(cols < n[:, None], np.take_along_axis(seqs, order, 1), 0)
    return views[:, : int(n.max())], n.astype(np.int64)


def intra_domain_loss(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """CCDR's intra-domain contrastive loss: the two augmented views of one user (row i of both) are a
    positive pair, the other users of the batch in the same domain are negatives."""
    return info_nce(view_a, view_b, temperature)


def user_inter_domain_loss(target_users: torch.Tensor, source_users: torch.Tensor, temperature: float) -> torch.Tensor:
    """CCDR's user-based inter-domain contrastive loss: an overlapping user's target representation and
    source representation (row i of both) are a positive pair; other overlapping users are negatives."""
    return info_nce(target_users, source_users, temperature)


def neighbour_inter_domain_loss(target_users: torch.Tensor, source_neighbours: torch.Tensor, neighbour_items: torch.Tensor,
                                temperature: float) -> torch.Tensor:
    """CCDR's neighbour-based inter-domain contrastive loss: an overlapping user's target representation
    and one of their neighbours in the source domain -- an item they interacted with there, by its
    source ID embedding (row i) -- are a positive pair; ``neighbour_items`` removes repeats of an item."""
    return info_nce(target_users, source_neighbours, temperature, neighbour_items[:, None] == neighbour_items[None, :])


def text_neighbour_inter_domain_loss(target_items: torch.Tensor, source_items: torch.Tensor, source_ids: torch.Tensor,
                                     temperature: float) -> torch.Tensor:
    """Our adaptation of CCDR's taxonomy-based inter-domain contrastive loss (no taxonomy is shared by
    our domains): a target item's ID embedding and the ID embedding of its nearest source item by text
    (row i of both) are a positive pair; ``source_ids`` removes repeats of a source item."""
    return info_nce(target_items, source_items, temperature, source_ids[:, None] == source_ids[None, :])


def nearest_text_neighbours(target_features: np.ndarray, source_features: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(num_target_items + 1,) the source item (1-based) whose text vector is most cosine-similar to each
    target item's; row 0 (padding) is 0. Both tables have row 0 = padding."""
    src = F.normalize(torch.from_numpy(np.array(source_features[1:], dtype=np.float32)), dim=-1)
    tgt = torch.from_numpy(np.array(target_features[1:], dtype=np.float32))
    out = np.zeros(len(tgt) + 1, dtype=np.int64)
    for i in range(0, len(tgt), chunk):
        out[1 + i : 1 + i + chunk] = (F.normalize(tgt[i : i + chunk], dim=-1) @ src.T).argmax(1).numpy() + 1
    return out


# ----------------------------------------------------------------------------- the model
class CCDR(SASRec):
    """The target recommender: the target's ID table + the shared Transformer (scores as SASRec's)."""

    model_type = "ccdr"
    config_class = CCDRConfig

    def joint_task(self, target: Any, sources: list[Any], train: Any, device: torch.device) -> "CCDRTask":
        """Joint training on ``sources`` and ``target`` (``unisrec train ccdr TARGET --source DIR``)."""
        return CCDRTask(self, target, sources, train, device)


class CCDRHeads(nn.Module):
    """Training-only parameters: each source's ID table."""

    def __init__(self, config: CCDRConfig, source_items: list[int]):
        super().__init__()
        hidden = config.encoder.hidden_size
        self.source_embeddings = nn.ModuleList(nn.Embedding(n + 1, hidden, padding_idx=0) for n in source_items)
        self.source_embeddings.apply(lambda m: init_weights(m, config.encoder.initializer_range))


def domain_text_features(dataset: Any, name: str | None) -> tuple[str | None, np.ndarray]:
    """(text encoder name, (num_items + 1, dim) vectors) of a dataset's feature set, or a UserError."""
    try:
        name, info = dataset.feature_info(name)
        return info.get("encoder"), np.array(dataset.features(name), dtype=np.float32)
    except UserError as exc:
        raise UserError(f"ccdr: {exc} (CCDR's text-neighbour inter-domain loss reads it; --text-neighbours false trains without)") from None


class CCDRTask(JointTask):
    """One step: the target's next-item loss + each source's next-item loss + intra-domain (every
    domain) + user-, neighbour- and text-neighbour-based inter-domain contrastive losses."""

    loss_names = ("source_next_item", "intra", "inter_user", "inter_neighbour", "inter_text")

    def __init__(self, model: CCDR, target: Any, sources: list[Any], train: Any, device: torch.device):
        cfg = model.config
        super().__init__(model, target, sources, train, device, CCDRHeads(cfg, [s.num_items for s in sources]))
        self.max_history = train.max_history
        self.domains = [DomainSequences.of(d, train.max_history) for d in (target, *sources)]
        self.links = [link_users(target, self.domains[0], s, self.domains[1 + i]) if cfg.link_users else np.zeros((0, 2), np.int64)
                      for i, s in enumerate(sources)]
        self.source_prefixes = [(s, *s.split_positions("train")) for s in sources]
        self.neighbours: list[np.ndarray] = []
        if cfg.text_neighbours:
            encoder, feats = domain_text_features(target, train.features)
            for s in sources:
                other, source_feats = domain_text_features(s, train.features)
                if other != encoder or source_feats.shape[1] != feats.shape[1]:
                    raise UserError(f"ccdr: the text vectors of {target.path} ({encoder}) and {s.path} ({other}) come from "
                                    "different encoders; encode every domain with one (or --text-neighbours false)")
                self.neighbours.append(nearest_text_neighbours(feats, source_feats))

    def describe(self) -> str:
        parts = [f"{d.name} ({len(d):,} users, {d.num_items:,} items)" for d in self.domains]
        linked = ", ".join(f"{len(p):,} with {d.name}" for p, d in zip(self.links, self.domains[1:]))
        text = "text neighbours of every target item in each source" if self.neighbours else "no text neighbours"
        return f"CCDR: target {parts[0]}; sources {', '.join(parts[1:])}; overlapping users: {linked}; {text}"

    def tables(self) -> list[torch.Tensor]:
        return [self.model.item_embedding.weight, *(e.weight for e in self.heads.source_embeddings)]

    def encode(self, d: int, seqs: np.ndarray, lens: np.ndarray) -> torch.Tensor:
        return encode_last(self.model.encoder, self.tables()[d], seqs, lens, self.device)

    def source_next_item(self, s: int, rng: np.random.Generator) -> torch.Tensor:
        """Cross-entropy over all of source ``s``'s items for ``domain_batch_size`` of its training prefixes."""
        dataset, users, pos = self.source_prefixes[s]
        rows = rng.permutation(len(pos))[: self.model.config.domain_batch_size]
        p = pos[rows]
        start = dataset.seq_offsets[users[rows]].astype(np.int64)
        n = np.minimum(p - start, self.max_history)
        cols = np.arange(int(n.max()))
        hist = np.where(cols[None, :] < n[:, None], dataset.seq_items[np.minimum((p - n)[:, None] + cols[None, :], p[:, None])], 0)
        table = self.tables()[1 + s]
        reprs = encode_last(self.model.encoder, table, hist.astype(np.int64), n.astype(np.int64), self.device)
        targets = torch.from_numpy(dataset.seq_items[p].astype(np.int64)).to(self.device)
        return F.cross_entropy(self.model.scores(reprs, table), targets)

    def cross_domain_losses(self, rng: np.random.Generator) -> dict[str, tuple[float, torch.Tensor]]:
        cfg, dev = self.model.config, self.device
        tables = self.tables()
        out: dict[str, tuple[float, torch.Tensor]] = {}
        if cfg.source_weight:
            out["source_next_item"] = (cfg.source_weight, torch.stack([self.source_next_item(s, rng) for s in range(len(self.sources))]).mean())
        if cfg.intra_weight:
            intra = []
            for d, dom in enumerate(self.domains):
                seqs, lens = dom.batch(dom.sample(rng, cfg.domain_batch_size))
                (seqs_a, lens_a), (seqs_b, lens_b) = (neighbour_sampling(seqs, lens, cfg.neighbour_keep, rng) for _ in range(2))
                rows, (seqs_a, seqs_b) = gather_rows(tables[d], seqs_a, seqs_b)  # both views' rows in one lookup
                a = encode_last(self.model.encoder, rows, seqs_a, lens_a, dev)
                b = encode_last(self.model.encoder, rows, seqs_b, lens_b, dev)
                intra.append(intra_domain_loss(a, b, cfg.temperature))
            out["intra"] = (cfg.intra_weight, torch.stack(intra).mean())
        if not cfg.inter_weight:
            return out
        users, neighbours, texts = [], [], []
        for s, pairs in enumerate(self.links):
            if len(pairs) < 2:
                continue
            pick = pairs[rng.permutation(len(pairs))[: cfg.domain_batch_size]]
            tgt, src = self.domains[0], self.domains[1 + s]
            u_t = self.encode(0, *tgt.batch(pick[:, 0]))
            u_s = self.encode(1 + s, *src.batch(pick[:, 1]))
            users.append(user_inter_domain_loss(u_t, u_s, cfg.temperature))
            src_lens = src.lens[pick[:, 1]]
            items = src.seqs[pick[:, 1], (rng.random(len(pick)) * src_lens).astype(np.int64)]  # one source neighbour each
            items_t = torch.from_numpy(items).to(dev)
            neighbours.append(neighbour_inter_domain_loss(u_t, tables[1 + s][items_t], items_t, cfg.temperature))
        for s, nearest in enumerate(self.neighbours):
            items = 1 + rng.permutation(self.domains[0].num_items)[: cfg.domain_batch_size]
            target_ids = torch.from_numpy(items).to(dev)
            source_ids = torch.from_numpy(nearest[items]).to(dev)
            texts.append(text_neighbour_inter_domain_loss(tables[0][target_ids], tables[1 + s][source_ids], source_ids, cfg.temperature))
        for name, parts in (("inter_user", users), ("inter_neighbour", neighbours), ("inter_text", texts)):
            if parts:
                out[name] = (cfg.inter_weight, torch.stack(parts).mean())
        return out
