"""The report's files: trials.csv, PNG plots, index.md and index.html."""

import html

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from harness import report  # noqa: E402
from harness.storage import open_storage  # noqa: E402

TOP_CURVES = 5
MIN_TRIALS_FOR_IMPORTANCE = 8


def render(folder, studies, frames, storage, tracking_uri):
    trials = pd.concat(frames, ignore_index=True)
    trials.to_csv(folder / "trials.csv", index=False)
    blocks = [("h1", "Taylor-expansion search report: " + ", ".join(studies))]
    if len(studies) > 1:
        blocks += [("h2", "Studies side by side"), ("table", _comparison(frames))]
    for name, frame in zip(studies, frames):
        prefix = f"{name}_" if len(studies) > 1 else ""
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(storage))
        except KeyError:
            study = None  # searched by keras-tuner: known from its MLflow runs only
        blocks += _study_blocks(folder, prefix, name, frame, study, tracking_uri)
    blocks += [("p", "All trials, with their params, states, failure reasons, costs and MLflow run links: trials.csv.")]
    (folder / "index.md").write_text(_markdown(blocks))
    (folder / "index.html").write_text(_html(blocks, ", ".join(studies)))


def _comparison(frames):
    rows = []
    for frame in frames:
        done = report.completed(frame)
        baseline = done[done["insertion"] == "none"] if "insertion" in done else done.iloc[:0]
        rows.append({
            "study": frame["study"].iloc[0],
            **{state.lower(): n for state, n in report.counts(frame).items()},
            "best val accuracy": done[report.ACCURACY].max(),
            "best baseline": baseline[report.ACCURACY].max() if not baseline.empty else np.nan,
            "median FLOPs": done["flops"].median() if "flops" in done else np.nan,
        })
    return pd.DataFrame(rows).set_index("study")


def _study_blocks(folder, prefix, name, trials, study, tracking_uri):
    attrs = study.user_attrs if study else {
        "dataset": trials["dataset"].iloc[0] if "dataset" in trials else "unknown",
        "epochs": trials["epochs"].max() if "epochs" in trials else "?",
    }
    tally = report.counts(trials)
    blocks = [
        ("h2", f"Study {name}"),
        ("p", report.verdict(trials)),
        ("p", f"{len(trials)} trials: {tally['COMPLETE']} completed, {tally['FAIL']} failed, {tally['PRUNED']} pruned. "
              f"Data: {attrs.get('dataset', 'unknown')}; budget: {attrs.get('epochs', '?')} epochs per trial; "
              f"objectives: {', '.join(attrs.get('objectives', ['accuracy']))}. Accuracy is validation accuracy "
              f"(the search's objective) unless a column says test."),
        ("h3", "Best trials"), ("table", report.best_trials(trials)),
    ]
    deltas = report.baseline_deltas(trials)
    if not deltas.empty:
        blocks += [("h3", "Against the baseline (insertion none)"), ("table", deltas)]
    seeds = report.config_summary(trials)
    if not seeds.empty:
        blocks += [("h3", "Configurations run with several seeds: test accuracy, mean and 95% CI"), ("table", seeds)]
    significance = report.significance_vs_baseline(trials)
    if not significance.empty:
        blocks += [("h3", "Against the baseline over seeds: test accuracy, Welch's t-test"), ("table", significance)]
    for cost in ("flops", "total_params", "latency_ms", "train_seconds"):
        if cost in trials and trials[cost].notna().any():
            blocks += [("h3", f"Pareto front: accuracy against {report.COSTS[cost]}"), ("table", report.pareto_front(trials, cost))]
    for dimension in report.DIMENSIONS:
        table = report.by_dimension(trials, dimension)
        if not table.empty:
            blocks += [("h3", f"By {dimension}"), ("table", table)]
    for index in ("order", "insertion"):
        table = report.pivot_best(trials, index)
        if not table.empty:
            blocks += [("h3", f"Best accuracy, {index} x function"), ("table", table)]
    blocks.append(("h3", "Plots"))
    for file, title in _plots(folder, prefix, trials, study, tracking_uri):
        blocks.append(("img", (file, title)))
    failures = trials[trials["state"] != "COMPLETE"]
    if not failures.empty:
        columns = [c for c in ("trial", "state", "failure_reason") if c in failures]
        blocks += [("h3", "Failed and pruned trials"), ("table", failures[columns].set_index("trial"))]
    return blocks


def _plots(folder, prefix, trials, study, tracking_uri):
    made = []

    def save(figure, stem, title):
        file = f"{prefix}{stem}.png"
        figure.tight_layout()
        figure.savefig(folder / file, dpi=72)
        plt.close(figure)
        made.append((file, title))

    done = report.completed(trials)
    for cost, unit in (("flops", "forward FLOPs per sample"), ("total_params", "parameters")):
        if cost in done and done[cost].notna().any():
            save(_accuracy_against_cost(done, trials, cost, unit), f"accuracy_vs_{cost}",
                 f"Validation accuracy against {unit}, Pareto front drawn")
    if {"order", "function"} <= set(done) and done["order"].notna().any():
        figure, axis = plt.subplots(figsize=(6, 4))
        for function, group in done.dropna(subset=["order"]).groupby("function"):
            best = group.groupby("order")[report.ACCURACY].max()
            axis.plot(best.index, best.values, "-o", label=function)
        _label(axis, "series order p", "best validation accuracy (fraction)", "Accuracy against order, per function")
        save(figure, "accuracy_vs_order", "Best validation accuracy at each order, one line per function")
    if "insertion" in done:
        figure, axis = plt.subplots(figsize=(6, 4))
        points = [p for p in ("none", "input", "conv1", "conv2", "dense", "all") if p in set(done["insertion"])]
        axis.boxplot([done.loc[done["insertion"] == p, report.ACCURACY] for p in points], tick_labels=points)
        _label(axis, "insertion point", "validation accuracy (fraction)", "Effect of the insertion point")
        save(figure, "insertion_effect", "Validation accuracy by insertion point")
    curves = _learning_curves(report.best_trials(trials, TOP_CURVES), trials, tracking_uri)
    if curves is not None:
        save(curves, "learning_curves", f"Validation accuracy per epoch of the top {TOP_CURVES} trials")
    if study is None:
        return made
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    axis = optuna.visualization.matplotlib.plot_optimization_history(study, target=target, target_name="validation accuracy")
    save(axis.figure, "optimization_history", "Optuna's optimisation history")
    if len(done) >= MIN_TRIALS_FOR_IMPORTANCE:
        try:
            axis = optuna.visualization.matplotlib.plot_param_importances(study, target=target, target_name="validation accuracy")
            save(axis.figure, "param_importances", "Parameter importances (fANOVA, over the completed trials)")
        except (ValueError, RuntimeError):
            pass  # too few trials share the same params for importances
    return made


def _accuracy_against_cost(done, trials, cost, unit):
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    expanded = done[done.get("insertion", "none") != "none"] if "insertion" in done else done
    for function, group in expanded.groupby("function") if "function" in expanded else [("all", expanded)]:
        axis.scatter(group[cost], group[report.ACCURACY], label=function, alpha=0.8)
    if "insertion" in done:
        baseline = done[done["insertion"] == "none"]
        axis.scatter(baseline[cost], baseline[report.ACCURACY], marker="X", s=80, color="black", label="baseline (none)")
    front = report.pareto_front(trials, cost)
    axis.step(front[cost], front[report.ACCURACY], where="post", color="red", linewidth=1.2, label="Pareto front")
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
    _label(axis, "epoch", "validation accuracy (fraction)", "Learning curves of the top trials")
    return figure


def _label(axis, xlabel, ylabel, title):
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)


def _format(table):
    return table.round(4).astype(object).where(table.notna(), "-")


def _markdown(blocks):
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + content)
        elif kind == "p":
            parts.append(content)
        elif kind == "table":
            parts.append(_format(content).to_markdown())
        elif kind == "img":
            parts.append(f"![{content[1]}]({content[0]})")
    return "\n\n".join(parts) + "\n"


def _html(blocks, title):
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(content)}</p>")
        elif kind == "table":
            parts.append(_format(content).to_html(border=0, classes="table"))
        elif kind == "img":
            parts.append(f'<figure><img src="{html.escape(content[0])}" alt="{html.escape(content[1])}">'
                         f"<figcaption>{html.escape(content[1])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
             "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:13px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
