import pandas as pd
from mlflow.tracking import MlflowClient

from harness.cli import main
from tests.test_search import TINY, search_args, stores, write_space


def test_keras_tuner_trials_are_logged_like_optuna_trials_and_reported(tmp_path):
    space = write_space(tmp_path, TINY)
    assert main(search_args(tmp_path, space, "--study", "by-optuna", "--trials", "2", "--pruner", "none")) == 0
    assert (
        main(
            search_args(
                tmp_path,
                space,
                "--study",
                "by-kt",
                "--trials",
                "2",
                "--engine",
                "keras-tuner",
                "--tuner",
                "random",
                "--seed",
                "1",
            )
        )
        == 0
    )
    storage, tracking = stores(tmp_path)
    client = MlflowClient(tracking)

    def trial_runs(name):
        experiment = client.get_experiment_by_name(name)
        return client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'trial'")

    optuna_runs, kt_runs = trial_runs("by-optuna"), trial_runs("by-kt")
    assert len(kt_runs) == 2 and all(r.info.status == "FINISHED" for r in kt_runs)
    for optuna_run, kt_run in zip(optuna_runs, kt_runs):
        assert set(kt_run.data.tags) - {"mlflow.runName"} >= set(optuna_run.data.tags) - {
            "mlflow.runName",
            "mlflow.user",
        } - {t for t in optuna_run.data.tags if t.startswith("mlflow.source")}
        assert set(kt_run.data.metrics) == set(optuna_run.data.metrics)
        for name in ("seed", "dataset", "epochs", "learning_rate", "insertion"):
            assert name in kt_run.data.params
        artifacts = {a.path for a in client.list_artifacts(kt_run.info.run_id)}
        assert "model_summary.txt" in artifacts
    parents = client.search_runs(
        [client.get_experiment_by_name("by-kt").experiment_id], "tags.`harness.role` = 'search'"
    )
    assert len(parents) == 1 and {r.data.tags["mlflow.parentRunId"] for r in kt_runs} == {parents[0].info.run_id}

    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                "--study",
                "by-kt",
                "--study",
                "by-optuna",
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
    table = pd.read_csv(out / "trials.csv")
    kt_rows = table[table["study"] == "by-kt"]
    assert len(kt_rows) == 2 and kt_rows["val_accuracy"].notna().all() and kt_rows["flops"].notna().all()
    assert "Study by-kt" in (out / "index.html").read_text()


def test_keras_tuner_counts_pruned_trials_and_resumes_its_study(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    # `all` with `expand` cannot be built: every trial is PRUNED with its reason.
    space = write_space(tmp_path, {**TINY, "params": {**TINY["params"], "insertion": "all", "mode": "expand"}})
    args = search_args(tmp_path, space, "--study", "kt", "--engine", "keras-tuner", "--tuner", "random", "--seed", "1")
    assert main([*args, "--trials", "2"]) == 0
    assert "the trials this run trained: 0 complete, 2 pruned, 0 fail" in capsys.readouterr().out
    assert main([*args, "--trials", "3"]) == 0  # the same study, resumed: one trial more
    assert "the trials this run trained: 0 complete, 1 pruned, 0 fail" in capsys.readouterr().out
    client = MlflowClient(stores(tmp_path)[1])
    runs = client.search_runs([client.get_experiment_by_name("kt").experiment_id], "tags.`harness.role` = 'trial'")
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [0, 1, 2]
    assert {r.data.tags["state"] for r in runs} == {"PRUNED"}
