#!/bin/bash
# ML-1M accuracy sweep on one GPU box that has torch + transformers but no NVTabular/Merlin.
# There (repo root, build/demo/data prepared here and carried; training reads no schema):
#               MINUTES=6.5 bash bench/gpu_accuracy.sh [--only NAME,...] [key=value ...]
# Every run trains for MINUTES (the rate decays with that clock), all sharing the GPU; the table
# is copied to $OUT (or build/bench/accuracy) every 15 s, so a cut-off run still reports.
set -u
export PYTHONUNBUFFERED=1
out=${OUT:-build/bench/accuracy}
mkdir -p "$out"
(while sleep 15; do cp /tmp/hf4rec-accuracy/accuracy.json "$out/" 2>/dev/null; done) &
copier=$!
python3 -m bench.accuracy --data build/demo/data --out /tmp/hf4rec-accuracy \
  --parallel "${PARALLEL:-10}" train.device=cuda train.amp=bf16 train.epochs=300 train.eval_every_epochs=2 \
  train.patience=0 train.time_budget_minutes="${MINUTES:-6.5}" train.eval_batch_size=1024 "$@"
kill $copier
cp /tmp/hf4rec-accuracy/accuracy.json "$out/"
