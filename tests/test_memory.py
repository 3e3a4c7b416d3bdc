"""The training loop hands freed heap memory back to the OS (training/loop.py: release_free_heap)."""
from __future__ import annotations

import json
import os
import sys

import pytest

from unisrec.training import loop
from unisrec.training.config import TrainConfig
from unisrec.training.supervised import train_model
from test_finetune import make_toy


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(loop._MALLOC_TRIM is None or not os.path.exists("/proc/self/statm"), reason="needs glibc on Linux")
def test_release_free_heap_returns_the_pages_of_freed_blocks_that_a_live_block_pins():
    # 100 KB blocks come from the heap (below glibc's mmap threshold); freeing all but the newest leaves
    # ~190 MB of free pages beneath a live block, which free() alone cannot hand back: the fragmented
    # heap of a training run whose steps allocate tensors of changing sizes
    blocks = [bytearray(100_000) for _ in range(2_000)]
    keep = blocks[-1]
    del blocks[:-1]
    held = resident_mb()
    loop.release_free_heap()
    released = held - resident_mb()
    assert released > 100, f"malloc_trim released only {released:.0f} MB"
    assert len(keep) == 100_000


def test_the_loop_trims_every_TRIM_EVERY_steps_and_around_each_validation(tmp_path, monkeypatch):
    from unisrec.models.checkpoint import config_from_dict
    from unisrec.models.sasrec import SASRecConfig

    make_toy(tmp_path / "toy")
    calls = []
    monkeypatch.setattr(loop, "release_free_heap", lambda: calls.append(1))
    train = TrainConfig(epochs=2, batch_size=16, lr=3e-3, progress=False, threads=1, eval_batch_size=64, patience=5)
    model = config_from_dict(SASRecConfig, dict(hidden_size=16, inner_size=16))
    train_model("sasrec", tmp_path / "toy", tmp_path / "m", train, model)
    steps = [json.loads(line)["step"] for line in (tmp_path / "m" / "training_log.jsonl").read_text().splitlines()]
    per_epoch = [steps[0], steps[1] - steps[0]]
    assert per_epoch[0] >= loop.TRIM_EVERY  # the test must reach a trim inside an epoch
    assert len(calls) == sum(n // loop.TRIM_EVERY for n in per_epoch) + 2 * len(per_epoch)
