"""Searches whose trials run as Ray Tune trials, on a real Ray cluster started by the test."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.study.records import counted_trials
from harness.study.storage import open_storage
from harness.study.tracking import RUN_STATUS
from tests.conftest import free_port, unavailable
from tests.test_workers import harness_search

SPACE = {
    "dataset": {"name": "digits", "train_size": 150, "val_size": 50, "test_size": 50},
    "training": {"epochs": 2, "seed": 0},
    # 12 grid points: the 8 trials and the ones a killed driver leaves FAIL never run out of them
    "params": {"insertion": "dense", "function": ["softplus", "tanh", "sin"], "order": [1, 2, 3, 4], "width": 0.25},
}


pytestmark = pytest.mark.xdist_group("ray")  # one xdist worker, so one Ray cluster for the module

# A cluster of the test's own on 127.0.0.1, without the token Ray asks of drivers by default.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A Ray head on this machine with 2 CPUs and 2 GPUs it only believes it has, in a process group of its own
    (stopping it stops no other Ray on the machine): its address."""
    ray = shutil.which("ray", path=os.path.dirname(sys.executable))
    if ray is None:
        unavailable("Ray is not installed (pip install -e '.[ray]')")
    port = free_port()
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--num-gpus=2",
            "--include-dashboard=false",
            f"--temp-dir={tmp_path_factory.mktemp('ray')}",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=RAY_ENV,
        start_new_session=True,
    )
    try:
        wait_for(lambda: head.poll() is not None or listening(port), "the Ray head answering", timeout=120)
        if head.poll() is not None:
            unavailable(f"ray start exited with code {head.returncode}")
        yield f"127.0.0.1:{port}"
    finally:  # its processes' files are in the test's folder: no need for Ray's slow, graceful stop
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)


def listening(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def search_command(tmp_path, address, *args):
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    command, _ = harness_search(
        tmp_path,
        SPACE,
        *("--ray", address, "--cpus-per-trial", "1", "--gpus-per-trial", "1", "--trials", "8", "--sampler", "grid"),
        *("--pruner", "none", "--storage", storage, "--tracking-uri", tracking, *args),
    )
    return command, storage, tracking


def wait_for(condition, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"{what} never happened")


def test_trials_run_on_ray_two_at_a_time_survive_a_lost_worker_and_a_killed_driver(tmp_path, ray_cluster):
    command, storage, tracking = search_command(tmp_path, ray_cluster, "--max-failures", "1")
    env = {**RAY_ENV, "HARNESS_HOME": str(tmp_path / "home")}
    client = MlflowClient(tracking)

    def trial_runs(status=None):
        experiment = client.get_experiment_by_name("shared")
        if experiment is None:
            return []
        runs = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'trial'")
        return [r for r in runs if status is None or r.info.status == status]

    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # A trial's worker killed mid-trial: Ray runs the trial again. A run still RUNNING once its process is dead
        # was killed mid-trial; one FINISHED had ended just before, so another is killed.
        while True:
            victim = wait_for(lambda: trial_runs("FINISHED") and trial_runs("RUNNING"), "a trial training")[0]
            os.kill(int(victim.data.tags["harness.pid"]), signal.SIGKILL)
            if client.get_run(victim.info.run_id).info.status == "RUNNING":
                break
        # The driver killed once more trials finished: the same command resumes the study.
        wait_for(lambda: len(trial_runs("FINISHED")) >= 3 and trial_runs("RUNNING"), "three trials finished")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    completed_before = {t.number: t.params for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    counted = counted_trials(study)
    assert len(counted) == 8 and trained_or_failed_with_reason(counted)
    for number, params in completed_before.items():  # none trained again
        assert study.trials[number].state == optuna.trial.TrialState.COMPLETE and study.trials[number].params == params
    sampled = [tuple(sorted(t.params.items())) for t in counted if t.params]
    assert len(set(sampled)) == len(sampled)  # no grid point twice
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    stopped = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert stopped and all(t.user_attrs.get("failure_reason") for t in stopped)

    experiment = client.get_experiment_by_name("shared")
    runs = client.search_runs([experiment.experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("harness.role") == "search"]
    finished = trial_runs("FINISHED")
    complete = [t for t in counted if t.state == optuna.trial.TrialState.COMPLETE]
    assert {r.info.run_id for r in finished} == {t.user_attrs["mlflow_run_id"] for t in complete}
    assert {r.data.tags["mlflow.parentRunId"] for r in finished} <= {p.info.run_id for p in parents}
    # Each trial saw only its own (make-believe) GPU, and both were used.
    assert {r.data.tags.get("cuda_visible_devices") for r in finished} == {"0", "1"}
    # The lost attempt's run is closed with why: by the driver when Ray retries it, or as its dead process's run.
    lost = client.get_run(victim.info.run_id)
    assert lost.info.status in ("FAILED", "KILLED") and lost.data.tags["failure_reason"]


def test_a_benchmark_runs_its_seeded_runs_on_ray(tmp_path, ray_cluster):
    space = {
        "dataset": SPACE["dataset"],
        "training": {"epochs": 1},
        "params": {"width": 0.25},
        "configurations": [{"insertion": "dense", "function": "tanh", "order": 2}],
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        *(sys.executable, "-m", "harness.cli", "benchmark", "--space", str(tmp_path / "space.yaml"), "--study", "rb"),
        *("--seeds", "1", "--ray", ray_cluster, "--gpus-per-trial", "1", "--storage", storage, "--tracking-uri"),
        tracking,
    ]
    run = subprocess.run(
        command, env={**RAY_ENV, "HARNESS_HOME": str(tmp_path / "home")}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    study = optuna.load_study(study_name="rb", storage=open_storage(storage))
    counted = counted_trials(study)  # the configuration and its baseline (added), side by side on the two GPUs
    assert len(counted) == 2 and trained_or_failed_with_reason(counted)
    assert sorted((t.user_attrs["insertion"], t.user_attrs["seed"]) for t in counted) == [("dense", 0), ("none", 0)]
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("rb").experiment_id], "tags.`harness.role` = 'trial'")
    assert sorted(r.info.status for r in runs) == sorted(RUN_STATUS[t.state.name] for t in counted)
    assert {r.data.tags.get("cuda_visible_devices") for r in runs} <= {"0", "1"}  # each on a Ray worker's GPU


def trained_or_failed_with_reason(trials):
    """Whether at least half of `trials` completed and each other failed with its reason recorded, as the tool
    records a trial that crashed (CI once failed one of these on its loaded machine: the reason shows in pytest's
    warnings)."""
    failed = [t for t in trials if t.state != optuna.trial.TrialState.COMPLETE]
    for trial in failed:
        warnings.warn(f"trial {trial.number} ended {trial.state.name}: {trial.user_attrs.get('failure_reason')}")
    reasons_recorded = all(
        t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("failure_reason") for t in failed
    )
    return reasons_recorded and len(failed) <= len(trials) / 2


def test_the_studys_pruner_stops_a_lagging_trial_through_what_ray_reports(tmp_path):
    # Tune's calls, made as Tune makes them (no cluster needed): 3 trials at 0.9 a epoch, then one at 0.1.
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler
    from rich.console import Console

    from harness.study.progress import StageProgress
    from harness.study.ray_pool import EPOCH, REMEMBERED, StudyPruning, StudySearch
    from harness.study.search import Search
    from harness.study.settings import SearchSettings
    from harness.study.space import parse_space

    stores = {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    space = parse_space({**SPACE, "training": {"epochs": 3, "seed": 0}})
    settings = SearchSettings("pruned", n_trials=4, sampler="grid", pruner="median", baseline_every=0, **stores)
    stage = Search(space, settings, console=Console(quiet=True))
    with stage.parent_run(), StageProgress(Console(quiet=True), "pruned", 4, 0) as shown:
        searcher = StudySearch(stage, shown)
        scheduler = StudyPruning(searcher)
        decisions = []
        for number, accuracy in enumerate((0.9, 0.9, 0.9, 0.1)):
            config = searcher.suggest(f"t{number}")
            assert config["number"] == number and config["prunable"]
            for epoch in range(3):
                result = {EPOCH: epoch, "val_accuracy": accuracy, "prunable": config["prunable"]}
                decision = scheduler.on_trial_result(None, SimpleNamespace(trial_id=f"t{number}"), result)
                if decision == TrialScheduler.STOP:
                    break
            decisions.append((decision, epoch))
            if decision == TrialScheduler.STOP:  # Tune then completes the trial with its last result
                searcher.on_trial_complete(f"t{number}", result)
            else:
                searcher.on_trial_complete(f"t{number}", {"val_accuracy": accuracy, REMEMBERED + "outcome": "COMPLETE"})
    assert decisions == [(TrialScheduler.CONTINUE, 2)] * 3 + [
        (TrialScheduler.STOP, 1)
    ]  # stopped at its second epoch (the first warms up)
    trials = stage.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 + ["PRUNED"]
    assert trials[3].user_attrs["failure_reason"].startswith("pruned after epoch 2 of 3")
    assert trials[3].intermediate_values == {0: 0.1, 1: 0.1}


def test_a_ray_address_that_does_not_answer_is_one_line_within_seconds(tmp_path):
    command, _, _ = search_command(tmp_path, f"127.0.0.1:{free_port()}")
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home")}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)  # 3 s here
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("harness: error: --ray 127.0.0.1:") and "no Ray cluster answers there" in line
    assert not (tmp_path / "home").exists() and not (tmp_path / "optuna.db").exists()


def test_without_the_ray_extra_one_line_names_it(tmp_path):
    command, _, _ = search_command(tmp_path, "local")
    without_ray = "import sys; sys.modules['ray'] = None; from harness.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", without_ray, *command[3:]],
        env={**os.environ, "HARNESS_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "harness: error: --ray needs Ray, which is not installed: pip install 'taylor-harness[ray]'"
    ]
    assert not (tmp_path / "home").exists()
