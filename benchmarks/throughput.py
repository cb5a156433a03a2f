"""Training throughput: the harness's images/s against plain `model.fit` of the same model on the same data.

The harness side is a whole logged trial (`TrialLifecycle.run`: MLflow run,
per-epoch logging, divergence and stop checks, progress), timed inside its
`fit`; the plain side builds the same model and calls `model.fit` with no
callbacks. Each round trains both, in alternating order, in one process; the
ratio is the median over rounds of each round's pair, so the machine's slow
drifts cancel out. Target: a ratio of at least 0.95.

`--versus KEY=VALUE` adds a third side each round: a harness trial with those
params changed, and its images/s against the harness's own (say
`--versus augment=crop_flip`: what augmentation costs; target at least 0.9).

    python benchmarks/throughput.py [--dataset cifar10-subset] [--epochs 2] [--rounds 5] [--param backbone=resnet20 ...]
                                    [--versus augment=crop_flip]

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
    """Seconds inside `model.fit` for the model `params` describes, built as `run_trial` does (its backbone and
    augmentation) and compiled with Keras's own optimizer of the same settings: without the harness's norm record
    and optimizer group (`training.optimizers`), which the harness side pays for."""
    from harness.training import optimizers, recipe
    from harness.training.trial import compiled_model

    model, training = compiled_model(params, dataset, epochs)
    grouped = optimizers.grouped(model.optimizer)
    keras_optimizer = next(c for c in type(grouped).__mro__ if c.__module__.startswith("keras."))
    settings = {k: v for k, v in grouped.get_config().items() if k != "coefficient_lr_scale"}
    model.compile(optimizer=keras_optimizer.from_config(settings), loss=model.loss, metrics=["accuracy"])
    y_train, y_val = (recipe.targets(y, training, dataset.num_classes) for y in (dataset.y_train, dataset.y_val))
    start = time.perf_counter()
    model.fit(
        dataset.x_train,
        y_train,
        validation_data=(dataset.x_val, y_val),
        epochs=epochs,
        batch_size=int(training["batch_size"]),
        verbose=0,
    )
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=f"imagefolder:{CIFAR_SUBSET}" if CIFAR_SUBSET.is_dir() else "digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, help="training images (default: the whole training set)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model or training param (default: the plain CNN)",
    )
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params of a third side, a harness trial timed against the first",
    )
    args = parser.parse_args()
    os.environ["HARNESS_HOME"] = tempfile.mkdtemp(prefix="harness-throughput-")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import optuna
    from rich.console import Console

    from harness.training.device import description

    from harness.study.search import Search
    from harness.study.settings import SearchSettings
    from harness.study.space import parse_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    params = {"insertion": "none", "seed": 0}
    params.update({key: yaml.safe_load(value) for key, value in (p.split("=", 1) for p in args.param)})
    versus = {**params, **{key: yaml.safe_load(value) for key, value in (p.split("=", 1) for p in args.versus)}}
    space = parse_space(
        {"dataset": {"name": args.dataset, "train_size": args.train_size}, "params": {"insertion": "none"}}
    )
    search = Search(space, SearchSettings(study_name="throughput"), console=Console(quiet=True))
    dataset = search.dataset
    images = len(dataset.x_train) * args.epochs
    on = description()
    print(
        f"Keras {on['keras_version']} on {on['backend']} {on['backend_version']}, {on['device']}; {args.dataset}: "
        f"{len(dataset.x_train)} training images "
        f"x {args.epochs} epochs, params {params}; {args.rounds} rounds\n"
    )
    ratios, versus_ratios = [], []
    with search.parent_run():
        for round_number in range(1, args.rounds + 1):
            # Alternate which side goes first, so neither always runs on a warmer (or busier) machine.
            sides = [
                ("harness", lambda: search.lifecycle.run(round_number, params, args.epochs).train_seconds),
                ("plain", lambda: plain_fit_seconds(params, dataset, args.epochs)),
            ]
            if args.versus:
                sides.append(("versus", lambda: search.lifecycle.run(round_number, versus, args.epochs).train_seconds))
            seconds = {name: measure() for name, measure in (sides if round_number % 2 else sides[::-1])}
            ratios.append(seconds["plain"] / seconds["harness"])
            line = (
                f"round {round_number}: harness {images / seconds['harness']:6.0f} images/s, plain model.fit "
                f"{images / seconds['plain']:6.0f} images/s, ratio {ratios[-1]:.3f}"
            )
            if args.versus:
                versus_ratios.append(seconds["harness"] / seconds["versus"])
                line += f"; with {' '.join(args.versus)} {images / seconds['versus']:6.0f} images/s, {versus_ratios[-1]:.3f}"
            print(line)
    print(
        f"\nratio harness / plain, median of {len(ratios)} paired rounds: {statistics.median(ratios):.3f} "
        "(target >= 0.95)"
    )
    if args.versus:
        print(
            f"ratio with {' '.join(args.versus)} / without, median of {len(versus_ratios)} rounds: "
            f"{statistics.median(versus_ratios):.3f}"
        )


if __name__ == "__main__":
    main()
