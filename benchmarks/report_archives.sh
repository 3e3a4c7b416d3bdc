#!/usr/bin/env bash
# Regenerate the pages that are reported from committed campaign archives (no training; the long-tail
# page also reads the prepared Scientific dataset under $UNISREC_DATA):
#   bash benchmarks/report_archives.sh
# Each archive is filled by `unisrec benchmark run GRID.yaml --runs runs/NAME --threads 1 --archive ARCHIVE`:
#   configs/benchmarks/table3_scientific.yaml   -> results/table3/cells_scientific
#   configs/benchmarks/table3_online_retail.yaml -> results/table3/cells_online_retail
#   configs/benchmarks/fast_path_scientific.yaml -> results/every_position/cells_fast_path_scientific
#   configs/benchmarks/ablation.yaml             -> results/analyses/cells_ablation_scientific (CPU) and
#                                                   results/analyses/cells_ablation_scientific_gpu (lent H200)
#   configs/benchmarks/precision.yaml            -> results/precision/cells
#   configs/benchmarks/pretrain_precision.yaml   -> results/precision/cells_pretrain
#   configs/benchmarks/zesrec_source.yaml        -> results/table3/cells_zesrec_source (--checkpoints)
#   configs/benchmarks/pretrain_sources_online_retail.yaml -> results/analyses/cells_pretrain_sources_online_retail
#   configs/benchmarks/fast_path_scientific.yaml (models.dropout's masks) -> results/speed/cells_dropout_masks_scientific
set -euo pipefail
cd "$(dirname "$0")/.."
UNISREC="${UNISREC:-unisrec}"
# report ARCHIVE FILE_STEM TITLE NOTE: one page of `unisrec benchmark report`
report() { "$UNISREC" benchmark report "$1" --out "$2" --title "$3" --note "$4"; }
report results/table3/cells_scientific results/table3/benchmark_scientific \
  "Table 3, Scientific, through unisrec benchmark" \
  "CPU, 1 torch thread per run, two runs sharing the 2-core machine; every run early-stopped on valid NDCG@10 (patience 10); each column's seed count is in the seed-level table. Offline 384-d MiniLM text features instead of BERT. From scratch on Scientific except: RecGURU and CCDR train on Games (source) and Scientific together; ZESRec is fine-tuned from a ZESRec trained 6 epochs on Games (configs/benchmarks/zesrec_source.yaml); the (pre-trained) UniSRec rows are fine-tuned from the Games checkpoint of configs/benchmarks/pretrain.yaml (8 epochs at batch 8,192, 288 steps; the paper's rows pre-train on five Amazon domains); S3-Rec pre-trains 10 epochs on Scientific's own histories first (the release: 300). BERT4Rec is the corrected Cloze training, BERT4Rec-paper RecBole <= 1.1's, both with RecBole's per-prefix samples. CCDR is our sequential adaptation (the shared Transformer instead of the paper's graph encoder, docs/training.md). Controls (reported and tested, never ranked): CCDR-no-contrastive (CCDR's contrastive weights at 0: what its cross-domain losses add) and ZESRec-scratch (ZESRec on Scientific alone: what the source adds). S3-Rec's and ZESRec's stages in detail: results/table3/s3rec_zesrec.md."
report results/table3/cells_online_retail results/table3/benchmark_online_retail \
  "Table 3, Online Retail (shuffled ties), through unisrec benchmark -- partial: the cells finished so far" \
  "CPU, 1 torch thread per run, two runs sharing the 2-core machine; every run early-stopped on valid NDCG@10 (patience 10). Every-position batching (SASRec-like models 512 targets per step, the UniSRec rows the paper's 2,048) and bfloat16 autocast (results/precision/precision.md: the same converged accuracy as float32 on Scientific and for SASRec here). The SASRec cell is the bfloat16 cell of results/precision/ (the same command); its float32 twin there: test R@10 0.1442 / N@10 0.0703, seed 2020."
report results/every_position/cells_fast_path_scientific results/every_position/fast_path_scientific \
  "The fast path on Scientific: every-position batching, 512 targets per step" \
  "CPU, 1 torch thread per run, two runs sharing the 2-core machine; every run early-stopped on valid NDCG@10 (patience 10). The fast path's bar (issue 14): within 3% of the paper's batching (last-item, 2,048 per step) at convergence, whose 3-seed means are in results/table3/table3.md: SASRec 0.1057 / 0.0546, UniSRec_t+ID (scratch) 0.1180 / 0.0588 (R@10 / N@10). Reported from the archive results/every_position/cells_fast_path_scientific."
report results/analyses/cells_ablation_scientific_gpu results/analyses/ablation_scientific \
  "Ablation (the paper's Fig. 3), Scientific: every checkpoint and every cell on one lent H200" \
  "Every row pre-trained and fine-tuned on a lent NVIDIA H200 (2026-12-04): the five Games checkpoints (full, w/o S-S, w/o S-I, w/o PW, w/o MoE; configs/benchmarks/pretrain.yaml, 8 epochs at batch 8,192, bfloat16; eight pre-training cells at once, 165 s) by benchmarks/gpu_pretrain_cells.sh, then configs/benchmarks/ablation.yaml's 24 cells, 16 processes at once (fine-tuning float32, inductive, 141-177 s per cell, early-stopped on valid NDCG@10, patience 10). The same cells run on the 2-core CPU agree (ablation_scientific_cpu.md: UniSRec 0.1264 / 0.0653 from the CPU-made checkpoint, without PT 0.1227 / 0.0649), and so do the pre-training curves of the two devices (results/pretrain/device_check_h200/). UniSRec = fine-tuned from the full checkpoint; without PT = from scratch; without FT = that checkpoint ranking Scientific by item text, no fine-tuning; Popularity = control. Games stands in for the paper's five Amazon pre-training domains, all-MiniLM-L6-v2 (384-d) for BERT. Reported from the archive results/analyses/cells_ablation_scientific_gpu."
report results/analyses/cells_ablation_scientific results/analyses/ablation_scientific_cpu \
  "Ablation cells on the 2-core CPU, Scientific: the device cross-check of ablation_scientific.md" \
  "2-core CPU, 1 thread per run, two other 1-thread jobs running. The rows of ablation_scientific.md that were also trained here, from the CPU-made checkpoint: UniSRec = fine-tuned (inductive, float32) from the Games checkpoint pre-trained in bfloat16 on this CPU (cell full (bfloat16) of configs/benchmarks/pretrain.yaml), without PT = from scratch, without FT = that checkpoint by item text alone, Popularity = control. The UniSRec cells are the pretrain_precision campaign's UniSRec_t (pre-trained) (bfloat16) cells and the without-PT cells the Table 3 campaign's UniSRec_t cells (the same commands; copied, not retrained). The four variants' checkpoints were made on the H200 only."
report results/analyses/cells_ablation_online_retail results/analyses/ablation_online_retail \
  "Ablation (the paper's Fig. 3), Online Retail (shuffled ties), seed 2020" \
  "Fine-tuned as Online Retail's Table 3 UniSRec rows (inductive, every-position batching at 2,048 targets per step, bfloat16 autocast, early-stopped on valid NDCG@10, patience 10) from the Games checkpoints of configs/benchmarks/pretrain.yaml (8 epochs at batch 8,192, bfloat16; results/pretrain/cells). UniSRec and without S-S / S-I / PW / MoE: a lent NVIDIA H200 (2026-12-04, five cells at once, 5.6-6.1 s per epoch; benchmarks/gpu_bench.sh). without PT: Table 3's UniSRec_t cell, the same command on the 2-core CPU (copied, not retrained); run on the H200 too, it tracked the CPU curve at equal epochs (valid NDCG@10 0.0733 vs 0.0725 at epoch 46, where that call's time ran out). without FT = the full checkpoint ranking Online Retail by item text, no fine-tuning; Popularity = control. Reported from the archive results/analyses/cells_ablation_online_retail."
report results/table3/cells_scientific_pretrained_gpu results/table3/pretrained_rows_h200 \
  "Table 3's pre-trained UniSRec rows, Scientific, on a lent H200: the device cross-check" \
  "The Table 3 spec's two pre-trained cells (configs/benchmarks/table3_scientific.yaml), 3 seeds each, fine-tuned on a lent H200 (2026-12-04, 12 processes at once, early-stopped) from the Games checkpoint full (float32) pre-trained on the same H200 (its loss within 0.07% of the CPU-made checkpoint's at every epoch, results/pretrain/device_check_h200/). The CPU cells of benchmark_scientific.md were fine-tuned from the CPU-made checkpoint, whose weights are lost: UniSRec_t (pre-trained) 0.1298 / 0.0664 (2 seeds), UniSRec_t+ID (pre-trained) 0.1201 / 0.0619 (1 seed)."
report results/analyses/cells_pretrain_sources_scientific_gpu results/analyses/pretrain_sources_scientific \
  "Pre-training sources (the paper's Fig. 2), Scientific target" \
  "configs/benchmarks/pretrain_sources.yaml on a lent H200 (2026-12-04, two calls; fine-tuning float32, inductive, early-stopped, 3 seeds): None = from scratch; each other column fine-tunes from a checkpoint of configs/benchmarks/pretrain.yaml pre-trained on the same H200 (8 epochs at batch 8,192, float32): Games (288 steps), Online Retail alone (464 steps, 470,346 training prefixes per epoch, 30 s per epoch), Games + Online Retail (744 steps, 758,972 prefixes). Our substitute corpus: each target's sources are the two domains foreign to it (the paper pre-trains on five Amazon domains). Games is the same command as Table 3's UniSRec_t (pre-trained) and None as the ablation's without PT: identical numbers, the GPU runs are deterministic. Made by benchmarks/gpu_pretrain_cells.sh (None, Games) and benchmarks/gpu_source_mix.sh (the Online Retail columns)."
report results/analyses/cells_pretrain_sources_online_retail results/analyses/pretrain_sources_online_retail \
  "Pre-training sources (the paper's Fig. 2), Online Retail target (shuffled ties), seed 2020" \
  "configs/benchmarks/pretrain_sources_online_retail.yaml: UniSRec_t fine-tuned as Online Retail's Table 3 UniSRec rows (inductive, every-position batching at 2,048 targets per step, bfloat16 autocast, early-stopped on valid NDCG@10, patience 10) from checkpoints of configs/benchmarks/pretrain.yaml (8 epochs at batch 8,192). None = from scratch: Table 3's UniSRec_t cell (2-core CPU; copied). Games = from the bfloat16 Games checkpoint (the float32 one's weights were lost; the two fine-tune within 3% of each other on Scientific, results/precision/pretrain_precision.md): the Online Retail ablation's UniSRec cell (lent H200; copied). Scientific = from the Scientific-only checkpoint (pre-trained and fine-tuned on the 2-core CPU, 1 thread, another run sharing it). Games + Scientific = Table 3's UniSRec_t (pre-trained) cell (2-core CPU; copied). Each target's sources are the domains foreign to it (the paper pre-trains on five Amazon domains)."
PYTHON="${PYTHON:-python}"
"$PYTHON" benchmarks/longtail_page.py --dataset '$UNISREC_DATA/scientific' --models 'UniSRec_t+ID (pre-trained),UniSRec_t (pre-trained),UniSRec_t+ID,UniSRec_t'  # needs the dataset ($UNISREC_DATA)
"$PYTHON" benchmarks/longtail_page.py --cells results/table3/cells_online_retail --target online_retail_shuffled \
  --dataset '$UNISREC_DATA/online_retail_shuffled' --models 'UniSRec_t+ID (pre-trained),UniSRec_t+ID,UniSRec_t' --out results/analyses/longtail_online_retail
"$PYTHON" benchmarks/precision_page.py results/precision/cells --speed results/precision/epoch_speed_scientific.json --speed results/precision/epoch_speed_online_retail.json
"$PYTHON" benchmarks/precision_page.py results/precision/cells_pretrain --what pre-training --out results/precision/pretrain_precision \
  --pretrain-curves results/pretrain/cells/games/full/seed2020 'results/pretrain/cells/games/full_(bfloat16)/seed2020'
"$PYTHON" benchmarks/precision_page.py results/every_position/cells_fast_path_scientific --what dropout \
  --twin-cells results/speed/cells_dropout_masks_scientific --out results/speed/dropout_masks_scientific
report results/precision/cells results/precision/benchmark_precision \
  "bfloat16 vs float32 training, fast path, through unisrec benchmark" \
  "2-core CPU, 1 torch thread per run, two runs sharing the machine; every run early-stopped on valid NDCG@10 (patience 10). Each model twice: float32 and --precision bfloat16 (the forward pass under autocast); the float32 Scientific cells are the fast-path campaign's (every_position/cells_fast_path_scientific). The equivalence page is precision.md; the validation-curve PNGs show both precisions of each model on one figure."
# S3-Rec's and ZESRec's stages in detail; without --source-model / --s3rec-stage (model folders in runs/,
# not archived) it keeps the page's earlier zero-shot and pre-training-diagnostic measurements
"$PYTHON" benchmarks/s3rec_zesrec_page.py
