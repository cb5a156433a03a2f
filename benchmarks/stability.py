"""Do trainable expansions survive standard CIFAR recipes? Divergence and accuracy against the matched baseline.

For each backbone and recipe, every function x {fixed, trainable} x {series, weighted} x {tanh, clip} x insertion
(the backbone's own among all, stage1, stage3, last) is trained for `--epochs` epochs, beside its matched baseline
(the same backbone, recipe, data and seed, no expansion). Prints, per cell, whether it diverged and its test
accuracy's gap to the baseline, then the divergence rate and trainable's mean gap to fixed, overall and per
conditioning. `--parameterization before` trains the layer as it was before issue 26 (raw monomial coefficients,
the summed gradient, weight decay on them), for the before/after table in docs/explanation/stability.md.

The recipes: SGD with Nesterov momentum at 0.05 and 0.1, weight decay 5e-4, cosine with a warm-up epoch, crop-flip
(the standard CIFAR ResNet recipe); AdamW 1e-3 with the same decay, schedule and augmentation.

    python benchmarks/stability.py [--data ../shared/data/cifar10-jpeg-subset] [--train-size 9500]
        [--backbones resnet20,vgg] [--functions all] [--recipes sgd0.05,sgd0.1,adamw] [--csv out.csv]
"""

import argparse
import time
from pathlib import Path

import pandas as pd

from harness.params import FUNCTIONS, INSERTIONS_BY_BACKBONE
from harness.training import data
from harness.training.trial import run_trial

CIFAR_RECIPE = {"weight_decay": 5e-4, "schedule": "cosine", "warmup_epochs": 1, "augment": "crop_flip"}
RECIPES = {
    "sgd0.05": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 128, **CIFAR_RECIPE},
    "sgd0.1": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 128, **CIFAR_RECIPE},
    "adamw": {"optimizer": "adamw", "learning_rate": 1e-3, "batch_size": 128, **CIFAR_RECIPE},
}
PARAMETERIZATIONS = {
    "after": {},  # the layer's defaults: the scaled basis, the mean gradient, no weight decay on the coefficients
    "before": {"basis": "monomial", "coefficient_gradient": "sum", "coefficient_decay": True},
}
INSERTIONS = ("all", "stage1", "stage3", "last")


def cells(backbones, functions, insertions, coefficient_kinds, modes, order, parameterization):
    """Every configuration the benchmark trains: (backbone, params without the recipe)."""
    for backbone in backbones:
        yield backbone, {"backbone": backbone, "insertion": "none"}
        for insertion in (i for i in insertions if i in INSERTIONS_BY_BACKBONE[backbone]):
            for function in functions:
                for coefficients in coefficient_kinds:
                    for mode in modes:
                        for conditioning in ("tanh", "clip"):
                            yield (
                                backbone,
                                {
                                    "backbone": backbone,
                                    "insertion": insertion,
                                    "function": function,
                                    "order": order,
                                    "coefficients": coefficients,
                                    "mode": mode,
                                    "conditioning": conditioning,
                                    **PARAMETERIZATIONS[parameterization],
                                },
                            )


def run(dataset, grid, recipes, order, epochs, seed, parameterization):
    """One row per trained cell: its params, recipe, outcome and accuracy gap to its matched baseline."""
    rows = []
    for recipe_name in recipes:
        baselines = {}
        for backbone, params in cells(*grid, order, parameterization):
            start = time.perf_counter()
            result = run_trial({**params, **RECIPES[recipe_name], "seed": seed}, dataset, epochs=epochs)
            accuracy = result.test_accuracy
            if params["insertion"] == "none":
                baselines[backbone] = accuracy
            row = {
                "recipe": recipe_name,
                **{k: params.get(k, "") for k in ("backbone", "insertion", "function", "coefficients", "mode")},
                "conditioning": params.get("conditioning", ""),
                "diverged": result.diverged,
                "test_accuracy": float("nan") if accuracy is None else accuracy,
                "gap_to_baseline": None if accuracy is None else 100 * (accuracy - baselines[backbone]),
                "seconds": round(time.perf_counter() - start),
                "reason": result.failure_reason or "",
            }
            rows.append(row)
            print(
                f"{recipe_name:8} {backbone:9} {row['insertion']:7} {row['function']:9} {row['coefficients']:9} "
                f"{row['mode']:9} {row['conditioning']:5} "
                + (
                    "DIVERGED " + row["reason"]
                    if result.diverged
                    else f"acc {accuracy:.3f} gap {row['gap_to_baseline']:+.1f} pts"
                ),
                flush=True,
            )
    return pd.DataFrame(rows)


def summary(frame):
    """The divergence rate and trainable's mean accuracy gap to fixed (percentage points, paired by cell)."""
    expanded = frame[frame["insertion"] != "none"]
    keys = ["recipe", "backbone", "insertion", "function", "mode", "conditioning"]
    paired = expanded.pivot_table(index=keys, columns="coefficients", values="test_accuracy", dropna=False)
    paired = paired.reindex(columns=["fixed", "trainable"])  # a run of one kind has no pairs
    gap = 100 * (paired["trainable"] - paired["fixed"])
    lines = [
        f"divergence rate: {expanded['diverged'].mean():.1%} of {len(expanded)} expanded cells "
        f"(trainable {expanded[expanded['coefficients'] == 'trainable']['diverged'].mean():.1%}, "
        f"fixed {expanded[expanded['coefficients'] == 'fixed']['diverged'].mean():.1%})",
        f"trainable minus fixed, mean over cells where both trained: {gap.mean():+.2f} points "
        f"({gap.notna().sum()} pairs)",
    ]
    by_recipe = expanded.groupby(["recipe", "coefficients"])["diverged"].mean().unstack()
    return "\n".join(lines) + "\n\ndivergence rate by recipe:\n" + by_recipe.to_string(float_format="{:.0%}".format)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg-subset"
    parser.add_argument("--data", default=str(default_data), help="a CIFAR-10 image folder (train/ and test/)")
    parser.add_argument("--train-size", type=int, default=9500, help="of the 10,000, after 500 for validation")
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--backbones", default="resnet20,vgg")
    parser.add_argument("--functions", default="all", help="comma-separated, or all")
    parser.add_argument("--insertions", default=",".join(INSERTIONS), help="those the backbone has are trained")
    parser.add_argument("--coefficients", default="fixed,trainable")
    parser.add_argument("--modes", default="series,weighted")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--parameterization", choices=tuple(PARAMETERIZATIONS), default="after")
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", help="also write the rows here")
    args = parser.parse_args()
    # log has no series around 0 (its singularity); log1p is its shifted form.
    functions = (
        tuple(f for f in FUNCTIONS if f != "log") if args.functions == "all" else tuple(args.functions.split(","))
    )
    dataset = data.load(
        f"imagefolder:{args.data}", train_size=args.train_size, val_size=500, test_size=args.test_size, seed=args.seed
    )
    grid = (
        args.backbones.split(","),
        functions,
        args.insertions.split(","),
        args.coefficients.split(","),
        args.modes.split(","),
    )
    frame = run(
        dataset,
        grid,
        args.recipes.split(","),
        args.order,
        args.epochs,
        args.seed,
        args.parameterization,
    )
    if args.csv:
        frame.to_csv(args.csv, index=False)
    print()
    print(summary(frame))


if __name__ == "__main__":
    main()
