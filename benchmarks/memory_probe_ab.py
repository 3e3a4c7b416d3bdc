"""Memory and CPU A/B of a faithful SASRec step (results/online_retail/memory.md): SequenceEncoder.forward as forward_all + gather (before) vs forward_last (after), faithful
SASRec steps on the same batches; CPU seconds per step alternating in one process, and peak RSS
per variant in separate processes (argv[2] = 'ab' | 'gather' | 'last')."""
import os, resource, sys, time
import numpy as np, torch
from unisrec.data.dataset import Dataset
from unisrec.models import encoder as enc
from unisrec.models.sasrec import SASRec, SASRecConfig
from unisrec.training.batching import LastItemBatching

def gather_forward(self, item_repr, lengths):
    out = self.forward_all(item_repr, lengths)
    idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
    return out.gather(1, idx).squeeze(1)

def last_forward(self, item_repr, lengths):
    return self.forward_last(item_repr, lengths)

torch.set_num_threads(1)
ds = Dataset.load(sys.argv[1]); mode = sys.argv[2]; steps = int(sys.argv[3])
b = LastItemBatching(ds, 50, 2048)
torch.manual_seed(0)
model = SASRec.for_dataset(SASRecConfig(), ds.num_items).train()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
batches = b.epoch(1, 2020)[:steps]
times = {"gather": [], "last": []}
variants = ["gather", "last"] if mode == "ab" else [mode]
for idx in batches:
    for v in variants:
        enc.SequenceEncoder.forward = gather_forward if v == "gather" else last_forward
        c = time.process_time()
        loss, n = b.loss(model, idx, "cpu")
        opt.zero_grad(); loss.backward(); opt.step()
        times[v].append(time.process_time() - c)
print({v: [round(x, 2) for x in t] for v, t in times.items()})
if mode == "ab":
    print("median cpu s/step gather %.2f last %.2f ratio last/gather %.3f" % (np.median(times["gather"]), np.median(times["last"]), np.median(times["last"]) / np.median(times["gather"])))
print("peak RSS MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
