#!/usr/bin/env bash
# The GPU measurements, in one run on a CUDA machine: the test suite, a CIFAR-10 search in float32 and in mixed
# precision, several workers sharing one GPU, training throughput against plain model.fit, what op determinism
# costs, and the layer's cost. Each phase's GPU utilisation comes from nvidia-smi, sampled every second.
#
#     bash benchmarks/gpu.sh [OUT_DIR] [CIFAR_FOLDER]     # default gpu-results, ../shared/data/cifar10-jpeg-subset
#
# It installs `.[gpu,test]` into .venv-gpu, so it also checks that the gpu extra gives one TensorFlow that sees the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-gpu-results}")
cifar=$(realpath "${2:-../shared/data/cifar10-jpeg-subset}")
mkdir -p "$out"
python3 -m venv .venv-gpu && . .venv-gpu/bin/activate && pip install -q -e ".[gpu,test]"
pip list 2>/dev/null | grep -i '^tensorflow' | tee "$out/tensorflow-distributions.txt"
python -c "import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))" | tee "$out/devices.txt"

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 > "$out/utilisation.csv" &
trap 'kill $! 2>/dev/null' EXIT
phase() { echo "$(date '+%Y/%m/%d %H:%M:%S') $1" >> "$out/phases.txt"; echo "== $1"; }

phase tests
pytest -q 2>&1 | tail -3 | tee "$out/tests.txt"

export HARNESS_HOME=$out/runs
cat > "$out/cifar.yaml" <<SPACE
dataset: {name: "imagefolder:$cifar"}
training: {epochs: 3, seed: 0}
params:
  insertion: [none, input, conv1, dense, all]
  function: [softplus, tanh, gelu]
  order: {low: 2, high: 6}
  mode: [series, weighted]
  coefficients: [fixed, trainable]
  per_unit: [false, true]
  conditioning: [tanh, batchnorm]
  batch_size: [128]
SPACE
search() { harness search --space "$out/cifar.yaml" --trials 8 --sampler random --seed 0 --pruner none --confirm 0 "$@"; }
phase "search float32";            search --study gpu-float32 --gpus all | tee "$out/search-float32.txt"
phase "search mixed precision";    search --study gpu-mixed --gpus all --mixed-precision | tee "$out/search-mixed.txt"
phase "search 2 workers per GPU";  search --study gpu-shared2 --gpus all --workers-per-gpu 2 | tee "$out/search-shared2.txt"
phase "search 4 workers per GPU";  search --study gpu-shared4 --gpus all --workers-per-gpu 4 | tee "$out/search-shared4.txt"
phase "throughput";   python benchmarks/throughput.py --dataset "imagefolder:$cifar" --param batch_size=128 | tee "$out/throughput.txt"
phase "determinism";  python benchmarks/determinism.py --dataset "imagefolder:$cifar" --param batch_size=128 | tee "$out/determinism.txt"
phase "layer cost";   python benchmarks/layer_cost.py | tee "$out/layer_cost.txt"
phase end

# Per phase: mean GPU utilisation; per search: epoch time and images/s from the MLflow runs.
python - "$out" <<'PY'
import sys
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

out = Path(sys.argv[1])
samples = pd.read_csv(out / "utilisation.csv", names=["time", "utilisation", "memory_mib"], skipinitialspace=True)
samples["time"] = pd.to_datetime(samples["time"])
phases = pd.read_csv(out / "phases.txt", sep=" ", header=None, names=["day", "clock", *range(8)]).fillna("")
starts = pd.to_datetime(phases["day"] + " " + phases["clock"])
names = phases[list(range(8))].astype(str).agg(" ".join, axis=1).str.strip()
for name, start, end in zip(names, starts, starts[1:]):
    window = samples[(samples["time"] >= start) & (samples["time"] < end)]
    print(f"{name:<28} GPU utilisation {window['utilisation'].mean():5.1f}%  memory {window['memory_mib'].max():6.0f} MiB")
client = MlflowClient(f"sqlite:///{out / 'runs' / 'mlflow.db'}")
for experiment in client.search_experiments():
    runs = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'trial'")
    rows = [(r.data.metrics["train_seconds"] / float(r.data.params["epochs"]), r.data.params["dataset"]) for r in runs
            if "train_seconds" in r.data.metrics]
    if rows:
        epoch = sorted(s for s, _ in rows)[len(rows) // 2]
        print(f"{experiment.name:<28} median epoch {epoch:6.2f} s over {len(rows)} trials")
PY
