"""Copy prepared + encoded datasets into ``.gpu_data/`` for a lent GPU machine, and back out there.

A device call carries at most 64 MiB. Games alone holds 52 MB of float32 features (clean + word
drop), so ``pack`` stores every *word-drop* copy as float16 (relative rounding 2^-11, far below
the word-drop perturbation itself); the clean features, which fine-tuning and evaluation read,
stay float32 and byte-identical. ``unpack`` (run on the GPU machine) restores float32 files
under the names the manifests expect.

    python benchmarks/gpu_data.py pack "${UNISREC_DATA:-data}" .gpu_data games scientific online_retail
    python benchmarks/gpu_data.py pack "${UNISREC_DATA:-data}" .gpu_data games:half scientific
    python3 benchmarks/gpu_data.py unpack .gpu_data

A call carries the working tree too, 64 MiB in all, and the pre-training checkpoints committed under
``results/`` take most of that. ``stash`` moves every committed ``model.safetensors`` out of the tree into
``.gpu_stash/`` (git-ignored) except those whose path contains a KEEP string, ``unstash`` moves them back,
and ``size`` adds up what a call would carry (files git tracks or would track, plus the CARRY paths):

    python benchmarks/gpu_data.py stash full+scientific && python benchmarks/gpu_data.py size .gpu_data
    python benchmarks/gpu_data.py unstash                                   (after the call)

``NAME:half`` stores that dataset's clean features as float16 too (Games then carries 26 instead of 39 MB):
only for a call that merely *pre-trains* on it -- under bfloat16 autocast every product rounds them
further anyway; a call that fine-tunes or evaluates on a dataset needs its clean float32 copy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HALF = ".f16.npy"


def pack(src_root: Path, dest_root: Path, names: list[str]) -> None:
    for spec in names:
        name, _, how = spec.partition(":")
        if how not in ("", "half"):
            sys.exit(f"{spec}: expected NAME or NAME:half")
        src, dest = src_root / name, dest_root / name
        if dest.exists():
            shutil.rmtree(dest)
        (dest / "features").mkdir(parents=True)
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, dest / f.name)
        for f in (src / "features").iterdir():
            if f.name.endswith(".keys.npy"):  # encode-cache keys: not needed to train
                continue
            if how == "half" or f.name.endswith(".word-drop.npy"):
                np.save(dest / "features" / (f.name[: -len(".npy")] + HALF), np.load(f).astype(np.float16))
            else:
                shutil.copy2(f, dest / "features" / f.name)
    total = sum(f.stat().st_size for f in dest_root.rglob("*") if f.is_file())
    print(f"{dest_root}: {total / 2**20:.1f} MiB")


def unpack(root: Path) -> None:
    for f in sorted(root.glob(f"*/features/*{HALF}")):
        np.save(f.with_name(f.name[: -len(HALF)] + ".npy"), np.load(f).astype(np.float32))
        f.unlink()
        print(f"restored float32 {f.name[: -len(HALF)]}.npy")


STASH = Path(".gpu_stash")
LIMIT_MIB = 64


def tree_files() -> list[Path]:
    """The files a device call sends: tracked ones still present, and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True).stdout
    return [p for p in map(Path, out.decode().split("\0")) if p.name and p.is_file()]


def stash(keep: list[str]) -> None:
    tracked = subprocess.run(["git", "ls-files", "-z", "results"], capture_output=True, check=True).stdout.decode().split("\0")
    for name in tracked:
        path = Path(name)
        if path.name == "model.safetensors" and path.is_file() and not any(k in name for k in keep):
            (STASH / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, STASH / path)
            print(f"stashed {name}")


def unstash() -> None:
    for path in sorted(STASH.rglob("model.safetensors")) if STASH.exists() else []:
        dest = path.relative_to(STASH)
        if dest.exists():
            sys.exit(f"{dest} exists again; {path} left where it is")
        shutil.move(path, dest)
        print(f"restored {dest}")


def size(carry: list[str]) -> None:
    files = tree_files() + [f for c in map(Path, carry) for f in ([c] if c.is_file() else c.rglob("*")) if f.is_file()]
    total = sum(f.stat().st_size for f in files) / 2**20
    print(f"a call would carry {total:.1f} MiB ({len(files)} files; limit {LIMIT_MIB} MiB)")
    if total > LIMIT_MIB:
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["pack"] and len(sys.argv) >= 5:
        pack(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
    elif sys.argv[1:2] == ["unpack"] and len(sys.argv) == 3:
        unpack(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["stash"]:
        stash(sys.argv[2:])
    elif sys.argv[1:2] == ["unstash"] and len(sys.argv) == 2:
        unstash()
    elif sys.argv[1:2] == ["size"]:
        size(sys.argv[2:])
    else:
        sys.exit(__doc__)
