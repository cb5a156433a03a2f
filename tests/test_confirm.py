"""Confirmation and benchmarks run each (configuration, seed) once, however many processes queue them at once."""

import itertools
import os
import subprocess
import sys

import optuna
from mlflow.tracking import MlflowClient

from harness.study.confirm import enqueue, with_baselines
from harness.study.records import BENCHMARK_RUN, DUPLICATE_OF, counted_trials, enqueued_key
from harness.study.search import Search
from harness.study.settings import SearchSettings
from harness.study.space import load_space
from harness.study.storage import open_storage
from tests.test_search import TINY, stores, write_space

SPACE = {**TINY, "params": {**TINY["params"], "insertion": "dense", "learning_rate": 1e-3}}


def test_a_run_queued_twice_trains_once(tmp_path):
    space = load_space(write_space(tmp_path, SPACE))
    storage, tracking = stores(tmp_path)
    settings = SearchSettings(
        study_name="twice", storage=storage, tracking_uri=tracking, stage="benchmark", sampler="random", pruner="none"
    )
    search = Search(space, settings)
    configurations = with_baselines([space.complete({"function": "tanh", "order": 2})])
    # Two processes queued the same runs at the same moment, each having found none queued.
    for configuration, seed in itertools.product(configurations, (0, 1)):
        for _ in range(2):
            search.study.enqueue_trial({}, user_attrs={**configuration, "seed": seed, BENCHMARK_RUN: True})
    settings.n_trials = 4
    with search.parent_run():
        search.run()
    trained = counted_trials(search.study)
    assert len(trained) == 4 and len({enqueued_key(t) for t in trained}) == 4
    # Each twin asked for after its run stood down; the last one is never asked for, as the study is full.
    stood_down = [t for t in search.study.trials if DUPLICATE_OF in t.user_attrs]
    assert [t.user_attrs[DUPLICATE_OF] for t in stood_down] == [0, 2, 4] and [t.number for t in trained] == [0, 2, 4, 6]
    assert all("mlflow_run_id" not in t.user_attrs for t in stood_down)
    assert search.study.trials[7].state == optuna.trial.TrialState.WAITING
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("twice").experiment_id], "tags.`harness.role` = 'trial'")
    assert len(runs) == 4
    # Resumed, it queues nothing more.
    assert enqueue(search.study, configurations, (0, 1)) == 4 and len(search.study.trials) == 8


def test_a_running_run_is_not_queued_again(tmp_path):
    study = optuna.create_study(study_name="running", storage=open_storage(stores(tmp_path)[0]))
    configuration = {"insertion": "none", "width": 0.25}
    assert enqueue(study, [configuration], (1,)) == 1
    study.ask()  # another machine took it and trains it
    assert enqueue(study, [configuration], (1,)) == 1 and len(study.trials) == 1


def test_two_machines_confirming_at_once_train_each_run_once(tmp_path, monkeypatch):
    from harness.cli import main

    space = write_space(tmp_path, SPACE)
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    search = ["search", "--space", str(space), "--study", "both", "--trials", "2", "--pruner", "none", "--seed", "0"]
    assert main([*search, "--confirm", "0"]) == 0  # the search here; the two machines' confirmations in processes
    confirming = [
        subprocess.Popen(
            [sys.executable, "-m", "harness.cli", *search, "--confirm", "1", "--seeds", "2"],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in confirming:
        _, errors = process.communicate(timeout=600)
        assert process.returncode == 0, errors[-3000:]
    storage = open_storage(f"journal:{tmp_path / 'home' / 'optuna-journal.log'}")
    trained = counted_trials(optuna.load_study(study_name="both-confirm", storage=storage))
    assert len(trained) == 4 and len({enqueued_key(t) for t in trained}) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trained)
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("both").experiment_id], "tags.`harness.stage` = 'confirm'")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
