#!/usr/bin/env bash
# All benchmarks in one go, each printing ratios against its same-run baseline.
#   bash benchmarks/run_all.sh            # CPU sizes (a few minutes on 2 cores)
#   bash benchmarks/run_all.sh cuda       # GPU sizes: val-sized eval, VOC-sized maps, bf16/compile training
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
device=${1:-cpu}
export PYTHONUNBUFFERED=1

echo "== eval: one-pass JI curve vs per-threshold original vs loading"
if [ "$device" = cuda ]; then
  "$PY" benchmarks/bench_eval.py --n 300
  echo "== maps: batched vs per-image loop (CAM, ViT relevance, every input-space method)"
  "$PY" benchmarks/bench_maps.py --device cuda --n 128 --height 375 --width 500 --network resnet50 --classes 2 20
  echo "== train: loader and steps, fp32 eager baseline vs bf16 / channels-last / compile"
  "$PY" benchmarks/bench_train.py --device cuda --steps 20 --warmup 5 --num-workers 8
else
  "$PY" benchmarks/bench_eval.py --n 100 --baseline_thresholds 3
  echo "== maps: batched vs per-image loop"
  "$PY" benchmarks/bench_maps.py --n 16 --height 375 --width 500 --classes 2 20 --vit '' --methods
  "$PY" benchmarks/bench_maps.py --n 4 --classes 2 --repeats 1 --network '' --vit vit_small_patch16_224 --batch 4 --methods
  # the input-space methods at reduced settings (the loop calls the explainer once per image, class and flip)
  "$PY" benchmarks/bench_maps.py --vit= --threads 1 --repeats 1 --n 4 --height 64 --width 80 --classes 2 \
    --ig-steps 16 --smoothgrad-samples 10 --rise-masks 256 --lime-samples 128
  echo "== train: loader and steps"
  "$PY" benchmarks/bench_train.py --steps 3 --warmup 1 --num-workers 2
fi
echo "== consensus: all committees in one pass vs one pass per committee"
if [ "$device" = cuda ]; then
  "$PY" benchmarks/bench_consensus.py --members 15 --images 100 --side 320 --trials 10
else
  "$PY" benchmarks/bench_consensus.py --members 6 --images 20 --side 160 --trials 5
fi
echo "== map metrics: one pass (JI + EPG, EPG-box, PG, AP, Gini) vs loading the files"
"$PY" benchmarks/bench_map_metrics.py --n 100
echo "== insertion/deletion: batched vs per-step loop"
if [ "$device" = cuda ]; then
  "$PY" benchmarks/bench_faithfulness.py --device cuda --network resnet50 --size 224 --pairs 64
else
  "$PY" benchmarks/bench_faithfulness.py
fi
echo "== probes: cached features vs recomputing the frozen backbone"
"$PY" benchmarks/bench_probe_cache.py --n 96 --device "$device"
