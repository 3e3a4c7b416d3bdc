"""`unisrec train ...` with the final Transformer layer computed at every position and then read, as before
models.encoder.layers_at_positions (S3-Rec's segment passes, BERT4Rec's Cloze loss): the other arm of the
read-positions check, with everything else (dropout masks, attention path) as the library has it now.

    python benchmarks/train_every_position_final_layer.py bert4rec $UNISREC_DATA/scientific \
        --output runs/bert4rec_every_position/seed2020 --epochs 300 --device auto --seed 2020 --threads 1
"""

from __future__ import annotations

import sys

sys.path.insert(0, "benchmarks")


def main(argv: list[str] | None = None) -> int:
    import encoder_passes_ab

    from unisrec.cli import main as unisrec

    encoder_passes_ab.set_read_positions(None, False)
    return unisrec(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
