import contextlib
import datetime
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness import reporting as report
from harness.study.records import SURPLUS, counted_trials
from harness.study.objective import StudyFull
from harness.study import search as search_module
from harness.study.search import Search, fail_dead_trials, held_by_another_process, why_abandoned
from harness.study.settings import SearchSettings
from harness.study.space import load_space
from harness.study.tracking import Tracker

TINY = {
    "dataset": {"name": "digits", "train_size": 120, "val_size": 40, "test_size": 40},
    "training": {"epochs": 2, "seed": 0},
    "params": {
        "insertion": ["none", "dense", "input"],
        "function": ["softplus", "tanh"],
        "order": {"low": 1, "high": 4},
        "mode": ["series", "weighted"],
        "conditioning": ["tanh"],
        "learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
        "batch_size": [32],
        "width": [0.25],
    },
}


def write_space(folder, space, name="space.yaml"):
    path = folder / name
    path.write_text(yaml.safe_dump(space))
    return path


def stores(folder):
    return f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}"


def search_args(folder, space_path, *extra):
    """`harness search` on stores in `folder`, without confirmation unless `extra` asks for it (the last --confirm counts)."""
    storage, tracking = stores(folder)
    return [
        "search",
        "--space",
        str(space_path),
        "--storage",
        storage,
        "--tracking-uri",
        tracking,
        "--confirm",
        "0",
        *extra,
    ]


def searched_once(folder, *args):
    """`harness search` in this process on stores in `folder`; what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(search_args(folder, *args)) == 0
    return printed.getvalue()


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """Three trials of TINY, searched once for the tests that read them (in one xdist worker: their group):
    (folder of its stores, what the search printed)."""
    folder = tmp_path_factory.mktemp("tiny")
    return folder, searched_once(
        folder, write_space(folder, TINY), "--study", "tiny", "--trials", "3", "--seed", "0", "--pruner", "none"
    )


@pytest.mark.xdist_group("tiny-study")
def test_three_trials_logged_to_mlflow_and_optuna(tiny_study):
    folder, printed = tiny_study
    assert "Browse runs:    harness ui" in printed
    # Not a terminal: one progress line per epoch of the trial in flight.
    assert "search trial 1 epoch 1/2, val acc" in printed and "search trial 1 epoch 2/2, val acc" in printed
    assert "search trial 0 (the baseline): COMPLETE" in printed
    storage, tracking = stores(folder)
    for store in ("optuna.db", "mlflow.db"):  # a commit appends to the write-ahead log
        with contextlib.closing(sqlite3.connect(folder / store)) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("harness.role") == "search"]
    children = [r for r in runs if r.data.tags.get("harness.role") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    # What the MLflow UI shows: the training view, runs named by what they train, their data, the best so far.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.harness-search"])  # the trials, flat, best first
    shown = client.search_runs(
        [experiment.experiment_id], view["searchFilter"], order_by=[view["orderByKey"] + " DESC"]
    )
    assert {r.info.run_id for r in shown} == {r.info.run_id for r in children}
    assert {"params.`insertion`", "metrics.`best_val_accuracy`", "attributes.`Dataset`"} <= set(view["selectedColumns"])
    assert "metrics.`test_accuracy`" not in view["selectedColumns"]  # selection views show the selection metric
    accuracies = [r.data.metrics["best_val_accuracy"] for r in shown]
    assert accuracies == sorted(accuracies, reverse=True)
    # The confirmation view: seeded runs only (none here), grouped by the configuration tag every run carries.
    confirmation = json.loads(experiment.tags["mlflow.sharedViewState.harness-confirmation"])
    assert not client.search_runs([experiment.experiment_id], confirmation["searchFilter"])
    assert confirmation["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "harness.configuration"}]
    assert "baseline, width 0.25, batch_size 32" in {r.data.tags["harness.configuration"] for r in children}
    best = client.get_metric_history(parents[0].info.run_id, "best_val_accuracy")
    assert [m.step for m in best] == [0, 1, 2] and best[-1].value == pytest.approx(study.best_value)
    for run in children:
        (dataset_input,) = run.inputs.dataset_inputs
        assert dataset_input.dataset.name == "digits" and len(dataset_input.dataset.digest) == 16
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert study.trials[0].user_attrs["baseline"] and by_number[0].data.params["insertion"] == "none"
    assert by_number[0].info.run_name == "t0 baseline"
    for trial in study.trials:
        run = by_number[trial.number]
        assert run.info.run_name.startswith(f"t{trial.number} ")
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        params = trial.params or {
            k: v for k, v in trial.user_attrs.items() if k in ("insertion", "width", "learning_rate")
        }
        for name, value in params.items():
            assert run.data.params[name] == str(value)
        assert run.data.params["dataset"] == "digits" and run.data.params["epochs"] == "2"
        for tag in (
            "optuna.trial_number",
            "harness.study",
            "state",
            "backend",
            "backend_version",
            "keras_version",
            "device",
            "determinism",
            "git_commit",
        ):
            assert run.data.tags[tag]
        assert run.data.tags["state"] == "COMPLETE"
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert [m.step for m in history] == [0, 1]
        for metric in ("test_accuracy", "flops", "total_params", "train_seconds", "latency_ms"):
            assert metric in run.data.metrics
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(trial.value)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "model_summary.txt" in artifacts
        assert ("series_fit.png" in artifacts) == (run.data.params["insertion"] != "none")
        # Best-only by default: a trial saves its model when it beats every earlier one.
        earlier = [t.value for t in study.trials[: trial.number]]
        assert ("model.keras" in artifacts) == (not earlier or trial.value > max(earlier))


def test_divergence_is_recorded_and_the_study_goes_on(tmp_path):
    space = {
        **TINY,
        "params": {
            "insertion": "dense",
            "function": "exp",
            "order": 12,
            "learning_rate": [50.0, 1.0e-3],
            "width": 0.25,
        },
    }
    args = search_args(tmp_path, write_space(tmp_path, space), "--study", "wild", "--trials", "3", "--sampler", "grid")
    assert main(args) == 0
    study = optuna.load_study(study_name="wild", storage=stores(tmp_path)[0])
    by_rate = {t.params["learning_rate"]: t for t in study.trials if t.params}
    assert by_rate[50.0].state == optuna.trial.TrialState.FAIL
    assert by_rate[50.0].user_attrs["failure_reason"].startswith("diverged: loss became nan")
    assert by_rate[1.0e-3].state == optuna.trial.TrialState.COMPLETE
    run = MlflowClient(stores(tmp_path)[1]).get_run(by_rate[50.0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"].startswith("diverged")


def test_a_trial_asked_for_once_the_study_is_full_never_trains(tmp_path):
    # Workers sharing a study can each pass the stop check before any of them asks: the later number stands down.
    space_path = write_space(tmp_path, {**TINY, "params": {**TINY["params"], "insertion": "dense"}})
    assert main(search_args(tmp_path, space_path, "--study", "full", "--trials", "2", "--pruner", "none")) == 0
    storage, tracking = stores(tmp_path)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("full").experiment_id
    parent = client.search_runs([experiment], "tags.`harness.role` = 'search'")[0].info.run_id
    joiner = Search(
        load_space(space_path),
        SearchSettings("full", n_trials=2, storage=storage, tracking_uri=tracking, parent_run_id=parent),
    )
    joiner.study.optimize(joiner.objective, n_trials=3, catch=(StudyFull,))  # as if it had passed the stop check
    late = joiner.study.trials[-1]
    assert len(joiner.study.trials) == 3 and late.state == optuna.trial.TrialState.FAIL and late.user_attrs[SURPLUS]
    assert len(counted_trials(joiner.study)) == 2
    assert len(client.search_runs([experiment], "tags.`harness.role` = 'trial'")) == 2  # no run for it
    assert len(report.load_trials("full", storage, tracking)) == 2


def test_only_trials_whose_worker_died_are_failed_not_one_still_being_claimed(tmp_path):
    # A worker writes its host, then its pid: between the two, a peer must not take the trial for a dead one's.
    study = optuna.create_study()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claimed, alive, dead = study.ask(), study.ask(), study.ask()
    claimed.set_user_attr("host", socket.gethostname())
    for trial, pid in ((alive, os.getpid()), (dead, int(gone.stdout))):
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", pid)
    # The dead one's run was closed FINISHED before the study recorded the trial (a Ray driver killed meanwhile).
    tracker = Tracker(stores(tmp_path)[1], "claims", spool_folder=tmp_path / "spool")
    run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
    tracker.client.set_terminated(run_id, "FINISHED")
    dead.set_user_attr("mlflow_run_id", run_id)
    fail_dead_trials(study, tracker)
    assert [t.state.name for t in study.trials] == ["RUNNING", "RUNNING", "FAIL"]
    run = tracker.client.get_run(run_id)  # the run agrees with the study, and says why
    assert run.info.status == "FAILED" and "died while it ran" in run.data.tags["failure_reason"]
    assert "died while it ran" in study.trials[2].user_attrs["failure_reason"]


def test_a_trial_a_dead_process_asked_for_but_never_claimed_is_failed_and_run_again(tmp_path, monkeypatch):
    # A driver killed between asking for a trial and claiming it: the trial stays RUNNING with no pid. Counted as
    # taken for good, it would leave the resumed study one trial short.
    monkeypatch.setattr(search_module, "CLAIM_WINDOW", datetime.timedelta(seconds=1))
    storage, _ = stores(tmp_path)
    optuna.create_study(study_name="orphan", storage=storage, direction="maximize").ask()
    time.sleep(1.5)
    space_path = write_space(tmp_path, {**TINY, "params": {**TINY["params"], "insertion": "dense"}})
    assert main(search_args(tmp_path, space_path, "--study", "orphan", "--trials", "2", "--pruner", "none")) == 0
    study = optuna.load_study(study_name="orphan", storage=storage)
    assert len(counted_trials(study)) == 2
    orphan = study.trials[0]
    assert orphan.state == optuna.trial.TrialState.FAIL
    assert "before it claimed it" in orphan.user_attrs["failure_reason"]


def test_a_stage_waits_for_trials_other_processes_hold_or_are_claiming_not_for_orphans():
    def running(started_ago, **claim):
        started = datetime.datetime.now() - datetime.timedelta(seconds=started_ago)
        return optuna.trial.FrozenTrial(
            0, optuna.trial.TrialState.RUNNING, None, started, None, {}, {}, claim, {}, {}, 0
        )

    here = {"host": socket.gethostname()}
    assert not held_by_another_process(running(600, **here, pid=os.getpid()))  # this process's own
    assert held_by_another_process(running(600, **here, pid=os.getpid() + 1))  # a joiner's, however old
    assert held_by_another_process(running(5))  # just asked for, being claimed
    assert not held_by_another_process(running(120))  # asked for by a process that died before claiming it
    # ...which is failed, so that a resumed stage runs its trial again rather than count it as taken forever
    assert "died before it claimed it" in why_abandoned(running(120, **here))
    assert why_abandoned(running(5, **here)) is None and why_abandoned(running(600, **here, pid=os.getpid())) is None


def test_a_trial_another_worker_fails_under_it_is_closed_and_the_search_goes_on(tmp_path, capsys, monkeypatch):
    import keras

    from harness.study import lifecycle

    storage, tracking = stores(tmp_path)
    peer_storage = optuna.storages.RDBStorage(storage)  # its tables made before the search and the peer both look
    failed = []

    class PeerFailsTheBaselineAfterItsFirstEpoch(keras.callbacks.Callback):  # as a worker does that finds its
        def on_epoch_end(self, epoch, logs=None):  # heartbeat stale; the baseline's next report finds it FAIL
            if not failed:
                study = optuna.load_study(study_name="taken", storage=peer_storage)
                assert study.trials[0].intermediate_values and study.trials[0].state.name == "RUNNING"
                study.tell(0, state=optuna.trial.TrialState.FAIL)
                failed.append(0)

    train = lifecycle.run_trial

    def run_trial(params, dataset, *, callbacks=(), **kwargs):
        return train(params, dataset, callbacks=[*callbacks, PeerFailsTheBaselineAfterItsFirstEpoch()], **kwargs)

    monkeypatch.setattr(lifecycle, "run_trial", run_trial)
    code = main(
        search_args(tmp_path, write_space(tmp_path, TINY), "--study", "taken", "--trials", "2", "--pruner", "none")
    )
    assert code == 0 and failed
    assert "search #0: another worker marked it FAIL while it ran" in capsys.readouterr().out
    study = optuna.load_study(study_name="taken", storage=storage)
    taken = study.trials[0]
    assert taken.state == optuna.trial.TrialState.FAIL and "outcome" not in taken.user_attrs
    assert len(counted_trials(study)) == 2 and study.trials[1].user_attrs["baseline"]  # the baseline queued again
    client = MlflowClient(tracking)
    run = client.get_run(taken.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "another worker marked this trial FAIL" in run.data.tags["failure_reason"]
    runs = client.search_runs([client.get_experiment_by_name("taken").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_killed_search_resumes_without_losing_trials(tmp_path):
    space = {**TINY, "training": {"epochs": 6, "seed": 0}, "dataset": {**TINY["dataset"], "train_size": 400}}
    args = search_args(
        tmp_path,
        write_space(tmp_path, space),
        "--study",
        "killed",
        "--trials",
        "4",
        "--heartbeat",
        "1",
        "--pruner",
        "none",
    )
    command = [sys.executable, "-m", "harness.cli", *args]
    storage, tracking = stores(tmp_path)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            time.sleep(0.5)
            try:
                trials = optuna.load_study(study_name="killed", storage=storage).trials
            except KeyError:
                continue
            states = [t.state for t in trials]
            # Killed once the new trial trains: its MLflow run exists and is recorded on it.
            if (
                optuna.trial.TrialState.COMPLETE in states
                and states[-1] == optuna.trial.TrialState.RUNNING
                and "mlflow_run_id" in trials[-1].user_attrs
            ):
                break
        else:
            pytest.fail("the search never reached a second trial")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    completed_before = {t.number: t.params for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    # No wait for the heartbeat's grace period: on the same host, a trial whose process is gone is failed at once.

    assert subprocess.run(command, capture_output=True, timeout=400).returncode == 0
    study = optuna.load_study(study_name="killed", storage=storage)
    assert len(counted_trials(study)) == 4
    for number, params in completed_before.items():
        assert study.trials[number].state == optuna.trial.TrialState.COMPLETE and study.trials[number].params == params
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    killed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert killed
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for trial in killed:
        assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status in ("FAILED", "KILLED")


BAD_SPACES = {
    "unknown key": (
        {**TINY, "optimiser": "sgd"},
        "space.yaml: optimiser: unknown key; expected one of dataset, training, model, objectives, params",
    ),
    "misspelt key": (
        {**TINY, "training": {"epoch": 2}},
        "space.yaml: training.epoch: unknown key (did you mean 'epochs'?); expected one of epochs, seed",
    ),
    "unknown param": (
        {**TINY, "params": {"ordre": [1]}},
        "space.yaml: params.ordre: unknown parameter (did you mean 'order'?); expected one of",
    ),
    "wrong type": (
        {**TINY, "training": {"epochs": "ten"}},
        "space.yaml: training.epochs: Input should be a valid integer",
    ),
    "empty choices": (
        {**TINY, "params": {"function": []}},
        "space.yaml: params.function: the list of choices is empty",
    ),
    "low above high": (
        {**TINY, "params": {"order": {"low": 5, "high": 2}}},
        "space.yaml: params.order: low (5) is greater than high (2)",
    ),
    "unknown function": (
        {**TINY, "params": {"function": ["relu"]}},
        "space.yaml: params.function: 'relu' is not one of",
    ),
    "unknown insertion": (
        {**TINY, "params": {"insertion": ["head"]}},
        "space.yaml: params.insertion: 'head' is not one of",
    ),
    "order out of range": ({**TINY, "params": {"order": [2, 24]}}, "space.yaml: params.order: 24 is out of range"),
}


@pytest.mark.parametrize("case", BAD_SPACES)
def test_a_bad_space_is_one_error_line_and_exit_2(case, tmp_path, capsys):
    space, expected = BAD_SPACES[case]
    code = main(search_args(tmp_path, write_space(tmp_path, space), "--trials", "1"))
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ") and expected in lines[0], lines
    assert not (tmp_path / "optuna.db").exists()  # nothing half-made


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def read_until(process, text, timeout=240):
    """Lines of `process`'s output up to the first holding `text`."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    pytest.fail(f"never printed {text!r}: {lines}")


@pytest.mark.xdist_group("tiny-study")
def test_ui_answers_then_one_sigterm_stops_it_whole(tiny_study):
    port, tracking = free_port(), stores(tiny_study[0])[1]
    ui = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "ui", "--tracking-uri", tracking, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        printed = read_until(ui, f"MLflow UI at http://127.0.0.1:{port}")
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        experiment = requests.get(f"{url}/experiments/get-by-name", params={"experiment_name": "tiny"}, timeout=10)
        experiment_id = experiment.json()["experiment"]["experiment_id"]
        # Each study's link opens its trials view in the model-training view.
        link = (
            f"tiny, search trials, by validation accuracy: http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs"
        )
        assert read_until(ui, link, timeout=60)[-1].strip().endswith("viewStateShareKey=harness-search")
        assert (
            read_until(ui, "confirmation runs", timeout=60)[-1]
            .strip()
            .endswith("viewStateShareKey=harness-confirmation")
        )
        runs = requests.post(f"{url}/runs/search", json={"experiment_ids": [experiment_id]}, timeout=10).json()["runs"]
        assert len(runs) == 4  # the search's parent run and its three trials
        commands = [
            Path(f"/proc/{pid}/cmdline").read_bytes()
            for pid in os.listdir("/proc")
            if pid.isdigit() and int(pid) != ui.pid and Path(f"/proc/{pid}/cmdline").exists()
        ]
        assert not [c for c in commands if tracking.encode() in c]  # MLflow gets the store's URI in its environment
        assert not [line for line in printed if "mlflow ui --" in line]
    finally:
        ui.send_signal(signal.SIGTERM)  # to the harness process alone
        ui.wait(timeout=30)
    deadline = time.time() + 10
    while listening(port) and time.time() < deadline:
        time.sleep(0.2)
    assert not listening(port), "MLflow kept serving after harness ui was stopped"


@pytest.fixture(scope="session")
def pareto_study(tmp_path_factory):
    """Three trials on accuracy and FLOPs, searched once: (folder of its stores, what the search printed)."""
    folder = tmp_path_factory.mktemp("pareto")
    space = write_space(folder, {**TINY, "objectives": ["accuracy", "flops"]})
    return folder, searched_once(folder, space, "--study", "pareto", "--trials", "3", "--sampler", "nsga2")


@pytest.mark.xdist_group("pareto-study")
def test_dashboard_shows_the_studies_with_named_objectives(pareto_study):
    port = free_port()
    dashboard = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "dashboard",
            "--storage",
            stores(pareto_study[0])[0],
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        read_until(dashboard, f"Optuna dashboard at http://127.0.0.1:{port}")
        (summary,) = requests.get(f"http://127.0.0.1:{port}/api/studies", timeout=10).json()["study_summaries"]
        assert summary["study_name"] == "pareto"
        detail = requests.get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=10).json()
        assert detail["objective_names"] == ["val_accuracy", "flops"]
    finally:
        dashboard.send_signal(signal.SIGTERM)
        dashboard.wait(timeout=30)
    assert not listening(port)


@pytest.mark.xdist_group("pareto-study")
def test_multi_objective_search_returns_accuracy_and_flops(pareto_study):
    folder, printed = pareto_study
    assert "pruning is off: Optuna cannot prune multi-objective trials" in printed
    study = optuna.load_study(study_name="pareto", storage=stores(folder)[0])
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    for trial in study.trials:
        assert trial.values[1] == trial.user_attrs["flops"] > 0


def test_shipped_spaces_are_valid():
    from pathlib import Path

    spaces = sorted((Path(__file__).parents[1] / "search_spaces").glob("*.yaml"))
    assert {p.stem for p in spaces} >= {"quick", "origins", "cifar10", "fashion_mnist"}
    for path in spaces:
        load_space(path)


def test_ctrl_c_closes_the_trial_and_its_runs(tmp_path):
    space = {**TINY, "training": {"epochs": 500, "seed": 0}, "params": {"insertion": "dense", "order": 2}}
    storage, tracking = stores(tmp_path)
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        *search_args(tmp_path, write_space(tmp_path, space), "--study", "stopped", "--trials", "2"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # interrupted once the trial trains: its MLflow run exists and is recorded on it
        time.sleep(0.2)
        with contextlib.suppress(KeyError):
            trials = optuna.load_study(study_name="stopped", storage=storage).trials
            if trials and "mlflow_run_id" in trials[0].user_attrs:
                break
    else:
        process.kill()
        pytest.fail("the trial never started training")
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in errors, errors[-3000:]
    (trial,) = optuna.load_study(study_name="stopped", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.FAIL
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("stopped").experiment_id])
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) == 2
    assert client.get_run(trial.user_attrs["mlflow_run_id"]).data.tags["failure_reason"] == "interrupted (Ctrl-C)"


def test_a_loss_that_turns_nan_after_the_first_epoch_ends_fail_not_pruned(tmp_path, digits):
    """The pruner judges the diverged epoch's accuracy: the divergence, which caused it, is the outcome."""
    import keras
    import numpy as np
    from rich.console import Console

    from harness.study.lifecycle import OUTCOME, TrialDiverged, TrialLifecycle

    class PoisonAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                for weights in self.model.trainable_weights:  # every one: a ReLU turns NaN into 0
                    weights.assign(np.full(weights.shape, np.nan, dtype="float32"))

    class PruneAfterFirstEpoch(keras.callbacks.Callback):  # what a pruner does to a diverged epoch's accuracy
        def on_epoch_end(self, epoch, logs=None):
            if epoch >= 1:
                raise optuna.TrialPruned("pruned: validation accuracy below the pruner's threshold")

    tracking = stores(tmp_path)[1]
    lifecycle = TrialLifecycle(Tracker(tracking, "nan", spool_folder=tmp_path / "spool"), digits, "nan", Console())
    remembered = {}
    with lifecycle.parent_run({}):
        with pytest.raises(TrialDiverged, match="diverged: loss became nan at epoch 2"):
            lifecycle.run(
                0,
                {"insertion": "dense", "width": 0.25},
                3,
                [PoisonAfterFirstEpoch(), PruneAfterFirstEpoch()],
                remembered.__setitem__,
            )
    assert remembered[OUTCOME] == "FAIL" and remembered["failure_reason"].startswith("diverged")
    run = MlflowClient(tracking).get_run(remembered["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["state"] == "FAIL"
