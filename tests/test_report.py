import itertools

import numpy as np
import optuna
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from harness import reporting as report
from harness.cli import main
from tests.conftest import unavailable

DISTRIBUTIONS = {
    "insertion": optuna.distributions.CategoricalDistribution(["none", "input", "dense"]),
    "function": optuna.distributions.CategoricalDistribution(["softplus", "exp"]),
    "order": optuna.distributions.IntDistribution(1, 6),
}


def hand_made_study(storage, name="hand"):
    """Known values, no training: a grid of accuracies and costs, plus failed and pruned trials."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    rng = np.random.default_rng(0)
    rows = []
    for insertion, function, order in itertools.product(["input", "dense"], ["softplus", "exp"], [1, 3, 5]):
        rows.append(
            (
                {"insertion": insertion, "function": function, "order": order},
                rng.uniform(0.5, 0.95),
                rng.integers(10**6, 10**7),
            )
        )
    rows += [({"insertion": "none"}, 0.8, 10**6), ({"insertion": "none"}, 0.84, 10**6)]
    for params, accuracy, flops in rows:
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={k: DISTRIBUTIONS[k] for k in params},
                value=accuracy,
                user_attrs={"flops": int(flops), "total_params": int(flops // 10), "test_accuracy": accuracy - 0.01},
            )
        )
    # Failed and pruned trials with outstanding numbers must stay off the front.
    study.add_trial(
        optuna.trial.create_trial(
            params={"insertion": "dense", "function": "exp", "order": 6},
            distributions={k: DISTRIBUTIONS[k] for k in ("insertion", "function", "order")},
            state=optuna.trial.TrialState.FAIL,
            user_attrs={"failure_reason": "diverged: loss became nan", "flops": 1},
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params={"insertion": "input", "function": "softplus", "order": 2},
            distributions={k: DISTRIBUTIONS[k] for k in ("insertion", "function", "order")},
            state=optuna.trial.TrialState.PRUNED,
            value=0.99,
            user_attrs={"flops": 2},
        )
    )
    return study


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def sentences_of(trials, rope=1.0):
    """The report's sentence per comparison."""
    return report.comparison_sentences(report.paired_comparisons(trials, rope=rope), rope)


def brute_force_front(points):
    """Indices of (accuracy, cost) points no other point beats: the definition, loop by loop."""
    front = []
    for i, (accuracy, cost) in enumerate(points):
        beaten = any(
            a >= accuracy and c <= cost and (a > accuracy or c < cost) for j, (a, c) in enumerate(points) if j != i
        )
        if not beaten:
            front.append(i)
    return front


def test_pareto_front_matches_brute_force(storage):
    hand_made_study(storage)
    trials = report.load_trials("hand", storage)
    for cost in ("flops", "total_params"):
        done = trials[trials["state"] == "COMPLETE"].reset_index(drop=True)
        expected = set(done.loc[brute_force_front(list(zip(done["val_accuracy"], done[cost]))), "trial"])
        front = report.pareto_front(trials, cost)
        assert set(front["trial"]) == expected and len(expected) >= 2
        assert front[cost].is_monotonic_increasing


def test_failed_and_pruned_trials_are_in_the_table_not_on_the_front(storage):
    hand_made_study(storage)
    trials = report.load_trials("hand", storage)
    assert len(trials) == 16 and report.counts(trials) == {"COMPLETE": 14, "PRUNED": 1, "FAIL": 1}
    failed = trials[trials["state"] == "FAIL"].iloc[0]
    assert failed["failure_reason"] == "diverged: loss became nan"
    off_front = set(trials.loc[trials["state"] != "COMPLETE", "trial"])
    assert not off_front & set(report.pareto_front(trials, "flops")["trial"])


def test_group_means_and_baseline_deltas_match_pandas(storage):
    hand_made_study(storage)
    trials = report.load_trials("hand", storage)
    done = trials[trials["state"] == "COMPLETE"]
    by_function = report.by_dimension(trials, "function")
    for function, group in done.groupby("function"):
        assert by_function.loc[function, "mean"] == pytest.approx(group["val_accuracy"].mean())
        assert by_function.loc[function, "std"] == pytest.approx(group["val_accuracy"].std())
        assert by_function.loc[function, "best"] == pytest.approx(group["val_accuracy"].max())
        assert by_function.loc[function, "count"] == len(group)
    baseline = done[done["insertion"] == "none"]
    deltas = report.baseline_deltas(trials)
    for (insertion, function, width), row in deltas.iterrows():
        group = done[(done["insertion"] == insertion) & (done["function"] == function)]
        assert row["delta (points)"] == pytest.approx(
            (group["val_accuracy"].mean() - baseline["val_accuracy"].mean()) * 100
        )
        assert row["flops ratio"] == pytest.approx(group["flops"].mean() / baseline["flops"].mean())
    pivot = report.pivot_best(trials, "order")
    assert pivot.loc[3, "exp"] == pytest.approx(
        done[(done["order"] == 3) & (done["function"] == "exp")]["val_accuracy"].max()
    )


def test_seed_repeats_get_a_95_percent_interval():
    trials = pd.DataFrame(
        {
            "state": "COMPLETE",
            "insertion": ["none"] * 3 + ["dense"] * 3,
            "function": [None] * 3 + ["exp"] * 3,
            "seed": [0, 1, 2] * 2,
            "test_accuracy": [0.80, 0.82, 0.84, 0.70, 0.75, 0.71],
        }
    )
    summary = report.config_summary(trials).set_index("insertion")
    values = np.array([0.70, 0.75, 0.71])
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert summary.loc["dense", "mean"] == pytest.approx(values.mean())
    assert (summary.loc["dense", "ci_low"], summary.loc["dense", "ci_high"]) == pytest.approx((low, high))


def test_missing_or_empty_study_is_an_error_and_writes_nothing(storage, tmp_path, capsys):
    optuna.create_study(study_name="empty", storage=storage)
    for name, message in (("absent", "does not exist"), ("empty", "has no completed trial")):
        out = tmp_path / f"report-{name}"
        assert (
            main(
                [
                    "report",
                    "--study",
                    name,
                    "--storage",
                    storage,
                    "--tracking-uri",
                    f"sqlite:///{tmp_path / 'm.db'}",
                    "--out",
                    str(out),
                ]
            )
            == 2
        )
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_report_of_a_real_search(tmp_path):
    from tests.test_search import TINY, search_args, stores, write_space

    space = {**TINY, "params": {**TINY["params"], "insertion": ["none", "dense"]}}
    assert (
        main(
            search_args(
                tmp_path,
                write_space(tmp_path, space),
                "--study",
                "real",
                "--trials",
                "4",
                "--pruner",
                "none",
                "--seed",
                "0",
            )
        )
        == 0
    )
    storage, tracking = stores(tmp_path)
    assert (
        main(search_args(tmp_path, write_space(tmp_path, space), "--study", "again", "--trials", "2", "--seed", "3"))
        == 0
    )
    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                "--study",
                "real",
                "--study",
                "again",
                "--storage",
                storage,
                "--tracking-uri",
                tracking,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    files = {p.name: p for p in out.iterdir()}
    for name in ("index.md", "index.html", "trials.csv"):
        assert files[name].stat().st_size > 0
    pngs = [p for p in files.values() if p.suffix == ".png"]
    assert len(pngs) >= 8
    page = files["index.html"].read_text()
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
        assert f'src="{png.name}"' in page
    assert "Studies side by side" in page
    table = pd.read_csv(files["trials.csv"])
    assert set(table["study"]) == {"real", "again"} and table["run_url"].str.contains("/runs/").all()
    assert {"val_accuracy", "test_accuracy", "flops", "total_params", "latency_ms", "mlflow_run_id"} <= set(
        table.columns
    )


def test_holm_matches_a_hand_made_table():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone).
    assert report.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert report.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = report.holm([0.02, np.nan, 0.01])
    assert np.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.02, 0.02])  # NaN is out of the count


def seeded_runs():
    """Confirmation runs by hand: two configurations, their matched baselines, and a decoy baseline."""
    accuracy = {
        ("dense", 1.0, 1e-3): [0.91, 0.93, 0.92, 0.95],
        ("none", 1.0, 1e-3): [0.90, 0.90, 0.91, 0.92],
        ("none", 1.0, 3e-3): [0.10, 0.10, 0.10, 0.10],  # another learning rate: never the dense run's baseline
        ("input", 0.5, 1e-3): [0.80, 0.78, 0.79, 0.77],
        ("none", 0.5, 1e-3): [0.85, 0.86, 0.84, 0.88],
    }
    rows = []
    for (insertion, width, rate), values in accuracy.items():
        for seed, value in zip((1, 2, 3, 4), values):
            rows.append(
                {
                    "study": "hand",
                    "stage": "confirm",
                    "state": "COMPLETE",
                    "insertion": insertion,
                    "width": width,
                    "learning_rate": rate,
                    "batch_size": 64,
                    "seed": seed,
                    "test_accuracy": value,
                    "function": None if insertion == "none" else "softplus",
                    "order": None if insertion == "none" else 3,
                    "flops": 1e6 * width * (1.5 if insertion == "input" else 1.1 if insertion == "dense" else 1.0),
                    "total_params": 1e5 * width,
                    "latency_ms": 0.01,
                    "train_seconds": 2.0,
                }
            )
    return pd.DataFrame(rows), accuracy


def test_paired_comparisons_match_scipy_against_the_matched_baseline():
    trials, accuracy = seeded_runs()
    table = report.paired_comparisons(trials).set_index("configuration")
    assert set(table.index) == {"dense softplus p3", "input softplus p3"}
    for name, key, baseline_key in (
        ("dense softplus p3", ("dense", 1.0, 1e-3), ("none", 1.0, 1e-3)),
        ("input softplus p3", ("input", 0.5, 1e-3), ("none", 0.5, 1e-3)),
    ):
        values, reference = np.array(accuracy[key]), np.array(accuracy[baseline_key])
        expected = stats.ttest_rel(values, reference)
        row = table.loc[name]
        assert row["seeds"] == 4
        assert row["delta (points)"] == pytest.approx((values - reference).mean() * 100)
        assert (row["ci low"], row["ci high"]) == pytest.approx(
            tuple(np.array(expected.confidence_interval(0.95)) * 100)
        )
        assert row["p-value"] == pytest.approx(expected.pvalue)
        assert row["baseline accuracy"] == pytest.approx(reference.mean())
    assert table.loc["dense softplus p3", "flops ratio"] == pytest.approx(1.1)
    assert table.loc["input softplus p3", "flops ratio"] == pytest.approx(1.5)  # width cancels out
    assert table["p (Holm)"].to_numpy() == pytest.approx(report.holm(table["p-value"].to_numpy()))
    assert table.loc["dense softplus p3", "finding"] == "pays off"
    assert table.loc["input softplus p3", "finding"] == "costs accuracy"
    assert any(
        s.startswith("dense softplus p3 against its matched baseline pays off: +2.0 points") and "95% CI" in s
        for s in sentences_of(trials)
    )
    # The answer first: the configuration that pays off, against its matched baseline, then the tally.
    first, second = report.verdict(trials)
    assert first.startswith(
        "The best of 2 confirmed configurations, dense softplus p3, is better than its matched baseline: +2.0"
    )
    assert "95% CI" in first and "4 seeds" in first and "1.10x the FLOPs" in first
    assert second.startswith(
        "Of 2 configurations confirmed against their matched baselines: 1 better, 1 worse, 0 undecided"
    )


def test_each_configuration_meets_its_matched_and_the_tuned_baseline():
    trials, accuracy = seeded_runs()
    # The search's best plain network had the other learning rate: the tuned baseline, re-trained with the same seeds.
    trials["tuned_baseline"] = (trials["insertion"] == "none") & (trials["learning_rate"] == 3e-3)
    trials.loc[trials["tuned_baseline"], "test_accuracy"] = [0.95, 0.94, 0.96, 0.95]
    table = report.paired_comparisons(trials).set_index(["configuration", "baseline"])
    assert sorted(table.index) == [
        ("dense softplus p3", "matched"),
        ("dense softplus p3", "tuned"),
        ("input softplus p3", "matched"),
        ("input softplus p3", "tuned"),
    ]
    dense, tuned = np.array(accuracy[("dense", 1.0, 1e-3)]), np.array([0.95, 0.94, 0.96, 0.95])
    row = table.loc[("dense softplus p3", "tuned")]
    assert row["delta (points)"] == pytest.approx((dense - tuned).mean() * 100)
    assert row["p-value"] == pytest.approx(stats.ttest_rel(dense, tuned).pvalue) and row["learning_rate"] == 3e-3
    assert table["p (Holm)"].to_numpy() == pytest.approx(report.holm(table["p-value"].to_numpy()))  # over all four
    sentences = sentences_of(trials)
    assert any(
        s.startswith("dense softplus p3 against the tuned baseline") and "learning rate 0.003" in s for s in sentences
    )
    # Costs against the tuned baseline are not ratios: its network or recipe differs in more than the expansion.
    assert np.isnan(table.loc[("dense softplus p3", "tuned"), "flops ratio"])
    tuned_sentence = next(s for s in sentences if s.startswith("dense softplus p3 against the tuned baseline"))
    assert "costs not given as ratios" in tuned_sentence and "learning rate 0.003 against 0.001" in tuned_sentence

    # A tuned baseline that is the matched one is one network: one row, said once.
    trials["tuned_baseline"] = (
        (trials["insertion"] == "none") & (trials["learning_rate"] == 1e-3) & (trials["width"] == 1.0)
    )
    table = report.paired_comparisons(trials).set_index("configuration")
    assert table.loc["dense softplus p3", "baseline"] == "matched = tuned"
    assert set(table.loc["input softplus p3", "baseline"]) == {"matched", "tuned"}  # its width has its own matched one


def test_configurations_that_read_alike_are_told_apart_by_their_params():
    from harness.reporting.comparisons import configuration_names

    names = configuration_names(
        [
            {"insertion": "conv1", "function": "sin", "order": 2, "learning_rate": 0.00174},
            {"insertion": "conv1", "function": "sin", "order": 2, "learning_rate": 0.00251},
            {"insertion": "dense", "function": "sin", "order": 3, "learning_rate": 0.00251},
        ]
    )
    assert names == ["conv1 sin p2 (learning_rate=0.00174)", "conv1 sin p2 (learning_rate=0.00251)", "dense sin p3"]


def test_the_train_time_ratio_is_paired_by_seed_with_its_range():
    trials, _ = seeded_runs()
    dense = trials["insertion"] == "dense"
    trials.loc[dense, "train_seconds"] = [3.0, 2.0, 4.0, 2.2]  # against 2.0 a seed: ratios 1.5, 1.0, 2.0, 1.1
    row = report.paired_comparisons(trials).set_index("configuration").loc["dense softplus p3"]
    assert (
        row["train_seconds ratio"],
        row["train_seconds ratio low"],
        row["train_seconds ratio high"],
    ) == pytest.approx((1.3, 1.0, 2.0))
    sentence = next(s for s in sentences_of(trials) if s.startswith("dense softplus p3"))
    assert "1.30x its train time (median of 4 per-seed ratios, 1.00 to 2.00; wall clock" in sentence
    assert "latency" not in sentence  # no timer: latencies cached at different moments make no ratio


def test_two_identical_networks_time_at_a_latency_ratio_of_one_within_its_range():
    from harness.model import build_model
    from harness.training.costs import latency_ratio

    images = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    first, second = (build_model({"width": 0.5}, (8, 8, 1), 10) for _ in range(2))
    median, low, high = latency_ratio(first, second, images, rounds=15)
    assert low <= 1.0 <= high and low <= median <= high
    # A network that does more work is slower, side by side.
    heavy = build_model({"width": 4.0}, (8, 8, 1), 10)
    assert latency_ratio(heavy, first, images, rounds=5)[0] > 1.5


def test_a_study_without_confirmation_says_its_figures_are_optimistic(storage):
    hand_made_study(storage)
    lines = report.verdict(
        report.load_trials("hand", storage), confirm_command="harness search --study hand --confirm 3"
    )
    assert lines[0].startswith("No answer yet: the best of 14 completed search trials")
    assert "selected on validation, so optimistic" in lines[0]
    assert lines[-1].endswith("harness search --study hand --confirm 3")


def test_tables_show_one_format_per_quantity_and_no_repeated_columns():
    from harness.reporting.layout import display

    table = pd.DataFrame(
        {
            "study": ["a", "a"],
            "order": [6.0, 3.0],
            "flops": [1.01094e6, 266492.0],
            "total_params": [162672.0, 1000.0],
            "val_accuracy": [0.91234, 0.5],
            "delta (points)": [1.389, -0.25],
            "flops ratio": [3.647, 1.0],
            "ci_low": [0.951, 0.48],
            "ci_high": [0.974, 0.52],
        },
        index=[4, 7],
    )
    shown, note = display(table)
    assert note == "Every row: study a."
    assert shown.to_dict("list") == {
        "order": ["6", "3"],
        "flops": ["1.01 M", "0.266 M"],
        "params": ["162,672", "1,000"],
        "val acc": ["91.2%", "50.0%"],  # accuracies in per cent, unsigned; differences in signed points
        "delta (points)": ["+1.4", "-0.2"],
        "FLOPs x": ["3.65x", "1.00x"],
        "95% CI": ["95.1%\u00a0to\u00a097.4%", "48.0%\u00a0to\u00a052.0%"],
    }
    assert "<th></th>" not in shown.to_html(index=False)


def test_out_never_deletes_what_it_did_not_write(storage, tmp_path, capsys):
    hand_made_study(storage)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("two years of work")
    args = ["report", "--study", "hand", "--storage", storage, "--out", str(out)]
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "thesis.txt" in error[0] and "did not write" in error[0]
    assert (out / "thesis.txt").read_text() == "two years of work"

    fresh = tmp_path / "fresh"
    assert main([*args[:-1], str(fresh)]) == 0
    assert main([*args[:-1], str(fresh)]) == 0  # an earlier report is replaced whole
    (fresh / "notes.md").write_text("mine")
    assert main([*args[:-1], str(fresh)]) == 2 and (fresh / "notes.md").exists()


def test_the_baseline_is_trained_even_where_the_pruner_would_cut_it(tmp_path):
    """A study whose trials all reached 0.99 at every epoch: the median pruner would prune any newcomer."""
    from tests.test_search import TINY, search_args, stores, write_space

    storage, tracking = stores(tmp_path)
    study = optuna.create_study(study_name="strong", storage=storage, direction="maximize")
    for _ in range(4):
        study.add_trial(
            optuna.trial.create_trial(
                params={"insertion": "dense"},
                distributions={"insertion": DISTRIBUTIONS["insertion"]},
                value=0.99,
                intermediate_values={0: 0.99, 1: 0.99},
                user_attrs={"outcome": "COMPLETE"},
            )
        )
    space = write_space(tmp_path, {**TINY, "params": {"insertion": ["none", "input", "dense"], "width": 0.25}})
    assert main(search_args(tmp_path, space, "--study", "strong", "--trials", "5", "--pruner", "median")) == 0
    assert main(search_args(tmp_path, space, "--study", "strong", "--trials", "6", "--pruner", "median")) == 0
    trials = optuna.load_study(study_name="strong", storage=storage).trials
    baselines = [t for t in trials if t.user_attrs.get("baseline")]
    assert len(baselines) == 1, "a resumed study trains its baseline once"
    (baseline,) = baselines
    assert baseline.state == optuna.trial.TrialState.COMPLETE and len(baseline.intermediate_values) == 2
    assert max(baseline.intermediate_values.values()) < 0.99  # the median pruner would have cut it


def test_a_confirmed_search_reports_its_verdict_from_seeded_test_runs(tmp_path, capsys):
    import json

    from mlflow.tracking import MlflowClient

    from tests.test_search import TINY, search_args, stores, write_space

    storage, tracking = stores(tmp_path)
    # Every sampled trial expanded (the baseline is queued anyway), so there is always a configuration to confirm.
    # It searches the recipe too: a matched baseline must train the way its configuration does.
    space = write_space(
        tmp_path,
        {
            **TINY,
            "params": {
                **TINY["params"],
                "insertion": "dense",
                "width": [0.25, 0.5],
                "optimizer": ["adam", "adamw"],
                "augment": ["none", "crop_flip"],
                "schedule": "cosine",
            },
        },
    )
    args = search_args(
        tmp_path,
        space,
        "--study",
        "judged",
        "--trials",
        "4",
        "--pruner",
        "none",
        "--confirm",
        "1",
        "--seeds",
        "2",
        "--seed",
        "0",
    )
    assert main(args) == 0
    printed = capsys.readouterr().out  # each line says what runs
    assert "search trial 3 (a baseline turn): COMPLETE" in printed and "baseline, seed 1/2: COMPLETE" in printed
    assert "confirm dense " in printed and ", seed 2/2: COMPLETE" in printed
    search = optuna.load_study(study_name="judged", storage=storage)
    # Trial 3 tuned the baseline: the hyperparameters it shares sampled, no expansion.
    assert search.trials[3].user_attrs["baseline_turn"] and search.trials[3].user_attrs["insertion"] == "none"
    assert "function" not in search.trials[3].params and "width" in search.trials[3].params
    confirm = optuna.load_study(study_name="judged-confirm", storage=storage)
    recipe = ("width", "learning_rate", "batch_size", "optimizer", "augment")
    runs = [{k: t.user_attrs.get(k) for k in ("insertion", "seed", *recipe)} for t in confirm.trials]
    assert {r["seed"] for r in runs} == {1, 2}  # fresh seeds: the search trained with 0
    configuration = next(r for r in runs if r["insertion"] != "none")
    matched = [r for r in runs if r["insertion"] == "none" and all(r[k] == configuration[k] for k in recipe)]
    assert len(matched) == 2
    # The tuned baseline: the search's best plain network (its queued baseline or trial 3), with the same seeds.
    best = max(
        (t for t in search.trials if t.user_attrs.get("insertion") == "none" and t.values), key=lambda t: t.values[0]
    )
    tuned = confirm.user_attrs["tuned_baseline"]
    assert (
        tuned == {k: v for k, v in {**best.params, **best.user_attrs}.items() if k in tuned}
        and tuned["insertion"] == "none"
    )
    tuned_runs = [r for r in runs if r["insertion"] == "none" and all(r[k] == tuned[k] for k in recipe if k in tuned)]
    assert sorted(r["seed"] for r in tuned_runs) == [1, 2]
    assert len(runs) == 6 if tuned_runs != matched else 4  # one network, trained once, where the two coincide

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("judged").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`harness.role` = 'search'")
    confirm_runs = client.search_runs([experiment], "tags.`harness.stage` = 'confirm'")
    assert len(confirm_runs) == len(runs) and {r.data.tags["mlflow.parentRunId"] for r in confirm_runs} == {
        parent.info.run_id
    }
    assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in confirm_runs)
    view = json.loads(client.get_experiment(experiment).tags["mlflow.sharedViewState.harness-confirmation"])
    shown = client.search_runs([experiment], view["searchFilter"])
    assert {r.info.run_id for r in shown} == {r.info.run_id for r in confirm_runs}
    groups = {r.data.tags["harness.configuration"] for r in shown}  # a group per configuration, a row per seed
    assert len(groups) == len(runs) // 2 and any(g.startswith("dense ") for g in groups)
    recipe = ("optimizer", "augment", "schedule", "learning_rate", "width", "batch_size", "weight_decay", "backbone")
    by_seed = {}
    for run in confirm_runs:  # read back from MLflow: each seed's matched baseline and configuration share the recipe
        by_seed.setdefault(run.data.params["seed"], []).append(
            (run.data.params["insertion"], {k: run.data.params.get(k) for k in recipe})
        )
    assert len(by_seed) == 2, by_seed
    for seeded in by_seed.values():
        (expanded,) = [r for insertion, r in seeded if insertion != "none"]
        assert [r for insertion, r in seeded if insertion == "none"].count(expanded) == 1, seeded
    assert expanded["schedule"] == "cosine"
    for run in confirm_runs:  # every confirmation run keeps its final model
        assert "model.keras" in {a.path for a in client.list_artifacts(run.info.run_id)}

    assert main(args) == 0  # resumes: nothing is trained twice
    assert len(optuna.load_study(study_name="judged-confirm", storage=storage).trials) == len(runs)

    out = tmp_path / "report"
    assert (
        main(["report", "--study", "judged", "--storage", storage, "--tracking-uri", tracking, "--out", str(out)]) == 0
    )
    page = (out / "index.md").read_text()
    answer = page.split("\n\n")[1]  # the paragraph under the title: the answer, in words
    # 120 images and 2 epochs leave some networks near chance: then the answer says so instead of a finding.
    assert answer.startswith("**") and ("its matched baseline: " in answer or "the networks did not train" in answer)
    assert page.index("answer.png") < page.index("## Method") < page.index("Search stage of judged")
    method = page.split("## Method")[1].split("## Search stage")[0]
    assert "Each seed varied the initialisation" in method and "Holm" in method
    if len(runs) == 6:
        assert "among the baseline's 2 search trials, against 2 search trials of expanded networks" in method
        assert "### Against the tuned baseline" in page
    assert "latency (median of 15 interleaved rounds" in method
    assert "test_accuracy" not in page.split("Search stage of judged")[1]  # selection shows validation alone
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert set(comparisons["baseline"]) <= {"matched", "tuned", "matched = tuned"}
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials["stage"]) == {"search", "confirm"}
    seeded = trials[trials["stage"] == "confirm"]
    assert seeded["untrained"].tolist() == [bool(a < 0.19) for a in seeded["test_accuracy"]]  # 10 classes
    if seeded["untrained"].any():
        assert "not trained: no answer" in set(comparisons["finding"]) and "### Runs that did not train" in page


def paired(differences, baseline=70.0):
    """Confirmation runs of one configuration whose test accuracy differs from its baseline's by `differences`
    points, seed by seed."""
    rows = []
    for seed, difference in enumerate(differences, start=1):
        noise = 0.3 * np.sin(seed)  # the baseline varies by seed; the pairing takes it out
        for insertion, accuracy in (("none", baseline + noise), ("dense", baseline + noise + difference)):
            rows.append(
                {
                    "study": "eq",
                    "stage": "confirm",
                    "state": "COMPLETE",
                    "insertion": insertion,
                    "seed": seed,
                    "function": None if insertion == "none" else "softplus",
                    "order": None if insertion == "none" else 3,
                    "test_accuracy": accuracy / 100,
                }
            )
    return pd.DataFrame(rows)


def test_equivalence_and_power_come_from_statsmodels():
    from statsmodels.stats.power import TTestPower
    from statsmodels.stats.weightstats import ttost_paired

    differences = np.array([0.3, -0.4, 0.1, 0.2, -0.3, 0.0])
    row = report.paired_comparisons(paired(differences), rope=1.0).iloc[0]
    baseline = np.array([70.0 + 0.3 * np.sin(seed) for seed in range(1, 7)])
    assert row["p equivalent"] == pytest.approx(ttost_paired(baseline + differences, baseline, -1.0, 1.0)[0])
    assert row["p equivalent"] < 0.05 and row["finding"] == "equivalent"
    effect = TTestPower().solve_power(nobs=6, alpha=0.05, power=0.8, alternative="two-sided")
    assert row["detectable (points)"] == pytest.approx(effect * differences.std(ddof=1), rel=1e-6)
    # Hand-made: 6 pairs with a spread of 0.27 points detect about 0.4 points; 1.0 would be equivalence's bound.
    assert 0.3 < row["detectable (points)"] < 0.5
    assert (
        "against its matched baseline is equivalent to it within \u00b11 point:" in sentences_of(paired(differences))[0]
    )
    # The same differences judged against a margin of 0.1 point: too narrow to show with 6 seeds.
    narrow = report.paired_comparisons(paired(differences), rope=0.1).iloc[0]
    assert narrow["finding"] == "inconclusive" and narrow["seeds to settle"] > 6


def test_a_gain_inside_the_margin_says_so_and_an_inconclusive_one_says_what_would_settle_it():
    small = report.paired_comparisons(paired([0.30, 0.35, 0.40, 0.32, 0.38]), rope=1.0).iloc[0]
    assert small["ci low"] > 0 and small["ci high"] < 1.0 and small["finding"] == "pays off, by less than the margin"
    large = report.paired_comparisons(paired([2.0, 2.5, 1.8, 2.2, 2.4]), rope=1.0).iloc[0]
    assert large["ci low"] > 1.0 and large["finding"] == "pays off"
    unclear = paired([1.5, -1.0, 2.5, -0.5, 1.0])
    row = report.paired_comparisons(unclear, rope=1.0).iloc[0]
    assert row["finding"] == "inconclusive"
    from statsmodels.stats.power import TTestPower

    differences = np.array([1.5, -1.0, 2.5, -0.5, 1.0])
    to_detect = TTestPower().solve_power(
        effect_size=differences.mean() / differences.std(ddof=1), alpha=0.05, power=0.8
    )
    assert row["seeds to settle"] == int(np.ceil(to_detect))  # a mean of 0.7 > 0: detecting it is the nearer route
    sentence = sentences_of(unclear)[0]
    assert (
        "is inconclusive at this budget" in sentence
        and f"settling it would take about {row['seeds to settle']:g} seeds" in sentence
    )


def test_a_finding_needs_the_holm_correction_to_agree():
    trials, _ = seeded_runs()
    # Seven more configurations whose differences are pure noise: eight comparisons in all.
    noise = np.random.default_rng(1)
    extra = []
    for order in range(4, 11):
        for seed in (1, 2, 3, 4):
            extra.append(
                {
                    **trials.iloc[0].to_dict(),
                    "order": order,
                    "seed": seed,
                    "test_accuracy": 0.90 + noise.normal(0, 0.02),
                }
            )
    table = report.paired_comparisons(pd.concat([trials, pd.DataFrame(extra)], ignore_index=True))
    for _, row in table.iterrows():
        excludes_zero = row["ci low"] > 0 or row["ci high"] < 0
        assert row["finding"].startswith(("pays off", "costs accuracy")) == (excludes_zero and row["p (Holm)"] < 0.05)
    dense = table.set_index("configuration").loc["dense softplus p3"]
    assert dense["ci low"] > 0 and dense["p (Holm)"] >= 0.05 and dense["finding"] == "inconclusive"
    assert any(
        "once corrected for the comparisons made" in sentence
        for sentence in sentences_of(pd.concat([trials, pd.DataFrame(extra)], ignore_index=True))
    )


def test_a_constant_difference_gets_no_p_value_and_no_finding():
    trials, _ = seeded_runs()
    dense = trials["insertion"] == "dense"
    baseline = (trials["insertion"] == "none") & (trials["width"] == 1.0) & (trials["learning_rate"] == 1e-3)
    # Every seed one point above its baseline: zero spread, which the paired t-test cannot judge.
    trials.loc[dense, "test_accuracy"] = trials.loc[baseline, "test_accuracy"].to_numpy() + 0.01
    differences = trials.loc[dense, "test_accuracy"].to_numpy() - trials.loc[baseline, "test_accuracy"].to_numpy()
    assert np.ptp(differences) < 1e-12
    row = report.paired_comparisons(trials).set_index("configuration").loc["dense softplus p3"]
    assert row["delta (points)"] == pytest.approx(1.0)
    assert np.isnan(row["p-value"]) and np.isnan(row["p (Holm)"]) and np.isnan(row["ci low"])
    assert row["finding"] == "inconclusive" and np.isnan(row["p equivalent"])
    sentence = next(s for s in sentences_of(trials) if s.startswith("dense softplus p3"))
    assert "every seed gave the same difference" in sentence and "no p-value" in sentence and "pays off" not in sentence


def test_duplicate_runs_of_a_seed_are_paired_once():
    trials, accuracy = seeded_runs()
    trials["trial"] = range(len(trials))
    # The dense configuration's seeds 1 and 2 ran twice more (two machines queueing at once, in an older version).
    twins = trials[(trials["insertion"] == "dense") & trials["seed"].isin([1, 2])].assign(test_accuracy=0.99)
    twins["trial"] = range(100, 100 + len(twins))
    table = report.paired_comparisons(pd.concat([trials, twins], ignore_index=True)).set_index("configuration")
    row = table.loc["dense softplus p3"]
    values, reference = np.array(accuracy[("dense", 1.0, 1e-3)]), np.array(accuracy[("none", 1.0, 1e-3)])
    assert row["seeds"] == 4 and row["duplicates left out"] == 2
    assert row["p-value"] == pytest.approx(stats.ttest_rel(values, reference).pvalue)  # the earliest runs count
    assert table.loc["input softplus p3", "duplicates left out"] == 0
    both = pd.concat([trials, twins], ignore_index=True)
    assert "2 duplicate runs of a configuration and seed were left out" in report.methods(
        both, report.paired_comparisons(both), 1.0
    )
    summary = report.config_summary(pd.concat([trials, twins], ignore_index=True))
    assert summary.loc[summary["insertion"] == "dense", "count"].item() == 4


def test_a_margin_that_is_not_positive_is_one_line_and_exit_2(capsys):
    assert main(["report", "--study", "any", "--rope", "0"]) == 2
    assert capsys.readouterr().err.strip() == "harness: error: --rope must be a positive number of points, got 0"


def test_divergences_are_grouped_by_configuration_and_recipe():
    from harness.reporting.tables import divergences

    def trial(optimizer, learning_rate, reason=None, coefficients="trainable"):
        return {
            "state": "FAIL" if reason else "COMPLETE",
            "failure_reason": reason,
            "insertion": "all",
            "function": "softplus",
            "order": 3,
            "coefficients": coefficients,
            "optimizer": optimizer,
            "learning_rate": learning_rate,
            "weight_decay": 5e-4,
            "schedule": "cosine",
        }

    first = "diverged: loss became nan at epoch 1, batch 9; first non-finite: the gradient of a/coefficients"
    trials = pd.DataFrame(
        [
            trial("sgd", 0.1, first),
            trial("sgd", 0.1, "diverged: loss became inf at epoch 1, batch 3"),
            trial("sgd", 0.1),
            trial("adamw", 0.001),
            trial("sgd", 0.1, coefficients="fixed"),
            trial("sgd", 0.05, "RuntimeError: not a divergence"),
        ]
    )
    table = divergences(trials)
    assert table.to_dict("records") == [
        {
            "configuration": "all softplus p3 trainable",
            "recipe": "sgd lr 0.1, decay 0.0005, cosine",
            "diverged": 2,
            "trials": 3,
            "first divergence": first,
        }
    ]
    assert divergences(trials.iloc[2:]).empty


@pytest.mark.parametrize(
    "differences, opening",
    [
        (
            [2.0, 2.5, 1.8, 2.2, 2.4],
            "The confirmed configuration, dense softplus p3, is better than its matched baseline: +2.2 points",
        ),
        (
            [-2.0, -2.5, -1.8, -2.2, -2.4],
            "The confirmed configuration, dense softplus p3, is worse than its matched baseline: -2.2 points",
        ),
        (
            [0.3, -0.4, 0.1, 0.2, -0.3, 0.0],
            "The confirmed configuration, dense softplus p3, is equivalent within \u00b11 point to its matched",
        ),
        (
            [1.5, -1.0, 2.5, -0.5, 1.0],
            "The confirmed configuration, dense softplus p3, is undecided against its matched baseline: +0.7 points",
        ),
    ],
)
def test_the_answer_opens_with_the_finding_in_plain_words(differences, opening):
    trials = paired(differences)
    trials["flops"] = np.where(trials["insertion"] == "none", 1e6, 1.2e6)
    (answer,) = report.verdict(trials)
    assert answer.startswith(opening), answer
    seeds = len(differences)
    assert "(95% CI " in answer and f", {seeds} seeds), at 1.20x the FLOPs" in answer
    if "undecided" in opening:
        seeds_to_settle = report.paired_comparisons(trials).iloc[0]["seeds to settle"]
        assert answer.endswith(f"; about {seeds_to_settle:g} seeds would settle it.")


def test_runs_near_chance_give_no_answer():
    from harness.reporting.loading import _untrained
    from harness.statistics import untrained

    assert untrained(0.104, 10) and untrained(0.186, 10) and not untrained(0.25, 10) and not untrained(0.9, 2)
    trials = paired([0.3, -0.2, 0.4, 0.1], baseline=10.0)  # both sides at 10% on 10 classes: chance
    trials["untrained"] = _untrained(trials, "confirm", 10)
    assert trials["untrained"].all()
    row = report.paired_comparisons(trials).iloc[0]
    assert row["finding"] == "not trained: no answer" and row["untrained runs"] == 8
    (answer,) = report.verdict(trials)
    assert answer.startswith("No answer: the networks did not train (the matched baseline reached 10.1% test")
    assert "has no answer: 8 runs of the pair did not train" in sentences_of(trials)[0]


def test_an_interval_and_its_colour_tell_one_story(tmp_path):
    from harness.reporting.plots import answer_plot, finding_style
    from harness.reporting.findings import excluded_only_before_holm, finding_words, matched_comparisons

    trials, _ = seeded_runs()
    noise = np.random.default_rng(1)  # seven more configurations of pure noise: the Holm correction has work to do
    extra = [
        {**trials.iloc[0].to_dict(), "order": order, "seed": seed, "test_accuracy": 0.90 + noise.normal(0, 0.02)}
        for order in range(4, 11)
        for seed in (1, 2, 3, 4)
    ]
    comparisons = report.paired_comparisons(pd.concat([trials, pd.DataFrame(extra)], ignore_index=True))
    words = {row["configuration"]: finding_words(row) for _, row in comparisons.iterrows()}
    assert words["dense softplus p3"] == "undecided after Holm"  # its CI excludes 0, its adjusted test does not
    for _, row in comparisons.iterrows():
        colour, _, filled = finding_style(words[row["configuration"]])
        excludes_zero = row["ci low"] > 0 or row["ci high"] < 0
        if colour in ("tab:green", "tab:red"):  # a finding's colour: its interval excludes 0 on the right side
            assert (row["ci low"] > 0) if colour == "tab:green" else (row["ci high"] < 0)
        else:  # no finding: an interval that excludes 0 anyway is drawn hollow and named
            assert filled != excludes_zero and excluded_only_before_holm(row) == excludes_zero
    file, caption = answer_plot(tmp_path, "", matched_comparisons(comparisons))
    assert "not adjusted" in caption and "Holm-adjusted" in caption and (tmp_path / file).stat().st_size > 0


def test_every_table_of_the_shipped_reports_fits_a_1280_px_window(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        unavailable("no Chromium here (.ci/run installs Debian's)")
    probe = (
        "<script>addEventListener('load',()=>{document.body.dataset.overflowing=[...document.querySelectorAll("
        "'.scroll,body')].filter(e=>e.scrollWidth>e.clientWidth).length})</script>"
    )
    root = Path(__file__).parent.parent / "reports"
    for page in (root / "example" / "index.html", root / "suite-example" / "index.html"):
        probed = tmp_path / f"{page.parent.name}.html"
        probed.write_text(page.read_text().replace("</body>", probe + "</body>"))
        shown = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1280,900",
                "--dump-dom",
                probed.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert 'data-overflowing="0"' in shown, f"{page}: a table wider than a 1280 px window"
