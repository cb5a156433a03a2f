"""The report's figures, each written as a PNG: the answer (difference against FLOPs ratio), and the search's plots."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from harness.reporting import tables  # noqa: E402
from harness.statistics import NOT_TRAINED  # noqa: E402
from harness.reporting.findings import finding_words  # noqa: E402


TOP_CURVES = 5


MIN_TRIALS_FOR_IMPORTANCE = 8


def _save(figure, folder, file, title):
    figure.tight_layout()
    figure.savefig(folder / file, dpi=72)
    plt.close(figure)
    return file, title


# A finding's colour and marker; "undecided after Holm" is hollow: its interval excludes 0, its test does not agree.
FINDING_STYLES = {
    "better": ("tab:green", "o"),
    "worse": ("tab:red", "o"),
    "equivalent": ("tab:blue", "o"),
    "undecided after Holm": ("tab:orange", "o"),
    "undecided": ("tab:grey", "o"),
    NOT_TRAINED: ("black", "x"),
}


def finding_style(words):
    """(colour, marker, filled) of a finding in words (`findings.finding_words`)."""
    key = next((k for k in FINDING_STYLES if words.startswith(k)), "undecided")
    colour, marker = FINDING_STYLES[key]
    return colour, marker, key != "undecided after Holm"


def answer_plot(folder, prefix, matched):
    """Accuracy difference against FLOPs ratio of each confirmed configuration against its matched baseline
    (`findings.matched_comparisons`, numbered as the answer's table), unadjusted 95% CI bars coloured by the
    Holm-adjusted finding, the baseline at (1, 0)."""
    figure, axis = plt.subplots(figsize=(8, 5))
    ratio = matched["flops ratio"] if "flops ratio" in matched else pd.Series(1.0, index=matched.index)
    delta = matched["delta (points)"]
    words = pd.Series([finding_words(row) for _, row in matched.iterrows()], index=matched.index)
    for finding, rows in matched.groupby(words):
        colour, marker, filled = finding_style(finding)
        axis.errorbar(
            ratio[rows.index],
            delta[rows.index],
            yerr=[delta[rows.index] - rows["ci low"], rows["ci high"] - delta[rows.index]],
            fmt=marker,
            capsize=4,
            color=colour,
            markerfacecolor=colour if filled else "white",
            label=finding + (": its CI excludes 0, its Holm-adjusted test does not" if not filled else ""),
        )
    for index in matched.index:  # the row's number in the answer's table: names are too long for a plot
        axis.annotate(str(index), (ratio[index], delta[index]), textcoords="offset points", xytext=(6, 4), fontsize=9)
    axis.scatter([1.0], [0.0], marker="X", s=90, color="black", label="matched baseline", zorder=3)
    axis.margins(x=0.3, y=0.15)  # room for the labels
    axis.axhline(0, color="black", linewidth=0.8)
    axis.axvline(1, color="black", linewidth=0.8, linestyle=":")
    _label(
        axis,
        "FLOPs per example, ratio to the matched baseline",
        "test accuracy difference (points), 95% CI",
        "Does the expansion pay off? Each configuration against its matched baseline",
    )
    return _save(
        figure,
        folder,
        f"{prefix}answer.png",
        "Test accuracy difference against FLOPs ratio, each configuration against its matched baseline over the "
        "same seeds, with its 95% CI (not adjusted); the colour is the finding once Holm-adjusted over every "
        "comparison; the numbers are the rows of the table above",
    )


def search_plots(folder, prefix, trials, study, tracking_uri):
    made = []
    done = tables.completed(trials)
    for cost, unit in (("flops", "forward FLOPs per sample"), ("total_params", "parameters")):
        if cost in done and done[cost].notna().any():
            made.append(
                _save(
                    _accuracy_against_cost(done, trials, cost, unit),
                    folder,
                    f"{prefix}accuracy_vs_{cost}.png",
                    f"Validation accuracy against {unit}, Pareto front drawn",
                )
            )
    if {"order", "function"} <= set(done) and done["order"].notna().any():
        figure, axis = plt.subplots(figsize=(6, 4))
        for function, group in done.dropna(subset=["order"]).groupby("function"):
            best = group.groupby("order")[tables.ACCURACY].max()
            axis.plot(best.index, best.values, "-o", label=function)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        _label(axis, "series order p", "best validation accuracy (fraction)", "Accuracy against order, per function")
        made.append(
            _save(
                figure,
                folder,
                f"{prefix}accuracy_vs_order.png",
                "Best validation accuracy at each order, one line per function",
            )
        )
    if "insertion" in done:
        figure, axis = plt.subplots(figsize=(6, 4))
        points = [p for p in ("none", "input", "conv1", "conv2", "dense", "all") if p in set(done["insertion"])]
        groups = [done.loc[done["insertion"] == p, tables.ACCURACY] for p in points]
        axis.boxplot(groups, tick_labels=[f"{p}\nn={len(g)}" for p, g in zip(points, groups)])
        _label(
            axis,
            "insertion point (n = completed trials)",
            "validation accuracy (fraction)",
            "Effect of the insertion point",
        )
        made.append(_save(figure, folder, f"{prefix}insertion_effect.png", "Validation accuracy by insertion point"))
    curves = _learning_curves(tables.best_trials(trials, TOP_CURVES), trials, tracking_uri)
    if curves is not None:
        made.append(
            _save(
                curves,
                folder,
                f"{prefix}learning_curves.png",
                f"Validation accuracy per epoch of the top {TOP_CURVES} search trials",
            )
        )
    if study is None:
        return made
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    axis = optuna.visualization.matplotlib.plot_optimization_history(
        study, target=target, target_name="validation accuracy"
    )
    made.append(_save(axis.figure, folder, f"{prefix}optimization_history.png", "Optuna's optimisation history"))
    if len(done) >= MIN_TRIALS_FOR_IMPORTANCE:
        try:
            axis = optuna.visualization.matplotlib.plot_param_importances(
                study, target=target, target_name="validation accuracy"
            )
            made.append(
                _save(
                    axis.figure,
                    folder,
                    f"{prefix}param_importances.png",
                    "Parameter importances (fANOVA, over the completed trials)",
                )
            )
        except (ValueError, RuntimeError):
            pass  # too few trials share the same params for importances
    return made


def _accuracy_against_cost(done, trials, cost, unit):
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    expanded = done[done["insertion"] != "none"] if "insertion" in done else done
    for function, group in expanded.groupby("function") if "function" in expanded else [("all", expanded)]:
        axis.scatter(group[cost], group[tables.ACCURACY], label=function, alpha=0.8)
    baseline = done[done["insertion"] == "none"] if "insertion" in done else done.iloc[:0]
    if not baseline.empty:
        axis.scatter(
            baseline[cost], baseline[tables.ACCURACY], marker="X", s=80, color="black", label="baseline (none)"
        )
    front = tables.pareto_front(trials, cost)
    if not front.empty:
        axis.step(front[cost], front[tables.ACCURACY], where="post", color="red", linewidth=1.2, label="Pareto front")
    axis.set_xscale("log")
    _label(axis, unit + " (log scale)", "validation accuracy (fraction)", f"Accuracy against {unit}")
    return figure


def _learning_curves(top, trials, tracking_uri):
    if tracking_uri is None or "mlflow_run_id" not in trials:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    figure, axis = plt.subplots(figsize=(6, 4))
    ids = trials.set_index("trial")["mlflow_run_id"]
    for trial in top["trial"]:
        history = client.get_metric_history(ids[trial], "val_accuracy")
        if history:
            axis.plot([m.step + 1 for m in history], [m.value for m in history], "-o", label=f"trial {trial}")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    _label(axis, "epoch", "validation accuracy (fraction)", "Learning curves of the top trials")
    return figure


def _label(axis, xlabel, ylabel, title):
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)
