"""RecGURU (Li et al., "RecGURU: Adversarial Learning of Generalized User Representations for
Cross-Domain Recommendation", WSDM 2022), trained on source domains and the target together.

The method, each part one function below (cited by the paper's component names; our copy of the
paper has no equation numbers to cite, so the authors' release, github.com/Chain123/RecGURU, names
the code each part was checked against):

* **GURU encoder** (:func:`generalized_user_representation`): domain-specific item-ID embeddings ->
  one self-attentive encoder shared by all domains -> the output at the last item is the user's
  *generalized user representation* (GUR). Here the encoder is the shared SASRec Transformer
  (``models.encoder``) and the ID tables are the target's (the model's own) and one per source.
* **GURU decoder** (:func:`reconstruction_loss`): a per-domain self-attentive decoder reconstructs
  the sequence from its GUR (teacher forced), making encoder + decoder a sequence autoencoder.
* **Domain discriminator** (:func:`discriminator_loss`): predicts from a GUR which domain its
  sequence came from.
* **Adversarial learning** (:func:`confusion_loss`): the encoder is trained against the
  discriminator, so that source and target GURs become indistinguishable.
* **Overlapping users** (:func:`overlap_loss`): the GURs of one person's sequences in two domains are
  pulled together (mean squared error, the release's ``l2_constraint``). Used where users overlap
  (``link_users``: same raw user id), not required.
* **CDSRec unit** (:class:`CDSRecDecoder`, the release's ``recommend_a/b``): the target's recommender, a
  causal Transformer decoder over the history's items that also attends to the GUR; its output is
  scored against the target's item table, cross-entropy over all items (the shared protocol's loss and
  batching) -- the **next-item objective on the target**.

How the user representation of a test history is formed: the target history's item IDs -> the
target's ID table -> the shared GURU encoder (the GUR of every prefix) -> the CDSRec decoder over the
same items, each position attending to its prefix's GUR -> its output at the last item -> dot product
with every target item's ID embedding. A trained RecGURU is the target's ``item_embedding`` +
``encoder`` + ``recommender``; the source tables, autoencoder decoders and discriminator are
training-only parameters (:class:`RecGURUHeads`) and are not in the model directory.

Adapted, on purpose (docs/training.md "Baselines: RecGURU and CCDR"):

* the GUR a decoder position attends to is that of its own prefix (the encoder is causal), so every
  output sees only the items before its target, in last-item and every-position batching alike (the
  release's decoder attends to the GUR of the whole input sequence);
* ``cdsrec=False`` scores the GUR itself instead (no recommendation decoder: the next-item loss then
  trains the GURU encoder directly) -- this project's first build, kept as a control. On Online Retail
  both forms learn the next item slowly, and the target's own autoencoder alone is enough to cause it
  (results/table3/recguru_probe_online_retail.md; docs/training.md);
* the adversarial game is played in one optimizer step: the discriminator's loss sees detached GURs,
  the encoder's loss a detached copy of the discriminator (simultaneous updates), instead of the
  release's alternating updates with 5 discriminator steps (and, in its later code, a WGAN-GP critic);
* the encoder's adversarial target is the uniform distribution over domains (the domain-confusion
  loss), not the paper's flipped domain label: played in one step with the discriminator, the flipped
  label is minimised by the domains swapping places instead of merging (measured, see
  :func:`confusion_loss`); both losses are minimal against an optimal discriminator when it cannot
  tell the domains apart;
* more than one source: the discriminator classifies 1 + S domains (cross-entropy); with one source
  it is the paper's two-domain discriminator;
* reconstruction uses a sampled softmax with ``reconstruction_negatives`` uniform negatives shared
  by the step's positions (the release: 30 per position);
* a source is sampled, not passed over in full, every epoch (``training.joint``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unisrec.models.dropout import Dropout
from unisrec.models.encoder import (
    EncoderConfig,
    FeedForward,
    SelfAttention,
    SequenceEncoder,
    attention_at_positions,
    causal_padding_mask,
    check_sizes,
    encoder_passes,
    init_weights,
)
from unisrec.models.sasrec import SASRec
from unisrec.training.joint import DomainSequences, JointTask, encode_last, gather_rows, link_users


@dataclass
class RecGURUConfig:
    """The shared Transformer (the GURU encoder and each decoder) plus RecGURU's loss weights."""

    reconstruction_weight: float = field(default=1.0, metadata={"help": "weight of each domain's autoencoder reconstruction loss (release: 1)"})
    adversarial_weight: float = field(default=1.0, metadata={"help": "weight of the discriminator and confusion losses (release: 1)"})
    overlap_weight: float = field(default=1.0, metadata={"help": "weight of the overlapping users' GUR distance (release: 1)"})
    domain_batch_size: int = field(default=256, metadata={"help": "users drawn per domain per step for the cross-domain losses"})
    reconstruction_negatives: int = field(default=100, metadata={"help": "uniform negatives of the reconstruction's sampled softmax (shared by a step's positions)"})
    cdsrec: bool = field(default=True, metadata={
        "help": "recommend through the paper's CDSRec unit (a causal decoder over the items attending to the GUR); "
        "false = score the GUR itself (a control)"})
    link_users: bool = field(default=True, metadata={
        "help": "treat a target and a source user with the same raw user id as one person (overlap loss); "
        "only for datasets sharing an id space"})
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_items: int = field(default=0, metadata={"derived": True})

    def __post_init__(self) -> None:
        check_sizes(self, num_items=(0, 2**31 - 2), domain_batch_size=(2, 2**20), reconstruction_negatives=(1, 2**20))
        for name in ("reconstruction_weight", "adversarial_weight", "overlap_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


# ----------------------------------------------------------------------------- the method
def generalized_user_representation(encoder: nn.Module, table: torch.Tensor, seqs: np.ndarray, lens: np.ndarray,
                                    device: Any) -> torch.Tensor:
    """RecGURU's GURU encoder: a domain's sequences (its own ID ``table``) through the encoder shared by
    all domains; the output at each sequence's last item is its GUR, (B, d)."""
    return encode_last(encoder, table, seqs, lens, device)


def reconstruction_loss(decoder: SequenceEncoder, table: torch.Tensor, gur: torch.Tensor, seqs: np.ndarray,
                        lens: np.ndarray, negatives: np.ndarray) -> torch.Tensor:
    """RecGURU's GURU decoder: reconstruct each sequence x_1..x_n from its GUR u, teacher forced.

    The decoder (a causal Transformer of the domain) reads u, x_1, ..., x_{n-1}; its output at step t
    predicts x_t by a sampled softmax over [x_t, ``negatives``] (the domain's ID ``table`` scores both
    sides, as in the release; a negative equal to x_t is removed). Mean over the B sequences' n
    positions."""
    device = gur.device
    neg = torch.from_numpy(negatives).to(device)
    neg_table = table[neg]
    losses, count = [], 0
    for g in encoder_passes(lens, device):
        width = int(lens[g].max())
        seq = torch.from_numpy(seqs[g, :width]).to(device)
        inputs = torch.cat([gur[torch.from_numpy(g).to(device)].unsqueeze(1), table[seq[:, :-1]]], 1)
        lengths = torch.from_numpy(lens[g]).to(device)
        out = decoder.forward_all(inputs, lengths)
        real = torch.arange(width, device=device)[None, :] < lengths[:, None]
        h, positives = out[real], seq[real]
        negative_logits = (h @ neg_table.T).masked_fill(neg[None, :] == positives[:, None], float("-inf"))
        logits = torch.cat([(h * table[positives]).sum(-1, keepdim=True), negative_logits], 1)
        losses.append(F.cross_entropy(logits, torch.zeros(len(h), dtype=torch.long, device=device), reduction="sum"))
        count += len(h)
    return torch.stack(losses).sum() / count


def discriminator_loss(discriminator: nn.Module, gur: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
    """RecGURU's domain discriminator: predict each GUR's domain (cross-entropy; with two domains the
    paper's binary loss). The GURs are detached: this loss trains the discriminator only."""
    return F.cross_entropy(discriminator(gur.detach()), domains)


def confusion_loss(discriminator: nn.Module, gur: torch.Tensor, n_domains: int) -> torch.Tensor:
    """RecGURU's adversarial loss of the encoder (the generator), in its domain-confusion form: the
    cross-entropy of the discriminator's prediction for each GUR against the uniform distribution over
    the ``n_domains`` domains, minimal when the discriminator cannot place any GUR. The discriminator's
    parameters are detached: this loss trains the encoder (and the ID tables) only.

    The paper's generator loss uses the flipped domain label instead; against an optimal discriminator
    both are minimal exactly when the domains' GURs are distributed alike. Played in one optimizer step
    with the discriminator (simultaneous updates), the flipped label is minimised by the two domains
    swapping places rather than merging: on the toy of tests/test_recguru.py (a linear encoder, two
    domains one offset apart, 3 seeds) a fresh probe still told the domains apart with accuracy
    0.94-1.0 after flipped-label training (0.96-1.0 with gradient reversal), 0.55-0.56 after this loss."""
    frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
    logits = torch.func.functional_call(discriminator, frozen, (gur,))
    return F.cross_entropy(logits, torch.full_like(logits, 1.0 / n_domains))


def overlap_loss(target_gur: torch.Tensor, source_gur: torch.Tensor) -> torch.Tensor:
    """RecGURU's constraint on overlapping users: the mean squared difference of one person's GURs
    from their target and their source sequences (row i of both is the same user)."""
    return F.mse_loss(target_gur, source_gur)


class GURAttention(nn.Module):
    """The CDSRec decoder's encoder-decoder attention, whose memory is one vector: the GUR.

    The release repeats the GUR along the memory, so every key is the same and every position's attention
    weights are uniform: the sub-layer's output is the value projection of the GUR, through the output
    projection, dropout, the residual and LayerNorm. That is computed directly (the query and key
    projections cannot change it and are not built; dropout on uniform attention weights is not drawn)."""

    def __init__(self, hidden_size: int, hidden_dropout: float, eps: float):
        super().__init__()
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_dropout = Dropout(hidden_dropout)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor, gur: torch.Tensor) -> torch.Tensor:
        """x (B, L, d) decoder states; gur (B, L, d): the GUR each position attends to."""
        return self.norm(self.out_dropout(self.dense(self.value(gur))) + x)


class CDSRecLayer(nn.Module):
    """A Transformer decoder layer: causal self-attention, attention to the GUR, feed-forward."""

    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.attention = SelfAttention(c.hidden_size, c.n_heads, c.attn_dropout, c.hidden_dropout, c.layer_norm_eps)
        self.gur_attention = GURAttention(c.hidden_size, c.hidden_dropout, c.layer_norm_eps)
        self.ffn = FeedForward(c.hidden_size, c.inner_size, c.hidden_dropout, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, gur: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.gur_attention(self.attention(x, mask), gur))


class CDSRecDecoder(nn.Module):
    """RecGURU's CDSRec unit, the target's recommender: item vectors + learned positions, LayerNorm and
    dropout (as the encoder's Eq. (6)), then decoder layers (:class:`CDSRecLayer`) whose position j
    attends causally to items 0..j and to ``gur[:, j]``, the GUR of the prefix ending at j."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.position_embedding = nn.Embedding(config.max_seq_length, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(CDSRecLayer(config) for _ in range(config.n_layers))
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, item_repr: torch.Tensor, lengths: torch.Tensor, gur: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, d) items and (B, L, d) per-prefix GURs -> (B, L, d) outputs; output j sees items 0..j only.
        ``last_only``: (B, d), the output at each history's last real item, the final layer computed there only
        (as ``models.encoder.layers_at_last_position``: the same values, less work)."""
        x = self.dropout(self.norm(item_repr + self.position_embedding.weight[: item_repr.shape[1]].unsqueeze(0)))
        mask = causal_padding_mask(lengths, x.shape[1])
        for layer in self.layers[:-1] if last_only else self.layers:
            x = layer(x, mask, gur)
        if not last_only:
            return x
        last = (lengths.clamp(min=1) - 1)[:, None]  # (B, 1)
        final = self.layers[-1]
        states = attention_at_positions(final.attention, x, lengths, last)
        gur_last = torch.gather(gur, 1, last[:, :, None].expand(-1, -1, gur.shape[-1]))
        return final.ffn(final.gur_attention(states, gur_last))[:, 0]


# ----------------------------------------------------------------------------- the model
class RecGURU(SASRec):
    """The target recommender: the target's ID table, the shared GURU encoder and the CDSRec decoder
    (``cdsrec=False``: the GUR itself is scored, a SASRec-shaped model)."""

    model_type = "recguru"
    config_class = RecGURUConfig

    def __init__(self, config: RecGURUConfig):
        super().__init__(config)  # type: ignore[arg-type]
        if config.cdsrec:
            self.recommender = CDSRecDecoder(config.encoder)

    @classmethod
    def upgrade_config(cls, recorded: dict[str, Any]) -> dict[str, Any]:
        """A directory written before the CDSRec unit existed (its config records no ``cdsrec``) holds a
        model that scored the GUR itself: it ran, and loads, as ``cdsrec=False``."""
        return recorded if "cdsrec" in recorded else {**recorded, "cdsrec": False}

    def position_representations(self, item_seq: torch.Tensor, lengths: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """(B, L, d): row j recommends after the prefix ending at j (the CDSRec decoder's output there)."""
        items = item_table[item_seq]
        gur = self.encoder.forward_all(items, lengths)
        return self.recommender(items, lengths, gur) if self.config.cdsrec else gur

    def sequence_representation(self, item_seq: torch.Tensor, lengths: torch.Tensor,
                                item_table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d): the recommendation after each whole history (its last real position)."""
        if not self.config.cdsrec:
            return super().sequence_representation(item_seq, lengths, item_table)
        items = self.item_embedding(item_seq) if item_table is None else item_table[item_seq]
        return self.recommender(items, lengths, self.encoder.forward_all(items, lengths), last_only=True)

    def joint_task(self, target: Any, sources: list[Any], train: Any, device: torch.device) -> "RecGURUTask":
        """Joint training on ``sources`` and ``target`` (``unisrec train recguru TARGET --source DIR``)."""
        return RecGURUTask(self, target, sources, train, device)


class RecGURUHeads(nn.Module):
    """Training-only parameters: each source's ID table, one decoder per domain (target first), the
    discriminator (a two-layer MLP over the GUR, 1 + S domain logits)."""

    def __init__(self, config: RecGURUConfig, source_items: list[int]):
        super().__init__()
        hidden, std = config.encoder.hidden_size, config.encoder.initializer_range
        self.source_embeddings = nn.ModuleList(nn.Embedding(n + 1, hidden, padding_idx=0) for n in source_items)
        self.decoders = nn.ModuleList(SequenceEncoder(config.encoder) for _ in range(1 + len(source_items)))
        self.discriminator = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1 + len(source_items)))
        self.source_embeddings.apply(lambda m: init_weights(m, std))
        self.discriminator.apply(lambda m: init_weights(m, std))


class RecGURUTask(JointTask):
    """One step: the target's next-item loss + reconstruction (every domain) + discriminator +
    confusion + overlap. ``domain_accuracy`` (logged, weight 0) is the discriminator's accuracy on
    the step's GURs: 1 / (1 + S) means the domains are confused."""

    loss_names = ("reconstruction", "discriminator", "confusion", "overlap", "domain_accuracy")

    def __init__(self, model: RecGURU, target: Any, sources: list[Any], train: Any, device: torch.device):
        cfg = model.config
        super().__init__(model, target, sources, train, device, RecGURUHeads(cfg, [s.num_items for s in sources]))
        self.domains = [DomainSequences.of(d, train.max_history) for d in (target, *sources)]
        self.links = [link_users(target, self.domains[0], s, self.domains[1 + i]) if cfg.link_users else np.zeros((0, 2), np.int64)
                      for i, s in enumerate(sources)]

    def describe(self) -> str:
        parts = [f"{d.name} ({len(d):,} users, {d.num_items:,} items)" for d in self.domains]
        linked = ", ".join(f"{len(p):,} with {d.name}" for p, d in zip(self.links, self.domains[1:]))
        return f"RecGURU: target {parts[0]}; sources {', '.join(parts[1:])}; overlapping users: {linked}"

    def tables(self) -> list[torch.Tensor]:
        return [self.model.item_embedding.weight, *(e.weight for e in self.heads.source_embeddings)]

    def cross_domain_losses(self, rng: np.random.Generator) -> dict[str, tuple[float, torch.Tensor]]:
        cfg, dev, heads = self.model.config, self.device, self.heads
        tables = self.tables()
        gurs, labels, recon = [], [], []
        for d, dom in enumerate(self.domains):
            seqs, lens = dom.batch(dom.sample(rng, cfg.domain_batch_size))
            negatives = rng.integers(1, dom.num_items + 1, size=cfg.reconstruction_negatives)
            # the domain's rows for this step, gathered once (renumbering changes no value: gather_rows)
            rows, (seqs, negatives) = gather_rows(tables[d], seqs, negatives)
            u = generalized_user_representation(self.model.encoder, rows, seqs, lens, dev)
            if cfg.reconstruction_weight:
                recon.append(reconstruction_loss(heads.decoders[d], rows, u, seqs, lens, negatives))
            gurs.append(u)
            labels.append(torch.full((len(u),), d, dtype=torch.long, device=dev))
        out: dict[str, tuple[float, torch.Tensor]] = {}
        if recon:
            out["reconstruction"] = (cfg.reconstruction_weight, torch.stack(recon).sum())
        gur, domains = torch.cat(gurs), torch.cat(labels)
        if cfg.adversarial_weight:
            out["discriminator"] = (cfg.adversarial_weight, discriminator_loss(heads.discriminator, gur, domains))
            out["confusion"] = (cfg.adversarial_weight, confusion_loss(heads.discriminator, gur, len(self.domains)))
            with torch.no_grad():
                accuracy = (heads.discriminator(gur).argmax(1) == domains).float().mean()
            out["domain_accuracy"] = (0.0, accuracy)
        overlaps = []
        for s, pairs in enumerate(self.links):
            if len(pairs) == 0 or not cfg.overlap_weight:
                continue
            pick = pairs[rng.permutation(len(pairs))[: cfg.domain_batch_size]]
            tgt, src = self.domains[0], self.domains[1 + s]
            u_t = generalized_user_representation(self.model.encoder, tables[0], *tgt.batch(pick[:, 0]), dev)
            u_s = generalized_user_representation(self.model.encoder, tables[1 + s], *src.batch(pick[:, 1]), dev)
            overlaps.append(overlap_loss(u_t, u_s))
        if overlaps:
            out["overlap"] = (cfg.overlap_weight, torch.stack(overlaps).mean())
        return out
