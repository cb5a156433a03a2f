"""Training throughput: the harness's images/s against plain `model.fit` of the same model on the same data.

The harness side is a whole logged trial (`TrialLifecycle.run`: MLflow run,
per-epoch logging, divergence and stop checks, progress), timed inside its
`fit`; the plain side builds the same model and calls `model.fit` with no
callbacks. Each round trains both, in alternating order, in one process; the
ratio is the median over rounds of each round's pair, so the machine's slow
drifts cancel out. Target: a ratio of at least 0.95.

    python benchmarks/throughput.py [--dataset cifar10-subset] [--epochs 2] [--rounds 5] [--param insertion=dense ...]

The default dataset is the CIFAR-10 JPEG subset in ../shared/data where it
exists (9,000 training images), else scikit-learn's digits.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = ROOT.parent / "shared" / "data" / "cifar10-jpeg-subset"


def plain_fit_seconds(params, dataset, epochs):
    """Seconds inside `model.fit` for the model `params` describes, built and compiled as `run_trial` does."""
    import keras

    from harness.model import build_model
    from harness.training.trial import split_params

    model_params, training = split_params(params)
    keras.utils.set_random_seed(int(training["seed"]))
    model = build_model(model_params, dataset.input_shape, dataset.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(training["learning_rate"]), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(dataset.x_train, dataset.y_train, validation_data=(dataset.x_val, dataset.y_val), epochs=epochs,
              batch_size=int(training["batch_size"]), verbose=0)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=f"imagefolder:{CIFAR_SUBSET}" if CIFAR_SUBSET.is_dir() else "digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, help="training images (default: the whole training set)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="model or training param (default: the plain CNN)")
    args = parser.parse_args()
    os.environ["HARNESS_HOME"] = tempfile.mkdtemp(prefix="harness-throughput-")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import optuna
    from rich.console import Console

    from harness.training.device import description

    from harness.study.search import Search, SearchSettings
    from harness.study.space import parse_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    params = {"insertion": "none", "seed": 0}
    params.update({key: yaml.safe_load(value) for key, value in (p.split("=", 1) for p in args.param)})
    space = parse_space({"dataset": {"name": args.dataset, "train_size": args.train_size}, "params": {"insertion": "none"}})
    search = Search(space, SearchSettings(study_name="throughput"), console=Console(quiet=True))
    dataset = search.dataset
    images = len(dataset.x_train) * args.epochs
    on = description()
    print(f"Keras {on['keras_version']} on {on['backend']} {on['backend_version']}, {on['device']}; {args.dataset}: "
          f"{len(dataset.x_train)} training images "
          f"x {args.epochs} epochs, params {params}; {args.rounds} rounds\n")
    ratios = []
    with search.parent_run():
        for round_number in range(1, args.rounds + 1):
            # Alternate which side goes first, so neither always runs on a warmer (or busier) machine.
            sides = [("harness", lambda: search.lifecycle.run(round_number, params, args.epochs).train_seconds),
                     ("plain", lambda: plain_fit_seconds(params, dataset, args.epochs))]
            seconds = {name: measure() for name, measure in (sides if round_number % 2 else sides[::-1])}
            ratios.append(seconds["plain"] / seconds["harness"])
            print(f"round {round_number}: harness {images / seconds['harness']:6.0f} images/s, plain model.fit "
                  f"{images / seconds['plain']:6.0f} images/s, ratio {ratios[-1]:.3f}")
    print(f"\nratio harness / plain, median of {len(ratios)} paired rounds: {statistics.median(ratios):.3f} "
          "(target >= 0.95)")


if __name__ == "__main__":
    main()
