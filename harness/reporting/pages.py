"""A study's report written whole: the blocks of its page (verdict, answer, tables, plots) in order, as index.md,
index.html, trials.csv and PNGs in a folder the tool owns, and a copy under the study's MLflow run.

The page opens with the answer: a sentence or two from the confirmation runs, its small table and a figure of
accuracy difference against FLOPs ratio. The method, each comparison in words and the search's own tables
(labelled as selected on validation) follow; full tables go to CSV.
"""

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from harness.outputs import check_output_folder, write_output_folder
from harness.reporting import tables
from harness.reporting.comparisons import latency_timer, paired_comparisons
from harness.reporting.layout import html_page, markdown
from harness.reporting.loading import load_trials
from harness.reporting.plots import answer_plot, search_plots
from harness.reporting.layout import plural
from harness.reporting.findings import answer_table, matched_comparisons, tuned_table
from harness.reporting.verdict import comparison_sentences, methods, tuned_baseline_note, verdict
from harness.statistics import PAYS_OFF, PAYS_OFF_WITHIN_MARGIN
from harness.study.storage import check_tracking_uri, open_storage


def write_report(studies, storage, tracking_uri=None, out=None, *, rope=tables.DEFAULT_ROPE, provenance=None):
    """Write the report of one or more studies to `out` (default reports/<names>); return a `Report`: its folder and
    its answer in sentences, as the page opens with them.

    `rope` is the margin of practical equivalence, in points of accuracy, that the verdict judges by;
    `provenance`, a line under the title saying how the runs were made.

    `out` must be new, empty, or an earlier report, which is replaced whole;
    a folder holding anything else is refused before any work is done.

    >>> import tempfile
    >>> home = tempfile.mkdtemp()
    >>> storage = f"sqlite:///{home}/optuna.db"
    >>> study = optuna.create_study(study_name="hand", storage=storage, direction="maximize")
    >>> where = optuna.distributions.CategoricalDistribution(["none", "dense"])
    >>> for insertion, accuracy in (("none", 0.91), ("dense", 0.93)):
    ...     study.add_trial(optuna.trial.create_trial(params={"insertion": insertion},
    ...                                               distributions={"insertion": where}, value=accuracy))
    >>> written = write_report(["hand"], storage, out=f"{home}/report")
    >>> written.answer[0][:52]
    'No answer yet: the best of 2 completed search trials'
    >>> "selected on validation, so optimistic" in (written.folder / "index.md").read_text()
    True
    """
    out = Path(out or Path("reports") / "-vs-".join(studies))
    check_output_folder(out)
    if tracking_uri is not None:  # a server that is down answers in seconds, not after minutes of retries
        check_tracking_uri(tracking_uri)
    frames = [load_trials(name, storage, tracking_uri) for name in studies]  # raises before writing anything

    answer = []

    def fill(folder):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            answer.extend(render(folder, studies, frames, storage, tracking_uri, rope, provenance))

    write_output_folder(out, fill)
    if tracking_uri is not None:
        for name in studies:
            _attach_to_parent_run(name, tracking_uri, out)
    return Report(out, answer)


@dataclasses.dataclass(frozen=True)
class Report:
    """A written report: its folder, and its answer in the sentences its page opens with."""

    folder: Path
    answer: list


def _attach_to_parent_run(study_name, tracking_uri, folder):
    """Log the report under `report/` of the study's latest search run, so the MLflow UI shows the verdict too."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study_name)
    if experiment is None:
        return
    parents = client.search_runs(
        [experiment.experiment_id],
        "tags.`harness.role` = 'search'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if parents:
        client.log_artifacts(parents[0].info.run_id, str(folder), artifact_path="report")


def render(folder, studies, frames, storage, tracking_uri, rope=tables.DEFAULT_ROPE, provenance=None):
    """Write the report's files into `folder`; return its answer in sentences."""
    trials = pd.concat(frames, ignore_index=True)
    trials.to_csv(folder / "trials.csv", index=False)
    blocks = [("h1", "Does the Taylor expansion pay off? " + ", ".join(studies))]
    blocks += [("note", provenance)] if provenance else []
    opened = open_storage(storage)
    found = [_optuna_study(name, opened) for name in studies]
    # Once a study: the side-by-side table and the study's own section read the same comparisons.
    comparisons = [paired_comparisons(frame, rope=rope, latency=_latency(study)) for frame, study in zip(frames, found)]
    if len(studies) > 1:
        blocks += [("h2", "Studies side by side"), ("table", _comparison(frames, comparisons))]
    for name, frame, study, compared in zip(studies, frames, found, comparisons):
        prefix = f"{name}_" if len(studies) > 1 else ""
        blocks += _study_blocks(folder, prefix, name, frame, study, compared, tracking_uri, rope, len(studies) > 1)
    blocks += [
        (
            "p",
            "All trials and runs, with their stage, params, states, failure reasons, costs and MLflow run "
            "links: [trials.csv](trials.csv).",
        )
    ]
    (folder / "index.md").write_text(markdown(blocks))
    (folder / "index.html").write_text(html_page(blocks, ", ".join(studies)))
    return [line for kind, line in blocks if kind == "answer"]


def _optuna_study(name, storage):
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None  # searched by keras-tuner: known from its MLflow runs only


def _latency(study):
    """Latency ratios come from both networks timed side by side here, where the study says what data they take."""
    shape = study.user_attrs.get("input_shape") if study else None
    return latency_timer(shape, study.user_attrs["num_classes"]) if shape else None


def _comparison(frames, comparisons):
    rows = []
    for frame, confirmed in zip(frames, comparisons):
        done = tables.completed(tables.search_stage(frame))
        baseline = done[done["insertion"] == "none"] if "insertion" in done else done.iloc[:0]
        rows.append(
            {
                "study": frame["study"].iloc[0],
                **{state.lower(): n for state, n in tables.counts(tables.search_stage(frame)).items()},
                "best val accuracy (selected)": f"{done[tables.ACCURACY].max():.1%}",
                "baseline's best val accuracy": f"{baseline[tables.ACCURACY].max():.1%}" if not baseline.empty else "-",
                "median flops": done["flops"].median() if "flops" in done else np.nan,
                "configurations confirmed": confirmed["configuration"].nunique() if not confirmed.empty else 0,
                "better than matched": int(
                    matched_comparisons(confirmed)["finding"].isin([PAYS_OFF, PAYS_OFF_WITHIN_MARGIN]).sum()
                )
                if not confirmed.empty
                else 0,
            }
        )
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


def _study_blocks(folder, prefix, name, trials, study, comparisons, tracking_uri, rope, heading):
    """A study's blocks: the answer first (sentences, its table, its figure), then the method, each comparison in
    words, and the search's tables and plots, labelled as selected on validation. `heading` names the study (a
    page of several)."""
    attrs = (
        study.user_attrs
        if study
        else {
            "dataset": trials["dataset"].iloc[0] if "dataset" in trials else "unknown",
            "epochs": trials["epochs"].max() if "epochs" in trials else "?",
        }
    )
    blocks = [("h2", f"Study {name}")] if heading else []
    answer = verdict(trials, confirm_command=_confirm_command(name, study), rope=rope, comparisons=comparisons)
    blocks += [("answer", line) for line in answer]
    if not comparisons.empty:
        comparisons.to_csv(folder / f"{prefix}comparisons.csv", index=False)
        blocks += [("table", answer_table(comparisons))]
        tuned = tuned_table(comparisons)
        if not tuned.empty:
            blocks += [("h3", "Against the tuned baseline"), ("p", tuned_baseline_note(comparisons)), ("table", tuned)]
        blocks += [
            (
                "p",
                f"Every number of every comparison (p-values, power, costs with their ranges): "
                f"[{prefix}comparisons.csv]({prefix}comparisons.csv); every trial and run: [trials.csv](trials.csv).",
            ),
            ("img", answer_plot(folder, prefix, matched_comparisons(comparisons))),
            ("h2", "Method"),
            ("p", methods(trials, comparisons, rope)),
            ("h3", "Each comparison in words"),
            *(("p", sentence) for sentence in comparison_sentences(comparisons, rope)),
        ]
        summary = tables.config_summary(tables.seeded_stage(trials))
        if not summary.empty:
            blocks += [("h3", "Every seeded configuration: test accuracy, mean and 95% CI"), ("table", summary)]
    searched = tables.search_stage(trials)
    if searched.empty or not (searched["state"] == "COMPLETE").any():
        return blocks + _failures(trials)
    tally = tables.counts(searched)
    blocks += [
        ("h2", f"Search stage of {name}: selected on validation, optimistic"),
        (
            "p",
            f"{plural(len(searched), 'trial')}: {tally['COMPLETE']} completed, {tally['FAIL']} failed, "
            f"{tally['PRUNED']} pruned. Data: {attrs.get('dataset', 'unknown')}; budget: "
            f"{plural(attrs.get('epochs', 0), 'epoch')} per trial; objectives: "
            f"{', '.join(attrs.get('objectives', ['accuracy']))}. Every accuracy here is the validation accuracy "
            "of one seed, the search's objective; the best of many such figures overstates what a configuration "
            "delivers, and test accuracy is left to the confirmed, held-out stage above.",
        ),
        ("h3", "Best trials (by validation accuracy)"),
        ("table", tables.best_trials(searched)),
    ]
    deltas = tables.baseline_deltas(searched)
    if not deltas.empty:
        blocks += [("h3", "Against the search's baseline of the same width (validation, selected)"), ("table", deltas)]
    for cost in tables.COSTS:
        if cost in searched and searched[cost].notna().any():
            blocks += [
                ("h3", f"Pareto front: accuracy against {tables.COSTS[cost]}"),
                ("table", tables.pareto_front(searched, cost)),
            ]
    for dimension in tables.DIMENSIONS:
        table = tables.by_dimension(searched, dimension)
        if not table.empty:
            blocks += [("h3", f"By {dimension}"), ("table", table)]
    for index in ("order", "insertion"):
        table = tables.pivot_best(searched, index)
        if not table.empty:
            shown = table.map(lambda v: f"{v:.1%}" if pd.notna(v) else "-")  # accuracies in per cent
            blocks += [("h3", f"Best validation accuracy, {index} x function"), ("table", shown)]
    blocks.append(("h3", "Plots of the search"))
    blocks += [("img", made) for made in search_plots(folder, prefix, searched, study, tracking_uri)]
    return blocks + _failures(trials)


def _failures(trials):
    untrained = _untrained_runs(trials)
    failures = trials[trials["state"] != "COMPLETE"]
    if failures.empty:
        return untrained
    columns = [c for c in ("stage", "trial", "state", "failure_reason") if c in failures]
    grouped = tables.divergences(trials)
    diverged = [] if grouped.empty else [("h3", "Divergences by configuration and recipe"), ("table", grouped)]
    return untrained + diverged + [("h3", "Failed and pruned trials"), ("table", failures[columns])]


def _untrained_runs(trials):
    """The runs that completed near chance, which no finding rests on."""
    if "untrained" not in trials or not trials["untrained"].astype(bool).any():
        return []
    flagged = trials[trials["untrained"].astype(bool)]
    columns = [c for c in ("stage", "trial", "insertion", "seed", tables.ACCURACY, "test_accuracy") if c in flagged]
    return [
        ("h3", "Runs that did not train"),
        (
            "p",
            f"{plural(len(flagged), 'run')} ended less than a tenth of the way from chance to 1 (judged on "
            "validation in the search, on test in the seeded stages): no finding rests on them.",
        ),
        ("table", flagged[columns]),
    ]
