"""Search efficiency: which strategy spends an epoch budget best?

Each strategy runs `repeats` times under the same total epoch budget, as its
own study, every trial logged to MLflow. The anytime curve of a run is the
best validation accuracy found against the epochs trained so far, read back
from MLflow, where every trial logs one `loss` point per epoch it trained
(pruned ones too). Curves are averaged over repeats, with a min-max band, as
HPO benchmark suites compare optimisers.
"""

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from rich.console import Console  # noqa: E402

from harness.outputs import check_output_folder, write_output_folder  # noqa: E402
from harness.study.lifecycle import open_lifecycle  # noqa: E402
from harness.study.search import Search  # noqa: E402
from harness.study.tuner import run_tuner  # noqa: E402

# name: (engine, Optuna sampler or keras-tuner tuner, Optuna pruner)
STRATEGIES = {
    "optuna-tpe-median": ("optuna", "tpe", "median"),
    "optuna-tpe": ("optuna", "tpe", "none"),
    "optuna-random": ("optuna", "random", "none"),
    "keras-tuner-hyperband": ("keras-tuner", "hyperband", None),
    "keras-tuner-bayesian": ("keras-tuner", "bayesian", None),
}


def run_strategy(space, settings, strategy, budget, seed):
    """One run of `strategy` on a study of its own, stopped once `budget` epochs are trained."""
    engine, method, pruner = STRATEGIES[strategy]
    # No baseline turns: every strategy spends its budget on the space as the sampler sees it, keras-tuner's too.
    settings = dataclasses.replace(
        settings,
        sampler=method if engine == "optuna" else "random",
        pruner=pruner or "none",
        seed=seed,
        epoch_budget=budget,
        n_trials=10_000,
        baseline_every=0,
    )
    if engine == "optuna":
        search = Search(space, settings)
        with search.parent_run():
            search.run()
    else:
        run_tuner(
            space, open_lifecycle(space, settings, Console()), method, max_trials=10_000, seed=seed, epoch_budget=budget
        )


def anytime_curve(tracking_uri, study_name):
    """(epochs trained so far, best validation accuracy so far) after each trial, in the order trials ended."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study_name)
    runs = client.search_runs(
        [experiment.experiment_id], "tags.`harness.role` = 'trial'", order_by=["attributes.end_time ASC"]
    )
    spent, best, rows = 0, np.nan, []
    for run in runs:
        spent += len(client.get_metric_history(run.info.run_id, "loss"))
        accuracies = [m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        if accuracies and np.isfinite(max(accuracies)):
            best = np.fmax(best, max(accuracies))
        rows.append({"epochs": spent, "best_val_accuracy": best})
    return pd.DataFrame(rows)


def on_grid(curve, budget):
    """The best-so-far step function of a curve, at every epoch 1..budget."""
    grid = np.arange(1, budget + 1)
    index = np.searchsorted(curve["epochs"].to_numpy(), grid, side="right") - 1
    values = np.where(index >= 0, curve["best_val_accuracy"].to_numpy()[np.clip(index, 0, None)], np.nan)
    return pd.Series(values, index=pd.Index(grid, name="epochs"))


def compare_engines(space, settings, budget, repeats, *, strategies=tuple(STRATEGIES), target=None, out=None):
    """Run every strategy `repeats` times; write anytime.png, anytime.csv and summary.md to `out`; return the summary.

    `out` (default reports/compare-<study>) must be new, empty, or an earlier output, which is replaced whole: it
    is checked before anything trains."""
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)}")
    if budget < space.training.epochs:
        raise ValueError(f"the budget ({budget} epochs) is smaller than one trial ({space.training.epochs} epochs)")
    out = Path(out or Path("reports") / f"compare-{settings.study_name}")
    check_output_folder(out)
    curves = []
    for strategy in strategies:
        for repeat in range(repeats):
            name = f"{settings.study_name}-{strategy}-{repeat}"
            run_strategy(space, dataclasses.replace(settings, study_name=name), strategy, budget, seed=repeat)
            curve = on_grid(anytime_curve(settings.tracking_uri, name), budget)
            curves.append(curve.rename("best_val_accuracy").reset_index().assign(strategy=strategy, repeat=repeat))
    table = pd.concat(curves, ignore_index=True)
    target = target if target is not None else 0.95 * table["best_val_accuracy"].max()
    summary = _summary(table, target)

    def fill(folder):
        table.to_csv(folder / "anytime.csv", index=False)
        _plot(table, target, budget, folder / "anytime.png")
        (folder / "summary.md").write_text(
            f"# Search strategies under {budget} epochs, {repeats} {'repeat' if repeats == 1 else 'repeats'} each\n\n"
            f"Target: {target:.3f} validation accuracy. Epochs to target: the median over the repeats that reached it.\n\n"
            f"{summary.round(4).to_markdown()}\n\n![anytime curves](anytime.png)\n"
        )

    write_output_folder(out, fill)
    return summary


def _summary(table, target):
    rows = {}
    for strategy, runs in table.groupby("strategy", sort=False):
        finals = runs.groupby("repeat")["best_val_accuracy"].last()
        reached = runs[runs["best_val_accuracy"] >= target].groupby("repeat")["epochs"].min()
        rows[strategy] = {
            "final best (mean)": finals.mean(),
            "final best (std)": finals.std(),
            "epochs to target (median)": reached.median() if len(reached) else np.nan,
            "repeats reaching target": f"{len(reached)}/{runs['repeat'].nunique()}",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _plot(table, target, budget, path):
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for strategy, runs in table.groupby("strategy", sort=False):
        by_epoch = runs.groupby("epochs")["best_val_accuracy"]
        mean, low, high = by_epoch.mean(), by_epoch.min(), by_epoch.max()
        axis.plot(mean.index, mean.values, label=strategy)
        axis.fill_between(mean.index, low.values, high.values, alpha=0.2)
    axis.axhline(target, color="grey", linestyle=":", label=f"target {target:.3f}")
    axis.set_xlim(1, budget)
    axis.set_xlabel("epochs trained so far (all trials)")
    axis.set_ylabel("best validation accuracy so far (fraction)")
    axis.set_title("Anytime performance: mean over repeats, band = min to max")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
