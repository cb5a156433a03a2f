"""The report's files: index.md, index.html, trials.csv and PNG plots, laid out from `report`'s tables.

The page opens with the answer: the verdict from the confirmation runs and
a figure of accuracy difference against cost ratio. The search's own tables
follow, labelled as selected on validation.
"""

import html
import warnings
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from harness.outputs import check_output_folder, write_output_folder  # noqa: E402
from harness.params import EXPANSION_KEYS, describe  # noqa: E402
from harness.report.comparisons import TUNED, latency_timer, paired_comparisons  # noqa: E402
from harness.report.loading import load_trials  # noqa: E402
from harness.report.verdict import verdict  # noqa: E402
from harness.report import tables  # noqa: E402
from harness.study.storage import check_tracking_uri, open_storage  # noqa: E402

TOP_CURVES = 5
MIN_TRIALS_FOR_IMPORTANCE = 8
# Columns that describe rows rather than measure them: shown once above a table when every row shares the value.
DESCRIPTIVE = {"study", "stage", "dataset", "epochs", "state", "seeds", "trials", "count", "failed runs", "configuration", "baseline",
               *tables.CONFIG_COLUMNS}
SHORT_NAMES = {
    "val_accuracy": "val acc", "test_accuracy": "test acc", "total_params": "params", "latency_ms": "latency ms",
    "train_seconds": "train s", "learning_rate": "lr", "batch_size": "batch", "baseline accuracy": "baseline acc",
    "accuracy": "test acc", "delta (points)": "delta (points)", "flops ratio": "FLOPs x", "total_params ratio": "params x",
    "latency_ms ratio": "latency x", "train_seconds ratio": "train time x", "latency_ms ratio low": "latency x low",
    "latency_ms ratio high": "latency x high", "train_seconds ratio low": "train time x low",
    "train_seconds ratio high": "train time x high", "mean flops": "mean FLOPs",
    "mean total_params": "mean params", "failure_reason": "reason",
}


def write_report(studies, storage, tracking_uri=None, out=None, *, rope=tables.DEFAULT_ROPE):
    """Write the report of one or more studies to `out` (default reports/<names>); return its path.

    `rope` is the margin of practical equivalence, in points of accuracy, that the verdict judges by.

    `out` must be new, empty, or an earlier report, which is replaced whole;
    a folder holding anything else is refused before any work is done.
    """
    out = Path(out or Path("reports") / "-vs-".join(studies))
    check_output_folder(out)
    if tracking_uri is not None:  # a server that is down answers in seconds, not after minutes of retries
        check_tracking_uri(tracking_uri)
    frames = [load_trials(name, storage, tracking_uri) for name in studies]  # raises before writing anything

    def fill(folder):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            render(folder, studies, frames, storage, tracking_uri, rope)

    write_output_folder(out, fill)
    if tracking_uri is not None:
        for name in studies:
            _attach_to_parent_run(name, tracking_uri, out)
    return out


def _attach_to_parent_run(study_name, tracking_uri, folder):
    """Log the report under `report/` of the study's latest search run, so the MLflow UI shows the verdict too."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study_name)
    if experiment is None:
        return
    parents = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'search'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if parents:
        client.log_artifacts(parents[0].info.run_id, str(folder), artifact_path="report")


def render(folder, studies, frames, storage, tracking_uri, rope=tables.DEFAULT_ROPE):
    trials = pd.concat(frames, ignore_index=True)
    trials.to_csv(folder / "trials.csv", index=False)
    blocks = [("h1", "Does the Taylor expansion pay off? " + ", ".join(studies))]
    if len(studies) > 1:
        blocks += [("h2", "Studies side by side"), ("table", _comparison(frames, rope))]
    opened = open_storage(storage)
    for name, frame in zip(studies, frames):
        prefix = f"{name}_" if len(studies) > 1 else ""
        try:
            study = optuna.load_study(study_name=name, storage=opened)
        except KeyError:
            study = None  # searched by keras-tuner: known from its MLflow runs only
        blocks += _study_blocks(folder, prefix, name, frame, study, tracking_uri, rope)
    blocks += [("p", "All trials and runs, with their stage, params, states, failure reasons, costs and MLflow run "
                     "links: trials.csv.")]
    (folder / "index.md").write_text(_markdown(blocks))
    (folder / "index.html").write_text(_html(blocks, ", ".join(studies)))


def _comparison(frames, rope):
    rows = []
    for frame in frames:
        done = tables.completed(tables.search_stage(frame))
        baseline = done[done["insertion"] == "none"] if "insertion" in done else done.iloc[:0]
        confirmed = paired_comparisons(frame, rope=rope)
        rows.append({
            "study": frame["study"].iloc[0],
            **{state.lower(): n for state, n in tables.counts(tables.search_stage(frame)).items()},
            "best val accuracy (selected)": done[tables.ACCURACY].max(),
            "baseline val accuracy": baseline[tables.ACCURACY].max() if not baseline.empty else np.nan,
            "median flops": done["flops"].median() if "flops" in done else np.nan,
            "confirmed": len(confirmed),
            "paying off": int(confirmed["finding"].str.startswith("pays off").sum()) if not confirmed.empty else 0,
        })
    return pd.DataFrame(rows)


def _confirm_command(name, study):
    if study is None:
        return None
    space = Path(study.user_attrs.get("space", "search_spaces/quick.yaml"))
    try:
        space = space.resolve().relative_to(Path.cwd())
    except ValueError:
        pass  # outside the working folder: keep it as it is
    return f"harness search --space {space} --study {name} --confirm 3 --seeds 5"


def _study_blocks(folder, prefix, name, trials, study, tracking_uri, rope):
    attrs = study.user_attrs if study else {
        "dataset": trials["dataset"].iloc[0] if "dataset" in trials else "unknown",
        "epochs": trials["epochs"].max() if "epochs" in trials else "?",
    }
    # Latency ratios come from both networks timed side by side here, where the study says what data they take.
    shape = study.user_attrs.get("input_shape") if study else None
    latency = latency_timer(shape, study.user_attrs["num_classes"]) if shape else None
    comparisons = paired_comparisons(trials, rope=rope, latency=latency)
    blocks = [("h2", f"Study {name}"), ("h3", "Verdict")]
    blocks += [("p", line) for line in verdict(trials, _confirm_command(name, study), rope=rope,
                                                       comparisons=comparisons)]
    seeded = tables.seeded_stage(trials)
    if not comparisons.empty:
        seeds = sorted(int(s) for s in seeded["seed"].dropna().unique())
        blocks += [
            ("img", _answer_plot(folder, prefix, comparisons)),
            ("h3", "Confirmed configurations against their baselines"),
            ("p", f"Test accuracy, paired by seed (seeds {', '.join(map(str, seeds))}), against the matched baseline "
                  "(the configuration's hyperparameters, no expansion) and the tuned one (the baseline's own best) "
                  "where the search had one; differences in points with 95% t-based CIs; p-values from the paired "
                  "t-test and the paired TOST, Holm-adjusted over the comparisons; cost ratios against the same "
                  "baseline: latency from both networks timed interleaved by this report (median, lowest, highest), "
                  "train time as the median of per-seed wall-clock ratios (lowest, highest)."),
            ("table", comparisons.set_axis(range(1, len(comparisons) + 1)).rename_axis("#").reset_index()),
        ]
        summary = tables.config_summary(seeded)
        if not summary.empty:
            blocks += [("h3", "Every seeded configuration: test accuracy, mean and 95% CI"), ("table", summary)]
    searched = tables.search_stage(trials)
    if searched.empty or not (searched["state"] == "COMPLETE").any():
        return blocks + _failures(trials)
    tally = tables.counts(searched)
    blocks += [
        ("h2", f"Search stage of {name}: selected on validation, optimistic"),
        ("p", f"{len(searched)} trials: {tally['COMPLETE']} completed, {tally['FAIL']} failed, {tally['PRUNED']} pruned. "
              f"Data: {attrs.get('dataset', 'unknown')}; budget: {attrs.get('epochs', '?')} epochs per trial; "
              f"objectives: {', '.join(attrs.get('objectives', ['accuracy']))}. Accuracy is validation accuracy of one "
              "seed, the search's objective; the best of many such figures overstates what a configuration delivers."),
        ("h3", "Best trials"), ("table", tables.best_trials(searched)),
    ]
    deltas = tables.baseline_deltas(searched)
    if not deltas.empty:
        blocks += [("h3", "Against the search's baseline of the same width (validation, selected)"), ("table", deltas)]
    for cost in tables.COSTS:
        if cost in searched and searched[cost].notna().any():
            blocks += [("h3", f"Pareto front: accuracy against {tables.COSTS[cost]}"), ("table", tables.pareto_front(searched, cost))]
    for dimension in tables.DIMENSIONS:
        table = tables.by_dimension(searched, dimension)
        if not table.empty:
            blocks += [("h3", f"By {dimension}"), ("table", table)]
    for index in ("order", "insertion"):
        table = tables.pivot_best(searched, index)
        if not table.empty:
            blocks += [("h3", f"Best validation accuracy, {index} x function"), ("table", table)]
    blocks.append(("h3", "Plots of the search"))
    blocks += [("img", made) for made in _plots(folder, prefix, searched, study, tracking_uri)]
    return blocks + _failures(trials)


def _failures(trials):
    failures = trials[trials["state"] != "COMPLETE"]
    if failures.empty:
        return []
    columns = [c for c in ("stage", "trial", "state", "failure_reason") if c in failures]
    return [("h3", "Failed and pruned trials"), ("table", failures[columns])]


def _save(figure, folder, file, title):
    figure.tight_layout()
    figure.savefig(folder / file, dpi=72)
    plt.close(figure)
    return file, title


def _answer_plot(folder, prefix, comparisons):
    """Accuracy difference against FLOPs ratio per confirmed configuration, CI bars, the baseline at (1, 0)."""
    figure, axis = plt.subplots(figsize=(8, 5))
    ratio = comparisons["flops ratio"] if "flops ratio" in comparisons else pd.Series(1.0, index=comparisons.index)
    delta = comparisons["delta (points)"]
    errors = np.array([delta - comparisons["ci low"], comparisons["ci high"] - delta])
    colours = comparisons["finding"].str.split(",").str[0].map(
        {"pays off": "tab:green", "costs accuracy": "tab:red", "equivalent": "tab:blue"}).fillna("tab:grey")
    for finding, rows in comparisons.groupby("finding"):
        axis.errorbar(ratio[rows.index], delta[rows.index], yerr=errors[:, rows.index], fmt="o", capsize=4,
                      color=colours[rows.index[0]], label=finding)
    for index, row in comparisons.iterrows():
        # The row's number in the comparison table below: configuration names are too long for a plot.
        label = f"{index + 1}" + ("t" if row["baseline"] == TUNED else "")
        axis.annotate(label, (ratio[index], delta[index]), textcoords="offset points", xytext=(6, 4), fontsize=9)
    axis.scatter([1.0], [0.0], marker="X", s=90, color="black", label="baseline", zorder=3)
    axis.margins(x=0.3, y=0.15)  # room for the labels
    axis.axhline(0, color="black", linewidth=0.8)
    axis.axvline(1, color="black", linewidth=0.8, linestyle=":")
    _label(axis, "FLOPs per sample, ratio to the baseline", "test accuracy difference (points), 95% CI",
           "Does the expansion pay off? Confirmed configurations")
    return _save(figure, folder, f"{prefix}answer.png",
                 "The answer: test accuracy difference against FLOPs ratio, each configuration against its matched "
                 "baseline and the tuned one (t) over the same seeds, with 95% CIs; the numbers are the rows of the "
                 "table below")


def _plots(folder, prefix, trials, study, tracking_uri):
    made = []
    done = tables.completed(trials)
    for cost, unit in (("flops", "forward FLOPs per sample"), ("total_params", "parameters")):
        if cost in done and done[cost].notna().any():
            made.append(_save(_accuracy_against_cost(done, trials, cost, unit), folder, f"{prefix}accuracy_vs_{cost}.png",
                              f"Validation accuracy against {unit}, Pareto front drawn"))
    if {"order", "function"} <= set(done) and done["order"].notna().any():
        figure, axis = plt.subplots(figsize=(6, 4))
        for function, group in done.dropna(subset=["order"]).groupby("function"):
            best = group.groupby("order")[tables.ACCURACY].max()
            axis.plot(best.index, best.values, "-o", label=function)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        _label(axis, "series order p", "best validation accuracy (fraction)", "Accuracy against order, per function")
        made.append(_save(figure, folder, f"{prefix}accuracy_vs_order.png",
                          "Best validation accuracy at each order, one line per function"))
    if "insertion" in done:
        figure, axis = plt.subplots(figsize=(6, 4))
        points = [p for p in ("none", "input", "conv1", "conv2", "dense", "all") if p in set(done["insertion"])]
        groups = [done.loc[done["insertion"] == p, tables.ACCURACY] for p in points]
        axis.boxplot(groups, tick_labels=[f"{p}\nn={len(g)}" for p, g in zip(points, groups)])
        _label(axis, "insertion point (n = completed trials)", "validation accuracy (fraction)", "Effect of the insertion point")
        made.append(_save(figure, folder, f"{prefix}insertion_effect.png", "Validation accuracy by insertion point"))
    curves = _learning_curves(tables.best_trials(trials, TOP_CURVES), trials, tracking_uri)
    if curves is not None:
        made.append(_save(curves, folder, f"{prefix}learning_curves.png",
                          f"Validation accuracy per epoch of the top {TOP_CURVES} search trials"))
    if study is None:
        return made
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    axis = optuna.visualization.matplotlib.plot_optimization_history(study, target=target, target_name="validation accuracy")
    made.append(_save(axis.figure, folder, f"{prefix}optimization_history.png", "Optuna's optimisation history"))
    if len(done) >= MIN_TRIALS_FOR_IMPORTANCE:
        try:
            axis = optuna.visualization.matplotlib.plot_param_importances(study, target=target, target_name="validation accuracy")
            made.append(_save(axis.figure, folder, f"{prefix}param_importances.png",
                              "Parameter importances (fANOVA, over the completed trials)"))
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
        axis.scatter(baseline[cost], baseline[tables.ACCURACY], marker="X", s=80, color="black", label="baseline (none)")
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


def _display(table):
    """(table as shown, note): no index, integers as integers, FLOPs in M or G, 4 significant digits, a
    configuration in words rather than one column per expansion param, short headers, and descriptive columns
    that hold one value for every row moved into the note."""
    named = any(name is not None for name in table.index.names)  # group keys are columns; row numbers are dropped
    table = table.reset_index(drop=not named)
    table.columns = [str(c) for c in table.columns]
    expansion = [c for c in EXPANSION_KEYS if c in table]
    if "insertion" in table and expansion:
        described = [describe({k: tables.plain(v) for k, v in row.items() if pd.notna(v) and v != "-"})
                     for row in table[["insertion", *expansion]].to_dict("records")]
        table.insert(table.columns.get_loc("insertion"), "configuration", described)
        table = table.drop(columns=["insertion", *expansion])
    for low, high in (("ci low", "ci high"), ("ci_low", "ci_high")):
        if low in table and high in table:
            table.insert(table.columns.get_loc(low), "95% CI",
                         [f"{a:+.3g}\u00a0to\u00a0{b:+.3g}" if pd.notna(a) else "-" for a, b in zip(table[low], table[high])])
            table = table.drop(columns=[low, high])
    shared = {}
    if len(table) > 1:
        for column in [c for c in table.columns if c in DESCRIPTIVE]:
            if table[column].nunique(dropna=False) == 1:
                shared[column] = _cell(column, table.pop(column).iloc[0])
    for column in table.columns:
        table[column] = [_cell(column, value) for value in table[column]]
    table = table.rename(columns=lambda c: SHORT_NAMES.get(c, c))
    note = "Every row: " + ", ".join(f"{SHORT_NAMES.get(k, k)} {v}" for k, v in shared.items()) + "." if shared else ""
    return table, note


def _cell(column, value):
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        if "flops" in column.lower() and "ratio" not in column:
            return f"{value / 1e9:.3g} G" if value >= 1e9 else f"{value / 1e6:.3g} M"
        if float(value).is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def _markdown(blocks):
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + content)
        elif kind == "p":
            parts.append(content)
        elif kind == "table":
            table, note = _display(content)
            parts += ([note] if note else []) + [table.to_markdown(index=False)]
        elif kind == "img":
            parts.append(f"![{content[1]}]({quote(content[0])})")
    return "\n\n".join(parts) + "\n"


def _html(blocks, title):
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(content)}</p>")
        elif kind == "table":
            table, note = _display(content)
            if note:
                parts.append(f"<p class='note'>{html.escape(note)}</p>")
            parts.append(f"<div class='scroll'>{table.to_html(border=0, classes='table', index=False)}</div>")
        elif kind == "img":
            parts.append(f'<figure><img src="{html.escape(quote(content[0]))}" alt="{html.escape(content[1])}">'
                         f"<figcaption>{html.escape(content[1])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;line-height:1.45}"
             ".scroll{max-width:100%;overflow-x:auto}"
             "table{border-collapse:collapse;font-size:12px;margin:.3em 0}"
             "td,th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}"
             "th{background:#f4f4f4}.note{color:#555;font-size:13px;margin-bottom:0}"
             "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:13px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
