import itertools
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from harness import report
from harness.cli import main

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
        rows.append(({"insertion": insertion, "function": function, "order": order}, rng.uniform(0.5, 0.95), rng.integers(10**6, 10**7)))
    rows += [({"insertion": "none"}, 0.8, 10**6), ({"insertion": "none"}, 0.84, 10**6)]
    for params, accuracy, flops in rows:
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: DISTRIBUTIONS[k] for k in params}, value=accuracy,
            user_attrs={"flops": int(flops), "total_params": int(flops // 10), "test_accuracy": accuracy - 0.01},
        ))
    # Failed and pruned trials with outstanding numbers must stay off the front.
    study.add_trial(optuna.trial.create_trial(
        params={"insertion": "dense", "function": "exp", "order": 6}, distributions={k: DISTRIBUTIONS[k] for k in ("insertion", "function", "order")},
        state=optuna.trial.TrialState.FAIL, user_attrs={"failure_reason": "diverged: loss became nan", "flops": 1},
    ))
    study.add_trial(optuna.trial.create_trial(
        params={"insertion": "input", "function": "softplus", "order": 2}, distributions={k: DISTRIBUTIONS[k] for k in ("insertion", "function", "order")},
        state=optuna.trial.TrialState.PRUNED, value=0.99, user_attrs={"flops": 2},
    ))
    return study


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def brute_force_front(points):
    """Indices of (accuracy, cost) points no other point beats: the definition, loop by loop."""
    front = []
    for i, (accuracy, cost) in enumerate(points):
        beaten = any(a >= accuracy and c <= cost and (a > accuracy or c < cost) for j, (a, c) in enumerate(points) if j != i)
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
    for (insertion, function), row in deltas.iterrows():
        group = done[(done["insertion"] == insertion) & (done["function"] == function)]
        assert row["delta (points)"] == pytest.approx((group["val_accuracy"].mean() - baseline["val_accuracy"].mean()) * 100)
        assert row["flops ratio"] == pytest.approx(group["flops"].mean() / baseline["flops"].mean())
    pivot = report.pivot_best(trials, "order")
    assert pivot.loc[3, "exp"] == pytest.approx(done[(done["order"] == 3) & (done["function"] == "exp")]["val_accuracy"].max())


def test_seed_repeats_get_a_95_percent_interval():
    trials = pd.DataFrame({
        "state": "COMPLETE", "insertion": ["none"] * 3 + ["dense"] * 3, "function": [None] * 3 + ["exp"] * 3,
        "seed": [0, 1, 2] * 2, "test_accuracy": [0.80, 0.82, 0.84, 0.70, 0.75, 0.71],
    })
    summary = report.config_summary(trials).set_index("insertion")
    values = np.array([0.70, 0.75, 0.71])
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert summary.loc["dense", "mean"] == pytest.approx(values.mean())
    assert (summary.loc["dense", "ci_low"], summary.loc["dense", "ci_high"]) == pytest.approx((low, high))


def test_missing_or_empty_study_is_an_error_and_writes_nothing(storage, tmp_path, capsys):
    optuna.create_study(study_name="empty", storage=storage)
    for name, message in (("absent", "does not exist"), ("empty", "has no completed trial")):
        out = tmp_path / f"report-{name}"
        assert main(["report", "--study", name, "--storage", storage, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_report_of_a_real_search(tmp_path):
    from tests.test_search import TINY, search_args, stores, write_space

    space = {**TINY, "params": {**TINY["params"], "insertion": ["none", "dense"]}}
    assert main(search_args(tmp_path, write_space(tmp_path, space), "--study", "real", "--trials", "4", "--pruner", "none")) == 0
    storage, tracking = stores(tmp_path)
    assert main(search_args(tmp_path, write_space(tmp_path, space), "--study", "again", "--trials", "2", "--seed", "3")) == 0
    out = tmp_path / "report"
    assert main(["report", "--study", "real", "--study", "again", "--storage", storage, "--tracking-uri", tracking, "--out", str(out)]) == 0
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
    assert {"val_accuracy", "test_accuracy", "flops", "total_params", "latency_ms", "mlflow_run_id"} <= set(table.columns)
