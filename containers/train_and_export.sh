#!/usr/bin/env bash
# The one-shot job of containers/compose.yaml and k8s/export-job.yaml: prepare -> train -> export
# (every step on the GPU, libtorch model step) -> held-out samples for the client and perf_analyzer.
# /work keeps data, run and samples; /models/repository is the model repository Triton serves. It is a
# folder of the /models volume, not the volume itself: export stages and locks beside the repository, so
# that its final renames stay on one filesystem. A rerun reuses /work/data and /work/run and adds a version.
set -euo pipefail
DATASET="${DATASET:-ml-1m}"
CONFIG="${CONFIG:-training/configs/gpt2_clm.yaml}"
MINUTES="${MINUTES:-10}"
NAME="${NAME:-hf4rec}"
DEVICE="${DEVICE:-gpu}"
REPO=/models/repository

test -d /work/data || python -m training.prepare --dataset "$DATASET" --out /work/data
test -d /work/run || python -m training.train --config "$CONFIG" --data /work/data --out /work/run \
    train.time_budget_minutes="$MINUTES" train.epochs=1000
python -m export --run /work/run --repo "$REPO" --name "$NAME" --device "$DEVICE" --torch-runtime libtorch
python -m examples.samples --run /work/run --repo "$REPO" --name "$NAME" --out /work/samples
