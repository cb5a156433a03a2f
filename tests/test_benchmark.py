import contextlib

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from harness import reporting as report
from harness.cli import main
from tests.test_search import TINY, stores, write_space


def test_two_configurations_with_two_seeds(tmp_path):
    space = {
        **TINY,
        "params": {"width": 0.25, "batch_size": 32},
        "configurations": [{"insertion": "dense", "function": "tanh", "order": 3, "conditioning": "tanh"}],
    }
    storage, tracking = stores(tmp_path)
    args = ["--storage", storage, "--tracking-uri", tracking]
    assert (
        main(["benchmark", "--space", str(write_space(tmp_path, space)), "--seeds", "2", "--study", "bench", *args])
        == 0
    )

    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("bench").experiment_id], "tags.`harness.role` = 'trial'")
    assert len(runs) == 4
    assert sorted((r.data.params["insertion"], r.data.params["seed"]) for r in runs) == [
        ("dense", "0"),
        ("dense", "1"),
        ("none", "0"),
        ("none", "1"),
    ]

    out = tmp_path / "report"
    assert main(["report", "--study", "bench", *args, "--out", str(out)]) == 0
    page = (out / "index.md").read_text()
    assert "95% CI" in page and "matched baseline" in page

    table = pd.read_csv(out / "trials.csv").sort_values("seed")
    dense = table.loc[table["insertion"] == "dense", "test_accuracy"].to_numpy()
    baseline = table.loc[table["insertion"] == "none", "test_accuracy"].to_numpy()
    trials = report.load_trials("bench", storage, tracking)
    summary = report.config_summary(trials).set_index("insertion")
    low, high = stats.t.interval(0.95, 1, loc=dense.mean(), scale=stats.sem(dense))
    assert summary.loc["dense", "mean"] == pytest.approx(dense.mean())
    if np.isfinite(low):
        assert (summary.loc["dense", "ci_low"], summary.loc["dense", "ci_high"]) == pytest.approx((low, high))
    comparison = report.paired_comparisons(trials).iloc[0]
    assert comparison["seeds"] == 2
    assert comparison["delta (points)"] == pytest.approx((dense - baseline).mean() * 100)
    if np.ptp(dense - baseline) > 0:
        paired = stats.ttest_rel(dense, baseline)
        assert comparison["p-value"] == pytest.approx(paired.pvalue)
        assert comparison["ci low"] == pytest.approx(paired.confidence_interval().low * 100)

    # Running it again resumes: nothing is trained twice.
    assert (
        main(["benchmark", "--space", str(write_space(tmp_path, space)), "--seeds", "2", "--study", "bench", *args])
        == 0
    )
    assert len(optuna.load_study(study_name="bench", storage=storage).trials) == 4


def test_same_seed_same_result(digits):
    from harness.training.trial import run_trial

    params = {
        "insertion": "dense",
        "function": "softplus",
        "order": 3,
        "mode": "weighted",
        "per_unit": True,
        "coefficients": "trainable",
        "seed": 3,
        "width": 0.5,
    }
    first, second = (run_trial(params, digits, epochs=2) for _ in range(2))
    assert abs(first.test_accuracy - second.test_accuracy) <= 0.005
    assert first.history["loss"] == second.history["loss"]


def test_an_oversized_grid_is_refused(tmp_path, capsys):
    space = {
        **TINY,
        "params": {
            **TINY["params"],
            "order": [1, 2, 3, 4],
            "function": ["softplus", "tanh", "exp"],
            "batch_size": [16, 32, 64],
            "width": [0.25, 0.5, 1.0],
            "mode": ["series", "weighted", "expand"],
        },
    }
    del space["params"]["learning_rate"]
    storage, tracking = stores(tmp_path)
    code = main(
        ["benchmark", "--space", str(write_space(tmp_path, space)), "--storage", storage, "--tracking-uri", tracking]
    )
    assert code == 2 and "list them under `configurations:`" in capsys.readouterr().err


def test_mixed_precision_is_logged_as_what_trained(tmp_path):
    import keras

    space = {**TINY, "params": {"width": 0.25}, "configurations": [{"insertion": "dense", "conditioning": "tanh"}]}
    storage, tracking = stores(tmp_path)
    try:
        code = main(
            [
                "benchmark",
                "--space",
                str(write_space(tmp_path, space)),
                "--seeds",
                "1",
                "--study",
                "mixed",
                "--mixed-precision",
                "--storage",
                storage,
                "--tracking-uri",
                tracking,
            ]
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert code == 0
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("mixed").experiment_id], "tags.`harness.role` = 'trial'")
    assert {r.data.params["precision"] for r in runs} == {"mixed_float16"}


def test_a_benchmark_whose_expanded_runs_never_complete_still_reports(tmp_path):
    # `all` with `expand` cannot be built: its runs end PRUNED, and only the baseline completes.
    space = {**TINY, "params": {"width": 0.25}, "configurations": [{"insertion": "all", "mode": "expand"}]}
    storage, tracking = stores(tmp_path)
    args = ["--storage", storage, "--tracking-uri", tracking]
    assert (
        main(["benchmark", "--space", str(write_space(tmp_path, space)), "--seeds", "1", "--study", "none-left", *args])
        == 0
    )
    out = tmp_path / "report"
    assert main(["report", "--study", "none-left", *args, "--out", str(out)]) == 0
    answer = (out / "index.md").read_text().split("\n\n")[1]  # the paragraph under the title
    assert "No answer: no expanded configuration completed (1 seeded run, none complete)" in answer
    assert "invalid combination" in answer


def test_seeds_sized_by_a_pilot_whose_runs_are_not_tested_with_the_split_redrawn(tmp_path):
    space = {
        **TINY,
        "params": {"width": 0.25, "batch_size": 32},
        "configurations": [{"insertion": "dense", "function": "tanh", "order": 3, "conditioning": "tanh"}],
    }
    storage, tracking = stores(tmp_path)
    args = ["--storage", storage, "--tracking-uri", tracking]
    command = [
        "benchmark",
        "--space",
        str(write_space(tmp_path, space)),
        "--study",
        "auto",
        "--seeds",
        "auto",
        "--max-seeds",
        "4",
        "--vary-split",
        *args,
    ]
    assert main(command) == 0
    study = optuna.load_study(study_name="auto", storage=storage)
    pilot = [t for t in study.trials if t.user_attrs.get("pilot")]
    tested = [t for t in study.trials if not t.user_attrs.get("pilot")]
    assert sorted({t.user_attrs["seed"] for t in pilot}) == [0, 1, 2] == study.user_attrs["pilot_seeds"]
    sized = study.user_attrs["seeds"]  # fresh seeds after the pilot's, between the floor and the cap
    assert sized[0] == 3 and 3 <= len(sized) <= 4 and sorted({t.user_attrs["seed"] for t in tested}) == sized
    assert len(tested) == 2 * len(sized) and all(t.user_attrs.get("vary_split") for t in study.trials)

    trials = report.load_trials("auto", storage, tracking)
    comparison = report.paired_comparisons(trials).iloc[0]
    assert comparison["seeds"] == len(sized)  # the pilot's runs are not among the pairs
    intro = report.methods(trials, report.paired_comparisons(trials), 1.0)
    assert "sized by a pilot of 3 other seeds" in intro and "the train/validation split (--vary-split)" in intro
    assert main(command) == 0  # resumed: the same pilot sizes it the same, and nothing trains twice
    assert len(optuna.load_study(study_name="auto", storage=storage).trials) == len(study.trials)


def test_bad_seed_options_are_one_line_each(tmp_path, capsys):
    space = str(write_space(tmp_path, {**TINY, "configurations": [{"insertion": "dense"}]}))
    for options, message in (
        (["--seeds", "some"], "expected a number of seeds or auto, got 'some'"),
        (["--seeds", "auto", "--max-seeds", "2"], "--max-seeds must be at least 3, got 2"),
        (["--seeds", "auto", "--rope", "-1"], "--rope must be a positive number of points, got -1"),
    ):
        with pytest.raises(SystemExit) if options[1] == "some" else contextlib.nullcontext():
            assert main(["benchmark", "--space", space, *options]) == 2
        assert message in capsys.readouterr().err
