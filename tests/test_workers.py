import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.study.search import SURPLUS, counted_trials
from harness.study.storage import open_storage

GRID_OF_9 = {
    "dataset": {"name": "digits", "train_size": 150, "val_size": 50, "test_size": 50},
    "training": {"epochs": 2, "seed": 0},
    "params": {"insertion": "dense", "function": ["softplus", "tanh", "sin"], "order": [1, 2, 3], "width": 0.25},
}


def harness_search(tmp_path, space, *args, env=None):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    command = [sys.executable, "-m", "harness.cli", "search", "--space", str(path), "--study", "shared", "--confirm", "0", *args]
    return command, {**os.environ, **(env or {})}


def check_shared_study(storage, tracking_uri, n_trials):
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    # Workers that asked at the same moment as the last trial leave a FAIL marked surplus, untrained.
    surplus = [t for t in study.trials if t.user_attrs.get(SURPLUS)]
    assert all(t.state == optuna.trial.TrialState.FAIL and "mlflow_run_id" not in t.user_attrs for t in surplus)
    trials = counted_trials(study)
    # A trial that crashed (a store busy under the load, say) is recorded with its reason and does not count.
    crashed = [t for t in study.trials if t not in surplus and t not in trials]
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("failure_reason") for t in crashed), \
        [(t.number, t.state.name, t.user_attrs) for t in crashed]
    assert len(trials) == n_trials
    assert trials[0].user_attrs["baseline"] and trials[0].state == optuna.trial.TrialState.COMPLETE
    param_sets = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(param_sets)) == n_trials  # the grid ran each point once, beside the baseline
    assert len({t.user_attrs["pid"] for t in trials}) > 1  # several workers took part
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    parents = [r for r in runs if r.data.tags.get("harness.role") == "search"]
    children = [r for r in runs if r.data.tags.get("harness.stage") == "search" and r.info.status != "FAILED"]
    assert len(parents) == 1 and len(children) == n_trials, [r.data.tags.get("failure_reason") for r in runs]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.run_id for r in children} == {t.user_attrs["mlflow_run_id"] for t in trials}
    for run in children:
        assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    return study, parents[0]


def test_three_workers_share_a_postgres_study_and_an_mlflow_server(tmp_path, postgres_database, mlflow_server):
    command, env = harness_search(
        tmp_path, GRID_OF_9, "--workers", "3", "--trials", "7", "--sampler", "grid", "--pruner", "none",
        "--storage", postgres_database, "--tracking-uri", mlflow_server,
    )
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "s3cret-pw" not in run.stdout + run.stderr
    _, parent = check_shared_study(postgres_database, mlflow_server, 7)
    assert "***" in parent.data.tags["optuna_storage"] and "s3cret-pw" not in str(parent.data)


def test_three_workers_on_the_journal_default(tmp_path):
    command, env = harness_search(tmp_path, GRID_OF_9, "--workers", "3", "--trials", "7", "--sampler", "grid",
                                  "--pruner", "none", "--confirm", "1", "--seeds", "2",
                                  env={"HARNESS_HOME": str(tmp_path / "home")})
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    journal = tmp_path / "home" / "optuna-journal.log"
    assert journal.exists() and not (tmp_path / "home" / "optuna.db").exists()
    tracking = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    _, parent = check_shared_study(f"journal:{journal}", tracking, 7)
    # The confirmation ran on the workers too: the best configuration and its baseline, 2 seeds each.
    confirm = optuna.load_study(study_name="shared-confirm", storage=open_storage(f"journal:{journal}"))
    assert len(counted_trials(confirm)) == 4 and "confirm worker 3" in run.stdout
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id], "tags.`harness.stage` = 'confirm'")
    assert len(runs) == 4 and {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}


def test_a_killed_worker_leaves_the_study_to_the_others(tmp_path, postgres_database):
    space = {**GRID_OF_9, "training": {"epochs": 8, "seed": 0}, "dataset": {**GRID_OF_9["dataset"], "train_size": 600}}
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command, env = harness_search(tmp_path, space, "--workers", "3", "--trials", "5", "--sampler", "grid",
                                  "--pruner", "none", "--storage", postgres_database, "--tracking-uri", tracking,
                                  "--heartbeat", "2")
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = None
    storage = open_storage(postgres_database)  # one connection pool for the polling, not one per poll
    deadline = time.time() + 300
    while victim is None and time.time() < deadline:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="shared", storage=storage)
        except KeyError:
            continue
        # Trials that train: their MLflow run exists and is recorded on them.
        running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) and running:
            victim = running[-1]  # the newest: the furthest from finishing before the kill lands
    assert victim is not None, "no trial was running"
    worker_command = Path(f"/proc/{victim.user_attrs['pid']}/cmdline").read_bytes()
    assert b"search" in worker_command and b"s3cret-pw" not in worker_command  # URLs travel in the environment
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    _, errors = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, errors[-3000:]
    assert "exited with code -9" in errors

    study = optuna.load_study(study_name="shared", storage=storage)
    assert study.trials[victim.number].state == optuna.trial.TrialState.FAIL
    assert len(counted_trials(study)) == 5
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    client = MlflowClient(tracking)
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status in ("KILLED", "FAILED")
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    left_running = [r for r in runs if r.info.status == "RUNNING"]
    assert not left_running, [(r.info.run_name, r.data.tags.get("harness.pid"), r.data.metrics) for r in left_running]


def test_gpus_on_a_machine_without_one_is_a_clear_error(tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    command, env = harness_search(tmp_path, GRID_OF_9, "--gpus", "all", env={"HARNESS_HOME": str(tmp_path)})
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "harness: error: --gpus: TensorFlow sees no GPU on this machine" in run.stderr


def test_workers_per_gpu_needs_gpus(tmp_path):
    command, env = harness_search(tmp_path, GRID_OF_9, "--workers-per-gpu", "2", env={"HARNESS_HOME": str(tmp_path)})
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "harness: error: --workers-per-gpu must be at least 1 and comes with --gpus; got 2")
