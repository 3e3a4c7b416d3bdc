"""A/B of one UniSRec_t+ID training step: parametric whitening as (x - b) W (before) vs x W - b W (now).

    python benchmarks/adaptor_step_ab.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled
    python benchmarks/adaptor_step_ab.py configs/benchmarks/table3_scientific.yaml scientific

The cell is built as the spec builds it (benchmarks/baseline_epoch_speed.py); the two formulas take turns
on the same batches of epoch 0 in one process, 1 thread; median process CPU seconds of 8 steps each.
"""
import sys, time, numpy as np, torch
sys.path.insert(0, "benchmarks")
import baseline_epoch_speed as b
from unisrec.models.adaptor import ParametricWhitening
torch.set_num_threads(1)
spec, ds = sys.argv[1], sys.argv[2]
tasks = b.build_tasks(spec, ds, 2020, 1, ["SASRec", "UniSRec_t+ID"])
new = ParametricWhitening.forward
def old(self, x):
    x = self.dropout(x)
    return self.linear(x if self.bias is None else x - self.bias)
t, m, _ = tasks["UniSRec_t+ID"]
opt = torch.optim.Adam([q for q in m.parameters() if q.requires_grad], lr=1e-3)
bs = t.batches(0)
res = {"old": [], "new": []}
for r in range(9):
    for name, fn in (("old", old), ("new", new)):
        ParametricWhitening.forward = fn
        c = time.process_time()
        loss, _, _ = t.step_loss(bs[r]); opt.zero_grad(); loss.backward(); opt.step()
        if r: res[name].append(time.process_time() - c)
o, n = np.median(res["old"]), np.median(res["new"])
print(f"{ds}: UniSRec_t+ID step CPU s old {o:.3f} new {n:.3f} ratio {n/o:.3f} steps/epoch {len(bs)}")
