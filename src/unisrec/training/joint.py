"""Joint training on source domains and the target: what the cross-domain models (RecGURU, CCDR) share.

``unisrec train MODEL TARGET --source DIR [--source DIR ...]`` -> ``training.supervised.train_model``
loads the sources (``TrainConfig.source``) and ``fit`` asks the model class for its
``joint_task(target, sources, train_config, device)``: a :class:`JointTask`, i.e. a task of the shared
epoch loop (``training.loop``). What every joint task does the same way:

* **an epoch is one pass over the target's training targets** with the configured batching
  (``--batching``; last-item = the paper's), scored by the model as SASRec scores them: validation,
  early stopping on the target's valid NDCG@10, the test, ``metrics.json`` and the epoch count mean
  what they mean for every other model;
* each step adds the model's **cross-domain losses** over user batches drawn from every domain
  (:class:`DomainSequences`: each user's training part, the items before its validation item):
  ``domain_batch_size`` users per domain per step, drawn by a generator seeded with (seed, epoch,
  step), so a resumed run draws the same batches. A source is therefore not passed over in full each
  epoch (Games has 6x Scientific's users): it is sampled, as the RecGURU release cycles its loaders;
* ``module`` = the model + ``heads`` (source item tables, decoders, discriminator, ...): the optimizer,
  the resume state and the best weights hold it all; the model directory keeps the model alone, so
  it is an ordinary ID model of the target (``unisrec evaluate``, ``recommend``);
* **overlapping users** (:func:`link_users`): a target user and a source user with the same raw user id
  are the same person when the model's ``link_users`` is on; the number linked is logged. Only link
  datasets whose user ids come from one id space (two Amazon categories do; remapped indices do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from unisrec.models.encoder import encoder_passes


@dataclass
class DomainSequences:
    """One domain's users for the cross-domain losses: each user's training part (the items before its
    validation item, the last ``max_history`` of them), left-aligned and zero-padded.

    Users with fewer than two training items are left out (as in every batching)."""

    name: str
    num_items: int
    seqs: np.ndarray  # (U, H) int64
    lens: np.ndarray  # (U,) int64
    users: np.ndarray  # (U,) the dataset's user index of each row

    @classmethod
    def of(cls, dataset: Any, max_history: int) -> "DomainSequences":
        lengths = dataset.seq_lengths.astype(np.int64)
        users = np.nonzero(lengths - 2 >= 2)[0]
        n = np.minimum(lengths[users] - 2, max_history)
        end = dataset.seq_offsets[users].astype(np.int64) + lengths[users] - 2  # the validation item's position
        cols = np.arange(max_history)
        pos = np.minimum((end - n)[:, None] + cols[None, :], max(len(dataset.seq_items) - 1, 0))
        seqs = np.where(cols[None, :] < n[:, None], dataset.seq_items[pos], 0).astype(np.int64)
        return cls(str(dataset.name), int(dataset.num_items), seqs, n.astype(np.int64), users)

    def __len__(self) -> int:
        return len(self.lens)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` distinct rows (all rows when the domain has fewer users)."""
        return rng.permutation(len(self))[:size]

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sequences trimmed to their longest, lengths) of ``rows``."""
        lens = self.lens[rows]
        return self.seqs[rows, : int(lens.max())], lens


def link_users(target: Any, target_rows: DomainSequences, source: Any, source_rows: DomainSequences) -> np.ndarray:
    """Overlapping users: (P, 2) rows of ``target_rows`` / ``source_rows`` whose users have the same raw id."""
    where = {source.user_ids[u]: i for i, u in enumerate(source_rows.users)}
    pairs = [(i, where[target.user_ids[u]]) for i, u in enumerate(target_rows.users) if target.user_ids[u] in where]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def gather_rows(table: torch.Tensor, *ids: np.ndarray) -> tuple[torch.Tensor, list[np.ndarray]]:
    """The rows of ``table`` that the id arrays ``ids`` use, gathered once, and each array renumbered
    into those rows: ``rows[renumbered[k]]`` is ``table[ids[k]]``, value for value and in its gradient.

    Why: autograd's backward of every ``table[idx]`` fills a zero gradient the size of the *whole*
    table and adds it to the others. A cross-domain step that gathered Games' 16,860 x 300 table 13-19
    times spent about a quarter of its time on those fills and adds; gathering a domain's rows for the
    step once leaves one (results/table3/cross_domain_speed_online_retail.md: steps 0.72-0.76x)."""
    flat = np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in ids])
    unique, inverse = np.unique(flat, return_inverse=True)
    rows = table[torch.from_numpy(unique).to(table.device)]
    out, start = [], 0
    for a in ids:
        out.append(inverse[start : start + np.size(a)].reshape(np.shape(a)).astype(np.int64, copy=False))
        start += np.size(a)
    return rows, out


def encode_last(encoder: nn.Module, table: torch.Tensor, seqs: np.ndarray, lens: np.ndarray, device: Any) -> torch.Tensor:
    """(B, d) encoder outputs at each sequence's last real item, in the rows' order; encoded in length
    buckets on a CPU, each padded to its own longest, in one pass elsewhere (``models.encoder.encoder_passes``:
    padding changes no value). The
    items are looked up in ``table`` once for all buckets (one table-sized gradient: ``gather_rows``)."""
    width_all = int(lens.max())
    emb = table[torch.from_numpy(np.ascontiguousarray(seqs[:, :width_all])).to(device)]
    parts, order = [], []
    for g in encoder_passes(lens, device):
        width = int(lens[g].max())
        parts.append(encoder(emb[torch.from_numpy(g).to(device), :width], torch.from_numpy(lens[g]).to(device)))
        order.append(g)
    inverse = torch.from_numpy(np.argsort(np.concatenate(order), kind="stable")).to(device)
    return torch.cat(parts)[inverse]


class JointTask:
    """The loop task of a cross-domain model (see the module docstring).

    A subclass sets ``loss_names`` and implements ``cross_domain_losses(rng) -> {name: (weight, loss)}``;
    a step's loss is the target's next-item cross-entropy plus the weighted sum of those. Each loss is
    logged per epoch under its name (``next_item`` is the target's own)."""

    unit = "targets"
    loss_names: tuple[str, ...] = ()

    def __init__(self, model: Any, target: Any, sources: list[Any], config: Any, device: torch.device, heads: nn.Module):
        from unisrec.training.supervised import SupervisedTask

        self.model, self.target, self.sources, self.config, self.device = model, target, sources, config, device
        self.supervised = SupervisedTask(model, target, config, device)  # the target's batching and validation
        self.batching = self.supervised.batching
        self.heads = heads
        self.module = nn.ModuleDict({"model": model, "heads": heads}).to(device)
        self.current_epoch = 1

    @property
    def extra_names(self) -> tuple[str, ...]:
        return ("next_item", *self.loss_names)

    def batches(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """(step, target batch) of epoch ``epoch``: the target's batching, the same list for the same seed and epoch."""
        self.module.train()
        self.current_epoch = epoch
        return list(enumerate(self.batching.epoch(epoch, self.config.seed)))

    def step_loss(self, batch: tuple[int, np.ndarray]) -> tuple[torch.Tensor, int, dict[str, float]]:
        step, idx = batch
        rng = np.random.default_rng([self.config.seed, 43, self.current_epoch, step])  # the step's domain batches
        next_item, n = self.batching.loss(self.model, idx, self.device)
        parts = self.cross_domain_losses(rng)
        total = next_item
        for weight, loss in parts.values():
            if weight:
                total = total + weight * loss
        logged = {"next_item": float(next_item.detach())}
        logged.update({name: float(parts[name][1].detach()) if name in parts else 0.0 for name in self.loss_names})
        return total, n, logged

    def cross_domain_losses(self, rng: np.random.Generator) -> dict[str, tuple[float, torch.Tensor]]:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        return self.supervised.validate()

    def checkpointed(self, run: Any) -> None:
        pass
