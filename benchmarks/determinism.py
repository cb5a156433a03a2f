"""What deterministic ops cost, on the Keras backend in use: plain `model.fit` epochs with and without them, in one run.

`run_trial` turns the backend's determinism on (`harness.training.device`) so
that a configuration and seed give the same result. On a GPU, deterministic
kernels can be slower; this measures by how much. Determinism is process-wide once on, so each setting
trains in its own child process, alternating, and the best round of each counts.

    python benchmarks/determinism.py [--dataset DATASET] [--epochs 2] [--rounds 3] [--param insertion=dense ...]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = ROOT.parent / "shared" / "data" / "cifar10-jpeg-subset"


def child(dataset_name, epochs, params, deterministic, train_size=None):
    """Train once in this process and print images/s of the last epoch (the first one traces) as JSON."""
    import keras

    from harness.model import build_model
    from harness.training import data
    from harness.training.device import enable_determinism
    from harness.training.trial import split_params

    if deterministic:  # JAX's comes in XLA_FLAGS, set by the parent before this process computed anything
        enable_determinism()
    dataset = data.load(dataset_name, train_size=train_size)
    model_params, training = split_params(params)
    keras.utils.set_random_seed(0)
    model = build_model(model_params, dataset.input_shape, dataset.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(training["learning_rate"]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    epoch_seconds = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.start)

    model.fit(
        dataset.x_train,
        dataset.y_train,
        epochs=epochs,
        batch_size=int(training["batch_size"]),
        verbose=0,
        callbacks=[EpochTimer()],
    )
    print(json.dumps({"images_per_second": len(dataset.x_train) / epoch_seconds[-1]}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=f"imagefolder:{CIFAR_SUBSET}" if CIFAR_SUBSET.is_dir() else "digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--train-size", type=int, help="training images (default: the whole training set)")
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    params = {"insertion": "none", **{k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.param)}}
    if args.child:
        return child(args.dataset, args.epochs, params, args.child == "on", args.train_size)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    best = {"on": 0.0, "off": 0.0}
    for round_number in range(1, args.rounds + 1):
        for setting in best:
            command = [
                sys.executable,
                __file__,
                "--child",
                setting,
                "--dataset",
                args.dataset,
                "--epochs",
                str(args.epochs),
                *(["--train-size", str(args.train_size)] if args.train_size else []),
                *(f"--param={p}" for p in args.param),
            ]
            flags = env.get("XLA_FLAGS", "") + (" --xla_gpu_deterministic_ops=true" if setting == "on" else "")
            output = subprocess.run(
                command, env={**env, "XLA_FLAGS": flags.strip()}, capture_output=True, text=True, check=True
            ).stdout
            rate = json.loads(output.strip().splitlines()[-1])["images_per_second"]
            best[setting] = max(best[setting], rate)
            print(f"round {round_number}: determinism {setting:<3} {rate:8.0f} images/s", flush=True)
    print(
        f"\nbest: on {best['on']:.0f}, off {best['off']:.0f} images/s; determinism costs "
        f"{1 - best['on'] / best['off']:.1%} (make it a setting if above 10%)"
    )


if __name__ == "__main__":
    main()
