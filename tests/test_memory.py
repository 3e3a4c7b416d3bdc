"""The training loop hands freed heap memory back to the OS and caps oneDNN's kernel cache (training/loop.py)."""
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


def trims_of_a_toy_run(tmp_path, monkeypatch) -> tuple[int, list[int]]:
    """(release_free_heap calls, steps per epoch) of a two-epoch toy SASRec run."""
    from unisrec.models.checkpoint import config_from_dict
    from unisrec.models.sasrec import SASRecConfig

    make_toy(tmp_path / "toy")
    calls = []
    monkeypatch.setattr(loop, "release_free_heap", lambda: calls.append(1))
    train = TrainConfig(epochs=2, batch_size=16, lr=3e-3, progress=False, threads=1, eval_batch_size=64, patience=5)
    model = config_from_dict(SASRecConfig, dict(hidden_size=16, inner_size=16))
    train_model("sasrec", tmp_path / "toy", tmp_path / "m", train, model)
    steps = [json.loads(line)["step"] for line in (tmp_path / "m" / "training_log.jsonl").read_text().splitlines()]
    return len(calls), [steps[0], steps[1] - steps[0]]


def test_the_loop_trims_every_TRIM_EVERY_steps_and_around_each_validation(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "TRIM_AFTER_SECONDS", float("inf"))  # no step counts as long, however slow the machine
    calls, per_epoch = trims_of_a_toy_run(tmp_path, monkeypatch)
    assert per_epoch[0] >= loop.TRIM_EVERY  # the test must reach a trim inside an epoch
    assert calls == sum(n // loop.TRIM_EVERY for n in per_epoch) + 2 * len(per_epoch)


def test_the_loop_trims_after_every_long_step(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "TRIM_AFTER_SECONDS", 0.0)  # every step counts as long: one trim each, not two
    calls, per_epoch = trims_of_a_toy_run(tmp_path, monkeypatch)
    assert calls == sum(per_epoch) + 2 * len(per_epoch)


# One process per variant: oneDNN reads its cache capacity once, when it builds its first kernel.
_KERNEL_CACHE_PROBE = """
import os, sys, torch
from unisrec.training import loop
if sys.argv[1] == "capped":
    loop.cap_onednn_kernel_cache(torch.device("cpu"), "bfloat16")
torch.set_num_threads(1)
def rss(): return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
layer = torch.nn.Linear(300, 256)
start = rss()
for rows in range(1, 401):  # 400 shapes, as every-position steps bring
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(torch.randn(rows, 300, requires_grad=True)).sum().backward()
loop.release_free_heap()
print(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "-"), rss() - start)
"""


@pytest.mark.skipif(loop._MALLOC_TRIM is None or not os.path.exists("/proc/self/statm"), reason="needs glibc on Linux")
def test_capping_onednn_kernel_cache_keeps_bfloat16_products_of_many_shapes_from_growing_memory():
    import subprocess

    import torch

    if not loop.native_bfloat16(torch.device("cpu")):
        # measured on such a CPU (AMD EPYC, Zen 2): 400 shapes grew memory by < 100 MB, and emulated
        # products cost ~12 s here; `precision auto` trains float32 there, the cap's case does not arise
        pytest.skip("this CPU emulates bfloat16 (no AVX512-BF16 / AMX): no per-shape bfloat16 kernels to cap")

    def growth(variant):
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
        out = subprocess.run([sys.executable, "-c", _KERNEL_CACHE_PROBE, variant], env=env, check=True,
                             capture_output=True, text=True, timeout=300).stdout.split()
        return out[0], float(out[1])

    default_value, default_mb = growth("default")
    if default_mb < 100:
        pytest.skip(f"this CPU's bfloat16 products hold no per-shape kernels ({default_mb:.0f} MB over 400 shapes)")
    capped_value, capped_mb = growth("capped")
    assert (default_value, capped_value) == ("-", str(loop.ONEDNN_KERNEL_CACHE))
    assert capped_mb < default_mb - 100, (capped_mb, default_mb)


def test_the_cache_cap_applies_to_bfloat16_cpu_runs_only_and_keeps_a_users_value(monkeypatch):
    import torch

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    loop.cap_onednn_kernel_cache(torch.device("cpu"), "float32")
    loop.cap_onednn_kernel_cache(torch.device("cuda"), "bfloat16")
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ
    loop.cap_onednn_kernel_cache(torch.device("cpu"), "bfloat16")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(loop.ONEDNN_KERNEL_CACHE)
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    loop.cap_onednn_kernel_cache(torch.device("cpu"), "bfloat16")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512"


def test_a_bfloat16_cpu_run_starts_with_the_cache_capped(tmp_path, monkeypatch):
    from unisrec.models.checkpoint import config_from_dict
    from unisrec.models.sasrec import SASRecConfig

    make_toy(tmp_path / "toy")
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    seen = []
    monkeypatch.setattr(loop, "run_epoch", lambda *a: seen.append(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"))
                        or (_ for _ in ()).throw(KeyboardInterrupt))
    train = TrainConfig(epochs=1, batch_size=16, progress=False, threads=1, precision="bfloat16")
    with pytest.raises(KeyboardInterrupt):
        train_model("sasrec", tmp_path / "toy", tmp_path / "m", train, config_from_dict(SASRecConfig, dict(hidden_size=16)))
    assert seen == [str(loop.ONEDNN_KERNEL_CACHE)]  # set before the first step ran
