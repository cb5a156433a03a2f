import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.study.records import BASELINE, SURPLUS, counted_trials
from harness.study.storage import open_storage, resolve_stores
from harness.study.tracking import process_alive

GRID_OF_9 = {
    "dataset": {"name": "digits", "train_size": 150, "val_size": 50, "test_size": 50},
    "training": {"epochs": 2, "seed": 0},
    "params": {"insertion": "dense", "function": ["softplus", "tanh", "sin"], "order": [1, 2, 3], "width": 0.25},
}


def harness_search(tmp_path, space, *args, env=None):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "search",
        "--space",
        str(path),
        "--study",
        "shared",
        "--confirm",
        "0",
        *args,
    ]
    return command, {**os.environ, **(env or {})}


def check_shared_study(storage, tracking_uri, n_trials):
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    # Workers that asked at the same moment as the last trial leave a FAIL marked surplus, untrained.
    surplus = [t for t in study.trials if t.user_attrs.get(SURPLUS)]
    assert all(t.state == optuna.trial.TrialState.FAIL and "mlflow_run_id" not in t.user_attrs for t in surplus)
    trials = counted_trials(study)
    # A trial that crashed (a store busy under the load, say) is recorded with its reason and does not count.
    crashed = [t for t in study.trials if t not in surplus and t not in trials]
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("failure_reason") for t in crashed), [
        (t.number, t.state.name, t.user_attrs) for t in crashed
    ]
    assert len(trials) == n_trials
    # The baseline was queued and trained to the end, unless a store busy under the load failed it: then with its
    # reason, like any crashed trial (it is trial 0 unless a worker queued it again after losing it).
    baselines = [t for t in study.trials if t.user_attrs.get(BASELINE)]
    assert baselines and (
        any(t.state == optuna.trial.TrialState.COMPLETE for t in baselines)
        or all(t.user_attrs.get("failure_reason") for t in baselines)
    ), [(t.number, t.state.name, t.user_attrs) for t in study.trials]
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
        tmp_path,
        GRID_OF_9,
        "--workers",
        "3",
        "--trials",
        "7",
        "--sampler",
        "grid",
        "--pruner",
        "none",
        "--storage",
        postgres_database,
        "--tracking-uri",
        mlflow_server,
    )
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "s3cret-pw" not in run.stdout + run.stderr
    _, parent = check_shared_study(postgres_database, mlflow_server, 7)
    assert "***" in parent.data.tags["optuna_storage"] and "s3cret-pw" not in str(parent.data)


def test_workers_on_the_journal_default_and_every_command_finds_their_study(tmp_path, monkeypatch):
    home = tmp_path / "home"
    command, env = harness_search(
        tmp_path,
        GRID_OF_9,
        "--workers",
        "2",
        "--trials",
        "5",
        "--sampler",
        "grid",
        "--pruner",
        "none",
        "--confirm",
        "1",
        "--seeds",
        "2",
        env={"HARNESS_HOME": str(home)},
    )
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    journal = home / "optuna-journal.log"
    assert journal.exists() and not (home / "optuna.db").exists()
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    _, parent = check_shared_study(f"journal:{journal}", tracking, 5)
    # The confirmation ran on the workers too: the best configuration and its baseline, 2 seeds each.
    confirm = optuna.load_study(study_name="shared-confirm", storage=open_storage(f"journal:{journal}"))
    assert len(counted_trials(confirm)) == 4 and "confirm worker 2" in run.stdout
    client = MlflowClient(tracking)
    runs = client.search_runs(
        [client.get_experiment_by_name("shared").experiment_id], "tags.`harness.stage` = 'confirm'"
    )
    assert len(runs) == 4 and {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}

    # The other commands in this process, on the same default home.
    from harness.cli import main

    monkeypatch.setenv("HARNESS_HOME", str(home))
    assert main(["report", "--study", "shared", "--out", str(tmp_path / "report")]) == 0
    trials = pd.read_csv(tmp_path / "report" / "trials.csv")
    completed = trials[trials.state == "COMPLETE"]  # beside any trial a store busy under the load failed
    assert (
        completed.stage.value_counts().to_dict() == {"search": 5, "confirm": 4} and "duration_s" in trials
    )  # read from the Optuna study, not pieced together from MLflow
    # One more trial in one process: the same study, resumed, not a second one.
    one_process = command[3 : command.index("--workers")]
    assert main([*one_process, "--trials", "6", "--sampler", "grid", "--pruner", "none", "--confirm", "0"]) == 0
    assert len(counted_trials(optuna.load_study(study_name="shared", storage=open_storage(f"journal:{journal}")))) == 6
    assert optuna.get_all_study_names(open_storage(f"journal:{journal}")) == ["shared", "shared-confirm"]
    runs = client.search_runs(
        [client.get_experiment_by_name("shared").experiment_id], "tags.`harness.stage` = 'search'"
    )
    assert len([r for r in runs if r.data.tags.get("harness.role") == "trial"]) == 6


def test_a_killed_process_not_yet_reaped_is_not_alive():
    """A killed worker stays a zombie until its pool waits for it; its trial must not count as in flight meanwhile."""
    process = subprocess.Popen(["sleep", "30"])
    assert process_alive(process.pid)
    process.kill()
    deadline = time.time() + 10
    while Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.time() < deadline:
        time.sleep(0.05)
    assert not process_alive(process.pid)  # a zombie: kill(pid, 0) still answers
    process.wait()
    assert not process_alive(process.pid)


def test_a_killed_worker_leaves_the_study_to_the_others(tmp_path, postgres_database):
    space = {**GRID_OF_9, "training": {"epochs": 8, "seed": 0}, "dataset": {**GRID_OF_9["dataset"], "train_size": 600}}
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command, env = harness_search(
        tmp_path,
        space,
        "--workers",
        "2",
        "--trials",
        "4",
        "--sampler",
        "grid",
        "--pruner",
        "none",
        "--storage",
        postgres_database,
        "--tracking-uri",
        tracking,
        "--heartbeat",
        "2",
    )
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
        running = [
            t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
        ]
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) and running:
            victim = running[-1]  # the newest: the furthest from finishing before the kill lands
    assert victim is not None, "no trial was running"
    worker_command = Path(f"/proc/{victim.user_attrs['pid']}/cmdline").read_bytes()
    assert b"worker" in worker_command and b"s3cret-pw" not in worker_command  # the job travels in the environment
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    _, errors = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, errors[-3000:]
    assert "exited with code -9" in errors

    study = optuna.load_study(study_name="shared", storage=storage)
    assert study.trials[victim.number].state == optuna.trial.TrialState.FAIL
    assert len(counted_trials(study)) == 4
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    client = MlflowClient(tracking)
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status in ("KILLED", "FAILED")
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    left_running = [r for r in runs if r.info.status == "RUNNING"]
    assert not left_running, [(r.info.run_name, r.data.tags.get("harness.pid"), r.data.metrics) for r in left_running]


def test_gpus_on_a_machine_without_one_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    from harness.cli import main

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    command, _ = harness_search(tmp_path, GRID_OF_9, "--gpus", "all")
    assert main(command[3:]) == 2  # in this process: TensorFlow is loaded here already
    assert "harness: error: --gpus: TensorFlow sees no GPU on this machine" in capsys.readouterr().err


def test_workers_per_gpu_needs_gpus(tmp_path):
    command, env = harness_search(tmp_path, GRID_OF_9, "--workers-per-gpu", "2", env={"HARNESS_HOME": str(tmp_path)})
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "harness: error: --workers-per-gpu must be at least 1 and comes with --gpus; got 2"
    )


def test_the_stores_come_from_the_environment_for_every_command(tmp_path, monkeypatch):
    storage, tracking = f"sqlite:///{tmp_path / 'elsewhere.db'}", f"sqlite:///{tmp_path / 'elsewhere-mlflow.db'}"
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_STORAGE", storage)
    monkeypatch.setenv("HARNESS_TRACKING_URI", tracking)
    assert resolve_stores() == (storage, tracking)
    assert resolve_stores("sqlite:///flag.db") == ("sqlite:///flag.db", tracking)  # a flag wins
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(GRID_OF_9))
    from harness.cli import main

    assert main(["search", "--space", str(path), "--study", "env", "--trials", "1", "--confirm", "0"]) == 0
    assert main(["report", "--study", "env", "--out", str(tmp_path / "report")]) == 0
    assert len(pd.read_csv(tmp_path / "report" / "trials.csv")) == 1
    assert not (tmp_path / "home").exists()  # no default store was made, nor used


def write_idx(path, array):
    """An idx file as MNIST ships them: magic, dimensions, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def test_every_setting_reaches_a_worker_pinned_to_its_gpu(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 200), ("t10k", 60)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))
    # The data is only where --data-dir says, and the machine has one GPU as far as the harness can tell.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("harness.training.device.gpu_ids", lambda text, per_gpu=1: [0])
    space = {
        "dataset": {"name": "mnist", "train_size": 150, "val_size": 50, "test_size": 50},
        "training": {"epochs": 1, "seed": 0},
        "params": {"insertion": "dense", "function": ["softplus", "tanh"], "order": 2, "width": 0.25},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    from harness.cli import main

    assert (
        main(
            [
                "search",
                "--space",
                str(path),
                "--study",
                "pinned",
                "--trials",
                "2",
                "--confirm",
                "0",
                "--pruner",
                "none",
                "--gpus",
                "0",
                "--data-dir",
                str(tmp_path / "data"),
            ]
        )
        == 0
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pinned").experiment_id], "tags.`harness.role` = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    # Trained in a worker process of its own, pinned to GPU 0 even though it is the only one.
    assert {r.data.tags.get("cuda_visible_devices") for r in runs} == {"0"}
    assert {r.data.tags["harness.pid"] for r in runs} != {str(os.getpid())}


def test_a_timeout_ends_a_pool_as_it_ends_one_process(tmp_path, monkeypatch):
    from harness.cli import main

    home = tmp_path / "home"
    command, env = harness_search(
        tmp_path,
        GRID_OF_9,
        "--workers",
        "2",
        "--trials",
        "50",
        "--timeout",
        "3",
        "--pruner",
        "none",
        env={"HARNESS_HOME": str(home)},
    )
    monkeypatch.setenv("HARNESS_HOME", str(home))
    for pooled in (True, False):
        if pooled:
            run = subprocess.run(
                [*command, "--study", "timed-True"], env=env, capture_output=True, text=True, timeout=600
            )
            assert run.returncode == 0, run.stderr[-3000:]  # stopped as asked: the study need not be full
        else:  # one process: this one
            assert main([*[a for a in command[3:] if a not in ("--workers", "2")], "--study", "timed-False"]) == 0
        client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
        (parent,) = client.search_runs(
            [client.get_experiment_by_name(f"timed-{pooled}").experiment_id], "tags.`harness.role` = 'search'"
        )
        assert parent.info.status == "FINISHED"
        study = optuna.load_study(
            study_name=f"timed-{pooled}", storage=open_storage(f"journal:{home / 'optuna-journal.log'}")
        )
        assert len(counted_trials(study)) < 50  # it stopped starting trials: 50 would take minutes
