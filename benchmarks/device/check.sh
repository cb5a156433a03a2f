#!/usr/bin/env bash
# The GPU check, as one command for the lent machine (Python 3.12 with JAX and PyTorch, no TensorFlow, nothing to
# fetch): at most 9 minutes, at most 8 files into $OUT (here: ./device-results).
#
#     bash benchmarks/device/wheels.sh                  # here, first: the wheels it lacks, in .whl/, and MNIST in .data/
#     device run, carrying .whl and .data:  bash benchmarks/device/check.sh
#     bash benchmarks/device/rehearse.sh                # here, on the CPU: the same command, to the end
#
# It installs the carried wheels with --no-index, then under KERAS_BACKEND (default jax): the core tests, the
# training throughput against plain model.fit (the seed CNN, then ResNet-20 with the CIFAR recipe, with and without
# crop-flip), what deterministic ops cost, and an MNIST search with --gpus all
# in float32, in mixed precision, and with 2 and 4 workers per GPU, sampling nvidia-smi's utilisation every
# second; summary.txt sums it up.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${OUT:-device-results}")
mkdir -p "$out"
rm -f "$out"/{log.txt,phases.txt,summary.txt,devices.txt,utilisation.csv}  # this run's files only
started=$(date +%s)
budget=${CHECK_SECONDS:-530}  # the phases' share of the 9 minutes; a phase that would not fit is skipped
images=${CHECK_TRAIN_SIZE:-12000}  # MNIST training images per trial
scale=${CHECK_TIME_SCALE:-1}  # times each phase's limit: the CPU rehearsal is slower than the GPU

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/harness-site .whl/*.whl \
    || { echo "the carried wheels did not install" | tee "$out/summary.txt"; exit 1; }
export PYTHONPATH=$PWD:/tmp/harness-site PYTHONUNBUFFERED=1 KERAS_BACKEND=${KERAS_BACKEND:-jax}
export HARNESS_HOME=/tmp/harness-home HARNESS_DATA_DIR=$PWD/.data TF_CPP_MIN_LOG_LEVEL=3
rm -rf "$HARNESS_HOME"
gpus=()
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L > "$out/devices.txt"
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 > "$out/utilisation.csv" &
    trap 'kill $! 2>/dev/null' EXIT
    gpus=(--gpus all)
else
    echo "no GPU: the searches run in one CPU process" > "$out/devices.txt"
fi

# phase SECONDS NAME COMMAND...: runs COMMAND under a time limit, logged, if the budget still holds it.
phase() {
    local limit=$(($1 * scale)) name=$2
    shift 2
    if [ $(( $(date +%s) + limit - started )) -gt "$budget" ]; then
        echo "$name: skipped, the budget is spent" | tee -a "$out/log.txt"
        return
    fi
    echo "$(date '+%Y-%m-%d %H:%M:%S') $name" >> "$out/phases.txt"
    echo "== $name" | tee -a "$out/log.txt"
    timeout "$limit" "$@" >> "$out/log.txt" 2>&1
    echo "$name: exit $?" | tee -a "$out/log.txt"
}

space=$out/mnist.yaml
cat > "$space" <<SPACE
dataset: {name: mnist, train_size: $images, val_size: 2000, test_size: 2000}
training: {epochs: 2, seed: 0}
params:
  insertion: [none, input, conv1, dense, all]
  function: [softplus, tanh, gelu]
  order: {low: 2, high: 5}
  mode: [series, weighted]
  coefficients: [fixed, trainable]
  conditioning: [tanh, batchnorm]
  batch_size: [256]
SPACE
search=(python3 -m harness.cli search --space "$space" --trials 4 --sampler random --seed 0 --pruner none --confirm 0)

phase 170 "core tests on ${KERAS_BACKEND}" python3 -m pytest -q -p no:cacheprovider -m core tests
phase 100 "throughput" python3 benchmarks/throughput.py --dataset mnist --train-size "$images" --epochs 2 --rounds 3 \
    --param batch_size=256
phase 90 "resnet20 recipe throughput" python3 benchmarks/throughput.py --dataset mnist --train-size "$images" --epochs 2 \
    --rounds 2 --param backbone=resnet20 --param optimizer=sgd --param learning_rate=0.05 --param schedule=cosine \
    --param batch_size=128 --versus augment=crop_flip
phase 60 "determinism" python3 benchmarks/determinism.py --dataset mnist --train-size "$images" --epochs 2 --rounds 1 \
    --param batch_size=256
phase 60 "search float32" "${search[@]}" --study float32 "${gpus[@]}"
phase 60 "search mixed precision" "${search[@]}" --study mixed --mixed-precision "${gpus[@]}"
if [ ${#gpus[@]} -gt 0 ]; then
    phase 70 "search 2 workers per GPU" "${search[@]}" --study shared2 "${gpus[@]}" --workers-per-gpu 2
    phase 70 "search 4 workers per GPU" "${search[@]}" --study shared4 "${gpus[@]}" --workers-per-gpu 4
fi
echo "$(date '+%Y-%m-%d %H:%M:%S') end" >> "$out/phases.txt"
rm -f "$space"

python3 - "$out" "$HARNESS_HOME" "$images" > "$out/summary.txt" 2>&1 <<'PY'
"""Per phase: mean GPU utilisation; per search: median epoch time and images/s; the throughput and test lines."""
import re
import sys
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

out, home, images = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
log = (out / "log.txt").read_text()
for line in log.splitlines():
    if re.search(r"(passed|failed|skipped).* in [\d.]+s|^ratio|^Keras|^best: |: exit \d+|skipped, the budget", line):
        print(line)
phases = [line.split(" ", 2) for line in (out / "phases.txt").read_text().splitlines()]
if (out / "utilisation.csv").exists():
    samples = pd.read_csv(out / "utilisation.csv", names=["time", "utilisation", "memory_mib"], skipinitialspace=True)
    samples["time"] = pd.to_datetime(samples["time"])
    for (day, clock, name), (next_day, next_clock, _) in zip(phases, phases[1:]):
        start, end = pd.Timestamp(f"{day} {clock}"), pd.Timestamp(f"{next_day} {next_clock}")
        window = samples[(samples["time"] >= start) & (samples["time"] < end)]
        print(f"{name:<30} GPU utilisation {window['utilisation'].mean():5.1f}%, memory up to "
              f"{window['memory_mib'].max():6.0f} MiB, {(end - start).total_seconds():4.0f} s")
if (home / "mlflow.db").exists():
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    for experiment in client.search_experiments():
        runs = [r for r in client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'trial'")
                if "train_seconds" in r.data.metrics]
        if runs:
            epochs = [r.data.metrics["train_seconds"] / float(r.data.params["epochs"]) for r in runs]
            median = sorted(epochs)[len(epochs) // 2]
            print(f"search {experiment.name:<10} median epoch {median:6.2f} s ({images / median:7.0f} images/s) over "
                  f"{len(runs)} trials, {runs[0].data.tags.get('backend')} on {runs[0].data.tags.get('device')}, "
                  f"determinism: {runs[0].data.tags.get('determinism')}")
PY
cat "$out/summary.txt"
