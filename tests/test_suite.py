"""`harness suite`: configurations across datasets and backbones, one table, ranks and a Friedman test."""

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from scipy import stats

from harness import reporting as report
from harness.reporting.findings import finding_words
from harness.cli import main
from harness.study.suite import load_suite

SUITE = {
    "name": "small",
    "training": {"epochs": 1},
    "seeds": 2,
    "params": {"width": 0.25},
    "configurations": [
        {"insertion": "all", "function": "gelu", "order": 2, "conditioning": "tanh"},
        {"insertion": "last", "function": "softplus", "order": 2, "conditioning": "tanh"},
    ],
    "datasets": [{"name": "digits", "train_size": 300, "val_size": 100, "test_size": 100}],
    "backbones": ["seed_cnn", "tests.user_models:mixed_relus"],
}


def write_suite(tmp_path, suite):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return str(path)


def test_a_suite_reports_one_table_with_ranks_and_a_friedman_test(tmp_path):
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    command = [
        "suite",
        write_suite(tmp_path, SUITE),
        "--storage",
        storage,
        "--tracking-uri",
        tracking,
        "--out",
        str(out),
    ]
    assert main(command) == 0
    suite = load_suite(write_suite(tmp_path, SUITE))
    assert suite.studies == ["small-digits-seed_cnn", "small-digits-mixed_relus"]

    differences = pd.read_csv(out / "differences.csv", index_col="configuration")
    assert list(differences.columns) == ["digits x seed_cnn", "digits x mixed_relus"]
    assert list(differences.index) == ["all gelu p2 tanh", "last softplus p2 tanh"]
    for study, column in zip(suite.studies, differences.columns):  # each cell is its study's own comparison
        comparisons = report.paired_comparisons(report.load_trials(study, storage, tracking))
        row = comparisons.set_index("baseline").loc["matched"].set_index("configuration").iloc[0]
        cell = differences.loc[row.name.removeprefix("mixed_relus ")]
        assert cell[column].startswith(f"{row['delta (points)']:+.1f}") and cell[column].endswith(finding_words(row))

    accuracy = pd.read_csv(out / "accuracy.csv", index_col=0)
    assert set(accuracy.columns) == {"baseline", "all gelu p2 tanh", "last softplus p2 tanh"}
    statistic, p_value = stats.friedmanchisquare(*(accuracy[c] for c in accuracy))
    page = (out / "index.md").read_text()
    if np.isfinite(p_value):
        assert f"chi-square {statistic:.2f}, p = {p_value:.3g}" in page
    ranks = accuracy.rank(axis=1, ascending=False).mean()
    assert all(f"{name} {rank:.2f}" in page for name, rank in ranks.items())
    assert (out / "critical_difference.png").stat().st_size > 0

    assert main(command) == 0  # resumed: every cell already holds its runs
    assert all(len(optuna.load_study(study_name=s, storage=storage).trials) == 6 for s in suite.studies)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"backbones": []}, "backbones: List should have at least 1 item"),
        ({"seeds": "many"}, "seeds"),
        ({"configurations": [{"insertion": "dense", "function": "nope"}]}, "function: 'nope' is not one of"),
        ({"datasets": [{"name": "digits"}, {"name": "digits", "train_size": 100}]}, "two cells would share the study"),
        ({"colour": "red"}, "colour: unknown key; expected one of name, training, seeds, max_seeds, rope, params"),
        ({"dataset": []}, "dataset: unknown key (did you mean 'datasets'?)"),
    ],
)
def test_a_bad_suite_is_one_line_and_exit_2(tmp_path, capsys, change, message):
    assert main(["suite", write_suite(tmp_path, {**SUITE, **change})]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error
