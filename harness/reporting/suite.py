"""A suite's report: one table across datasets and backbones, average ranks, a Friedman test and a
critical-difference diagram.

Each cell's comparison is its benchmark study's own verdict (`paired_comparisons`, against the matched
baseline, Holm-adjusted within the cell). The ranks follow Demšar (2006): within each cell the configurations and
the baseline are ranked by mean test accuracy, the ranks averaged over cells, scipy's Friedman test asks whether
they differ at all, and scikit-posthocs' Nemenyi test draws which differ in the diagram.
"""

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import scikit_posthocs  # noqa: E402
from scipy import stats  # noqa: E402

from harness.outputs import write_output_folder  # noqa: E402
from harness.params import describe  # noqa: E402
from harness.reporting.comparisons import paired_comparisons  # noqa: E402
from harness.reporting.pages import Report  # noqa: E402
from harness.reporting.loading import load_trials  # noqa: E402
from harness.reporting.layout import plural  # noqa: E402
from harness.reporting.findings import difference_words, finding_words, tally  # noqa: E402
from harness.reporting.verdict import variance_sources  # noqa: E402
from harness.reporting import tables  # noqa: E402
from harness.study.baselines import default_baseline  # noqa: E402
from harness.reporting.layout import html_page, markdown  # noqa: E402

BASELINE = "baseline"


def _label(params):
    """A configuration's row label: its description without the backbone, which the column names."""
    return describe({k: v for k, v in params.items() if k != "backbone"})


def cell_frames(suite, storage, tracking_uri=None):
    """{study: its trials} for every cell of `suite`; ValueError naming the first cell not run yet."""
    frames = {}
    for study in suite.studies:
        try:
            frames[study] = load_trials(study, storage, tracking_uri)
        except ValueError as error:
            raise ValueError(
                f"suite {suite.name}: cell {study} has no results yet ({error}); run harness suite first"
            ) from None
    return frames


def difference_table(suite, frames, rope=tables.DEFAULT_ROPE):
    """(differences, findings). Differences: a row per configuration, a column per dataset x backbone: the
    difference from the matched baseline in
    points, its 95% CI and the cell's finding in words (`findings.finding_words`: "undecided after Holm" where the
    interval excludes 0 and the Holm-adjusted test does not agree, "not trained: no answer" on runs near chance). Findings: the same cells' findings in words alone, empty where
    no pair completed."""
    columns, findings = {}, {}
    for study, (dataset, backbone, space) in suite.cells.items():
        comparisons = paired_comparisons(frames[study], rope=rope)
        by_name = comparisons.set_index("configuration") if not comparisons.empty else pd.DataFrame()
        cells, words = {}, {}
        for configuration in space.configurations:
            name = describe(space.complete(configuration))
            if name not in by_name.index:
                cells[_label(configuration)] = "no completed pair"
                continue
            row = by_name.loc[name]
            words[_label(configuration)] = finding_words(row)
            cells[_label(configuration)] = f"{difference_words(row)} {words[_label(configuration)]}"
        columns[f"{dataset} x {backbone}"], findings[f"{dataset} x {backbone}"] = cells, words
    table = pd.DataFrame(columns).rename_axis("configuration")
    return table, pd.DataFrame(findings, columns=table.columns).reindex(table.index)


def accuracy_matrix(suite, frames):
    """Mean test accuracy over the tested seeds: a row per cell, a column per configuration and the baseline."""
    rows = {}
    for study, (dataset, backbone, space) in suite.cells.items():
        seeded = tables.completed(tables.seeded_stage(frames[study]))
        named = {describe(space.complete(c)): _label(c) for c in space.configurations}
        named[describe(default_baseline(space))] = BASELINE
        means = {}
        for _, run in seeded.iterrows():
            params = {k: tables.plain(run[k]) for k in tables.CONFIGURATION_KEYS if k in run and pd.notna(run[k])}
            label = named.get(describe(params))
            if label is not None:
                means.setdefault(label, []).append(run["test_accuracy"])
        rows[f"{dataset} x {backbone}"] = {label: sum(v) / len(v) for label, v in means.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def ranks(matrix):
    """(average ranks, 1 the best, over the cells holding every column; the Friedman test's statistic and p-value
    or NaNs where it cannot run; the Nemenyi p-values between columns or None; a note on what was left out)."""
    complete = matrix.dropna()
    note = (
        f"{plural(len(matrix) - len(complete), 'cell')} without every configuration left out. "
        if len(complete) < len(matrix)
        else ""
    )
    average = complete.rank(axis=1, ascending=False).mean().sort_values()
    if complete.shape[1] < 3 or len(complete) < 2:
        return (
            average,
            (float("nan"), float("nan")),
            None,
            note + "The Friedman test needs 3 or more columns and 2 or more cells.",
        )
    statistic, p_value = stats.friedmanchisquare(*(complete[c] for c in complete))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nemenyi = scikit_posthocs.posthoc_nemenyi_friedman(complete.to_numpy())
    nemenyi.index = nemenyi.columns = complete.columns
    return average, (float(statistic), float(p_value)), nemenyi, note


def write_suite_report(suite, storage, tracking_uri=None, out=None, *, rope=tables.DEFAULT_ROPE, provenance=None):
    """Write the suite's report (index.md, index.html, differences.csv, accuracy.csv, critical_difference.png) to
    `out` (default reports/<suite>), `provenance` under its title; return a `Report`: its folder and answer."""
    from pathlib import Path

    out = Path(out or Path("reports") / suite.name)
    frames = cell_frames(suite, storage, tracking_uri)
    differences, findings = difference_table(suite, frames, rope)
    matrix = accuracy_matrix(suite, frames)
    average, (statistic, p_value), nemenyi, note = ranks(matrix)

    def fill(folder):
        differences.to_csv(folder / "differences.csv")
        matrix.to_csv(folder / "accuracy.csv")
        blocks = [
            ("h1", f"Suite {suite.name}: does the expansion pay off across datasets and backbones?"),
            *([("note", provenance)] if provenance else []),
            ("answer", suite_answer(findings, average, p_value)),
            ("p", _intro(suite, frames, rope)),
            ("h2", "Against the matched baseline, cell by cell"),
            (
                "p",
                "Each cell: the difference in test accuracy (points) from the plain network trained alike with "
                "the same seeds, with its 95% CI (not adjusted), and the finding once Holm-adjusted within the "
                "cell: better, worse, equivalent, undecided, or undecided after Holm where the interval excludes 0 "
                "but the adjusted test does not agree. Full table: [differences.csv](differences.csv).",
            ),
            ("table", differences.reset_index()),
            ("h2", "Average ranks"),
            ("p", _ranks_sentence(average, statistic, p_value, note)),
            ("table", average.rename("average rank").rename_axis("configuration").reset_index()),
        ]
        if nemenyi is not None:
            blocks.append(("img", _diagram(folder, average, nemenyi)))
        blocks += [
            ("h2", "Mean test accuracy by cell"),
            ("table", matrix.map(lambda v: f"{v:.1%}" if pd.notna(v) else "-").rename_axis("cell").reset_index()),
            (
                "p",
                "Each cell's study has its own report: "
                + ", ".join(f"`harness report --study {s}`" for s in suite.studies)
                + ".",
            ),
        ]
        (folder / "index.md").write_text(markdown(blocks))
        (folder / "index.html").write_text(html_page(blocks, f"suite {suite.name}"))

    return Report(write_output_folder(out, fill), [suite_answer(findings, average, p_value)])


def suite_answer(findings, average, p_value):
    """The suite's answer in a sentence: how the cells' findings (`difference_table`'s, in words) tally, and which
    network ranks best."""
    words = findings.stack().dropna()
    text = (
        f"Against the matched baseline, of {plural(len(words), 'comparison')} ({findings.shape[0]} "
        f"configurations in {plural(findings.shape[1], 'cell')}): {tally(words)}."
    )
    if len(average):
        text += f" Best average rank: {average.index[0]} ({average.iloc[0]:.2f})"
        text += (
            f"; the Friedman test finds {'that the ranks differ' if p_value < 0.05 else 'no evidence that the ranks differ'} (p = {p_value:.2g})."
            if pd.notna(p_value)
            else "."
        )
    return text


def _intro(suite, frames, rope):
    seeded = pd.concat([tables.seeded_stage(f) for f in frames.values()], ignore_index=True)
    pilot = any((f["stage"] == "pilot").any() for f in frames.values())
    seeds = (
        f"seeds sized per cell by a pilot of other seeds, not tested (--seeds auto, at most {suite.seeds.max_seeds})"
        if pilot
        else f"{seeded['seed'].nunique()} seeds each"
    )
    return (
        f"{len(suite.cells)} cells (datasets x backbones), {len(seeded)} seeded runs judged on each cell's test set, "
        f"{seeds}. Differences within \u00b1{rope:g} {plural(rope, 'point', number=False)} count as practically none. "
        + variance_sources(seeded)
    )


def _ranks_sentence(average, statistic, p_value, note):
    text = (
        f"{note}Ranked by mean test accuracy within each cell (1 is the best), then averaged: "
        + ", ".join(f"{name} {rank:.2f}" for name, rank in average.items())
        + ". "
    )
    if pd.notna(p_value):
        text += (
            f"Friedman test (scipy) over the cells: chi-square {statistic:.2f}, p = {p_value:.3g}"
            + (
                ": the ranks differ more than chance would make them."
                if p_value < 0.05
                else ": no evidence that the ranks differ at this number of cells."
            )
            + " The diagram joins configurations that the Nemenyi test (scikit-posthocs) does not tell apart at 0.05."
        )
    return text


def _diagram(folder, average, nemenyi):
    figure, axis = plt.subplots(figsize=(8, 2.8))
    scikit_posthocs.critical_difference_diagram(average, nemenyi, ax=axis)
    axis.set_title("Average rank over the cells (1 is the best); a bar joins those not told apart")
    figure.tight_layout()
    figure.savefig(folder / "critical_difference.png", dpi=72)
    plt.close(figure)
    return "critical_difference.png", "Critical-difference diagram: average ranks, Nemenyi test at 0.05"
